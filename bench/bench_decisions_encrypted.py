"""Moderation decisions per second and their p99 latency for encrypted messages: the bot's Megolm
decryption (matrix-nio, its real crypto store), then the same engine, audit write and actions as
plaintext (redactions, notices, mutes through the real client to the in-memory homeserver).
Targets as for plaintext: >= 2,000 decisions/s, p99 <= 20 ms up to the policy's size limit.

What is not measured: the /sync that brings the events (the homeserver's side), the room keys'
arrival (one Megolm session a room is shared with the bot beforehand and never rotated), and the
encryption of the bot's own notices (sent in clear here: it needs the room's devices).

    python bench/bench_decisions_encrypted.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
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

from bench_decisions import BOT, PER_ROOM, ROOMS, TARGET_P99_MS, TARGET_RATE, corpus, homeserver_with_room, p99, sender
from nio import AsyncClientConfig, MegolmEvent
from nio.crypto import InboundGroupSession, OutboundGroupSession

from bridge import logging as blog
from bridge.audit import AuditLog
from bridge.clock import FixedTime
from bridge.heap import settle
from bridge.matrix.bot import Bot
from bridge.matrix.nio_client import AppserviceNioClient
from bridge.moderation import Moderator
from bridge.store.sqlite import SqliteStore

SENDER_KEY, SIGNING_KEY = "c" * 43, "s" * 43  # the sender device's keys, as its to-device share names them


class _Room:
    def __init__(self, room_id: str) -> None:
        self.room_id = room_id


class BenchBot(Bot):
    """The bridge's bot, its nio client opened on a crypto store offline; its notices go out in
    clear (encrypting them needs the room's devices: not what this measures)."""

    async def send_notice(self, room_id: str, text: str, *, html: str | None = None, txn_id: str | None = None,
                          extra: dict[str, Any] | None = None) -> str:
        return await self.api.send_event(room_id, "m.room.message", {"msgtype": "m.notice", "body": text},
                                         as_user=self.user_id, txn_id=txn_id or f"n{time.perf_counter_ns()}")


def encrypted(contents: list[dict[str, Any]], n: int, sessions: dict[str, OutboundGroupSession]) -> list[MegolmEvent]:
    """The plaintext bench's traffic: 5,000 parents, each writing in their class's room (one
    Megolm session a room, as each room's members share one)."""
    out = []
    for i in range(n):
        room = ROOMS[sender(i) // PER_ROOM]
        session = sessions[room]
        payload = {"type": "m.room.message", "room_id": room, "content": contents[i % len(contents)]}
        out.append(MegolmEvent.from_dict({
            "type": "m.room.encrypted", "event_id": f"$e{i}", "sender": f"@p{sender(i)}:ent.test",
            "origin_server_ts": 0, "room_id": room,
            "content": {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": session.encrypt(json.dumps(payload)),
                        "sender_key": SENDER_KEY, "session_id": session.id, "device_id": "PARENTPHONE"}}))
    return out


async def run(n: int, *, rate: float | None) -> tuple[float, list[float], int]:
    """Decrypt and moderate n messages arriving at `rate` per second (None: all at once);
    (seconds taken, latencies in ms from arrival to decision, decisions audited)."""
    random.seed(7)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "b.db"))
        await store.open()
        _, api = await homeserver_with_room(*ROOMS)
        bot = BenchBot(homeserver_url="http://fake.invalid", user_id=BOT, store_dir=tmp, store_key="k" * 32,
                       display_name="ENT", api=api, as_token="tok", store=store, message_hooks=[])
        client = AppserviceNioClient("http://fake.invalid", BOT, device_id="ENTBOTBENCH", store_path=tmp,
                                     config=AsyncClientConfig(encryption_enabled=True, pickle_key="k" * 32))
        client.restore_login(BOT, "ENTBOTBENCH", "tok")
        bot.client = client
        mod = Moderator(policies_dir=ROOT / "policies", store=store, api=api, bot=bot,
                        audit=AuditLog(store, key="k" * 32), clock=FixedTime(datetime(2026, 12, 1, 11, tzinfo=UTC)))
        await mod.start()
        mod.room_template = dict.fromkeys(ROOMS, "class")
        arrivals: dict[str, float] = {}
        latencies: list[float] = []

        async def timed(msg: Any) -> None:  # the bot hands messages over to rooms' lanes: timed at the decision
            await mod.on_decrypted(msg)
            latencies.append((time.perf_counter() - arrivals.pop(msg.event_id)) * 1000)

        bot.message_hooks.append(timed)
        sessions = {}
        for room in ROOMS:
            session = sessions[room] = OutboundGroupSession()
            session.shared, session.max_messages = True, 10**9
            client.olm.inbound_group_store.add(InboundGroupSession(session.session_key, SIGNING_KEY, SENDER_KEY, room))
        events = encrypted(corpus(mod.policies.profiles["default"].max_chars), n, sessions)
        settle()  # as `ent-bridge run` does once started
        queue: asyncio.Queue[tuple[float, MegolmEvent]] = asyncio.Queue()

        async def arrive() -> None:  # the bot's /sync handing events over, on an absolute schedule
            start = time.perf_counter()
            for i, ev in enumerate(events):
                due = start + (i / rate if rate else 0.0)
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                queue.put_nowait((max(due, start), ev))

        producer = asyncio.ensure_future(arrive())
        start = time.perf_counter()
        for _ in range(n):
            arrived, ev = await queue.get()
            arrivals[ev.event_id] = arrived
            decrypted = client.decrypt_event(ev)  # nio's Megolm decryption, as its sync loop does
            await bot._on_event(_Room(ev.room_id), decrypted)
        await bot.lanes.join()
        took = time.perf_counter() - start
        await producer
        await mod.stop()
        audit = len(await store.audit_rows())
        await store.close()
    return took, latencies, audit


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20_000)
    args = ap.parse_args()
    blog.configure(level="error")
    took, _, audit = await run(args.messages, rate=None)
    rate = args.messages / took
    print(f"encrypted moderation, decryption and actions included: {args.messages} messages in {took:.1f} s, "
          f"{audit} decisions audited")
    print(f"  capacity {rate:,.0f} decisions/s (target >= {TARGET_RATE:,.0f}, ratio {rate / TARGET_RATE:.2f})")
    took, lat, _ = await run(args.messages, rate=TARGET_RATE)
    print(f"  at {TARGET_RATE:,.0f} messages/s arriving: p50 {statistics.median(lat):.1f} ms, p99 {p99(lat):.1f} ms "
          f"(target <= {TARGET_P99_MS:.0f}, ratio {p99(lat) / TARGET_P99_MS:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
