"""The running bridge (composition root, appservice endpoint, dispatcher, outsider removal,
scheduled syncs and sweeps, admin answers) on the fake homeserver, plus the executor's
hand-over, provisioning and erasure paths: no Synapse, milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from bridge import admin_room as texts
from bridge.app import Bridge
from bridge.clock import FakeClock, FixedTime
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.reconcile.actions import ErasePerson, ProvisionAccount, TransferRoom
from bridge.reconcile.sync import run_sync
from bridge.store import open_store
from tests.conftest import ROOT, unique_school, write_bridge_files, write_school


async def _until(predicate: Any, *, steps: int = 2000) -> None:
    """Let the bridge's tasks run until the condition holds (no wall-clock deadline)."""
    for _ in range(steps):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[Bridge, FakeHomeserver, dict[str, Any]]]:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=free_port())
    school = unique_school(tmp_path)
    src = write_school(tmp_path, school)
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 directory_sources=(str(src),), watch_sources=False)
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    bridge = await Bridge.create(config, with_bot=False, transport=fake)
    await bridge.start()
    assert bridge.resyncer is not None
    await _until(lambda: bridge.resyncer.runs >= 1)
    try:
        yield bridge, fake, {"school": school, "src": src, "tmp": tmp_path}
    finally:
        await bridge.stop()


def _invited_by_hand(bridge: Bridge, fake: FakeHomeserver, room_id: str, stranger: str) -> dict[str, Any]:
    """Someone not entitled invited into a managed room (by a teacher, say): the event Synapse sends."""
    fake.register(stranger)
    fake.store.invite(fake.room(room_id), bridge.config.bot_user_id, stranger, None)
    return {"type": "m.room.member", "room_id": room_id, "state_key": stranger, "event_id": f"$inv-{stranger}",
            "sender": "@teacher:ent.test", "content": {"membership": "invite"}}


async def _put(bridge: Bridge, txn: str, events: list[dict[str, Any]]) -> int:
    url = f"http://127.0.0.1:{bridge.config.appservice.port}/_matrix/app/v1/transactions/{txn}"
    async with aiohttp.ClientSession() as http, http.put(
            url, json={"events": events}, headers={"Authorization": f"Bearer {bridge.config.appservice.hs_token}"}
    ) as resp:
        return resp.status


async def test_start_syncs_the_directory_and_answers_status(running: Any) -> None:
    bridge, fake, _ = running
    rooms = await bridge.store.all_rooms()
    assert rooms and all(r.room_id in fake.store.rooms for r in rooms)
    assert bridge.outsiders.entitled  # the outsider rule knows every managed room
    status = await bridge.ops.status()
    assert f"{len(rooms)} salons gérés" in status and "0 en échec" in status
    assert "rien à faire" in await bridge.ops.plan_summary()
    assert "Synchronisation" in await bridge.ops.sync_now()
    assert await bridge.ops.reload_answer() == texts.reloaded(True)  # no moderator: nothing to reload


async def test_an_outsider_invited_by_hand_is_removed_from_the_event_stream(running: Any) -> None:
    bridge, fake, _ = running
    room = next(r for r in await bridge.store.all_rooms() if r.template == "class")
    stranger = "@intrus:ent.test"
    event = _invited_by_hand(bridge, fake, room.room_id, stranger)
    assert await _put(bridge, "t1", [event]) == 200
    await _until(lambda: fake.room(room.room_id).membership(stranger) == "leave")
    await _until(lambda: not bridge.dispatcher._wake.is_set())
    rows = [r.body for r in await bridge.store.audit_rows()]
    assert any("outsider_removed" in b for b in rows)
    assert await _put(bridge, "t1", [event]) == 200  # a resent transaction is acknowledged, not redone


async def test_a_truncated_export_is_refused_and_said(running: Any) -> None:
    bridge, _fake, ctx = running
    ctx["school"]["pupils"] = ctx["school"]["pupils"][:1]
    ctx["school"]["guardians"] = ctx["school"]["guardians"][:1]
    write_school(ctx["tmp"], ctx["school"])
    await bridge.ops.resync()
    assert bridge.ops.last_sync == texts.SYNC_REFUSED
    assert "REFUSÉ" in await bridge.ops.plan_summary()


async def test_the_sweep_removes_messages_past_their_lifetime(running: Any) -> None:
    bridge, fake, _ = running
    room = next(r for r in await bridge.store.all_rooms() if r.template == "class")
    old = fake.store.send_message(fake.room(room.room_id), bridge.config.bot_user_id, "m.room.message",
                                  {"msgtype": "m.text", "body": "vieux"})  # fake timestamps are tiny: expired
    await bridge.ops.sweep()
    assert next(e for e in fake.room(room.room_id).timeline if e["event_id"] == old["event_id"])["content"] == {}


async def test_content_inspection_switch_hands_rooms_to_the_keyless_user_and_back(tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=1)
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 policies_dir=policies)
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    api = AppserviceAPI(as_token=config.appservice.as_token, transport=fake)
    store = await open_store(config.database_url)
    src = [str(write_school(tmp_path, unique_school(tmp_path)))]
    bot, keyless = config.bot_user_id, config.keyless_user_id
    try:
        assert (await run_sync(config, src, store=store, api=api, apply=True)).residual.is_empty()
        text = (policies / "moderation.yaml").read_text()
        (policies / "moderation.yaml").write_text(text.replace("content_inspection: true", "content_inspection: false"))
        handed = await run_sync(config, src, store=store, api=api, apply=True)
        assert handed.plan.of(TransferRoom) and handed.residual.is_empty() and not handed.report.failed
        for rec in await store.all_rooms():
            if rec.template in ("class", "family", "school", "staff"):  # the templates of that profile
                assert fake.room(rec.room_id).membership(keyless) == "join"
                assert fake.room(rec.room_id).membership(bot) == "leave"  # its device gets no more keys
        (policies / "moderation.yaml").write_text(text)
        back = await run_sync(config, src, store=store, api=api, apply=True)
        assert back.plan.of(TransferRoom) and back.residual.is_empty()
        assert all(fake.room(r.room_id).membership(bot) == "join" for r in await store.all_rooms())
    finally:
        await store.close()


class FakeAccounts:
    """The homeserver's account admin, recorded: nobody has an account yet."""

    def __init__(self) -> None:
        self.created: dict[str, tuple[str, str | None, tuple[str, str] | None]] = {}
        self.deactivated: list[str] = []

    async def users_by_email(self, emails: list[str], *, concurrency: int = 8) -> dict[str, str]:
        return {}

    async def user_exists(self, user_id: str) -> bool:
        return user_id in self.created

    async def provision(self, user_id: str, *, displayname: str, email: str | None,
                        sso: tuple[str, str] | None) -> None:
        self.created[user_id] = (displayname, email, sso)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        assert erase
        self.deactivated.append(user_id)


async def test_accounts_are_provisioned_then_erased_after_the_grace_period(tmp_path: Path) -> None:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=1)
    base = load_config(config_path)
    config = dataclasses.replace(base, database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 identity=dataclasses.replace(base.identity, provision=True, sso_provider="oidc-ent"))
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    api = AppserviceAPI(as_token=config.appservice.as_token, transport=fake)
    store = await open_store(config.database_url)
    accounts = FakeAccounts()
    school = unique_school(tmp_path)
    clock = FakeClock()
    try:
        first = await run_sync(config, [str(write_school(tmp_path, school))], store=store, api=api, apply=True,
                               accounts=accounts, clock=clock)
        made = {a.user_id: a for a in first.plan.of(ProvisionAccount)}
        assert set(made) == set(accounts.created) and len(made) == len(school["staff"]) + len(school["guardians"])
        claire = next(u for u in made if u.startswith("@claire.dubois"))
        assert accounts.created[claire] == ("Claire Dubois", "claire.dubois@ac-paris.fr", ("oidc-ent", "t-cp"))
        assert set(await store.provisioned()) == set(made)
        school["staff"] = [p for p in school["staff"] if p["id"] != "t-cp"]
        src = [str(write_school(tmp_path, school))]
        await run_sync(config, src, store=store, api=api, apply=True, accounts=accounts, clock=clock,
                       allow_mass_removal=True)
        later = FixedTime(clock.now() + timedelta(days=91))
        erased = await run_sync(config, src, store=store, api=api, apply=True, accounts=accounts, clock=later)
        [erase] = erased.plan.of(ErasePerson)
        assert erase.user_id == claire and accounts.deactivated == [claire]
        assert "t-cp" not in await store.identities() and claire not in await store.provisioned()
        # Without the admin, an erasure that must deactivate an account fails and is reported, not skipped.
        school["guardians"] = school["guardians"][1:]
        for pupil in school["pupils"]:
            pupil["guardians"] = [g for g in pupil["guardians"] if g != "g-anne"]
        src = [str(write_school(tmp_path, school))]
        await run_sync(config, src, store=store, api=api, apply=True, accounts=accounts, clock=later,
                       allow_mass_removal=True)
        failed = await run_sync(config, src, store=store, api=api, apply=True, accounts=None,
                                clock=FixedTime(later.now() + timedelta(days=91)))
        assert failed.report is not None and failed.report.failed
        assert "g-anne" in await store.identities()  # kept until the erasure can be done
    finally:
        await store.close()


async def test_a_broken_export_keeps_the_last_good_rules_even_after_a_restart(running: Any) -> None:
    """A new export is broken (here: invalid YAML) and the bridge restarts: nothing is archived
    or removed, the admins are told which file and line, and outsiders are still removed at once,
    by the rule of the last applied sync."""
    bridge, fake, ctx = running
    rooms = await bridge.store.all_rooms()
    await bridge.stop()
    ctx["src"].write_text("schools: [unclosed\n")
    again = await Bridge.create(bridge.config, with_bot=False, transport=fake)
    await again.start()
    try:
        assert again.resyncer is not None
        await _until(lambda: again.resyncer.runs >= 1)
        assert "refusé" in again.ops.last_sync and ctx["src"].name in again.ops.last_sync
        assert ":2" in again.ops.last_sync or ":1" in again.ops.last_sync  # the line
        assert await again.store.all_rooms() == rooms  # nothing archived
        room = next(r for r in rooms if r.template == "class")
        stranger = "@intrus2:ent.test"
        assert await _put(again, "t-restart", [_invited_by_hand(again, fake, room.room_id, stranger)]) == 200
        await _until(lambda: fake.room(room.room_id).membership(stranger) == "leave")
    finally:
        await again.stop()


async def test_a_removal_whose_answer_was_lost_is_on_record_once(running: Any) -> None:
    """The kick reached the homeserver, its answer did not (a connection cut, a crash): the event
    is handled again, finds the outsider gone, and the removal is on record once (it was on
    record nowhere: the entry came after the kick, and the retry had nothing left to do)."""
    bridge, fake, _ = running
    room = next(r for r in await bridge.store.all_rooms() if r.template == "class")
    stranger = "@intrus3:ent.test"
    kick, calls = bridge.outsiders.api.kick, []

    async def answer_lost(*args: Any, **kwargs: Any) -> bool:
        calls.append(await kick(*args, **kwargs))
        if len(calls) == 1:
            raise ConnectionResetError("the homeserver's answer was lost")
        return calls[-1]

    bridge.outsiders.api.kick = answer_lost  # type: ignore[method-assign]
    event = _invited_by_hand(bridge, fake, room.room_id, stranger)
    assert await _put(bridge, "t-lost", [event]) == 200
    await _until(lambda: len(calls) >= 2, steps=4000)  # handled again after its failure
    await _until(lambda: not bridge.dispatcher._wake.is_set())
    assert calls == [True, False] and fake.room(room.room_id).membership(stranger) == "leave"
    assert sum("outsider_removed" in r.body for r in await bridge.store.audit_rows()) == 1


async def test_a_sync_in_a_child_process_reports_its_outcome_and_a_broken_export(tmp_path: Path) -> None:
    """What `ent-bridge run` does: the sync runs in a child `ent-bridge sync`, given the running
    configuration through a pipe; its outcome comes back as one summary, a broken export as an
    InputError naming the file."""
    from bridge.errors import InputError
    from bridge.sync_process import SyncOutcome, child_sync

    config_path, _ = write_bridge_files(tmp_path, hs_url="http://127.0.0.1:9", bridge_port=1)
    source = write_school(tmp_path, unique_school(tmp_path))
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 directory_sources=(str(source),))
    outcome = await child_sync(config, apply=False, offline=True)  # offline: no homeserver needed
    assert outcome.summary["create_room"] >= 5 and not outcome.refused
    assert SyncOutcome.from_json(outcome.to_json()) == outcome
    source.write_text("schools: [unclosed\n")
    with pytest.raises(InputError, match=source.name):
        await child_sync(config, apply=False, offline=True)


async def test_an_explanation_that_fails_leaves_the_removal_done_once(running: Any) -> None:
    """The notice explaining a removal is best effort: if it fails (the bot hasn't seen the room
    yet), the event is not handled again for it, and the removal stands."""
    bridge, fake, _ = running

    async def broken(room_id: str, user: str, reason: str) -> None:
        raise KeyError(room_id)

    bridge.outsiders.explain = broken
    failures: list[Any] = []
    event_failed = bridge.store.event_failed

    async def counted(*args: Any, **kwargs: Any) -> Any:  # the dispatcher's "handle it again later"
        failures.append(args)
        return await event_failed(*args, **kwargs)

    bridge.store.event_failed = counted  # type: ignore[method-assign]
    room = next(r for r in await bridge.store.all_rooms() if r.template == "class")
    event = _invited_by_hand(bridge, fake, room.room_id, "@intrus2:ent.test")
    assert await _put(bridge, "t-explain", [event]) == 200
    await _until(lambda: fake.room(room.room_id).membership("@intrus2:ent.test") == "leave")
    for _ in range(2000):  # until the event left the inbox (a hang guard, not a deadline)
        stats = await bridge.store.inbox_stats()
        if stats.pending == 0:
            break
        await asyncio.sleep(0.005)
    assert stats.pending == 0 and stats.dead == 0
    assert failures == []  # handled at once: never sent back for another try
    assert sum("outsider_removed" in r.body for r in await bridge.store.audit_rows()) == 1
