"""Drains the durable inbox: hands each event to the handlers, retries failures with backoff.

It never stops silently. A store that fails (locked, connection killed) is retried with backoff,
its trouble visible in `state` (and so in /health); the draining task is supervised and restarted
if it ever ends. A failing event is tried again after 0.5 s, 1 s, 2 s… up to an hour between
tries, for `max_attempts` tries (hours), then kept as a dead letter that `ent-bridge events retry`
puts back. An event already handled (by its event id) is not handled twice.

Events the server has just put on record are handed over in memory as well (`notify`), so the
common case costs no read of the inbox: it is read at start, when a postponed event is due, when
the hand-over overflowed, after a store failure, with nothing handed over, and every `SWEEP_S`
seconds (dead letters put back by `ent-bridge events retry`, from another process).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.clock import SYSTEM, Clock
from bridge.logging import get_logger
from bridge.store.base import InboxItem, Store
from bridge.tasks import cancel_and_wait

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
BATCH = 500
LANES = 16  # rooms handled side by side in one drain
HANDED_MAX = 5 * BATCH  # events handed over in memory and not yet taken; beyond, the inbox is read
SWEEP_S = 10.0
log = get_logger(component="dispatcher")


def retry_delay_ms(attempts: int, *, base_ms: int = 500, cap_ms: int = 3_600_000) -> int:
    """After the n-th failure: 0.5 s, 1 s, 2 s … capped at an hour (20 tries span about 9 hours)."""
    return int(min(cap_ms, base_ms * 2 ** max(0, attempts - 1)))


@dataclass
class DispatcherState:
    """What /health reports of the dispatcher."""

    store_failures: int = 0  # consecutive failed drains (0: healthy)
    restarts: int = 0
    last_error: str | None = None
    handled: int = 0


class Dispatcher:
    def __init__(self, store: Store, handlers: list[EventHandler], *, max_attempts: int = 20,
                 clock: Clock = SYSTEM) -> None:
        self.store = store
        self.handlers = handlers
        self.max_attempts = max_attempts
        self.clock = clock
        self.state = DispatcherState()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None
        # Handled, not yet recorded as such (the store failed at that moment): recorded first at the
        # next drain, never handled again.
        self._unsaved: dict[tuple[str, int], str | None] = {}
        self._handed: list[InboxItem] = []  # on record, not taken yet, in the order received
        self._read_inbox = True  # what was on record before this process started is read first
        self._retry_unknown = True  # when the next postponed event is due must be looked up
        self._sweeper: asyncio.TimerHandle | None = None

    def notify(self, txn_id: str | None = None, events: list[dict[str, Any]] | None = None) -> None:
        """New events are on record (the transaction's, handed over here), or something else
        changed in the inbox (no arguments: it is read)."""
        if txn_id is None or events is None:
            self._read_inbox = True
        elif not events:
            return  # ephemeral events only (typing, receipts): nothing was put in the inbox
        elif len(self._handed) + len(events) > HANDED_MAX:
            # Memory stays bounded: what is on record is read from there instead.
            self._handed.clear()
            self._read_inbox = True
        else:
            self._handed += [InboxItem(txn_id, i, e, 0) for i, e in enumerate(events)]
        self._wake.set()

    async def _take(self) -> list[InboxItem]:
        """The next events to handle: those handed over, or what the inbox holds now."""
        if self._handed and not self._read_inbox:
            items, self._handed = self._handed[:BATCH], self._handed[BATCH:]
            return items
        self._read_inbox = False
        self._handed.clear()  # all on record before this read: the read finds them
        try:
            items = await self.store.pending_events(limit=BATCH, due_ms=self.clock.now_ms())
        except BaseException:
            self._read_inbox = True
            raise
        self._retry_unknown = True
        # What was handed over while reading is on record too, and may be in what was read.
        read = {(i.txn_id, i.idx) for i in items}
        self._handed = [i for i in self._handed if (i.txn_id, i.idx) not in read]
        if len(items) >= BATCH:
            self._read_inbox = True  # more may be on record than this read could take
        return items

    async def _handle(self, item: InboxItem) -> bool:
        try:
            for handler in self.handlers:
                await handler(item.event)
        except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, not lost
            self._retry_unknown = True
            attempts = item.attempts + 1
            due = self.clock.now_ms() + retry_delay_ms(attempts)
            dead = await self.store.event_failed(item.txn_id, item.idx, error=f"{type(exc).__name__}: {exc}",
                                                 max_attempts=self.max_attempts, next_attempt_ms=due)
            (log.error if dead else log.warning)(
                "event_dead_letter" if dead else "event_handler_failed", txn_id=item.txn_id,
                event_id=item.event.get("event_id"), event_type=item.event.get("type"), attempts=attempts,
                error=type(exc).__name__)
            return False
        return True

    async def _save(self) -> None:
        """Record the handled events (they leave the inbox, their ids are remembered)."""
        if self._unsaved:
            done = list(self._unsaved)
            ids = [e for e in self._unsaved.values() if e is not None]
            await self.store.events_done(done, event_ids=ids, now_ms=self.clock.now_ms())
            self.state.handled += len(done)
            self._unsaved.clear()

    async def drain_once(self) -> int:
        """Handle every event due now once; returns how many were taken from the inbox.

        A room's events are handled in their order, one after the other; different rooms are
        handled side by side (up to `LANES` at once). Why: acting on a message waits on the
        homeserver (a redaction, a notice) and on the store (the audit entry); one room's wait no
        longer holds up every other room's messages, and the audit entries written meanwhile go
        to the store together."""
        await self._save()  # what a store failure kept from being recorded last time
        items = await self._take()
        ids = [str(i.event["event_id"]) for i in items if isinstance(i.event.get("event_id"), str)]
        try:
            seen = await self.store.handled(ids)
        except BaseException:
            self._read_inbox = True  # the items taken are on record: read them again from there
            raise
        unsaved_ids = {e for e in self._unsaved.values() if e is not None}
        lanes: dict[str, list[InboxItem]] = {}
        for item in items:
            lanes.setdefault(str(item.event.get("room_id", "")), []).append(item)
        room = asyncio.Semaphore(LANES)

        async def lane(queue: list[InboxItem]) -> None:
            async with room:
                for item in queue:
                    raw_id = item.event.get("event_id")
                    event_id = raw_id if isinstance(raw_id, str) else None
                    if event_id is not None and (event_id in seen or event_id in unsaved_ids):
                        log.info("event_already_handled", event_id=event_id, txn_id=item.txn_id)
                    elif not await self._handle(item):
                        continue
                    self._unsaved[(item.txn_id, item.idx)] = event_id
                    if event_id is not None:
                        unsaved_ids.add(event_id)

        await asyncio.gather(*(lane(queue) for queue in lanes.values()))
        # Handled events leave the inbox together. If the store fails here they stay in memory and
        # are recorded first next time; only a crash before this line re-handles them (handlers are
        # idempotent: redacting or kicking twice is harmless, losing an event is not).
        await self._save()
        return len(items)

    async def _next_retry(self) -> None:
        """Wake up when the earliest postponed event is due (not the oldest one's time: an event
        received later may be due sooner). Looked up only when it may have changed: after a read
        of the inbox or a failure."""
        if not self._retry_unknown:
            return
        due = (await self.store.inbox_stats()).next_attempt_ms
        self._retry_unknown = False
        if due is not None and due > self.clock.now_ms():
            delay = (due - self.clock.now_ms()) / 1000
            if self._timer is not None:
                self._timer.cancel()
            self._timer = asyncio.get_running_loop().call_later(delay, self.notify)

    def _sweep(self) -> None:
        self.notify()
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)

    async def run(self) -> None:
        self.notify()  # events left from before a restart are handled first
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_S, self._sweep)
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                while await self.drain_once() >= BATCH:
                    pass  # a full batch: more may be waiting
                await self._next_retry()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store failed: retried, never a silent stop
                self.state.store_failures += 1
                self.state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                delay = min(30.0, 0.25 * 2 ** min(self.state.store_failures, 8))
                log.error("dispatcher_store_error", error=type(exc).__name__, failures=self.state.store_failures,
                          retry_in_s=delay)
                await self.clock.sleep(delay)
                self.notify()
                continue
            if self.state.store_failures:
                log.info("dispatcher_recovered", after_failures=self.state.store_failures)
                self.state.store_failures = 0

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self.run(), name="dispatcher")
        self._task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        """The draining task must never end while the bridge runs: if it does, say so and restart."""
        if self._stopping or task.cancelled():
            return
        self.state.restarts += 1
        self.state.last_error = repr(task.exception())[:300]
        log.error("dispatcher_restarted", restarts=self.state.restarts, error=self.state.last_error)
        self.start()

    async def stop(self) -> None:
        self._stopping = True
        for timer in (self._timer, self._sweeper):
            if timer is not None:
                timer.cancel()
        self._sweeper = None
        await cancel_and_wait(self._task)
