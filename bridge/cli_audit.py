"""`ent-bridge audit verify|show`: check the audit log's HMAC chain, list entries."""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from bridge.audit import AuditLog
    from bridge.config import load_config
    from bridge.store import open_store

    config = load_config(args.config)
    store = await open_store(config.database_url)
    return store, AuditLog(store, key=config.audit_key)


async def _verify(args: argparse.Namespace) -> int:
    store, audit = await _open(args)
    try:
        result = await audit.verify()
    finally:
        await store.close()
    if result.ok:
        print(f"audit log OK: {result.checked} entries, chain intact")
        return 0
    print(f"audit log TAMPERED: {result.problem} (after {result.checked} good entries)", file=sys.stderr)
    return 1


async def _show(args: argparse.Namespace) -> int:
    store, _ = await _open(args)
    try:
        for row in (await store.audit_rows())[-args.last:]:
            print(f"{row.seq}\t{row.body}")
    finally:
        await store.close()
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="the tamper-evident audit log")
    asub = audit.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    p = asub.add_parser("verify", help="check that no entry was modified, removed or reordered")
    p.set_defaults(func=lambda a: asyncio.run(_verify(a)))
    p = asub.add_parser("show", help="print the last entries")
    p.add_argument("--last", type=int, default=50)
    p.set_defaults(func=lambda a: asyncio.run(_show(a)))
