"""`ent-bridge generate-registration` and `ent-bridge run`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.resources
from pathlib import Path


def _cmd_generate_registration(args: argparse.Namespace) -> int:
    from bridge.config import load_config
    from bridge.private_files import write_private
    from bridge.registration import set_key, write_registration

    config_path = Path(args.config)
    if not config_path.exists():
        # The example travels with the package: this works after `pip install .` as in a checkout.
        resources = importlib.resources.files("bridge") / "resources"
        text = (resources / "example.yaml").read_text(encoding="utf-8")
        if not (config_path.parent / "../policies").is_dir():
            text = set_key(text, "policies", "dir", str(resources / "policies"))  # the shipped policies
        config_path.parent.mkdir(parents=True, exist_ok=True)
        write_private(config_path, text)
        print(f"wrote {config_path} from the example")
    import yaml

    raw = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    aps = raw.get("appservice") or {}
    url = args.url or f"http://{aps.get('bind_address', '127.0.0.1')}:{aps.get('port', 29340)}"
    write_registration(config_path=config_path, out_path=Path(args.output), url=url)
    load_config(config_path)  # proves the result is valid
    print(f"wrote {args.output}; add it to app_service_config_files in homeserver.yaml")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from bridge import logging as blog
    from bridge.app import run_forever
    from bridge.config import load_config

    config = load_config(args.config)
    blog.configure(level=config.log_level)
    return asyncio.run(run_forever(config))


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("generate-registration", help="write Synapse's registration and fresh tokens")
    p.add_argument("-o", "--output", default="config/registration.yaml")
    p.add_argument("--url", help="URL where Synapse reaches the bridge (default: from the config)")
    p.set_defaults(func=_cmd_generate_registration)

    p = sub.add_parser("run", help="serve the appservice and run the encrypted bot")
    p.set_defaults(func=_cmd_run)
