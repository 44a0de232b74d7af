"""`ent-bridge bot identity|reset-identity`: the bot's cross-signing identity for admins."""

from __future__ import annotations

import argparse
import asyncio
import sys


async def _identity(args: argparse.Namespace) -> int:
    from bridge.cli.common import config_and_store
    from bridge.matrix.cross_signing import fingerprint, unseal
    from bridge.matrix.identity import CROSS_SIGNING_KEY

    async with config_and_store(args) as (config, store):
        sealed = await store.get_value(CROSS_SIGNING_KEY)
    if sealed is None:
        print("The bot has no cross-signing identity yet: it is created at the first `ent-bridge run`.")
        return 1
    keys = unseal(sealed, store_key=config.bot.store_key)
    print(f"Bot: {config.bot_user_id}")
    print(f"Master key: {fingerprint(keys.master_public)}")
    print("Compare it with the key a client shows for this user (Element: the user's profile,")
    print("'Verify' > compare manually) before trusting the bot.")
    return 0


async def _reset(args: argparse.Namespace) -> int:
    from bridge.app import Bridge
    from bridge.config import load_config
    from bridge.matrix.cross_signing import fingerprint

    if not args.yes:
        if not sys.stdin.isatty():
            print("ent-bridge: refusing to reset the bot's identity without --yes", file=sys.stderr)
            return 2
        answer = await asyncio.to_thread(
            input, "Everyone who verified the bot will see its identity change. Type RESET to go on: ")
        if answer.strip() != "RESET":
            print("Nothing changed.")
            return 1
    bridge = await Bridge.create(load_config(args.config))
    try:
        # Reset before anything is uploaded: the old identity may be the one the homeserver refuses.
        await bridge.bot.start(sync=False, reset_identity=True)
        keys = await bridge.bot.cross_signing_keys()
    finally:
        await bridge.bot.stop()
        await bridge.api.close()
        await bridge.store.close()
    print(f"New master key: {fingerprint(keys.master_public)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bot = sub.add_parser("bot", help="the encrypted bot's identity")
    bsub = bot.add_subparsers(dest="bot_command", metavar="COMMAND", required=True)
    p = bsub.add_parser("identity", help="print the bot's master cross-signing key fingerprint")
    p.set_defaults(func=lambda a: asyncio.run(_identity(a)))
    p = bsub.add_parser("reset-identity", help="replace the bot's cross-signing identity (after confirmation)")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=lambda a: asyncio.run(_reset(a)))
