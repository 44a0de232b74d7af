"""Observer (I/O): what the homeserver holds for managed rooms, read incrementally.

Reading every room's state on every sync costs one request per room: minutes for a département.
The homeserver already knows which rooms changed: a filtered `/sync` of the bridge's users (the
bot, and the keyless owner of rooms without content inspection: between them they are in every
managed room) since the tokens saved at the previous observation lists exactly the rooms with
new membership, power-level, name, topic, Space or retention events. The others come from the
cache in the store. The changed ones get their changes from the homeserver's own event stream:
a second /sync since the same token, restricted to them (`DELTA_CHUNK` rooms a request), gives
their new state events, folded into the cache (`observed.fold_delta`). A room whose delta can't be
trusted whole (a gap in it, a redaction, no cached state to fold into) is read whole with /state.
So the apply's verification, which re-observes every room it touched, costs a few requests, not
one per room. A full read happens on the first run, when the token is refused, and every
`rooms.full_observe_hours` as a safety net.

The /sync is made without a device id on purpose: with the bot's device, it would acknowledge
(and so delete) to-device messages, room keys included, that the bot's own E2EE client needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
from collections.abc import Mapping
from typing import Any

from bridge.clock import SYSTEM, Clock
from bridge.errors import MatrixError, MForbidden, MNotFound, MUnknownToken
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.reconcile.observed import (
    DELTA_TIMELINE_TYPES,
    PLANNED_TYPES,
    ObservedRoom,
    ObservedState,
    changed_rooms,
    fold_delta,
    from_state_events,
    joined_changes,
    reduce_state,
)
from bridge.rooms.desired import DesiredRoom
from bridge.store.base import RoomRecord, Store

SINCE_KEY = "observed_since"
FULL_AT_KEY = "observed_full_at"
# What the cache holds: when the planned state types change, the next observation reads every room.
CACHE_KEY = "observed_cache_types"
CACHE_TYPES = ",".join(PLANNED_TYPES)
_NOTHING = {"presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}}
# Only the rooms' planned state, and as little of it as possible: one timeline event is enough
# for a room to be listed as changed.
CHANGES_FILTER = {**_NOTHING, "room": {
    "ephemeral": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
    "state": {"types": list(PLANNED_TYPES), "lazy_load_members": True},
    "timeline": {"limit": 1, "types": list(PLANNED_TYPES)}}}
TOKEN_FILTER = {**_NOTHING, "room": {"rooms": []}}
# Rooms per delta /sync: bounds the answer's size, and the filter (room ids in the query string)
# stays well under the 16 KB request line a homeserver accepts.
DELTA_CHUNK = 100
DELTA_LIMIT = 20  # timeline events per room; more makes the timeline "limited": that room is read whole


def delta_filter(rooms: list[str] | None) -> dict[str, Any]:
    """Every planned state change of these rooms (None: of every room) since a token: no
    lazy-loaded members, so the state block is complete."""
    only = {} if rooms is None else {"rooms": rooms}
    return {**_NOTHING, "room": {**only, "ephemeral": {"not_types": ["*"]},
                                 "account_data": {"not_types": ["*"]},
                                 "state": {"types": list(PLANNED_TYPES)},
                                 "timeline": {"limit": DELTA_LIMIT, "types": list(DELTA_TIMELINE_TYPES)}}}


def _unique(filter_: dict[str, Any]) -> str:
    """Synapse answers an identical /sync request made within two minutes from its response cache
    (`sync_response_cache_duration`): a stale token, or changes that miss our own latest writes.
    A field of our own namespace, which filters may carry, makes every request distinct."""
    return json.dumps({**filter_, "fr.ent-bridge.nonce": secrets.token_hex(8)}, separators=(",", ":"))


@dataclasses.dataclass
class ObserveStats:
    rooms: int = 0
    read: int = 0  # rooms whose state was taken afresh from the homeserver (whole, or folded from deltas)
    full: bool = False
    folded: int = 0  # of those, the ones folded from /sync deltas instead of a /state read


@dataclasses.dataclass(frozen=True)
class Changes:
    """What the homeserver says changed since the saved tokens."""

    since: dict[str, str]  # user -> the saved token the changes are counted from
    joined: dict[str, set[str]]  # user -> changed rooms it is joined to (their deltas can be folded)
    rooms: set[str]  # every changed room, whatever the section
    entries: dict[str, dict[str, Any]]  # user -> its joined rooms' deltas, when the listing carried them


class RoomObserver:
    def __init__(self, *, api: Homeserver, store: Store, bot: str, server_name: str,
                 sem: asyncio.Semaphore, keyless: str | None = None, full_every_ms: int = 24 * 3_600_000,
                 clock: Clock = SYSTEM) -> None:
        self.clock = clock
        self.api = api
        self.store = store
        self.bot = bot
        self.keyless = keyless
        self.server_name = server_name
        self.sem = sem
        self.full_every_ms = full_every_ms
        self.stats = ObserveStats()

    def alias(self, room: DesiredRoom) -> str:
        return f"#{room.alias_localpart}:{self.server_name}"

    async def _sync(self, user: str, *, since: str | None, filter_: dict[str, Any]) -> dict[str, Any]:
        return await self.api.sync(user, filter_json=_unique(filter_), since=since)

    async def users_with_tokens(self) -> set[str]:
        """The users whose changes the next observation can read since a saved token."""
        try:
            return set(json.loads(await self.store.get_value(SINCE_KEY) or "{}"))
        except ValueError:
            return set()

    async def _changes(self, users: set[str], *, now_ms: int, full: bool,
                       few: bool) -> tuple[dict[str, str] | None, Changes | None]:
        """(tokens to save, what changed since the saved tokens); None for "read everything".
        Each of the bridge's users (the bot, the keyless owner) sees the rooms it is in. few: so
        few rooms that one /sync may carry all their deltas at once (no second request)."""
        try:
            saved: dict[str, str] = dict(json.loads(await self.store.get_value(SINCE_KEY) or "{}"))
        except ValueError:
            saved = {}  # unreadable: start over with a full read
        full_at = int(await self.store.get_value(FULL_AT_KEY) or 0)
        if await self.store.get_value(CACHE_KEY) != CACHE_TYPES:
            full = True  # cached by a version that read fewer state types (e.g. no security state)
        users |= set(saved)  # a user that once ran rooms keeps being asked
        tokens: dict[str, str] = {}
        joined: dict[str, set[str]] = {}
        entries: dict[str, dict[str, Any]] = {}
        changed: set[str] = set()
        incremental = not full and now_ms - full_at < self.full_every_ms and users <= set(saved)
        try:
            for user in sorted(users):
                if incremental:
                    resp = await self._sync(user, since=saved[user],
                                            filter_=delta_filter(None) if few else CHANGES_FILTER)
                    changed |= changed_rooms(resp)
                    joined[user] = joined_changes(resp)
                    if few:
                        entries[user] = dict(((resp.get("rooms") or {}).get("join")) or {})
                else:
                    # Taken before the rooms are read: what changes meanwhile shows up next time.
                    resp = await self._sync(user, since=None, filter_=TOKEN_FILTER)
                tokens[user] = str(resp["next_batch"])
        except (MatrixError, KeyError) as exc:
            # An expired token, or a homeserver that can't sync us: read everything, save nothing.
            get_logger().warning("observe_changes_unavailable", error=str(exc))
            return None, None
        return tokens, Changes({u: saved[u] for u in joined}, joined, changed, entries) if incremental else None

    async def _deltas(self, changes: Changes, wanted: dict[str, str],
                      cache: Mapping[str, str]) -> dict[str, list[dict[str, Any]]]:
        """The new state of the changed rooms in `wanted` (room id -> the user to read it as),
        folded from delta /syncs since the same tokens; rooms left out must be read whole."""
        out: dict[str, list[dict[str, Any]]] = {}
        for user in sorted(changes.joined):
            rooms = sorted(r for r in changes.joined[user] if wanted.get(r) == user)
            pages: list[Mapping[str, Any]] = [changes.entries[user]] if user in changes.entries else []
            for at in range(0, 0 if pages else len(rooms), DELTA_CHUNK):
                try:
                    resp = await self._sync(user, since=changes.since[user],
                                            filter_=delta_filter(rooms[at:at + DELTA_CHUNK]))
                except MatrixError as exc:  # those rooms are read whole instead
                    get_logger().warning("observe_deltas_unavailable", error=str(exc)[:200])
                    continue
                pages.append(((resp.get("rooms") or {}).get("join")) or {})
            for room_id, entry in (e for page in pages for e in page.items()):
                if wanted.get(room_id) != user or not isinstance(entry, dict):
                    continue
                cached = cache.get(room_id)
                folded = fold_delta(json.loads(cached) if cached is not None else None, entry, user)
                if folded is not None:
                    out[room_id] = folded
        return out

    async def _room_state(self, room_id: str, *, owner: str) -> list[dict[str, Any]] | None:
        """Read as the room's owner; a room being handed over (or no longer wanted) may still be
        held by the other of the bridge's users. None: neither can read it."""
        for user in (owner, self.keyless if owner == self.bot else self.bot):
            if not user:
                continue
            try:
                return await self.api.room_state(room_id, as_user=user)
            except MForbidden as exc:  # not in the room, or that user was never registered
                get_logger(room_id=room_id).info("room_unreadable_as", user_id=user, error=str(exc)[:200])
        return None

    async def observe(self, desired: Mapping[str, DesiredRoom], *, now_ms: int | None = None,
                      grace_ms: int = 30 * 86_400_000, full: bool = False, save: bool = True) -> ObservedState:
        """The managed rooms as the homeserver holds them. With save=False (a dry run) the cache
        and its token are left as they were: planning writes nothing, not even locally."""
        now_ms = self.clock.now_ms() if now_ms is None else now_ms
        records = {r.room_key: r for r in await self.store.all_rooms()}
        if not records:
            records = await self._rebuild_from_aliases(desired)
            full = True
        owners = {key: (d.owner or self.bot) for key, d in desired.items()}
        tokens, changes = await self._changes({self.bot, *owners.values()}, now_ms=now_ms, full=full,
                                              few=len(records) <= DELTA_CHUNK)
        changed = None if changes is None else changes.rooms
        cache = {} if changes is None else await self.store.observed_rooms()
        deltas: dict[str, list[dict[str, Any]]] = {}
        if changes is not None:
            # Read as its owner, as a whole read would be (the owner is in the room).
            wanted = {r.room_id: owners.get(r.room_key, self.bot) for r in records.values()
                      if r.room_id in changes.rooms}
            deltas = await self._deltas(changes, wanted, cache)
        fresh: dict[str, str] = {}
        # Rooms not read now: their cached state would fall behind the token saved below.
        skipped: list[str] = []

        async def one(rec: RoomRecord) -> ObservedRoom:
            if rec.archived_at is not None and now_ms < rec.archived_at + grace_ms and rec.room_key not in desired:
                skipped.append(rec.room_id)
                return ObservedRoom(rec.room_key, rec.room_id, {}, {}, archived=True)  # read-only, left alone
            cached = cache.get(rec.room_id)
            if cached is not None and changed is not None and rec.room_id not in changed:
                events = json.loads(cached)
            elif rec.room_id in deltas:
                events = deltas[rec.room_id]
                fresh[rec.room_id] = json.dumps(events, separators=(",", ":"))
            else:
                async with self.sem:
                    raw = await self._room_state(rec.room_id, owner=owners.get(rec.room_key, self.bot))
                if raw is None:
                    get_logger(room_id=rec.room_id).warning("room_unusable", room_key=rec.room_key)
                    skipped.append(rec.room_id)
                    return ObservedRoom(rec.room_key, rec.room_id, {}, {}, unreadable=True)
                events = reduce_state(raw)
                fresh[rec.room_id] = json.dumps(events, separators=(",", ":"))
            room = from_state_events(rec.room_key, rec.room_id, events, archived=rec.archived)
            return dataclasses.replace(room, grace_over=True) if rec.archived else room

        results = await asyncio.gather(*(one(records[k]) for k in sorted(records)))
        if tokens is not None and save:
            # State and token are saved together: a crash before this line re-reads, never misses.
            await self.store.put_observed(fresh, replace_all=changed is None, drop=skipped)
            await self.store.set_value(SINCE_KEY, json.dumps(tokens, sort_keys=True))
            if changed is None:
                await self.store.set_value(FULL_AT_KEY, str(now_ms))
                await self.store.set_value(CACHE_KEY, CACHE_TYPES)
        folded = sum(1 for r in fresh if r in deltas)
        self.stats = ObserveStats(rooms=len(results), read=len(fresh), full=changed is None, folded=folded)
        get_logger().info("rooms_observed", rooms=len(results), read=len(fresh), folded=folded, full=changed is None)
        return ObservedState({r.key: r for r in results})

    async def _rebuild_from_aliases(self, desired: Mapping[str, DesiredRoom]) -> dict[str, RoomRecord]:
        """An empty store is either a first run or a lost store. The bridge's rooms carry their
        canonical alias (a keyed hash of the room key), so the mapping is recovered from them
        at the cost of one read per existing room; on a first run that is a single request."""
        joined: list[tuple[str, str]] = []  # (room id, the bridge's user in it)
        for user in (self.bot, self.keyless):
            if not user:
                continue
            try:
                rooms = await self.api.joined_rooms(user)
            except (MForbidden, MUnknownToken, MNotFound) as exc:
                # Not registered yet: it holds nothing.
                get_logger().info("rebuild_user_has_no_rooms", user_id=user, error=type(exc).__name__)
                continue
            joined += [(rid, user) for rid in rooms]
        by_alias = {self.alias(d): d for d in desired.values()}

        async def one(room_id: str, user: str) -> RoomRecord | None:
            async with self.sem:
                try:
                    content = await self.api.get_state(room_id, "m.room.canonical_alias", as_user=user)
                except MNotFound:
                    return None  # a room without an alias is not one of the managed rooms
                d = by_alias.get(str(content.get("alias", "")))
                return None if d is None else RoomRecord(d.key, room_id, self.alias(d), d.template)

        found = [r for r in await asyncio.gather(*(one(rid, user) for rid, user in joined)) if r is not None]
        for rec in found:
            await self.store.put_room(rec, now_ms=self.clock.now_ms())
        if found:
            get_logger().warning("store_rebuilt_from_aliases", rooms=len(found))
        return {r.room_key: r for r in found}
