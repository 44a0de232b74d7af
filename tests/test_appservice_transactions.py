"""Transactions: hs_token auth, persistent dedupe across restarts, no silent loss on handler errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from bridge.appservice.dispatch import retry_delay_ms
from bridge.clock import FakeClock

pytestmark = pytest.mark.synapse


def _txn_url(bridge: Any, txn_id: str) -> str:
    return f"http://127.0.0.1:{bridge.config.appservice.port}/_matrix/app/v1/transactions/{txn_id}"


EVENT = {"type": "m.room.message", "room_id": "!r:ent.test", "event_id": "$e1", "sender": "@a:ent.test",
         "content": {"msgtype": "m.text", "body": "bonjour"}}


async def test_transaction_auth_missing_wrong_and_good(bridge_factory: Any) -> None:
    bridge = await bridge_factory(with_bot=False)
    seen: list[dict[str, Any]] = []

    async def record(event: dict[str, Any]) -> None:
        seen.append(event)

    bridge.dispatcher.handlers.append(record)
    async with aiohttp.ClientSession() as http:
        async with http.put(_txn_url(bridge, "t-missing"), json={"events": [EVENT]}) as r:
            assert r.status == 401
            assert (await r.json())["errcode"] == "M_MISSING_TOKEN"
        async with http.put(_txn_url(bridge, "t-wrong"), json={"events": [EVENT]},
                            headers={"Authorization": "Bearer not-the-token"}) as r:
            assert r.status == 403
            assert (await r.json())["errcode"] == "M_FORBIDDEN"
        # A refused transaction changed nothing: nothing stored, nothing handled.
        assert await bridge.store.pending_events() == []
        assert await bridge.store.record_transaction("t-wrong", [], now_ms=0) is True
        good = {"Authorization": f"Bearer {bridge.config.appservice.hs_token}"}
        async with http.put(_txn_url(bridge, "t-good"), json={"events": [EVENT]}, headers=good) as r:
            assert r.status == 200
    for _ in range(50):
        if seen:
            break
        await asyncio.sleep(0.05)
    assert [e["event_id"] for e in seen] == ["$e1"]


async def test_transaction_deduplicated_across_restart(bridge_factory: Any) -> None:
    counts: list[str] = []

    async def record(event: dict[str, Any]) -> None:
        counts.append(event["event_id"])

    first = await bridge_factory(with_bot=False)
    first.dispatcher.handlers.append(record)
    headers = {"Authorization": f"Bearer {first.config.appservice.hs_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.put(_txn_url(first, "txn-42"), json={"events": [EVENT]}, headers=headers) as r:
            assert r.status == 200
        await asyncio.sleep(0.3)
        await first.stop()
        second = await bridge_factory(with_bot=False)
        second.dispatcher.handlers.append(record)
        async with http.put(_txn_url(second, "txn-42"), json={"events": [EVENT]}, headers=headers) as r:
            assert r.status == 200  # acknowledged, so the homeserver stops resending…
        await asyncio.sleep(0.3)
    assert counts == ["$e1"]  # …but handled once only


async def test_failing_handler_retries_then_keeps_dead_letter(bridge_factory: Any) -> None:
    bridge = await bridge_factory(with_bot=False, start=False)
    calls: list[str] = []

    async def broken(event: dict[str, Any]) -> None:
        calls.append(event["event_id"])
        raise RuntimeError("boom")

    bridge.dispatcher.handlers.append(broken)
    bridge.dispatcher.clock = clock = FakeClock()
    assert await bridge.store.record_transaction("t-fail", [EVENT], now_ms=1)
    waits = []
    for attempt in range(1, bridge.dispatcher.max_attempts + 1):
        await bridge.dispatcher.drain_once()
        assert len(calls) == attempt
        await bridge.dispatcher.drain_once()  # not due yet: not tried again at once
        assert len(calls) == attempt
        waits.append(retry_delay_ms(attempt))
        clock.advance(waits[-1] / 1000)
    assert waits[:3] == [500, 1000, 2000] and waits[-1] == 3_600_000 and sum(waits) > 8 * 3_600_000  # hours
    dead = await bridge.store.dead_letters()
    assert [d.event["event_id"] for d in dead] == ["$e1"] and "RuntimeError: boom" in (dead[0].last_error or "")
    assert await bridge.store.pending_events() == []
    assert await bridge.store.retry_dead() == 1  # `ent-bridge events retry`
    await bridge.dispatcher.drain_once()
    assert len(calls) == bridge.dispatcher.max_attempts + 1
    await bridge.store.close()
    await bridge.api.close()


async def test_a_bridge_receives_only_its_own_namespace_events(bridge_factory: Any, homeserver: Any) -> None:
    """Tests share one Synapse: each gets a namespace of its own, so events of another test's
    rooms never reach its bridge (they once leaked ~1,100 events into later tests)."""
    import secrets

    from bridge.matrix.appservice_api import AppserviceAPI

    bridge = await bridge_factory(with_bot=False)
    seen: list[dict[str, Any]] = []

    async def record(event: dict[str, Any]) -> None:
        seen.append(event)

    bridge.dispatcher.handlers.append(record)
    other = homeserver.spare_namespace()
    async with AppserviceAPI(base_url=other.homeserver.url, as_token=other.appservice.as_token) as api:
        await api.register_user(other.bot.localpart)
        theirs = await api.create_room(as_user=other.bot_user_id, body={"preset": "private_chat"})
        await api.send_event(theirs, "m.room.message", {"msgtype": "m.text", "body": "ailleurs"},
                             as_user=other.bot_user_id, txn_id=secrets.token_hex(4))
    me = bridge.config.bot_user_id
    await bridge.api.register_user(bridge.config.bot.localpart)
    mine = await bridge.api.create_room(as_user=me, body={"preset": "private_chat"})
    marker = await bridge.api.send_event(mine, "m.room.message", {"msgtype": "m.text", "body": "ici"}, as_user=me,
                                         txn_id=secrets.token_hex(4))
    # Synapse delivers each appservice's events in order: once our last event is here, theirs
    # would have been too.
    for _ in range(600):
        if any(e.get("event_id") == marker for e in seen):
            break
        await asyncio.sleep(0.05)
    assert any(e.get("event_id") == marker for e in seen)
    assert all(e.get("room_id") == mine for e in seen), {e.get("room_id") for e in seen}


def test_events_cli_lists_and_retries_dead_letters(tmp_path: Any) -> None:
    """`ent-bridge events list --dead` shows metadata (never content), `events retry` puts back."""
    import asyncio
    import subprocess
    import sys

    import yaml

    from bridge.store.sqlite import SqliteStore
    from tests.conftest import write_bridge_files

    config_path, _ = write_bridge_files(tmp_path, hs_url="http://127.0.0.1:9", bridge_port=1)
    data = yaml.safe_load(config_path.read_text())
    db = tmp_path / "bridge.db"
    data["database"]["url"] = f"sqlite:///{db}"
    config_path.write_text(yaml.safe_dump(data))

    async def make_dead() -> None:
        store = SqliteStore(str(db))
        await store.open()
        await store.record_transaction("t9", [EVENT], now_ms=1)
        await store.event_failed("t9", 0, error="RuntimeError: boom", max_attempts=1)
        await store.close()

    asyncio.run(make_dead())

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "bridge", "-c", str(config_path), "events", *args],
                              capture_output=True, text=True, check=True).stdout

    listed = cli("list", "--dead")
    assert "1 dead letters" in listed and "t9:0" in listed and "RuntimeError: boom" in listed
    assert "bonjour" not in listed  # the message itself never
    assert "1 dead letters put back" in cli("retry", "t9:0")
    assert "1 events waiting, 0 dead letters" in cli("list")


async def test_the_dispatcher_wakes_for_the_earliest_retry_not_the_oldest(bridge_factory: Any) -> None:
    """An event postponed for an hour must not hold up one postponed for half a second."""
    bridge = await bridge_factory(with_bot=False, start=False)
    store = bridge.store
    now = bridge.dispatcher.clock.now_ms()
    await store.record_transaction("old", [{**EVENT, "event_id": "$old"}], now_ms=1)
    await store.record_transaction("new", [{**EVENT, "event_id": "$new"}], now_ms=2)
    await store.event_failed("old", 0, error="x", max_attempts=20, next_attempt_ms=now + 3_600_000)
    await store.event_failed("new", 0, error="x", max_attempts=20, next_attempt_ms=now + 500)
    await bridge.dispatcher._next_retry()
    timer = bridge.dispatcher._timer
    assert timer is not None and timer.when() - asyncio.get_running_loop().time() < 5
    timer.cancel()
    await store.close()
    await bridge.api.close()
