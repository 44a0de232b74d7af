"""Benchmark (not a test): events per second through the real aiohttp transaction endpoint,
stored in the durable inbox, dispatched, with moderation decisions computed; p99 latency from
the PUT's arrival to the decision. Target >= 2,000 events/s on one core.

    python bench/bench_moderation.py [--events 20000] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp

from bridge import logging as blog
from bridge.appservice.dispatch import Dispatcher
from bridge.appservice.server import AppserviceServer
from bridge.audit import AuditLog
from bridge.devserver import free_port
from bridge.moderation import Moderator
from bridge.policy.engine import Decision
from bridge.store.sqlite import SqliteStore

TARGET = 2000.0
BODIES = ["Bonjour, Lina sera absente demain matin.", "Merci pour la sortie au musée !",
          "Pouvez-vous me rappeler l'heure de la réunion ?", "quel c0nnard", "voir https://evil.example.com",
          "La photo de classe est prête ?", "@room réunion ce soir", "Bonne journée à tous"]


class MeasuredModerator(Moderator):
    """Decisions are computed for real; their effects (homeserver calls) are counted, not sent:
    this measures the bridge, not the homeserver."""

    decided: list[float]

    async def _act(self, msg: Any, d: Decision, *, mute_until_ms: int | None) -> None:
        self.acted += 1

    async def on_message(self, msg: Any) -> None:
        await super().on_message(msg)
        self.latencies.append(time.perf_counter() - self.arrivals[msg.event_id.split("_")[0]])


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    blog.configure(level="error")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # one core, client included
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "b.db"))
        await store.open()

        class _Bot:
            user_id = "@ent-bridge_bot:ent.test"
            client = None

        mod = MeasuredModerator(policies_dir=ROOT / "policies", store=store, api=None, bot=_Bot(),  # type: ignore[arg-type]
                                audit=AuditLog(store, key="k" * 32))
        mod.acted, mod.latencies, mod.arrivals = 0, [], {}
        assert mod.reload() is None
        mod.room_template = {"!class:ent.test": "class"}
        dispatcher = Dispatcher(store, [mod.on_event])
        server = AppserviceServer(hs_token="t" * 32, store=store, on_new_events=dispatcher.notify)
        port = free_port()
        runner = await server.start(host="127.0.0.1", port=port)
        dispatcher.start()
        n_txn = args.events // args.batch
        headers = {"Authorization": "Bearer " + "t" * 32}
        start = time.perf_counter()
        async with aiohttp.ClientSession() as http:
            for t in range(n_txn):
                events = [{"type": "m.room.message", "room_id": "!class:ent.test", "event_id": f"t{t}_{i}",
                           "sender": f"@parent{i % 40}:ent.test", "origin_server_ts": 0,
                           "content": {"msgtype": "m.text", "body": BODIES[(t + i) % len(BODIES)]}}
                          for i in range(args.batch)]
                mod.arrivals[f"t{t}"] = time.perf_counter()
                url = f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/t{t}"
                async with http.put(url, json={"events": events},
                                    headers=headers) as resp:
                    assert resp.status == 200
        while len(mod.latencies) < n_txn * args.batch:
            await asyncio.sleep(0.01)
        took = time.perf_counter() - start
        await dispatcher.stop()
        await runner.cleanup()
        await store.close()
    rate = n_txn * args.batch / took
    lat = sorted(mod.latencies)
    p99 = lat[int(len(lat) * 0.99) - 1]
    print(f"moderation through the transaction endpoint: {n_txn * args.batch} events in {took:.1f} s, "
          f"{mod.acted} decisions acted on")
    print(f"  {rate:,.0f} events/s (target >= {TARGET:,.0f}, ratio {rate / TARGET:.2f}); "
          f"decision latency p50 {statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


if __name__ == "__main__":
    asyncio.run(main())
