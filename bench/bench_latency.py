"""While a 15,000-pupil re-sync plans, does the bridge keep answering? (target: p99 <= 50 ms)

A running bridge (transaction endpoint, durable inbox, dispatcher, moderation's engine) takes a
steady stream of messages while `run_sync` reads a 15,000-pupil AAF export, computes the desired
rooms and plans (the CPU-heavy part of every re-sync). Measured: the round trip of
`PUT /transactions` and the delay from sending a message to its moderation decision, p50/p99,
idle and during the re-sync. The homeserver is the in-memory fake (only its answers are stubbed).

    python bench/bench_latency.py [--pupils 15000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.gen_departement import generate
from bridge import logging as blog
from bridge.app import Bridge
from bridge.audit import AuditLog
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.directory.importers.aaf_writer import write_export
from bridge.matrix.fake import FakeHomeserver
from bridge.moderation import Moderator
from bridge.reconcile.sync import run_sync
from bridge.registration import write_registration

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 50.0
ROOM = "!class:ent.test"


class _Bot:
    user_id = "@ent-bridge_bot:ent.test"
    client = None

    async def send_notice(self, room_id: str, text: str, *, txn_id: str | None = None) -> str:
        return "$n"


def _config(tmp: Path, export: Path) -> Any:
    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    data["homeserver"].update(url="http://fake.invalid", server_name="ent.test")
    data["appservice"]["port"] = free_port()
    data["policies"]["dir"] = str(ROOT / "policies")
    data["database"]["url"] = f"sqlite:///{tmp / 'bridge.db'}"
    data["bot"]["store_dir"] = str(tmp / "nio")
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    write_registration(config_path=path, out_path=tmp / "registration.yaml", url="http://127.0.0.1:1")
    return dataclasses.replace(load_config(path), directory_sources=(str(export),))


async def _load(bridge: Bridge, http: aiohttp.ClientSession, sent: dict[str, float], *, seconds: float | None,
                until: asyncio.Future[Any] | None) -> list[float]:
    """One message every 10 ms; returns the PUT round trips (ms)."""
    url = f"http://127.0.0.1:{bridge.config.appservice.port}/_matrix/app/v1/transactions/"
    headers = {"Authorization": f"Bearer {bridge.config.appservice.hs_token}"}
    rtts: list[float] = []
    start = time.perf_counter()
    n = len(sent)
    while (until is not None and not until.done()) or (seconds is not None and time.perf_counter() - start < seconds):
        n += 1
        event = {"type": "m.room.message", "room_id": ROOM, "event_id": f"$e{n}", "sender": f"@p{n % 30}:ent.test",
                 "origin_server_ts": 0, "content": {"msgtype": "m.text", "body": "Bonjour, Lina sera absente."}}
        t = time.perf_counter()
        sent[f"$e{n}"] = t
        async with http.put(url + f"t{n}", json={"events": [event]}, headers=headers) as resp:
            assert resp.status == 200
        rtts.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(max(0.0, 0.010 - (time.perf_counter() - t)))
    return rtts


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pupils", type=int, default=15_000)
    args = ap.parse_args()
    blog.configure(level="error")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        export = tmp / "aaf"
        write_export(generate(pupils=args.pupils, guardians=args.pupils * 5 // 3, teachers=args.pupils // 15),
                     export, per_file=20_000, realistic=True)
        config = _config(tmp, export)
        fake = FakeHomeserver(server_name="ent.test", as_token=config.appservice.as_token,
                              sender=config.appservice.sender_localpart)
        bridge = await Bridge.create(dataclasses.replace(config, directory_sources=()), with_bot=False, transport=fake)
        mod = Moderator(policies_dir=config.policies_dir, store=bridge.store, api=bridge.api, bot=_Bot(),  # type: ignore[arg-type]
                        audit=AuditLog(bridge.store, key="k" * 32))
        assert mod.reload() is None
        mod.room_template = {ROOM: "class"}
        sent: dict[str, float] = {}
        decided: list[tuple[str, float]] = []

        async def moderated(event: dict[str, Any]) -> None:
            await mod.on_event(event)
            decided.append((str(event["event_id"]), time.perf_counter()))

        bridge.dispatcher.handlers.append(moderated)
        await bridge.start()
        async with aiohttp.ClientSession() as http:
            idle_rtt = await _load(bridge, http, sent, seconds=3.0, until=None)
            idle_decisions = len(decided)
            t0 = time.perf_counter()
            resync = asyncio.ensure_future(run_sync(config, [str(export)], store=bridge.store, api=bridge.api,
                                                    apply=False))
            busy_rtt = await _load(bridge, http, sent, seconds=None, until=resync)
            took = time.perf_counter() - t0
            result = await resync
            await asyncio.sleep(0.5)
        await bridge.stop()
    lat = [(t - sent[e]) * 1000 for e, t in decided]
    idle_lat, busy_lat = lat[:idle_decisions], lat[idle_decisions:]
    print(f"re-sync of {args.pupils} pupils planned in {took:.1f} s: {len(result.plan.actions)} actions, "
          f"{len(busy_rtt)} messages sent meanwhile")
    for name, idle, busy in (("PUT /transactions", idle_rtt, busy_rtt), ("moderation decision", idle_lat, busy_lat)):
        p99 = _p(busy, 0.99)
        print(f"  {name:<20} idle p50 {statistics.median(idle):6.1f} ms p99 {_p(idle, 0.99):6.1f} ms | during re-sync "
              f"p50 {statistics.median(busy):6.1f} ms p99 {p99:6.1f} ms (target <= {TARGET_MS:.0f}, "
              f"ratio {p99 / TARGET_MS:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
