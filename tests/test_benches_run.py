"""The moderation benchmarks still run against the code they measure (a renamed bot callback once
broke the encrypted one unnoticed): each, on a few hundred messages, decides what it should."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_decisions  # noqa: E402
import bench_decisions_encrypted  # noqa: E402
import bench_memory  # noqa: E402


async def test_the_encrypted_bench_decrypts_and_moderates_every_message() -> None:
    _took, latencies, audited = await bench_decisions_encrypted.run(300, rate=None)
    assert len(latencies) == 300  # every message reached a decision
    assert audited > 0  # and the corpus's offences were acted on


async def test_the_plaintext_bench_moderates_through_the_transaction_endpoint() -> None:
    sent, _took, latencies, audited, redactions = await bench_decisions.run(seconds=0.5, rate=400)
    assert sent > 0 and len(latencies) == sent
    assert audited > 0 and redactions > 0


def test_the_memory_bench_shows_idle_senders_let_go() -> None:
    held, _pause, _tracked = bench_memory.measure(300, forgetting=True)
    assert held == 1  # the next morning's one sender
    held, _pause, _tracked = bench_memory.measure(300, forgetting=False)
    assert held == 300
