"""Executor (I/O): observes managed rooms and applies a plan through the appservice API.

Every step is an ensure-step: a room whose alias already exists is adopted, not created twice
(that is what makes a re-run after `kill -9` converge), "already invited/joined" and "not in
the room" answers count as done. Actions of one room run in order; rooms run concurrently.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.audit import AuditLog
from bridge.clock import SYSTEM, Clock
from bridge.erasure import ErasureNeedsAdmin, erase_person
from bridge.errors import MatrixError, MForbidden, MNotFound, MRoomInUse, PermanentMatrixError, TemporaryMatrixError
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.reconcile.actions import (
    Action,
    AddToSpace,
    ArchiveRoom,
    CreateRoom,
    ErasePerson,
    Invite,
    Kick,
    LinkToSpace,
    Plan,
    ProvisionAccount,
    ReplaceRoom,
    SetPowerLevels,
    SetState,
    Stage,
    TransferRoom,
    UnarchiveRoom,
    UnlistFromSpace,
    stage_of,
    subject,
    target,
)
from bridge.reconcile.progress import Progress
from bridge.reconcile.requests import create_room_body, privileged_creators, security_state
from bridge.rooms.desired import DesiredRoom
from bridge.store.base import RoomRecord, Store

FOLD_INVITES = 25


class AccountAdmin(Protocol):
    """The homeserver's account administration (Synapse's admin API today)."""

    async def provision(self, user_id: str, *, displayname: str, email: str | None,
                        sso: tuple[str, str] | None) -> None: ...
    async def deactivate(self, user_id: str, *, erase: bool) -> None: ...


@dataclass
class ApplyReport:
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (room key, error)
    created: int = 0
    interrupted: int = 0  # actions not started because a stop was asked (Ctrl-C, SIGTERM)


class RoomExecutor:
    def __init__(self, *, api: Homeserver, store: Store, bot: str, server_name: str, keyless: str | None = None,
                 concurrency: int = 8, audit: AuditLog | None = None, accounts: AccountAdmin | None = None,
                 clock: Clock = SYSTEM, stop: asyncio.Event | None = None) -> None:
        """stop: once set, no new action starts; those in flight end (their requests complete)."""
        self.stop = stop or asyncio.Event()
        self.audit = audit
        self.api = api
        self.store = store
        self.bot = bot
        self.keyless = keyless
        self.server_name = server_name
        self.sem = asyncio.Semaphore(concurrency)
        self.accounts = accounts  # the homeserver's account admin, when accounts are provisioned or erased
        self.clock = clock

    def alias(self, room: DesiredRoom) -> str:
        return f"#{room.alias_localpart}:{self.server_name}"

    # --- apply ---------------------------------------------------------------------------------

    async def apply(self, plan: Plan) -> ApplyReport:
        report = ApplyReport()
        progress = Progress(len(plan.actions))
        by_stage: dict[Stage, dict[str, list[Action]]] = defaultdict(lambda: defaultdict(list))
        for action in plan.actions:
            by_stage[stage_of(action.phase)][target(action)].append(action)

        async def run(key: str, actions: list[Action]) -> None:
            async with self.sem:
                log = get_logger(room_key_hash=plan.desired[key].alias_localpart if key in plan.desired else key)
                folded: set[int] = set()
                actor = plan.actors.get(key, self.bot)  # the bot, or the keyless user of its room
                for i, action in enumerate(actions):
                    if id(action) in folded:
                        continue
                    if self.stop.is_set():
                        report.interrupted += sum(1 for a in actions[i:] if id(a) not in folded)
                        break
                    try:
                        invites: list[Invite] = []
                        if isinstance(action, (CreateRoom, ReplaceRoom)):
                            # The room's invites ride along in createRoom: one request instead
                            # of one per person, same events on the homeserver. Not too many: a
                            # createRoom with hundreds of invites can outlast the request timeout.
                            invites = [a for a in actions if isinstance(a, Invite)][:FOLD_INVITES]
                            await self._create(action, invite=[a.user_id for a in invites], owner=actor)
                            folded.update(id(a) for a in invites)
                            report.created += 1
                            for _ in invites:
                                report.done += 1
                                progress.step()
                        else:
                            await self._do(action, actor=actor)
                        report.done += 1
                        progress.step()
                        self._audit(action, folded_invites=invites)
                    except (MatrixError, ErasureNeedsAdmin) as exc:
                        # Temporary errors were already retried with backoff by the API client;
                        # what reaches here is permanent for this run: stop this room, go on.
                        log.error("apply_failed", action=action.kind, error=str(exc))
                        report.failed.append((key, f"{action.kind}: {exc}"))
                        progress.step(ok=False)
                        if self.audit is not None and not isinstance(action, ErasePerson):
                            self.audit.record(actor="ent-bridge", action=f"{action.kind}_failed", room=key,
                                              subject=subject(action), reason=str(exc)[:300])
                        elif self.audit is not None:
                            self.audit.record(actor="ent-bridge", action="erase_person_failed",
                                              reason=type(exc).__name__)
                        break
                if self.audit is not None:
                    await self.audit.flush()  # one write per room keeps the log close to the truth

        for stage in Stage:
            groups = by_stage.get(stage, {})
            await asyncio.gather(*(run(k, acts) for k, acts in sorted(groups.items())))
        return report

    def _audit(self, action: Action, *, folded_invites: list[Invite]) -> None:
        if self.audit is None:
            return
        for a in [action, *folded_invites]:
            # An erasure is recorded without saying whose (neither id): that would defeat it.
            who = None if isinstance(a, ErasePerson) else subject(a)
            room = None if isinstance(a, (ErasePerson, ProvisionAccount)) else a.room_key
            self.audit.record(actor="ent-bridge", action=a.kind, room=room, subject=who, reason=a.reason)

    async def _room_id(self, key: str) -> str:
        rec = await self.store.get_room(key)
        if rec is None:
            raise PermanentMatrixError(f"room {key} has no room id (its creation failed?)")
        return rec.room_id

    def _admin(self) -> AccountAdmin:
        if self.accounts is None:
            raise PermanentMatrixError("managing accounts needs homeserver.admin_token")
        return self.accounts

    async def _do(self, action: Action, *, actor: str) -> None:
        match action:
            case CreateRoom() | ReplaceRoom():
                await self._create(action, invite=[], owner=actor)
            case TransferRoom(to=to, held_by=held_by, leaving=leaving):
                await self._transfer(await self._room_id(action.room_key), to=to, held_by=held_by,
                                     leaving=list(leaving))
            case ProvisionAccount():
                await self._admin().provision(action.user_id, displayname=action.display_name, email=action.email,
                                              sso=action.external_id)
                await self.store.mark_provisioned(action.user_id, action.person_id)
            case ErasePerson():
                await erase_person(self.store, action.person_id, action.user_id, accounts=self.accounts)
            case Invite():
                await self.api.invite(await self._room_id(action.room_key), action.user_id, as_user=actor)
            case Kick():
                await self.api.kick(await self._room_id(action.room_key), action.user_id, as_user=actor,
                                    reason=action.reason)
            case SetPowerLevels(after=after):
                room_id = await self._room_id(action.room_key)
                await self.api.set_state(room_id, "m.room.power_levels", "",
                                         await self._with_owner_power(room_id, after, owner=actor), as_user=actor)
            case SetState(event_type=event_type, after=after):
                await self.api.set_state(await self._room_id(action.room_key), event_type, "", after, as_user=actor)
            case AddToSpace(child_key=child_key):
                child = await self._room_id(child_key)
                await self.api.set_state(await self._room_id(action.room_key), "m.space.child", child,
                                         {"via": [self.server_name]}, as_user=self.bot)
            case LinkToSpace(space_key=space_key):
                space_id = await self._room_id(space_key)
                await self.api.set_state(await self._room_id(action.room_key), "m.space.parent", space_id,
                                         {"via": [self.server_name], "canonical": True}, as_user=actor)
            case UnlistFromSpace(child_id=child_id):
                await self.api.set_state(await self._room_id(action.room_key), "m.space.child", child_id, {},
                                         as_user=self.bot)
            case ArchiveRoom():
                room_id = await self._room_id(action.room_key)
                if action.name_after != action.name_before:
                    await self.api.set_state(room_id, "m.room.name", "", {"name": action.name_after}, as_user=actor)
                read_only = await self._with_owner_power(room_id, action.power_after, owner=actor)
                await self.api.set_state(room_id, "m.room.power_levels", "", read_only, as_user=actor)
                # The final word, in the room's topic: read-only now, emptied after the grace period.
                await self.api.set_state(room_id, "m.room.topic", "", {"topic": action.topic_after}, as_user=actor)
                await self.store.archive_room(action.room_key, now_ms=self.clock.now_ms())
            case UnarchiveRoom():
                await self.store.unarchive_room(action.room_key)

    async def _wait_ready(self, room_id: str, room: DesiredRoom, *, user: str, timeout: float = 30.0) -> bool:
        """Until the room holds its initial state: `user` joined, the security state and the name.
        The alias exists from createRoom's first steps on, and an adopted room may still be in the
        making: an invite sent before its encryption and name would reach people as a bare room."""
        needed = {(t, "") for t in security_state(room)} | ({("m.room.name", "")} if room.name else set())
        needed.add(("m.room.member", user))
        delay, waited = 0.2, 0.0
        while True:
            try:
                state = await self.api.room_state(room_id, as_user=user)
                have = {(e.get("type"), e.get("state_key")) for e in state}
                if needed <= have:
                    return True
            except (TemporaryMatrixError, MForbidden) as exc:  # 403 until its own join is there
                get_logger(room_id=room_id).info("adopt_wait", error=type(exc).__name__)
            if waited >= timeout:
                return False
            await self.clock.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)

    async def _is_privileged_creator(self, room_id: str, user: str, *, reader: str) -> bool:
        """From room version 12 on, creators hold unlimited power outside `users`, and must not
        be listed there; before it, the creator's power is an ordinary `users` entry."""
        create = await self.api.get_state(room_id, "m.room.create", as_user=reader, whole_event=True)
        return user in privileged_creators(create)

    async def _with_owner_power(self, room_id: str, content: Mapping[str, Any] | None, *, owner: str,
                                reader: str | None = None) -> dict[str, Any]:
        """`content` (None: the room's current levels) plus what the bridge must keep: the owner at
        100 (unless a privileged creator), the bridge's own users as they are (a peer at 100 can't
        be lowered), and current mutes (negative levels, moderation's). Read as `reader`, by
        default the owner (a room being handed over is read by its holder)."""
        reader = reader or owner
        try:
            current = await self.api.get_state(room_id, "m.room.power_levels", as_user=reader)
        except MNotFound:
            current = {}  # a room left half-created: the levels are set from scratch
        content = current if content is None else dict(content)
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

    async def _create(self, action: CreateRoom | ReplaceRoom, *, invite: list[str], owner: str) -> None:
        d = action.room
        if isinstance(action, ReplaceRoom):
            # The unusable room keeps its id but loses the alias, which the new room takes.
            await self.api.delete_alias(self.alias(d))
            get_logger(room_id=action.old_room_id).warning("room_replaced", template=d.template)
        elif (created := await self.store.get_room(d.key)) is not None:
            for user in invite:  # already created (a re-run): invite one by one, idempotently
                await self.api.invite(created.room_id, user, as_user=owner)
            return
        body = create_room_body(d, invite=invite)
        try:
            room_id = await self.api.create_room(as_user=owner, body=body)
        except PermanentMatrixError as exc:
            # M_ROOM_IN_USE, or 409 (no errcode) while an earlier attempt of ours is mid-way.
            if not isinstance(exc, MRoomInUse) and exc.status != 409:
                raise
            # Created before a crash (store not updated), or by an earlier attempt of this very
            # request that timed out on our side: adopt it once the homeserver has finished it.
            found = await self.api.resolve_alias(self.alias(d))
            if found is None:
                raise
            room_id = found
            if await self._wait_ready(room_id, d, user=owner):
                for user in invite:  # the adopted room may predate these invites
                    await self.api.invite(room_id, user, as_user=owner)
            else:
                # Left half-made (the homeserver died inside createRoom): recorded as it is, so the
                # next plan repairs its state and only then invites.
                get_logger(room_id=room_id).warning("room_adopted_incomplete", template=d.template)
        await self.store.put_room(RoomRecord(d.key, room_id, self.alias(d), d.template), now_ms=self.clock.now_ms())
        get_logger(room_id=room_id).info("room_ensured", template=d.template, space=d.is_space)

