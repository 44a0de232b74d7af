"""The planner (pure): desired x observed -> Plan. Planning right after an apply is empty."""

from __future__ import annotations

from typing import Any, Mapping

from bridge.reconcile import actions as A
from bridge.reconcile.actions import Action, Plan
from bridge.reconcile.observed import ObservedRoom, ObservedState
from bridge.rooms.desired import DesiredRoom, DesiredState

REASONS = {
    "fr": {"entitled": "inscrit dans l'annuaire pour ce salon",
           "not_entitled": "n'est pas (ou plus) autorisé dans ce salon selon l'annuaire",
           "archived": "salon archivé : il ne correspond plus à l'annuaire",
           "reopened": "salon archivé à nouveau demandé par l'annuaire : rouvert",
           "grace_over": "salon archivé : fin de la période de consultation"},
    "en": {"entitled": "listed in the directory for this room",
           "not_entitled": "is not (or no longer) entitled to this room according to the directory",
           "archived": "room archived: it no longer matches the directory",
           "reopened": "archived room wanted again by the directory: reopened",
           "grace_over": "archived room: the reading period is over"},
}


def power_levels_differ(desired: Mapping[str, Any], observed: Mapping[str, Any], *,
                        managers: frozenset[str]) -> list[str]:
    """Keys whose value differs. Keys the homeserver adds on its own (e.g. 'historical') are
    ignored; 'users' must match exactly (nobody else may hold power), except for the bridge's own
    users (the bot, the keyless owner: present only in rooms older than version 12 or handed
    over), and negative levels: those are mutes, owned by moderation and lifted when they expire."""
    observed_users = {u: lvl for u, lvl in (observed.get("users") or {}).items()
                      if u not in managers and lvl >= 0}
    return sorted(k for k, v in desired.items()
                  if (observed_users if k == "users" else observed.get(k)) != v)


def _plan_room(d: DesiredRoom, o: ObservedRoom | None, *, bot: str, managers: frozenset[str],
               reasons: Mapping[str, str], space_ids: Mapping[str, str]) -> list[Action]:
    out: list[Action] = []
    owner = d.owner or bot
    if o is None:
        out.append(A.create(d))
        current: set[str] = set()
        membership: Mapping[str, str] = {}
    else:
        current = o.current() - managers
        membership = o.members
        others = sorted(m for m in managers - {owner} if o.members.get(m) in ("join", "invite"))
        if o.members.get(owner) != "join" or others:
            # The template's content inspection changed: the room changes hands, and the user
            # that is not to read it (the bot's device) leaves, so clients stop sharing keys with it.
            held_by = next((m for m in sorted(managers) if o.members.get(m) == "join" and m != owner), None)
            out.append(Action("transfer_room", d.key, "the room's content inspection setting changed", owner,
                              {"from": held_by, "leaving": others}))
        if o.name != d.name:
            out.append(Action("set_state", d.key, "room name differs from the template", detail={"field": "name"}))
        if o.topic != d.topic and (d.topic or o.archived):  # a reopened room loses the archive topic
            out.append(Action("set_state", d.key, "room topic differs from the template", detail={"field": "topic"}))
        if d.retention_ms is not None and o.retention_ms != d.retention_ms:
            out.append(Action("set_state", d.key, "message retention differs from the policy",
                              detail={"field": "retention"}))
        diff = power_levels_differ(d.power_levels, o.power_levels, managers=managers)
        if diff:
            out.append(Action("set_power_levels", d.key, "power levels differ from the template",
                              detail={"keys": diff}))
    by_choice = o.left_by_choice if o is not None else frozenset()
    for user in sorted(d.members - current):
        if membership.get(user) == "ban":
            continue  # a moderator's ban stands; reported in the plan's notes
        if user in by_choice:
            continue  # they left (or declined) themselves: no new invite every hour; see notes
        out.append(A.invite(d.key, user, reasons["entitled"]))
    for user in sorted(current - d.members):
        out.append(A.kick(d.key, user, reasons["not_entitled"]))
    if d.is_space:
        have = o.children if o is not None else frozenset()
        for child_key, child_id in sorted(space_ids.items()):
            if child_id is None or child_id not in have:
                out.append(Action("add_to_space", d.key, "room belongs in its school's Space",
                                  detail={"child": child_key}))
    return out


def plan(desired: DesiredState, observed: ObservedState, *, bot: str, language: str = "fr",
         keyless: str | None = None, missing_accounts: frozenset[str] = frozenset(),
         erase: tuple[tuple[str, str, bool], ...] = ()) -> Plan:
    """keyless: the device-less user running rooms without content inspection;
    missing_accounts: members without an account who are to be provisioned first;
    erase: (person id, user id, account provisioned by the bridge) of leavers past the grace period."""
    reasons = REASONS.get(language, REASONS["fr"])
    managers = frozenset({bot, keyless} - {None})  # type: ignore[arg-type]
    actors: dict[str, str] = {}
    notes: list[str] = list(desired.warnings)
    children: dict[str, dict[str, Any]] = {}
    for d in desired.rooms.values():
        if d.space_key:
            o = observed.rooms.get(d.key)
            children.setdefault(d.space_key, {})[d.key] = o.room_id if o else None
    # One bucket per phase. Rooms are visited in key order and people in id order, so every
    # bucket but the kicks (two sources) comes out sorted: no global sort of millions of actions.
    buckets: dict[str, list[Action]] = {t: [] for t in A.PHASES}
    for key in sorted(desired.rooms):
        d = desired.rooms[key]
        o = observed.rooms.get(key)
        if o is not None and o.archived:
            # Wanted again (a class emptied, then refilled; a pupil back): the room is restored
            # (name, topic, power, members) and marked active once that is done.
            buckets["unarchive_room"].append(Action("unarchive_room", key, reasons["reopened"]))
        if d.owner and d.owner != bot:
            actors[key] = d.owner
        for action in _plan_room(d, o, bot=bot, managers=managers, reasons=reasons,
                                 space_ids=children.get(key, {})):
            buckets[action.type].append(action)
        if o is not None:
            banned = sorted(u for u in d.members if o.members.get(u) == "ban")
            if banned:
                notes.append(f"{key}: {len(banned)} entitled people are banned and stay out")
            declined = sorted(u for u in d.members if u in o.left_by_choice and o.members.get(u) == "leave")
            if declined:
                notes.append(f"{key}: {len(declined)} entitled people left or declined the invite themselves "
                             "and are not invited again")
    for key in sorted(observed.rooms):
        o = observed.rooms[key]
        if key in desired.rooms:
            continue
        # A room no longer wanted is run by whichever of the bridge's users is in it.
        if keyless and o.members.get(keyless) == "join" and o.members.get(bot) != "join":
            actors[key] = keyless
        if not o.archived:
            # A room no longer wanted (a class of last year, a pupil who left) becomes read-only
            # at once; its members stay, able to read and save, until the grace period ends.
            buckets["archive_room"].append(Action("archive_room", key, reasons["archived"]))
        elif o.grace_over:
            for user in sorted(o.current() - managers):
                buckets["kick"].append(Action("kick", key, reasons["grace_over"], user, {"announced": True}))
    buckets["kick"].sort(key=Action.sort_key)
    buckets["erase_person"] = [Action("erase_person", "-", "left the directory more than the grace period ago",
                                      user, {"person": pid, "deactivate": provisioned})
                               for pid, user, provisioned in sorted(erase)]
    buckets["provision_account"] = [Action("provision_account", "-", "no account yet for a person of the directory",
                                           user) for user in sorted(missing_accounts)]
    actions = [a for phase in sorted(A.PHASES, key=A.PHASES.__getitem__) for a in buckets[phase]]
    return Plan(tuple(actions), desired.rooms, tuple(notes), actors)
