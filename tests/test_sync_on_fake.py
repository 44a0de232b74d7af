"""The sync shell (observe, plan, guards, apply, verify) and the HTTP client on the fake homeserver:
failure paths (retry, backoff, permanent errors, partial apply, a dead homeserver) in milliseconds."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.clock import FakeClock
from bridge.config import Config, load_config
from bridge.errors import MForbidden, TemporaryMatrixError
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.reconcile.actions import ArchiveRoom, CreateRoom, SetState
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
    assert result.residual is not None and result.residual.is_empty()
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
    assert len(world.clock.slept) == world.api.max_retries  # bounded, then the error surfaces
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
