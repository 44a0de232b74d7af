"""Periodic work of `ent-bridge run`: directory re-syncs on a timer and when source files change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from bridge.logging import get_logger
from bridge.tasks import cancel_and_wait

log = get_logger(component="scheduler")


def sources_fingerprint(sources: list[str]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of every file of the sources: changes when an export is replaced."""
    out: list[tuple[str, int, int]] = []
    for spec in sources:
        path = Path(spec.partition("@")[0])
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


class Resyncer:
    """Runs `job` at start, every `interval` seconds, and when the sources change. Exports are
    often copied in place: a change is acted on once the files have been stable for `settle` s."""

    def __init__(self, job: Callable[[], Awaitable[object]], *, sources: list[str], interval: float,
                 watch: bool = True, poll: float = 5.0, settle: float = 5.0, run_at_start: bool = True) -> None:
        self.run_at_start = run_at_start
        self.job = job
        self.sources = sources
        self.interval = interval
        self.watch = watch
        self.poll = poll
        self.settle = settle
        self.runs = 0
        self.ran = asyncio.Event()  # set once the job has run (whatever its outcome)
        self._task: asyncio.Task[None] | None = None

    async def _run_job(self, why: str) -> None:
        log.info("resync_start", why=why)
        try:
            await self.job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bad export must not stop the bridge
            log.error("resync_failed", error=f"{type(exc).__name__}: {exc}")
        self.runs += 1
        self.ran.set()

    async def run(self, seen: tuple[tuple[str, int, int], ...] | None = None) -> None:
        """`seen`: the sources' fingerprint when the scheduler was started (a change made between
        start and the task's first step is a change, not the baseline)."""
        seen = sources_fingerprint(self.sources) if seen is None else seen
        if self.run_at_start:
            await self._run_job("start")
        loop = asyncio.get_running_loop()
        next_run = loop.time() + self.interval
        while True:
            await asyncio.sleep(min(self.poll, max(0.0, next_run - loop.time())))
            if loop.time() >= next_run:
                seen = sources_fingerprint(self.sources)
                await self._run_job("timer")
                next_run = loop.time() + self.interval
                continue
            if self.watch and (now := sources_fingerprint(self.sources)) != seen:
                await asyncio.sleep(self.settle)
                if sources_fingerprint(self.sources) != now:
                    continue  # still being written
                seen = now
                await self._run_job("sources_changed")
                next_run = loop.time() + self.interval

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(sources_fingerprint(self.sources)), name="resync")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
