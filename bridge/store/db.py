"""The database under the store: SQLite or PostgreSQL behind one small async interface.

SQL is written once, with PostgreSQL's numbered placeholders ($1, $2…); the SQLite adapter turns
them into SQLite's own numbered form (?1, ?2…), which binds the same way.
"""

from __future__ import annotations

import asyncio
import functools
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bridge.errors import StoreError
from bridge.private_files import create_private

# PostgreSQL advisory locks (SQLite's BEGIN IMMEDIATE already admits one writer at a time).
MIGRATION_LOCK = 7734001  # one migrator at a time across processes
AUDIT_LOCK = 7734002  # one appender to the audit chain at a time: entry numbers never collide


T = TypeVar("T")


@dataclass(frozen=True)
class Stmt:
    """One statement of a script: run once with `args`, or once per row of `many`; `rows`: its
    rows are sent back into the script."""

    sql: str
    args: tuple[Any, ...] = ()
    many: list[Sequence[Any]] | None = None
    rows: bool = False


# A transaction written as a generator: it yields its statements and is sent each one's rows (None
# for those that return none); what it returns is the transaction's result. Why: SQLite runs it
# whole on the store's thread, in one hop however many reads it makes (a `transaction()` makes one
# hop per read); PostgreSQL awaits each statement.
Script = Generator[Stmt, "list[Sequence[Any]] | None", T]


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

    async def script(self, body: Callable[[], Script[T]], *, lock: int | None = None) -> T:
        """`body()`'s statements in one transaction (all or nothing, `lock` as for `transaction`)."""
        ...


@functools.lru_cache(maxsize=256)
def sqlite_sql(sql: str) -> str:
    return re.sub(r"\$(\d+)", r"?\1", sql)


class _SqliteOps:
    """Statements on the SQLite connection, each run on the store's own thread."""

    def __init__(self, owner: SqliteDatabase) -> None:
        self.owner = owner

    async def execute(self, sql: str, *args: Any) -> None:
        await self.owner.call(lambda db: db.execute(sqlite_sql(sql), args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        await self.owner.call(lambda db: db.executemany(sqlite_sql(sql), batch))

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self.owner.call(lambda db: db.execute(sqlite_sql(sql), args).fetchall())
        return rows

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        # fetchall, not fetchone: a RETURNING statement left half-read would block the COMMIT.
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


Step = Callable[[sqlite3.Connection], Any]


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:  # a BEGIN that never ran (its hop cancelled before it started) has nothing to undo
        db.execute("ROLLBACK")


class _SqliteTransaction(_SqliteOps):
    """One transaction's statements, handed to the store's thread in as few hops as possible: the
    BEGIN and the writes whose result nobody reads wait, and go with the next read or with the
    COMMIT. Why: each hop hands the GIL between the event loop's thread and the store's, about
    0.2 ms under load, and the store is taken by one transaction at a time; an inbox write or an
    audit entry is then one hop instead of four or five. A failed statement rolls the
    transaction back at once, on the thread (as PostgreSQL aborts it): the error reaches the
    caller at that read or at the end of the `async with`."""

    def __init__(self, owner: SqliteDatabase) -> None:
        super().__init__(owner)
        self._queued: list[Step] = [lambda db: db.execute("BEGIN IMMEDIATE")]

    async def execute(self, sql: str, *args: Any) -> None:
        self._queued.append(lambda db: db.execute(sqlite_sql(sql), args))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = list(rows)
        self._queued.append(lambda db: db.executemany(sqlite_sql(sql), batch))

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        rows: list[Sequence[Any]] = await self.send(lambda db: db.execute(sqlite_sql(sql), args).fetchall())
        return rows

    async def send(self, last: Step) -> Any:
        """Run what waits, then `last`, in one hop; its result is `last`'s."""
        steps, self._queued = [*self._queued, last], []

        def run(db: sqlite3.Connection) -> Any:
            try:
                result = None
                for step in steps:
                    result = step(db)
                return result
            except BaseException:
                _rollback(db)
                raise

        return await self.owner.call(run)


class SqliteDatabase:
    """One connection, used from one thread of its own: a locked database file (another process
    writing, a backup) makes the store wait (`busy_timeout_s`), never the event loop, so the
    transaction endpoint and moderation keep answering. An asyncio lock keeps statements of
    other tasks out of an open transaction."""

    def __init__(self, path: str, *, busy_timeout_s: float = 30.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._lock = asyncio.Lock()
        self._ops = _SqliteOps(self)

    async def call(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        db, thread = self._db, self._thread
        if db is None or thread is None:
            raise StoreError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(thread, fn, db)

    async def open(self) -> None:
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # when made here: ours
                create_private(Path(self.path))  # SQLite gives its journal files the database's mode
            except OSError as exc:  # a read-only folder, a file where a folder should be
                raise StoreError(f"can't create the database {self.path} ({exc.strerror}): check the owner and "
                                 "mode of its folder") from None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

        def connect() -> sqlite3.Connection:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout_s,
                                 check_same_thread=False)
            # Switching a new file to WAL answers "locked" at once, without waiting, while another
            # process does the same: tried again for as long as any statement would wait.
            deadline = time.monotonic() + self.busy_timeout_s
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            db.execute("PRAGMA synchronous=FULL")  # an acknowledged txn must survive a crash
            db.execute("BEGIN IMMEDIATE")  # a read-only file or folder says so now, not at the first event
            db.execute("ROLLBACK")
            return db

        try:
            self._db = await asyncio.get_running_loop().run_in_executor(self._thread, connect)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN,
                                                   sqlite3.SQLITE_PERM):
                raise
            self._thread.shutdown(wait=False)
            self._thread = None
            raise StoreError(f"the database {self.path} can't be written ({exc}): check the owner and mode of "
                             "the file and of its folder") from None

    async def close(self) -> None:
        if self._db is not None and self._thread is not None:
            db, self._db = self._db, None
            await asyncio.get_running_loop().run_in_executor(self._thread, db.close)
            self._thread.shutdown(wait=False)
            self._thread = None

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._lock:
            await self._ops.execute(sql, *args)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self._lock:
            await self._ops.executemany(sql, rows)

    async def fetch(self, sql: str, *args: Any) -> list[Sequence[Any]]:
        async with self._lock:
            return await self._ops.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Sequence[Any] | None:
        async with self._lock:
            return await self._ops.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self._lock:
            return await self._ops.fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self, *, lock: int | None = None) -> AsyncIterator[Connection]:
        # BEGIN IMMEDIATE takes SQLite's write lock at once: every write transaction is exclusive.
        # A hop handed to the thread runs even if the task awaiting it is cancelled (a renewal
        # stopped mid-way), unless it had not started: so the rollback that follows looks whether a
        # transaction is open, and the connection is never left inside one. The COMMIT's hop is
        # shielded: once sent, it is done whatever happens to its caller.
        async with self._lock:
            tx = _SqliteTransaction(self)
            try:
                yield tx
            except BaseException:
                await self.call(_rollback)
                raise
            await asyncio.shield(tx.send(lambda db: db.execute("COMMIT")))

    async def script(self, body: Callable[[], Script[T]], *, lock: int | None = None) -> T:
        # One hop: once started on the thread it runs to its COMMIT or ROLLBACK whatever happens
        # to the caller; cancelled before it started, it never runs.
        async with self._lock:
            result: T = await self.call(lambda db: _run_script(db, body))
            return result


def _run_script(db: sqlite3.Connection, body: Callable[[], Script[T]]) -> T:
    """On the store's thread: the whole script between BEGIN IMMEDIATE and COMMIT."""
    db.execute("BEGIN IMMEDIATE")
    try:
        steps = body()
        result: list[Sequence[Any]] | None = None
        try:
            while True:
                stmt = steps.send(result)
                sql = sqlite_sql(stmt.sql)
                if stmt.many is not None:
                    db.executemany(sql, stmt.many)
                    result = None
                else:
                    cursor = db.execute(sql, stmt.args)
                    result = cursor.fetchall() if stmt.rows else None
        except StopIteration as end:
            value: T = end.value
        db.execute("COMMIT")
        return value
    except BaseException:
        _rollback(db)
        raise


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

    async def script(self, body: Callable[[], Script[T]], *, lock: int | None = None) -> T:
        async with self.pool.acquire() as conn, conn.transaction():
            if lock is not None:
                await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
            steps = body()
            result: list[Sequence[Any]] | None = None
            try:
                while True:
                    stmt = steps.send(result)
                    if stmt.many is not None:
                        await conn.executemany(stmt.sql, stmt.many)
                        result = None
                    elif stmt.rows:
                        result = list(await conn.fetch(stmt.sql, *stmt.args))
                    else:
                        await conn.execute(stmt.sql, *stmt.args)
                        result = None
            except StopIteration as end:
                value: T = end.value
                return value
