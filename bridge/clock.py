"""One clock for the whole bridge: wall time, monotonic time and sleeping, injectable in tests."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall time (dates of syncs, archives, mutes, quiet hours)."""
        ...

    def now_ms(self) -> int: ...

    def monotonic(self) -> float:
        """Seconds for measuring durations (never goes back)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FixedTime(SystemClock):
    """A wall time set once (a sync "as of" a date: rollovers, leavers), real sleeps."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def now(self) -> datetime:
        return self.at

    def now_ms(self) -> int:
        return int(self.at.timestamp() * 1000)


class FakeClock:
    """Time that moves only when told to; `sleep` moves it at once (and lets other tasks run),
    so a retry with a 10 s backoff takes no real time in a test and the delays can be asserted."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = (start or datetime(2026, 11, 29, 12, 0, tzinfo=UTC)).timestamp()
        self.slept: list[float] = []

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def now_ms(self) -> int:
        return int(self._now * 1000)

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self._now += max(seconds, 0.0)
        await asyncio.sleep(0)


SYSTEM = SystemClock()
