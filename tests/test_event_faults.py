"""Event handling under real store faults: an SQLite write lock held by another process, PostgreSQL
connections terminated. Every event is handled, once; /health says "degraded" meanwhile."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bridge.app import Bridge
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.matrix.fake import FakeHomeserver
from bridge.store.base import Store
from tests.conftest import postgres_dsn, write_bridge_files


async def _until(predicate: Any, *, steps: int = 4000) -> None:
    for _ in range(steps):
        if await predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


class Gate:
    """A handler that records every event, and holds the first one until opened."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.opened = asyncio.Event()
        self.holding = asyncio.Event()

    async def __call__(self, event: dict[str, Any]) -> None:
        if not self.seen:
            self.holding.set()
            await self.opened.wait()
        self.seen.append(str(event["event_id"]))


async def _bridge(tmp_path: Path, store: Store) -> tuple[Bridge, Gate]:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=free_port())
    config = load_config(config_path)
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    bridge = await Bridge.create(dataclasses.replace(config, directory_sources=()), store=store, with_bot=False,
                                 transport=fake)
    gate = Gate()
    bridge.dispatcher.handlers.append(gate)
    await bridge.start()
    return bridge, gate


async def _put(http: aiohttp.ClientSession, bridge: Bridge, txn: str, n: int) -> int:
    events = [{"type": "m.room.message", "room_id": "!r:ent.test", "event_id": f"${txn}-{i}", "sender": "@a:ent.test",
               "content": {"msgtype": "m.text", "body": "bonjour"}} for i in range(n)]
    url = f"http://127.0.0.1:{bridge.config.appservice.port}/_matrix/app/v1/transactions/{txn}"
    async with http.put(url, json={"events": events},
                        headers={"Authorization": f"Bearer {bridge.config.appservice.hs_token}"}) as resp:
        return resp.status


async def _health(http: aiohttp.ClientSession, bridge: Bridge) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{bridge.config.appservice.port}/health") as resp:
        return dict(await resp.json())


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_an_sqlite_store_locked_by_another_process_delays_nothing_loses_nothing(
        tmp_path: Path, http: aiohttp.ClientSession) -> None:
    from bridge.store.sqlite import SqliteStore

    path = tmp_path / "bridge.db"
    store = SqliteStore(str(path), busy_timeout_s=0.2)
    await store.open()
    bridge, gate = await _bridge(tmp_path, store)
    try:
        assert await _put(http, bridge, "t1", 10) == 200
        await gate.holding.wait()  # the dispatcher is in the middle of its batch
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")  # a backup, a second process: nobody else may write
        gate.opened.set()

        async def failing() -> bool:
            return bridge.dispatcher.state.store_failures > 0

        await _until(failing)
        report = await _health(http, bridge)
        assert report["status"] == "degraded" and report["dispatcher"]["store_failures"] >= 1
        assert await _put(http, bridge, "t2", 5) == 500  # not stored: the homeserver will send it again
        other.execute("ROLLBACK")
        other.close()
        assert await _put(http, bridge, "t2", 5) == 200  # resent, stored

        async def all_handled() -> bool:
            return len(gate.seen) == 15 and (await store.inbox_stats()).pending == 0

        await _until(all_handled)
        assert sorted(gate.seen) == sorted([f"$t1-{i}" for i in range(10)] + [f"$t2-{i}" for i in range(5)])
        assert (await _health(http, bridge))["status"] == "ok"
    finally:
        await bridge.stop()


async def test_postgres_connections_killed_while_serving(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    dsn = postgres_dsn()
    if not dsn:
        pytest.skip("ENT_BRIDGE_TEST_POSTGRES not set")
    import asyncpg

    from bridge.store.postgres import PostgresStore

    schema = f"faults_{secrets.token_hex(4)}"
    store = PostgresStore(dsn, schema=schema)
    await store.open()
    bridge, gate = await _bridge(tmp_path, store)
    admin = await asyncpg.connect(dsn)
    try:
        assert await _put(http, bridge, "t1", 10) == 200
        await gate.holding.wait()
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        assert killed >= 1
        gate.opened.set()
        for attempt in range(50):  # the first PUTs may meet a dead connection: 500, and resent
            if await _put(http, bridge, "t2", 5) == 200:
                break
            await asyncio.sleep(0.05 * attempt)

        async def all_handled() -> bool:
            return len(set(gate.seen)) == 15 and (await store.inbox_stats()).pending == 0

        await _until(all_handled)
        assert len(gate.seen) == len(set(gate.seen))  # each once
        assert (await _health(http, bridge))["status"] == "ok"
    finally:
        await bridge.stop()
        await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await admin.close()
