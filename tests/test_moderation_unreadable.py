"""Encrypted messages the bot can't read are not let through unread: held until the bot synced
past them, read with a key that came late, else taken down and reported (Synapse, nio clients)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from nio import RoomMessageNotice

from bridge.app import Bridge
from bridge.policy.unreadable import GRACE_MS, look_again_at
from bridge.undecryptable import UndecryptableWatch
from tests.conftest import sync_until, with_people
from tests.test_moderation_live import _redacted, _started_with_parent_in_cp, _wait


@pytest.fixture(autouse=True)
def _quick_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bot's quiet syncs return within a second (10 s in service): an unread message waits
    for two of them, and the tests for far less than the service's one-minute grace."""
    from bridge.matrix import bot

    monkeypatch.setattr(bot, "SYNC_TIMEOUT_MS", 1_000)


@pytest.mark.parametrize(("now", "syncs", "expected"), [
    (0, 5, GRACE_MS),  # just seen: looked at again once the grace is over
    (GRACE_MS - 1, 5, GRACE_MS),
    (GRACE_MS, 0, GRACE_MS + GRACE_MS),  # the bot has not synced since: wait as long again
    (GRACE_MS, 1, GRACE_MS + GRACE_MS),
    (10 * 3_600_000, 0, 10 * 3_600_000 + 3_600_000),  # never more than an hour between looks
    (GRACE_MS, 2, None),  # synced past it twice: decide
])
def test_an_unread_message_waits_for_the_grace_and_two_syncs(now: int, syncs: int, expected: int | None) -> None:
    assert look_again_at(first_ms=0, now_ms=now, syncs_since=syncs) == expected


async def _class_room(homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any
                      ) -> tuple[Bridge, Any, str, list[str]]:
    parent = await humans("parent")
    config = with_people(homeserver.config(data_dir), tmp_path, {"g-anne": parent.user_id})
    bridge, room_id = await _started_with_parent_in_cp(config, tmp_path, parent)
    notices: list[str] = []

    async def on_notice(room: Any, event: Any) -> None:
        if room.room_id == room_id and event.sender == config.bot_user_id:
            notices.append(event.body)

    parent.add_event_callback(on_notice, RoomMessageNotice)
    _watch(bridge).grace_ms = 300  # the bot's two syncs are still waited for
    _watch(bridge).wait_s = 1.0  # a message whose key is kept away waits less in memory (5 s in service)
    return bridge, parent, room_id, notices


async def _send(who: Any, room_id: str, body: str) -> str:
    resp = await who.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body},
                               ignore_unverified_devices=True)
    return str(resp.event_id)


async def test_a_message_whose_key_is_kept_from_the_bot_is_taken_down_and_reported(
        homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any) -> None:
    bridge, parent, room_id, notices = await _class_room(homeserver, data_dir, tmp_path, humans)
    try:
        # The parent's client shares its keys with everyone in the room but the bot's device, as
        # a crafted client (or one sharing only with verified sessions) would.
        if parent.should_query_keys:
            await parent.keys_query()
        device = parent.device_store[bridge.config.bot_user_id][bridge.bot.device_id]
        parent.blacklist_device(device)
        hidden = await _send(parent, room_id, "rendez-vous ce soir derrière le gymnase")
        await _wait(lambda: _redacted(bridge, room_id, hidden))
        await sync_until(parent, lambda: any("pas pu être lu" in n for n in notices))
        rows = [r.body for r in await bridge.store.audit_rows()]
        assert any("moderation_undecryptable" in b and hidden in b for b in rows)
        assert not any("gymnase" in b for b in rows)
        # Keys shared again (a new session, the bot not left out): the next message is read and stays.
        parent.unblacklist_device(device)
        parent.olm.outbound_group_sessions.pop(room_id, None)
        kept = await _send(parent, room_id, "Bonjour, Lina sera absente demain")
        await _wait(lambda: bridge.bot.has_decrypted(kept))
        later = await _send(parent, room_id, "merci")  # behind it in the room's order
        await _wait(lambda: bridge.bot.has_decrypted(later))
        await _wait(lambda: _handled(bridge, kept))
        assert not await _redacted(bridge, room_id, kept)
    finally:
        await bridge.stop()


async def test_a_message_whose_key_came_late_is_read_and_moderated_like_any_other(
        homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any) -> None:
    """The key reaches the bot, but not before its sync went past the message (here: the sync's
    decrypted message is dropped, as if its key had come in a later sync). The transaction's copy
    is read with the key the bot holds by then, and its banned word redacted as usual."""
    bridge, parent, room_id, notices = await _class_room(homeserver, data_dir, tmp_path, humans)
    try:
        _keep_from_the_sync(bridge, lambda event: "c0nnard" in str(getattr(event, "body", "")))
        rude = await _send(parent, room_id, "quel c0nnard ce règlement")
        await _wait(lambda: _redacted(bridge, room_id, rude))
        await sync_until(parent, lambda: any("retiré" in n and "pas pu être lu" not in n for n in notices))
        rows = [r.body for r in await bridge.store.audit_rows()]
        assert any("moderation_banned_words" in b and rude in b for b in rows)
        assert not any("moderation_undecryptable" in b for b in rows)
    finally:
        await bridge.stop()


async def test_a_reaction_whose_key_came_late_still_reaches_the_reaction_hooks(
        homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any) -> None:
    """A family's 👍 under an announcement, read late (its key after it): counted as a
    confirmation like one the sync read (it was moderated, and never reached the hooks)."""
    from nio import ReactionEvent

    bridge, parent, room_id, _ = await _class_room(homeserver, data_dir, tmp_path, humans)
    try:
        _keep_from_the_sync(bridge, lambda event: isinstance(event, ReactionEvent))
        seen: list[tuple[str, str, str]] = []

        async def on_reaction(reaction: Any) -> None:
            seen.append((reaction.sender, reaction.reacts_to, reaction.key))

        bridge.bot.reaction_hooks.append(on_reaction)
        target = await _send(parent, room_id, "Bonjour")
        await _wait(lambda: bridge.bot.has_decrypted(target))
        # Encrypted, as Element sends reactions (nio's room_send leaves them in the clear).
        etype, content = parent.encrypt(room_id, "m.reaction", {"m.relates_to": {
            "rel_type": "m.annotation", "event_id": target, "key": "👍"}})
        sent = await parent.send("PUT", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/{etype}/"
                                        f"late-{secrets.token_hex(4)}", json.dumps(content),
                                 headers={"Authorization": f"Bearer {parent.access_token}"})
        assert sent.status == 200
        reaction = str((await sent.json())["event_id"])

        async def counted() -> bool:
            return bool(seen)

        await _wait(counted)
        assert seen == [(parent.user_id, target, "👍")]
        await _wait(lambda: _handled(bridge, reaction))
        assert not await _redacted(bridge, room_id, reaction)
    finally:
        await bridge.stop()


def _keep_from_the_sync(bridge: Bridge, kept: Callable[[Any], bool]) -> None:
    """The bot's sync drops the decrypted events `kept` picks, as if their keys came in a later
    sync: only the homeserver's transaction brings them."""
    client = bridge.bot.client
    assert client is not None
    [callback] = [cb for cb in client.event_callbacks if cb.func == bridge.bot._on_event]
    deliver = callback.func

    async def too_early(room: Any, event: Any) -> None:
        if not kept(event):
            await deliver(room, event)

    callback.func = too_early


async def _handled(bridge: Bridge, event_id: str) -> bool:
    """The transaction's copy of the event has left the inbox (handled, not held)."""
    return not any(item.event.get("event_id") == event_id for item in await bridge.store.pending_events(limit=1000))



async def test_a_parent_reaches_the_bot_when_its_one_time_keys_ran_out(
        homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any) -> None:
    """A Monday morning's new devices can claim all of the bot's one-time keys between two of
    its syncs: the server then hands out the bot's fallback key, and the room key still reaches
    the bot (else the message would be unreadable to moderation, and taken down)."""
    import aiohttp

    from bridge.matrix.nio_client import FALLBACK

    bridge, parent, room_id, _ = await _class_room(homeserver, data_dir, tmp_path, humans)
    try:
        client = bridge.bot.client
        assert client is not None

        async def fallback_up() -> bool:
            return FALLBACK in (client.unused_fallback_keys or [])

        await _wait(fallback_up)

        async def no_upload() -> None:  # the bot does not replenish its keys during the burst
            return None

        client.keys_upload = no_upload  # type: ignore[method-assign]
        bot, device = bridge.config.bot_user_id, bridge.bot.device_id
        claimed: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http:
            while not claimed or not claimed[-1].get("fallback"):
                assert len(claimed) <= 100, "the one-time keys never ran out"
                async with http.post(f"{homeserver.url}/_matrix/client/v3/keys/claim",
                                     headers={"Authorization": f"Bearer {parent.access_token}"},
                                     json={"one_time_keys": {bot: {device: FALLBACK}}}) as resp:
                    keys = (await resp.json())["one_time_keys"].get(bot, {}).get(device, {})
                assert keys, "no key at all for the bot's device"
                claimed.append(next(iter(keys.values())))
        assert len(claimed) > 1 and not claimed[0].get("fallback")
        sent = await _send(parent, room_id, "Bonjour, une question sur la sortie")
        await _wait(lambda: bridge.bot.has_decrypted(sent))
    finally:
        await bridge.stop()


async def test_messages_the_bot_could_not_read_back_are_moderated_from_the_transactions(
        homeserver: Any, data_dir: Any, tmp_path: Any, humans: Any, monkeypatch: Any) -> None:
    """While the bridge is stopped a parent sends an insult and more messages than the bot reads
    back into a gap (here: none at all). The bot's sync never shows the insult; the homeserver's
    transactions do, and it is read with the key the bot holds, and redacted."""
    from bridge.matrix import nio_client

    monkeypatch.setattr(nio_client, "GAP_PAGES", 0)
    parent = await humans("parent")
    config = with_people(homeserver.config(data_dir), tmp_path, {"g-anne": parent.user_id})
    bridge, room_id = await _started_with_parent_in_cp(config, tmp_path, parent)
    await _send(parent, room_id, "bonjour")  # the parent's room key reaches the bot
    await _wait(lambda: _handled_all(bridge))
    await bridge.stop()
    insult = await _send(parent, room_id, "quel c0nnard")
    for n in range(12):  # a sync gives the last 10: the insult is not among them
        await _send(parent, room_id, f"question {n}")
    again = await Bridge.create(config)
    _watch(again).grace_ms = 300  # before the start: the homeserver resends at once
    _watch(again).wait_s = 1.0
    reported: list[str] = []
    report = again.moderator.gap_unread

    async def gap_unread(room: str, read: int, why: str) -> None:
        await report(room, read, why)  # the moderators' notice included: it raises if not sent
        reported.append(room)

    again.bot.gap_unread = gap_unread
    await again.start()
    try:
        await _wait(lambda: _redacted(again, room_id, insult))
        rows = [r.body for r in await again.store.audit_rows()]
        assert any("moderation_banned_words" in b and insult in b for b in rows)
        assert any("moderation_unread" in b for b in rows)  # the gap was still reported
        # ... to the school's moderators too (it waited for their room, which the very sync
        # being read brought: 20 s, then lost).
        assert reported == [room_id]
    finally:
        await again.stop()


async def _handled_all(bridge: Bridge) -> bool:
    return not await bridge.store.pending_events(limit=1)


def _watch(bridge: Bridge) -> UndecryptableWatch:
    found: UndecryptableWatch = next(h.__self__ for h in bridge.dispatcher.handlers
                                     if isinstance(getattr(h, "__self__", None), UndecryptableWatch))
    return found
