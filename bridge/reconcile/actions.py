"""The plan's vocabulary: one frozen value per action kind, carrying what it replaces and writes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from bridge.rooms.desired import DesiredRoom


class Phase(IntEnum):
    """The one apply order. Accounts exist before they are invited; Spaces before rooms are added
    to them; power levels before invites, so an invited teacher is a moderator from the first
    moment; kicks after invites; archiving and erasure last."""

    PROVISION_ACCOUNT = 0
    CREATE_SPACE = 1
    CREATE_ROOM = 2
    TRANSFER_ROOM = 3
    SET_STATE = 4
    SET_POWER_LEVELS = 5
    INVITE = 6
    KICK = 7
    ADD_TO_SPACE = 8
    ARCHIVE_ROOM = 9
    UNARCHIVE_ROOM = 10
    ERASE_PERSON = 11


class Stage(IntEnum):
    """The executor runs stages one after the other, rooms concurrently within a stage:
    accounts and Spaces first, then every room's own work, then what links rooms together."""

    PREPARE = 0
    ROOMS = 1
    FINISH = 2


def stage_of(phase: Phase) -> Stage:
    if phase <= Phase.CREATE_SPACE:
        return Stage.PREPARE
    return Stage.FINISH if phase >= Phase.ADD_TO_SPACE else Stage.ROOMS


Content = Mapping[str, Any]


# --- actions on one room (keyed by the room) --------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreateRoom:
    """A room (or Space) with all its initial state: name, topic, encryption, join rules,
    history, guest access, retention, power levels. Before: nothing."""

    room: DesiredRoom
    reason: str

    @property
    def room_key(self) -> str:
        return self.room.key

    @property
    def kind(self) -> str:
        return "create_space" if self.room.is_space else "create_room"

    @property
    def phase(self) -> Phase:
        return Phase.CREATE_SPACE if self.room.is_space else Phase.CREATE_ROOM


@dataclass(frozen=True, slots=True)
class ReplaceRoom:
    """A room the bridge can't use (its alias exists, but none of the bridge's users is in it: a
    homeserver killed inside createRoom): the alias is taken back and a new room made in its place,
    with all its initial state. Before: the unusable room's id."""

    kind: ClassVar[str] = "replace_room"
    phase: ClassVar[Phase] = Phase.CREATE_ROOM
    room: DesiredRoom
    reason: str
    old_room_id: str

    @property
    def room_key(self) -> str:
        return self.room.key


@dataclass(frozen=True, slots=True)
class TransferRoom:
    """Hand a room over between the bot and the keyless user (content inspection changed)."""

    kind: ClassVar[str] = "transfer_room"
    phase: ClassVar[Phase] = Phase.TRANSFER_ROOM
    room_key: str
    reason: str
    to: str
    held_by: str | None
    leaving: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetState:
    """One state event (name, topic, retention): its content before -> after."""

    kind: ClassVar[str] = "set_state"
    phase: ClassVar[Phase] = Phase.SET_STATE
    room_key: str
    reason: str
    event_type: str
    before: Content | None
    after: Content


@dataclass(frozen=True, slots=True)
class SetPowerLevels:
    """The template's power levels. At apply time the room's owner and current mutes (which
    moderation owns and lifts) are kept on top of `after`."""

    kind: ClassVar[str] = "set_power_levels"
    phase: ClassVar[Phase] = Phase.SET_POWER_LEVELS
    room_key: str
    reason: str
    keys: tuple[str, ...]  # the top-level keys that differ
    before: Content
    after: Content


@dataclass(frozen=True, slots=True)
class Invite:
    kind: ClassVar[str] = "invite"
    phase: ClassVar[Phase] = Phase.INVITE
    room_key: str
    user_id: str
    reason: str
    before: str | None = None  # membership before (None: never a member)


@dataclass(frozen=True, slots=True)
class Kick:
    kind: ClassVar[str] = "kick"
    phase: ClassVar[Phase] = Phase.KICK
    room_key: str
    user_id: str
    reason: str
    before: str = "join"
    announced: bool = False  # archived room emptied after its grace period: expected, not guarded


@dataclass(frozen=True, slots=True)
class AddToSpace:
    kind: ClassVar[str] = "add_to_space"
    phase: ClassVar[Phase] = Phase.ADD_TO_SPACE
    room_key: str  # the Space
    child_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class LinkToSpace:
    """A room its Space doesn't list (a family room: the Space's child list would show its id to
    every family of the school) names its Space itself, in state only its own members read."""

    kind: ClassVar[str] = "link_to_space"
    phase: ClassVar[Phase] = Phase.ADD_TO_SPACE
    room_key: str  # the room
    space_key: str
    reason: str


@dataclass(frozen=True, slots=True)
class UnlistFromSpace:
    """Before: the Space lists the room among its children; after: it doesn't."""

    kind: ClassVar[str] = "unlist_from_space"
    phase: ClassVar[Phase] = Phase.ADD_TO_SPACE
    room_key: str  # the Space
    child_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ArchiveRoom:
    """Read-only at once, with a final topic; emptied after the grace period."""

    kind: ClassVar[str] = "archive_room"
    phase: ClassVar[Phase] = Phase.ARCHIVE_ROOM
    room_key: str
    reason: str
    name_before: str
    name_after: str
    topic_before: str
    topic_after: str
    power_before: Content
    power_after: Content
    members: frozenset[str] = frozenset()  # who is in it now: removed when the grace period ends
    successor: str | None = None  # the desired room taking over (the same class, next school year)


@dataclass(frozen=True, slots=True)
class UnarchiveRoom:
    """Marks a reopened room active, once its name, topic, power and members were restored."""

    kind: ClassVar[str] = "unarchive_room"
    phase: ClassVar[Phase] = Phase.UNARCHIVE_ROOM
    room_key: str
    reason: str


# --- actions on one person (keyed by the person) ------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProvisionAccount:
    kind: ClassVar[str] = "provision_account"
    phase: ClassVar[Phase] = Phase.PROVISION_ACCOUNT
    person_id: str
    user_id: str
    reason: str
    display_name: str
    email: str | None = None
    external_id: tuple[str, str] | None = None  # (SSO provider, the directory id)


@dataclass(frozen=True, slots=True)
class ErasePerson:
    kind: ClassVar[str] = "erase_person"
    phase: ClassVar[Phase] = Phase.ERASE_PERSON
    person_id: str
    user_id: str
    reason: str
    deactivate: bool  # the bridge created the account: it is deactivated with erasure


RoomAction = (CreateRoom | ReplaceRoom | TransferRoom | SetState | SetPowerLevels | Invite | Kick | AddToSpace
              | LinkToSpace | UnlistFromSpace | ArchiveRoom | UnarchiveRoom)
PersonAction = ProvisionAccount | ErasePerson
Action = RoomAction | PersonAction


def target(action: Action) -> str:
    """What an action is keyed by: its room key, or `person:ID` for a person."""
    if isinstance(action, (ProvisionAccount, ErasePerson)):
        return f"person:{action.person_id}"
    return action.room_key


def subject(action: Action) -> str | None:
    """The person an action is about, if any."""
    if isinstance(action, (Invite, Kick, ProvisionAccount, ErasePerson)):
        return action.user_id
    if isinstance(action, TransferRoom):
        return action.to
    return None


def sort_key(action: Action) -> tuple[int, str, str]:
    return (action.phase, target(action), subject(action) or "")


_A = TypeVar("_A")
_YEAR = re.compile(r"^\d{4}-\d{4}$")


def lasting_key(key: str) -> str:
    """A room key without its school year: last year's class room and this year's share it."""
    return ":".join(p for p in key.split(":") if not _YEAR.match(p))


def create(room: DesiredRoom) -> CreateRoom:
    return CreateRoom(room, f"no room yet for {room.template} {room.key}")


@dataclass(frozen=True)
class Plan:
    """A value: the actions in apply order, the desired rooms they came from, notes for review,
    and who acts in each room where it is not the bot (the keyless user)."""

    actions: tuple[Action, ...]
    desired: Mapping[str, DesiredRoom]
    notes: tuple[str, ...] = ()
    actors: Mapping[str, str] = field(default_factory=dict)

    @property
    def removals(self) -> int:
        """Removals the guards weigh: kicks, erasures, and the members of rooms archived now (read-only
        at once, emptied later) who don't find the same people's room of the new school year. Kicks
        announced at archiving time (grace period over) were weighed then, and don't count again."""
        archived = 0
        for a in self.actions:
            if isinstance(a, ArchiveRoom):
                successor = self.desired.get(a.successor or "")
                archived += len(a.members - successor.members) if successor is not None else len(a.members)
        return archived + sum(1 for a in self.actions
                              if (isinstance(a, Kick) and not a.announced) or isinstance(a, ErasePerson))

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.actions:
            out[a.kind] = out.get(a.kind, 0) + 1
        return dict(sorted(out.items()))

    def is_empty(self) -> bool:
        return not self.actions

    def of(self, kind: type[_A]) -> list[_A]:
        """The actions of one class, in order (for tests and callers that look for one kind)."""
        return [a for a in self.actions if isinstance(a, kind)]
