"""What keeps moderation's latency low under load, each checked where it can fail: rooms handled side
by side (one room's wait holds up no other), audit entries written together (a group commit that
never returns before its entries are written), SQLite transactions sent to the store's thread in
one hop, start-up's heap frozen."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from typing import Any

import pytest

from bridge.appservice.dispatch import Dispatcher
from bridge.audit import AuditLog
from bridge.heap import settle
from bridge.store.db import SqliteDatabase
from bridge.store.sqlite import SqliteStore


@pytest.fixture
async def sqlite(tmp_path: Path) -> Any:
    store = SqliteStore(str(tmp_path / "t.db"))
    await store.open()
    yield store
    await store.close()


def _counted(store: SqliteStore, method: str) -> list[int]:
    """Count the calls of one of the store's methods (the one-element list is the count)."""
    calls, real = [0], getattr(store, method)

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await real(*args, **kwargs)

    setattr(store, method, counted)
    return calls


def _event(room: str, n: int) -> dict[str, Any]:
    return {"type": "m.room.message", "room_id": room, "event_id": f"${room}{n}", "sender": "@p:s",
            "content": {"msgtype": "m.text", "body": "x"}}


async def test_a_slow_room_holds_up_no_other_and_each_room_keeps_its_order(sqlite: SqliteStore) -> None:
    """Room A's first event waits (a homeserver slow to answer a redaction): room B's events are
    handled meanwhile, and A's are handled in their order once it answers. (Handled one after
    the other, B waited for A.)"""
    answered = asyncio.Event()
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        if event["event_id"] == "$!a0":
            await answered.wait()
        seen.append(str(event["event_id"]))

    await sqlite.record_transaction("t1", [_event("!a", 0), _event("!a", 1), _event("!b", 0), _event("!b", 1)],
                                    now_ms=1)
    dispatcher = Dispatcher(sqlite, [handler])
    drained = asyncio.ensure_future(dispatcher.drain_once())
    for _ in range(2000):
        if len(seen) == 2:
            break
        await asyncio.sleep(0.005)
    assert seen == ["$!b0", "$!b1"]  # B done while A's first event still waits
    answered.set()
    assert await drained == 4
    assert seen == ["$!b0", "$!b1", "$!a0", "$!a1"]
    assert await sqlite.pending_events() == []  # all recorded as handled


async def test_events_handled_one_after_another_leave_the_inbox_in_a_few_writes(sqlite: SqliteStore) -> None:
    """Each handled event took a commit of its own (an fsync, in the one queue where the next
    transaction and the audit entries wait): they now wait a moment to leave together."""
    writes = _counted(sqlite, "events_done")

    async def handler(event: dict[str, Any]) -> None:
        await sqlite.handled([str(event["event_id"])])  # a store round trip, as moderation's reads are

    await sqlite.record_transaction("t1", [_event(f"!r{n % 3}", n) for n in range(60)], now_ms=1)
    assert await Dispatcher(sqlite, [handler]).drain_once() == 60
    assert await sqlite.pending_events() == []
    assert writes[0] <= 8, writes  # one every SAVE_DELAY_S at most (21 before, one every few events)


async def test_flushes_side_by_side_share_one_write_and_return_once_written(sqlite: SqliteStore) -> None:
    audit = AuditLog(sqlite, key="k" * 32)
    writes = _counted(sqlite, "audit_extend")

    async def decide(n: int) -> int:
        audit.record(actor="ent-bridge", action="moderation_links", reason="lien", now_ms=n)
        await audit.flush()
        return len(await sqlite.audit_rows())  # what is on record when this flush returned

    on_record = await asyncio.gather(*(decide(n) for n in range(10)))
    assert writes[0] < 10  # the entries queued while a write ran went with the next one
    assert all(count >= n + 1 for n, count in enumerate(on_record))  # none returned before its entry was written
    assert len(await sqlite.audit_rows()) == 10
    assert (await audit.verify()).ok


async def test_a_failed_audit_write_is_not_reported_written_to_whoever_waited_on_it(sqlite: SqliteStore) -> None:
    """The write that carried a waiting flusher's entry fails: that flusher's entries are written by
    its own write (or it fails too), never lost with a success returned."""
    audit = AuditLog(sqlite, key="k" * 32)
    extend, calls = sqlite.audit_extend, 0
    started = asyncio.Event()
    release = asyncio.Event()

    async def failing_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:  # the write that carries the waiters' entries
            raise ConnectionError("store gone")
        if calls == 1:
            started.set()
            await release.wait()
        return await extend(*args, **kwargs)

    sqlite.audit_extend = failing_once  # type: ignore[method-assign]
    audit.record(actor="ent-bridge", action="first", reason="r")
    first = asyncio.ensure_future(audit.flush())
    await started.wait()
    audit.record(actor="ent-bridge", action="second", reason="r")
    audit.record(actor="ent-bridge", action="third", reason="r")
    waiters = [asyncio.ensure_future(audit.flush()), asyncio.ensure_future(audit.flush())]
    await asyncio.sleep(0.01)
    release.set()
    assert await first == 1
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert isinstance(results[0], ConnectionError)
    assert results[1] == 2  # the second waiter wrote what the failed write carried
    assert [r.body.count('"second"') + r.body.count('"third"') for r in await sqlite.audit_rows()][1:] == [1, 1]


async def test_an_sqlite_transaction_is_one_hop_unless_it_reads(sqlite: SqliteStore) -> None:
    """A write-only transaction (handled events leaving the inbox) is one hop to the store's thread,
    not one per statement; a read inside sees the transaction's own writes; a failed statement
    rolls everything back and leaves no transaction open. The inbox write and an audit entry,
    which read inside their transaction, are scripts: one hop too."""
    db = sqlite.db
    assert isinstance(db, SqliteDatabase)
    hops = 0
    call = db.call

    async def counted(fn: Any) -> Any:
        nonlocal hops
        hops += 1
        return await call(fn)

    db.call = counted  # type: ignore[method-assign]
    await sqlite.record_transaction("t1", [_event("!a", 0), _event("!a", 1)], now_ms=1)
    hops = 0
    await sqlite.events_done([("t1", 0), ("t1", 1)], event_ids=["$!a0", "$!a1"], now_ms=2)
    assert hops == 1  # BEGIN, two statements and COMMIT together (before: four hops)
    hops = 0
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (key, value) VALUES ($1, $2)", "k1", "v1")
        assert await tx.fetchval("SELECT value FROM kv WHERE key = $1", "k1") == "v1"
    assert hops == 2
    hops = 0
    assert await sqlite.receive_transaction("t2", [_event("!a", 2)], now_ms=3) == set()
    assert hops == 1  # the inbox write, its txn id's check and the handled ids' lookup (before: three)
    hops = 0
    audit = AuditLog(sqlite, key="k" * 32)
    audit.record(actor="ent-bridge", action="moderation_links", reason="lien")
    await audit.flush()
    assert hops == 1  # the chain's last entry read, the new one built and written (before: two)
    with pytest.raises(Exception, match="UNIQUE"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO kv (key, value) VALUES ($1, $2)", "k2", "v2")
            await tx.execute("INSERT INTO kv (key, value) VALUES ($1, $2)", "k1", "again")
    assert await sqlite.get_value("k2") is None  # all or nothing
    assert await db.call(lambda conn: conn.in_transaction) is False
    await sqlite.set_value("k3", "v3")  # the connection is usable
    assert await sqlite.get_value("k3") == "v3"


def test_settling_the_heap_freezes_what_start_up_built_and_later_garbage_is_still_collected() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    built = [Cycle() for _ in range(10)]
    try:
        frozen = settle()
        assert frozen >= len(built) and gc.get_freeze_count() == frozen
        walked = {id(o) for o in gc.get_objects()}
        assert not any(id(b) in walked for b in built)  # no collection walks them any more
        later = Cycle()
        del later
        assert gc.collect() >= 1  # cyclic garbage made after start-up is still collected
    finally:
        gc.unfreeze()
