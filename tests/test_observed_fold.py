"""Folding a delta /sync into a room's cached state (pure): what is trusted, and what is read whole."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.reconcile.observed import fold_delta, reduce_state

BOT = "@ent-bridge_bot:ent.test"


def ev(etype: str, key: str, content: dict[str, Any], *, sender: str = BOT, replaces: str | None = None) -> dict[str, Any]:
    e: dict[str, Any] = {"type": etype, "state_key": key, "sender": sender, "content": content}
    if replaces:
        e["unsigned"] = {"replaces_state": replaces}
    return e


def entry(timeline: list[dict[str, Any]], *, state: list[dict[str, Any]] = (), limited: bool = False) -> dict[str, Any]:
    return {"state": {"events": list(state)}, "timeline": {"events": timeline, "limited": limited}}


CACHED = reduce_state([ev("m.room.member", BOT, {"membership": "join"}), ev("m.room.name", "", {"name": "CP"}),
                       ev("m.room.member", "@a:ent.test", {"membership": "invite"})])


def by_key(events: list[dict[str, Any]] | None) -> dict[tuple[str, str], Any]:
    assert events is not None
    return {(e["type"], e["state_key"]): e["content"] for e in events}


def test_changes_fold_over_the_cache_in_order() -> None:
    folded = fold_delta(CACHED, entry([ev("m.room.name", "", {"name": "CE1"}, replaces="$n"),
                                       ev("m.room.member", "@a:ent.test", {"membership": "leave", "reason": "x"},
                                          replaces="$i"),
                                       ev("m.room.member", "@a:ent.test", {"membership": "invite"}, replaces="$k")]),
                        BOT)
    assert by_key(folded) == {("m.room.member", BOT): {"membership": "join"}, ("m.room.name", ""): {"name": "CE1"},
                              ("m.room.member", "@a:ent.test"): {"membership": "invite"}}


def test_a_room_the_user_made_comes_whole_even_limited() -> None:
    join = ev("m.room.member", BOT, {"membership": "join"})
    folded = fold_delta(None, entry([ev("m.room.topic", "", {"topic": "t"})], state=[join], limited=True), BOT)
    assert by_key(folded) == {("m.room.member", BOT): {"membership": "join"}, ("m.room.topic", ""): {"topic": "t"}}


@pytest.mark.parametrize("why, cached, delta", [
    ("a gap", CACHED, entry([ev("m.room.name", "", {"name": "x"}, replaces="$n")], limited=True)),
    ("a redaction", CACHED, entry([{"type": "m.room.redaction", "sender": BOT, "content": {}, "redacts": "$n"}])),
    ("nothing cached", None, entry([ev("m.room.name", "", {"name": "x"}, replaces="$n")])),
    ("joined on an invite", None, entry([ev("m.room.member", BOT, {"membership": "join"}, replaces="$inv")],
                                        limited=True)),
    ("someone else's first join", None, entry([ev("m.room.member", BOT, {"membership": "join"}, sender="@x:e.t")])),
    ("its own first join is a leave", None, entry([ev("m.room.member", BOT, {"membership": "leave"})])),
])
def test_what_is_read_whole(why: str, cached: list[dict[str, Any]] | None, delta: dict[str, Any]) -> None:
    assert fold_delta(cached, delta, BOT) is None, why
