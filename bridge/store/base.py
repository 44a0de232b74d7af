"""The store port: what the bridge persists, independent of the database engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class InboxItem:
    txn_id: str
    idx: int
    event: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: int
    body: str
    mac: str


@dataclass(frozen=True)
class RoomRecord:
    room_key: str
    room_id: str
    alias: str
    template: str
    archived: bool = False


class Store(Protocol):
    """Every backend passes tests/test_store_contract.py."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...

    # Transactions and inbox (invariant 2: at most once, never dropped silently).
    async def record_transaction(self, txn_id: str, events: list[dict[str, Any]], *, now_ms: int) -> bool:
        """Store the txn and its events atomically; False when the txn id was seen before."""
        ...
    async def pending_events(self, *, limit: int = 100) -> list[InboxItem]: ...
    async def event_done(self, txn_id: str, idx: int) -> None: ...
    async def event_failed(self, txn_id: str, idx: int, *, error: str, max_attempts: int) -> bool:
        """Record a failure; True when the event became a dead letter."""
        ...
    async def dead_letters(self) -> list[InboxItem]: ...

    # Key/value.
    async def get_value(self, key: str) -> str | None: ...
    async def set_value(self, key: str, value: str) -> None: ...

    # Managed rooms.
    async def get_room(self, room_key: str) -> RoomRecord | None: ...
    async def put_room(self, record: RoomRecord, *, now_ms: int) -> None: ...
    async def all_rooms(self) -> list[RoomRecord]: ...
    async def delete_room(self, room_key: str) -> None: ...
    async def archive_room(self, room_key: str, *, now_ms: int) -> None: ...

    # Identity mapping (person id -> Matrix user id), so people keep their account.
    async def identities(self) -> dict[str, str]: ...
    async def put_identities(self, mapping: dict[str, str]) -> None: ...
    async def delete_identity(self, person_id: str) -> None: ...

    # Audit log rows (the chaining is bridge/audit.py's; the store only keeps rows in order).
    async def audit_last(self) -> AuditRow | None: ...
    async def audit_append(self, rows: list[AuditRow]) -> None: ...
    async def audit_rows(self, *, after_seq: int = 0) -> list[AuditRow]: ...
    async def audit_prune(self, *, before_ts: int) -> AuditRow | None:
        """Delete rows older than before_ts; returns the last deleted row (the new anchor)."""
        ...
