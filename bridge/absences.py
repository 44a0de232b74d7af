"""Absences: a teacher says `!absent jusqu'au 2026-12-12 [message]` to the bot (in a direct chat or
the staff room); guardians who write in that teacher's family rooms get one automatic answer a
day with the date of return; `!présent` ends it. Kept in the store: a restart keeps it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

from bridge.access.snapshot import AccessSnapshot
from bridge.clock import Clock
from bridge.logging import get_logger
from bridge.matrix.received import ReceivedMessage
from bridge.moderation import Moderator
from bridge.people_keys import ABSENCES_KEY
from bridge.store.base import Store

log = get_logger(component="absences")
COMMANDS = ("!absent", "!présent", "!present")
STAFF_SIDES = {"teacher", "staff", "director"}
_ABSENT = re.compile(r"^!absent\s+(?:jusqu['’]au|until)\s+(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4})\s*(.*)$",
                     re.IGNORECASE | re.DOTALL)
TEXTS = {"fr": {"answer": "{name} est absent·e jusqu'au {until} inclus.{message} Votre message sera lu à son retour.",
                "set": "Absence notée jusqu'au {until} inclus : les familles qui vous écrivent dans les salons de "
                       "suivi recevront une réponse automatique par jour. !présent pour l'arrêter.",
                "ended": "Absence terminée : plus de réponse automatique.",
                "usage": "Écrivez par exemple : !absent jusqu'au 2026-12-12 De retour lundi. (ou !présent)",
                "past": "Cette date est passée : indiquez le jour de votre retour.",
                "staff_only": "Les absences sont pour l'équipe de l'établissement."},
         "en": {"answer": "{name} is away until {until} included.{message} Your message will be read on their return.",
                "set": "Away until {until} noted: families writing in the follow-up rooms get one automatic "
                       "answer a day. !present ends it.",
                "ended": "Away ended: no more automatic answers.",
                "usage": "Write for example: !absent until 2026-12-12 Back on Monday. (or !present)",
                "past": "That date is past: give the day you are back.",
                "staff_only": "Away notices are for the school's staff."}}


def parse(body: str, *, today: date) -> tuple[date, str] | str:
    """(last day away, message) from an `!absent` command, or the key of what is wrong (pure)."""
    m = _ABSENT.match(body.strip())
    if m is None:
        return "usage"
    raw, message = m.group(1), " ".join(m.group(2).split())[:500]
    try:
        until = date.fromisoformat(raw) if "-" in raw else datetime.strptime(raw, "%d/%m/%Y").date()
    except ValueError:
        return "usage"
    return "past" if until < today else (until, message)


class Absences:
    def __init__(self, *, moderator: Moderator, store: Store, snapshot: AccessSnapshot | None,
                 rooms_of: Callable[[str], list[str]], clock: Clock, language: str = "fr",
                 timezone: str = "Europe/Paris") -> None:
        self.moderator = moderator
        self.store = store
        self.snapshot = snapshot
        self.rooms_of = rooms_of
        self.clock = clock
        self.texts = TEXTS.get(language, TEXTS["fr"])
        self.tz = ZoneInfo(timezone)
        self._answered: dict[tuple[str, str], date] = {}  # (room, teacher) -> the day last answered

    def _today(self) -> date:
        return self.clock.now().astimezone(self.tz).date()

    async def _load(self) -> dict[str, dict[str, str]]:
        text = await self.store.get_value(ABSENCES_KEY)
        return dict(json.loads(text)) if text else {}

    async def command(self, msg: ReceivedMessage) -> str | None:
        """Answer to an absence command from a direct chat or the staff room; None: not one."""
        word = msg.body.strip().split(maxsplit=1)[0].lower() if msg.body.strip() else ""
        if word not in COMMANDS:
            return None
        if self.snapshot is not None:
            self.snapshot.refresh()
        if self.snapshot is None or not self.snapshot.sides(msg.sender) & STAFF_SIDES:
            return self.texts["staff_only"]
        absences = await self._load()
        if word != "!absent":
            absences.pop(msg.sender, None)
            await self.store.set_value(ABSENCES_KEY, json.dumps(absences))
            return self.texts["ended"]
        parsed = parse(msg.body, today=self._today())
        if isinstance(parsed, str):
            return self.texts[parsed]
        until, message = parsed
        absences[msg.sender] = {"until": until.isoformat(), "message": message}
        await self.store.set_value(ABSENCES_KEY, json.dumps(absences))
        log.info("absence_set", until=until.isoformat())
        return self.texts["set"].format(until=until.strftime("%d/%m/%Y"))

    async def on_message(self, msg: ReceivedMessage) -> None:
        """A command in the staff room; a message in a family room: one answer a day for each of
        its teachers who is away."""
        template = self.moderator.templates.get(self.moderator.room_template.get(msg.room_id, ""))
        if template is not None and template.name == "staff" and msg.is_new_text:
            if (answer := await self.command(msg)) is not None:
                await self.moderator.notice(msg.room_id, answer)
            return
        if template is None or template.scope != "pupil" or msg.content.get("msgtype") not in ("m.text", "m.image",
                                                                                                "m.file"):
            return
        if await self.moderator.power(msg.room_id, msg.sender) >= 50:
            return  # the staff write to each other: no automatic answer
        absences = await self._load()
        today = self._today()
        for teacher, away in sorted(absences.items()):
            until = date.fromisoformat(away["until"])
            if until < today or msg.room_id not in self.rooms_of(teacher):
                continue
            if self._answered.get((msg.room_id, teacher)) == today:
                continue
            self._answered[(msg.room_id, teacher)] = today
            room = self.moderator.bot.client.rooms.get(msg.room_id) if self.moderator.bot.client else None
            name = room.user_name(teacher) if room is not None and room.user_name(teacher) else teacher
            extra = f" {away['message']}" if away.get("message") else ""
            await self.moderator.notice(msg.room_id, self.texts["answer"].format(
                name=name, until=until.strftime("%d/%m/%Y"), message=extra))
