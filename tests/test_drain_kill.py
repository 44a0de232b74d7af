"""A bridge killed with SIGKILL in the middle of draining its inbox: after a restart every event is
handled, and each one's effect exists once on Synapse (the request ids derive from the event, as
moderation's do), although some events are handled twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.matrix.appservice_api import AppserviceAPI
from tests.conftest import config_file

pytestmark = pytest.mark.synapse

# A bridge whose event handler has a homeserver effect per event, with a request id derived from
# the event (as moderation's redactions and notices), and which is slow enough to be killed mid-way.
BRIDGE = r"""
import asyncio, hashlib, sys
from bridge.app import Bridge
from bridge.config import load_config

ROOM = sys.argv[2]

async def main():
    config = load_config(sys.argv[1])
    bridge = await Bridge.create(config, with_bot=False)

    async def effect(event):
        if event.get("type") != "fr.ent-bridge.test":
            return
        txn = "effect-" + hashlib.sha256(event["event_id"].encode()).hexdigest()[:24]
        await bridge.api.send_event(ROOM, "m.room.message", {"msgtype": "m.notice", "body": event["event_id"]},
                                    as_user=config.bot_user_id, txn_id=txn)
        print("handled", event["event_id"], flush=True)

    bridge.dispatcher.handlers.append(effect)
    await bridge.start()
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_kill_minus_9_mid_drain_effects_once(homeserver: Any, data_dir: Path, tmp_path: Path) -> None:
    cfg = config_file(homeserver, data_dir)
    config = homeserver.config(data_dir)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    await api.register_user(config.bot.localpart)
    room = await api.create_room(as_user=config.bot_user_id, body={"preset": "private_chat"})

    out = tmp_path / "bridge.out"

    async def start() -> subprocess.Popen[bytes]:
        out.write_text("")
        proc = subprocess.Popen([sys.executable, "-c", BRIDGE, str(cfg), room], stdout=out.open("w"),
                                stderr=subprocess.STDOUT)
        for _ in range(1200):
            if "ready" in out.read_text():
                return proc
            await asyncio.sleep(0.05)
        raise AssertionError("the bridge did not start")

    proc = await start()
    n = 300
    url = f"http://127.0.0.1:{config.appservice.port}/_matrix/app/v1/transactions/"
    async with aiohttp.ClientSession() as http:
        for t in range(0, n, 50):  # six transactions of 50 events, all stored before the kill
            events = [{"type": "fr.ent-bridge.test", "room_id": room, "event_id": f"$drain{i}", "sender": "@x:ent.test",
                       "content": {}} for i in range(t, t + 50)]
            async with http.put(url + f"drain-{t}", json={"events": events},
                                headers={"Authorization": f"Bearer {config.appservice.hs_token}"}) as resp:
                assert resp.status == 200
    for _ in range(1200):  # kill it in the middle of the drain
        if out.read_text().count("handled") >= 40:
            break
        await asyncio.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    handled_before = out.read_text().count("handled")
    assert 40 <= handled_before < n, handled_before
    proc = await start()  # restart: what was not recorded as handled is handled again
    try:
        async def effects() -> list[str]:
            page = await api.messages(room, as_user=config.bot_user_id, limit=1000)
            return [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]

        for _ in range(1200):
            if len(set(await effects())) >= n:
                break
            await asyncio.sleep(0.1)
        bodies = await effects()
        assert sorted(set(bodies)) == sorted(f"$drain{i}" for i in range(n))  # every event handled
        assert len(bodies) == n  # and each effect exists once...
        assert handled_before + out.read_text().count("handled") > n  # ...though some were handled twice
    finally:
        proc.kill()
        proc.wait()
        await api.close()
