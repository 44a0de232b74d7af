"""Mutes: a power level below posting until an expiry, kept in the store and lifted on time, also
after a restart. Moderation decides them; this keeps them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from bridge.audit import AuditLog
from bridge.clock import Clock
from bridge.matrix.port import Homeserver
from bridge.policy.memory import ModerationMemory
from bridge.store.base import Store


class Mutes:
    def __init__(self, *, api: Homeserver, store: Store, audit: AuditLog, memory: ModerationMemory, clock: Clock,
                 actor: Callable[[str], str]) -> None:
        """actor: who changes a room's power levels (the bot, or the keyless user of its room)."""
        self.api = api
        self.store = store
        self.audit = audit
        self.memory = memory
        self.clock = clock
        self.actor = actor
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def restore(self) -> None:
        """The mutes set before a restart: remembered, and lifted when they expire."""
        now_ms = self.clock.now_ms()
        for room_id, user_id, until in await self.store.mutes():
            self.memory.remember_mute(room_id, user_id, until_ms=until)
            self._schedule(room_id, user_id, max(0.0, (until - now_ms) / 1000))

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    async def _set_level(self, room_id: str, user_id: str, level: int | None) -> None:
        content = await self.api.get_state(room_id, "m.room.power_levels", as_user=self.actor(room_id))
        users = dict(content.get("users") or {})
        if level is None:
            users.pop(user_id, None)
        else:
            users[user_id] = level
        await self.api.set_state(room_id, "m.room.power_levels", "", {**content, "users": users},
                                 as_user=self.actor(room_id))

    async def mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        """A level below events_default (0): the person reads but can't post until the expiry."""
        await self.store.put_mute(room_id, user_id, until_ms=until_ms)
        await self._set_level(room_id, user_id, -1)
        self.memory.remember_mute(room_id, user_id, until_ms=until_ms)
        self._schedule(room_id, user_id, max(0.0, (until_ms - self.clock.now_ms()) / 1000))

    def _schedule(self, room_id: str, user_id: str, delay: float) -> None:
        async def later() -> None:
            await self.clock.sleep(delay)
            try:
                await self.unmute(room_id, user_id)
            finally:
                self._tasks.pop((room_id, user_id), None)

        old = self._tasks.pop((room_id, user_id), None)
        if old:
            old.cancel()
        self._tasks[(room_id, user_id)] = asyncio.create_task(later())

    async def unmute(self, room_id: str, user_id: str) -> None:
        await self._set_level(room_id, user_id, None)
        self.audit.record(actor="ent-bridge", action="unmute", room=room_id, subject=user_id, reason="mute expired")
        await self.audit.flush()
        await self.store.delete_mute(room_id, user_id)  # last: a crash before it retries the unmute
        self.memory.forget_mute(room_id, user_id)
