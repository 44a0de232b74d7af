"""One writer at a time: the lease a process holds in the store while it plans and applies.

`ent-bridge run` takes it for each sync, a CLI `sync --apply` for its run; a second writer waits
(saying who holds it) or, asked not to wait, refuses. The lease expires unless renewed, so a
writer killed with SIGKILL holds nobody up for longer than the lease's lifetime.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from types import TracebackType
from typing import Self

from bridge.clock import SYSTEM, Clock
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.store.base import Store
from bridge.tasks import cancel_and_wait

WRITER = "writer"
ACTIVE = "active"  # the one `ent-bridge run` that serves; a standby waits for it
log = get_logger(component="lease")


class LeaseHeld(BridgeError):
    """Another process applies right now."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"another ent-bridge process is applying changes ({holder}); "
                         "wait for it, or stop it, then run this again")
        self.holder = holder


def holder_name(role: str) -> str:
    """Who holds a lease, for the people who read the message: role, host and process id; and a
    token, so two syncs of one process (a timer and an admin's !sync) are two holders too."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(2)}"


def _dead_here(holder: str) -> bool:
    """Whether `holder` names a process of this host that is gone."""
    try:
        host, rest = holder.split("@", 1)[1].rsplit(":", 1)
        pid = int(rest.split("/", 1)[0])
    except (IndexError, ValueError):
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


class WriterLease:
    def __init__(self, store: Store, *, holder: str, clock: Clock = SYSTEM, ttl_s: float = 60.0,
                 wait: bool = True, poll_s: float = 1.0, name: str = WRITER) -> None:
        self.name = name
        self.lost = asyncio.Event()  # set when another holder took it while we thought we had it
        self.store = store
        self.holder = holder
        self.clock = clock
        self.ttl_ms = int(ttl_s * 1000)
        self.wait = wait
        self.poll_s = poll_s
        self._renew: asyncio.Task[None] | None = None

    async def _try(self) -> str | None:
        return await self.store.acquire_lease(self.name, self.holder, now_ms=self.clock.now_ms(), ttl_ms=self.ttl_ms)

    async def acquire(self) -> None:
        said = None
        while (other := await self._try()) is not None:
            if _dead_here(other):
                # Its holder was a process of this machine that no longer exists (killed): no need
                # to wait for the lease to expire.
                log.warning("writer_lease_taken_from_dead_process", lease=self.name, holder=other, me=self.holder)
                await self.store.release_lease(self.name, other)
                continue
            if not self.wait:
                raise LeaseHeld(other)
            if other != said:  # once per holder, not once per poll
                log.warning("writer_lease_waiting", lease=self.name, holder=other, me=self.holder)
                said = other
            await self.clock.sleep(self.poll_s)
        self._renew = asyncio.create_task(self._keep(), name="writer-lease")

    async def _keep(self) -> None:
        while True:
            await self.clock.sleep(self.ttl_ms / 3000)
            other = await self._try()
            if other is not None:  # expired while we were stuck (a frozen process): say it loudly
                log.error("writer_lease_lost", lease=self.name, holder=other, me=self.holder)
                self.lost.set()
                return

    async def release(self) -> None:
        await cancel_and_wait(self._renew)
        self._renew = None
        await self.store.release_lease(self.name, self.holder)

    async def __aenter__(self) -> Self:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()
