"""`ent-bridge events list [--dead]` and `events retry [TXN:IDX ...]`: the inbox and its dead letters."""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _list(args: argparse.Namespace) -> int:
    from bridge.cli.common import config_and_store

    async with config_and_store(args) as (_, store):
        stats = await store.inbox_stats()
        items = await store.dead_letters() if args.dead else await store.pending_events(limit=args.limit)
    print(f"{stats.pending} events waiting, {stats.dead} dead letters")
    for item in items[:args.limit]:
        # Metadata only: an event's content may be a message.
        event = item.event
        print(f"{item.txn_id}:{item.idx}\t{event.get('type')}\t{event.get('room_id')}\t{event.get('event_id')}\t"
              f"attempts={item.attempts}\t{item.last_error or ''}")
    return 0


async def _retry(args: argparse.Namespace) -> int:
    from bridge.cli.common import config_and_store

    wanted = None
    if args.events:
        try:
            wanted = [(t, int(i)) for t, i in (e.rsplit(":", 1) for e in args.events)]
        except ValueError:
            print("ent-bridge: error: name events as TXN:IDX (see `ent-bridge events list --dead`)", file=sys.stderr)
            return 2
    async with config_and_store(args) as (_, store):
        count = await store.retry_dead(wanted)
    print(f"{count} dead letters put back in the inbox; a running bridge handles them within seconds, "
          "or `ent-bridge run` at its start")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("events", help="events received from the homeserver and not handled yet")
    esub = p.add_subparsers(dest="events_command", metavar="COMMAND", required=True)
    s = esub.add_parser("list", help="waiting events, or with --dead the dead letters (metadata only)")
    s.add_argument("--dead", action="store_true")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=lambda a: asyncio.run(_list(a)))
    s = esub.add_parser("retry", help="put dead letters back in the inbox (all, or those named TXN:IDX)")
    s.add_argument("events", nargs="*", metavar="TXN:IDX")
    s.set_defaults(func=lambda a: asyncio.run(_retry(a)))
