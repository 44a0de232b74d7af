"""What the bot hands moderation is every decrypted event a room shows as words, whatever nio made
of it: a message nio finds of the wrong shape (BadEvent), an emote, a msgtype or an event type nio
has no class for (a poll), a sticker, a reaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest
from nio import Event

from bridge.matrix.bot import ROOM_EVENTS, Bot
from bridge.matrix.received import ReceivedMessage
from tests.test_moderation_evasion import decide


def _decrypted(etype: str, content: dict[str, Any]) -> Any:
    """As nio's olm machine makes it: parsed from the decrypted payload, then marked decrypted."""
    event = Event.parse_decrypted_event({"type": etype, "content": content, "room_id": "!r:s", "event_id": "$e",
                                         "sender": "@parent:s", "origin_server_ts": 1})
    event.decrypted = True
    return event


POLL = {"org.matrix.msc3381.poll.start": {"question": {"body": "Qui est un connard ?"}, "kind": "x",
                                          "answers": [{"id": "a", "org.matrix.msc1767.text": "oui"}]}}


@pytest.mark.parametrize("name, etype, content, protection", [
    ("HTML body of the wrong type", "m.room.message",
     {"msgtype": "m.text", "body": "quel connard", "format": "org.matrix.custom.html", "formatted_body": 3},
     "malformed"),
    ("body that is no string", "m.room.message", {"msgtype": "m.text", "body": ["connard"]}, "malformed"),
    ("picture sent by url in an encrypted room", "m.room.message",
     {"msgtype": "m.image", "body": "x.exe", "url": "mxc://s/a", "info": {"mimetype": "application/x-msdownload"}},
     "media"),
    ("emote", "m.room.message", {"msgtype": "m.emote", "body": "trouve que vous êtes des connards"},
     "banned_words"),
    ("unknown msgtype", "m.room.message", {"msgtype": "fr.x", "body": "quel connard"}, "banned_words"),
    ("no msgtype", "m.room.message", {"body": "quel connard"}, "banned_words"),
    ("poll", "org.matrix.msc3381.poll.start", POLL, "banned_words"),
    ("sticker", "m.sticker", {"body": "connard", "url": "mxc://s/a", "info": {}}, "banned_words"),
    ("reaction", "m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "connard"}},
     "banned_words"),
    ("reaction with a key of the wrong type", "m.reaction",
     {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": 3}}, "malformed"),
])
async def test_every_decrypted_message_reaches_moderation(name: str, etype: str, content: dict[str, Any],
                                                          protection: str) -> None:
    got: list[ReceivedMessage] = []

    async def hook(msg: ReceivedMessage) -> None:
        got.append(msg)

    bot = Bot(homeserver_url="http://127.0.0.1:1", user_id="@bot:s", store_dir="/nonexistent", store_key="k",
              display_name="bot", api=cast(Any, None), as_token="t", store=cast(Any, None), message_hooks=[hook])
    event = _decrypted(etype, content)
    assert isinstance(event, ROOM_EVENTS), type(event)  # nio calls the bot back for it
    await bot._on_event(SimpleNamespace(room_id="!r:s"), event)
    await bot.lanes.join()
    assert [(m.type, m.decrypted) for m in got] == [(etype, True)], name
    assert protection in decide(got[0].content, etype), name
