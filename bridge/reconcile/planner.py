"""The planner (pure): desired x observed -> Plan. Planning right after an apply is empty."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.reconcile import actions as A
from bridge.reconcile.actions import Phase, Plan
from bridge.reconcile.observed import ObservedRoom, ObservedState
from bridge.reconcile.requests import ARCHIVED_PREFIX, ARCHIVED_TOPIC, security_state
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
               reasons: Mapping[str, str], space_ids: Mapping[str, str | None], unlisted: frozenset[str],
               space_id: str | None) -> list[A.RoomAction]:
    """space_ids: a Space's listed rooms (key -> id, None: not made yet); unlisted: ids of rooms
    it must not list; space_id: the id of the Space this room names as parent (None: not made yet)."""
    out: list[A.RoomAction] = []
    owner = d.owner or bot
    if o is None or o.unreadable:
        out.append(A.create(d) if o is None else
                   A.ReplaceRoom(d, "none of the bridge's users can enter the room (left unusable)", o.room_id))
        current: set[str] = set()
        membership: Mapping[str, str] = {}
    else:
        current = o.current() - managers
        membership = o.members
        others = tuple(sorted(m for m in managers - {owner} if o.members.get(m) in ("join", "invite")))
        if o.members.get(owner) != "join" or others:
            # The template's content inspection changed: the room changes hands, and the user
            # that is not to read it (the bot's device) leaves, so clients stop sharing keys with it.
            held_by = next((m for m in sorted(managers) if o.members.get(m) == "join" and m != owner), None)
            out.append(A.TransferRoom(d.key, "the room's content inspection setting changed", owner, held_by, others))
        out.extend(_security_repairs(d, o))
        if o.name != d.name:
            out.append(A.SetState(d.key, "room name differs from the template", "m.room.name",
                                  {"name": o.name} if o.name else None, {"name": d.name}))
        if o.topic != d.topic and (d.topic or o.archived):  # a reopened room loses the archive topic
            out.append(A.SetState(d.key, "room topic differs from the template", "m.room.topic",
                                  {"topic": o.topic} if o.topic else None, {"topic": d.topic}))
        if d.retention_ms is not None and o.retention_ms != d.retention_ms:
            out.append(A.SetState(d.key, "message retention differs from the policy", "m.room.retention",
                                  None if o.retention_ms is None else {"max_lifetime": o.retention_ms},
                                  {"max_lifetime": d.retention_ms}))
        diff = power_levels_differ(d.power_levels, o.power_levels, managers=managers)
        if not o.has_power_levels:  # absent: any member could change any state
            out.append(A.SetPowerLevels(d.key, "the room has no power levels", tuple(sorted(d.power_levels)), {},
                                        d.power_levels))
        elif diff:
            out.append(A.SetPowerLevels(d.key, "power levels differ from the template", tuple(diff),
                                        o.power_levels, d.power_levels))
    by_choice = o.left_by_choice if o is not None else frozenset()
    for user in sorted(d.members - current):
        if membership.get(user) == "ban":
            continue  # a moderator's ban stands; reported in the plan's notes
        if user in by_choice:
            continue  # they left (or declined) themselves: no new invite every hour; see notes
        out.append(A.Invite(d.key, user, reasons["entitled"], membership.get(user)))
    out.extend(A.Kick(d.key, user, reasons["not_entitled"], membership.get(user, "join"))
               for user in sorted(current - d.members))
    if d.is_space:
        have = o.children if o is not None else frozenset()
        for child_key, child_id in sorted(space_ids.items()):
            if child_id is None or child_id not in have:
                out.append(A.AddToSpace(d.key, child_key, "room belongs in its school's Space"))
        out.extend(A.UnlistFromSpace(d.key, child_id, "a family's room is not listed to the whole school")
                   for child_id in sorted(have & unlisted))
    elif d.space_key and not d.space_listed and (o is None or space_id is None or space_id not in o.parents):
        out.append(A.LinkToSpace(d.key, d.space_key, "room belongs in its school's Space"))
    return out


_OBSERVED_SECURITY = {"m.room.encryption": ("encryption", "algorithm"),
                      "m.room.join_rules": ("join_rule", "join_rule"),
                      "m.room.history_visibility": ("history_visibility", "history_visibility"),
                      "m.room.guest_access": ("guest_access", "guest_access")}


def _security_repairs(d: DesiredRoom, o: ObservedRoom) -> list[A.SetState]:
    """Encryption, join rule, history visibility and guest access back to the template's, from
    whatever the room holds: changed by someone with power, or absent (left half-created)."""
    out = []
    for etype, want in security_state(d).items():
        attr, key = _OBSERVED_SECURITY[etype]
        have = getattr(o, attr)
        if have != want[key]:
            out.append(A.SetState(d.key, f"{etype} differs from the template ({have or 'absent'})", etype,
                                  None if have is None else {key: have}, want))
    return out


def _archive(o: ObservedRoom, *, language: str, grace_days: int, reason: str,
             managers: frozenset[str], successor: str | None) -> A.ArchiveRoom:
    """Read-only (nobody but moderators of 100 may post), a prefixed name and a final topic."""
    prefix = ARCHIVED_PREFIX.get(language, ARCHIVED_PREFIX["fr"])
    name = o.name if o.name.startswith(prefix) else prefix + o.name
    topic = ARCHIVED_TOPIC.get(language, ARCHIVED_TOPIC["fr"]).format(days=grace_days)
    return A.ArchiveRoom(o.key, reason, o.name, name, o.topic, topic, o.power_levels,
                         {**o.power_levels, "events_default": 100}, frozenset(o.current()) - managers, successor)


def plan(desired: DesiredState, observed: ObservedState, *, bot: str, language: str = "fr",
         keyless: str | None = None, accounts: Sequence[A.ProvisionAccount] = (),
         erase: Sequence[A.ErasePerson] = (), grace_days: int = 30) -> Plan:
    """keyless: the device-less user running rooms without content inspection;
    accounts: accounts to create first; erase: leavers past the grace period;
    grace_days: how long an archived room stays readable (said in its final topic)."""
    reasons = REASONS.get(language, REASONS["fr"])
    managers = frozenset(u for u in (bot, keyless) if u)
    actors: dict[str, str] = {}
    notes: list[str] = list(desired.warnings)
    children: dict[str, dict[str, str | None]] = {}
    unlisted: dict[str, set[str]] = {}
    for d in desired.rooms.values():
        if d.space_key:
            o = observed.rooms.get(d.key)
            if d.space_listed:
                children.setdefault(d.space_key, {})[d.key] = o.room_id if o else None
            elif o is not None:
                unlisted.setdefault(d.space_key, set()).add(o.room_id)
    # One bucket per phase. Rooms are visited in key order and people in id order, so every
    # bucket but the kicks (two sources) comes out sorted: no global sort of millions of actions.
    buckets: dict[Phase, list[A.Action]] = {p: [] for p in Phase}
    for key in sorted(desired.rooms):
        d = desired.rooms[key]
        o = observed.rooms.get(key)
        if o is not None and o.archived:
            # Wanted again (a class emptied, then refilled; a pupil back): the room is restored
            # (name, topic, power, members) and marked active once that is done.
            buckets[Phase.UNARCHIVE_ROOM].append(A.UnarchiveRoom(key, reasons["reopened"]))
        if d.owner and d.owner != bot:
            actors[key] = d.owner
        space = observed.rooms.get(d.space_key) if d.space_key else None
        for action in _plan_room(d, o, bot=bot, managers=managers, reasons=reasons,
                                 space_ids=children.get(key, {}), unlisted=frozenset(unlisted.get(key, ())),
                                 space_id=space.room_id if space is not None else None):
            buckets[action.phase].append(action)
        if o is not None:
            banned = sorted(u for u in d.members if o.members.get(u) == "ban")
            if banned:
                notes.append(f"{key}: {len(banned)} entitled people are banned and stay out")
            declined = sorted(u for u in d.members if u in o.left_by_choice and o.members.get(u) == "leave")
            if declined:
                notes.append(f"{key}: {len(declined)} entitled people left or declined the invite themselves "
                             "and are not invited again")
    # Year-scoped rooms by their lasting key (class:UAI:CODE), built once: a rollover archives
    # thousands of rooms, each looking up this year's room for the same class.
    by_lasting = {lasting: k for k in desired.rooms if (lasting := A.lasting_key(k)) != k}
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
            lasting = A.lasting_key(key)
            buckets[Phase.ARCHIVE_ROOM].append(_archive(
                o, language=language, grace_days=grace_days, reason=reasons["archived"], managers=managers,
                successor=by_lasting.get(lasting) if lasting != key else None))
        elif o.grace_over:
            for user in sorted(o.current() - managers):
                buckets[Phase.KICK].append(A.Kick(key, user, reasons["grace_over"], o.members[user], announced=True))
    buckets[Phase.KICK].sort(key=A.sort_key)
    buckets[Phase.ERASE_PERSON] = sorted(erase, key=A.sort_key)
    buckets[Phase.PROVISION_ACCOUNT] = sorted(accounts, key=A.sort_key)
    actions = [a for phase in Phase for a in buckets[phase]]
    return Plan(tuple(actions), desired.rooms, tuple(notes), actors)
