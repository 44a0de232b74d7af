"""The bridge against Synapse's scale-out deployment: the main process, two event persisters and
an appservice-notifier worker, on PostgreSQL and Redis. A school is synced (the apply's own
membership check passes) and moderation works through it."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
import yaml
from nio import AsyncClient, AsyncClientConfig

from bridge.app import Bridge
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.devserver_workers import APPSERVICE_WORKER, PERSISTERS, LocalSynapseWorkers
from bridge.reconcile.sync import run_sync
from tests.conftest import SERVER_NAME, sync_until, unique_school, write_bridge_files, write_school

pytestmark = pytest.mark.synapse


async def test_sync_and_moderation_through_synapse_workers(tmp_path: Path, fresh_postgres: str) -> None:
    parts = urlsplit(fresh_postgres)  # workers need PostgreSQL
    workdir = Path(tempfile.mkdtemp(prefix="ent-bridge-workers-"))
    synapse = LocalSynapseWorkers(workdir=workdir / "synapse", server_name=SERVER_NAME,
                                  redis_dbid=secrets.randbelow(14) + 1,
                                  postgres_dsn={"user": parts.username or "postgres", "host": parts.hostname,
                                                "port": parts.port or 5432, "database": parts.path[1:]})
    config_path, reg = write_bridge_files(workdir / "bridge", hs_url=synapse.url, bridge_port=free_port())
    synapse.registrations.append(reg)
    synapse.start()
    humans: list[AsyncClient] = []
    bridge = None
    try:
        async def human(who: str) -> AsyncClient:
            password = secrets.token_urlsafe(12)
            synapse.register_user(who, password)
            client = AsyncClient(synapse.url, f"@{who}:{SERVER_NAME}", store_path=str(tmp_path / who),
                                 config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
            (tmp_path / who).mkdir()
            await client.login(password, device_name="phone")
            await client.keys_upload()
            humans.append(client)
            return client

        parent, teacher = await human("parent"), await human("teacher")
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(yaml.safe_dump({"g-anne": parent.user_id, "t-cp": teacher.user_id}))
        base = load_config(config_path)
        config = dataclasses.replace(base, database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                     bot=dataclasses.replace(base.bot, store_dir=tmp_path / "nio"),
                                     identity=dataclasses.replace(base.identity, mapping_file=mapping))
        bridge = await Bridge.create(config)
        await bridge.start()
        school = str(write_school(tmp_path, unique_school(tmp_path)))
        result = await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)
        assert result.report is not None and not result.report.failed
        assert result.residual is not None and result.residual.is_empty()  # the membership check passes
        await bridge.moderator.refresh_rooms()  # type: ignore[union-attr]

        room = next(r.room_id for r in await bridge.store.all_rooms() if r.template == "class" and ":CP:" in r.room_key)
        await sync_until(parent, lambda: room in parent.invited_rooms)
        await parent.join(room)
        await sync_until(parent, lambda: room in parent.rooms)
        await bridge.bot.wait_for_room(room)
        sent = await parent.room_send(room, "m.room.message", {"msgtype": "m.text", "body": "quel c0nnard"},
                                      ignore_unverified_devices=True)

        async def redacted() -> bool:
            ev = await bridge.api.request("GET", f"/_matrix/client/v3/rooms/{quote(room, safe='')}/event/"
                                                 f"{quote(sent.event_id, safe='')}", user_id=config.bot_user_id)
            return not ev.get("content")

        for _ in range(1200):  # a hang guard, not a deadline
            if await redacted():
                break
            await asyncio.sleep(0.1)
        assert await redacted()
        # The writers did the writing: events persisted by the two persisters, none by the main
        # process; the appservice worker delivered the transactions the bridge stored.
        db = await asyncpg.connect(fresh_postgres)
        try:
            writers = {r["instance_name"] for r in await db.fetch("SELECT DISTINCT instance_name FROM events")}
        finally:
            await db.close()
        assert writers and writers <= set(PERSISTERS), writers
        # Transactions reached the bridge, and only the appservice worker sends them.
        delivered = bridge.metrics.registry.get_sample_value("bridge_transaction_seconds_count")
        assert delivered and synapse.workers[APPSERVICE_WORKER].poll() is None
    finally:
        if bridge is not None:
            await bridge.stop()
        for client in humans:
            await client.close()
        synapse.stop()
        shutil.rmtree(workdir, ignore_errors=True)
