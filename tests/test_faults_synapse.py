"""Real faults on a real Synapse: the homeserver killed with SIGKILL in the middle of an apply, a
managed room's security state changed behind the bridge's back, two `sync --apply` processes."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from bridge.config import Config, load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.requests import MEGOLM
from bridge.reconcile.sync import SyncResult, run_sync
from bridge.store import Store, open_store
from tests import dirgen
from tests.conftest import SERVER_NAME, write_bridge_files

pytestmark = pytest.mark.synapse


@dataclasses.dataclass
class Setup:
    synapse: LocalSynapse
    config: Config
    config_path: Path
    store: Store
    api: AppserviceAPI
    source: Path

    async def sync(self, **kw: Any) -> SyncResult:
        return await run_sync(self.config, [str(self.source)], store=self.store, api=self.api, apply=True, **kw)


@pytest_asyncio.fixture
async def own_synapse(tmp_path: Path) -> AsyncIterator[Setup]:
    """A homeserver of this test's own: it is killed and restarted."""
    synapse = LocalSynapse(workdir=tmp_path / "hs", server_name=SERVER_NAME)
    config_path, reg = write_bridge_files(tmp_path / "bridge", hs_url=synapse.url, bridge_port=free_port())
    data = yaml.safe_load(config_path.read_text())
    data["database"]["url"] = f"sqlite:///{tmp_path / 'bridge.db'}"
    config_path.write_text(yaml.safe_dump(data))
    synapse.registrations.append(reg)
    synapse.start()
    uai = f"09{secrets.randbelow(10**5):05d}K"
    source = tmp_path / "school.yaml"
    source.write_text(yaml.safe_dump(dirgen.school(uai, classes=6, pupils=36, teachers=6, seed=7), allow_unicode=True))
    config = load_config(config_path)
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    try:
        yield Setup(synapse, config, config_path, store, api, source)
    finally:
        await api.close()
        await store.close()
        synapse.stop()


async def _assert_rooms_sound(s: Setup, result: SyncResult) -> None:
    """Every managed room encrypted (where the template says), invite-only, history from joining,
    no guests, power levels and members exactly the template's."""
    bot = s.config.bot_user_id
    for key, d in result.plan.desired.items():
        rec = await s.store.get_room(key)
        assert rec is not None, key
        state = {(e["type"], e.get("state_key")): e["content"] for e in await s.api.room_state(rec.room_id, as_user=bot)}
        if d.encrypted:
            assert state.get(("m.room.encryption", "")) == {"algorithm": MEGOLM}, key
        assert state.get(("m.room.join_rules", ""), {}).get("join_rule") == "invite", key
        assert state.get(("m.room.history_visibility", ""), {}).get("history_visibility") == d.history_visibility
        assert state.get(("m.room.guest_access", ""), {}).get("guest_access") == "forbidden", key
        users = {u: lvl for u, lvl in state[("m.room.power_levels", "")].get("users", {}).items() if u != bot}
        assert users == dict(d.power_levels["users"]), key
        members = {k for (t, k), c in state.items() if t == "m.room.member" and c.get("membership") in ("join", "invite")}
        assert members - {bot} == set(d.members), key


async def test_synapse_killed_mid_apply_then_rerun_repairs_every_room(own_synapse: Setup) -> None:
    s = own_synapse
    apply = asyncio.ensure_future(s.sync())
    for _ in range(6000):  # until a few rooms exist: the kill lands in the middle of the apply
        if len(await s.store.all_rooms()) >= 4 or apply.done():
            break
        await asyncio.sleep(0.01)
    assert not apply.done()
    assert s.synapse.process is not None
    s.synapse.process.kill()  # SIGKILL: no clean shutdown, a createRoom may be cut in the middle
    s.synapse.process.wait()
    s.synapse.process = None
    s.synapse.start()
    try:
        first: SyncResult | None = await apply
    except Exception:  # noqa: BLE001 - the interrupted apply may fail as a whole: the re-run must repair
        first = None
    again = await s.sync()
    assert again.report is not None and not again.report.failed, again.report.failed
    assert again.residual is not None and again.residual.is_empty(), again.residual
    await _assert_rooms_sound(s, again)
    final = await run_sync(s.config, [str(s.source)], store=s.store, api=s.api, apply=False)
    assert final.plan.is_empty(), final.plan.summary()
    assert first is None or first.plan.summary().get("create_room", 0) >= 4


async def test_security_state_changed_behind_the_bridge_is_repaired(own_synapse: Setup) -> None:
    """Someone with power opens a class room to the public, its history to the world and to guests,
    and removes its power levels' protection: the next plan says so, and the apply repairs it."""
    s = own_synapse
    first = await s.sync()
    key = next(k for k in first.plan.desired if k.startswith("class:"))
    room = (await s.store.get_room(key)).room_id  # type: ignore[union-attr]
    bot = s.config.bot_user_id
    await s.api.set_state(room, "m.room.join_rules", "", {"join_rule": "public"}, as_user=bot)
    await s.api.set_state(room, "m.room.history_visibility", "", {"history_visibility": "world_readable"}, as_user=bot)
    await s.api.set_state(room, "m.room.guest_access", "", {"guest_access": "can_join"}, as_user=bot)
    planned = await run_sync(s.config, [str(s.source)], store=s.store, api=s.api, apply=False)
    assert {a.event_type for a in planned.plan.actions if a.kind == "set_state"} == {
        "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access"}
    repaired = await s.sync()
    assert repaired.residual is not None and repaired.residual.is_empty()
    await _assert_rooms_sound(s, repaired)


async def test_two_sync_apply_processes_at_once_create_and_invite_once(own_synapse: Setup) -> None:
    """`ent-bridge sync --apply` twice at the same moment (as `run` and an admin would): one waits
    for the other's writer lease; every room is created once, every invite sent once, and each
    room's name and encryption exist before its first invite."""
    s = own_synapse
    cmd = [sys.executable, "-m", "bridge", "-c", str(s.config_path), "sync", str(s.source), "--apply"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-800:] for o in outs]
    created = [r.body for r in await s.store.audit_rows() if '"create_room"' in r.body or '"create_space"' in r.body]
    rooms = await s.store.all_rooms()
    assert len(created) == len(rooms)
    bot = s.config.bot_user_id
    for rec in rooms:
        events = (await s.api.messages(rec.room_id, as_user=bot, limit=1000))["chunk"][::-1]
        invites = [e for e in events if e["type"] == "m.room.member" and e["content"].get("membership") == "invite"]
        assert len(invites) == len({e["state_key"] for e in invites}), rec.room_key  # nobody invited twice
        first_invite = next((i for i, e in enumerate(events) if e in invites), None)
        if first_invite is not None:
            before = {e["type"] for e in events[:first_invite]}
            assert "m.room.name" in before and "m.room.join_rules" in before, rec.room_key
