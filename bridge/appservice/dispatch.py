"""Drains the durable inbox: hands each event to the handlers, retries failures, keeps dead letters."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.logging import get_logger
from bridge.store.base import Store

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


class Dispatcher:
    def __init__(self, store: Store, handlers: list[EventHandler], *, max_attempts: int = 5,
                 base_delay: float = 0.5) -> None:
        self.store = store
        self.handlers = handlers
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        self._wake.set()

    async def drain_once(self) -> int:
        """Handle every pending event once; returns how many were handled successfully."""
        done: list[tuple[str, int]] = []
        retry_soon = False
        for item in await self.store.pending_events(limit=500):
            log = get_logger(txn_id=item.txn_id, room_id=item.event.get("room_id"),
                             event_id=item.event.get("event_id"), event_type=item.event.get("type"))
            try:
                for handler in self.handlers:
                    await handler(item.event)
            except Exception as exc:  # noqa: BLE001 - any handler failure is recorded, not lost
                dead = await self.store.event_failed(item.txn_id, item.idx, error=repr(exc),
                                                     max_attempts=self.max_attempts)
                (log.error if dead else log.warning)(
                    "event_dead_letter" if dead else "event_handler_failed",
                    attempts=item.attempts + 1, error=type(exc).__name__)
                retry_soon = retry_soon or not dead
                continue
            done.append((item.txn_id, item.idx))
        # Handled events leave the inbox together. A crash before this line re-handles them:
        # handlers are idempotent (redacting or kicking twice is harmless), losing one is not.
        if done:
            await self.store.events_done(done)
        if retry_soon:
            self._schedule_retry()
        return len(done)

    def _schedule_retry(self) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.base_delay, self._wake.set)

    async def run(self) -> None:
        self._wake.set()  # events left from before a restart are handled first
        while True:
            await self._wake.wait()
            self._wake.clear()
            while await self.drain_once() >= 500:
                pass  # a full batch: more may be waiting

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
