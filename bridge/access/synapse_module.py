"""The Synapse module: directory-based access rules, enforced by the homeserver itself.

In homeserver.yaml (see README, "Module Synapse"):

    modules:
      - module: bridge.access.synapse_module.AccessModule
        config:
          snapshot: /var/lib/ent-bridge/access.sqlite
          bridge_users: ["@ent-bridge:ent.example.fr", "@ent-bridge_bot:ent.example.fr",
                         "@ent-bridge_keyless:ent.example.fr"]
          refresh_seconds: 10
          registration: /data/ent-bridge-registration.yaml  # refusals go to the bridge's audit
          spool: /data/ent-bridge-refusals  # optional: what waits for the bridge survives a restart

Synapse imports this file from the bridge's distribution, with the dependencies of the bridge's
text reading (lxml, confusable-homoglyphs, tldextract: names and topics are read as the bridge's
moderation reads them). Refusals are M_FORBIDDEN with a reason the client shows.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from bridge.access.links import DIRECTOR, STAFF, TEACHER
from bridge.access.reporter import RefusalReporter, read_registration
from bridge.access.rules import ROOM_STATE_TYPE, Rules
from bridge.access.shown import StateRules, check_state, global_name_refused, restore
from bridge.access.snapshot import AccessSnapshot
from bridge.policy.shown_state import SHOWN_STATE

log = logging.getLogger("ent_bridge.access")
CONFIG_KEYS = frozenset({"snapshot", "bridge_users", "refresh_seconds", "registration", "spool"})
NOT_SPAM = "NOT_SPAM"
STAFF_SIDES = frozenset({TEACHER, STAFF, DIRECTOR})
ROOM_STAFF_STATE = frozenset({"m.room.member", "m.room.power_levels", "m.room.create"})  # what room_staff reads


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
    registration = config.get("registration")
    if registration is not None and not isinstance(registration, str):
        raise ModuleConfigError("registration: the path of the bridge's registration file (its url and hs_token)")
    bridge = None
    if registration is not None:
        try:
            bridge = read_registration(Path(registration))
        except ValueError as exc:
            raise ModuleConfigError(f"registration: {exc}") from None
    spool = config.get("spool")
    if spool is not None and (not isinstance(spool, str) or registration is None):
        raise ModuleConfigError("spool: a path in Synapse's own data, with registration: (what waits for the bridge)")
    return {"snapshot": Path(config["snapshot"]), "bridge_users": frozenset(users), "refresh_seconds": float(refresh),
            "bridge": bridge, "spool": Path(spool) if spool else None}


class AccessModule:
    def __init__(self, config: dict[str, Any], api: Any) -> None:
        self.api = api
        self.snapshot = AccessSnapshot(config["snapshot"])
        self.rules = Rules(self.snapshot, config["bridge_users"])
        self.shown: dict[str, StateRules] = {}  # template -> what its rooms' names and topics are held to
        self._refresh()
        api.register_spam_checker_callbacks(
            user_may_invite=self.user_may_invite, user_may_join_room=self.user_may_join_room,
            user_may_create_room=self.user_may_create_room, check_username_for_spam=self.check_username_for_spam)
        api.register_third_party_rules_callbacks(check_event_allowed=self.check_event_allowed)
        # Every process that answers clients (workers too) keeps its own copy fresh.
        api.looping_background_call(self._refresh, config["refresh_seconds"] * 1000, run_on_all_instances=True)
        self.reporter: RefusalReporter | None = None
        if config.get("bridge") is not None:
            url, token = config["bridge"]
            spool = config.get("spool")
            if spool is not None:  # one file a process: workers each keep their own
                spool = spool.with_name(f"{spool.name}.{api.worker_name or 'main'}.jsonl")
            self.reporter = RefusalReporter(url, token, self._put, spool=spool)
            # What could not be sent is tried again (after its backoff) from here; each worker its own.
            api.looping_background_call(self.reporter.send, 2000, run_on_all_instances=True)

    async def _put(self, url: str, body: dict[str, Any], headers: dict[str, list[str]]) -> Any:
        return await self.api.http_client.put_json(url, body, headers=headers)

    def _report(self, **refusal: Any) -> None:
        """Tell the bridge's audit (never the text of a name or a topic: only what was found)."""
        if self.reporter is None:
            return
        self.reporter.add(**refusal)
        self.api.run_as_background_process("ent_bridge_refusals", self.reporter.send, now=True)

    @staticmethod
    def parse_config(config: Mapping[str, Any]) -> dict[str, Any]:
        return parse(config)

    def _refresh(self) -> None:
        try:
            if not self.snapshot.refresh():
                return
            log.info("ent-bridge access snapshot loaded (generated at %s ms)", self.snapshot.generated_ms)
        except (sqlite3.DatabaseError, OSError, ValueError) as exc:  # keep the previous one
            log.error("ent-bridge access snapshot unreadable, previous rules kept: %s", exc)
            return
        try:
            self.shown = {t: restore(r) for t, r in self.snapshot.shown.items()}
        except ValueError as exc:  # the bridge's own moderation stays the line for names
            self.shown = {}
            log.error("ent-bridge moderation rules in the snapshot unreadable, names not checked here: %s", exc)

    def _answer(self, why: str | None, **refusal: Any) -> Any:
        """The spam checker's answer; a refusal is also told to the bridge's audit."""
        if why is None:
            return NOT_SPAM
        self._report(reason=why, **refusal)
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
        return self._answer(self.rules.invite(inviter, invitee, managed=managed, ref=ref),
                            kind="invite", sender=inviter, target=invitee, room=room_id)

    async def user_may_join_room(self, user: str, room_id: str, is_invited: bool) -> Any:
        managed, ref = await self._managed(room_id)
        return self._answer(self.rules.join(user, managed=managed, ref=ref), kind="join", sender=user, room=room_id)

    async def user_may_create_room(self, user: str, config: dict[str, Any]) -> Any:
        return self._answer(self.rules.create_room(user, config), kind="create_room", sender=user)

    async def check_username_for_spam(self, profile: Mapping[str, Any], requester: str) -> bool:
        """True hides the user from the requester's directory search: someone the requester may
        not reach, or a member whose global name the rooms would not take (staff are exempt, as
        in the rooms: their names are theirs)."""
        user = str(profile.get("user_id"))
        if self.rules.reach(requester, user) is not None:
            return True
        if user == requester or self.rules.free(user) or self.rules.free(requester):
            return False  # the district's admins find whoever they must act on, whatever the name
        if self.snapshot.sides(user) & STAFF_SIDES:
            return False
        return global_name_refused(self.shown.values(), profile.get("display_name"), user=user,
                                   given=self.snapshot.given(user))

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
        if why is None and marker is not None and event.type in SHOWN_STATE and not self.rules.free(event.sender):
            return self._shown(event, marker, ref, state_events)
        if why is None:
            return True, None
        log.info("ent-bridge refused %s from %s in %s", event.type, event.sender, event.room_id)
        self._report(kind="state", sender=event.sender, room=event.room_id, event_type=event.type, reason=why)
        _refuse(why)

    def _shown(self, event: Any, marker: Any, ref: str | None, state_events: Mapping[tuple[str, str], Any]
               ) -> tuple[bool, dict[str, Any] | None]:
        """A name, a reason or a topic in a managed room, held to the room's moderation rules."""
        template = marker.content.get("template")
        if not isinstance(template, str):
            template = (self.snapshot.template(ref) if ref else None) or ""
        rules = self.shown.get(template)
        if rules is None:
            return True, None
        state = ({"type": ev.type, "state_key": ev.state_key, "sender": ev.sender, "content": ev.content}
                 for (etype, _), ev in state_events.items() if etype in ROOM_STAFF_STATE)
        verdict = check_state(rules, event.sender, event.type, event.state_key, event.content, state,
                              given=self.snapshot.given(event.sender) if event.type == "m.room.member" else ())
        if verdict is None:
            return True, None
        # Never the name or the text itself in a log: only what was found.
        log.info("ent-bridge held %s from %s in %s to the rules (%s)", event.type, event.sender, event.room_id,
                 ",".join(verdict.protections))
        self._report(kind="held" if verdict.refuse is None else "name", sender=event.sender, room=event.room_id,
                     event_type=event.type, reason=verdict.refuse or ",".join(verdict.protections))
        if verdict.refuse is not None:
            _refuse(verdict.refuse)
        return True, {**event.get_dict(), "content": verdict.content}


def _refuse(why: str) -> NoReturn:
    from synapse.api.errors import Codes, SynapseError

    raise SynapseError(403, why, Codes.FORBIDDEN)  # Synapse passes it to the client, reason and all
