"""One contract for the homeserver port, run on the in-memory fake and on a real Synapse.

Every behaviour the shells rely on (ensure-steps, errcodes, auth rules, incremental /sync,
history and redaction) is asserted here on both; the fake is used alone only where this suite
proves it answers like Synapse.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio

from bridge.errors import MForbidden, MNotFound, MRoomInUse
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.reconcile.observed import fold_delta, reduce_state
from bridge.reconcile.observer import DELTA_LIMIT, delta_filter

SERVER = "ent.test"


@dataclass
class Side:
    api: AppserviceAPI
    bot: str
    prefix: str
    human: Callable[[str], str]  # registers a person outside the namespace, returns their id

    async def user(self, name: str) -> str:
        localpart = f"{self.prefix}{name}_{secrets.token_hex(3)}"
        await self.api.register_user(localpart)
        return f"@{localpart}:{SERVER}"


@pytest_asyncio.fixture(params=["fake", "synapse"])
async def side(request: pytest.FixtureRequest) -> AsyncIterator[Side]:
    if request.param == "fake":
        fake = FakeHomeserver(server_name=SERVER, as_token="tok")

        def human(name: str) -> str:
            user = f"@{name}_{secrets.token_hex(3)}:{SERVER}"
            fake.register(user)
            return user

        api = AppserviceAPI(as_token="tok", transport=fake)
        prefix = "ent-bridge_"
    else:
        hs = request.getfixturevalue("homeserver")
        hs.fresh_namespace()
        config = hs.config(request.getfixturevalue("data_dir"))
        api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
        prefix = config.appservice.namespace_prefix

        def human(name: str) -> str:
            username = f"{name}_{secrets.token_hex(3)}"
            hs.synapse.register_user(username, secrets.token_urlsafe(12))
            return f"@{username}:{SERVER}"

    bot = f"@{prefix}contract_{secrets.token_hex(3)}:{SERVER}"
    await api.register_user(bot[1:].split(":", maxsplit=1)[0])
    try:
        yield Side(api, bot, prefix, human)
    finally:
        await api.close()


def _body(alias: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"preset": "private_chat", "name": "6e A", "initial_state": [
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}],
        "power_level_content_override": {"users": {}, "invite": 50, "kick": 50, "state_default": 50}, **extra}
    if alias:
        body["room_alias_name"] = alias
    return body


def _state(events: list[dict[str, Any]], etype: str, key: str = "") -> dict[str, Any] | None:
    return next((e["content"] for e in events if e["type"] == etype and e.get("state_key") == key), None)


async def test_create_room_with_alias_resolves_and_holds_initial_state(side: Side) -> None:
    alias = f"{side.prefix}c{secrets.token_hex(6)}"
    room = await side.api.create_room(as_user=side.bot, body=_body(alias))
    assert await side.api.resolve_alias(f"#{alias}:{SERVER}") == room
    assert await side.api.resolve_alias(f"#{side.prefix}nothing{secrets.token_hex(4)}:{SERVER}") is None
    state = await side.api.room_state(room, as_user=side.bot)
    assert _state(state, "m.room.encryption") == {"algorithm": "m.megolm.v1.aes-sha2"}
    assert (_state(state, "m.room.join_rules") or {}).get("join_rule") == "invite"
    assert (_state(state, "m.room.history_visibility") or {}).get("history_visibility") == "joined"
    assert (_state(state, "m.room.name") or {}).get("name") == "6e A"
    create = await side.api.get_state(room, "m.room.create", as_user=side.bot, whole_event=True)
    assert create["sender"] == side.bot and create["content"]["room_version"] == "12"
    assert room in await side.api.joined_rooms(side.bot)
    with pytest.raises(MRoomInUse):
        await side.api.create_room(as_user=side.bot, body=_body(alias))
    await side.api.delete_alias(f"#{alias}:{SERVER}")  # the appservice takes back an alias of its namespace
    assert await side.api.resolve_alias(f"#{alias}:{SERVER}") is None
    await side.api.delete_alias(f"#{alias}:{SERVER}")  # already gone: done
    again = await side.api.create_room(as_user=side.bot, body=_body(alias))
    assert again != room and await side.api.resolve_alias(f"#{alias}:{SERVER}") == again


async def test_invite_and_kick_are_ensure_steps(side: Side) -> None:
    room = await side.api.create_room(as_user=side.bot, body=_body())
    parent = side.human("parent")
    assert await side.api.membership(room, parent, as_user=side.bot) is None
    await side.api.invite(room, parent, as_user=side.bot)
    await side.api.invite(room, parent, as_user=side.bot)  # already invited: done
    assert await side.api.membership(room, parent, as_user=side.bot) == "invite"
    assert await side.api.kick(room, parent, as_user=side.bot, reason="pas autorisé") is True
    assert await side.api.membership(room, parent, as_user=side.bot) == "leave"
    assert await side.api.kick(room, parent, as_user=side.bot, reason="pas autorisé") is False  # already gone


async def test_refusals_are_typed_by_errcode(side: Side) -> None:
    room = await side.api.create_room(as_user=side.bot, body=_body())
    outsider = await side.user("outsider")
    parent = side.human("parent")
    with pytest.raises(MForbidden):  # not in the room: may neither read nor invite
        await side.api.room_state(room, as_user=outsider)
    with pytest.raises(MForbidden):
        await side.api.invite(room, parent, as_user=outsider)
    with pytest.raises(MNotFound):
        await side.api.get_state(room, "m.room.topic", as_user=side.bot)
    # A member without power can't change state or invite (invite needs 50 here).
    member = await side.user("member")
    await side.api.invite(room, member, as_user=side.bot)
    await side.api.join(room, as_user=member)
    with pytest.raises(MForbidden):
        await side.api.set_state(room, "m.room.name", "", {"name": "piraté"}, as_user=member)
    with pytest.raises(MForbidden):
        await side.api.invite(room, parent, as_user=member)
    with pytest.raises(MForbidden):  # and can't kick the room's creator
        await side.api.kick(room, side.bot, as_user=member, reason="x")


async def test_join_requires_an_invite_and_leave_is_an_ensure_step(side: Side) -> None:
    room = await side.api.create_room(as_user=side.bot, body=_body())
    other = await side.user("other")
    with pytest.raises(MForbidden):
        await side.api.join(room, as_user=other)
    await side.api.invite(room, other, as_user=side.bot)
    await side.api.join(room, as_user=other)
    assert room in await side.api.joined_rooms(other)
    await side.api.leave(room, as_user=other)
    await side.api.leave(room, as_user=other)  # not in it any more: done
    assert room not in await side.api.joined_rooms(other)


async def test_incremental_sync_names_only_changed_rooms(side: Side) -> None:
    quiet = await side.api.create_room(as_user=side.bot, body=_body())
    busy = await side.api.create_room(as_user=side.bot, body=_body())
    types = ["m.room.member", "m.room.power_levels", "m.room.name"]
    flt = {"room": {"timeline": {"limit": 1, "types": types}, "state": {"types": types, "lazy_load_members": True}},
           "presence": {"not_types": ["*"]}}

    def unique() -> str:  # Synapse caches identical /sync requests for two minutes
        return json.dumps({**flt, "fr.ent-bridge.nonce": secrets.token_hex(4)})

    token = (await side.api.sync(side.bot, filter_json=json.dumps({"room": {"rooms": []}})))["next_batch"]
    await side.api.set_state(busy, "m.room.name", "", {"name": "6e B"}, as_user=side.bot)
    changed = await side.api.sync(side.bot, filter_json=unique(), since=token)
    rooms = set((changed.get("rooms") or {}).get("join") or {})
    assert busy in rooms and quiet not in rooms
    again = await side.api.sync(side.bot, filter_json=unique(), since=changed["next_batch"])
    assert not set((again.get("rooms") or {}).get("join") or {})


def _by_key(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[str, Any]]:
    return {(e["type"], e["state_key"]): (e["sender"], e["content"]) for e in events}


async def test_delta_sync_folds_into_the_state_a_read_gives(side: Side) -> None:
    """What the observer relies on to verify an apply without reading each room: folding a delta
    /sync into the cached state gives what /state gives; a gap or a redaction is refused."""
    people = [side.human(f"p{i}") for i in range(4)]
    kept = await side.api.create_room(as_user=side.bot, body=_body(invite=people[:2]))
    busy = await side.api.create_room(as_user=side.bot, body=_body())
    redacted = await side.api.create_room(as_user=side.bot, body=_body())
    cache = {r: reduce_state(await side.api.room_state(r, as_user=side.bot)) for r in (kept, busy, redacted)}
    owner = await side.user("owner")
    joined = await side.api.create_room(as_user=owner, body=_body())
    await side.api.set_state(joined, "m.room.topic", "", {"topic": "avant"}, as_user=owner)
    token = (await side.api.sync(side.bot, filter_json=json.dumps({"room": {"rooms": []}})))["next_batch"]
    await side.api.set_state(kept, "m.room.name", "", {"name": "6e B"}, as_user=side.bot)
    await side.api.invite(kept, people[2], as_user=side.bot)
    await side.api.kick(kept, people[0], as_user=side.bot, reason="a quitté la classe")
    levels = await side.api.get_state(kept, "m.room.power_levels", as_user=side.bot)
    await side.api.set_state(kept, "m.room.power_levels", "", {**levels, "events_default": 50}, as_user=side.bot)
    for i in range(DELTA_LIMIT + 1):  # more changes than the delta's timeline holds: a gap
        await side.api.set_state(busy, "m.room.topic", "", {"topic": f"t{i}"}, as_user=side.bot)
    name = await side.api.request("PUT", f"/_matrix/client/v3/rooms/{redacted}/state/m.room.name/",
                                  user_id=side.bot, json={"name": "à effacer"})
    await side.api.redact(redacted, name["event_id"], as_user=side.bot, reason="test", txn_id=secrets.token_hex(6))
    # A room the bot made since the token comes whole, also with more invites than the delta's
    # timeline holds (its own join is then in the state block).
    many = people + [f"@absent{i}_{secrets.token_hex(2)}:{SERVER}" for i in range(DELTA_LIMIT)]
    made = await side.api.create_room(as_user=side.bot, body=_body(invite=many))
    await side.api.set_state(made, "m.room.topic", "", {"topic": "nouvelle"}, as_user=side.bot)
    await side.api.invite(joined, side.bot, as_user=owner)
    await side.api.join(joined, as_user=side.bot)
    await side.api.set_state(joined, "m.room.topic", "", {"topic": "après"}, as_user=owner)
    flt = {**delta_filter([kept, busy, redacted, made, joined]), "fr.ent-bridge.nonce": secrets.token_hex(4)}
    delta = (await side.api.sync(side.bot, filter_json=json.dumps(flt), since=token))["rooms"]["join"]
    for room, cached in ((kept, cache[kept]), (made, None)):
        folded = fold_delta(cached, delta[room], side.bot)
        assert folded is not None
        assert _by_key(folded) == _by_key(reduce_state(await side.api.room_state(room, as_user=side.bot)))
    assert delta[busy]["timeline"]["limited"] and fold_delta(cache[busy], delta[busy], side.bot) is None
    assert fold_delta(cache[redacted], delta[redacted], side.bot) is None
    assert fold_delta(None, delta[kept], side.bot) is None  # nothing cached to fold into: read it whole
    # Joined on an invite: Synapse leaves out the state that history visibility hid before the join
    # (the first topic here), so such a room is read whole.
    assert fold_delta(None, delta[joined], side.bot) is None
    short = delta_filter([joined])
    short["room"]["timeline"]["limit"] = 1  # the bot's join is then in the state block: still not whole
    short["fr.ent-bridge.nonce"] = secrets.token_hex(4)
    entry = (await side.api.sync(side.bot, filter_json=json.dumps(short), since=token))["rooms"]["join"][joined]
    assert any(e.get("state_key") == side.bot for e in entry["state"]["events"])
    assert fold_delta(None, entry, side.bot) is None


async def test_history_redaction_and_idempotent_sends(side: Side) -> None:
    room = await side.api.create_room(as_user=side.bot, body=_body())
    txn = secrets.token_hex(6)
    first = await side.api.send_event(room, "m.room.message", {"msgtype": "m.text", "body": "bonjour"},
                                      as_user=side.bot, txn_id=txn)
    again = await side.api.send_event(room, "m.room.message", {"msgtype": "m.text", "body": "bonjour"},
                                      as_user=side.bot, txn_id=txn)
    assert first == again  # a resent transaction id is the same event
    page = await side.api.messages(room, as_user=side.bot, limit=5)
    assert page["chunk"][0]["event_id"] == first and page["chunk"][0]["content"]["body"] == "bonjour"
    txn = secrets.token_hex(6)
    await side.api.redact(room, first, as_user=side.bot, reason="durée dépassée", txn_id=txn)
    await side.api.redact(room, first, as_user=side.bot, reason="durée dépassée", txn_id=txn)  # a retry
    page = await side.api.messages(room, as_user=side.bot, limit=10)
    assert sum(1 for e in page["chunk"] if e["type"] == "m.room.redaction") == 1  # the same redaction
    redacted = next(e for e in page["chunk"] if e["event_id"] == first)
    assert "body" not in redacted["content"]


async def test_users_and_profiles(side: Side) -> None:
    user = await side.user("keyless")
    await side.api.register_user(user[1:].split(":")[0])  # again: already registered is success
    await side.api.ensure_display_name(user, "ENT (sans accès aux messages)")
    await side.api.ensure_display_name(user, "ENT (sans accès aux messages)")
    assert (await side.api.request("GET", f"/_matrix/client/v3/profile/{user}/displayname",
                                   user_id=user))["displayname"] == "ENT (sans accès aux messages)"


async def test_redacting_an_event_the_room_does_not_have(side: Side) -> None:
    """Moderation may redact an event the homeserver no longer shows (already purged): as Synapse."""
    room = await side.api.create_room(as_user=side.bot, body=_body())
    await side.api.redact(room, "$no-such-event", as_user=side.bot, reason="x")



async def test_a_member_renames_themself_and_a_redaction_takes_the_name_back(side: Side) -> None:
    """A per-room display name needs no power (it is one's own membership); redacting that
    membership keeps the member in and takes the name away (the spec's redaction algorithm)."""
    room = await side.api.create_room(as_user=side.bot, body=_body())
    member = await side.user("member")
    await side.api.invite(room, member, as_user=side.bot)
    await side.api.join(room, as_user=member)
    renamed = await side.api.set_state(room, "m.room.member", member, {"membership": "join", "displayname": "Directrice"},
                                       as_user=member)
    shown = await side.api.get_state(room, "m.room.member", member, as_user=side.bot)
    assert shown["displayname"] == "Directrice"
    await side.api.redact(room, renamed, as_user=side.bot, reason="nom affiché retiré")
    assert await side.api.get_state(room, "m.room.member", member, as_user=side.bot) == {"membership": "join"}
    assert await side.api.membership(room, member, as_user=side.bot) == "join"
    await side.api.send_event(room, "m.room.message", {"msgtype": "m.text", "body": "toujours là"}, as_user=member,
                              txn_id=secrets.token_hex(6))
    with pytest.raises(MForbidden):  # someone else's name is not one's own to change
        await side.api.set_state(room, "m.room.member", side.bot, {"membership": "join", "displayname": "x"},
                                 as_user=member)
