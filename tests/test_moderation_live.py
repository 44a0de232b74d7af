"""Moderation on a real Synapse, in an encrypted class room, with real E2EE clients."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from nio import RoomMessageNotice

from bridge.app import Bridge
from bridge.reconcile.sync import run_sync
from tests.conftest import sync_until, unique_school, write_school

pytestmark = pytest.mark.synapse
ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).parent / "fixtures"
NOON = datetime(2026, 12, 1, 11, 0, tzinfo=timezone.utc)      # a Tuesday, 12:00 in Paris
EVENING = datetime(2026, 12, 1, 20, 0, tzinfo=timezone.utc)   # 21:00 in Paris


async def _wait(predicate: Any, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError("timeout")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def test_banned_word_flood_quiet_hours_and_exemption(homeserver: Any, data_dir: Path, tmp_path: Path,
                                                           humans: Any) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    mod = (policies / "moderation.yaml").read_text()
    mod = mod.replace("max_messages: 8", "max_messages: 3").replace("mute_minutes: 60\n        action: [mute, warn]",
                                                                     "mute_minutes: 0.03\n        action: [mute, warn]")
    (policies / "moderation.yaml").write_text(mod)
    parent, teacher = await humans("parent"), await humans("teacher")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump({"g-anne": parent.user_id, "t-cp": teacher.user_id}))
    base = homeserver.config(data_dir)
    config = dataclasses.replace(base, policies_dir=policies,
                                 identity=dataclasses.replace(base.identity, mapping_file=mapping))
    school = str(write_school(tmp_path, unique_school(tmp_path)))
    bridge = await Bridge.create(config)
    await bridge.start()
    try:
        result = await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
        await bridge.moderator.refresh_rooms()
        bridge.moderator.clock = lambda: NOON
        cp = next(k for k in result.plan.desired if k.startswith("class:") and ":CP:" in k)
        room_id = (await bridge.store.get_room(cp)).room_id
        for human in (parent, teacher):
            await sync_until(human, lambda h=human: room_id in h.invited_rooms)
            await human.join(room_id)
            await sync_until(human, lambda h=human: room_id in h.rooms)
        notices: list[str] = []

        async def on_notice(room: Any, event: Any) -> None:
            if room.room_id == room_id and event.sender == config.bot_user_id:
                assert event.decrypted
                notices.append(event.body)

        parent.add_event_callback(on_notice, RoomMessageNotice)
        await bridge.bot.wait_for_room(room_id)

        async def send(who: Any, body: str) -> str:
            resp = await who.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                                       ignore_unverified_devices=True)
            return resp.event_id

        async def redacted(event_id: str) -> bool:
            ev = await bridge.api.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/"
                                                 f"{quote(event_id, safe='')}", user_id=config.bot_user_id)
            return not ev.get("content")

        # 1. A guardian's banned word: redacted within 2 s, and an encrypted notice says why.
        rude = await send(parent, "Franchement quel c0nnard ce règlement")
        took = await _wait(lambda: redacted(rude), timeout=5)
        assert took < 2.0
        await sync_until(parent, lambda: any("retiré" in n for n in notices))

        # 2. The teacher (moderator) is exempt.
        own = await send(teacher, "connard, ce mot est interdit aux familles")
        await asyncio.sleep(1.5)
        assert not await redacted(own)

        # 3. Quiet hours, with a controlled clock: an automatic answer, the message stays.
        bridge.moderator.clock = lambda: EVENING
        late = await send(parent, "Bonsoir, Lina a oublié son cahier")
        await sync_until(parent, lambda: any("déconnexion" in n for n in notices))
        assert not await redacted(late)
        bridge.moderator.clock = lambda: NOON

        # 4. Flood: muted (power level below events_default), then unmuted automatically.
        async def level() -> int | None:
            pl = await bridge.api.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state/"
                                                 "m.room.power_levels/", user_id=config.bot_user_id)
            return pl.get("users", {}).get(parent.user_id)

        for i in range(4):
            await send(parent, f"message {i}")

        async def muted() -> bool:
            return await level() == -1

        async def unmuted() -> bool:
            return await level() is None and not await bridge.store.mutes()

        await _wait(muted, timeout=10)
        await _wait(unmuted, timeout=10)
        rows = [r.body for r in await bridge.store.audit_rows()]
        assert any("moderation_banned_words" in b for b in rows) and any("unmute" in b for b in rows)
        assert not any("c0nnard" in b or "cahier" in b for b in rows)  # no message content in the audit
        # The sync does not fight moderation: a muted person is not "repaired".
        assert (await run_sync(config, [school], store=bridge.store, api=bridge.api,
                               apply=False)).plan.is_empty()
    finally:
        await bridge.stop()


async def test_hot_reload_keeps_previous_policy_on_broken_file(homeserver: Any, data_dir: Path,
                                                               tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    config = dataclasses.replace(homeserver.config(data_dir), policies_dir=policies)
    bridge = await Bridge.create(config)
    await bridge.start()
    try:
        assert bridge.policy_watch is not None
        bridge.policy_watch.poll = bridge.policy_watch.settle = 0.05
        words_before = bridge.moderator.policies.profiles["default"].banned_words.words
        path = policies / "moderation.yaml"
        good = path.read_text()
        path.write_text(good.replace("max_messages: 8", "max_messages: [broken"))
        for _ in range(100):
            if bridge.policy_watch.runs >= 1:
                break
            await asyncio.sleep(0.05)
        assert bridge.policy_watch.runs == 1
        assert bridge.moderator.policies.profiles["default"].banned_words.words == words_before  # old one kept
        assert await bridge.reload_policies() is not None  # and the error is reported
        path.write_text(good.replace("words_file: banned-words-fr.txt", "words: [zut]"))
        for _ in range(100):
            if bridge.policy_watch.runs >= 2:
                break
            await asyncio.sleep(0.05)
        assert bridge.moderator.policies.profiles["default"].banned_words.words == ("zut",)
    finally:
        await bridge.stop()
