"""A school-wide pause: `!pause [raison]` in the school's moderators room makes every room of the
school read-only for all but the staff `access.pause_writers` names; `!reprise` puts back exactly
the power levels each room had. The director (power 100 there) or a listed admin gives them.

The previous power levels are stored before anything changes: a crash mid-pause is undone by
`!reprise`, and a restart changes nothing. Syncs read the pauses and keep the rooms paused.
"""

from __future__ import annotations

from typing import Any

from bridge.audit import AuditLog
from bridge.clock import Clock
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.matrix.received import ReceivedMessage
from bridge.moderation import Moderator
from bridge.policy.model import PAUSE_WRITERS
from bridge.rooms.pauses import PAUSES_KEY, decode, encode
from bridge.store.base import Store

log = get_logger(component="pause")
TEXTS = {
    "fr": {"paused": "La messagerie de l'établissement est en pause{reason}. Seule l'équipe peut écrire pour le "
                     "moment.",
           "resumed": "La messagerie de l'établissement a repris.",
           "done_pause": "Pause : {n} salons en lecture seule.", "done_resume": "Reprise : {n} salons rouverts.",
           "already": "La messagerie de l'établissement est déjà en pause (!reprise pour la rouvrir).",
           "not_paused": "La messagerie de l'établissement n'est pas en pause.",
           "refused": "{user} : seuls la direction et les administrateurs du pont peuvent mettre en pause."},
    "en": {"paused": "The school's messaging is paused{reason}. Only staff can write for now.",
           "resumed": "The school's messaging has resumed.",
           "done_pause": "Paused: {n} rooms read-only.", "done_resume": "Resumed: {n} rooms reopened.",
           "already": "The school's messaging is already paused (!reprise reopens it).",
           "not_paused": "The school's messaging is not paused.",
           "refused": "{user}: only the director and the bridge's admins can pause."},
}


class SchoolPause:
    def __init__(self, *, moderator: Moderator, api: Homeserver, store: Store, audit: AuditLog,
                 admins: frozenset[str], clock: Clock, language: str = "fr") -> None:
        self.moderator = moderator
        self.api = api
        self.store = store
        self.audit = audit
        self.admins = admins
        self.clock = clock
        self.texts = TEXTS.get(language, TEXTS["fr"])

    async def on_message(self, msg: ReceivedMessage) -> None:
        words = msg.body.strip().split(maxsplit=1)
        command = words[0].lower() if words else ""
        if command not in ("!pause", "!reprise"):
            return
        school = next((uai for uai, room in self.moderator.reports_room.items() if room == msg.room_id), None)
        if school is None or not msg.is_new_text:
            return  # only a new text message, in a school's moderators room
        if msg.sender not in self.admins and await self.moderator.power(msg.room_id, msg.sender) < 100:
            await self.moderator.notice(msg.room_id, self.texts["refused"].format(user=msg.sender))
            return
        if command == "!pause":
            answer = await self.pause(school, reason=words[1] if len(words) > 1 else "", by=msg.sender)
        else:
            answer = await self.resume(school, by=msg.sender)
        await self.moderator.notice(msg.room_id, answer)

    def _rooms(self, school: str) -> list[str]:
        reports = self.moderator.reports_room.get(school)
        return sorted(r for r, uai in self.moderator.room_school.items() if uai == school and r != reports)

    async def pause(self, school: str, *, reason: str, by: str) -> str:
        pauses = decode(await self.store.get_value(PAUSES_KEY))
        if school in pauses:
            return self.texts["already"]
        level = PAUSE_WRITERS[self.moderator.holder.current.policies.access.pause_writers]
        rooms = self._rooms(school)
        before: dict[str, Any] = {}
        for room_id in rooms:
            before[room_id] = await self.api.get_state(room_id, "m.room.power_levels",
                                                       as_user=self.moderator.actor(room_id))
        # On record first: whatever happens next, !reprise knows what to put back.
        pauses[school] = {"level": level, "at": self.clock.now_ms(), "rooms": before}
        await self.store.set_value(PAUSES_KEY, encode(pauses))
        self.audit.record(actor="ent-bridge", action="school_pause", subject=by, reason="!pause",
                          detail={"school": school, "rooms": len(rooms)})
        await self.audit.flush()
        text = self.texts["paused"].format(reason=f" : {reason}" if reason else "")
        for room_id, levels in before.items():
            paused = {**levels, "events_default": max(level, int(levels.get("events_default", 0)))}
            await self.api.set_state(room_id, "m.room.power_levels", "", paused, as_user=self.moderator.actor(room_id))
            await self.moderator.notice(room_id, text)
        log.info("school_paused", school=school, rooms=len(rooms))
        return self.texts["done_pause"].format(n=len(rooms))

    async def resume(self, school: str, *, by: str) -> str:
        pauses = decode(await self.store.get_value(PAUSES_KEY))
        record = pauses.get(school)
        if record is None:
            return self.texts["not_paused"]
        for room_id, levels in record["rooms"].items():  # exactly what each room had
            await self.api.set_state(room_id, "m.room.power_levels", "", levels, as_user=self.moderator.actor(room_id))
            await self.moderator.notice(room_id, self.texts["resumed"])
        del pauses[school]
        await self.store.set_value(PAUSES_KEY, encode(pauses))  # last: a crash before it resumes again
        self.audit.record(actor="ent-bridge", action="school_resume", subject=by, reason="!reprise",
                          detail={"school": school, "rooms": len(record["rooms"])})
        await self.audit.flush()
        log.info("school_resumed", school=school, rooms=len(record["rooms"]))
        return self.texts["done_resume"].format(n=len(record["rooms"]))
