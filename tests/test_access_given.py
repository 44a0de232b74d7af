"""A person's own name, as the directory gives it, is theirs: not a title nor an insult, in the
rooms (the module and the bridge) and in the user directory; the rest of a name is still read."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
from synapse.api.errors import SynapseError

from bridge.access.given import digest, given_names, without_own_name
from bridge.access.links import managed_rooms, relations
from bridge.access.shown import check_state, global_name_refused
from bridge.access.snapshot import write_snapshot
from bridge.access.synapse_module import AccessModule, parse
from bridge.directory.model import Directory
from bridge.directory.sources import load
from bridge.policy.model import AccessPolicy
from bridge.rooms.desired import Settings, compute
from tests.test_access_rules import ANNE, BRIDGE, MARC, ROOT, SARA, WHO, _Api
from tests.test_access_shown import (
    PUBLISHED,
    ROOM,
    RULES,
    TEMPLATES,
    _Event,
    _state,
    as_older_format,
    class_room,
    member,
)


def _directory() -> Directory:
    """The fixture school, where Sara's family name is Maître (a title in the names rule) and
    Paul's is Salaud (a banned word): both real French family names."""
    directory, _ = load([str(ROOT / "tests" / "fixtures" / "school.yaml")])
    guardians = dict(directory.guardians)
    guardians["g-sara"] = dataclasses.replace(guardians["g-sara"], last_name="Maître")
    guardians["g-paul"] = dataclasses.replace(guardians["g-paul"], last_name="Salaud")
    return dataclasses.replace(directory, guardians=guardians)


GIVEN = given_names(_directory(), WHO)
PAUL = WHO["g-paul"]


@pytest.mark.parametrize(("user", "name", "refused"), [
    (SARA, "Sara Maître", False),
    (SARA, "MAÎTRE Sara", False),  # either order, any case and accents
    (SARA, "Sara Maitre (maman d'Inès)", False),  # the rest is read, and is fine
    (SARA, "Sara Mаître", False),  # a homoglyph of her own name is still her name
    (SARA, "Sara Maître, directrice", True),  # the rest poses as the staff
    (SARA, "Sara Maître connasse", True),  # the rest insults
    (SARA, "Maître", True),  # not her whole name: a title
    (SARA, "Sara Maître bit.ly/x", True),  # every other rule reads the name as shown
    (PAUL, "Paul Salaud", False),
    (PAUL, "Salaud", True),
    (ANNE, "Sara Maître", True),  # someone else's name is not one's own
    (ANNE, "Anne Martin", False),
])
def test_a_name_is_read_without_its_holders_own_name(user: str, name: str, refused: bool) -> None:
    given = GIVEN.get(user, frozenset())
    assert global_name_refused([RULES], name, user=user, given=given) is refused
    join = {"membership": "join", "displayname": name}
    state = [*class_room(), member(user, "x")]
    verdict = check_state(RULES, user, "m.room.member", user, join, state, given=given)
    assert (verdict is not None and verdict.refuse is not None) is refused


def test_the_digests_name_nobody_and_a_long_name_is_read_whole() -> None:
    assert set(GIVEN) <= set(WHO.values()) and GIVEN[SARA] == {digest(SARA, "sara maitre"), digest(SARA, "maitre sara")}
    assert without_own_name(SARA, "Sara Maître", GIVEN[SARA]) == ""
    assert without_own_name(SARA, "Sara Maître " + "x " * 20, GIVEN[SARA]) is None
    assert without_own_name(SARA, "Sara Maître", ()) is None


def _module(tmp_path: Path, *, given: bool = True) -> AccessModule:
    directory = _directory()
    desired = compute(directory, TEMPLATES, WHO, settings=Settings(bot_user_id="@ent-bridge_bot:ent.test",
                      key_secret="k" * 32, alias_prefix="ent-bridge_"), now=datetime(2026, 12, 7, tzinfo=UTC))
    path = tmp_path / "access.sqlite"
    write_snapshot(path, relations(directory, WHO, AccessPolicy(), secret="s" * 32), managed_rooms(desired.rooms),
                   {}, generated_ms=1, shown=PUBLISHED, given=given_names(directory, WHO) if given else None)
    return AccessModule(parse({"snapshot": str(path), "bridge_users": sorted(BRIDGE)}), _Api())


async def test_the_module_lets_a_parent_show_her_own_name_and_finds_her(tmp_path: Path) -> None:
    module = _module(tmp_path)
    assert module.snapshot.given(SARA) == GIVEN[SARA]
    state = _state(class_room(member(SARA, "Sara")), "class")
    own = _Event(ROOM, SARA, "m.room.member", SARA, {"membership": "join", "displayname": "Sara Maître"})
    assert await module.check_event_allowed(own, state) == (True, None)
    posing = _Event(ROOM, SARA, "m.room.member", SARA, {"membership": "join", "displayname": "Maître Sara, CPE"})
    with pytest.raises(SynapseError):
        await module.check_event_allowed(posing, state)
    # Marc teaches Sara's daughter: he finds her by her name; Anne's showing it is hidden.
    assert not await module.check_username_for_spam({"user_id": SARA, "display_name": "Sara Maître"}, MARC)
    assert await module.check_username_for_spam({"user_id": ANNE, "display_name": "Sara Maître"}, MARC)
    assert not await module.check_username_for_spam({"user_id": ANNE, "display_name": "Anne Martin"}, MARC)
    # Without the digests (a snapshot from before them): her name is read like any name.
    older = _module(tmp_path / "older", given=False)
    assert older.snapshot.given(SARA) == frozenset()
    assert await older.check_username_for_spam({"user_id": SARA, "display_name": "Sara Maître"}, MARC)


def test_a_format_4_snapshot_is_still_read(tmp_path: Path) -> None:
    _module(tmp_path)
    snap = as_older_format(tmp_path / "access.sqlite", "4", "given")
    assert snap.given(SARA) == frozenset() and snap.known(SARA) and snap.shown
