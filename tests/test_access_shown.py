"""Names and topics held to the room's moderation by the Synapse module: what the bridge
publishes, what the module reads back, refuses, or lets through without the offending text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from synapse.api.errors import SynapseError

from bridge.access.links import managed_rooms, relations
from bridge.access.shown import check_state, global_name_refused, publish, restore
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.access.synapse_module import AccessModule, parse
from bridge.policy.folder import check_folder
from bridge.policy.model import AccessPolicy
from tests.test_access_rules import ANNE, BRIDGE, CLAIRE, MARC, ROOT, WHO, _Api

TEMPLATES, POLICIES = check_folder(ROOT / "policies")
PUBLISHED = publish(TEMPLATES, POLICIES)
RULES = restore(json.loads(json.dumps(PUBLISHED["class"])))  # through JSON, as the snapshot keeps it
ROOM = "!class:ent.test"


def member(user: str, name: str | None, membership: str = "join") -> dict[str, Any]:
    content: dict[str, Any] = {"membership": membership}
    if name is not None:
        content["displayname"] = name
    return {"type": "m.room.member", "state_key": user, "sender": user, "content": content}


def class_room(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """A class room as the bridge makes it: the bot creates it (room version 10: no privileged
    creators), Claire teaches (power 50), Anne is a parent."""
    return [{"type": "m.room.create", "state_key": "", "sender": "@ent-bridge_bot:ent.test",
             "content": {"room_version": "10"}},
            {"type": "m.room.power_levels", "state_key": "", "sender": "@ent-bridge_bot:ent.test",
             "content": {"users": {"@ent-bridge_bot:ent.test": 100, CLAIRE: 50}, "users_default": 0}},
            member("@ent-bridge_bot:ent.test", "ENT"), member(CLAIRE, "Claire Dubois"), member(ANNE, "Anne Martin"),
            *extra]


def test_every_template_publishes_its_profile_and_reads_back_the_same() -> None:
    assert set(PUBLISHED) == {n for n, t in TEMPLATES.items() if t.moderation} and "class" in PUBLISHED
    for name, template in TEMPLATES.items():
        if not template.moderation:
            continue
        profile = POLICIES.profiles[template.moderation]
        back = restore(json.loads(json.dumps(PUBLISHED[name]))).profile
        assert (back.exempt_power, back.max_chars, back.banned_words, back.links, back.names) == (
            profile.exempt_power, profile.max_chars, profile.banned_words, profile.links, profile.names)
    assert RULES.profile.names is not None and RULES.compiled_words
    with pytest.raises(ValueError, match="unknown shape"):
        restore({"profile": "x", "exempt_power": 50})


@pytest.mark.parametrize(("name", "refused"), [
    ("Mme la Directrice", True), ("Le Prof de CP", True), ("CLAIRE DUBΟIS", True),  # a title, the teacher's name
    ("c0nnard", True), ("Anne Martin", False), ("Maman de Lina", False), ("Giulia Profeta", False),
])
def test_a_parents_rename_is_refused_when_the_room_would_take_it_back(name: str, refused: bool) -> None:
    verdict = check_state(RULES, ANNE, "m.room.member", ANNE, member(ANNE, name)["content"], class_room())
    assert (verdict is not None and verdict.refuse is not None) is refused
    if verdict is not None:
        assert name not in str(verdict.refuse) and "refused by the school's rules" in str(verdict.refuse)


def test_nobody_is_kept_out_of_a_room_or_in_one_by_their_name() -> None:
    # Accepting an invitation under an offending global name: joined, the name left out.
    state = class_room(member("@sara:ent.test", None, "invite"))
    verdict = check_state(RULES, "@sara:ent.test", "m.room.member", "@sara:ent.test",
                          {"membership": "join", "displayname": "Directrice", "avatar_url": "mxc://ent.test/a"}, state)
    assert verdict is not None and verdict.refuse is None
    assert verdict.content == {"membership": "join", "avatar_url": "mxc://ent.test/a"}
    # Leaving with an insult as the reason: left, the reason left out.
    verdict = check_state(RULES, ANNE, "m.room.member", ANNE, {"membership": "leave", "reason": "bande de connards"},
                          class_room())
    assert verdict is not None and verdict.content == {"membership": "leave"}
    assert check_state(RULES, ANNE, "m.room.member", ANNE, {"membership": "leave", "reason": "déménagement"},
                       class_room()) is None


def test_staff_names_and_topics_are_theirs_but_a_members_topic_is_read() -> None:
    assert check_state(RULES, CLAIRE, "m.room.member", CLAIRE, member(CLAIRE, "Prof. Dubois")["content"],
                       class_room()) is None
    assert check_state(RULES, CLAIRE, "m.room.topic", "", {"topic": "connard"}, class_room()) is None
    verdict = check_state(RULES, ANNE, "m.room.topic", "", {"topic": "sale connard"}, class_room())
    assert verdict is not None and verdict.refuse is not None
    assert check_state(RULES, ANNE, "m.room.message", None, {"body": "connard"}, class_room()) is None  # not state
    # Room version 12: the creator outranks everyone, power levels or not.
    v12 = [{"type": "m.room.create", "state_key": "", "sender": MARC, "content": {"room_version": "12"}},
           member(MARC, "Marc Petit"), member(ANNE, "Anne")]
    assert check_state(RULES, MARC, "m.room.member", MARC, member(MARC, "Directeur")["content"], v12) is None
    assert check_state(RULES, ANNE, "m.room.member", ANNE, member(ANNE, "MARC PETIT")["content"], v12) is not None


def test_a_global_name_refused_in_the_rooms_is_refused_in_the_directory() -> None:
    rules = [RULES]
    assert global_name_refused(rules, "Secrétariat de l'école") and global_name_refused(rules, "s a l o p e")
    assert not global_name_refused(rules, "Anne Martin") and not global_name_refused(rules, None)
    assert not global_name_refused([], "Directrice")


class _Event:
    def __init__(self, room_id: str, sender: str, etype: str, state_key: str, content: dict[str, Any]) -> None:
        self.room_id, self.sender, self.type, self.state_key, self.content = room_id, sender, etype, state_key, content

    def is_state(self) -> bool:
        return True

    def get_dict(self) -> dict[str, Any]:
        return {"room_id": self.room_id, "sender": self.sender, "type": self.type, "state_key": self.state_key,
                "content": self.content, "origin_server_ts": 1}


def _state(events: list[dict[str, Any]], template: str) -> dict[tuple[str, str], _Event]:
    out = {(ev["type"], ev["state_key"]): _Event(ROOM, ev["sender"], ev["type"], ev["state_key"], ev["content"])
           for ev in events}
    out[("fr.ent-bridge.room", "")] = _Event(ROOM, "@ent-bridge_bot:ent.test", "fr.ent-bridge.room", "",
                                             {"ref": "ent-bridge_x", "template": template})
    return out


def _module(tmp_path: Path, *, shown: bool = True) -> AccessModule:
    from datetime import UTC, datetime

    from bridge.directory.sources import load
    from bridge.rooms.desired import Settings, compute

    directory, _ = load([str(ROOT / "tests" / "fixtures" / "school.yaml")])
    desired = compute(directory, TEMPLATES, WHO, settings=Settings(bot_user_id="@ent-bridge_bot:ent.test",
                      key_secret="k" * 32, alias_prefix="ent-bridge_"), now=datetime(2026, 12, 7, tzinfo=UTC))
    path = tmp_path / "access.sqlite"
    write_snapshot(path, relations(directory, WHO, AccessPolicy(), secret="s" * 32), managed_rooms(desired.rooms),
                   {}, generated_ms=1, shown=PUBLISHED if shown else None)
    return AccessModule(parse({"snapshot": str(path), "bridge_users": sorted(BRIDGE)}), _Api())


async def test_the_module_refuses_a_rename_and_takes_a_joins_name_out(tmp_path: Path) -> None:
    module = _module(tmp_path)
    state = _state(class_room(member("@sara:ent.test", None, "invite")), "class")
    rename = _Event(ROOM, ANNE, "m.room.member", ANNE, {"membership": "join", "displayname": "La directrice"})
    with pytest.raises(SynapseError) as refused:
        await module.check_event_allowed(rename, state)
    assert refused.value.code == 403 and "charte" in refused.value.msg
    join = _Event(ROOM, "@sara:ent.test", "m.room.member", "@sara:ent.test",
                  {"membership": "join", "displayname": "connasse"})
    allowed, replacement = await module.check_event_allowed(join, state)
    assert allowed and replacement is not None and replacement["content"] == {"membership": "join"}
    assert replacement["sender"] == "@sara:ent.test" and replacement["type"] == "m.room.member"
    ordinary = _Event(ROOM, ANNE, "m.room.member", ANNE, {"membership": "join", "displayname": "Anne M."})
    assert await module.check_event_allowed(ordinary, state) == (True, None)
    # An unmanaged room, a template without published rules, the bridge's own users: not held.
    assert await module.check_event_allowed(rename, {k: v for k, v in state.items() if k[0] != "fr.ent-bridge.room"}
                                            ) == (True, None)
    assert await module.check_event_allowed(rename, _state(class_room(), "unknown")) == (True, None)
    bot = _Event(ROOM, "@ent-bridge:ent.test", "m.room.member", "@ent-bridge:ent.test",
                 {"membership": "join", "displayname": "ENT"})
    assert await module.check_event_allowed(bot, state) == (True, None)


async def test_the_directory_hides_a_parents_offending_name_but_not_a_teachers_title(tmp_path: Path) -> None:
    module = _module(tmp_path)
    assert await module.check_username_for_spam({"user_id": ANNE, "display_name": "Mme la Directrice"}, CLAIRE)
    assert not await module.check_username_for_spam({"user_id": ANNE, "display_name": "Anne Martin"}, CLAIRE)
    assert not await module.check_username_for_spam({"user_id": CLAIRE, "display_name": "Prof. Dubois"}, ANNE)
    assert not await module.check_username_for_spam({"user_id": ANNE, "display_name": "Directrice"},
                                                    "@ent-bridge:ent.test")  # the bridge's users find anyone
    # A snapshot written before names were published (format 3 readers, older bridges): no names check.
    older = _module(tmp_path / "older", shown=False)
    assert not await older.check_username_for_spam({"user_id": ANNE, "display_name": "Directrice"}, CLAIRE)


def as_older_format(path: Path, version: str, *missing: str) -> AccessSnapshot:
    """The snapshot at `path` as an older bridge wrote it (format `version`, without the tables
    `missing`), read afresh."""
    import sqlite3

    db = sqlite3.connect(path)
    for table in missing:
        db.execute(f"DROP TABLE {table}")
    db.execute("UPDATE meta SET v = ? WHERE k = 'format'", (version,))
    db.commit()
    db.close()
    snap = AccessSnapshot(path)
    assert snap.refresh()
    return snap


def test_a_format_3_snapshot_is_still_read(tmp_path: Path) -> None:
    _module(tmp_path)
    snap = as_older_format(tmp_path / "access.sqlite", "3", "shown", "given")
    assert snap.shown == {} and snap.known(ANNE)
