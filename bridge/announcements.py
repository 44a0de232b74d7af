"""Acknowledged announcements: a teacher's or the director's `!annonce …` in a class or school room
asks each family to confirm it read it (a reaction, or a reply such as « lu »). The bridge keeps,
per announcement, who confirmed (never the message), reminds the families that didn't after the
policy's delay, and tells the author how many families confirmed; `!annonces` lists the open ones.
Confirmations are audited and leave with the room's retention."""

from __future__ import annotations

import json
from typing import Any

from bridge.access.snapshot import AccessSnapshot
from bridge.audit import AuditLog
from bridge.clock import Clock
from bridge.logging import get_logger
from bridge.matrix.bot import Bot
from bridge.matrix.received import ReceivedMessage, ReceivedReaction
from bridge.moderation import Moderator
from bridge.people_keys import ANNOUNCEMENTS_KEY as KEY
from bridge.policy.texts import strip_reply_fallback
from bridge.store.base import Store

log = get_logger(component="announcements")
KEEP_MS = 365 * 86_400_000  # when the room's template sets no retention
TEXTS = {"fr": {"ask": "📣 Annonce : merci de confirmer que vous l'avez lue, par une réaction ✅ ou en "
                       "répondant « lu ».",
                "status": "{done}/{total} familles ont confirmé la lecture de l'annonce.",
                "remind": "Rappel : merci de confirmer la lecture de l'annonce ci-dessus (réaction ✅ ou réponse "
                          "« lu »). {who}",
                "none": "Aucune annonce en attente de confirmation dans ce salon.",
                "list": "Annonces en attente : {items}"},
         "en": {"ask": "📣 Announcement: please confirm you read it, with a ✅ reaction or by replying \"read\".",
                "status": "{done}/{total} families confirmed they read the announcement.",
                "remind": "Reminder: please confirm you read the announcement above (✅ or reply \"read\"). {who}",
                "none": "No announcement waiting for confirmations in this room.",
                "list": "Announcements waiting: {items}"}}


def _reply_text(msg: ReceivedMessage) -> str:
    """A reply's own words, its quoted fallback left out."""
    return " ".join(strip_reply_fallback(msg.body).split()).strip(" .!").lower()


class Announcements:
    def __init__(self, *, moderator: Moderator, bot: Bot, store: Store, audit: AuditLog,
                 snapshot: AccessSnapshot | None, clock: Clock, language: str = "fr") -> None:
        self.moderator = moderator
        self.bot = bot
        self.store = store
        self.audit = audit
        self.snapshot = snapshot
        self.clock = clock
        self.texts = TEXTS.get(language, TEXTS["fr"])

    @property
    def policy(self) -> Any:
        return self.moderator.holder.current.policies.announcements

    async def _load(self) -> dict[str, dict[str, Any]]:
        text = await self.store.get_value(KEY)
        return dict(json.loads(text)) if text else {}

    async def _save(self, items: dict[str, dict[str, Any]]) -> None:
        await self.store.set_value(KEY, json.dumps(items, sort_keys=True))

    def _scope(self, room_id: str) -> str | None:
        template = self.moderator.templates.get(self.moderator.room_template.get(room_id, ""))
        return template.scope if template is not None else None

    def families(self, room_id: str) -> list[frozenset[str]]:
        ref = None
        if self.snapshot is not None:
            self.snapshot.refresh()
            ref = self.snapshot.ref_of(room_id)
        return self.snapshot.families(ref) if self.snapshot is not None and ref else []

    def status(self, item: dict[str, Any]) -> tuple[int, int, list[str]]:
        """(families that confirmed, families, guardians of the others)."""
        families = self.families(item["room"])
        confirmed = set(item.get("confirmed", {}))
        done = [f for f in families if f & confirmed]
        waiting = sorted({g for f in families if not f & confirmed for g in f})
        return len(done), len(families), waiting

    async def on_message(self, msg: ReceivedMessage) -> None:
        if not msg.is_new_text:
            return
        if self._scope(msg.room_id) not in ("class", "school"):
            return
        words = msg.body.strip().split(maxsplit=1)
        first = words[0].lower() if words else ""
        if first in (self.policy.marker, "!annonces"):
            if await self.moderator.power(msg.room_id, msg.sender) < 50:
                return  # announcements are the staff's
            await (self._announce(msg) if first == self.policy.marker else self._list(msg.room_id))
            return
        relation = msg.content.get("m.relates_to")
        reply_to = relation.get("m.in_reply_to") if isinstance(relation, dict) else None
        target = reply_to.get("event_id") if isinstance(reply_to, dict) else None
        if isinstance(target, str) and _reply_text(msg) in self.policy.confirm_words:
            await self._confirm(target, msg.room_id, msg.sender)

    async def on_reaction(self, reaction: ReceivedReaction) -> None:
        if reaction.key in self.policy.confirm_reactions:
            await self._confirm(reaction.reacts_to, reaction.room_id, reaction.sender)

    async def _announce(self, msg: ReceivedMessage) -> None:
        items = await self._load()
        if msg.event_id in items:
            return  # the same event again (a resent sync): asked once
        items[msg.event_id] = {"room": msg.room_id, "author": msg.sender, "at": self.clock.now_ms(),
                               "reminded": False, "confirmed": {}}
        # On record before it is kept: a crash between the two leaves no announcement unaudited.
        self.audit.record(actor="ent-bridge", action="announcement_posted", room=msg.room_id, subject=msg.sender,
                          reason="annonce à confirmer", detail={"event_id": msg.event_id},
                          once=f"announcement:{msg.event_id}")
        await self.audit.flush()
        await self._save(items)
        await self.bot.send_notice(msg.room_id, self.texts["ask"],
                                   extra={"m.relates_to": {"m.in_reply_to": {"event_id": msg.event_id}}})

    async def _confirm(self, event_id: str, room_id: str, sender: str) -> None:
        items = await self._load()
        item = items.get(event_id)
        if item is None or item["room"] != room_id or sender in item["confirmed"] or sender == item["author"]:
            return
        item["confirmed"][sender] = self.clock.now_ms()
        self.audit.record(actor="ent-bridge", action="announcement_confirmed", room=room_id, subject=sender,
                          reason="lecture confirmée", detail={"event_id": event_id},
                          once=f"confirmed:{event_id}:{self.audit.pseudonym(sender)}")
        await self.audit.flush()
        await self._save(items)
        log.info("announcement_confirmed", room_id=room_id)

    async def _list(self, room_id: str) -> None:
        items = {e: i for e, i in (await self._load()).items() if i["room"] == room_id}
        if not items:
            await self.bot.send_notice(room_id, self.texts["none"])
            return
        parts = []
        for item in sorted(items.values(), key=lambda i: i["at"]):
            done, total, _ = self.status(item)
            parts.append(f"{done}/{total}")
        await self.bot.send_notice(room_id, self.texts["list"].format(items=", ".join(parts)))

    async def tick(self) -> None:
        """Remind the families that didn't confirm, once, after the policy's delay, and tell the
        author where it stands; forget announcements past their room's retention."""
        items = await self._load()
        now = self.clock.now_ms()
        changed = False
        for event_id, item in sorted(items.items()):
            template = self.moderator.templates.get(self.moderator.room_template.get(item["room"], ""))
            keep = template.retention_ms if template is not None and template.retention_ms else KEEP_MS
            if now - item["at"] > keep:
                del items[event_id]
                changed = True
                continue
            if item["reminded"] or now - item["at"] < self.policy.remind_after_hours * 3_600_000:
                continue
            done, total, waiting = self.status(item)
            item["reminded"] = changed = True
            reply = {"m.relates_to": {"m.in_reply_to": {"event_id": event_id}}}
            if waiting:
                await self.bot.send_notice(item["room"], self.texts["remind"].format(who=" ".join(waiting)),
                                           extra={**reply, "m.mentions": {"user_ids": waiting}})
            await self.bot.send_notice(item["room"], self.texts["status"].format(done=done, total=total),
                                       extra={**reply, "m.mentions": {"user_ids": [item["author"]]}})
            log.info("announcement_reminded", room_id=item["room"], confirmed=done, families=total)
        if changed:
            await self._save(items)
