"""Prometheus metrics, named in the bridge ecosystem's `bridge_` convention; one registry a bridge.

Counters are bumped where things happen (homeserver calls, transactions, syncs, moderation,
sweeps); gauges of the store (inbox backlog, dead letters, managed rooms) are read when scraped,
rooms at most once a minute (a département has 10^5 of them).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
ROOMS_EVERY_S = 60.0
_ID_MARKS = ("!", "@", "#", "$", "%21", "%40", "%23", "%24")


class _Readable(Protocol):
    """What the metrics read of the store (a Protocol: the homeserver adapters, which count their
    calls here, must not depend on the store)."""

    async def inbox_stats(self) -> Any: ...
    async def all_rooms(self) -> list[Any]: ...


def endpoint(path: str) -> str:
    """A bounded label for a client-server path: its fixed words, never an id ('rooms invite')."""
    words = [p for p in path.split("?", 1)[0].split("/")[4:] if p and not p.startswith(_ID_MARKS)]
    return " ".join(words[:2]) or "other"


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.api_calls = Counter("bridge_matrix_api_calls", "Homeserver API calls", ["method"], registry=r)
        self.api_failed = Counter("bridge_matrix_api_calls_failed", "Homeserver API calls that failed (after retries)",
                                  ["method", "errcode"], registry=r)
        self.events = Counter("bridge_matrix_event", "Events received from the homeserver", ["type"], registry=r)
        self.transaction = Histogram("bridge_transaction_seconds", "Time to take a transaction in (stored, acked)",
                                     registry=r, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self.inbox_pending = Gauge("bridge_inbox_pending_events", "Events waiting in the inbox", registry=r)
        self.inbox_oldest = Gauge("bridge_inbox_oldest_pending_seconds", "Age of the oldest waiting event",
                                  registry=r)
        self.dead_letters = Gauge("bridge_dead_letters", "Events given up on (ent-bridge events list --dead)",
                                  registry=r)
        self.rooms = Gauge("bridge_managed_rooms", "Managed rooms", ["template", "state"], registry=r)
        self.sync_seconds = Histogram("bridge_sync_duration_seconds", "Directory syncs, plan and apply", registry=r,
                                      buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600))
        self.actions = Counter("bridge_actions_applied", "Plan actions applied", ["kind"], registry=r)
        self.actions_failed = Counter("bridge_actions_failed", "Plan actions that failed", registry=r)
        self.guard_refusals = Counter("bridge_guard_refusals", "Plans the guards refused", registry=r)
        self.moderation = Counter("bridge_moderation_decisions", "Moderation decisions", ["rule", "action"],
                                  registry=r)
        self.sweeps = Counter("bridge_retention_sweeps", "Retention sweeps", registry=r)
        self.redactions = Counter("bridge_retention_redactions", "Messages removed by retention", registry=r)
        self.loop_lag = Gauge("bridge_event_loop_lag_seconds", "How late the event loop ran a 1 s timer, last time",
                              registry=r)
        self._rooms_read_at = -ROOMS_EVERY_S

    async def render(self, store: _Readable) -> bytes:
        """The exposition text, the store's gauges read now (rooms at most once a minute)."""
        stats = await store.inbox_stats()
        self.inbox_pending.set(stats.pending)
        self.dead_letters.set(stats.dead)
        oldest = stats.oldest_pending_ms
        self.inbox_oldest.set(0 if oldest is None else max(0.0, time.time() - oldest / 1000))
        if time.monotonic() - self._rooms_read_at >= ROOMS_EVERY_S:
            counts: dict[tuple[str, str], int] = {}
            for room in await store.all_rooms():
                key = (room.template, "archived" if room.archived else "active")
                counts[key] = counts.get(key, 0) + 1
            self.rooms.clear()
            for (template, state), n in counts.items():
                self.rooms.labels(template, state).set(n)
            self._rooms_read_at = time.monotonic()
        return generate_latest(self.registry)

    async def watch_loop(self, *, every: float = 1.0) -> None:
        """Measure the event loop's lag until cancelled: a long synchronous step shows here."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(every)
            self.loop_lag.set(max(0.0, loop.time() - start - every))
