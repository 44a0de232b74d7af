"""Retention: rooms carry m.room.retention; the sweeper leaves no message older than the lifetime."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from nio import RoomMessagesResponse

from bridge.audit import AuditLog
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.sync import run_sync
from bridge.retention_sweep import sweep
from bridge.rooms.retention import expired
from bridge.store import open_store
from tests.conftest import sync_until

ROOT = Path(__file__).resolve().parent.parent


def test_expired_selection() -> None:
    events = [
        {"event_id": "$old", "type": "m.room.encrypted", "origin_server_ts": 10, "content": {"ciphertext": "x"}},
        {"event_id": "$new", "type": "m.room.message", "origin_server_ts": 100, "content": {"body": "x"}},
        {"event_id": "$state", "type": "m.room.name", "state_key": "", "origin_server_ts": 1, "content": {"name": "n"}},
        {"event_id": "$gone", "type": "m.room.message", "origin_server_ts": 5, "content": {},
         "unsigned": {"redacted_because": {}}},
        {"event_id": "$red", "type": "m.room.redaction", "origin_server_ts": 5, "content": {}},
    ]
    assert expired(events, cutoff_ms=50) == ["$old"]


@pytest.mark.synapse
async def test_sweep_removes_old_messages_seen_by_a_member(homeserver: Any, data_dir: Path, tmp_path: Path,
                                                            humans: Any) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    text = (policies / "rooms.yaml").read_text().replace("retention: {max_lifetime: 180d}",
                                                         "retention: {max_lifetime: 10s}")
    (policies / "rooms.yaml").write_text(text)
    parent = await humans("parent")
    data = {"schools": [{"uai": "0750009Z", "name": "École R"}], "classes": [{"code": "CP"}],
            "staff": [], "guardians": [{"id": "g1", "first_name": "A", "last_name": "B"}],
            "pupils": [{"id": "p1", "first_name": "C", "last_name": "B", "classes": ["CP"], "guardians": ["g1"]}]}
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump({"g1": parent.user_id}))
    src = tmp_path / "dir.yaml"
    src.write_text(yaml.safe_dump(data))
    base = homeserver.config(data_dir)
    config = dataclasses.replace(base, policies_dir=policies,
                                 identity=dataclasses.replace(base.identity, mapping_file=tmp_path / "mapping.yaml"))
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    try:
        result = await run_sync(config, [str(src)], store=store, api=api, apply=True)
        family_key = next(k for k in result.plan.desired if k.startswith("family:"))
        room_id = (await store.get_room(family_key)).room_id
        state = await api.room_state(room_id, as_user=config.bot_user_id)
        assert next(e for e in state if e["type"] == "m.room.retention")["content"] == {"max_lifetime": 10_000}
        await sync_until(parent, lambda: room_id in parent.invited_rooms)
        await parent.join(room_id)
        await sync_until(parent, lambda: room_id in parent.rooms)
        for i in range(3):
            await parent.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"vieux {i}"},
                                   ignore_unverified_devices=True)
        # A controlled clock: the sweep runs "11 seconds later" instead of waiting.
        audit = AuditLog(store, key=config.audit_key)
        report = await sweep(api, [(family_key, room_id, 10_000)], bot=config.bot_user_id,
                             now_ms=int(time.time() * 1000) + 11_000, audit=audit, batch=2)
        assert report.redacted == 3 and report.remaining == 0
        # What the member sees: none of the old messages still has content.
        msgs = await parent.room_messages(room_id, start="", limit=50)
        assert isinstance(msgs, RoomMessagesResponse)
        leftovers = [e for e in msgs.chunk if getattr(e, "source", {}).get("type") in ("m.room.encrypted", "m.room.message")
                     and e.source.get("content")]
        assert leftovers == []
        assert "retention_sweep" in (await store.audit_rows())[-1].body
        again = await sweep(api, [(family_key, room_id, 10_000)], bot=config.bot_user_id,
                            now_ms=int(time.time() * 1000) + 11_000)
        assert again.redacted == 0 and again.remaining == 0
    finally:
        await api.close()
        await store.close()


@pytest.mark.synapse
def test_retention_sweep_command(homeserver: Any, data_dir: Path) -> None:
    import subprocess
    import sys

    from tests.conftest import config_file

    out = subprocess.run([sys.executable, "-m", "bridge", "-c", str(config_file(homeserver, data_dir)),
                          "retention", "sweep"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "0 rooms swept: 0 messages removed, 0 older than their lifetime still present" in out.stdout
