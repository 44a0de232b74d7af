"""The bot's cached JSON Schema validators answer as nio's own: valid events parse, invalid ones
are still refused (a BadEvent), whatever the order."""

from __future__ import annotations

import nio
import nio.events.misc

from bridge.matrix import nio_schemas


def test_cached_validation_accepts_and_refuses_as_nio_does() -> None:
    nio_schemas.install()
    assert nio.events.misc.validate_json is nio_schemas.validate_json
    good = {"type": "m.room.message", "event_id": "$1", "sender": "@a:ent.test", "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "bonjour"}}
    bad = {**good, "sender": "not-a-user-id"}
    for _ in range(2):  # the second time from the cache
        assert isinstance(nio.Event.parse_event(good), nio.RoomMessageText)
        assert isinstance(nio.Event.parse_event(bad), nio.BadEvent)
        assert isinstance(nio.Event.parse_event({**good, "content": {"body": 3}}), (nio.BadEvent, nio.UnknownBadEvent))
