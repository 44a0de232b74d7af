"""The sync shell (observe, plan, guards, apply, verify) and the HTTP client on the fake homeserver:
failure paths (retry, backoff, permanent errors, partial apply, a dead homeserver) in milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.clock import FakeClock, FixedTime
from bridge.config import Config, load_config
from bridge.errors import MForbidden, TemporaryMatrixError
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.reconcile import render
from bridge.reconcile.actions import ArchiveRoom, CreateRoom, ReplaceRoom, SetState
from bridge.reconcile.sync import run_sync
from bridge.store import Store, open_store
from tests.conftest import unique_school, write_bridge_files, write_school


@dataclasses.dataclass
class World:
    config: Config
    fake: FakeHomeserver
    api: AppserviceAPI
    store: Store
    clock: FakeClock
    school: dict[str, Any]
    tmp: Path

    async def sync(self, *, apply: bool = True, **kw: Any) -> Any:
        return await run_sync(self.config, [str(write_school(self.tmp, self.school))], store=self.store,
                              api=self.api, apply=apply, clock=self.clock, **kw)

    def room_of(self, key_prefix: str, result: Any) -> str:
        return next(k for k in result.plan.desired if k.startswith(key_prefix))


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=1)
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'bridge.db'}")
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    clock = FakeClock()
    api = AppserviceAPI(as_token=config.appservice.as_token, transport=fake, clock=clock)
    store = await open_store(config.database_url)
    try:
        yield World(config, fake, api, store, clock, unique_school(tmp_path), tmp_path)
    finally:
        await store.close()


async def _members(w: World, room_id: str) -> set[str]:
    return {u for u in w.fake.room(room_id).members("join", "invite")} - {w.config.bot_user_id}


async def test_apply_converges_then_replans_nothing(world: World) -> None:
    result = await world.sync()
    assert result.verdict.ok and not result.report.failed
    assert result.residual is not None and result.residual.is_empty() and result.passes == 1
    for key, d in result.plan.desired.items():
        rec = await world.store.get_room(key)
        assert rec is not None
        room = world.fake.room(rec.room_id)
        assert await _members(world, rec.room_id) == set(d.members)
        assert (room.content("m.room.encryption") is not None) == d.encrypted
        assert room.content("m.room.join_rules") == {"join_rule": "invite"}
    writes = world.api.write_count
    again = await world.sync()
    assert again.plan.is_empty() and world.api.write_count == writes


async def test_rate_limits_and_server_errors_are_retried_with_backoff(world: World) -> None:
    world.fake.fail("POST", "/createRoom", 429, "M_LIMIT_EXCEEDED", retry_after_ms=7000)
    world.fake.fail("POST", "/invite", 502, times=2)
    world.fake.fail("PUT", "/state/m.space.child", None)  # a timeout: no answer at all
    result = await world.sync()
    assert not result.report.failed and result.residual.is_empty()
    assert any(6.9 < s < 7.8 for s in world.clock.slept)  # the homeserver's retry_after, with jitter
    assert all(f.times == 0 for f in world.fake.faults)


async def test_a_permanent_refusal_stops_that_room_only_and_is_reported(world: World) -> None:
    first = await world.sync()
    klass = world.room_of("class:", first)
    room_id = (await world.store.get_room(klass)).room_id
    world.school["guardians"].append({"id": "g-new", "first_name": "Nadia", "last_name": "Nouvelle"})
    pupil = next(p for p in world.school["pupils"] if klass.split(":")[2] in p["classes"])
    pupil["guardians"].append("g-new")
    world.fake.fail("POST", f"/rooms/{room_id}/invite", 403, "M_FORBIDDEN", times=10)
    result = await world.sync()
    assert result.report.failed and all(key == klass for key, _ in result.report.failed)
    assert result.report.done > 0  # the family room's invite went through
    failed = [r.body for r in await world.store.audit_rows() if "invite_failed" in r.body]
    assert failed
    world.fake.faults.clear()
    assert not (await world.sync()).report.failed  # a re-run finishes the job


async def test_a_dead_homeserver_fails_the_sync_after_bounded_retries(world: World) -> None:
    world.fake.down = True
    with pytest.raises(TemporaryMatrixError):
        await world.sync()
    assert len(world.fake.requests) == world.api.max_retries + 1  # bounded, then the error surfaces
    world.fake.down = False
    assert (await world.sync()).residual.is_empty()


async def test_drift_is_planned_with_before_and_after_and_repaired(world: World) -> None:
    first = await world.sync()
    klass = world.room_of("class:", first)
    room_id = (await world.store.get_room(klass)).room_id
    await world.api.set_state(room_id, "m.room.name", "", {"name": "Renommé"}, as_user=world.config.bot_user_id)
    plan = (await world.sync(apply=False)).plan
    [rename] = plan.of(SetState)
    assert (rename.before, rename.after) == ({"name": "Renommé"}, {"name": first.plan.desired[klass].name})
    assert (await world.sync()).residual.is_empty()
    assert world.fake.room(room_id).content("m.room.name") == {"name": first.plan.desired[klass].name}


async def test_room_created_before_a_crash_is_adopted_not_duplicated(world: World) -> None:
    first = await world.sync(apply=False)
    create = next(a for a in first.plan.of(CreateRoom) if a.room_key.startswith("class:"))
    from bridge.reconcile.requests import create_room_body

    await world.api.register_user(world.config.bot.localpart)
    # The homeserver made the room, the bridge crashed before recording it.
    room_id = await world.api.create_room(as_user=world.config.bot_user_id, body=create_room_body(create.room,
                                                                                                 invite=[]))
    result = await world.sync()
    assert not result.report.failed and result.residual.is_empty()
    assert (await world.store.get_room(create.room_key)).room_id == room_id
    aliases = [r for r in world.fake.store.aliases if create.room.alias_localpart in r]
    assert len(aliases) == 1
    assert await _members(world, room_id) == set(create.room.members)


async def test_rooms_no_longer_wanted_are_archived_read_only(world: World) -> None:
    first = await world.sync()
    klass = world.room_of("class:", first)
    code = klass.split(":")[2]
    world.school["pupils"] = [p for p in world.school["pupils"] if code not in p["classes"]]
    result = await world.sync(allow_mass_removal=True)
    [archive] = [a for a in result.plan.of(ArchiveRoom) if a.room_key == klass]
    assert archive.power_before.get("events_default") == 0 and archive.power_after["events_default"] == 100
    room = world.fake.room((await world.store.get_room(klass)).room_id)
    assert room.content("m.room.power_levels")["events_default"] == 100
    assert room.content("m.room.name")["name"] == archive.name_after


async def test_client_raises_refusals_it_cannot_explain(world: World) -> None:
    await world.api.register_user(world.config.bot.localpart)
    bot = world.config.bot_user_id
    room = await world.api.create_room(as_user=bot, body={"preset": "private_chat"})
    world.fake.fail("POST", "/invite", 403, "M_FORBIDDEN")
    with pytest.raises(MForbidden):  # refused, and the state says they are not invited: the refusal stands
        await world.api.invite(room, "@autre:ent.test", as_user=bot)
    assert await world.api.membership(room, "@autre:ent.test", as_user=bot) is None


async def test_a_create_whose_answer_was_lost_is_adopted_with_its_invites(world: World) -> None:
    """createRoom took effect but its answer never came (timeout): the retry meets M_ROOM_IN_USE,
    the room is found by its alias and adopted, and the invites it carried are ensured."""
    world.fake.fail("POST", "/createRoom", None, done=True)
    result = await world.sync()
    assert not result.report.failed and result.residual.is_empty()
    assert len(world.fake.store.rooms) == len(result.plan.desired)  # no duplicate room
    for key, d in result.plan.desired.items():
        rec = await world.store.get_room(key)
        assert await _members(world, rec.room_id) == set(d.members)


async def test_a_room_left_half_created_is_repaired(world: World) -> None:
    """Only the create event, the bot's join and two invites survived (a crash inside createRoom):
    the next sync restores encryption, join rule, history, guest access, power levels and name,
    then invites the others, and plans nothing more."""
    first = await world.sync()
    key = world.room_of("class:", first)
    room = world.fake.room((await world.store.get_room(key)).room_id)
    keep = {("m.room.create", ""), ("m.room.member", world.config.bot_user_id)}
    keep |= {k for k in room.state if k[0] == "m.room.member"}
    room.state = {k: v for k, v in room.state.items() if k in keep}
    world.fake.store.pos += 1  # the change must show in the incremental /sync
    room.timeline.append({**room.state[("m.room.create", "")], "stream": world.fake.store.pos})
    result = await world.sync(full_observe=True)
    assert not result.report.failed and result.residual.is_empty(), result.residual
    assert room.content("m.room.encryption") == {"algorithm": "m.megolm.v1.aes-sha2"}
    assert room.content("m.room.join_rules") == {"join_rule": "invite"}
    assert room.content("m.room.guest_access") == {"guest_access": "forbidden"}
    assert room.content("m.room.power_levels")["users"] == dict(first.plan.desired[key].power_levels["users"])


async def test_security_drift_is_seen_incrementally_and_repaired(world: World) -> None:
    first = await world.sync()
    key = world.room_of("class:", first)
    room_id = (await world.store.get_room(key)).room_id
    bot = world.config.bot_user_id
    await world.api.set_state(room_id, "m.room.join_rules", "", {"join_rule": "public"}, as_user=bot)
    await world.api.set_state(room_id, "m.room.history_visibility", "", {"history_visibility": "world_readable"},
                              as_user=bot)
    planned = await world.sync(apply=False)
    assert {a.event_type for a in planned.plan.of(SetState)} == {"m.room.join_rules", "m.room.history_visibility"}
    assert planned.observed.read == 1  # the change was found by the incremental read
    assert (await world.sync()).residual.is_empty()
    assert world.fake.room(room_id).content("m.room.join_rules") == {"join_rule": "invite"}


async def test_two_writers_at_once_apply_one_after_the_other(world: World) -> None:
    """`ent-bridge run`'s sync and a CLI `sync --apply` at the same moment (two store connections,
    as two processes have): the writer lease makes them take turns, so every room is created and
    audited once, and no invite goes out twice."""
    other = await open_store(world.config.database_url)
    src = [str(write_school(world.tmp, world.school))]
    clock = FixedTime(world.clock.now())  # real waiting: the fake clock's sleeps would expire the lease at once
    try:
        first, second = await asyncio.gather(
            run_sync(world.config, src, store=world.store, api=world.api, apply=True, clock=clock, role="run"),
            run_sync(world.config, src, store=other, api=world.api, apply=True, clock=clock, role="sync"))
    finally:
        await other.close()
    plans = sorted((first, second), key=lambda r: len(r.plan.actions))
    assert plans[0].plan.is_empty() and not plans[1].plan.is_empty()  # the second saw the first's work
    created = [r.body for r in await world.store.audit_rows() if '"create_room"' in r.body or '"create_space"' in r.body]
    assert len(created) == len(plans[1].plan.desired) == len(world.fake.store.rooms)
    invites = [e for room in world.fake.store.rooms.values() for e in room.timeline
               if e["type"] == "m.room.member" and e["content"].get("membership") == "invite"]
    assert len(invites) == len({(e["room_id"], e["state_key"]) for e in invites})


async def test_a_second_writer_told_not_to_wait_is_refused_with_the_holders_name(world: World) -> None:
    from bridge.lease import LeaseHeld, WriterLease

    async with WriterLease(world.store, holder="run@host:1/ab"):  # real time, as every lease
        with pytest.raises(LeaseHeld) as err:
            await run_sync(world.config, [str(write_school(world.tmp, world.school))], store=world.store,
                           api=world.api, apply=True, clock=world.clock, wait_for_writer=False)
    assert "run@host:1/ab" in str(err.value)
    assert not world.fake.store.rooms  # nothing was applied


async def test_a_room_half_made_before_a_crash_is_adopted_then_repaired_before_any_invite(world: World) -> None:
    """The homeserver died inside createRoom: the alias exists, the room has its create event and
    the bot's join, nothing else. The next sync adopts it (no duplicate), restores its state, and
    only then invites: nobody is ever invited into an unencrypted, ungoverned room."""
    from bridge.reconcile.requests import create_room_body

    planned = await world.sync(apply=False)
    create = next(a for a in planned.plan.of(CreateRoom) if a.room_key.startswith("class:"))
    await world.api.register_user(world.config.bot.localpart)
    room_id = await world.api.create_room(as_user=world.config.bot_user_id,
                                          body=create_room_body(create.room, invite=[]))
    room = world.fake.room(room_id)
    room.state = {k: v for k, v in room.state.items()
                  if k in {("m.room.create", ""), ("m.room.member", world.config.bot_user_id)}}
    result = await world.sync()
    assert not result.report.failed and result.residual.is_empty() and result.passes == 2
    assert (await world.store.get_room(create.room_key)).room_id == room_id
    assert sum(1 for a in world.fake.store.aliases if create.room.alias_localpart in a) == 1
    encryption = room.state[("m.room.encryption", "")]["stream"]
    invites = [e["stream"] for e in room.timeline if e["type"] == "m.room.member"
               and e["content"].get("membership") == "invite"]
    assert invites and min(invites) > encryption
    assert await _members(world, room_id) == set(create.room.members)


async def test_a_room_nobody_of_the_bridge_can_enter_is_replaced(world: World) -> None:
    """The homeserver died inside createRoom before the bot's own join: the alias points to a room
    no user of the bridge is in. The sync doesn't stop there: the alias is taken back, a new room
    made with all its state and members, and the plan says so."""
    first = await world.sync()
    key = world.room_of("class:", first)
    old = (await world.store.get_room(key)).room_id
    room = world.fake.room(old)
    room.state = {k: v for k, v in room.state.items() if k == ("m.room.create", "")}  # no join at all
    planned = await world.sync(apply=False, full_observe=True)
    [replace] = planned.plan.of(ReplaceRoom)
    assert (replace.room_key, replace.old_room_id) == (key, old)
    assert "replace_room" in render.to_text(planned.plan)
    result = await world.sync(full_observe=True)
    assert not result.report.failed and result.residual.is_empty()
    new = (await world.store.get_room(key)).room_id
    assert new != old and world.fake.store.aliases[f"#{replace.room.alias_localpart}:ent.test"] == new
    assert await _members(world, new) == set(first.plan.desired[key].members)
    assert world.fake.room(new).content("m.room.encryption") == {"algorithm": "m.megolm.v1.aes-sha2"}


async def test_a_lease_left_by_a_killed_process_of_this_machine_is_taken_at_once(world: World) -> None:
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = f"sync@{socket.gethostname()}:{gone.stdout.strip()}/dead"
    assert await world.store.acquire_lease("writer", dead, now_ms=world.clock.now_ms(), ttl_ms=3_600_000) is None
    result = await world.sync(wait_for_writer=False)  # would be refused if the lease still counted
    assert result.residual is not None and result.residual.is_empty()


async def test_a_stop_mid_apply_finishes_what_is_in_flight_and_a_rerun_completes(world: World) -> None:
    """Ctrl-C or SIGTERM during `sync --apply` (the CLI sets this event): no new action starts,
    the ones in flight end; the same sync again finishes the work, nothing twice."""
    stop = asyncio.Event()
    send = world.fake.send

    async def stop_after_three_rooms(method: str, path: str, **kw: Any) -> Any:
        answer = await send(method, path, **kw)
        if path.endswith("/createRoom") and sum(1 for _, p in world.fake.requests if p.endswith("/createRoom")) >= 3:
            stop.set()
        return answer

    world.fake.send = stop_after_three_rooms  # type: ignore[method-assign]
    first = await world.sync(stop=stop)
    assert first.report.interrupted > 0 and first.report.created >= 3 and not first.report.failed
    assert first.residual is None  # no verification of a half-done apply
    world.fake.send = send  # type: ignore[method-assign]
    again = await world.sync()
    assert again.report is not None and not again.report.failed and again.residual.is_empty()
    aliases = [a for a in world.fake.store.aliases]
    assert len(aliases) == len(set(aliases)) == len(again.plan.desired)  # every room once
