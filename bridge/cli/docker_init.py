"""`ent-bridge docker-init --server-name NAME [--out DIR]`: a Docker deployment's first-time files."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bridge.errors import BridgeError


def _init(args: argparse.Namespace) -> int:
    from bridge.deploy import docker_init

    password = os.environ.get("POSTGRES_PASSWORD")
    if not password:
        raise BridgeError("POSTGRES_PASSWORD is not set (the compose file passes it to the init service)")
    written = docker_init(Path(args.out), server_name=args.server_name, postgres_password=password)
    for path in written:
        print(f"wrote {path}")
    print("first-time files ready" if written else "first-time files already there: nothing changed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("docker-init", help="write a Docker deployment's first-time files (missing ones only)")
    p.add_argument("--server-name", required=True, help="the homeserver's server_name (user ids' domain)")
    p.add_argument("--out", default="/deploy", help="the docker/ folder (mounted at /deploy in the init service)")
    p.set_defaults(func=_init)
