"""PostgreSQL store (asyncpg) for larger deployments; the same SQL as SQLite."""

from __future__ import annotations

from typing import Any

from bridge.store.db import PostgresDatabase
from bridge.store.sql import SqlStore


class PostgresStore(SqlStore):
    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        self.pg = PostgresDatabase(dsn, schema=schema)
        super().__init__(self.pg)

    @property
    def pool(self) -> Any:
        return self.pg.pool
