"""Benchmark (not a test): room provisioning against Synapse with workers (two event persisters,
an appservice worker, PostgreSQL + Redis) compared with the monolith on the same PostgreSQL, on
this box. Prints rooms/s for both and the ratio.

    python bench/bench_workers.py [--rooms 120]
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
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bridge.config import load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.devserver_workers import LocalSynapseWorkers
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile import planner
from bridge.reconcile.executor import RoomExecutor
from bridge.reconcile.inputs import desired_state
from bridge.reconcile.observed import ObservedState
from bridge.store import open_store

NOW = datetime(2026, 11, 30, tzinfo=UTC)
DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def rooms_per_second(synapse: LocalSynapse, workdir: Path, rooms: int) -> float:
    from gen_departement import generate

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import write_bridge_files

    config_path, reg = write_bridge_files(workdir / "bridge", hs_url=synapse.url, bridge_port=free_port())
    synapse.registrations.append(reg)
    synapse.start()
    try:
        config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{workdir / 'b.db'}")
        d = generate(pupils=rooms, guardians=rooms * 2, teachers=max(2, rooms // 10))
        desired, _ = desired_state(config, d, {}, now=NOW)
        family = {k: dataclasses.replace(r, space_key=None) for k, r in desired.rooms.items() if r.template == "family"}
        desired = dataclasses.replace(desired, rooms=family)
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        await api.register_user(config.bot.localpart)
        store = await open_store(config.database_url)
        executor = RoomExecutor(api=api, store=store, bot=config.bot_user_id, server_name=config.homeserver.server_name,
                                concurrency=config.rooms.concurrency)
        plan = planner.plan(desired, ObservedState(), bot=config.bot_user_id)
        start = time.perf_counter()
        report = await executor.apply(plan)
        took = time.perf_counter() - start
        assert not report.failed, report.failed[:3]
        await store.close()
        await api.close()
        return len(family) / took
    finally:
        synapse.stop()


async def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import postgres_database  # the tests' own: a database of its own, dropped after

    ap = argparse.ArgumentParser()
    ap.add_argument("--rooms", type=int, default=120)
    args = ap.parse_args()
    from bridge import logging as blog

    blog.configure(level="warning")
    results = {}
    for label, kind in (("monolith", LocalSynapse), ("workers", LocalSynapseWorkers)):
        async with postgres_database(DSN, "bench") as url:
            with tempfile.TemporaryDirectory() as tmp:
                dsn = {"user": "postgres", "host": "127.0.0.1", "port": 5432, "database": urlsplit(url).path[1:]}
                synapse = kind(workdir=Path(tmp) / "synapse", server_name="ent.test", postgres_dsn=dsn)
                results[label] = await rooms_per_second(synapse, Path(tmp), args.rooms)
    ratio = results["workers"] / results["monolith"]
    print(f"provisioning {args.rooms} encrypted family rooms (8 at a time) on PostgreSQL, this box:")
    print(f"  monolith {results['monolith']:.2f} rooms/s   workers (2 event persisters + appservice worker) "
          f"{results['workers']:.2f} rooms/s   ratio {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
