"""The store port: what the bridge persists, independent of the database engine."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class InboxItem:
    txn_id: str
    idx: int
    event: dict[str, Any]
    attempts: int
    last_error: str | None = None
    next_attempt_ms: int = 0


@dataclass(frozen=True)
class InboxStats:
    pending: int
    dead: int
    oldest_pending_ms: int | None  # when the oldest event not yet handled arrived
    next_attempt_ms: int | None = None  # the earliest time a postponed event is due again


@dataclass(frozen=True)
class AuditRow:
    seq: int
    ts: int
    body: str
    mac: str


# Builds the rows to append: (last row or None, the anchor when the table is empty, the keys
# asked about that are already on record) -> each new row with its once-key (or None).
AuditBuild = Callable[[AuditRow | None, str | None, frozenset[str]], list[tuple[AuditRow, str | None]]]


@dataclass(frozen=True)
class RoomRecord:
    room_key: str
    room_id: str
    alias: str
    template: str
    archived_at: int | None = None  # ms; archived rooms are read-only, emptied after a grace period

    @property
    def archived(self) -> bool:
        return self.archived_at is not None


class Store(Protocol):
    """Every backend passes tests/test_store_contract.py."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def schema_version(self) -> int: ...

    # Transactions and inbox (invariant 2: at most once, never dropped silently).
    async def record_transaction(self, txn_id: str, events: list[dict[str, Any]], *, now_ms: int) -> bool:
        """Store the txn and its events atomically; False when the txn id was seen before."""
        ...
    async def receive_transaction(self, txn_id: str, events: list[dict[str, Any]], *,
                                  now_ms: int) -> set[str] | None:
        """As `record_transaction`, in the same database transaction telling which of its events
        were handled before (their ids; None when the txn id was seen before)."""
        ...
    async def pending_events(self, *, limit: int = 100, due_ms: int | None = None) -> list[InboxItem]:
        """Events not yet handled nor dead, oldest first; with `due_ms`, only those due by then."""
        ...
    async def events_done(self, items: list[tuple[str, int]], *, event_ids: Collection[str] = (),
                          now_ms: int = 0) -> None:
        """Many at once, in one database transaction (one disk sync instead of one per event); the
        event ids are remembered as handled."""
        ...
    async def handled(self, event_ids: Collection[str]) -> set[str]:
        """Those of these event ids already handled (delivered before, in another transaction)."""
        ...
    async def event_failed(self, txn_id: str, idx: int, *, error: str, max_attempts: int,
                           next_attempt_ms: int = 0) -> bool:
        """Record a failure and when to try again; True when the event became a dead letter."""
        ...
    async def dead_letters(self) -> list[InboxItem]: ...
    async def retry_dead(self, items: Collection[tuple[str, int]] | None = None) -> int: ...
    async def inbox_stats(self) -> InboxStats: ...
    async def prune_transactions(self, *, before_ms: int) -> int: ...

    # Key/value.
    async def get_value(self, key: str) -> str | None: ...
    async def set_value(self, key: str, value: str) -> None: ...

    # Managed rooms.
    async def get_room(self, room_key: str) -> RoomRecord | None: ...
    async def put_room(self, record: RoomRecord, *, now_ms: int) -> None: ...
    async def all_rooms(self) -> list[RoomRecord]: ...
    async def delete_room(self, room_key: str) -> None: ...
    async def archive_room(self, room_key: str, *, now_ms: int) -> None: ...
    async def unarchive_room(self, room_key: str) -> None: ...

    # Identity mapping (person id -> Matrix user id), so people keep their account.
    async def identities(self) -> dict[str, str]: ...
    async def put_identities(self, mapping: dict[str, str]) -> None: ...
    async def delete_identity(self, person_id: str) -> None: ...

    # Accounts the bridge provisioned, and people who left the directory (person -> since).
    async def mark_provisioned(self, user_id: str, person_id: str) -> None: ...
    async def provisioned(self) -> dict[str, str]: ...
    async def forget_provisioned(self, user_id: str) -> None: ...
    async def leavers(self) -> dict[str, int]: ...
    async def set_leavers(self, *, add: dict[str, int], remove: list[str]) -> None: ...

    # Mutes (moderation) with their expiry.
    # Observed-state cache: room id -> reduced state events (JSON), see reconcile/observer.py.
    async def observed_rooms(self) -> dict[str, str]: ...
    async def put_observed(self, rooms: dict[str, str], *, replace_all: bool = False,
                           drop: Collection[str] = ()) -> None:
        """Upsert these rooms and forget those of `drop`; with replace_all, every other cached room
        is dropped too."""
        ...

    async def put_mute(self, room_id: str, user_id: str, *, until_ms: int) -> None: ...
    async def delete_mute(self, room_id: str, user_id: str) -> None: ...
    async def mutes(self) -> list[tuple[str, str, int]]: ...

    # Leases: one holder at a time per name, until the expiry unless renewed.
    async def acquire_lease(self, name: str, holder: str, *, now_ms: int, ttl_ms: int) -> str | None:
        """Take or renew the lease; None when `holder` has it now, else who holds it."""
        ...
    async def release_lease(self, name: str, holder: str) -> None: ...

    # Audit log rows (the chaining is bridge/audit.py's; the store only keeps rows in order).
    async def audit_extend(self, build: AuditBuild, *, anchor_key: str, once: Collection[str] = ()) -> list[AuditRow]:
        """Under the chain's lock: build(last row, or the anchor when none, those of the `once` keys
        already on record) -> rows with their key (or None), inserted with the keys."""
        ...
    async def audit_rows(self, *, after_seq: int = 0) -> list[AuditRow]: ...
    async def audit_prune(self, *, before_ts: int) -> AuditRow | None:
        """Delete rows older than before_ts; returns the last deleted row (the new anchor)."""
        ...
