"""Tamper-evident audit log: who, what, when, why, never message content.

The person an entry is about is written as a keyed pseudonym (HMAC of their Matrix id with the
audit key), never their id: an erasure leaves no direct identifier in the log, and the chain,
whose bodies never change, stays verifiable. `rgpd export` finds a person's entries by their
pseudonym.

Each entry's MAC is HMAC-SHA256(key, previous MAC || canonical JSON of the entry), so editing,
removing or reordering an entry breaks the chain from there on. Pruning (the log's own
retention) keeps the MAC of the last pruned entry as the new anchor. Entry numbers are taken
under the database's lock (never two writers on one number, across processes). Removing the
newest entries leaves a valid shorter chain: the head ("seq:mac" of the newest entry) is also
written to a file outside the database, and `verify` checks the database still reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.config import Config
from bridge.private_files import write_private
from bridge.store.base import AuditRow, Store

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


def for_config(config: Config, store: Store) -> AuditLog:
    """The bridge's audit log: its key and head file from the configuration."""
    return AuditLog(store, key=config.audit_key, head_file=config.audit_head_file)


def _split(anchor: str) -> tuple[int, str]:
    seq, mac = anchor.split(":", 1)
    return int(seq), mac


class AuditLog:
    def __init__(self, store: Store, *, key: str, head_file: Path | None = None) -> None:
        self.store = store
        self._key = hashlib.sha256(b"ent-bridge audit\x00" + key.encode()).digest()
        self._subject_key = hashlib.sha256(b"ent-bridge audit subject\x00" + key.encode()).digest()
        self._pending: list[tuple[int, str, str | None]] = []  # (ts, body, once-key)
        self._flushing = asyncio.Lock()
        self.head_file = head_file

    def record(self, *, actor: str, action: str, reason: str, room: str | None = None,
               subject: str | None = None, detail: dict[str, Any] | None = None, now_ms: int | None = None,
               once: str | None = None) -> None:
        """Queue an entry; `flush()` writes queued entries in one database transaction. An entry
        with a `once` key is written only if no entry with that key is on record (the same event
        handled again after a failed action or a crash: its decision is on record once)."""
        ts = int(time.time() * 1000) if now_ms is None else now_ms
        self._pending.append((ts, entry_body(ts=ts, actor=actor, action=action, reason=reason, room=room,
                                             subject=self.pseudonym(subject) if subject else None,
                                             detail=detail), once))

    def pseudonym(self, user_id: str) -> str:
        """How the log names a person: stable, and meaningless without the audit key."""
        return "p:" + hmac.new(self._subject_key, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    async def flush(self) -> int:
        """Write the queued entries; returns once they are written (or raises).

        One write at a time: who flushes while a write is under way waits for it, then writes in
        one transaction everything queued meanwhile (a group commit: ten messages judged side by
        side cost one transaction, not ten). A failed write puts its entries back in front of the
        queue, so that no flush returns before the entries queued before it are written."""
        async with self._flushing:
            if not self._pending:
                return 0  # written by the flush this one waited for
            pending, self._pending = self._pending, []

            def chain(last: AuditRow | None, anchor: str | None, recorded: frozenset[str]
                      ) -> list[tuple[AuditRow, str | None]]:
                seq, prev = (last.seq, last.mac) if last is not None else _split(anchor) if anchor else (0, GENESIS)
                rows: list[tuple[AuditRow, str | None]] = []
                seen = set(recorded)
                for ts, body, once in pending:
                    if once is not None:
                        if once in seen:
                            continue
                        seen.add(once)
                    seq += 1
                    prev = _mac(self._key, prev, body)
                    rows.append((AuditRow(seq, ts, body, prev), once))
                return rows

            try:
                rows = await self.store.audit_extend(chain, anchor_key=ANCHOR_KEY,
                                                     once=[o for _, _, o in pending if o is not None])
            except BaseException:
                self._pending[:0] = pending
                raise
            if rows:
                self._write_head(rows[-1])
            return len(rows)

    def _write_head(self, row: AuditRow) -> None:
        """Keep the newest entry's number and MAC outside the database (atomically replaced; an
        older head written late by another process is never put over a newer one)."""
        if self.head_file is None:
            return
        current = self._read_head()
        if current is not None and current[0] >= row.seq:
            return
        tmp = self.head_file.with_name(f".{self.head_file.name}.{os.getpid()}")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        write_private(tmp, f"{row.seq}:{row.mac}\n")
        tmp.replace(self.head_file)

    def _read_head(self) -> tuple[int, str] | None:
        if self.head_file is None or not self.head_file.exists():
            return None
        text = self.head_file.read_text(encoding="ascii").strip()
        return _split(text) if text else None

    async def append(self, **kwargs: Any) -> None:
        self.record(**kwargs)
        await self.flush()

    async def verify(self) -> VerifyResult:
        anchor = await self.store.get_value(ANCHOR_KEY)
        seq, prev = _split(anchor) if anchor else (0, GENESIS)
        head = self._read_head()
        macs: dict[int, str] = {}
        rows = [r for r in await self.store.audit_rows() if r.seq > seq]  # a prune may have been cut short
        for n, row in enumerate(rows):
            if row.seq != seq + 1:
                return VerifyResult(False, n, f"entry {seq + 1} is missing (found {row.seq} next)")
            if not hmac.compare_digest(_mac(self._key, prev, row.body), row.mac):
                return VerifyResult(False, n, f"entry {row.seq} was modified, or entries were reordered")
            if json.loads(row.body).get("ts") != row.ts:
                return VerifyResult(False, n, f"entry {row.seq}: its time was changed")
            seq, prev = row.seq, row.mac
            macs[seq] = row.mac
        if head is not None and head[0] > seq:
            return VerifyResult(False, len(rows), f"entries {seq + 1} to {head[0]} were removed from the end "
                                                  f"(the head file {self.head_file} says {head[0]})")
        if head is not None and head[0] in macs and macs[head[0]] != head[1]:
            return VerifyResult(False, len(rows), f"entry {head[0]} differs from the head file {self.head_file}")
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
