"""The dispatcher's handling of taken events: one queue a room, handled side by side, recorded as they end.

Why: a drain that handed out a batch and waited for all of it made every message wait for the
slowest of its batch (an audit write, a mute), and the next transaction's events wait for that
batch to end. Here each room's events are handled one after the other in their order, different
rooms side by side (up to `LANES` at once), and events taken meanwhile join their room's queue at
once. Handled events leave the inbox in the background, one write carrying all those handled
meanwhile; a store failure met there is kept for the dispatcher's run loop, which reports it and
tries again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bridge.clock import Clock
from bridge.errors import NotYet
from bridge.logging import get_logger
from bridge.store.base import InboxItem, Store
from bridge.tasks import cancel_and_wait

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]
Taken = tuple[InboxItem, bool]  # an event to handle, and whether it was handled before
Key = tuple[str, int]  # (txn id, index in it)
LANES = 256  # events handled at once, each of a different room (as many as the bot's lanes hold)
RECENT_MAX = 10_000  # ids of the events handled last, looked up before handling one
SAVE_DELAY_S = 0.05  # handled events wait this long to leave the inbox together
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


class Handling:
    def __init__(self, store: Store, handlers: list[EventHandler], state: DispatcherState, *, max_attempts: int,
                 clock: Clock, on_fault: Callable[[], None], on_failed: Callable[[], None]) -> None:
        """on_fault: a store failure was met in the background (`check` raises it); on_failed: a
        handler failed and its event was postponed on record."""
        self.store = store
        self.handlers = handlers
        self.state = state
        self.max_attempts = max_attempts
        self.clock = clock
        self._on_fault = on_fault
        self._on_failed = on_failed
        # Handled, not yet recorded as such: recorded by the saver, or first at the next settle.
        self.unsaved: dict[Key, str | None] = {}
        self._recent: dict[str, None] = {}  # oldest first
        self._taken: set[Key] = set()  # taken, not yet handled
        self._queues: dict[str, deque[Taken]] = {}
        self._workers: set[asyncio.Task[None]] = set()
        self._lanes = asyncio.Semaphore(LANES)
        self._idle = asyncio.Event()
        self._saver: asyncio.Task[None] | None = None
        self._fault: BaseException | None = None

    @property
    def in_hand(self) -> int:
        """Events taken and not yet handled."""
        return len(self._taken)

    def queue(self, taken: list[Taken]) -> None:
        """Each event behind its room's earlier ones; a room with none waiting starts at once."""
        for item, seen in taken:
            self._taken.add((item.txn_id, item.idx))
            room_id = str(item.event.get("room_id", ""))
            queue = self._queues.get(room_id)
            if queue is None:
                queue = self._queues[room_id] = deque()
                worker = asyncio.create_task(self._room(room_id, queue))
                self._workers.add(worker)
                worker.add_done_callback(self._workers.discard)
            queue.append((item, seen))

    async def _room(self, room_id: str, queue: deque[Taken]) -> None:
        try:
            while queue:
                item, seen = queue.popleft()
                key = (item.txn_id, item.idx)
                try:
                    async with self._lanes:
                        await self._one(item, key, seen)
                finally:
                    self._taken.discard(key)
        except Exception as exc:  # noqa: BLE001 - the store failed: these stay on record, read again
            self._fail(exc)
        finally:
            # Whatever ended this room's turn (a store failure, a cancellation), what it still held
            # is on record and is read again from there: nobody waits on it here.
            for item, _ in queue:
                self._taken.discard((item.txn_id, item.idx))
            queue.clear()
            del self._queues[room_id]
            if not self._taken:
                self._idle.set()

    async def _one(self, item: InboxItem, key: Key, seen: bool) -> None:
        raw_id = item.event.get("event_id")
        event_id = raw_id if isinstance(raw_id, str) else None
        if event_id is not None and (seen or event_id in self._recent):
            log.info("event_already_handled", event_id=event_id, txn_id=item.txn_id)
        elif not await self._handle(item):
            return  # its failure is on record: it is tried again from there
        self.unsaved[key] = event_id
        if event_id is not None:
            self._recent[event_id] = None
            if len(self._recent) > RECENT_MAX:
                del self._recent[next(iter(self._recent))]
        if self._saver is None or self._saver.done():
            self._saver = asyncio.create_task(self._save_all())

    async def _handle(self, item: InboxItem) -> bool:
        try:
            for handler in self.handlers:
                await handler(item.event)
        except NotYet as wait:  # on record, looked at again when it is due (an attempt, no failure)
            self._on_failed()
            await self.store.event_failed(item.txn_id, item.idx, error=f"NotYet: {wait}",
                                          max_attempts=self.max_attempts, next_attempt_ms=wait.until_ms)
            log.info("event_postponed", txn_id=item.txn_id, event_id=item.event.get("event_id"),
                     event_type=item.event.get("type"), until_ms=wait.until_ms)
            return False
        except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, not lost
            self._on_failed()
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

    def _fail(self, exc: BaseException) -> None:
        self._fault = exc
        self._on_fault()

    def check(self) -> None:
        """Raise the store failure met in the background since the last check, if any."""
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault

    def healthy(self) -> None:
        """The store answered and nothing handled waits to be recorded: no longer degraded."""
        if self.state.store_failures and not self.unsaved and self._fault is None:
            log.info("dispatcher_recovered", after_failures=self.state.store_failures)
            self.state.store_failures = 0

    async def _save_all(self) -> None:
        try:
            # A moment's wait lets one write carry the events handled meanwhile: writing as soon
            # as one was handled took a commit (an fsync) for every few events, in the store's
            # one queue where the next transaction's write and the audit entries wait. Handled
            # but not yet recorded, an event is handled again after a crash: its effects are
            # idempotent, and its audit entry is on record once.
            while self.unsaved:
                await asyncio.sleep(SAVE_DELAY_S)
                await self.save()
        except Exception as exc:  # noqa: BLE001 - kept in memory, recorded at the next try
            self._fail(exc)

    async def save(self) -> None:
        """Record the handled events (they leave the inbox, their ids are remembered)."""
        done = dict(self.unsaved)
        if done:
            await self.store.events_done(list(done), event_ids=[e for e in done.values() if e is not None],
                                         now_ms=self.clock.now_ms())
            for key in done:
                del self.unsaved[key]
            self.state.handled += len(done)
        self.healthy()

    async def settle(self) -> None:
        """Wait until every event taken is handled and recorded (raises a store failure met)."""
        while True:
            self.check()
            if self._taken:
                self._idle.clear()
                await self._idle.wait()
            elif self._saver is not None and not self._saver.done():
                await asyncio.wait([self._saver])
            elif self.unsaved:
                await self.save()
            else:
                return

    async def stop(self) -> None:
        """Stop handling; what was handled is recorded, so a restart does not handle it again."""
        for worker in list(self._workers):
            await cancel_and_wait(worker)
        await cancel_and_wait(self._saver)
        self._queues.clear()  # a worker cancelled before it started leaves its queue behind
        self._taken.clear()
        try:
            await self.save()
        except Exception as exc:  # noqa: BLE001 - left on record: handled again after the restart
            log.warning("dispatcher_unsaved_at_stop", events=len(self.unsaved), error=type(exc).__name__)
