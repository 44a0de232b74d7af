"""Moderation (imperative shell): runs the pure engine on what the bot decrypts, then acts.

Rooms whose profile says `content_inspection: false` are run by the keyless user: the bot is not
in them and reads nothing. There, only metadata protections apply (who posts, how often, when),
on the encrypted events the homeserver's transactions carry; the bridge's notices are sent by
the keyless user, unencrypted since it holds no keys, and say only who and which rule.
Every decision goes to the audit log with the protection and reason, never the message body.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bridge.access.given import read_with_own_name
from bridge.audit import AuditLog
from bridge.clock import SYSTEM, Clock
from bridge.errors import BridgeError, MForbidden, MNotFound
from bridge.logging import get_logger
from bridge.matrix.bot import Bot
from bridge.matrix.port import Homeserver
from bridge.matrix.received import MESSAGE_TYPES, ReceivedMessage
from bridge.metrics import Metrics
from bridge.moderation_texts import CAUTION, MUTED, OUTSIDER, REPORT, UNREAD, UNREAD_WHY, WARN, WARN_OF, WAVE
from bridge.mutes import Mutes
from bridge.policy.engine import QUIET_NOTICE, Decision, Message, read_content
from bridge.policy.holder import PolicyHolder, PolicySet
from bridge.policy.memory import ModerationMemory
from bridge.policy.model import Policies, Profile
from bridge.policy.protections.text import compile_words
from bridge.policy.protections.text import warm as warm_links
from bridge.policy.shown_state import MEMBER, SHOWN_STATE, room_staff
from bridge.policy.unreadable import unreadable
from bridge.rooms.desired import ROOM_STATE_TYPE
from bridge.rooms.templates import keyless_templates
from bridge.store.base import Store

log = get_logger(component="moderation")
INLINE_CHARS = 2000  # messages shorter than this are read on the event loop (well under a millisecond)


def _weight(content: Any, limit: int) -> int:
    """Characters of text a message carries, counted until `limit`: cheap, and without recursion
    (any nesting a crafted event may have)."""
    total, stack = 0, [content]
    while stack and total < limit:
        value = stack.pop()
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return total


def _txn_id(event_id: str, protection: str, action: str) -> str:
    digest = hashlib.sha256(f"{event_id}\x00{protection}\x00{action}".encode()).hexdigest()[:32]
    return f"entb-mod-{digest}"


class Moderator:
    def __init__(self, *, policies_dir: Path, store: Store, api: Homeserver, bot: Bot, audit: AuditLog,
                 language: str = "fr", keyless: str | None = None, clock: Clock = SYSTEM,
                 report: Callable[[str], Awaitable[None]] | None = None, holder: PolicyHolder | None = None,
                 metrics: Metrics | None = None, rooms_of: Callable[[str], list[str]] | None = None) -> None:
        """rooms_of: the managed rooms a person is entitled to (a wave's mute reaches them all)."""
        self.rooms_of = rooms_of
        """holder: the running bridge's policies in force (its own over `policies_dir` without one)."""
        self.holder = holder or PolicyHolder(policies_dir)
        # Matrix id -> digests of the names the directory gives them (the access snapshot's):
        # a parent's own name is not taken for a title or an insult (bridge/access/given.py).
        self.given: Callable[[str], frozenset[str]] | None = None
        self.metrics = metrics
        self.keyless = keyless
        self._keyless_power: dict[str, dict[str, Any]] = {}  # room id -> power levels (keyless rooms)
        self.store = store
        self.api = api
        self.bot = bot
        self.audit = audit
        self.language = language
        self._clock = clock
        self.templates: dict[str, Any] = {}
        self.policies = Policies({})
        self._words: dict[str, tuple[str, ...]] = {}
        self.room_template: dict[str, str] = {}
        self._keyless_templates: frozenset[str] = frozenset()
        self.room_school: dict[str, str] = {}  # room id -> UAI
        self.reports_room: dict[str, str] = {}  # UAI -> room id of the school's moderators room
        self.memory = ModerationMemory()
        self._unmanaged: dict[str, int] = {}  # room id -> until when it is known not to be managed
        self.mutes = Mutes(api=api, store=store, audit=audit, memory=self.memory, clock=clock, actor=self.actor)
        self.report = report  # posts to the district's admin room, when there is one
        self._engine_thread: ThreadPoolExecutor | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        """A new clock (a test's, or "a sync as of"): the mutes' timers follow it too."""
        self._clock = clock
        self.mutes.clock = clock

    # --- policies -------------------------------------------------------------------------------

    def reload(self) -> str | None:
        """Load the policies; on error the previous ones stay in force and the error is returned."""
        error = self.holder.reload()
        if error:
            log.error("policy_reload_refused", error=error)
            return error
        self.adopt(self.holder.current)
        return None

    def adopt(self, value: PolicySet) -> None:
        """Moderate by these policies from now on (each message is judged by one value)."""
        templates, policies = value.templates, value.policies
        self.templates, self.policies = templates, policies
        self._keyless_templates = keyless_templates(templates, {n: p.content_inspection
                                                                for n, p in policies.profiles.items()})
        self._words = {n: compile_words(p.banned_words.words) for n, p in policies.profiles.items()
                       if p.banned_words}
        log.info("policy_loaded", profiles=len(policies.profiles), templates=len(templates), digest=value.digest)

    async def refresh_rooms(self) -> None:
        from bridge.rooms.desired import school_of_key

        live = [r for r in await self.store.all_rooms() if not r.archived]
        self.room_template = {r.room_id: r.template for r in live}
        self.room_school = {r.room_id: uai for r in live if (uai := school_of_key(r.room_key))}
        self.reports_room = {self.room_school[r.room_id]: r.room_id for r in live if r.room_id in self.room_school
                             and getattr(self.templates.get(r.template), "reports", False)}

    async def report_to_school(self, room_id: str, *, user: str, protection: str, reason: str,
                               actions: list[str], txn_id: str | None = None) -> bool:
        """Tell the moderators of the room's school (their moderators room); False if it has none."""
        target = self.reports_room.get(self.room_school.get(room_id, ""))
        if target is None or target == room_id:
            return False
        room = self.bot.client.rooms.get(room_id) if self.bot.client else None
        label = room.display_name if room is not None else f"{self.room_template.get(room_id, '?')} {room_id}"
        text = REPORT.get(self.language, REPORT["fr"]).format(
            user=user, room=label, protection=protection, reason=reason, actions=", ".join(actions))
        await self.bot.send_notice(target, text, txn_id=txn_id)
        return True

    async def gap_unread(self, room_id: str, read: int, why: str) -> None:
        """The bot could not read back all that a managed room received while the bridge was down
        (the newest `read` were): on record, and the school's moderators are asked to read it."""
        if not await self.is_managed(room_id):
            return
        lang = self.language if self.language in UNREAD else "fr"
        reason = UNREAD_WHY[lang].get(why, why).format(read=read)
        self.audit.record(actor="ent-bridge", action="moderation_unread", room=room_id, reason=reason,
                          detail={"events_read": read, "why": why})
        await self.audit.flush()
        target = self.reports_room.get(self.room_school.get(room_id, ""))
        room = self.bot.client.rooms.get(room_id) if self.bot.client else None
        label = room.display_name if room is not None else f"{self.room_template.get(room_id, '?')} {room_id}"
        if target is not None and target != room_id:
            await self.bot.send_notice(target, UNREAD[lang].format(room=label, reason=reason))
        log.warning("moderation_unread", room_id=room_id, why=why, events_read=read,
                    to_school_moderators=target is not None)

    async def outsider_removed(self, room_id: str, user: str, reason: str) -> None:
        """Say in the room why someone vanished from it, and tell the school's moderators."""
        await self._notice(room_id, OUTSIDER.get(self.language, OUTSIDER["fr"]).format(user=user, reason=reason))
        await self.report_to_school(room_id, user=user, protection="outsiders", reason=reason, actions=["kick"])

    async def start(self) -> None:
        if self.holder.loaded:  # the running bridge loaded its value once, for everyone
            self.adopt(self.holder.current)
        elif error := self.reload():
            raise BridgeError(error)
        warm_links()
        await self.refresh_rooms()
        await self.mutes.restore()  # honoured after a restart

    async def stop(self) -> None:
        self.mutes.stop()
        if self._engine_thread is not None:
            self._engine_thread.shutdown(wait=False)
            self._engine_thread = None

    def _engine(self) -> ThreadPoolExecutor:
        if self._engine_thread is None:
            self._engine_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="moderation-engine")
        return self._engine_thread

    # --- the hook -------------------------------------------------------------------------------

    def profile_of(self, room_id: str) -> Profile | None:
        """The moderation profile of a managed room's template (None: unknown room, or none)."""
        profile: Profile | None = self._profile(room_id)
        return profile

    def _profile(self, room_id: str) -> Any:
        template = self.templates.get(self.room_template.get(room_id, ""))
        return self.policies.profiles.get(template.moderation or "") if template else None

    def keyless_room(self, room_id: str) -> bool:
        return bool(self.keyless) and self.room_template.get(room_id) in self._keyless_templates

    def actor(self, room_id: str) -> str:
        """Who acts in a room: the keyless user in rooms without content inspection, else the bot."""
        return str(self.keyless) if self.keyless_room(room_id) else self.bot.user_id

    async def power(self, room_id: str, user_id: str) -> int:
        """A person's power level in a room the bridge runs."""
        return await self._power(room_id, user_id)

    async def notice(self, room_id: str, text: str) -> None:
        """A notice in the room, from whoever runs it (the bot, or the keyless user)."""
        await self._notice(room_id, text)

    async def _power(self, room_id: str, user_id: str) -> int:
        if self.keyless_room(room_id):
            levels = self._keyless_power.get(room_id)
            if levels is None:  # refreshed whenever the room's power levels change (on_event)
                levels = await self.api.get_state(room_id, "m.room.power_levels", as_user=self.actor(room_id))
                self._keyless_power[room_id] = levels
            return int((levels.get("users") or {}).get(user_id, levels.get("users_default", 0)))
        room = self.bot.client.rooms.get(room_id) if self.bot.client else None
        return int(room.power_levels.get_user_level(user_id)) if room is not None else 0

    async def _notice(self, room_id: str, text: str, *, txn_id: str | None = None) -> None:
        if self.keyless_room(room_id):
            await self.api.send_event(room_id, "m.room.message", {"msgtype": "m.notice", "body": text},
                                      as_user=self.actor(room_id), txn_id=txn_id or secrets.token_hex(8))
        else:
            await self.bot.send_notice(room_id, text, txn_id=txn_id)

    async def on_event(self, event: dict[str, Any]) -> None:
        """Dispatcher hook: plaintext messages of unencrypted managed rooms arrive with the
        homeserver's transactions (encrypted ones reach `on_message` once the bot decrypted them);
        in keyless rooms, encrypted messages are moderated on their metadata alone."""
        etype, room_id = event.get("type"), str(event.get("room_id"))
        if etype == "m.room.power_levels":
            self._keyless_power.pop(room_id, None)
            return
        if event.get("sender") in (self.bot.user_id, self.keyless):
            return
        shown = etype in MESSAGE_TYPES or etype in SHOWN_STATE  # words on screen, whatever the event
        if etype == "m.room.encrypted" or shown:
            await self._learn(room_id)
        if etype == "m.room.encrypted" and self.keyless_room(room_id):
            await self.on_message(ReceivedMessage(room_id, str(event.get("event_id")), str(event.get("sender")),
                                                  "", True, {}))
            return
        if not shown:  # messages, stickers, reactions, polls; names, reasons, topics
            return
        content = dict(event.get("content") or {})  # an object: the homeserver takes no other content
        await self.on_message(ReceivedMessage.of(room_id, str(event.get("event_id")), str(event.get("sender")),
                                                 str(etype), content, decrypted=False))

    async def is_managed(self, room_id: str) -> bool:
        """A room the bridge runs (learnt from its marker the first time it is asked about)."""
        await self._learn(room_id)
        return room_id in self.room_template

    async def _learn(self, room_id: str) -> None:
        """A room this moderator doesn't know yet (created by a sync still running, in another
        process): its template is in its own `fr.ent-bridge.room` state. Rooms without it (not
        managed: a DM with the bot) are remembered as such for ten minutes."""
        if room_id in self.room_template or self._unmanaged.get(room_id, 0) > self.clock.now_ms():
            return
        for user in (self.bot.user_id, self.keyless):
            if not user:
                continue
            try:
                marker = await self.api.get_state(room_id, ROOM_STATE_TYPE, as_user=user)
            except (MForbidden, MNotFound):
                continue
            if isinstance(marker.get("template"), str):
                self.room_template[room_id] = marker["template"]
                log.info("moderation_room_learnt", room_id=room_id, template=marker["template"])
                return
        self._unmanaged[room_id] = self.clock.now_ms() + 600_000

    async def _staff_names(self, room_id: str, exempt_power: int) -> frozenset[str]:
        """The display names of the room's members who are exempt from moderation (its staff, the
        bridge's own users), in the form names are compared in."""
        return room_staff(await self.api.room_state(room_id, as_user=self.actor(room_id)), exempt_power)[1]

    async def on_decrypted(self, msg: ReceivedMessage) -> None:
        """From the bot: only what it decrypted. Plaintext messages come with the homeserver's
        transactions (on_event), durably; the bot's sync sees them too, and must not count twice."""
        if msg.decrypted:
            await self.on_message(msg)

    async def on_message(self, msg: ReceivedMessage) -> None:
        await self._learn(msg.room_id)
        profile = self._profile(msg.room_id)
        if profile is None or (not profile.content_inspection and msg.content and msg.type not in SHOWN_STATE):
            # Content the policy says not to look at is not looked at. Names and topics are no
            # one's private words: the homeserver keeps them in the clear and shows them to all.
            return
        message = Message(msg.room_id, msg.event_id, msg.sender, await self._power(msg.room_id, msg.sender),
                          msg.content, msg.type)
        words = self._words.get(profile.name)
        read = None
        exempt = message.sender_power >= profile.exempt_power  # read by nobody: see evaluate
        staff: frozenset[str] = frozenset()
        if msg.type == MEMBER and not exempt and profile.names and isinstance(msg.content.get("displayname"), str):
            # A new name is held to the names the room's staff show now (a join or a rename: rare).
            staff = await self._staff_names(msg.room_id, profile.exempt_power)
        read_as = functools.partial(read_content, profile, compiled_words=words, kind=msg.type, staff_names=staff)
        own = self.given(msg.sender) if msg.type == MEMBER and not exempt and self.given is not None else None
        # A member's own name (as the directory gives it) is not read as a title or an insult.
        reader = functools.partial(read_with_own_name, read_as, msg.content, msg.sender, own) if own \
            else functools.partial(read_as, msg.content)
        if msg.content and not exempt and _weight(msg.content, INLINE_CHARS) >= INLINE_CHARS:
            # A long message is read on the engine's own thread, so the event loop keeps answering
            # the homeserver and judging other messages meanwhile; a short one (the common case:
            # tens of microseconds) is read here, as the hop to a thread would cost more. Reading
            # depends on nothing but the message: only the judgement below touches the memory.
            read = await asyncio.get_running_loop().run_in_executor(self._engine(), reader)
        elif staff or own:  # read here, with what it is held to (the memory's own reading knows neither)
            read = reader()
        # The memory (counts, strikes) is only touched here, on the event loop, one message at a
        # time: no lock, no await between reading it and updating it.
        outcome = self.memory.judge(profile, message, now=self.clock.now(), compiled_words=words, read=read)
        await self.carry_out(msg, outcome.decisions, mute_until_ms=outcome.mute_until_ms)

    async def on_unreadable(self, msg: ReceivedMessage) -> None:
        """An encrypted message whose key never reached the bot: judged like any message (a flood
        of them mutes, a wave across rooms too), what it says being `undecryptable`."""
        profile = self._profile(msg.room_id)
        if profile is None:
            return
        message = Message(msg.room_id, msg.event_id, msg.sender, await self._power(msg.room_id, msg.sender),
                          msg.content, msg.type)
        outcome = self.memory.judge(profile, message, now=self.clock.now(), read=[unreadable()])
        await self.carry_out(msg, outcome.decisions, mute_until_ms=outcome.mute_until_ms)

    async def carry_out(self, msg: ReceivedMessage, decisions: Sequence[Decision], *,
                        mute_until_ms: int | None = None) -> None:
        """Every decision about the message is on record before anything is done (one write for
        them all): an action that then fails (and is retried with the event) is never an action
        nobody can account for, and the decision handled again (that retry, or after a crash) is
        on record once."""
        for d in decisions:
            self.audit.record(actor="ent-bridge", action=f"moderation_{d.protection}", room=msg.room_id,
                              subject=msg.sender, reason=d.reason, detail={"actions": list(d.actions),
                                                                           "event_id": msg.event_id},
                              once=f"moderation:{msg.event_id}:{d.protection}")
        if decisions:  # a message with nothing to record waits for no one's write
            await self.audit.flush()
        for decision in decisions:
            await self._act(msg, decision, mute_until_ms=mute_until_ms)

    async def _act(self, msg: ReceivedMessage, d: Decision, *, mute_until_ms: int | None) -> None:
        if self.metrics is not None:
            for action in d.actions:
                self.metrics.moderation.labels(d.protection, action).inc()
        lang = self.language
        for action in d.actions:
            # The same event handled again (after a crash) sends the same request ids: the
            # homeserver answers with the first result instead of acting twice.
            txn = _txn_id(msg.event_id, d.protection, action)
            if action == "redact":
                await self.api.redact(msg.room_id, msg.event_id, as_user=self.actor(msg.room_id), reason=d.reason,
                                      txn_id=txn)
            elif action == "warn":
                # Never say "removed" when it wasn't, nor "message" of a reaction or a name.
                texts = WARN_OF.get(msg.type, WARN) if "redact" in d.actions else CAUTION
                await self._notice(msg.room_id, texts.get(lang, texts["fr"]).format(user=msg.sender, reason=d.reason),
                                   txn_id=txn)
            elif action == "notice":  # at most one automatic answer per evening (the memory's rule)
                await self._notice(msg.room_id, f"{msg.sender} : {QUIET_NOTICE.get(lang, QUIET_NOTICE['fr'])}",
                                   txn_id=txn)
            elif action == "mute" and mute_until_ms is not None:
                minutes = float(d.detail.get("mute_minutes", 60))
                wave = bool(d.detail.get("everywhere"))
                # Expiries are wall-clock times: they are slept on and survive restarts.
                for room_id in self._wave_rooms(msg) if wave else [msg.room_id]:
                    await self.mute(room_id, msg.sender, until_ms=mute_until_ms)
                texts = WAVE if wave else MUTED
                await self._notice(msg.room_id, texts.get(lang, texts["fr"]).format(
                    user=msg.sender, minutes=f"{minutes:g}", reason=d.reason), txn_id=txn)
            elif action == "kick":
                await self.api.kick(msg.room_id, msg.sender, as_user=self.actor(msg.room_id), reason=d.reason)
            elif action == "report":
                sent = await self.report_to_school(msg.room_id, user=msg.sender, protection=d.protection,
                                                   reason=d.reason, actions=list(d.actions), txn_id=txn)
                log.warning("moderation_report", room_id=msg.room_id, sender=msg.sender, protection=d.protection,
                            to_school_moderators=sent)
        log.info("moderation_decision", room_id=msg.room_id, sender=msg.sender, protection=d.protection,
                 actions=list(d.actions))
        if self.report is not None and d.protection != "quiet_hours":
            # Who, where, which rule and what was done; never the message itself.
            await self.report(f"Modération : {msg.sender} dans {msg.room_id} — {d.protection} ({d.reason}) -> "
                              f"{', '.join(d.actions)}")

    # --- mutes ----------------------------------------------------------------------------------

    def _wave_rooms(self, msg: ReceivedMessage) -> list[str]:
        """Every managed room of the message's school that the sender is in (or, not knowing who is
        where, every room of that school)."""
        school = self.room_school.get(msg.room_id)
        rooms = self.rooms_of(msg.sender) if self.rooms_of is not None else list(self.room_template)
        same = [r for r in rooms if school is None or self.room_school.get(r) == school]
        return sorted({msg.room_id, *same})

    async def mute(self, room_id: str, user_id: str, *, until_ms: int) -> None:
        await self.mutes.mute(room_id, user_id, until_ms=until_ms)

    async def unmute(self, room_id: str, user_id: str) -> None:
        await self.mutes.unmute(room_id, user_id)
