"""Help where people are: `!aide` in a direct chat with the bot, by role; the bot's profile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nio import RoomMessageNotice

from bridge.access.links import managed_rooms, relations
from bridge.access.snapshot import AccessSnapshot, write_snapshot
from bridge.app import Bridge
from bridge.directory.sources import load
from bridge.help_desk import NOT_A_COMMAND, ROLES, HelpDesk, help_text
from bridge.matrix.received import ReceivedMessage
from bridge.policy.model import AccessPolicy
from bridge.reconcile.sync import run_sync
from tests.conftest import ROOT, sync_until, unique_school, with_people, write_school

WHO = {"t-cp": "@claire:ent.test", "t-ce1": "@marc:ent.test", "g-anne": "@anne:ent.test"}


def test_help_says_what_each_role_can_do() -> None:
    guardian = help_text(frozenset({"guardian"}), language="fr")
    assert "responsable légal" in guardian and "enseignant(e)" not in guardian and "!aide" in guardian
    both = help_text(frozenset({"teacher", "director", "admin"}), language="fr")
    assert all(ROLES[r]["fr"] in both for r in ("teacher", "director", "admin")) and ROLES["guardian"]["fr"] not in both
    assert "legal guardian" in help_text(frozenset({"guardian"}), language="en")
    assert help_text(frozenset(), language="de").startswith("Bonjour")  # French by default


class _Bot:
    user_id = "@ent-bridge_bot:ent.test"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def send_notice(self, room_id: str, text: str, **_: Any) -> str:
        self.sent.append((room_id, text))
        return "$n"


async def test_the_help_desk_answers_in_direct_chats_only(tmp_path: Path) -> None:
    directory, _ = load([str(ROOT / "tests" / "fixtures" / "school.yaml")])
    path = tmp_path / "access.sqlite"
    write_snapshot(path, relations(directory, WHO, AccessPolicy(), secret="s" * 32), managed_rooms({}), {},
                   generated_ms=1)
    bot = _Bot()

    async def is_managed(room_id: str) -> bool:
        return room_id == "!class:ent.test"

    desk = HelpDesk(bot=bot, snapshot=AccessSnapshot(path), admins=frozenset({"@dane:ent.test"}),  # type: ignore[arg-type]
                    language="fr", is_managed=is_managed, admin_room="!admin:ent.test")

    def msg(room: str, sender: str, body: str, **extra: Any) -> ReceivedMessage:
        return ReceivedMessage(room, "$e", sender, body, True, {"msgtype": "m.text", "body": body, **extra})

    await desk.on_message(msg("!dm1:ent.test", "@anne:ent.test", "!aide"))
    await desk.on_message(msg("!dm2:ent.test", "@marc:ent.test", "!quoi"))  # unknown command: the help
    await desk.on_message(msg("!dm3:ent.test", "@dane:ent.test", "bonjour"))
    for ignored in (msg("!class:ent.test", "@anne:ent.test", "!aide"), msg("!admin:ent.test", "@dane:ent.test", "!x"),
                    msg("!dm1:ent.test", "@anne:ent.test", "* !aide", **{"m.new_content": {"body": "!aide"}})):
        await desk.on_message(ignored)
    assert [room for room, _ in bot.sent] == ["!dm1:ent.test", "!dm2:ent.test", "!dm3:ent.test"]
    assert ROLES["guardian"]["fr"] in bot.sent[0][1] and ROLES["teacher"]["fr"] not in bot.sent[0][1]
    assert ROLES["teacher"]["fr"] in bot.sent[1][1] and ROLES["director"]["fr"] in bot.sent[1][1]
    assert bot.sent[2][1] == NOT_A_COMMAND["fr"]


@pytest.mark.synapse
async def test_a_parent_gets_help_from_the_bot_in_an_encrypted_direct_chat(
        homeserver: Any, humans: Any, data_dir: Path, tmp_path: Path) -> None:
    parent = await humans("parent")
    config = with_people(homeserver.config(data_dir), tmp_path, {"g-anne": parent.user_id})
    bridge = await Bridge.create(config)
    await bridge.start()
    try:
        school = str(write_school(tmp_path, unique_school(tmp_path)))
        await run_sync(config, [school], store=bridge.store, api=bridge.api, apply=True)  # publishes her role
        bot = config.bot_user_id
        profile = await bridge.api.request("GET", f"/_matrix/client/v3/profile/{bot}/displayname", user_id=bot)
        assert profile["displayname"] == config.bot.display_name  # not its localpart
        assert str(await bridge.api.avatar_url(bot)).startswith("mxc://")  # and an avatar
        created = await parent.room_create(is_direct=True, invite=[bot], initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
        dm = created.room_id
        await sync_until(parent, lambda: dm in parent.rooms and bot in parent.rooms[dm].users)  # it joined
        answers: list[Any] = []

        async def on_notice(room: Any, event: Any) -> None:
            if room.room_id == dm and event.sender == bot:
                answers.append(event)

        parent.add_event_callback(on_notice, RoomMessageNotice)
        await bridge.bot.wait_for_room(dm)
        await parent.room_send(dm, "m.room.message", {"msgtype": "m.text", "body": "!aide"},
                               ignore_unverified_devices=True)
        await sync_until(parent, lambda: bool(answers))
        assert answers[0].decrypted and ROLES["guardian"]["fr"] in answers[0].body
    finally:
        await bridge.stop()


async def test_a_group_chat_is_not_answered() -> None:
    class _Room:
        member_count = 3  # the bot and two people

    bot = _Bot()
    bot.client = type("C", (), {"rooms": {"!group:ent.test": _Room()}})()  # type: ignore[attr-defined]

    async def is_managed(room_id: str) -> bool:
        return False

    desk = HelpDesk(bot=bot, snapshot=None, admins=frozenset(), language="fr", is_managed=is_managed,  # type: ignore[arg-type]
                    admin_room=None)
    await desk.on_message(ReceivedMessage("!group:ent.test", "$e", "@anne:ent.test", "!aide", True,
                                          {"msgtype": "m.text", "body": "!aide"}))
    assert bot.sent == []


async def test_the_bot_gets_its_avatar_once_per_image(tmp_path: Path) -> None:
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.matrix.avatar import default_avatar
    from bridge.matrix.bot import Bot
    from bridge.matrix.fake import FakeHomeserver
    from bridge.store.sqlite import SqliteStore

    fake = FakeHomeserver(as_token="tok")
    api = AppserviceAPI(as_token="tok", transport=fake)
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    try:
        await api.register_user("ent-bridge_bot")
        bot = Bot(homeserver_url="http://fake.invalid", user_id="@ent-bridge_bot:ent.test", store_dir=str(tmp_path),
                  store_key="k" * 32, display_name="ENT", api=api, as_token="tok", store=store)
        uploads = lambda: sum(1 for m, p in fake.requests if p.endswith("/upload"))  # noqa: E731
        await bot._ensure_avatar()
        first = await api.avatar_url(bot.user_id)
        assert first is not None and first.startswith("mxc://") and uploads() == 1
        await bot._ensure_avatar()  # a restart: the same image is not sent again
        assert uploads() == 1 and await api.avatar_url(bot.user_id) == first
        bot.avatar = default_avatar()[:-12] + b"\x00" * 12  # another image (the config's)
        await bot._ensure_avatar()
        assert uploads() == 2 and await api.avatar_url(bot.user_id) != first
        assert default_avatar().startswith(b"\x89PNG\r\n\x1a\n")
    finally:
        await store.close()
