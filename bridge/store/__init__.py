"""Store factory: picks the backend from the database URL."""

from __future__ import annotations

from bridge.errors import ConfigError
from bridge.store.base import InboxItem, RoomRecord, Store

__all__ = ["InboxItem", "RoomRecord", "Store", "open_store"]


async def open_store(url: str) -> Store:
    """Open (and migrate) the store named by a sqlite:/// or postgresql:// URL."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite import SqliteStore

        store: Store = SqliteStore(url[len("sqlite:///"):])
    elif url.startswith(("postgresql://", "postgres://")):
        from bridge.store.postgres import PostgresStore

        store = PostgresStore(url)
    else:
        raise ConfigError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}", key="database.url")
    await store.open()
    return store
