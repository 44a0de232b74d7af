"""Work handed over as it arrives, one lane per room (a room's items in their order, rooms side by
side), the positions (sync tokens) kept once the work received before them has ended, and the
events handled written down so that what a restart reads again is not handled twice."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from bridge.clock import Clock
from bridge.logging import get_logger

Work = Callable[[], Awaitable[None]]
log = get_logger(component="lanes")


class RoomLanes:
    """Why: the bot's sync loop handed each decrypted message to moderation and waited for its
    actions (audit write, redaction, notice, report: several homeserver round trips), so one
    insult held up every other room's messages of the same sync. Now `submit` returns as soon as
    the work is queued behind its room's earlier work; with `limit` items pending in all it waits
    for one to end (the sync loop slows down rather than memory growing without bound).

    Work must not raise (the bot's hooks log their failures); an exception is kept on its task
    and the lane goes on."""

    def __init__(self, *, limit: int = 256) -> None:
        self._room = asyncio.Semaphore(limit)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def submit(self, room_id: str, work: Work) -> None:
        await self._room.acquire()
        before = self._tails.get(room_id)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])  # its outcome is its own: this item runs after it, whatever
            await work()

        task = asyncio.ensure_future(run())
        self._tails[room_id] = task
        self._pending.add(task)
        task.add_done_callback(lambda t: self._done(room_id, t))

    def _done(self, room_id: str, task: asyncio.Task[None]) -> None:
        self._room.release()  # here, not in the task: a task cancelled before it started ends too
        self._pending.discard(task)
        if self._tails.get(room_id) is task:
            del self._tails[room_id]
        if not task.cancelled():
            task.exception()  # retrieved: a failure was the work's to report

    def snapshot(self) -> frozenset[asyncio.Task[None]]:
        """What is pending now (work submitted later is not in it)."""
        return frozenset(self._pending)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def join(self) -> None:
        """Wait until everything submitted so far has ended."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    async def cancel(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)


class Checkpoints:
    """Why: nio saves its sync token as a sync arrives, before its messages are handled, so a bridge
    that died meanwhile never saw them again (an insult never moderated). Here a token is saved
    once every piece of work submitted before it has ended, tokens in their order; after work was
    cancelled (a stop that could not wait for it) no later token is saved by this process, so the
    next start reads those messages again. Handled at least once: a message handled just before a
    crash may be handled again after it."""

    def __init__(self, lanes: RoomLanes, save: Callable[[str], None]) -> None:
        self._lanes = lanes
        self._save = save
        self._queue: asyncio.Queue[tuple[str, frozenset[asyncio.Task[None]]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.held = False  # set once a token was not saved: none after it is

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def mark(self, position: str) -> None:
        """`position` is to be kept once what was submitted so far has ended."""
        self._queue.put_nowait((position, self._lanes.snapshot()))

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            position, before = item
            if before:
                await asyncio.wait(before)
            if self.held or any(t.cancelled() for t in before):
                if not self.held:
                    log.warning("sync_token_held", reason="work_cancelled")
                self.held = True
                continue
            try:
                self._save(position)
            except Exception as exc:  # noqa: BLE001 - a token not saved means messages read again, not lost
                log.warning("sync_token_not_saved", error=type(exc).__name__)

    async def close(self) -> None:
        """Keep what can be kept of the positions marked so far, then end."""
        if self._task is None:
            return
        self._queue.put_nowait(None)
        await self._task
        self._task = None


class HandledStore(Protocol):
    """The store's record of handled event ids (the dispatcher's, shared under another prefix)."""

    async def handled(self, event_ids: Collection[str]) -> set[str]: ...
    async def events_done(self, items: list[tuple[str, int]], *, event_ids: Collection[str] = (),
                          now_ms: int = 0) -> None: ...


class Handled:
    """Why: a restart reads again what came after the last token kept, and some of it had been
    handled before the crash: an insult moderated twice is two strikes, an admin's command run
    twice. Each handled event id is written down (many in one write, behind the handling, never in
    its way); what a restart reads again is looked up first. The window left is the one the
    dispatcher has too: handled, not yet written, then a crash.

    The ids carry their own prefix: the dispatcher's record says an event of a homeserver
    transaction was handled, and the bot having seen a plaintext message in its sync must never
    make the dispatcher skip it."""

    PREFIX = "bot "
    LIMIT = 10_000  # ids waiting for a store that keeps failing: beyond, the oldest are let go

    def __init__(self, store: HandledStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._waiting: list[str] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def seen(self, event_id: str) -> bool:
        """Handled already; when the store can't say, not (handled twice rather than never)."""
        if event_id in self._waiting:
            return True
        try:
            return bool(await self._store.handled([self.PREFIX + event_id]))
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning("handled_ids_not_read", error=type(exc).__name__)
            return False

    def done(self, event_id: str) -> None:
        self._waiting.append(event_id)
        if len(self._waiting) > self.LIMIT:
            del self._waiting[:len(self._waiting) - self.LIMIT]
            log.warning("handled_ids_dropped", reason="store_failing")
        self._wake.set()

    async def _flush(self) -> None:
        batch = list(self._waiting)
        if not batch:
            return
        await self._store.events_done([], event_ids=[self.PREFIX + e for e in batch], now_ms=self._clock.now_ms())
        del self._waiting[:len(batch)]

    async def _run(self) -> None:
        while not (self._closing and not self._waiting):
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except Exception as exc:  # noqa: BLE001 - not written: kept, tried again (at stop: handled again)
                log.warning("handled_ids_not_saved", error=type(exc).__name__, waiting=len(self._waiting))
                if self._closing:
                    return
                await self._clock.sleep(1.0)
                self._wake.set()

    async def close(self) -> None:
        """Write what is waiting (a write under way ends first), then end."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
