"""The module's side of refusals: kept in memory, sent to the bridge in batches, again until it answers.

Why in memory and over HTTP: Synapse mounts the bridge's data read-only and each worker answers
clients on its own; the appservice port is the one channel every deployment already has from
Synapse to the bridge, and the registration carries its address and token. While the bridge is
down, refusals wait here (at most `QUEUE_MAX`; beyond that the oldest are dropped and counted in
Synapse's log, where every refusal is also written), and, with a spool file in Synapse's own data,
across a Synapse restart.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from bridge.access.refusals import BATCH_MAX, PATH, Refusal, parse_one
from bridge.private_files import write_private

log = logging.getLogger("ent_bridge.access")
QUEUE_MAX = 10_000
BACKOFF_MAX_S = 60.0
Put = Callable[[str, dict[str, Any], dict[str, list[str]]], Awaitable[Any]]  # (url, body, headers)


def read_registration(path: Path) -> tuple[str, str] | None:
    """The bridge's (url, hs_token) from its registration file; None when it has no url."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"registration {path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("hs_token"), str):
        raise ValueError(f"registration {path}: no hs_token")
    url = data.get("url")
    return (url.rstrip("/"), data["hs_token"]) if isinstance(url, str) and url else None


class RefusalReporter:
    def __init__(self, url: str, hs_token: str, put: Put, *, now_s: Callable[[], float] = time.monotonic,
                 spool: Path | None = None) -> None:
        """put: the homeserver's HTTP client's PUT (raises on a failure or a non-2xx answer);
        spool: a file of Synapse's own (one per process) that keeps what waits across a restart."""
        self.url, self._headers = url, {"Authorization": [f"Bearer {hs_token}"]}
        self._put, self._now_s = put, now_s
        self.queue: deque[Refusal] = deque(maxlen=QUEUE_MAX)
        self.dropped = 0
        self._sending = False
        self._failures = 0
        self._not_before = 0.0
        self.spool = spool
        if spool is not None:
            self._load(spool)

    def _load(self, spool: Path) -> None:
        """What waited when Synapse stopped (the newest QUEUE_MAX; a torn last line is skipped)."""
        try:
            lines = spool.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        unreadable = 0
        for line in lines[-QUEUE_MAX:]:
            try:
                self.queue.append(parse_one(json.loads(line)))
            except ValueError:  # json's errors are ValueErrors too
                unreadable += 1
        if unreadable:
            log.error("ent-bridge refusals spool %s: %d unreadable line(s) skipped", spool, unreadable)
        if self.queue:
            log.info("ent-bridge refusals spool %s: %d waiting for the bridge", spool, len(self.queue))

    def _keep(self) -> None:
        """The spool rewritten to what still waits (atomically: a crash leaves the old or the new)."""
        if self.spool is None:
            return
        tmp = self.spool.with_name(f".{self.spool.name}.tmp")
        write_private(tmp, "".join(json.dumps(r.to_json()) + "\n" for r in self.queue))  # Matrix ids: 0600
        os.replace(tmp, self.spool)

    def add(self, *, kind: str, sender: str, reason: str, room: str | None = None, target: str | None = None,
            event_type: str | None = None) -> None:
        if len(self.queue) >= QUEUE_MAX:  # the deque drops its oldest
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("ent-bridge refusals not recorded in the bridge's audit (the bridge does not answer): "
                          "%d dropped so far", self.dropped)
        refusal = Refusal(id=secrets.token_hex(16), ts=int(time.time() * 1000), kind=kind, sender=sender,
                          reason=reason, room=room, target=target, event_type=event_type)
        self.queue.append(refusal)
        if self.spool is not None:
            try:
                fd = os.open(self.spool, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(fd, "a", encoding="utf-8") as out:
                    out.write(json.dumps(refusal.to_json()) + "\n")
            except OSError as exc:  # kept in memory all the same
                log.error("ent-bridge refusals spool %s not written: %s", self.spool, exc)

    async def send(self, *, now: bool = False) -> int:
        """Send what waits, a batch at a time, until the queue is empty or the bridge fails to
        answer (then not again before a backoff: 1 s, 2 s … a minute, unless `now`: a new refusal
        tries at once). Returns how many went."""
        if self._sending or not self.queue or (not now and self._now_s() < self._not_before):
            return 0
        self._sending = True
        sent = 0
        try:
            while self.queue:
                batch = [self.queue[n] for n in range(min(BATCH_MAX, len(self.queue)))]
                # The batch's id is its first refusal's: sent again, the same request.
                try:
                    await self._put(f"{self.url}{PATH}{batch[0].id}", {"refusals": [r.to_json() for r in batch]},
                                    self._headers)
                except Exception as exc:  # noqa: BLE001 - kept, sent again after the backoff
                    self._failures += 1
                    self._not_before = self._now_s() + min(BACKOFF_MAX_S, 2.0 ** (self._failures - 1))
                    if self._failures == 1:
                        log.warning("ent-bridge refusals wait for the bridge (%s): %d queued",
                                    type(exc).__name__, len(self.queue))
                    return sent
                ids = {r.id for r in batch}  # meanwhile the queue grew at its end, or dropped its oldest
                while self.queue and self.queue[0].id in ids:
                    self.queue.popleft()
                try:
                    self._keep()
                except OSError as exc:  # what was sent would be sent again: on record once all the same
                    log.error("ent-bridge refusals spool %s not rewritten: %s", self.spool, exc)
                sent += len(batch)
                if self._failures:
                    log.info("ent-bridge refusals reach the bridge again")
                self._failures = 0
        finally:
            self._sending = False
        return sent
