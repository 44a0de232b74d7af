"""Tamper-evident audit log: who, what, when, why, never message content.

Each entry's MAC is HMAC-SHA256(key, previous MAC || canonical JSON of the entry), so editing,
removing or reordering an entry breaks the chain from there on. Pruning (the log's own
retention) keeps the MAC of the last pruned entry as the new anchor.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import weakref
from dataclasses import dataclass
from typing import Any

from bridge.store.base import AuditRow, Store

# One chain per store: every AuditLog on the same store (moderation, outsiders, syncs and
# sweeps each make one) must append under the same lock, or two could take the same seq.
_CHAIN_LOCKS: weakref.WeakKeyDictionary[Store, asyncio.Lock] = weakref.WeakKeyDictionary()

ANCHOR_KEY = "audit_anchor"  # "seq:mac" of the last pruned entry
GENESIS = "0" * 64


def _mac(key: bytes, prev: str, body: str) -> str:
    return hmac.new(key, prev.encode() + b"\n" + body.encode(), hashlib.sha256).hexdigest()


def entry_body(*, ts: int, actor: str, action: str, reason: str, room: str | None = None,
               subject: str | None = None, detail: dict[str, Any] | None = None) -> str:
    body = {"ts": ts, "actor": actor, "action": action, "reason": reason}
    if room:
        body["room"] = room
    if subject:
        body["subject"] = subject
    if detail:
        body["detail"] = detail
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    problem: str | None = None


class AuditLog:
    def __init__(self, store: Store, *, key: str) -> None:
        self.store = store
        self._key = hashlib.sha256(b"ent-bridge audit\x00" + key.encode()).digest()
        self._pending: list[tuple[int, str]] = []
        self._lock = _CHAIN_LOCKS.setdefault(store, asyncio.Lock())

    def record(self, *, actor: str, action: str, reason: str, room: str | None = None,
               subject: str | None = None, detail: dict[str, Any] | None = None, now_ms: int | None = None) -> None:
        """Queue an entry; `flush()` writes queued entries in one database transaction."""
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        self._pending.append((ts, entry_body(ts=ts, actor=actor, action=action, reason=reason, room=room,
                                             subject=subject, detail=detail)))

    async def flush(self) -> int:
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        if not self._pending:
            return 0
        pending, self._pending = self._pending, []
        last = await self.store.audit_last()
        if last is not None:
            seq, prev = last.seq, last.mac
        else:
            anchor = await self.store.get_value(ANCHOR_KEY)
            seq, prev = (int(anchor.split(":")[0]), anchor.split(":")[1]) if anchor else (0, GENESIS)
        rows = []
        for ts, body in pending:
            seq += 1
            prev = _mac(self._key, prev, body)
            rows.append(AuditRow(seq, ts, body, prev))
        await self.store.audit_append(rows)
        return len(rows)

    async def append(self, **kwargs: Any) -> None:
        self.record(**kwargs)
        await self.flush()

    async def verify(self) -> VerifyResult:
        anchor = await self.store.get_value(ANCHOR_KEY)
        seq, prev = (int(anchor.split(":")[0]), anchor.split(":")[1]) if anchor else (0, GENESIS)
        rows = [r for r in await self.store.audit_rows() if r.seq > seq]  # a prune may have been cut short
        for n, row in enumerate(rows):
            if row.seq != seq + 1:
                return VerifyResult(False, n, f"entry {seq + 1} is missing (found {row.seq} next)")
            if not hmac.compare_digest(_mac(self._key, prev, row.body), row.mac):
                return VerifyResult(False, n, f"entry {row.seq} was modified, or entries were reordered")
            if json.loads(row.body).get("ts") != row.ts:
                return VerifyResult(False, n, f"entry {row.seq}: its time was changed")
            seq, prev = row.seq, row.mac
        return VerifyResult(True, len(rows))

    async def prune(self, *, older_than_ms: int) -> int:
        """Apply the log's own retention; the chain stays verifiable from the new anchor."""
        old = [r for r in await self.store.audit_rows() if r.ts < older_than_ms]
        if not old:
            return 0
        last = old[-1]
        # Anchor first: a crash between the two steps leaves extra rows, never a broken chain.
        await self.store.set_value(ANCHOR_KEY, f"{last.seq}:{last.mac}")
        await self.store.audit_prune(before_ts=older_than_ms)
        await self.append(actor="ent-bridge", action="audit_pruned", reason="audit log retention",
                          detail={"through_seq": last.seq})
        return last.seq
