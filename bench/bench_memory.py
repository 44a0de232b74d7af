"""Moderation's memory over a district's school days: what it holds, and what a full collection of
the garbage collector costs meanwhile (target: nothing held for a sender quiet longer than the
longest rule window; a full collection <= 20 ms at 100,000 senders).

Each of `--senders` parents writes a few messages over a school day, in their class's room, with
the shipped policies; then a quiet night passes and one message arrives. Measured for the memory
as it runs (letting go of idle senders every ten minutes of judged time) and, for comparison,
for one that never lets go (as every sender stayed before). Pure: no store, no homeserver.

    python bench/bench_memory.py [--senders 100000]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.policy import memory as memory_module
from bridge.policy.engine import Message
from bridge.policy.loader import load_policies
from bridge.policy.memory import ModerationMemory
from bridge.policy.protections.text import compile_words

TARGET_GC_MS = 20.0
MORNING = datetime(2026, 12, 1, 7, tzinfo=UTC)  # 8:00 in Paris, a Tuesday
BODIES = ("Bonjour, Léa sera absente demain.", "Merci pour l'information !", "À quelle heure est la sortie ?")


def day(memory: ModerationMemory, senders: int, *, start: datetime) -> None:
    profile = load_policies(ROOT / "policies").profiles["default"]
    words = compile_words(profile.banned_words.words) if profile.banned_words else None
    messages = senders * 3
    step = timedelta(hours=9) / messages  # 8:00 to 17:00
    for n in range(messages):
        who = (n * 7919) % senders  # every parent in turn, rooms interleaved
        msg = Message(f"!class{who // 30}:ent.test", f"$d{start.day}-{n}", f"@parent{who}:ent.test", 0,
                      {"msgtype": "m.text", "body": BODIES[n % len(BODIES)]})
        memory.judge(profile, msg, now=start + n * step, compiled_words=words)


def full_collection_ms() -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        gc.collect()
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def measure(senders: int, *, forgetting: bool) -> tuple[int, float, int]:
    """(senders held after a quiet night, a full collection's ms after the day, tracked objects)."""
    if not forgetting:
        memory_module.FORGET_EVERY_MS = 2 ** 62
    gc.collect()
    gc.freeze()  # as `ent-bridge run` does once started: only what the day built is walked
    before = len(gc.get_objects())
    memory = ModerationMemory()
    day(memory, senders, start=MORNING)
    tracked = len(gc.get_objects()) - before
    pause = full_collection_ms()
    day(memory, 1, start=MORNING + timedelta(days=1))  # the next morning's first message
    held = len(memory._recent)
    gc.unfreeze()
    memory_module.FORGET_EVERY_MS = 10 * 60_000
    return held, pause, tracked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--senders", type=int, default=100_000)
    args = ap.parse_args()
    print(f"moderation memory, {args.senders:,} parents writing 3 messages each over a school day:")
    for forgetting in (True, False):
        held, pause, tracked = measure(args.senders, forgetting=forgetting)
        label = "letting go of idle senders" if forgetting else "never letting go (for comparison)"
        print(f"  {label}: {held:,} senders held the next morning, full collection {pause:.1f} ms "
              f"after the day (target <= {TARGET_GC_MS:.0f}, ratio {pause / TARGET_GC_MS:.2f}), "
              f"{tracked:,} objects tracked by the collector")


if __name__ == "__main__":
    main()
