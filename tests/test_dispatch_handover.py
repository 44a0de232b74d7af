"""Events handed over in memory by the transaction endpoint: handled without reading the inbox,
once each, and the inbox still read whenever memory may not hold everything on record."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bridge.appservice import dispatch
from bridge.appservice.dispatch import Dispatcher
from bridge.store.base import InboxItem
from bridge.store.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """The real SQLite store, counting its inbox reads; `during_read` runs inside one."""

    reads = 0
    during_read: Any = None

    async def pending_events(self, *, limit: int = 100, due_ms: int | None = None) -> list[InboxItem]:
        self.reads += 1
        items = await super().pending_events(limit=limit, due_ms=due_ms)
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            await hook()
        return items


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    s = CountingStore(str(tmp_path / "t.db"))
    await s.open()
    yield s
    await s.close()


def _events(txn: str, n: int) -> list[dict[str, Any]]:
    return [{"type": "m.room.message", "room_id": "!r:s", "event_id": f"${txn}.{i}", "sender": "@p:s",
             "content": {"msgtype": "m.text", "body": "x"}} for i in range(n)]


async def _received(store: CountingStore, dispatcher: Dispatcher, txn: str, n: int) -> None:
    """As the transaction endpoint does: on record first, then handed over."""
    events = _events(txn, n)
    assert await store.record_transaction(txn, events, now_ms=1)
    dispatcher.notify(txn, events)


async def test_events_handed_over_are_handled_without_reading_the_inbox(store: CountingStore) -> None:
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    await dispatcher.drain_once()  # at start, the inbox is read (what an earlier process left)
    assert store.reads == 1
    await _received(store, dispatcher, "t1", 3)
    await _received(store, dispatcher, "t2", 2)
    assert await dispatcher.drain_once() == 5
    assert seen == ["$t1.0", "$t1.1", "$t1.2", "$t2.0", "$t2.1"]  # in the order received
    assert store.reads == 1
    assert await store.pending_events() == []  # and recorded as handled


async def test_an_event_on_record_and_handed_over_during_a_read_is_handled_once(store: CountingStore) -> None:
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    await store.record_transaction("left", _events("left", 1), now_ms=1)  # before this process

    async def arrives() -> None:  # recorded and handed over while the read's answer travels back
        await _received(store, dispatcher, "t1", 1)

    store.during_read = arrives
    await dispatcher.drain_once()
    await dispatcher.drain_once()
    await dispatcher.drain_once()
    assert sorted(seen) == ["$left.0", "$t1.0"]


async def test_an_overflowing_hand_over_is_read_from_the_inbox(store: CountingStore,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "HANDED_MAX", 4)
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    await dispatcher.drain_once()
    await _received(store, dispatcher, "t1", 3)
    await _received(store, dispatcher, "t2", 3)  # over the bound: memory lets go of all of them
    assert dispatcher._handed == []
    await dispatcher.drain_once()
    assert store.reads == 2 and len(seen) == 6


async def test_a_handed_over_event_that_fails_is_retried_from_the_inbox(store: CountingStore) -> None:
    calls: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        calls.append(event["event_id"])
        if len(calls) == 1:
            raise RuntimeError("homeserver down")

    dispatcher = Dispatcher(store, [handler])
    await dispatcher.drain_once()
    await _received(store, dispatcher, "t1", 1)
    await dispatcher.drain_once()
    [item] = await store.pending_events()
    assert item.attempts == 1  # postponed on record
    await store.event_failed("t1", 0, error="x", max_attempts=20, next_attempt_ms=0)  # due now
    dispatcher.notify()  # as the retry timer does
    await dispatcher.drain_once()
    assert calls == ["$t1.0", "$t1.0"] and await store.pending_events() == []


async def test_dead_letters_put_back_by_another_process_are_handled_by_the_sweep(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ent-bridge events retry` runs in another process: nothing is handed over, a running
    bridge finds them when it sweeps the inbox, even while transactions keep coming."""
    monkeypatch.setattr(dispatch, "SWEEP_S", 0.05)
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["event_id"])

    await store.record_transaction("dead", _events("dead", 1), now_ms=1)
    await store.event_failed("dead", 0, error="x", max_attempts=1)  # a dead letter at once
    dispatcher = Dispatcher(store, [handler])
    dispatcher.start()
    try:
        for n in range(2000):  # traffic goes on meanwhile
            await _received(store, dispatcher, f"t{n}", 1)
            if n == 3:
                assert await store.retry_dead() == 1
            if "$dead.0" in seen:
                break
            await asyncio.sleep(0.01)
        assert "$dead.0" in seen
    finally:
        await dispatcher.stop()


async def test_a_transaction_without_events_wakes_nothing(store: CountingStore) -> None:
    """Typing and receipts come in transactions of their own: no event went to the inbox, so the
    dispatcher is not woken to read it."""
    dispatcher = Dispatcher(store, [])
    await dispatcher.drain_once()
    dispatcher._wake.clear()
    assert await store.record_transaction("typing", [], now_ms=1)
    dispatcher.notify("typing", [])
    assert not dispatcher._wake.is_set() and dispatcher._handed == []


async def test_a_transaction_is_handled_while_an_earlier_ones_slow_event_still_is(store: CountingStore) -> None:
    """The run loop does not wait for a batch to end before taking the next transaction: a room
    waiting on a slow homeserver holds up no later transaction of another room, and the slow
    room's own later events keep their turn behind it."""
    release = asyncio.Event()
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        if event["event_id"] == "$slow.0":
            await release.wait()
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    dispatcher.start()
    try:
        slow = [{**e, "room_id": "!slow:s"} for e in _events("slow", 1)]
        assert await store.record_transaction("slow", slow, now_ms=1)
        dispatcher.notify("slow", slow)
        later = [{**_events("later", 1)[0], "room_id": "!slow:s"}, *_events("other", 1)]
        later[1]["event_id"] = "$other.0"
        assert await store.record_transaction("later", later, now_ms=2)
        dispatcher.notify("later", later)
        for _ in range(2000):
            if seen:
                break
            await asyncio.sleep(0.005)
        assert seen == ["$other.0"]  # the other room's event, while the slow one still waits
        release.set()
        for _ in range(2000):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.005)
        assert seen == ["$other.0", "$slow.0", "$later.0"]  # the slow room's in their order
        for _ in range(2000):
            if not await store.pending_events():
                break
            await asyncio.sleep(0.005)
        assert await store.pending_events() == []
    finally:
        await dispatcher.stop()


async def test_events_handed_over_as_handled_before_are_not_handled_again_nor_looked_up(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The inbox write said which events were handled before (another transaction carried them):
    they are skipped, with no lookup of the dispatcher's own."""
    seen: list[str] = []
    lookups: list[list[str]] = []
    handled = store.handled

    async def counted(ids: Any) -> set[str]:
        lookups.append(list(ids))
        return await handled(ids)

    monkeypatch.setattr(store, "handled", counted)

    async def handler(event: dict[str, Any]) -> None:
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    await dispatcher.drain_once()
    lookups.clear()
    events = _events("t1", 2)
    before = await store.receive_transaction("t1", events, now_ms=1)
    dispatcher.notify("t1", events, {"$t1.0"})  # as if the store had found it handled
    assert before == set()
    await dispatcher.drain_once()
    assert seen == ["$t1.1"] and lookups == []
    assert await store.pending_events() == []


async def test_a_handler_cancelled_from_within_leaves_nothing_waited_on(store: CountingStore) -> None:
    """A handler that ends by a cancellation of its own (not the dispatcher stopping) ends its
    room's turn: the events it held stay on record, and nothing waits for them forever."""
    seen: list[str] = []

    async def handler(event: dict[str, Any]) -> None:
        if event["event_id"] == "$t1.0":
            raise asyncio.CancelledError
        seen.append(event["event_id"])

    dispatcher = Dispatcher(store, [handler])
    await dispatcher.drain_once()
    await _received(store, dispatcher, "t1", 2)
    other = [{**_events("t2", 1)[0], "room_id": "!other:s"}]
    assert await store.record_transaction("t2", other, now_ms=1)
    dispatcher.notify("t2", other)
    assert await asyncio.wait_for(dispatcher.drain_once(), timeout=60) == 3  # returns (the bound: a hang fails)
    assert seen == ["$t2.0"]
    assert [(i.txn_id, i.idx) for i in await store.pending_events()] == [("t1", 0), ("t1", 1)]


async def test_an_event_that_is_not_due_yet_is_looked_at_again_when_it_is(store: CountingStore) -> None:
    """A handler that can't judge an event yet (an encrypted message waiting for its key) says
    when to look again: on record, not due before then, handled once due."""
    from bridge.clock import FakeClock
    from bridge.errors import NotYet

    clock = FakeClock()
    due = clock.now_ms() + 60_000
    calls: list[int] = []

    async def handler(event: dict[str, Any]) -> None:
        calls.append(clock.now_ms())
        if clock.now_ms() < due:
            raise NotYet("waiting", until_ms=due)

    dispatcher = Dispatcher(store, [handler], clock=clock)
    await _received(store, dispatcher, "t1", 1)
    await dispatcher.drain_once()
    [item] = await store.pending_events()
    assert item.next_attempt_ms == due and item.last_error == "NotYet: waiting"
    assert await store.pending_events(due_ms=due - 1) == []  # not due before its time
    clock.advance(60)
    dispatcher.notify()
    await dispatcher.drain_once()
    assert len(calls) == 2 and await store.pending_events() == []


async def test_a_postponed_event_is_looked_at_when_due_without_waiting_for_the_sweep(
        store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running dispatcher: the event postponed by a handler is retried at its time, not at the
    next transaction or sweep (10 s later: a message waiting for its key stayed up that long)."""
    from bridge.errors import NotYet

    monkeypatch.setattr(dispatch, "SWEEP_S", 3600.0)  # no sweep within the test: the retry is the timer's
    done, looked_up = asyncio.Event(), asyncio.Event()
    calls: list[str] = []
    stats = store.inbox_stats

    async def inbox_stats() -> Any:
        try:
            return await stats()
        finally:
            looked_up.set()

    monkeypatch.setattr(store, "inbox_stats", inbox_stats)

    async def handler(event: dict[str, Any]) -> None:
        calls.append(event["event_id"])
        if len(calls) == 1:
            # Postponed once the loop has looked up the next retry (a slow handler: the bot's checks).
            await looked_up.wait()
            raise NotYet("waiting", until_ms=dispatcher.clock.now_ms() + 50)
        done.set()

    dispatcher = Dispatcher(store, [handler])
    dispatcher.start()
    try:
        while not store.reads:  # the loop's first read (what an earlier process left) is done
            await asyncio.sleep(0.01)
        await _received(store, dispatcher, "t1", 1)
        await asyncio.wait_for(done.wait(), timeout=60)  # the bound only turns a hang into a failure
        assert calls == ["$t1.0", "$t1.0"]
    finally:
        await dispatcher.stop()
