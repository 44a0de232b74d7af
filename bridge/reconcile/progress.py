"""Progress of an apply: a bar with ETA on a terminal, structured log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from bridge.logging import get_logger


class Progress:
    def __init__(self, total: int, *, stream: TextIO | None = None, every: int = 200) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.every = every
        self.start = time.monotonic()
        self.log = get_logger(component="apply")

    def step(self, *, ok: bool = True) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        if self.tty:
            self._bar()
        elif self.done % self.every == 0 or self.done == self.total:
            self.log.info("apply_progress", done=self.done, total=self.total, failed=self.failed,
                          eta_s=round(self._eta(), 1))

    def _eta(self) -> float:
        elapsed = time.monotonic() - self.start
        return elapsed / self.done * (self.total - self.done) if self.done else 0.0

    def _bar(self) -> None:
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"ETA {self._eta():5.0f}s")
        if self.done == self.total:
            self.stream.write("\n")
        self.stream.flush()
