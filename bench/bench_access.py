"""Benchmark (not a test): the Synapse module's cost with a département's relations loaded.

A synthetic 150,000-pupil département: relations and managed rooms computed as a sync does,
written to the snapshot, opened as the module opens it. Measured: the snapshot's size and write
time; the module's added latency per check, p50/p99 over random people, for what Synapse asks
it (a directory search asks once per result: 10 results by default, up to 50 here; an invite
asks about reach or entitlement; a join, entitlement); the memory the module adds to Synapse.
Targets: p99 <= 5 ms per invite, createRoom or directory search.

    python bench/bench_access.py [--pupils 150000] [--calls 20000]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from bridge.access.links import managed_rooms, relations
from bridge.access.rules import Rules
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.policy.model import AccessPolicy
from bridge.reconcile.inputs import gc_paused, persons
from bridge.rooms.desired import Settings, compute
from bridge.rooms.identity import IdentityRules, map_identities
from bridge.rooms.templates import load_templates

TARGET_MS = 5.0
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def main() -> None:
    from gen_departement import generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--pupils", type=int, default=150_000)
    ap.add_argument("--calls", type=int, default=20_000)
    args = ap.parse_args()
    d = generate(pupils=args.pupils, guardians=int(args.pupils * 5 / 3), teachers=args.pupils // 15)
    settings = Settings(bot_user_id="@ent-bridge_bot:ac.example", key_secret="x" * 32, alias_prefix="ent-bridge_")
    with gc_paused():
        ids = map_identities(persons(d), rules=IdentityRules(server_name="ac.example"), known={}, by_email={})
        desired = compute(d, load_templates(ROOT / "policies"), ids, settings=settings, now=NOW)
        t = time.perf_counter()
        rel = relations(d, ids, AccessPolicy(), secret="x" * 32)
        rooms = managed_rooms(desired.rooms)
        took_rel = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "access.sqlite"
        t = time.perf_counter()
        write_snapshot(path, rel, rooms, {f"!r{i}:ac.example": r.ref for i, r in enumerate(rooms)}, generated_ms=0)
        took_write = time.perf_counter() - t
        size = path.stat().st_size
        before = _rss_mb()
        snap = AccessSnapshot(path)
        snap.refresh()
        rules = Rules(snap, frozenset({settings.bot_user_id}))
        rnd = random.Random(1)
        guardians = [ids[g] for g in d.guardians]
        staff = [ids[s] for s in d.staff]
        everyone = guardians + staff
        by_ref = [(r.ref, sorted(r.members)) for r in rooms if r.members]
        timings: dict[str, list[float]] = {"reach (one directory result, one DM invitee)": [],
                                           "directory search of 10 results": [],
                                           "invite into a managed room": [], "join a managed room": []}
        allowed = 0
        for _ in range(args.calls):
            a, b = rnd.choice(guardians), rnd.choice(everyone)
            t = time.perf_counter()
            allowed += rules.reach(a, b) is None
            timings["reach (one directory result, one DM invitee)"].append(time.perf_counter() - t)
            results = [rnd.choice(everyone) for _ in range(10)]
            t = time.perf_counter()
            for r in results:
                rules.reach(a, r)
            timings["directory search of 10 results"].append(time.perf_counter() - t)
            ref, members = rnd.choice(by_ref)
            who = rnd.choice(members) if rnd.random() < 0.5 else rnd.choice(everyone)
            t = time.perf_counter()
            rules.invite(rnd.choice(staff), who, managed=True, ref=ref)
            timings["invite into a managed room"].append(time.perf_counter() - t)
            t = time.perf_counter()
            rules.join(who, managed=True, ref=ref)
            timings["join a managed room"].append(time.perf_counter() - t)
        added = _rss_mb() - before
        snap.close()
    print(f"access snapshot for {args.pupils} pupils: {len(rel.links):,} links, {len(rooms):,} rooms, "
          f"{sum(len(r.members) for r in rooms):,} entitled memberships; relations in {took_rel:.1f} s, "
          f"written in {took_write:.1f} s, {size / 1e6:.0f} MB on disk")
    print(f"  module memory after {args.calls:,} rounds of checks: +{added:.0f} MB RSS (SQLite's page cache, "
          f"not the snapshot's size); {allowed / args.calls:.1%} of random reaches allowed")
    for name, values in timings.items():
        p99 = _p(values, 0.99) * 1000
        print(f"  {name:<48} p50 {statistics_ms(values):7.3f} ms  p99 {p99:7.3f} ms  "
              f"(target <= {TARGET_MS:g} ms, ratio {p99 / TARGET_MS:.3f})")


def statistics_ms(values: list[float]) -> float:
    return _p(values, 0.5) * 1000


if __name__ == "__main__":
    main()
