"""`ent-bridge run` keeps the rooms in sync: at start, and when the directory files change."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.app import Bridge
from bridge.scheduler import Resyncer, sources_fingerprint
from tests.conftest import unique_school

FIX = Path(__file__).parent / "fixtures"


async def test_resyncer_runs_at_start_on_change_and_survives_errors(tmp_path: Path) -> None:
    src = tmp_path / "dir.yaml"
    src.write_text("a")
    calls: list[int] = []

    async def job() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("bad export")  # logged, the loop goes on

    r = Resyncer(job, sources=[str(src)], interval=3600, poll=0.05, settle=0.05)
    r.start()
    await asyncio.sleep(0.2)
    assert len(calls) == 1
    before = sources_fingerprint([str(src)])
    src.write_text("bb")
    assert sources_fingerprint([str(src)]) != before
    for _ in range(40):
        if len(calls) == 2:
            break
        await asyncio.sleep(0.05)
    await r.stop()
    assert len(calls) == 2


@pytest.mark.synapse
async def test_run_syncs_directory_on_start_and_on_change(homeserver: Any, data_dir: Path, tmp_path: Path) -> None:
    data = unique_school(tmp_path)
    src = tmp_path / "dir.yaml"
    src.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = dataclasses.replace(homeserver.config(data_dir), directory_sources=(str(src),))
    bridge = await Bridge.create(config, with_bot=False)
    await bridge.start()
    try:
        assert bridge.resyncer is not None
        bridge.resyncer.poll = bridge.resyncer.settle = 0.1
        for _ in range(200):
            if bridge.resyncer.runs >= 1:
                break
            await asyncio.sleep(0.1)
        rooms = await bridge.store.all_rooms()
        assert len([r for r in rooms if r.template == "family"]) == 3
        data["pupils"].append({"id": "p-new", "first_name": "Noé", "last_name": "Martin", "classes": ["CP"],
                               "guardians": ["g-anne"]})
        src.write_text(yaml.safe_dump(data, allow_unicode=True))
        for _ in range(200):
            if bridge.resyncer.runs >= 2:
                break
            await asyncio.sleep(0.1)
        assert len([r for r in await bridge.store.all_rooms() if r.template == "family"]) == 4
    finally:
        await bridge.stop()


@pytest.mark.synapse
async def test_outsider_invited_by_a_teacher_is_removed_at_once(homeserver: Any, data_dir: Path, tmp_path: Path,
                                                                humans: Any) -> None:
    from tests.conftest import sync_until

    teacher = await humans("teacher")
    homeserver.synapse.register_user("voisin", "mot-de-passe-voisin")
    stranger = f"@voisin:{homeserver.synapse.server_name}"
    data = unique_school(tmp_path)
    src = tmp_path / "dir.yaml"
    src.write_text(yaml.safe_dump(data, allow_unicode=True))
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"t-cp": teacher.user_id}))
    base = homeserver.config(data_dir)
    config = dataclasses.replace(base, directory_sources=(str(src),), resync_minutes=600,
                                 identity=dataclasses.replace(base.identity, mapping_file=mapping))
    bridge = await Bridge.create(config, with_bot=False)
    await bridge.start()
    try:
        for _ in range(200):
            if bridge.outsiders.entitled:
                break
            await asyncio.sleep(0.1)
        room_id = next(r.room_id for r in await bridge.store.all_rooms() if r.template == "class"
                       and ":CP:" in r.room_key)
        await sync_until(teacher, lambda: room_id in teacher.invited_rooms)
        await teacher.join(room_id)
        await teacher.room_invite(room_id, stranger)
        start = asyncio.get_running_loop().time()

        async def membership() -> str:
            state = await bridge.api.room_state(room_id, as_user=config.bot_user_id)
            return next(e["content"]["membership"] for e in state
                        if e["type"] == "m.room.member" and e["state_key"] == stranger)

        while await membership() == "invite":
            assert asyncio.get_running_loop().time() - start < 10, "outsider still invited"
            await asyncio.sleep(0.1)
        assert await membership() == "leave"
        assert bridge.resyncer.runs == 1  # undone by the event, not by a sync
        for _ in range(50):  # the audit entry is written just after the kick returns
            if any("outsider_removed" in r.body for r in await bridge.store.audit_rows()):
                break
            await asyncio.sleep(0.1)
        assert any("outsider_removed" in r.body for r in await bridge.store.audit_rows())
    finally:
        await bridge.stop()
