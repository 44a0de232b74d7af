"""A sync in a child process: what `ent-bridge run` does, so that reading a département's export and
planning for it (seconds of CPU, hundreds of MB) never slow the transaction endpoint or moderation.

The child is `ent-bridge sync` itself, given the running bridge's configuration through a pipe;
it takes the writer lease like any writer, logs to the same stderr, and prints one JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any

from bridge.config import Config
from bridge.config_transfer import dumps
from bridge.errors import BridgeError, InputError
from bridge.reconcile.sync import SyncResult


@dataclass(frozen=True)
class SyncOutcome:
    """What the running bridge needs to know of a sync, wherever it ran."""

    summary: dict[str, int]
    refusals: tuple[str, ...] = ()  # the guards' reasons when the plan was refused
    failed: int = 0
    first_failures: tuple[str, ...] = ()
    residual: dict[str, int] | None = None  # left after the apply's verification

    @property
    def refused(self) -> bool:
        return bool(self.refusals)

    @classmethod
    def of(cls, result: SyncResult) -> SyncOutcome:
        report = result.report
        return cls(result.plan.summary(), () if result.verdict.ok else tuple(result.verdict.reasons),
                   len(report.failed) if report else 0,
                   tuple(f"{k}: {e}" for k, e in (report.failed if report else [])[:20]),
                   result.residual.summary() if result.residual is not None else None)

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary, "refusals": list(self.refusals), "failed": self.failed,
                "first_failures": list(self.first_failures), "residual": self.residual}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncOutcome:
        return cls(dict(data["summary"]), tuple(data["refusals"]), int(data["failed"]), tuple(data["first_failures"]),
                   data["residual"])


async def child_sync(config: Config, *, apply: bool, offline: bool = False) -> SyncOutcome:
    """Run `ent-bridge sync` in a child process with this configuration; a broken export raises
    InputError (its file and line in the message), any other failure BridgeError."""
    cmd = [sys.executable, "-m", "bridge", "sync", "--config-stdin", "--format", "summary", "--role", "run",
           "--apply" if apply else "--plan", *(["--offline"] if offline else [])]
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate(dumps(config).encode())
    try:
        data = json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BridgeError(f"the sync process ended with code {proc.returncode} and no summary "
                          "(see its log lines above)") from None
    if "input_error" in data:
        raise InputError(str(data["input_error"]))
    if "error" in data:
        raise BridgeError(str(data["error"]))
    return SyncOutcome.from_json(data)
