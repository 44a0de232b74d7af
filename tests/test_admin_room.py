"""The admin room on a real Synapse: status, commands from admins only, refused plans reported."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from nio import RoomCreateResponse, RoomMessageNotice

from bridge.app import Bridge
from tests.conftest import sync_until, unique_school

pytestmark = pytest.mark.synapse


async def test_admin_room_commands_and_reports(homeserver: Any, data_dir: Path, tmp_path: Path,
                                               humans: Any) -> None:
    admin, other = await humans("it"), await humans("member")
    base = homeserver.config(data_dir)
    bot = base.bot_user_id
    created = await admin.room_create(name="Admin ENT", invite=[bot, other.user_id], initial_state=[
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    assert isinstance(created, RoomCreateResponse)
    room_id = created.room_id
    await sync_until(other, lambda: room_id in other.invited_rooms)
    await other.join(room_id)
    data = unique_school(tmp_path)
    src = tmp_path / "dir.yaml"
    src.write_text(yaml.safe_dump(data, allow_unicode=True))
    config = dataclasses.replace(base, directory_sources=(str(src),), resync_minutes=600, admin_room=room_id,
                                 admins=(admin.user_id,))
    bridge = await Bridge.create(config)
    await bridge.start()
    notices: list[str] = []

    async def on_notice(room: Any, event: Any) -> None:
        if room.room_id == room_id and event.sender == bot:
            notices.append(event.body)

    admin.add_event_callback(on_notice, RoomMessageNotice)

    async def say(who: Any, text: str) -> None:
        await sync_until(who, lambda: room_id in who.rooms and bot in who.rooms[room_id].users)
        await who.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": text},
                            ignore_unverified_devices=True)

    try:
        await sync_until(admin, lambda: room_id in admin.rooms and bot in admin.rooms[room_id].users)
        while bridge.resyncer.runs < 1:
            await asyncio.sleep(0.1)
        await say(admin, "!status")
        await sync_until(admin, lambda: any("salons gérés" in n for n in notices))
        await say(other, "!sync")
        await sync_until(admin, lambda: any("seules les personnes" in n for n in notices))
        data["pupils"] = data["pupils"][:1]  # a truncated export
        src.write_text(yaml.safe_dump(data, allow_unicode=True))
        await say(admin, "!sync")
        await sync_until(admin, lambda: any("REFUSÉE" in n for n in notices))
        await say(admin, "!plan")
        await sync_until(admin, lambda: any(n.startswith("Plan :") and "REFUSÉ" in n for n in notices))
        assert all("connard" not in n for n in notices)
    finally:
        await bridge.stop()
