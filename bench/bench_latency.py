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
from bridge.sync_process import child_sync

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


CLIENT = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, token, seconds, first):
    rtts, n = [], first
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            n += 1
            event = {"type": "m.room.message", "room_id": "!class:ent.test", "event_id": f"$e{n}",
                     "sender": f"@p{n % 1000}:ent.test", "origin_server_ts": int(time.time() * 1000),
                     "content": {"msgtype": "m.text", "body": "Bonjour, Lina sera absente."}}
            t = time.perf_counter()
            async with http.put(f"{url}t{n}", json={"events": [event]},
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
            print(time.time(), (time.perf_counter() - t) * 1000, flush=True)
            await asyncio.sleep(max(0.0, 0.010 - (time.perf_counter() - t)))

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
"""


async def _load(bridge: Bridge, *, seconds: float, first: int, rtts: list[tuple[float, float]]) -> None:
    """One message every 10 ms from another process (as the homeserver is); (wall time, PUT round
    trip in ms) appended to `rtts` as they come."""
    url = f"http://127.0.0.1:{bridge.config.appservice.port}/_matrix/app/v1/transactions/"
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, url, bridge.config.appservice.hs_token,
                                                str(seconds), str(first), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            wall, rtt = line.split()
            rtts.append((float(wall), float(rtt)))
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pupils", type=int, default=15_000)
    ap.add_argument("--switch", type=float, default=None, help="sys.setswitchinterval for the whole run (s)")
    ap.add_argument("--in-process", action="store_true", help="plan on a thread of the bridge (for comparison)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    if args.switch:
        sys.setswitchinterval(args.switch)
    blog.configure(level="warning" if args.verbose else "error")
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
        decided: list[float] = []  # ms from sending (by the client's wall clock) to the decision
        when: list[float] = []

        async def moderated(event: dict[str, Any]) -> None:
            await mod.on_event(event)
            decided.append(time.time() * 1000 - float(event["origin_server_ts"]))
            when.append(time.time())

        bridge.dispatcher.handlers.append(moderated)
        await bridge.start()
        idle: list[tuple[float, float]] = []
        await _load(bridge, seconds=3.0, first=0, rtts=idle)
        await asyncio.sleep(0.5)
        idle_rtt, idle_lat = [r for _, r in idle], list(decided)
        decided.clear()
        when.clear()
        busy: list[tuple[float, float]] = []
        load = asyncio.ensure_future(_load(bridge, seconds=120.0, first=100_000, rtts=busy))
        await asyncio.sleep(0.5)  # the load runs before the re-sync starts
        t0, wall0 = time.perf_counter(), time.time()
        if args.in_process:  # planning on a worker thread of the bridge's own process
            actions = len((await run_sync(config, [str(export)], store=bridge.store, api=bridge.api,
                                          apply=False, offline=True)).plan.actions)
        else:  # as `ent-bridge run` does: a child `ent-bridge sync` process
            actions = sum((await child_sync(config, apply=False, offline=True)).summary.values())
        took, wall1 = time.perf_counter() - t0, time.time()
        await asyncio.sleep(0.5)
        load.cancel()
        try:
            await load
        except asyncio.CancelledError:
            pass
        busy_rtt = [r for wall, r in busy if wall0 <= wall <= wall1 + 0.5]
        busy_lat = list(decided)
        if args.verbose:
            slow = sorted(((lat, at - wall0) for lat, at in zip(decided, when[-len(decided):], strict=True)),
                          reverse=True)[:8]
            print("slowest decisions (ms, s after the re-sync started):", [(round(a), round(b, 2)) for a, b in slow])
        await bridge.stop()
    where = "on a thread of the bridge" if args.in_process else "in a child process, as `run` does"
    print(f"re-sync of {args.pupils} pupils planned {where} in {took:.1f} s: {actions} actions, "
          f"{len(busy_lat)} messages decided meanwhile")
    for name, idle, busy in (("PUT /transactions", idle_rtt, busy_rtt), ("moderation decision", idle_lat, busy_lat)):
        p99 = _p(busy, 0.99)
        print(f"  {name:<20} idle p50 {statistics.median(idle):6.1f} ms p99 {_p(idle, 0.99):6.1f} ms | during re-sync "
              f"p50 {statistics.median(busy):6.1f} ms p99 {p99:6.1f} ms (target <= {TARGET_MS:.0f}, "
              f"ratio {p99 / TARGET_MS:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
