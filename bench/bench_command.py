"""Benchmark (not a test): the whole `ent-bridge sync --apply` command (start-up, directory
read, observation, apply, verification, audit) against a raw script sending the same writes, on
one local Synapse, for a directory with family, class and school-wide rooms. Prints the time
ratio (target >= 0.9) and requests per room, the bridge's against the raw script's (goal <= 1.1x).

    python bench/bench_command.py [--pupils 40]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import aiohttp

from bridge.config import load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.directory.importers.aaf_writer import write_export
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile import actions as A
from bridge.reconcile import planner
from bridge.reconcile.inputs import desired_state
from bridge.reconcile.observed import ObservedState
from bridge.reconcile.requests import create_room_body
from bridge.reconcile.sync import run_sync
from bridge.store import open_store

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _setup(tmp: Path, synapse: LocalSynapse, tag: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import yaml
    from conftest import write_bridge_files

    cfg, reg = write_bridge_files(tmp / tag, hs_url=synapse.url, bridge_port=free_port(), namespace=f"{tag}-bridge")
    synapse.registrations.append(reg)
    data = yaml.safe_load(cfg.read_text())
    data["database"]["url"] = f"sqlite:///{tmp / tag / 'b.db'}"
    data["bot"]["store_dir"] = str(tmp / tag / "nio")
    cfg.write_text(yaml.safe_dump(data))
    return cfg


async def raw(cfg: Path, export: Path) -> tuple[float, int, int]:
    """The writes a plan for this directory holds, sent as plainly as possible: createRoom with its
    invites (the same folding as the bridge), then one request per remaining action. (seconds,
    requests, rooms)."""
    from bridge.directory.sources import load

    config = load_config(cfg)
    directory, _ = load([str(export)])
    desired, _ = desired_state(config, directory, {}, now=NOW)
    plan = planner.plan(desired, ObservedState(), bot=config.bot_user_id)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    await api.register_user(config.bot.localpart)
    headers = {"Authorization": f"Bearer {config.appservice.as_token}"}
    ids: dict[str, str] = {}
    sem = asyncio.Semaphore(config.rooms.concurrency)
    requests = 0
    start = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        async def post(path: str, body: dict[str, Any], method: str = "POST") -> Any:
            nonlocal requests
            requests += 1
            async with sem, http.request(method, config.homeserver.url + path, json=body, headers=headers,
                                         params={"user_id": config.bot_user_id}) as resp:
                return await resp.json()

        creates = [a for a in plan.actions if isinstance(a, A.CreateRoom)]
        for phase_rooms in ([a for a in creates if a.room.is_space], [a for a in creates if not a.room.is_space]):
            bodies = [(a.room.key, create_room_body(a.room, invite=sorted(a.room.members)[:25])) for a in phase_rooms]
            answers = await asyncio.gather(*(post("/_matrix/client/v3/createRoom", b) for _, b in bodies))
            ids.update({k: r["room_id"] for (k, _), r in zip(bodies, answers, strict=True)})
        rest = []
        for a in plan.actions:
            if isinstance(a, A.Invite) and sorted(plan.desired[a.room_key].members).index(a.user_id) >= 25:
                rest.append(post(f"/_matrix/client/v3/rooms/{ids[a.room_key]}/invite", {"user_id": a.user_id}))
            elif isinstance(a, A.AddToSpace):
                rest.append(post(f"/_matrix/client/v3/rooms/{ids[a.room_key]}/state/m.space.child/{ids[a.child_key]}",
                                 {"via": [config.homeserver.server_name]}, "PUT"))
            elif isinstance(a, A.LinkToSpace):
                rest.append(post(f"/_matrix/client/v3/rooms/{ids[a.room_key]}/state/m.space.parent/{ids[a.space_key]}",
                                 {"via": [config.homeserver.server_name], "canonical": True}, "PUT"))
        await asyncio.gather(*rest)
    took = time.perf_counter() - start
    await api.close()
    return took, requests, len(creates)


def command(cfg: Path, export: Path) -> float:
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "bridge", "-c", str(cfg), "sync", str(export), "--apply"],
                         check=False, capture_output=True, text=True)
    took = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-2000:]
    return took


async def counted(cfg: Path, export: Path) -> tuple[int, int]:
    """The same sync in-process, to count its requests (reads, writes, verification); (requests, rooms)."""
    config = load_config(cfg)
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    result = await run_sync(config, [str(export)], store=store, api=api, apply=True)
    assert result.report is not None and not result.report.failed
    await api.close()
    await store.close()
    return api.request_count, len(result.plan.desired)


async def main() -> None:
    from gen_departement import generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--pupils", type=int, default=40)
    args = ap.parse_args()
    from bridge import logging as blog

    blog.configure(level="error")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        synapse = LocalSynapse(workdir=tmp / "synapse", server_name="ent.test")
        cfgs = {tag: _setup(tmp, synapse, tag) for tag in ("raw", "cmd", "count")}
        synapse.start()
        try:
            exports = {}
            for i, tag in enumerate(("raw", "cmd", "count")):  # a school each: rooms are never shared
                d = generate(pupils=args.pupils, guardians=args.pupils * 5 // 3, teachers=max(3, args.pupils // 10),
                             seed=11 + i)
                exports[tag] = tmp / f"aaf-{tag}"
                write_export(dataclasses.replace(d), exports[tag])
            raw_s, raw_requests, rooms = await raw(cfgs["raw"], exports["raw"])
            cmd_s = command(cfgs["cmd"], exports["cmd"])
            requests, counted_rooms = await counted(cfgs["count"], exports["count"])
        finally:
            synapse.stop()
    print(f"`ent-bridge sync --apply` (the whole command) vs a raw script, {rooms} rooms "
          f"(family, class, school-wide, Space) on one local Synapse:")
    print(f"  command {cmd_s:.1f} s, raw {raw_s:.1f} s: ratio {raw_s / cmd_s:.2f} (target >= 0.90)")
    # Each school is generated with its own seed: per room, each over its own rooms.
    mine, theirs = requests / counted_rooms, raw_requests / rooms
    print(f"  requests per room: bridge {mine:.2f}, raw {theirs:.2f} (ratio {mine / theirs:.2f}, goal <= 1.10)")


if __name__ == "__main__":
    asyncio.run(main())
