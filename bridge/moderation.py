"""Moderation (imperative shell): runs the pure engine on what the bot decrypts, then acts.

Every decision goes to the audit log with the protection and reason, never the message body.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import defaultdict, deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from bridge.audit import AuditLog
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.bot import Bot, ReceivedMessage
from bridge.policy.engine import QUIET_NOTICE, Decision, Message, evaluate, strike_escalation
from bridge.policy.model import Policies
from bridge.policy.protections.text import compile_words
from bridge.store.base import Store

log = get_logger(component="moderation")
WARN = {"fr": "{user} : votre message a été retiré ({reason}). Merci de respecter la charte.",
        "en": "{user}: your message was removed ({reason}). Please follow the charter."}
MUTED = {"fr": "{user} ne peut plus écrire ici pendant {minutes} min ({reason}).",
         "en": "{user} can't write here for {minutes} min ({reason})."}


class Moderator:
    def __init__(self, *, policies_dir: Path, store: Store, api: AppserviceAPI, bot: Bot, audit: AuditLog,
                 language: str = "fr", clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.policies_dir = policies_dir
        self.store = store
        self.api = api
        self.bot = bot
        self.audit = audit
        self.language = language
        self.clock = clock
        self.templates: dict[str, Any] = {}
        self.policies = Policies({})
        self._words: dict[str, tuple[str, ...]] = {}
        self.room_template: dict[str, str] = {}
        self._recent: dict[tuple[str, str], deque[int]] = defaultdict(lambda: deque(maxlen=200))
        self._strikes: dict[tuple[str, str], list[int]] = defaultdict(list)
        self._quiet_sent: dict[tuple[str, str], int] = {}
        self._unmute_tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.report: Callable[[str], Any] | None = None  # posts to the admin room when set

    # --- policies -------------------------------------------------------------------------------

    def reload(self) -> str | None:
        """Load the policies; on error the previous ones stay in force and the error is returned."""
        from bridge.cli_policy import check_folder

        try:
            templates, policies = check_folder(self.policies_dir)
        except BridgeError as exc:
            log.error("policy_reload_refused", error=str(exc))
            return str(exc)
        self.templates, self.policies = templates, policies
        self._words = {n: compile_words(p.banned_words.words) for n, p in policies.profiles.items()
                       if p.banned_words}
        log.info("policy_loaded", profiles=len(policies.profiles), templates=len(templates))
        return None

    async def refresh_rooms(self) -> None:
        self.room_template = {r.room_id: r.template for r in await self.store.all_rooms() if not r.archived}

    async def start(self) -> None:
        error = self.reload()
        if error:
            raise BridgeError(error)
        await self.refresh_rooms()
        now_ms = int(time.time() * 1000)
        for room_id, user_id, until in await self.store.mutes():  # honoured after a restart
            self._schedule_unmute(room_id, user_id, max(0.0, (until - now_ms) / 1000))

    async def stop(self) -> None:
        for task in self._unmute_tasks.values():
            task.cancel()

    # --- the hook -------------------------------------------------------------------------------

    def _power(self, room_id: str, user_id: str) -> int:
        room = self.bot.client.rooms.get(room_id) if self.bot.client else None
        return int(room.power_levels.get_user_level(user_id)) if room is not None else 0

    async def on_event(self, event: dict[str, Any]) -> None:
        """Dispatcher hook: plaintext messages of unencrypted managed rooms arrive with the
        homeserver's transactions (encrypted ones reach `on_message` once the bot decrypted them)."""
        if event.get("type") != "m.room.message" or event.get("sender") == self.bot.user_id:
            return
        content = event.get("content") or {}
        await self.on_message(ReceivedMessage(str(event.get("room_id")), str(event.get("event_id")),
                                              str(event.get("sender")), str(content.get("body", "")), False,
                                              dict(content)))

    async def on_message(self, msg: ReceivedMessage) -> None:
        template = self.templates.get(self.room_template.get(msg.room_id, ""))
        profile = self.policies.profiles.get(template.moderation or "") if template else None
        if profile is None or not profile.content_inspection:
            return
        now = self.clock()
        now_ms = int(now.timestamp() * 1000)
        recent = self._recent[(msg.room_id, msg.sender)]
        recent.append(now_ms)
        decisions = evaluate(profile, Message(msg.room_id, msg.event_id, msg.sender,
                                              self._power(msg.room_id, msg.sender), msg.content),
                             now=now, recent_ms=list(recent), compiled_words=self._words.get(profile.name))
        if any(d.protection != "quiet_hours" for d in decisions):
            strikes = self._strikes[(msg.room_id, msg.sender)]
            strikes.append(now_ms)
            minutes = strike_escalation(strikes, now_ms, profile)
            if minutes and not any("mute" in d.actions for d in decisions):
                decisions.append(Decision("strikes", ("mute",), "récidive", {"mute_minutes": minutes}))
                strikes.clear()
        for decision in decisions:
            await self._act(msg, decision, now_ms=now_ms)

    async def _act(self, msg: ReceivedMessage, d: Decision, *, now_ms: int) -> None:
        room = quote(msg.room_id, safe="")
        lang = self.language
        for action in d.actions:
            if action == "redact":
                await self.api.request("PUT", f"/_matrix/client/v3/rooms/{room}/redact/"
                                              f"{quote(msg.event_id, safe='')}/{secrets.token_hex(8)}",
                                       user_id=self.bot.user_id, json={"reason": d.reason})
            elif action == "warn":
                await self.bot.send_notice(msg.room_id, WARN.get(lang, WARN["fr"]).format(user=msg.sender,
                                                                                          reason=d.reason))
            elif action == "notice":
                last = self._quiet_sent.get((msg.room_id, msg.sender), 0)
                if now_ms - last < 12 * 3_600_000:
                    continue  # one automatic answer per evening, not one per message
                self._quiet_sent[(msg.room_id, msg.sender)] = now_ms
                await self.bot.send_notice(msg.room_id, f"{msg.sender} : {QUIET_NOTICE.get(lang, QUIET_NOTICE['fr'])}")
            elif action == "mute":
                if (msg.room_id, msg.sender) in self._unmute_tasks:
                    continue  # already muted: the current mute runs its course
                minutes = float(d.detail.get("mute_minutes", 60))
                # Expiries are wall-clock times: they are slept on and survive restarts.
                await self.mute(msg.room_id, msg.sender, until_ms=int(time.time() * 1000) + int(minutes * 60_000))
                await self.bot.send_notice(msg.room_id, MUTED.get(lang, MUTED["fr"]).format(
                    user=msg.sender, minutes=f"{minutes:g}", reason=d.reason))
            elif action == "kick":
                await self.api.kick(msg.room_id, msg.sender, as_user=self.bot.user_id, reason=d.reason)
            elif action == "report":
                log.warning("moderation_report", room_id=msg.room_id, sender=msg.sender, protection=d.protection)
        self.audit.record(actor="ent-bridge", action=f"moderation_{d.protection}", room=msg.room_id,
                          subject=msg.sender, reason=d.reason, detail={"actions": list(d.actions),
                                                                       "event_id": msg.event_id})
        await self.audit.flush()
        log.info("moderation_decision", room_id=msg.room_id, sender=msg.sender, protection=d.protection,
                 actions=list(d.actions))
        if self.report is not None and d.protection != "quiet_hours":
            # Who, where, which rule and what was done; never the message itself.
            await self.report(f"Modération : {msg.sender} dans {msg.room_id} — {d.protection} ({d.reason}) -> "
                              f"{', '.join(d.actions)}")

    # --- mutes ----------------------------------------------------------------------------------

    async def _set_level(self, room_id: str, user_id: str, level: int | None) -> None:
        room = quote(room_id, safe="")
        content = await self.api.request("GET", f"/_matrix/client/v3/rooms/{room}/state/m.room.power_levels/",
                                         user_id=self.bot.user_id)
        users = dict(content.get("users") or {})
        if level is None:
            users.pop(user_id, None)
        else:
            users[user_id] = level
        await self.api.set_state(room_id, "m.room.power_levels", "", {**content, "users": users},
                                 as_user=self.bot.user_id)

    async def mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        """A level below events_default (0): the person reads but can't post until the expiry."""
        await self.store.put_mute(room_id, user_id, until_ms=until_ms)
        await self._set_level(room_id, user_id, -1)
        self._schedule_unmute(room_id, user_id, max(0.0, (until_ms - time.time() * 1000) / 1000))

    def _schedule_unmute(self, room_id: str, user_id: str, delay: float) -> None:
        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.unmute(room_id, user_id)
            finally:
                self._unmute_tasks.pop((room_id, user_id), None)

        old = self._unmute_tasks.pop((room_id, user_id), None)
        if old:
            old.cancel()
        self._unmute_tasks[(room_id, user_id)] = asyncio.create_task(later())

    async def unmute(self, room_id: str, user_id: str) -> None:
        await self._set_level(room_id, user_id, None)
        self.audit.record(actor="ent-bridge", action="unmute", room=room_id, subject=user_id, reason="mute expired")
        await self.audit.flush()
        await self.store.delete_mute(room_id, user_id)  # last: a crash before it retries the unmute
