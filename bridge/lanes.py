"""Work handed over as it arrives, one lane per room: a room's items in their order, rooms side by side."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Work = Callable[[], Awaitable[None]]


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
