"""Drains the durable inbox: hands each event to the handlers, retries failures with backoff.

It never stops silently. A store that fails (locked, connection killed) is retried with backoff,
its trouble visible in `state` (and so in /health); the draining task is supervised and restarted
if it ever ends. A failing event is tried again after 0.5 s, 1 s, 2 s… up to an hour between
tries, for `max_attempts` tries (hours), then kept as a dead letter that `ent-bridge events retry`
puts back. An event already handled (by its event id) is not handled twice.

Events the server has just put on record are handed over in memory as well (`notify`), so the
common case costs no read of the inbox: it is read at start, when a postponed event is due, when
the hand-over overflowed, after a store failure, with nothing handed over, and every `SWEEP_S`
seconds (dead letters put back by `ent-bridge events retry`, from another process). Taken events
are handled as `handling` says: a room's in order, rooms side by side, without waiting for a batch.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.appservice.handling import DispatcherState, EventHandler, Handling, Taken, retry_delay_ms
from bridge.clock import SYSTEM, Clock
from bridge.logging import get_logger
from bridge.store.base import InboxItem, Store
from bridge.tasks import cancel_and_wait

__all__ = ["Dispatcher", "DispatcherState", "EventHandler", "retry_delay_ms"]
BATCH = 500
HANDED_MAX = 5 * BATCH  # events in memory (handed over, or taken and not yet handled); beyond, the inbox is read
SWEEP_S = 10.0
log = get_logger(component="dispatcher")


class Dispatcher:
    def __init__(self, store: Store, handlers: list[EventHandler], *, max_attempts: int = 20,
                 clock: Clock = SYSTEM) -> None:
        self.store = store
        self.state = DispatcherState()
        self._wake = asyncio.Event()
        self._handling = Handling(store, handlers, self.state, max_attempts=max_attempts, clock=clock,
                                  on_fault=self._wake.set, on_failed=self._postponed)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._timer: asyncio.TimerHandle | None = None
        self._handed: list[Taken] = []  # on record, not taken yet, in the order received
        self._read_inbox = True  # what was on record before this process started is read first
        self._retry_unknown = True  # when the next postponed event is due must be looked up
        self._sweeper: asyncio.TimerHandle | None = None

    @property
    def handlers(self) -> list[EventHandler]:
        return self._handling.handlers

    @property
    def max_attempts(self) -> int:
        return self._handling.max_attempts

    @property
    def clock(self) -> Clock:
        return self._handling.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._handling.clock = clock

    def _postponed(self) -> None:
        # Recorded by a room's worker, maybe after the loop looked up the next retry: the loop
        # looks again now, or the event would wait for the next transaction or sweep (10 s).
        self._retry_unknown = True
        self._wake.set()

    def notify(self, txn_id: str | None = None, events: list[dict[str, Any]] | None = None,
               handled: set[str] | None = None) -> None:
        """New events are on record (the transaction's, handed over here, with the ids of those
        handled before), or something else changed in the inbox (no arguments: it is read)."""
        if txn_id is None or events is None:
            self._read_inbox = True
        elif not events:
            return  # ephemeral events only (typing, receipts): nothing was put in the inbox
        elif len(self._handed) + self._handling.in_hand + len(events) > HANDED_MAX:
            # Memory stays bounded: what is on record is read from there instead.
            self._handed.clear()
            self._read_inbox = True
        else:
            seen = handled or set()
            self._handed += [(InboxItem(txn_id, i, e, 0), e.get("event_id") in seen) for i, e in enumerate(events)]
        self._wake.set()

    async def _take(self) -> list[Taken]:
        """The next events to handle, each with whether it was handled before (in another
        transaction): those handed over, or what the inbox holds now."""
        if self._handed and not self._read_inbox:
            taken, self._handed = self._handed[:BATCH], self._handed[BATCH:]
            return taken
        self._read_inbox = False
        self._handed.clear()  # all on record before this read: the read finds them
        try:
            items = await self.store.pending_events(limit=BATCH, due_ms=self.clock.now_ms())
            seen = await self.store.handled([str(i.event["event_id"]) for i in items
                                             if isinstance(i.event.get("event_id"), str)])
        except BaseException:
            self._read_inbox = True
            raise
        self._retry_unknown = True
        # What was handed over while reading is on record too, and may be in what was read.
        read = {(i.txn_id, i.idx) for i in items}
        self._handed = [t for t in self._handed if (t[0].txn_id, t[0].idx) not in read]
        if len(items) >= BATCH:
            self._read_inbox = True  # more may be on record than this read could take
        return [(i, i.event.get("event_id") in seen) for i in items]

    async def _feed(self) -> int:
        """Take the next events and queue each behind its room's; returns how many were taken."""
        if self._read_inbox or not self._handed:
            # A read finds on record what is still being handled: it waits until all of that is
            # handled and recorded, so what it finds is only what nobody holds.
            await self._handling.settle()
        taken = await self._take()
        self._handling.queue(taken)
        return len(taken)

    async def drain_once(self) -> int:
        """Handle every event due now once, record them handled; returns how many were taken.

        A room's events are handled in their order, one after the other; different rooms are
        handled side by side (up to `handling.LANES` at once). Why: acting on a message waits on the
        homeserver (a redaction, a notice) and on the store (the audit entry); one room's wait
        holds up no other room's messages. (The run loop does not wait here between takes: the
        next transaction's events are queued while the earlier ones are still being handled.)"""
        taken = await self._feed()
        await self._handling.settle()
        return taken

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
                self._handling.check()
                while await self._feed() >= BATCH:
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
            self._handling.healthy()

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
        await self._handling.stop()
