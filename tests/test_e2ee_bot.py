"""The bot is a real E2EE participant: people decrypt it, it decrypts them, also after a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from nio import RoomMessageNotice, RoomMessageText

from tests.conftest import create_encrypted_room, sync_until

pytestmark = pytest.mark.synapse


async def _join_invite(human: Any, room_id: str) -> None:
    await sync_until(human, lambda: room_id in human.invited_rooms)
    await human.join(room_id)
    await sync_until(human, lambda: room_id in human.rooms)


def _notices(human: Any, room_id: str, store: list[Any]) -> None:
    async def cb(room: Any, event: Any) -> None:
        if room.room_id == room_id:
            store.append(event)

    human.add_event_callback(cb, (RoomMessageNotice, RoomMessageText))


async def _bot_received(bridge: Any) -> list[Any]:
    received: list[Any] = []

    async def hook(msg: Any) -> None:
        received.append(msg)

    bridge.bot.message_hooks.append(hook)
    return received


async def _wait(predicate: Any, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("timeout")


async def test_bot_and_human_decrypt_each_other_and_after_restart(bridge_factory: Any, humans: Any,
                                                                   homeserver: Any) -> None:
    bridge = await bridge_factory()
    parent = await humans("parent")
    room_id = await create_encrypted_room(bridge, name="Classe test", invite=[parent.user_id])
    await _join_invite(parent, room_id)

    # Bot -> human, encrypted.
    got: list[Any] = []
    _notices(parent, room_id, got)
    await bridge.bot.wait_for_room(room_id)
    await _wait(lambda: parent.user_id in bridge.bot.client.rooms[room_id].users)
    await bridge.bot.send_notice(room_id, "Bienvenue dans la classe")
    await sync_until(parent, lambda: any(getattr(e, "body", "") == "Bienvenue dans la classe" for e in got))
    notice = next(e for e in got if e.body == "Bienvenue dans la classe")
    assert notice.decrypted, "the human must have decrypted an encrypted event"
    assert notice.sender == bridge.config.bot_user_id

    # Human -> bot, encrypted, decrypted by the bot's own device.
    received = await _bot_received(bridge)
    await parent.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "Merci !"},
                           ignore_unverified_devices=True)
    await _wait(lambda: any(m.body == "Merci !" for m in received))
    assert all(m.decrypted for m in received)
    device_before = bridge.bot.device_id

    # Restart the bridge on the same store: same device, still decrypts new messages.
    await bridge.stop()
    bridge2 = await bridge_factory()
    assert bridge2.bot.device_id == device_before
    received2 = await _bot_received(bridge2)
    await sync_until(parent, lambda: True)
    await parent.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "Toujours là ?"},
                           ignore_unverified_devices=True)
    await _wait(lambda: any(m.body == "Toujours là ?" for m in received2))
    assert all(m.decrypted for m in received2)
    # And the human still decrypts the restarted bot.
    await bridge2.bot.send_notice(room_id, "Oui")
    await sync_until(parent, lambda: any(getattr(e, "body", "") == "Oui" for e in got))
    assert next(e for e in got if e.body == "Oui").decrypted


async def test_homeserver_delivers_transactions_to_the_bridge(bridge_factory: Any, humans: Any) -> None:
    bridge = await bridge_factory()
    seen: list[dict[str, Any]] = []

    async def record(event: dict[str, Any]) -> None:
        seen.append(event)

    bridge.dispatcher.handlers.append(record)
    teacher = await humans("teacher")
    room_id = await create_encrypted_room(bridge, name="Salle", invite=[teacher.user_id])
    await _join_invite(teacher, room_id)
    await _wait(lambda: any(e.get("type") == "m.room.member" and e.get("state_key") == teacher.user_id
                            and e["content"].get("membership") == "join" for e in seen))
    for _ in range(400):  # handled events leave the inbox together, a moment later (a hang guard)
        if not await bridge.store.pending_events():
            break
        await asyncio.sleep(0.05)
    assert await bridge.store.pending_events() == []
