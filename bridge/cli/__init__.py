"""Command line: `ent-bridge COMMAND`; each command module parses, calls one function, prints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from bridge.errors import BridgeError

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ent-bridge",
        description="Encrypted Matrix rooms for schools, built from the school directory.")
    parser.add_argument("-c", "--config", default="config/config.yaml", help="configuration file")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _register_extra_commands(sub)
    return parser


def _register_extra_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Commands that live in their own modules register themselves here."""
    from bridge.cli import annuaire, audit, bot, docker_init, doctor, events, policy, retention, rgpd, serve, sync

    serve.register(sub)
    events.register(sub)
    annuaire.register(sub)
    sync.register(sub)
    bot.register(sub)
    audit.register(sub)
    retention.register(sub)
    rgpd.register(sub)
    policy.register(sub)
    doctor.register(sub)
    docker_init.register(sub)


def _config_first(argv: list[str]) -> list[str]:
    """`-c FILE` is the program's option, but people also write it after the command
    (`ent-bridge generate-registration -c config.yaml`): both mean the same."""
    out: list[str] = []
    front: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config") and i + 1 < len(argv):
            front += [arg, argv[i + 1]]
            i += 2
            continue
        if arg.startswith("--config="):
            front.append(arg)
        else:
            out.append(arg)
        i += 1
    return front + out


def main(argv: list[str] | None = None) -> int:
    # Whatever a command creates (stores, crypto store, snapshots, exports) is the bridge's alone
    # unless it says otherwise (the access snapshot is shared with Synapse's group).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(_config_first(list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except BridgeError as exc:
        print(f"ent-bridge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
