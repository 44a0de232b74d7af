"""Moderation decisions per second and their p99 latency through the whole plaintext path, actions
included (target: >= 2,000 decisions/s, p99 <= 20 ms for messages up to the size limit).

Plaintext messages come as the homeserver sends them: PUT /transactions from another process, one
in flight at a time with every event queued meanwhile (at most 100), as Synapse's appservice
sender does; then the durable inbox, the dispatcher, the engine, the audit write, and the actions
(redactions, notices, mutes) sent through the real client to the in-memory homeserver: only the
homeserver's answers are stubbed. The corpus mixes ordinary messages with worst cases: disguised
insults, HTML, edits, malformed content, messages just under the policy's size limit.

Three runs: one offering more than it can take (its decisions per second are the capacity), one
offering the target rate (its latencies from each event's due time, queueing included, in the
load client as in the bridge), and the same rate with each class room's messages in bursts. The
load client writes events on an absolute schedule, so the offered rate holds whatever each
request costs. Encrypted messages (the bot's Megolm decryption before the same engine):
bench/bench_decisions_encrypted.py.

    python bench/bench_decisions.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge import logging as blog
from bridge.appservice.dispatch import Dispatcher
from bridge.appservice.server import AppserviceServer
from bridge.audit import AuditLog
from bridge.clock import FixedTime
from bridge.devserver import free_port
from bridge.heap import settle
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.moderation import Moderator
from bridge.store.sqlite import SqliteStore

TARGET_RATE, TARGET_P99_MS = 2000.0, 20.0
BOT = "@ent-bridge_bot:ent.test"
# 5,000 parents in class rooms of 50, as in a school district: a mute then edits a room's power
# levels of a class's size. (All of them in one room made each mute copy a power-level event of
# thousands of users inside the in-memory homeserver, a cost of the stub that grew with the run,
# and an event Synapse would refuse past 64 KB.)
SENDERS, PER_ROOM = 5000, 50
ROOMS = [f"!class{i}:ent.test" for i in range(SENDERS // PER_ROOM)]
# The n-th message's sender is n * STRIDE mod 5,000 (their room: their class's). Each parent writes
# once in 2.5 s at 2,000/s, and one message follows another in a different room, as a district's
# traffic does. STRIDE 1 sends a class's 50 parents' messages in a row into their room instead: a
# room's burst, whose messages are handled one after the other (their order is the room's).
STRIDE, BURSTS = 1237, 1


def sender(n: int, stride: int = STRIDE) -> int:
    return n * stride % SENDERS


def corpus(max_chars: int) -> list[dict[str, Any]]:
    ordinary: list[dict[str, Any]] = [{"msgtype": "m.text", "body": b} for b in (
        "Bonjour, Lina sera absente demain matin.", "Merci pour la sortie au musée !",
        "Pouvez-vous me rappeler l'heure de la réunion ?", "La photo de classe est prête ?")]
    worst: list[dict[str, Any]] = [
        {"msgtype": "m.text", "body": "quel con\u200bnаrd"},
        {"msgtype": "m.text", "body": "x", "format": "org.matrix.custom.html",
         "formatted_body": "<p>" + "<b>ok</b> " * 500 + '<a href="https://evil.ru">ici</a></p>'},
        {"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": "c o n n a r d"}},
        {"msgtype": "m.text", "body": "salut", "m.mentions": "x"},
        {"msgtype": "m.text", "body": ("a." * (max_chars // 2))[: max_chars - 10]},  # just under the limit
        {"msgtype": "m.text", "body": "b" * (max_chars - 10)},
    ]
    return ordinary * 9 + worst  # about 14 % worst cases


CLIENT = r"""
import asyncio, json, sys, time, random
import aiohttp

async def main(url, token, seconds, rate, corpus_json, stride):
    # As Synapse's appservice sender: one transaction in flight at a time, carrying every event
    # queued meanwhile (at most 100). Events are written on an absolute schedule, each stamped
    # with the time it was due: a slow answer makes the next transaction larger, not the rate lower.
    bodies = json.loads(corpus_json)
    queued, written, done = [], [0], asyncio.Event()
    wake = asyncio.Event()

    async def write():
        start = time.time()
        while time.time() - start < seconds:
            due = int((time.time() - start) * rate)
            while written[0] < due:
                written[0] += 1
                n = written[0]
                s = n * stride % 5000  # the n-th message's sender (bench_decisions.sender); their class's room
                queued.append({"type": "m.room.message", "room_id": f"!class{s // 50}:ent.test",
                               "event_id": f"$e{n}", "sender": f"@p{s}:ent.test",
                               "origin_server_ts": int((start + n / rate) * 1000), "content": random.choice(bodies)})
            wake.set()
            await asyncio.sleep(0.002)
        done.set()
        wake.set()

    writer = asyncio.ensure_future(write())
    async with aiohttp.ClientSession() as http:
        txn = 0
        while not (done.is_set() and not queued):
            if not queued:
                wake.clear()
                await wake.wait()
                continue
            batch = queued[:100]
            del queued[:100]
            txn += 1
            async with http.put(f"{url}t{txn}", json={"events": batch},
                                headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
    await writer
    print(written[0])

asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], int(sys.argv[6])))
"""


class _Bot:
    user_id = BOT
    client = None

    async def send_notice(self, room_id: str, text: str, *, txn_id: str | None = None) -> str:
        return "$n"


async def homeserver_with_room(*room_ids: str) -> tuple[FakeHomeserver, AppserviceAPI]:
    """The in-memory homeserver (only its answers are stubbed), the bot registered, and rooms of
    the bot's under the ids the benchmark's messages carry."""
    fake = FakeHomeserver(as_token="tok")
    api = AppserviceAPI(as_token="tok", transport=fake)
    await api.register_user("ent-bridge_bot")
    for room_id in room_ids:
        made = await api.create_room(as_user=BOT, body={"preset": "private_chat"})
        fake.store.rooms[room_id] = fake.store.rooms.pop(made)
        fake.store.rooms[room_id].room_id = room_id
    return fake, api


async def run(*, seconds: float, rate: float, stride: int = STRIDE) -> tuple[int, float, list[float], int, int]:
    """Offer `rate` messages/s for `seconds`, senders as `sender(n, stride)` says; (sent, time to
    decide them all, latencies in ms, decisions audited, redactions sent)."""
    import json

    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "b.db"))
        await store.open()
        fake, api = await homeserver_with_room(*ROOMS)
        # A weekday noon in Paris: outside quiet hours (at night every message would get an answer).
        mod = Moderator(policies_dir=ROOT / "policies", store=store, api=api, bot=_Bot(),  # type: ignore[arg-type]
                        audit=AuditLog(store, key="k" * 32), clock=FixedTime(datetime(2026, 12, 1, 11, tzinfo=UTC)))
        await mod.start()
        mod.room_template = dict.fromkeys(ROOMS, "class")
        max_chars = mod.policies.profiles["default"].max_chars
        latencies: list[float] = []
        decided: list[int] = [0]

        async def timed(event: dict[str, Any]) -> None:
            await mod.on_event(event)
            latencies.append(time.time() * 1000 - float(event["origin_server_ts"]))
            decided[0] += 1

        dispatcher = Dispatcher(store, [timed])
        server = AppserviceServer(hs_token="h" * 32, store=store, on_new_events=dispatcher.notify)
        port = free_port()
        runner = await server.start(host="127.0.0.1", port=port)
        dispatcher.start()
        settle()  # as `ent-bridge run` does once started
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}/_matrix/app/v1/transactions/", "h" * 32,
            str(seconds), str(rate), json.dumps(corpus(max_chars)), str(stride), stdout=asyncio.subprocess.PIPE)
        start = time.perf_counter()
        out, _ = await proc.communicate()
        sent = int(out)
        while decided[0] < sent:
            await asyncio.sleep(0.05)
        took = time.perf_counter() - start
        await dispatcher.stop()
        await runner.cleanup()
        await mod.stop()
        audit = len(await store.audit_rows())
        await store.close()
    redactions = sum(1 for r in ROOMS for e in fake.store.rooms[r].timeline if e["type"] == "m.room.redaction")
    return sent, took, latencies, audit, redactions


def p99(values: list[float]) -> float:
    return sorted(values)[int(len(values) * 0.99) - 1]


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    blog.configure(level="error")
    # Capacity: more is offered than can be taken, so what is decided per second is the ceiling.
    sent, took, _, audit, redactions = await run(seconds=args.seconds, rate=2.5 * TARGET_RATE)
    rate = sent / took
    print(f"plaintext moderation, actions included: {sent} messages in {took:.1f} s, {audit} decisions audited, "
          f"{redactions} redactions sent")
    print(f"  capacity {rate:,.0f} decisions/s (target >= {TARGET_RATE:,.0f}, ratio {rate / TARGET_RATE:.2f})")
    # Latency at the target rate: from the homeserver's send to the decision, queueing included.
    sent, took, lat, _, _ = await run(seconds=args.seconds, rate=TARGET_RATE)
    print(f"  at {sent / took:,.0f} messages/s offered: p50 {statistics.median(lat):.1f} ms, p99 {p99(lat):.1f} ms "
          f"(target <= {TARGET_P99_MS:.0f}, ratio {p99(lat) / TARGET_P99_MS:.2f})")
    sent, took, lat, _, _ = await run(seconds=args.seconds, rate=TARGET_RATE, stride=BURSTS)
    print(f"  the same, rooms in bursts (a class's 50 parents in a row): p50 {statistics.median(lat):.1f} ms, "
          f"p99 {p99(lat):.1f} ms (ratio {p99(lat) / TARGET_P99_MS:.2f})")
    print("  encrypted messages (the bot's decryption first): bench/bench_decisions_encrypted.py")


if __name__ == "__main__":
    asyncio.run(main())
