"""Benchmarks of the rooms work (not tests). Prints measurements and ratios against targets.

    python bench/bench_rooms.py [--skip-aaf] [--rooms 60]

1. provisioning: the bridge's executor vs a minimal raw script sending the same createRoom
   requests at the same concurrency, on one local Synapse (target: ratio >= 0.9);
2. no-op re-sync of the Ministry's 642-pupil AAF sample after it was applied (target < 5 s,
   zero writes). The apply ends by re-reading the rooms it touched (its verification), so the
   re-syncs read only what changed since: nothing;
3. planning (pure) for a synthetic 150,000-pupil département (target < 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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

from bridge.clock import FixedTime
from bridge.config import load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile import planner
from bridge.reconcile.executor import RoomExecutor
from bridge.reconcile.inputs import desired_state, gc_paused, persons
from bridge.reconcile.observed import ObservedState
from bridge.reconcile.requests import create_room_body
from bridge.reconcile.sync import run_sync
from bridge.rooms.desired import Settings, compute
from bridge.rooms.identity import IdentityRules, map_identities
from bridge.rooms.templates import load_templates
from bridge.store import open_store

NOW = datetime(2026, 11, 29, tzinfo=UTC)
SAMPLES = ROOT.parent / "shared" / "ent-samples" / "aaf-2013-full"


def make_config(workdir: Path, synapse: LocalSynapse) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_bridge_files  # the same files the tests and admins use

    cfg_path, reg = write_bridge_files(workdir, hs_url=synapse.url, bridge_port=free_port())
    synapse.registrations.append(reg)
    config = load_config(cfg_path)
    return dataclasses.replace(config, database_url=f"sqlite:///{workdir / 'bridge.db'}")


async def provisioning(config: Any, rooms: int) -> None:
    from gen_departement import generate

    async def bridge_round(tag: str) -> float:
        d = generate(pupils=rooms, guardians=rooms * 2, teachers=max(2, rooms // 10), seed=len(tag))
        cfg = dataclasses.replace(config, database_url=f"sqlite:///{config.path.parent / (tag + '.db')}")
        desired, _ = desired_state(cfg, d, {}, now=NOW)
        fam = {k: dataclasses.replace(r, space_key=None, alias_localpart=r.alias_localpart + tag)
               for k, r in desired.rooms.items() if r.template == "family"}
        desired = dataclasses.replace(desired, rooms=fam)
        store = await open_store(cfg.database_url)
        ex = RoomExecutor(api=api, store=store, bot=cfg.bot_user_id, server_name=cfg.homeserver.server_name,
                          concurrency=cfg.rooms.concurrency)
        plan = planner.plan(desired, ObservedState(), bot=cfg.bot_user_id)
        t = time.perf_counter()
        report = await ex.apply(plan)
        took = time.perf_counter() - t
        assert not report.failed, report.failed[:3]
        await store.close()
        bodies.extend(create_room_body(r, invite=sorted(r.members)) for r in fam.values())
        return took

    async def raw_round(tag: str, batch: list[dict[str, Any]]) -> float:
        sem = asyncio.Semaphore(config.rooms.concurrency)
        headers = {"Authorization": f"Bearer {config.appservice.as_token}"}
        async with aiohttp.ClientSession() as http:
            async def one(body: dict[str, Any]) -> None:
                body = {**body, "room_alias_name": body["room_alias_name"] + "r" + tag}
                async with sem:
                    async with http.post(f"{config.homeserver.url}/_matrix/client/v3/createRoom",
                                         params={"user_id": config.bot_user_id}, json=body,
                                         headers=headers) as resp:
                        assert resp.status == 200, await resp.text()

            t = time.perf_counter()
            await asyncio.gather(*(one(b) for b in batch))
            return time.perf_counter() - t

    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    await api.register_user(config.bot.localpart)
    bodies: list[dict[str, Any]] = []
    bridge_times, raw_times = [], []
    for i in range(2):  # alternate, keep the best of each: the homeserver warms up as it goes
        start = len(bodies)
        bridge_times.append(await bridge_round(f"b{i}"))
        raw_times.append(await raw_round(f"{i}", bodies[start:]))
    n = len(bodies) // 2
    b, r = min(bridge_times), min(raw_times)
    print(f"provisioning: {n} encrypted rooms a round, {sum(len(x['invite']) for x in bodies) // 2} invites, "
          f"concurrency {config.rooms.concurrency}, identical createRoom bodies")
    print(f"  bridge {n / b:6.2f} rooms/s   raw {n / r:6.2f} rooms/s   ratio {r / b:.2f} (target >= 0.90)")
    await api.close()


async def noop_resync(config: Any) -> None:
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    cfg = dataclasses.replace(config, rooms=dataclasses.replace(config.rooms, concurrency=8))
    t = time.perf_counter()
    first = await run_sync(cfg, [str(SAMPLES)], store=store, api=api, apply=True, clock=FixedTime(NOW))
    print(f"AAF sample first apply: {len(first.plan.actions)} actions in {time.perf_counter() - t:.0f} s "
          f"(verification included: {len(first.residual.actions) if first.residual else '?'} actions left)")
    for attempt in ("right after the apply", "again"):
        writes = api.write_count
        t = time.perf_counter()
        again = await run_sync(cfg, [str(SAMPLES)], store=store, api=api, apply=True, clock=FixedTime(NOW))
        took = time.perf_counter() - t
        print(f"no-op re-sync of the AAF sample ({attempt}): {took:.2f} s (target < 5 s, ratio {took / 5:.2f}), "
              f"{len(again.plan.actions)} actions, {api.write_count - writes} writes (target 0), "
              f"{again.observed.read if again.observed else '?'} of {len(again.plan.desired)} rooms read")
    await api.close()
    await store.close()


def planning(pupils: int) -> None:
    from gen_departement import generate

    d = generate(pupils=pupils, guardians=int(pupils * 5 / 3), teachers=pupils // 15)
    t = time.perf_counter()
    with gc_paused():  # as run_sync does
        ids = map_identities(persons(d), rules=IdentityRules(server_name="ac.example"), known={}, by_email={})
        settings = Settings(bot_user_id="@ent-bridge_bot:ac.example", key_secret="x" * 32,
                            alias_prefix="ent-bridge_")
        desired = compute(d, load_templates(ROOT / "policies"), ids, settings=settings, now=NOW)
        plan = planner.plan(desired, ObservedState(), bot=settings.bot_user_id)
    took = time.perf_counter() - t
    print(f"planning {pupils} pupils: {len(desired.rooms)} rooms, {len(plan.actions)} actions in {took:.1f} s "
          f"(target < 30 s, ratio {took / 30:.2f})")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=60)
    ap.add_argument("--pupils", type=int, default=150_000)
    ap.add_argument("--skip-aaf", action="store_true")
    ap.add_argument("--only-planning", action="store_true")
    args = ap.parse_args()
    from bridge import logging as blog

    blog.configure(level="warning")
    planning(args.pupils)
    if args.only_planning:
        return
    with tempfile.TemporaryDirectory() as tmp:
        synapse = LocalSynapse(workdir=Path(tmp) / "synapse", server_name="ent.test")
        config = make_config(Path(tmp), synapse)
        synapse.start()
        try:
            await provisioning(config, args.rooms)
            if not args.skip_aaf and SAMPLES.is_dir():
                config2 = dataclasses.replace(config, database_url=f"sqlite:///{Path(tmp) / 'aaf.db'}")
                await noop_resync(config2)
        finally:
            synapse.stop()


if __name__ == "__main__":
    asyncio.run(main())
