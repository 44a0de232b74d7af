"""What several commands share: the config and an open store, closed whatever happens."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridge.config import Config, load_config
from bridge.store import Store, open_store


@asynccontextmanager
async def config_and_store(args: argparse.Namespace) -> AsyncIterator[tuple[Config, Store]]:
    config = load_config(args.config)
    store = await open_store(config.database_url)
    try:
        yield config, store
    finally:
        await store.close()
