"""`ent-bridge retention sweep`: remove messages older than each room's lifetime, and verify."""

from __future__ import annotations

import argparse
import asyncio


async def _sweep(args: argparse.Namespace) -> int:
    from bridge.cli.common import config_and_store
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.retention_sweep import sweep_managed

    async with config_and_store(args) as (config, store):
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        try:
            report = await sweep_managed(config, store=store, api=api)
        finally:
            await api.close()
    print(f"{report.rooms} rooms swept: {report.redacted} messages removed, {report.remaining} older than "
          "their lifetime still present")
    return 0 if report.remaining == 0 else 1


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("retention", help="message retention")
    rsub = p.add_subparsers(dest="retention_command", metavar="COMMAND", required=True)
    s = rsub.add_parser("sweep", help="remove messages older than each room's lifetime, then verify")
    s.set_defaults(func=lambda a: asyncio.run(_sweep(a)))
