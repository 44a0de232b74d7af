"""The store, written once in SQL for every backend (the statements use $1-style placeholders)."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from typing import Any

from bridge.store.base import AuditBuild, AuditRow, InboxItem, InboxStats, RoomRecord
from bridge.store.db import AUDIT_LOCK, MIGRATION_LOCK, Database, Script, Stmt
from bridge.store.migrations import migrations

_MAX_MS = 2 ** 62  # "any time": every event not dead is due


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i:i + 500] for i in range(0, len(ids), 500)]  # bounded statements on both engines


def _handled_query(ids: list[str]) -> Stmt:
    marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
    return Stmt(f"SELECT event_id FROM handled_events WHERE event_id IN ({marks})", tuple(ids), rows=True)  # noqa: S608 - placeholders only


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class SqlStore:
    """Every backend passes tests/test_store_contract.py; only the `Database` differs."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def open(self) -> None:
        await self.db.open()
        # One migrator at a time, even with several bridge processes opening a new store together:
        # the version is read inside the exclusive transaction that applies what is missing.
        async with self.db.transaction(lock=MIGRATION_LOCK) as tx:
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = int(await tx.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
            for version, statements in migrations():
                if version <= current:
                    continue
                for stmt in statements:
                    await tx.execute(stmt)
                await tx.execute("DELETE FROM schema_version")
                await tx.execute("INSERT INTO schema_version VALUES ($1)", version)

    async def close(self) -> None:
        await self.db.close()

    async def schema_version(self) -> int:
        return int(await self.db.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))

    # --- transactions and the inbox -----------------------------------------------------------

    async def record_transaction(self, txn_id: str, events: list[dict[str, Any]], *, now_ms: int) -> bool:
        return await self.receive_transaction(txn_id, events, now_ms=now_ms) is not None

    async def receive_transaction(self, txn_id: str, events: list[dict[str, Any]], *,
                                  now_ms: int) -> set[str] | None:
        def steps() -> Script[set[str] | None]:
            inserted = yield Stmt("INSERT INTO transactions VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING 1",
                                  (txn_id, now_ms, len(events)), rows=True)
            if not inserted:
                return None
            yield Stmt("INSERT INTO inbox (txn_id, idx, event_json) VALUES ($1, $2, $3)",
                       many=[(txn_id, i, _compact(ev)) for i, ev in enumerate(events)])
            ids = [e["event_id"] for e in events if isinstance(e.get("event_id"), str)]
            found: set[str] = set()
            for chunk in _chunks(ids):
                found.update(str(r[0]) for r in (yield _handled_query(chunk)) or ())
            return found

        return await self.db.script(steps)

    async def pending_events(self, *, limit: int = 100, due_ms: int | None = None) -> list[InboxItem]:
        rows = await self.db.fetch(
            "SELECT i.txn_id, i.idx, i.event_json, i.attempts, i.last_error, i.next_attempt_at FROM inbox i "
            "JOIN transactions t ON t.txn_id = i.txn_id WHERE i.dead = 0 AND i.next_attempt_at <= $2 "
            "ORDER BY t.received_at, i.txn_id, i.idx LIMIT $1", limit, _MAX_MS if due_ms is None else due_ms)
        return [InboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    async def events_done(self, items: list[tuple[str, int]], *, event_ids: Collection[str] = (),
                          now_ms: int = 0) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany("DELETE FROM inbox WHERE txn_id = $1 AND idx = $2", items)
            await tx.executemany("INSERT INTO handled_events VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
                                 [(e, now_ms) for e in event_ids])

    async def handled(self, event_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(event_ids)):
            query = _handled_query(chunk)
            found.update(str(r[0]) for r in await self.db.fetch(query.sql, *query.args))
        return found

    async def event_failed(self, txn_id: str, idx: int, *, error: str, max_attempts: int,
                           next_attempt_ms: int = 0) -> bool:
        async with self.db.transaction() as tx:
            dead = await tx.fetchval(
                "UPDATE inbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $5, "
                "dead = CASE WHEN attempts + 1 >= $2 THEN 1 ELSE 0 END WHERE txn_id = $3 AND idx = $4 "
                "RETURNING dead", error[:500], max_attempts, txn_id, idx, next_attempt_ms)
        return bool(dead)

    async def dead_letters(self) -> list[InboxItem]:
        rows = await self.db.fetch("SELECT txn_id, idx, event_json, attempts, last_error, next_attempt_at "
                                   "FROM inbox WHERE dead = 1 ORDER BY txn_id, idx")
        return [InboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5]) for r in rows]

    async def retry_dead(self, items: Collection[tuple[str, int]] | None = None) -> int:
        """Dead letters back in the inbox, due now (all of them, or those named)."""
        async with self.db.transaction() as tx:
            if items is None:
                count = await tx.fetchval("SELECT count(*) FROM inbox WHERE dead = 1")
                await tx.execute("UPDATE inbox SET dead = 0, attempts = 0, next_attempt_at = 0 WHERE dead = 1")
                return int(count or 0)
            await tx.executemany("UPDATE inbox SET dead = 0, attempts = 0, next_attempt_at = 0 "
                                 "WHERE dead = 1 AND txn_id = $1 AND idx = $2", list(items))
        return len(items)

    async def inbox_stats(self) -> InboxStats:
        row = await self.db.fetchrow(
            "SELECT count(*), min(t.received_at), coalesce(sum(i.dead), 0) FROM inbox i "
            "JOIN transactions t ON t.txn_id = i.txn_id")
        pending = await self.db.fetchrow(
            "SELECT min(t.received_at), min(i.next_attempt_at) FROM inbox i JOIN transactions t ON t.txn_id = i.txn_id "
            "WHERE i.dead = 0")
        assert row is not None and pending is not None
        total, dead = int(row[0]), int(row[2])
        return InboxStats(pending=total - dead, dead=dead,
                          oldest_pending_ms=None if pending[0] is None else int(pending[0]),
                          next_attempt_ms=None if pending[1] is None else int(pending[1]))

    async def prune_transactions(self, *, before_ms: int) -> int:
        """Forget transaction ids and handled event ids older than `before_ms` (none still in the
        inbox): the homeserver resends a transaction for minutes, not for days."""
        async with self.db.transaction() as tx:
            old = await tx.fetchval("SELECT count(*) FROM transactions t WHERE t.received_at < $1 AND NOT EXISTS "
                                    "(SELECT 1 FROM inbox i WHERE i.txn_id = t.txn_id)", before_ms)
            await tx.execute("DELETE FROM transactions WHERE received_at < $1 AND NOT EXISTS "
                             "(SELECT 1 FROM inbox i WHERE i.txn_id = transactions.txn_id)", before_ms)
            await tx.execute("DELETE FROM handled_events WHERE handled_at < $1", before_ms)
        return int(old or 0)

    # --- key/value ----------------------------------------------------------------------------

    async def get_value(self, key: str) -> str | None:
        value = await self.db.fetchval("SELECT value FROM kv WHERE key = $1", key)
        return None if value is None else str(value)

    async def set_value(self, key: str, value: str) -> None:
        await self.db.execute("INSERT INTO kv (key, value) VALUES ($1, $2) "
                              "ON CONFLICT (key) DO UPDATE SET value = excluded.value", key, value)

    # --- managed rooms ------------------------------------------------------------------------

    async def get_room(self, room_key: str) -> RoomRecord | None:
        row = await self.db.fetchrow("SELECT room_key, room_id, alias, template, archived_at FROM rooms "
                                     "WHERE room_key = $1", room_key)
        return None if row is None else RoomRecord(*row)

    async def put_room(self, record: RoomRecord, *, now_ms: int) -> None:
        await self.db.execute(
            "INSERT INTO rooms (room_key, room_id, alias, template, created_at) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (room_key) DO UPDATE SET room_id = excluded.room_id, alias = excluded.alias, "
            "template = excluded.template",
            record.room_key, record.room_id, record.alias, record.template, now_ms)

    async def all_rooms(self) -> list[RoomRecord]:
        rows = await self.db.fetch("SELECT room_key, room_id, alias, template, archived_at FROM rooms "
                                   "ORDER BY room_key")
        return [RoomRecord(*r) for r in rows]

    async def delete_room(self, room_key: str) -> None:
        await self.db.execute("DELETE FROM rooms WHERE room_key = $1", room_key)

    async def archive_room(self, room_key: str, *, now_ms: int) -> None:
        await self.db.execute("UPDATE rooms SET archived_at = $1 WHERE room_key = $2", now_ms, room_key)

    async def unarchive_room(self, room_key: str) -> None:
        await self.db.execute("UPDATE rooms SET archived_at = NULL WHERE room_key = $1", room_key)

    # --- people -------------------------------------------------------------------------------

    async def identities(self) -> dict[str, str]:
        return {r[0]: r[1] for r in await self.db.fetch("SELECT person_id, user_id FROM identities")}

    async def put_identities(self, mapping: dict[str, str]) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany("INSERT INTO identities (person_id, user_id) VALUES ($1, $2) "
                                 "ON CONFLICT (person_id) DO UPDATE SET user_id = excluded.user_id",
                                 sorted(mapping.items()))

    async def delete_identity(self, person_id: str) -> None:
        await self.db.execute("DELETE FROM identities WHERE person_id = $1", person_id)

    async def mark_provisioned(self, user_id: str, person_id: str) -> None:
        await self.db.execute("INSERT INTO provisioned VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
                              user_id, person_id)

    async def provisioned(self) -> dict[str, str]:
        return {r[0]: r[1] for r in await self.db.fetch("SELECT user_id, person_id FROM provisioned")}

    async def forget_provisioned(self, user_id: str) -> None:
        await self.db.execute("DELETE FROM provisioned WHERE user_id = $1", user_id)

    async def leavers(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self.db.fetch("SELECT person_id, left_at FROM leavers")}

    async def set_leavers(self, *, add: dict[str, int], remove: list[str]) -> None:
        async with self.db.transaction() as tx:
            await tx.executemany("INSERT INTO leavers VALUES ($1, $2) ON CONFLICT (person_id) DO NOTHING",
                                 sorted(add.items()))
            await tx.executemany("DELETE FROM leavers WHERE person_id = $1", [(p,) for p in remove])

    # --- observed-state cache -----------------------------------------------------------------

    async def observed_rooms(self) -> dict[str, str]:
        return {r[0]: r[1] for r in await self.db.fetch("SELECT room_id, state_json FROM observed_rooms")}

    async def put_observed(self, rooms: dict[str, str], *, replace_all: bool = False,
                           drop: Collection[str] = ()) -> None:
        async with self.db.transaction() as tx:
            if replace_all:
                await tx.execute("DELETE FROM observed_rooms")
            await tx.executemany("DELETE FROM observed_rooms WHERE room_id = $1", [(r,) for r in drop])
            await tx.executemany("INSERT INTO observed_rooms VALUES ($1, $2) ON CONFLICT (room_id) "
                                 "DO UPDATE SET state_json = excluded.state_json", list(rooms.items()))

    # --- mutes --------------------------------------------------------------------------------

    async def put_mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        await self.db.execute("INSERT INTO mutes VALUES ($1, $2, $3) ON CONFLICT (room_id, user_id) "
                              "DO UPDATE SET until_ms = excluded.until_ms", room_id, user_id, until_ms)

    async def delete_mute(self, room_id: str, user_id: str) -> None:
        await self.db.execute("DELETE FROM mutes WHERE room_id = $1 AND user_id = $2", room_id, user_id)

    async def mutes(self) -> list[tuple[str, str, int]]:
        rows = await self.db.fetch("SELECT room_id, user_id, until_ms FROM mutes ORDER BY until_ms")
        return [(r[0], r[1], r[2]) for r in rows]

    # --- leases -------------------------------------------------------------------------------

    async def acquire_lease(self, name: str, holder: str, *, now_ms: int, ttl_ms: int) -> str | None:
        async with self.db.transaction() as tx:
            got = await tx.fetchval(
                "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE "
                "SET holder = excluded.holder, expires_at = excluded.expires_at "
                "WHERE leases.holder = excluded.holder OR leases.expires_at < $4 RETURNING holder",
                name, holder, now_ms + ttl_ms, now_ms)
            if got is not None:
                return None
            current = await tx.fetchval("SELECT holder FROM leases WHERE name = $1", name)
        return str(current)

    async def release_lease(self, name: str, holder: str) -> None:
        await self.db.execute("DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder)

    # --- audit rows (the chaining is bridge/audit.py's) -----------------------------------------

    async def audit_extend(self, build: AuditBuild, *, anchor_key: str, once: Collection[str] = ()) -> list[AuditRow]:
        """Append to the chain in one transaction that holds the chain's lock: `build` gets the
        last row (or, after a prune emptied the table, the anchor kept under `anchor_key`) and
        which of the `once` keys are already on record, and returns the rows to insert with their
        keys. Two processes never take the same entry number, nor record one key twice."""
        keys = sorted(set(once))

        def steps() -> Script[list[AuditRow]]:
            last = yield Stmt("SELECT seq, ts, body, mac FROM audit ORDER BY seq DESC LIMIT 1", rows=True)
            anchor = None
            if not last:
                found = yield Stmt("SELECT value FROM kv WHERE key = $1", (anchor_key,), rows=True)
                anchor = str(found[0][0]) if found else None
            recorded: set[str] = set()
            for chunk in _chunks(keys):
                marks = ", ".join(f"${n}" for n in range(1, len(chunk) + 1))
                found = yield Stmt(f"SELECT once_key FROM audit_once WHERE once_key IN ({marks})",  # noqa: S608 - placeholders only
                                   tuple(chunk), rows=True)
                recorded.update(str(r[0]) for r in found or ())
            built = build(AuditRow(*last[0]) if last else None, anchor, frozenset(recorded))
            rows = [row for row, _ in built]
            if rows:
                yield Stmt("INSERT INTO audit (seq, ts, body, mac) VALUES ($1, $2, $3, $4)",
                           many=[(r.seq, r.ts, r.body, r.mac) for r in rows])
            marked: list[Sequence[Any]] = [(key, row.seq) for row, key in built if key is not None]
            if marked:
                yield Stmt("INSERT INTO audit_once (once_key, seq) VALUES ($1, $2)", many=marked)
            return rows

        # One hop on SQLite (its thread also builds the rows: a few HMACs).
        return await self.db.script(steps, lock=AUDIT_LOCK)

    async def audit_rows(self, *, after_seq: int = 0) -> list[AuditRow]:
        rows = await self.db.fetch("SELECT seq, ts, body, mac FROM audit WHERE seq > $1 ORDER BY seq", after_seq)
        return [AuditRow(*r) for r in rows]

    async def audit_prune(self, *, before_ts: int) -> AuditRow | None:
        async with self.db.transaction() as tx:
            row = await tx.fetchrow("SELECT seq, ts, body, mac FROM audit WHERE ts < $1 ORDER BY seq DESC LIMIT 1",
                                    before_ts)
            if row is not None:
                await tx.execute("DELETE FROM audit WHERE seq <= $1", row[0])
                await tx.execute("DELETE FROM audit_once WHERE seq <= $1", row[0])
        return None if row is None else AuditRow(*row)
