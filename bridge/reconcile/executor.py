"""Executor (I/O): observes managed rooms and applies a plan through the appservice API.

Every step is an ensure-step: a room whose alias already exists is adopted, not created twice
(that is what makes a re-run after `kill -9` converge), "already invited/joined" and "not in
the room" answers count as done. Actions of one room run in order; rooms run concurrently.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping

from bridge.audit import AuditLog
from bridge.errors import MatrixError, PermanentMatrixError
from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.actions import Action, Plan
from bridge.reconcile.observed import ObservedState, from_state_events
from bridge.reconcile.observer import ObserveStats, RoomObserver
from bridge.reconcile.progress import Progress
from bridge.reconcile.requests import ARCHIVED_PREFIX, ARCHIVED_TOPIC, create_room_body, creators_privileged
from bridge.rooms.desired import DesiredRoom
from bridge.store.base import RoomRecord, Store

FOLD_INVITES = 25


@dataclass
class ApplyReport:
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (room key, error)
    created: int = 0


class RoomExecutor:
    def __init__(self, *, api: AppserviceAPI, store: Store, bot: str, server_name: str, keyless: str | None = None,
                 concurrency: int = 8, language: str = "fr", audit: AuditLog | None = None,
                 grace_days: int = 30, now_ms: int | None = None) -> None:
        self.grace_days = grace_days
        self.now_ms = now_ms  # the sync's clock (tests and rollovers pass one); wall clock if None
        self.admin: Any = None  # SynapseAdmin, set when accounts are to be provisioned
        self.people: dict[str, Any] = {}
        self.sso_provider: str | None = None
        self.audit = audit
        self.api = api
        self.store = store
        self.bot = bot
        self.keyless = keyless
        self.server_name = server_name
        self.sem = asyncio.Semaphore(concurrency)
        self.language = language
        self.observe_stats = ObserveStats()

    def alias(self, room: DesiredRoom) -> str:
        return f"#{room.alias_localpart}:{self.server_name}"

    # --- observe -------------------------------------------------------------------------------

    async def observe(self, desired: Mapping[str, DesiredRoom], *, now_ms: int | None = None,
                      grace_ms: int = 30 * 86_400_000, full: bool = False, save: bool = True,
                      full_every_ms: int = 24 * 3_600_000) -> ObservedState:
        observer = RoomObserver(api=self.api, store=self.store, bot=self.bot, keyless=self.keyless,
                                server_name=self.server_name, sem=self.sem, full_every_ms=full_every_ms)
        observed = await observer.observe(desired, now_ms=now_ms, grace_ms=grace_ms, full=full, save=save)
        self.observe_stats = observer.stats
        return observed

    # --- apply ---------------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        progress = Progress(len(plan.actions))
        by_room: dict[str, list[Action]] = defaultdict(list)
        for action in plan.actions:
            by_room[action.room_key].append(action)
        early = {"create_space", "provision_account"}
        late = {"add_to_space", "archive_room", "unarchive_room", "erase_person"}

        async def run(key: str, actions: list[Action]) -> None:
            async with self.sem:
                log = get_logger(room_key_hash=plan.desired[key].alias_localpart if key in plan.desired else key)
                folded: set[int] = set()
                for action in actions:
                    if id(action) in folded:
                        continue
                    try:
                        invites: list[Action] = []
                        if action.type in ("create_room", "create_space"):
                            # The room's invites ride along in createRoom: one request instead
                            # of one per person, same events on the homeserver.
                            # Not too many: a createRoom with hundreds of invites can outlast
                            # the request timeout; the rest follow one by one.
                            invites = [a for a in actions if a.type == "invite"][:FOLD_INVITES]
                            await self._create(plan.desired[key], invite=[str(a.user_id) for a in invites],
                                               owner=plan.actors.get(key, self.bot))
                            folded.update(id(a) for a in invites)
                            report.created += 1
                            for _ in invites:
                                report.done += 1
                                progress.step()
                        else:
                            await self._do(action, plan)
                        report.done += 1
                        progress.step()
                        self._audit(action, folded_invites=invites)
                    except MatrixError as exc:
                        # Temporary errors were already retried with backoff by the API client;
                        # what reaches here is permanent for this run: stop this room, go on.
                        log.error("apply_failed", action=action.type, error=str(exc))
                        report.failed.append((key, f"{action.type}: {exc}"))
                        progress.step(ok=False)
                        if self.audit is not None:
                            self.audit.record(actor="ent-bridge", action=f"{action.type}_failed", room=key,
                                              subject=action.user_id, reason=str(exc)[:300])
                        break
                if self.audit is not None:
                    await self.audit.flush()  # one write per room keeps the log close to the truth

        for selector in (lambda a: a.type in early,
                         lambda a: a.type not in early and a.type not in late,
                         lambda a: a.type in late):
            groups: dict[str, list[Action]] = defaultdict(list)
            for key, actions in by_room.items():
                groups[key].extend(a for a in actions if selector(a))
            await asyncio.gather(*(run(k, acts) for k, acts in sorted(groups.items()) if acts))
        return report

    def _audit(self, action: Action, *, folded_invites: list[Action]) -> None:
        if self.audit is None:
            return
        for a in [action, *folded_invites]:
            # An erasure is recorded without saying whose: that would defeat it.
            subject = None if a.type == "erase_person" else a.user_id
            self.audit.record(actor="ent-bridge", action=a.type, room=a.room_key, subject=subject, reason=a.reason)

    async def _room_id(self, key: str) -> str:
        rec = await self.store.get_room(key)
        if rec is None:
            raise PermanentMatrixError(f"room {key} has no room id (its creation failed?)")
        return rec.room_id

    async def _do(self, action: Action, plan: Plan) -> None:
        kind = action.type
        actor = plan.actors.get(action.room_key, self.bot)  # the bot, or the keyless user of its room
        if kind in ("create_room", "create_space"):
            await self._create(plan.desired[action.room_key], invite=[], owner=actor)
        elif kind == "transfer_room":
            await self._transfer(await self._room_id(action.room_key), to=str(action.user_id),
                                 held_by=(action.detail or {}).get("from"),
                                 leaving=list((action.detail or {}).get("leaving", ())))
        elif kind == "provision_account":
            if self.admin is None:
                raise PermanentMatrixError("provisioning needs homeserver.admin_token")
            person = self.people[str(action.user_id)]
            await self.admin.provision(str(action.user_id), displayname=f"{person.first_name} {person.last_name}",
                                       email=person.email,
                                       sso=(self.sso_provider, person.id) if self.sso_provider else None)
            await self.store.mark_provisioned(str(action.user_id), person.id)
        elif kind == "erase_person":
            detail = action.detail or {}
            if detail.get("deactivate"):
                if self.admin is None:
                    raise PermanentMatrixError("deactivating an account needs homeserver.admin_token")
                await self.admin.deactivate(str(action.user_id), erase=True)
                await self.store.forget_provisioned(str(action.user_id))
            await self.store.delete_identity(str(detail["person"]))
            await self.store.set_leavers(add={}, remove=[str(detail["person"])])
        elif kind == "invite":
            await self.api.invite(await self._room_id(action.room_key), str(action.user_id), as_user=actor)
        elif kind == "kick":
            try:
                await self.api.kick(await self._room_id(action.room_key), str(action.user_id), as_user=actor,
                                    reason=action.reason)
            except PermanentMatrixError as exc:
                if exc.status != 403 or "not in the room" not in str(exc):
                    raise
        elif kind == "set_power_levels":
            d = plan.desired[action.room_key]
            room_id = await self._room_id(d.key)
            await self.api.set_state(room_id, "m.room.power_levels", "",
                                     await self._with_owner_power(room_id, d.power_levels, owner=actor), as_user=actor)
        elif kind == "set_state":
            d = plan.desired[action.room_key]
            field_ = (action.detail or {}).get("field")
            content: dict[str, Any] = {"name": {"name": d.name}, "topic": {"topic": d.topic},
                                       "retention": {"max_lifetime": d.retention_ms}}[str(field_)]
            await self.api.set_state(await self._room_id(d.key), f"m.room.{field_}", "", content, as_user=actor)
        elif kind == "add_to_space":
            child = await self._room_id(str(action.detail["child"]))
            await self.api.set_state(await self._room_id(action.room_key), "m.space.child", child,
                                     {"via": [self.server_name]}, as_user=self.bot)
        elif kind == "archive_room":
            room_id = await self._room_id(action.room_key)
            state = from_state_events(action.room_key, room_id, await self.api.room_state(room_id, as_user=actor))
            prefix = ARCHIVED_PREFIX.get(self.language, ARCHIVED_PREFIX["fr"])
            if not state.name.startswith(prefix):
                await self.api.set_state(room_id, "m.room.name", "", {"name": prefix + state.name}, as_user=actor)
            read_only = await self._with_owner_power(room_id, {**state.power_levels, "events_default": 100},
                                                     owner=actor)
            await self.api.set_state(room_id, "m.room.power_levels", "", read_only, as_user=actor)
            # The final word, in the room's topic: read-only now, emptied after the grace period.
            await self.api.set_state(room_id, "m.room.topic", "", {"topic": ARCHIVED_TOPIC.get(
                self.language, ARCHIVED_TOPIC["fr"]).format(days=self.grace_days)}, as_user=actor)
            await self.store.archive_room(action.room_key, now_ms=self.now_ms or _now_ms())
        elif kind == "unarchive_room":
            await self.store.unarchive_room(action.room_key)
        else:  # pragma: no cover - the planner only emits the kinds above
            raise ValueError(kind)

    async def _wait_joined(self, room_id: str, *, user: str, timeout: float = 120.0) -> None:
        """Until `user`'s own join is in the room (the alias can exist before createRoom ends)."""
        delay, waited = 0.2, 0.0
        while True:
            try:
                state = await self.api.room_state(room_id, as_user=user)
                if any(e.get("type") == "m.room.member" and e.get("state_key") == user
                       and (e.get("content") or {}).get("membership") == "join" for e in state):
                    return
            except PermanentMatrixError:
                pass  # 403 while not yet a member
            if waited >= timeout:
                raise PermanentMatrixError(f"room {room_id} never became usable by {user}")
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    async def _is_privileged_creator(self, room_id: str, user: str, *, reader: str) -> bool:
        """From room version 12 on, creators hold unlimited power outside `users`, and must not
        be listed there; before it, the creator's power is an ordinary `users` entry."""
        create = await self.api.get_state(room_id, "m.room.create", as_user=reader, whole_event=True)
        content = create.get("content") or {}
        creators = {create.get("sender"), *(content.get("additional_creators") or [])}
        return creators_privileged(str(content.get("room_version", "1"))) and user in creators

    async def _with_owner_power(self, room_id: str, content: Any, *, owner: str,
                                reader: str | None = None) -> dict[str, Any]:
        """`content` (None: the room's current levels) plus what the bridge must keep: the owner at
        100 (unless a privileged creator), the bridge's own users as they are (a peer at 100 can't
        be lowered), and current mutes (negative levels, moderation's). Read as `reader`, by
        default the owner (a room being handed over is read by its holder)."""
        reader = reader or owner
        current = await self.api.get_state(room_id, "m.room.power_levels", as_user=reader)
        content = current if content is None else content
        now = {u: lvl for u, lvl in (current.get("users") or {}).items() if isinstance(lvl, int)}
        users = {u: lvl for u, lvl in now.items() if lvl < 0}
        users.update(content.get("users", {}))
        users.update({u: now[u] for u in (self.bot, self.keyless) if u and u in now})
        if not await self._is_privileged_creator(room_id, owner, reader=reader):
            users[owner] = 100
        return {**content, "users": users}

    async def _transfer(self, room_id: str, *, to: str, held_by: str | None, leaving: list[str]) -> None:
        """Hand a room over between the bot and the keyless user, each step an ensure-step: the
        holder invites and empowers the new owner, who joins; then the one not to stay leaves."""
        if held_by is not None:
            await self.api.invite(room_id, to, as_user=held_by)
            await self.api.set_state(room_id, "m.room.power_levels", "",
                                     await self._with_owner_power(room_id, None, owner=to, reader=held_by),
                                     as_user=held_by)
        await self.api.join(room_id, as_user=to)
        for user in leaving:
            if user != to:
                await self.api.leave(room_id, as_user=user)
        get_logger(room_id=room_id).info("room_transferred", to=to, left=leaving)

    async def _create(self, d: DesiredRoom, *, invite: list[str], owner: str) -> None:
        if await self.store.get_room(d.key) is not None:
            for user in invite:  # already created (a re-run): invite one by one, idempotently
                await self.api.invite((await self._room_id(d.key)), user, as_user=owner)
            return
        body = create_room_body(d, invite=invite)
        try:
            room_id = await self.api.create_room(as_user=owner, body=body)
        except PermanentMatrixError as exc:
            # M_ROOM_IN_USE, or 409 "alias already exists" while an earlier attempt is mid-way.
            if exc.errcode != "M_ROOM_IN_USE" and exc.status != 409:
                raise
            # Created before a crash (store not updated), or by an earlier attempt of this very
            # request that timed out on our side: adopt it once the homeserver has finished it.
            found = await self.api.resolve_alias(self.alias(d))
            if found is None:
                raise
            room_id = found
            await self._wait_joined(room_id, user=owner)
            for user in invite:  # the adopted room may predate these invites
                await self.api.invite(room_id, user, as_user=owner)
        await self.store.put_room(RoomRecord(d.key, room_id, self.alias(d), d.template), now_ms=_now_ms())
        get_logger(room_id=room_id).info("room_ensured", template=d.template, space=d.is_space)


def _now_ms() -> int:
    return int(time.time() * 1000)
