"""`ent-bridge audit verify|show`: check the audit log's HMAC chain, list entries."""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _verify(args: argparse.Namespace) -> int:
    from bridge.audit import for_config as audit_for_config
    from bridge.cli.common import config_and_store

    async with config_and_store(args) as (config, store):
        result = await audit_for_config(config, store).verify()
    if result.ok:
        print(f"audit log OK: {result.checked} entries, chain intact")
        return 0
    print(f"audit log TAMPERED: {result.problem} (after {result.checked} good entries)", file=sys.stderr)
    return 1


async def _show(args: argparse.Namespace) -> int:
    from bridge.cli.common import config_and_store

    async with config_and_store(args) as (_, store):
        for row in (await store.audit_rows())[-args.last:]:
            print(f"{row.seq}\t{row.body}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    p = asub.add_parser("verify", help="check that no entry was modified, removed or reordered")
    p.set_defaults(func=lambda a: asyncio.run(_verify(a)))
    p = asub.add_parser("show", help="print the last entries")
    p.add_argument("--last", type=int, default=50)
    p.set_defaults(func=lambda a: asyncio.run(_show(a)))
