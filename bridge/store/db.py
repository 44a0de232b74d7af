"""The database under the store: SQLite or PostgreSQL behind one small async interface.

SQL is written once, with PostgreSQL's numbered placeholders ($1, $2…); the SQLite adapter turns
them into SQLite's own numbered form (?1, ?2…), which binds the same way.
"""

from __future__ import annotations

import functools
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

from bridge.errors import StoreError

# PostgreSQL advisory locks (SQLite's BEGIN IMMEDIATE already admits one writer at a time).
MIGRATION_LOCK = 7734001  # one migrator at a time across processes
AUDIT_LOCK = 7734002  # one appender to the audit chain at a time: entry numbers never collide


class Connection(Protocol):
    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


class Database(Connection, Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    def transaction(self, *, lock: int | None = None) -> AbstractAsyncContextManager[Connection]:
        """All or nothing; with `lock`, also one such transaction at a time across processes."""
        ...


@functools.lru_cache(maxsize=256)
def sqlite_sql(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class SqliteDatabase:
    """Queries are sub-millisecond on a local file, so they run inline on the event loop; one
    connection serialises writers, which is what SQLite wants anyway."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged txn must survive a crash

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def execute(self, sql: str, *args: Any) -> None:
        self.db.execute(sqlite_sql(sql), args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sqlite_sql(sql), rows)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(self.db.execute(sqlite_sql(sql), args).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        # fetchall, not fetchone: a RETURNING statement left half-read would block the COMMIT.
        rows = self.db.execute(sqlite_sql(sql), args).fetchall()
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]

    @asynccontextmanager
    async def transaction(self, *, lock: int | None = None) -> AsyncIterator[Connection]:
        # BEGIN IMMEDIATE takes SQLite's write lock at once: every write transaction is exclusive.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


class _PgConnection:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> None:
        await self.conn.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self.conn.executemany(sql, list(rows))

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        return list(await self.conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        row: Sequence[Any] | None = await self.conn.fetchrow(sql, *args)
        return row

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.conn.fetchval(sql, *args)


class PostgresDatabase(_PgConnection):
    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        super().__init__(None)
        self.dsn = dsn
        self.schema = schema  # tests isolate themselves in a schema of their own

    @property
    def pool(self) -> Any:
        if self.conn is None:
            raise StoreError("store is not open")
        return self.conn

    async def open(self) -> None:
        import asyncpg

        settings = {"search_path": self.schema} if self.schema else None
        if self.schema:
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():  # concurrent CREATE ... IF NOT EXISTS can still collide
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            finally:
                await conn.close()
        self.conn = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, server_settings=settings)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
            self.conn = None

    @asynccontextmanager
    async def transaction(self, *, lock: int | None = None) -> AsyncIterator[Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            if lock is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
            yield _PgConnection(conn)
