"""SQLite store: the zero-setup default, one file, WAL mode."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Any

from bridge.errors import StoreError
from bridge.store.base import AuditRow, InboxItem, RoomRecord
from bridge.store.migrations import migrations


class SqliteStore:
    """Queries are sub-millisecond on a local file, so they run inline on the event loop;
    a single connection serialises writers, which is what SQLite wants anyway."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged txn must survive a crash
        self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        current = await self.schema_version()
        for version, statements in migrations():
            if version <= current:
                continue
            with self._tx():
                for stmt in statements:
                    self.db.execute(stmt)
                self.db.execute("DELETE FROM schema_version")
                self.db.execute("INSERT INTO schema_version VALUES (?)", (version,))

    def _tx(self) -> Any:
        db = self.db

        class _T:
            def __enter__(self) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
                db.execute("ROLLBACK" if exc_type else "COMMIT")

        return _T()

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def schema_version(self) -> int:
        row = self.db.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    async def record_transaction(self, txn_id: str, events: list[dict[str, Any]], *, now_ms: int) -> bool:
        with self._tx():
            seen = self.db.execute("SELECT 1 FROM transactions WHERE txn_id = ?", (txn_id,)).fetchone()
            if seen:
                return False
            self.db.execute("INSERT INTO transactions VALUES (?, ?, ?)", (txn_id, now_ms, len(events)))
            self.db.executemany(
                "INSERT INTO inbox (txn_id, idx, event_json) VALUES (?, ?, ?)",
                [(txn_id, i, json.dumps(ev, separators=(",", ":"))) for i, ev in enumerate(events)],
            )
        return True

    async def pending_events(self, *, limit: int = 100) -> list[InboxItem]:
        rows = self.db.execute(
            "SELECT i.txn_id, i.idx, i.event_json, i.attempts FROM inbox i "
            "JOIN transactions t ON t.txn_id = i.txn_id WHERE i.dead = 0 "
            "ORDER BY t.received_at, i.txn_id, i.idx LIMIT ?", (limit,)).fetchall()
        return [InboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def events_done(self, items: list[tuple[str, int]]) -> None:
        with self._tx():
            self.db.executemany("DELETE FROM inbox WHERE txn_id = ? AND idx = ?", items)

    async def event_failed(self, txn_id: str, idx: int, *, error: str, max_attempts: int) -> bool:
        with self._tx():
            self.db.execute(
                "UPDATE inbox SET attempts = attempts + 1, last_error = ?, "
                "dead = CASE WHEN attempts + 1 >= ? THEN 1 ELSE 0 END WHERE txn_id = ? AND idx = ?",
                (error[:500], max_attempts, txn_id, idx))
            row = self.db.execute("SELECT dead FROM inbox WHERE txn_id = ? AND idx = ?",
                                  (txn_id, idx)).fetchone()
        return bool(row and row[0])

    async def dead_letters(self) -> list[InboxItem]:
        rows = self.db.execute("SELECT txn_id, idx, event_json, attempts FROM inbox WHERE dead = 1 "
                               "ORDER BY txn_id, idx").fetchall()
        return [InboxItem(r[0], r[1], json.loads(r[2]), r[3]) for r in rows]

    async def get_value(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def set_value(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO kv (key, value) VALUES (?, ?) "
                        "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    async def get_room(self, room_key: str) -> RoomRecord | None:
        row = self.db.execute("SELECT room_key, room_id, alias, template, archived_at FROM rooms "
                              "WHERE room_key = ?", (room_key,)).fetchone()
        return None if row is None else RoomRecord(*row)

    async def put_room(self, record: RoomRecord, *, now_ms: int) -> None:
        self.db.execute(
            "INSERT INTO rooms (room_key, room_id, alias, template, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (room_key) DO UPDATE SET room_id = excluded.room_id, alias = excluded.alias, "
            "template = excluded.template",
            (record.room_key, record.room_id, record.alias, record.template, now_ms))

    async def all_rooms(self) -> list[RoomRecord]:
        rows = self.db.execute("SELECT room_key, room_id, alias, template, archived_at FROM rooms "
                               "ORDER BY room_key")
        return [RoomRecord(*r) for r in rows.fetchall()]

    async def delete_room(self, room_key: str) -> None:
        self.db.execute("DELETE FROM rooms WHERE room_key = ?", (room_key,))

    async def archive_room(self, room_key: str, *, now_ms: int) -> None:
        self.db.execute("UPDATE rooms SET archived_at = ? WHERE room_key = ?", (now_ms, room_key))

    async def unarchive_room(self, room_key: str) -> None:
        self.db.execute("UPDATE rooms SET archived_at = NULL WHERE room_key = ?", (room_key,))

    async def identities(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT person_id, user_id FROM identities")}

    async def put_identities(self, mapping: dict[str, str]) -> None:
        with self._tx():
            self.db.executemany("INSERT INTO identities (person_id, user_id) VALUES (?, ?) "
                                "ON CONFLICT (person_id) DO UPDATE SET user_id = excluded.user_id",
                                sorted(mapping.items()))

    async def audit_last(self) -> AuditRow | None:
        row = self.db.execute("SELECT seq, ts, body, mac FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else AuditRow(*row)

    async def audit_append(self, rows: list[AuditRow]) -> None:
        with self._tx():
            self.db.executemany("INSERT INTO audit (seq, ts, body, mac) VALUES (?, ?, ?, ?)",
                                [(r.seq, r.ts, r.body, r.mac) for r in rows])

    async def audit_rows(self, *, after_seq: int = 0) -> list[AuditRow]:
        rows = self.db.execute("SELECT seq, ts, body, mac FROM audit WHERE seq > ? ORDER BY seq", (after_seq,))
        return [AuditRow(*r) for r in rows.fetchall()]

    async def audit_prune(self, *, before_ts: int) -> AuditRow | None:
        with self._tx():
            row = self.db.execute("SELECT seq, ts, body, mac FROM audit WHERE ts < ? ORDER BY seq DESC LIMIT 1",
                                  (before_ts,)).fetchone()
            if row is not None:
                self.db.execute("DELETE FROM audit WHERE seq <= ?", (row[0],))
        return None if row is None else AuditRow(*row)

    async def delete_identity(self, person_id: str) -> None:
        self.db.execute("DELETE FROM identities WHERE person_id = ?", (person_id,))

    async def observed_rooms(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT room_id, state_json FROM observed_rooms")}

    async def put_observed(self, rooms: dict[str, str], *, replace_all: bool = False,
                           drop: Collection[str] = ()) -> None:
        with self._tx():
            if replace_all:
                self.db.execute("DELETE FROM observed_rooms")
            self.db.executemany("DELETE FROM observed_rooms WHERE room_id = ?", [(r,) for r in drop])
            self.db.executemany("INSERT INTO observed_rooms VALUES (?, ?) ON CONFLICT (room_id) "
                                "DO UPDATE SET state_json = excluded.state_json", list(rooms.items()))

    async def put_mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        self.db.execute("INSERT INTO mutes VALUES (?, ?, ?) ON CONFLICT (room_id, user_id) "
                        "DO UPDATE SET until_ms = excluded.until_ms", (room_id, user_id, until_ms))

    async def delete_mute(self, room_id: str, user_id: str) -> None:
        self.db.execute("DELETE FROM mutes WHERE room_id = ? AND user_id = ?", (room_id, user_id))

    async def mutes(self) -> list[tuple[str, str, int]]:
        return [tuple(r) for r in self.db.execute("SELECT room_id, user_id, until_ms FROM mutes ORDER BY until_ms")]

    async def mark_provisioned(self, user_id: str, person_id: str) -> None:
        self.db.execute("INSERT INTO provisioned VALUES (?, ?) ON CONFLICT (user_id) DO NOTHING", (user_id, person_id))

    async def provisioned(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT user_id, person_id FROM provisioned")}

    async def forget_provisioned(self, user_id: str) -> None:
        self.db.execute("DELETE FROM provisioned WHERE user_id = ?", (user_id,))

    async def leavers(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT person_id, left_at FROM leavers")}

    async def set_leavers(self, *, add: dict[str, int], remove: list[str]) -> None:
        with self._tx():
            self.db.executemany("INSERT INTO leavers VALUES (?, ?) ON CONFLICT (person_id) DO NOTHING",
                                sorted(add.items()))
            self.db.executemany("DELETE FROM leavers WHERE person_id = ?", [(p,) for p in remove])
