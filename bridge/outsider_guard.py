"""Outsider removal (shell): someone invited or joined into a managed room without being entitled
is removed at once, from the event stream, not at the next sync."""

from __future__ import annotations

import base64
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bridge.audit import AuditLog
from bridge.logging import get_logger
from bridge.matrix.port import Homeserver
from bridge.policy.outsiders import outsider
from bridge.rooms.desired import DesiredRoom
from bridge.store.base import RoomRecord

log = get_logger(component="outsiders")
REASON = {"fr": "n'est pas autorisé dans ce salon selon l'annuaire",
          "en": "is not entitled to this room according to the directory"}
Explain = Callable[[str, str, str], Awaitable[None]]  # (room id, user, reason): a notice and a report


OUTSIDERS_KEY = "outsider_rule"  # in the store: who is entitled where, as of the last applied sync


def _encode(entitled: Mapping[str, list[str]], actors: Mapping[str, str]) -> str:
    data = {"entitled": entitled, "actors": actors}
    return base64.b64encode(zlib.compress(json.dumps(data, separators=(",", ":")).encode(), 6)).decode()


def without(text: str, user: str) -> str:
    """The encoded rule with `user` gone from every room (an erasure)."""
    data = json.loads(zlib.decompress(base64.b64decode(text)))
    return _encode({r: [m for m in members if m != user] for r, members in data["entitled"].items()},
                   {r: a for r, a in data["actors"].items() if a != user})


def snapshot_of(desired: Mapping[str, DesiredRoom], records: list[RoomRecord]) -> str:
    """The outsider rule a sync's desired rooms make (room id -> entitled people, and who runs
    each room), encoded for the store; the running bridge loads it after every sync."""
    ids = {r.room_key: r.room_id for r in records if not r.archived}
    return _encode({ids[k]: sorted(r.members) for k, r in desired.items() if k in ids},
                   {ids[k]: r.owner for k, r in desired.items() if k in ids and r.owner})


class OutsiderGuard:
    def __init__(self, *, api: Homeserver, audit: AuditLog, bot: str, keyless: str, language: str,
                 explain: Explain | None = None) -> None:
        self.api = api
        self.audit = audit
        self.bot = bot
        self.keyless = keyless
        self.reason = REASON.get(language, REASON["fr"])
        self.entitled: dict[str, frozenset[str]] = {}  # room id -> people, from the last applied sync
        self.actors: dict[str, str] = {}  # room id -> the keyless user, where it runs the room
        self.explain = explain  # moderation's notice in the room and report to the school

    def restore(self, text: str) -> None:
        data = json.loads(zlib.decompress(base64.b64decode(text)))
        self.entitled = {r: frozenset(m) for r, m in data["entitled"].items()}
        self.actors = dict(data["actors"])

    async def on_event(self, event: dict[str, Any]) -> None:
        user = outsider(event, self.entitled, bridge_users=(self.bot, self.keyless))
        if user is None:
            return
        room_id = str(event["room_id"])
        # On record before the removal (once per event): a crash after the kick left it unaudited,
        # as the retry found the person gone and had nothing more to do.
        self.audit.record(actor="ent-bridge", action="outsider_removed", room=room_id, subject=user,
                          reason=self.reason, detail={"invited_by": event.get("sender")},
                          once=f"outsider:{event.get('event_id')}:{self.audit.pseudonym(user)}")
        await self.audit.flush()
        # A refusal raises: the dispatcher records it and retries.
        if not await self.api.kick(room_id, user, as_user=self.actors.get(room_id, self.bot), reason=self.reason):
            return  # already gone (left, or the invite was withdrawn)
        get_logger(room_id=room_id).info("outsider_removed", user_id=user, by=event.get("sender"))
        if self.explain is not None:
            try:
                await self.explain(room_id, user, self.reason)
            except Exception as exc:  # noqa: BLE001 - the removal stands; only the explanation is missing
                # (and the event must not be handled again for it: nothing is left to remove)
                log.warning("outsider_notice_failed", room_id=room_id, error=f"{type(exc).__name__}: {exc}"[:300])
