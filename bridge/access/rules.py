"""The module's decisions (pure): reach, invites, joins, room creation, state in managed rooms.

Each check returns None when allowed, or the reason of the refusal (French and English), which
the client shows. The inputs are what Synapse hands the module and what the snapshot holds;
nothing here waits on anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ROOM_STATE_TYPE = "fr.ent-bridge.room"  # the marker the bridge puts in every room it manages
WIDGETS = frozenset({"im.vector.modular.widgets", "m.widget", "io.element.widgets.layout"})
# Who reads a room's history, from the most private: a template's setting is a ceiling.
HISTORY = ("joined", "invited", "shared", "world_readable")


class Lookup(Protocol):
    """The snapshot's read side (AccessSnapshot)."""

    @property
    def loaded(self) -> bool: ...
    unrestricted: frozenset[str]

    def known(self, user: str) -> bool: ...
    def linked(self, a: str, b: str) -> bool: ...
    def history(self, ref: str) -> str | None: ...
    def power(self, ref: str, user: str) -> int | None: ...


def _why(fr: str, en: str) -> str:
    return f"{fr} / {en}"


NO_DATA = _why("règles d'accès indisponibles : réessayez dans une minute",
               "access rules unavailable: try again in a minute")
NOT_LINKED = _why("cette personne n'est pas liée à vous dans l'annuaire de l'établissement",
                  "this person is not linked to you in the school directory")
NOT_ENTITLED = _why("ce salon est réservé aux personnes que l'annuaire y inscrit",
                    "this room is for the people the directory puts in it")
MANAGED_STATE = _why("ce réglage du salon est géré par l'ENT", "this room setting is managed by the ENT")
WIDGET = _why("les widgets ne sont pas autorisés dans les salons de l'ENT", "widgets are not allowed in ENT rooms")
PUBLIC = _why("les salons publics ne sont pas autorisés", "public rooms are not allowed")


@dataclass(frozen=True)
class Rules:
    snapshot: Lookup
    bridge_users: frozenset[str]

    def free(self, user: str) -> bool:
        """The bridge's own users and the unrestricted ids: held to none of these rules."""
        return user in self.bridge_users or user in self.snapshot.unrestricted

    def reach(self, a: str, b: str) -> str | None:
        """May a find b in the user directory, open a DM with them, invite them?"""
        if a == b or self.free(a) or self.free(b):
            return None
        if not self.snapshot.loaded:
            return NO_DATA
        a_in, b_in = self.snapshot.known(a), self.snapshot.known(b)
        if not a_in and not b_in:
            return None  # neither is in the directory: not the school's relations to guard
        return None if a_in and b_in and self.snapshot.linked(a, b) else NOT_LINKED

    def invite(self, inviter: str, invitee: str, *, managed: bool, ref: str | None) -> str | None:
        if not managed:
            return self.reach(inviter, invitee)
        if inviter in self.bridge_users:
            return None
        # A moderator (Synapse checks the power) may bring back someone the directory entitles.
        return self._entitled(invitee, ref)

    def join(self, user: str, *, managed: bool, ref: str | None) -> str | None:
        return self._entitled(user, ref) if managed and user not in self.bridge_users else None

    def _entitled(self, user: str, ref: str | None) -> str | None:
        if user in self.snapshot.unrestricted:
            return None
        if ref is None or not self.snapshot.loaded:
            return NO_DATA  # a managed room with no data: fail closed
        return None if self.snapshot.power(ref, user) is not None else NOT_ENTITLED

    def create_room(self, user: str, config: Mapping[str, Any]) -> str | None:
        if user in self.bridge_users:
            return None
        for state in config.get("initial_state") or []:
            if isinstance(state, dict) and state.get("type") == ROOM_STATE_TYPE:
                return MANAGED_STATE  # only the bridge marks a room as one it manages
        if self.snapshot.known(user) and (config.get("visibility") == "public" or config.get("preset") ==
                                          "public_chat"):
            return PUBLIC
        for invitee in config.get("invite") or []:
            if (why := self.reach(user, str(invitee))) is not None:
                return why
        return None

    def state(self, sender: str, event_type: str, content: Mapping[str, Any], *, managed: bool, ref: str | None,
              previous_power: Mapping[str, Any] | None) -> str | None:
        """A state event in a room: only the bridge marks rooms; in managed rooms, nobody but the
        bridge breaks the template (the bridge's repair stays the second line)."""
        if sender in self.bridge_users:
            return None
        if event_type == ROOM_STATE_TYPE:
            return MANAGED_STATE
        if not managed:
            return None
        if event_type in WIDGETS:
            return WIDGET
        if event_type == "m.room.encryption":
            return MANAGED_STATE
        if event_type == "m.room.join_rules" and content.get("join_rule") != "invite":
            return MANAGED_STATE
        if event_type == "m.room.guest_access" and content.get("guest_access") != "forbidden":
            return MANAGED_STATE
        if event_type == "m.room.history_visibility":
            ceiling = (self.snapshot.history(ref) if ref else None) or "joined"
            value = content.get("history_visibility")
            if value not in HISTORY or HISTORY.index(str(value)) > HISTORY.index(ceiling):
                return MANAGED_STATE
        if event_type == "m.room.power_levels":
            return self._power_change(content, previous_power or {}, ref)
        return None

    def _power_change(self, content: Mapping[str, Any], previous: Mapping[str, Any], ref: str | None) -> str | None:
        # Only the users map may change (a moderator muting someone), and nobody gets more power
        # than the template gives them.
        if {k: v for k, v in content.items() if k != "users"} != {k: v for k, v in previous.items() if k != "users"}:
            return MANAGED_STATE
        before = previous.get("users") or {}
        for user, level in (content.get("users") or {}).items():
            if not isinstance(level, int) or level <= 0 or level <= int(before.get(user, 0)):
                continue
            if user in self.bridge_users:
                continue
            allowed = self.snapshot.power(ref, user) if ref and self.snapshot.loaded else None
            if allowed is None or level > allowed:
                return MANAGED_STATE
        return None
