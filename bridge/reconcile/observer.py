"""Observer (I/O): what the homeserver holds for managed rooms, read incrementally.

Reading every room's state on every sync costs one request per room: minutes for a département.
The homeserver already knows which rooms changed: a filtered `/sync` of the bridge's users (the
bot, and the keyless owner of rooms without content inspection: between them they are in every
managed room) since the tokens saved at the previous observation lists exactly the rooms with
new membership, power-level, name, topic, Space or retention events. Only those are read again;
the others come from the cache in the store. A full read happens on the first run, when the token
is refused, and every `rooms.full_observe_hours` as a safety net.

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
    PLANNED_TYPES,
    ObservedRoom,
    ObservedState,
    changed_rooms,
    from_state_events,
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


def _unique(filter_: dict[str, Any]) -> str:
    """Synapse answers an identical /sync request made within two minutes from its response cache
    (`sync_response_cache_duration`): a stale token, or changes that miss our own latest writes.
    A field of our own namespace, which filters may carry, makes every request distinct."""
    return json.dumps({**filter_, "fr.ent-bridge.nonce": secrets.token_hex(8)}, separators=(",", ":"))


@dataclasses.dataclass
class ObserveStats:
    rooms: int = 0
    read: int = 0
    full: bool = False


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

    async def _changes(self, users: set[str], *, now_ms: int,
                       full: bool) -> tuple[dict[str, str] | None, set[str] | None]:
        """(tokens to save, rooms changed since the saved tokens); None for "read everything".
        Each of the bridge's users (the bot, the keyless owner) sees the rooms it is in."""
        try:
            saved: dict[str, str] = dict(json.loads(await self.store.get_value(SINCE_KEY) or "{}"))
        except ValueError:
            saved = {}  # unreadable: start over with a full read
        full_at = int(await self.store.get_value(FULL_AT_KEY) or 0)
        if await self.store.get_value(CACHE_KEY) != CACHE_TYPES:
            full = True  # cached by a version that read fewer state types (e.g. no security state)
        users |= set(saved)  # a user that once ran rooms keeps being asked
        tokens: dict[str, str] = {}
        changed: set[str] = set()
        incremental = not full and now_ms - full_at < self.full_every_ms and users <= set(saved)
        try:
            for user in sorted(users):
                if incremental:
                    resp = await self._sync(user, since=saved[user], filter_=CHANGES_FILTER)
                    changed |= changed_rooms(resp)
                else:
                    # Taken before the rooms are read: what changes meanwhile shows up next time.
                    resp = await self._sync(user, since=None, filter_=TOKEN_FILTER)
                tokens[user] = str(resp["next_batch"])
        except (MatrixError, KeyError) as exc:
            # An expired token, or a homeserver that can't sync us: read everything, save nothing.
            get_logger().warning("observe_changes_unavailable", error=str(exc))
            return None, None
        return tokens, changed if incremental else None

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
        tokens, changed = await self._changes({self.bot, *owners.values()}, now_ms=now_ms, full=full)
        cache = {} if changed is None else await self.store.observed_rooms()
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
        self.stats = ObserveStats(rooms=len(results), read=len(fresh), full=changed is None)
        get_logger().info("rooms_observed", rooms=len(results), read=len(fresh), full=changed is None)
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
