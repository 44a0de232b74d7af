"""Generate the Synapse registration file and put the matching tokens into the config."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import Any

import yaml

from bridge.private_files import write_private


def new_token() -> str:
    return secrets.token_urlsafe(32)


def registration(*, as_id: str, url: str, as_token: str, hs_token: str, sender_localpart: str,
                 prefix: str, server_name: str) -> dict[str, Any]:
    """The registration document (pure). Namespaces are exclusive: nobody else may register
    a user or alias there, so a room alias of the bridge can't be squatted."""
    esc_server = re.escape(server_name)
    esc_prefix = re.escape(prefix)
    return {
        "id": as_id,
        "url": url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": sender_localpart,
        "rate_limited": False,
        "io.element.msc4190": True,
        "receive_ephemeral": False,
        "namespaces": {
            "users": [{"exclusive": True, "regex": f"@{esc_prefix}.*:{esc_server}"}],
            "aliases": [{"exclusive": True, "regex": f"#{esc_prefix}.*:{esc_server}"}],
            "rooms": [],
        },
    }


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Replace `key:` inside `section:` in a YAML text, keeping the comments around it."""
    pattern = re.compile(rf"(^{section}:\s*\n(?:[ \t]+.*\n|\s*\n|#.*\n)*?[ \t]+{key}:)[^\n#]*", re.MULTILINE)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)} \"{value}\"", text, count=1)
    data = yaml.safe_load(text) or {}
    if not isinstance(data.get(section), dict):  # absent, or only commented-out keys
        data[section] = {}
    data[section][key] = value
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_registration(*, config_path: Path, out_path: Path, url: str) -> dict[str, Any]:
    """Make fresh tokens (and the other secrets still at their placeholder), write both files."""
    text = config_path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    homeserver = raw.get("homeserver") or {}
    appservice = raw.get("appservice") or {}
    as_token, hs_token = new_token(), new_token()
    for section, key, value in (("appservice", "as_token", as_token), ("appservice", "hs_token", hs_token)):
        text = set_key(text, section, key, value)
    for section, key in (("bot", "store_key"), ("rooms", "key_secret"), ("audit", "key")):
        current = str((raw.get(section) or {}).get(key) or "")
        if not current or current.upper().startswith("CHANGE"):
            text = set_key(text, section, key, new_token())
    write_private(config_path, text)  # it holds every secret now
    reg = registration(
        as_id=str(appservice.get("id", "ent-bridge")), url=url, as_token=as_token, hs_token=hs_token,
        sender_localpart=str(appservice.get("sender_localpart", "ent-bridge")),
        prefix=str(appservice.get("namespace_prefix", "ent-bridge_")),
        server_name=str(homeserver.get("server_name", "localhost")),
    )
    write_private(out_path, yaml.safe_dump(reg, sort_keys=False))
    return reg
