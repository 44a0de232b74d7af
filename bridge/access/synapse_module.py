"""The Synapse module: directory-based access rules, enforced by the homeserver itself.

In homeserver.yaml (see README, "Module Synapse"):

    modules:
      - module: bridge.access.synapse_module.AccessModule
        config:
          snapshot: /var/lib/ent-bridge/access.sqlite
          bridge_users: ["@ent-bridge:ent.example.fr", "@ent-bridge_bot:ent.example.fr",
                         "@ent-bridge_keyless:ent.example.fr"]
          refresh_seconds: 10

Synapse imports this file from the bridge's distribution; it needs nothing but the standard
library and Synapse's module API. Refusals are M_FORBIDDEN with a reason the client shows.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bridge.access.rules import ROOM_STATE_TYPE, Rules
from bridge.access.snapshot import AccessSnapshot

log = logging.getLogger("ent_bridge.access")
CONFIG_KEYS = frozenset({"snapshot", "bridge_users", "refresh_seconds"})
NOT_SPAM = "NOT_SPAM"


class ModuleConfigError(ValueError):
    """A wrong `config:` block (Synapse reports it at start-up, naming the module)."""


def parse(config: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ModuleConfigError(f"unknown key(s) {', '.join(sorted(unknown))} "
                                f"(known: {', '.join(sorted(CONFIG_KEYS))})")
    if not isinstance(config.get("snapshot"), str):
        raise ModuleConfigError("snapshot: the path of the bridge's access snapshot is required")
    users = config.get("bridge_users")
    if not isinstance(users, list) or not users or not all(isinstance(u, str) and u.startswith("@") for u in users):
        raise ModuleConfigError("bridge_users: a list of the bridge's Matrix ids is required")
    refresh = config.get("refresh_seconds", 10)
    if not isinstance(refresh, (int, float)) or isinstance(refresh, bool) or not 0.1 <= refresh <= 60:
        raise ModuleConfigError("refresh_seconds: a number of seconds between 0.1 and 60")
    return {"snapshot": Path(config["snapshot"]), "bridge_users": frozenset(users), "refresh_seconds": float(refresh)}


class AccessModule:
    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self.api = api
        self.snapshot = AccessSnapshot(config["snapshot"])
        self.rules = Rules(self.snapshot, config["bridge_users"])
        self._refresh()
        api.register_spam_checker_callbacks(
            user_may_invite=self.user_may_invite, user_may_join_room=self.user_may_join_room,
            user_may_create_room=self.user_may_create_room, check_username_for_spam=self.check_username_for_spam)
        api.register_third_party_rules_callbacks(check_event_allowed=self.check_event_allowed)
        # Every process that answers clients (workers too) keeps its own copy fresh.
        api.looping_background_call(self._refresh, config["refresh_seconds"] * 1000, run_on_all_instances=True)

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> dict[str, Any]:
        return parse(config)

    def _refresh(self) -> None:
        try:
            if self.snapshot.refresh():
                log.info("ent-bridge access snapshot loaded (generated at %s ms)", self.snapshot.generated_ms)
        except (sqlite3.DatabaseError, OSError, ValueError) as exc:  # keep the previous one
            log.error("ent-bridge access snapshot unreadable, previous rules kept: %s", exc)

    @staticmethod
    def _answer(why: str | None) -> Any:
        if why is None:
            return NOT_SPAM
        from synapse.api.errors import Codes

        return Codes.FORBIDDEN, {"error": why}

    async def _managed(self, room_id: str) -> tuple[bool, str | None]:
        """Is the room one the bridge manages, and its ref (None: unknown, fail closed)."""
        state = await self.api.get_room_state(room_id, [(ROOM_STATE_TYPE, "")])
        marker = state.get((ROOM_STATE_TYPE, ""))
        if marker is None:
            return False, None
        ref = marker.content.get("ref")
        return True, ref if isinstance(ref, str) else self.snapshot.ref_of(room_id)

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> Any:
        managed, ref = await self._managed(room_id)
        return self._answer(self.rules.invite(inviter, invitee, managed=managed, ref=ref))

    async def user_may_join_room(self, user: str, room_id: str, is_invited: bool) -> Any:
        managed, ref = await self._managed(room_id)
        return self._answer(self.rules.join(user, managed=managed, ref=ref))

    async def user_may_create_room(self, user: str, config: dict[str, Any]) -> Any:
        return self._answer(self.rules.create_room(user, config))

    async def check_username_for_spam(self, profile: Mapping[str, Any], requester: str) -> bool:
        """True hides the user from the requester's directory search."""
        return self.rules.reach(requester, str(profile.get("user_id"))) is not None

    async def check_event_allowed(self, event: Any, state_events: Mapping[tuple[str, str], Any]
                                  ) -> tuple[bool, dict[str, Any] | None]:
        if not event.is_state():
            return True, None
        marker = state_events.get((ROOM_STATE_TYPE, ""))
        ref = None
        if marker is not None:
            ref = marker.content.get("ref")
            ref = ref if isinstance(ref, str) else self.snapshot.ref_of(event.room_id)
        previous = state_events.get(("m.room.power_levels", ""))
        why = self.rules.state(event.sender, event.type, event.content, managed=marker is not None, ref=ref,
                               previous_power=previous.content if previous is not None else None)
        if why is None:
            return True, None
        log.info("ent-bridge refused %s from %s in %s", event.type, event.sender, event.room_id)
        from synapse.api.errors import Codes, SynapseError

        raise SynapseError(403, why, Codes.FORBIDDEN)  # Synapse passes it to the client, reason and all
