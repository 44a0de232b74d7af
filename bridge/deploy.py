"""First-time files of a Docker deployment (`ent-bridge docker-init`, the compose file's `init`
service): the bridge's config and registration, and Synapse's homeserver.yaml with its signing
key, the school settings of docs/synapse.md and the access module. Nothing is overwritten."""

from __future__ import annotations

import base64
import importlib.resources
import secrets
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bridge.private_files import write_private
from bridge.registration import set_key, write_registration
from bridge.synapse_settings import access_module, school_settings

# Where things are inside the containers (docker/docker-compose.yml mounts them there).
SYNAPSE_URL, BRIDGE_URL = "http://synapse:8008", "http://ent-bridge:29340"
SNAPSHOT = "/data/access.sqlite"  # the bridge's data volume, mounted read-only in Synapse at /ent-bridge


def _signing_key() -> str:
    """A Synapse signing key file: `ed25519 <version> <unpadded base64 seed>`."""
    seed = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return f"ed25519 a_{secrets.token_hex(2)} {base64.b64encode(seed).decode().rstrip('=')}\n"


def bridge_config(out: Path, *, server_name: str) -> list[Path]:
    config, registration = out / "config" / "config.yaml", out / "config" / "registration.yaml"
    if config.exists():
        return []
    text = (importlib.resources.files("bridge") / "resources" / "example.yaml").read_text(encoding="utf-8")
    for section, key, value in (("homeserver", "url", SYNAPSE_URL), ("homeserver", "server_name", server_name),
                                ("appservice", "bind_address", "0.0.0.0"), ("bot", "store_dir", "/data/nio"),  # noqa: S104
                                ("policies", "dir", "/policies"), ("access", "snapshot", SNAPSHOT)):
        text = set_key(text, section, key, value)
    data = yaml.safe_load(text)
    data["directory"]["sources"] = ["/annuaire"]
    config.parent.mkdir(parents=True, exist_ok=True)
    write_private(config, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    write_registration(config_path=config, out_path=registration, url=BRIDGE_URL)
    return [config, registration]


def synapse_config(out: Path, *, server_name: str, postgres_password: str, bridge: dict[str, Any]) -> list[Path]:
    folder = out / "synapse"
    path = folder / "homeserver.yaml"
    if path.exists():
        return []
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "signing.key"
    if not key.exists():
        write_private(key, _signing_key())
    appservice = bridge["appservice"]
    users = [f"@{appservice['sender_localpart']}:{server_name}", f"@{bridge['bot']['localpart']}:{server_name}",
             f"@{bridge['bot']['keyless_localpart']}:{server_name}"]
    settings = {
        "server_name": server_name, "public_baseurl": f"https://{server_name}/", "pid_file": "/data/homeserver.pid",
        "listeners": [{"port": 8008, "type": "http", "tls": False, "x_forwarded": True, "bind_addresses": ["0.0.0.0"],  # noqa: S104
                       "resources": [{"names": ["client"], "compress": False}]}],
        "database": {"name": "psycopg2", "args": {"user": "synapse", "password": postgres_password, "host": "postgres",
                                                   "database": "synapse", "cp_min": 2, "cp_max": 10}},
        "media_store_path": "/data/media", "signing_key_path": "/data/signing.key", "report_stats": False,
        "macaroon_secret_key": secrets.token_urlsafe(32), "form_secret": secrets.token_urlsafe(32),
        "trusted_key_servers": [], "suppress_key_server_warning": True,
        "app_service_config_files": ["/data/ent-bridge-registration.yaml"],
        **school_settings(),
        "modules": [access_module(Path("/ent-bridge/access.sqlite"), users,
                                  registration=Path("/data/ent-bridge-registration.yaml"),
                                  spool=Path("/data/ent-bridge-refusals"))],
    }
    write_private(path, yaml.safe_dump(settings, sort_keys=False))
    return [path, key]


def docker_init(out: Path, *, server_name: str, postgres_password: str) -> list[Path]:
    """Every first-time file that is missing; the ones already there are kept as they are."""
    written = bridge_config(out, server_name=server_name)
    bridge = yaml.safe_load((out / "config" / "config.yaml").read_text(encoding="utf-8"))
    bridge.setdefault("bot", {}).setdefault("keyless_localpart",
                                            f"{bridge['appservice'].get('namespace_prefix', 'ent-bridge_')}keyless")
    return written + synapse_config(out, server_name=server_name, postgres_password=postgres_password, bridge=bridge)
