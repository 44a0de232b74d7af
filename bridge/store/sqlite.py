"""SQLite store: the zero-setup default, one file, WAL mode."""

from __future__ import annotations

from bridge.store.db import SqliteDatabase
from bridge.store.sql import SqlStore


class SqliteStore(SqlStore):
    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        super().__init__(SqliteDatabase(path, busy_timeout_s=busy_timeout_s))
        self.path = path
