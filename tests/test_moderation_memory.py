"""Moderation's memory (pure, time passed in) and the Moderator shell on the fake homeserver."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.audit import AuditLog
from bridge.clock import FakeClock
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.moderation import Moderator
from bridge.policy.engine import Message
from bridge.policy.memory import ModerationMemory
from bridge.policy.model import BannedWords, FanOut, Flood, Profile, QuietHours, Strikes
from bridge.store import open_store

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 11, 30, 11, 0, tzinfo=UTC)  # a Monday, 12:00 in Paris
EVENING = datetime(2026, 11, 30, 20, 30, tzinfo=UTC)
PROFILE = Profile("p", banned_words=BannedWords(("zut",), ("redact", "warn")),
                  flood=Flood(max_messages=3, per_seconds=10, action=("mute", "warn"), mute_minutes=5),
                  quiet_hours=QuietHours(), strikes=Strikes(threshold=2, window_hours=1, mute_minutes=30))


_EVENTS = itertools.count()


def _msg(body: str, *, sender: str = "@p:s", event: str | None = None) -> Message:
    """A message with an event id of its own (the memory judges each event once)."""
    return Message("!r:s", event or f"$e{next(_EVENTS)}", sender, 0, {"msgtype": "m.text", "body": body})


def test_flood_mutes_once_for_its_duration_then_again_after() -> None:
    mem = ModerationMemory()
    outs = [mem.judge(PROFILE, _msg("bonjour"), now=NOON + timedelta(seconds=i)) for i in range(5)]
    assert [o.mute_until_ms is not None for o in outs] == [False, False, False, True, False]  # > 3 in 10 s
    until = outs[3].mute_until_ms
    assert until == int((NOON + timedelta(seconds=3, minutes=5)).timestamp() * 1000)
    assert outs[4].decisions[0].actions == ("warn",)  # still flooding, already muted: no second mute
    assert mem.muted("!r:s", "@p:s", now_ms=until - 1) and not mem.muted("!r:s", "@p:s", now_ms=until)
    later = NOON + timedelta(minutes=10)
    again = [mem.judge(PROFILE, _msg("bonjour"), now=later + timedelta(seconds=i)) for i in range(4)]
    assert again[-1].mute_until_ms is not None  # the mute ran its course: a new flood mutes again


def test_strikes_escalate_within_their_window_only() -> None:
    mem = ModerationMemory()
    first = mem.judge(PROFILE, _msg("zut alors"), now=NOON)
    assert [d.protection for d in first.decisions] == ["banned_words"] and first.mute_until_ms is None
    late = mem.judge(PROFILE, _msg("zut"), now=NOON + timedelta(hours=2))  # the first strike expired
    assert late.mute_until_ms is None
    second = mem.judge(PROFILE, _msg("zut"), now=NOON + timedelta(hours=2, minutes=1))
    assert [d.protection for d in second.decisions] == ["banned_words", "strikes"]
    assert second.mute_until_ms == int((NOON + timedelta(hours=2, minutes=31)).timestamp() * 1000)


def test_quiet_hours_answer_once_per_evening_and_per_person() -> None:
    mem = ModerationMemory()
    answers = [mem.judge(PROFILE, _msg("une question"), now=EVENING + timedelta(minutes=i * 20)).decisions
               for i in range(3)]
    assert answers[0][0].actions == ("notice",) and answers[1][0].actions == () == answers[2][0].actions
    other = mem.judge(PROFILE, _msg("moi aussi", sender="@q:s"), now=EVENING + timedelta(minutes=30))
    assert other.decisions[0].actions == ("notice",)
    tomorrow = mem.judge(PROFILE, _msg("encore"), now=EVENING + timedelta(days=1))
    assert tomorrow.decisions[0].actions == ("notice",)
    assert mem.judge(PROFILE, _msg("merci"), now=NOON + timedelta(days=2)).decisions == ()  # daytime


def _reaction(key: str) -> Message:
    return Message("!r:s", f"$e{next(_EVENTS)}", "@p:s", 0,
                   {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": key}}, "m.reaction")


def test_a_reaction_is_read_but_not_counted_as_a_message() -> None:
    """Ten thumbs up in ten seconds are no flood, and a reaction at night gets no "read tomorrow"
    answer; a reaction's key is still read like a message's words, and counts as a strike."""
    mem = ModerationMemory()
    assert all(mem.judge(PROFILE, _reaction("👍"), now=NOON + timedelta(seconds=i)).decisions == ()
               for i in range(10))
    assert mem.judge(PROFILE, _reaction("👍"), now=EVENING).decisions == ()
    first = mem.judge(PROFILE, _reaction("zut"), now=NOON + timedelta(seconds=20))
    assert [d.protection for d in first.decisions] == ["banned_words"]
    second = mem.judge(PROFILE, _reaction("ZUTS"), now=NOON + timedelta(seconds=21))  # a plural too
    assert [d.protection for d in second.decisions] == ["banned_words", "strikes"]
    assert mem.judge(PROFILE, _msg("bonjour"), now=NOON + timedelta(seconds=22)).decisions == ()  # no flood


def _state(etype: str, content: dict[str, Any], *, room: str = "!r:s") -> Message:
    return Message(room, f"$e{next(_EVENTS)}", "@p:s", 0, content, etype)


def test_names_reasons_and_topics_are_read_but_not_counted_as_messages() -> None:
    """A per-room display name, a leave reason, a room's name and (rich) topic are held to the
    words and links rules; a parent joining twenty rooms in a minute, at night, is neither a
    flood nor a wave nor someone to answer "read tomorrow"."""
    profile = Profile("p", banned_words=BannedWords(("zut",), ("redact", "warn")),
                      flood=Flood(max_messages=3, per_seconds=10, action=("mute", "warn"), mute_minutes=5),
                      fan_out=FanOut(), quiet_hours=QuietHours(), strikes=Strikes(threshold=9))
    mem = ModerationMemory()
    joins = [mem.judge(profile, _state("m.room.member", {"membership": "join", "displayname": "Léa Martin"},
                                       room=f"!r{i}:s"), now=EVENING + timedelta(seconds=i)) for i in range(20)]
    assert all(o.decisions == () for o in joins)
    cases = [("m.room.member", {"membership": "join", "displayname": "Z\u200bUTS"}),
             ("m.room.member", {"membership": "leave", "reason": "bande de zuts"}),
             ("m.room.name", {"name": "la classe des zut"}),
             ("m.room.topic", {"topic": "zut !"}),
             ("m.room.topic", {"topic": "Sorties", "m.topic": {"m.text": [{"body": "<b>zut</b>"}]}})]
    for etype, content in cases:
        judged = mem.judge(profile, _state(etype, content), now=NOON)
        assert [d.protection for d in judged.decisions] == ["banned_words"], (etype, content)
    assert [d.protection for d in mem.judge(profile, _state("m.room.member", {"membership": "join", "displayname":
                                                                              5}), now=NOON).decisions] == ["malformed"]
    assert mem.judge(profile, _msg("bonjour"), now=NOON).decisions == ()  # none of it was a message


def test_a_name_posing_as_the_staff_is_refused() -> None:
    """A staff title, in any disguise, plural or feminine, or the very name a moderator of the room
    shows (by the same folding as words: "Mme Durαnd" is "Mme Durand"); ordinary names pass, and
    a title inside a longer word is no title ("Laurent", "Profeta")."""
    from bridge.policy.engine import read_content
    from bridge.policy.model import Names
    from bridge.policy.protections.text import staff_name

    profile = Profile("p", names=Names())
    staff = frozenset({staff_name("Mme Durand"), staff_name("Jean-Paul Morel")})

    def verdict(name: str) -> list[str]:
        content = {"membership": "join", "displayname": name}
        return [d.protection for d in read_content(profile, content, kind="m.room.member", staff_names=staff)]

    for posing in ("Mme la Directrice", "DIRECTEUR", "PR0F de maths", "la maîtresse", "Le C.P.E.", "Les profs",
                   "Mme Durαnd", "mme  durand", "JEAN PAUL MOREL", "Secrétariat du collège", "ENT"):
        assert verdict(posing) == ["names"], posing
    for fine in ("Anne Martin (maman de Lina)", "Laurent Vincent", "Giulia Profeta", "Paul Morel", "Mme Durant"):
        assert verdict(fine) == [], fine


def test_exempt_power_is_never_judged() -> None:
    mem = ModerationMemory()
    teacher = Message("!r:s", "$t", "@t:s", 50, {"msgtype": "m.text", "body": "zut " * 3})
    assert all(not mem.judge(PROFILE, teacher, now=NOON + timedelta(seconds=i)).decisions for i in range(10))


# --- the shell, on the fake homeserver ------------------------------------------------------


class _Bot:
    """The parts of the encrypted bot moderation uses: its user id, and notices (recorded)."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.client = None
        self.notices: list[tuple[str, str]] = []
        self.txn_ids: list[str | None] = []

    async def send_notice(self, room_id: str, text: str, *, txn_id: str | None = None) -> str:
        self.notices.append((room_id, text))
        self.txn_ids.append(txn_id)
        return "$notice"


@pytest.fixture
async def shell(tmp_path: Path) -> Any:
    fake = FakeHomeserver()
    clock = FakeClock(NOON)
    api = AppserviceAPI(as_token="as-token", transport=fake, clock=clock)
    bot = "@ent-bridge_bot:ent.test"
    await api.register_user("ent-bridge_bot")
    room = await api.create_room(as_user=bot, body={"preset": "private_chat", "power_level_content_override": {
        "users": {}, "events_default": 0, "state_default": 50}})
    parent = "@parent:ent.test"
    fake.register(parent)
    await api.invite(room, parent, as_user=bot)
    fake.store.join(fake.room(room), parent)
    store = await open_store(f"sqlite:///{tmp_path / 'b.db'}")
    mod = Moderator(policies_dir=ROOT / "policies", store=store, api=api, bot=_Bot(bot),  # type: ignore[arg-type]
                    audit=AuditLog(store, key="k" * 32), clock=clock)
    await mod.start()
    mod.room_template = {room: "class"}
    yield mod, fake, room, parent, clock, store
    await mod.stop()
    await store.close()


async def test_banned_word_is_redacted_warned_and_audited_without_content(shell: Any) -> None:
    mod, fake, room, parent, _clock, store = shell
    event_id = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                       {"msgtype": "m.text", "body": "espèce de connard"})["event_id"]
    await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": parent,
                        "content": {"msgtype": "m.text", "body": "espèce de connard"}})
    redacted = next(e for e in fake.room(room).timeline if e["event_id"] == event_id)
    assert redacted["content"] == {}
    assert any(parent in text for _, text in mod.bot.notices)
    rows = [r.body for r in await store.audit_rows()]
    assert any("moderation_banned_words" in b for b in rows) and not any("connard" in b for b in rows)


async def test_reactions_and_polls_from_the_homeservers_transactions_are_moderated(shell: Any) -> None:
    """In a room without encryption, reactions and polls come with the transactions, as messages do:
    an insult as a reaction's key or in a poll's question is taken down, and the warning says what
    was removed."""
    mod, fake, room, parent, _clock, store = shell
    reaction = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": "connards"}}
    poll = {"org.matrix.msc3381.poll.start": {"question": {"body": "qui est le plus gros connard ?"},
                                              "answers": [{"id": "a", "org.matrix.msc1767.text": "oui"}]}}
    thumbs = {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$m", "key": "👍"}}
    sent = {}
    for name, etype, content in (("reaction", "m.reaction", reaction),
                                 ("poll", "org.matrix.msc3381.poll.start", poll), ("thumbs", "m.reaction", thumbs)):
        sent[name] = fake.store.send_message(fake.room(room), parent, etype, content)["event_id"]
        await mod.on_event({"type": etype, "room_id": room, "event_id": sent[name], "sender": parent,
                            "content": content})
    timeline = {e["event_id"]: e for e in fake.room(room).timeline}
    assert timeline[sent["reaction"]]["content"] == {} and timeline[sent["poll"]]["content"] == {}
    assert timeline[sent["thumbs"]]["content"] == thumbs
    notices = [text for _, text in mod.bot.notices]
    assert any("votre réaction a été retirée" in t for t in notices)
    assert any("votre message a été retiré" in t for t in notices)  # the poll
    rows = [r.body for r in await store.audit_rows()]
    assert sum("moderation_banned_words" in b for b in rows) == 2


async def test_an_insulting_display_name_is_taken_back_and_the_member_stays(shell: Any) -> None:
    """A per-room display name comes with the transactions (state is never encrypted): an insult
    or a link there is redacted, which leaves the parent a member with no name but their id; an
    ordinary name stays, and the warning says what was removed."""
    mod, fake, room, parent, _clock, store = shell
    names = {"insult": "Ce c0nnard de voisin", "link": "Promo sur evil.ru", "fine": "Léa Martin (maman de Hugo)"}
    sent = {}
    for what, name in names.items():
        content = {"membership": "join", "displayname": name}
        sent[what] = fake.store.send_state(fake.room(room), parent, "m.room.member", parent, content)["event_id"]
        await mod.on_event({"type": "m.room.member", "room_id": room, "event_id": sent[what], "sender": parent,
                            "state_key": parent, "content": content})
    timeline = {e["event_id"]: e for e in fake.room(room).timeline}
    assert timeline[sent["insult"]]["content"] == {"membership": "join"} == timeline[sent["link"]]["content"]
    assert timeline[sent["fine"]]["content"]["displayname"] == names["fine"]
    assert fake.room(room).membership(parent) == "join"
    assert sum("votre nom affiché dans ce salon" in text for _, text in mod.bot.notices) == 2
    rows = [r.body for r in await store.audit_rows()]
    assert sum("moderation_banned_words" in b for b in rows) == 1 and sum("moderation_links" in b for b in rows) == 1
    assert not any(names["insult"] in b or names["link"] in b for b in rows)  # nor the names themselves


async def test_a_parent_taking_the_teachers_name_in_a_room_loses_it(shell: Any) -> None:
    """The teacher (a moderator of the room) shows "Claire Durand"; the parent renames themself
    "Claire Durand" in that room: redacted, and the school's moderators are told (report)."""
    mod, fake, room, parent, _clock, store = shell
    teacher = "@teacher:ent.test"
    fake.register(teacher)
    levels = fake.room(room).content("m.room.power_levels") or {}
    fake.store.send_state(fake.room(room), mod.bot.user_id, "m.room.power_levels", "",
                          {**levels, "users": {**(levels.get("users") or {}), teacher: 50}})
    fake.store.invite(fake.room(room), mod.bot.user_id, teacher, None)
    fake.store.join(fake.room(room), teacher)
    fake.store.send_state(fake.room(room), teacher, "m.room.member", teacher,
                          {"membership": "join", "displayname": "Claire Durand"})
    content = {"membership": "join", "displayname": "CLAIRE DURAND"}
    event_id = fake.store.send_state(fake.room(room), parent, "m.room.member", parent, content)["event_id"]
    await mod.on_event({"type": "m.room.member", "room_id": room, "event_id": event_id, "sender": parent,
                        "state_key": parent, "content": content})
    assert fake.room(room).content("m.room.member", parent) == {"membership": "join"}
    assert fake.room(room).content("m.room.member", teacher)["displayname"] == "Claire Durand"  # hers stays
    rows = [r.body for r in await store.audit_rows()]
    assert sum("moderation_names" in b for b in rows) == 1


async def test_flood_mutes_then_the_clock_lifts_it(shell: Any) -> None:
    mod, fake, room, parent, clock, store = shell
    for i in range(9):  # the shipped profile: 8 messages in 10 s
        await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": f"$f{i}", "sender": parent,
                            "content": {"msgtype": "m.text", "body": f"message {i}"}})
    levels = [e["content"] for e in fake.room(room).timeline if e["type"] == "m.room.power_levels"]
    assert any((c.get("users") or {}).get(parent) == -1 for c in levels)  # muted (the fake clock may lift it at once)
    audit = [r.body for r in await store.audit_rows()]
    assert any("moderation_flood" in b for b in audit)
    assert any("60 min" in text for _, text in mod.bot.notices)
    assert any("attention" in text for _, text in mod.bot.notices)
    assert not any("retiré" in text for _, text in mod.bot.notices)  # nothing was removed: never said so
    for _ in range(50):  # the unmute task sleeps on the fake clock: no real hour passes
        if not await store.mutes():
            break
        await asyncio.sleep(0)
    assert await store.mutes() == []
    assert parent not in (fake.room(room).content("m.room.power_levels")["users"])
    assert any(s >= 3599 for s in clock.slept)


async def test_mutes_survive_a_restart(shell: Any, tmp_path: Path) -> None:
    mod, fake, room, parent, clock, store = shell
    await mod.mute(room, parent, until_ms=clock.now_ms() + 600_000)
    await mod.stop()
    again = Moderator(policies_dir=ROOT / "policies", store=store, api=mod.api, bot=mod.bot,
                      audit=AuditLog(store, key="k" * 32), clock=clock)
    await again.start()
    assert again.memory.muted(room, parent, now_ms=clock.now_ms())
    for _ in range(50):
        if not await store.mutes():
            break
        await asyncio.sleep(0)
    assert await store.mutes() == [] and parent not in fake.room(room).content("m.room.power_levels")["users"]
    await again.stop()


async def test_moderators_and_the_bridge_itself_are_exempt(shell: Any) -> None:
    mod, fake, room, parent, _clock, _store = shell
    bot = mod.bot.user_id
    levels = fake.room(room).content("m.room.power_levels")
    await mod.api.set_state(room, "m.room.power_levels", "", {**levels, "users": {parent: 50}}, as_user=bot)
    mod.bot.client = _Rooms(room, {parent: 50})
    for sender in (parent, bot):
        event_id = fake.store.send_message(fake.room(room), sender, "m.room.message",
                                           {"msgtype": "m.text", "body": "connard"})["event_id"]
        await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": sender,
                            "content": {"msgtype": "m.text", "body": "connard"}})
        assert next(e for e in fake.room(room).timeline if e["event_id"] == event_id)["content"]
    assert mod.bot.notices == []


class _Rooms:
    """nio's view of the room's power levels, as the encrypted bot would have it."""

    def __init__(self, room_id: str, users: dict[str, int]) -> None:
        levels = type("L", (), {"get_user_level": staticmethod(lambda u: users.get(u, 0))})()
        self.rooms = {room_id: type("R", (), {"power_levels": levels, "display_name": "CP"})()}


async def test_an_event_handled_again_after_a_crash_acts_once(shell: Any) -> None:
    """The dispatcher may hand the same event over again (a crash before it recorded it as
    handled): the redaction and the notices carry request ids derived from the event, so the
    homeserver answers the second time with the first result; its decision is on record once."""
    mod, fake, room, parent, _clock, store = shell
    event_id = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                       {"msgtype": "m.text", "body": "connard"})["event_id"]
    event = {"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": parent,
             "content": {"msgtype": "m.text", "body": "connard"}}
    await mod.on_event(event)
    mod.memory = ModerationMemory()  # a restarted bridge remembers nothing: judged anew
    await mod.on_event(event)
    redactions = [e for e in fake.room(room).timeline if e["type"] == "m.room.redaction"]
    assert len(redactions) == 1
    warn_ids = [t for (_, text), t in zip(mod.bot.notices, mod.bot.txn_ids, strict=True) if "retiré" in text]
    assert len(warn_ids) == 2 and warn_ids[0] == warn_ids[1] and warn_ids[0] is not None
    decided = [r.body for r in await store.audit_rows() if "moderation_" in r.body]
    assert len(decided) == 1 and event_id in decided[0]  # on record once, though judged twice


async def test_a_room_created_moments_ago_is_moderated_from_its_first_message(shell: Any) -> None:
    """A sync (in another process) has just created a room: the moderator doesn't know it yet, and
    learns it from the room's own marker instead of letting its first messages through."""
    mod, fake, _room, parent, _clock, _store = shell
    bot = mod.bot.user_id
    fresh = await mod.api.create_room(as_user=bot, body={"preset": "private_chat", "initial_state": [
        {"type": "fr.ent-bridge.room", "state_key": "", "content": {"template": "class"}}]})
    other = await mod.api.create_room(as_user=bot, body={"preset": "private_chat"})  # not a managed room
    for room in (fresh, other):
        await mod.api.invite(room, parent, as_user=bot)
        fake.store.join(fake.room(room), parent)
    assert fresh not in mod.room_template
    ids = {}
    for room in (fresh, other):
        ids[room] = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                            {"msgtype": "m.text", "body": "connard"})["event_id"]
        await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": ids[room], "sender": parent,
                            "content": {"msgtype": "m.text", "body": "connard"}})
    assert next(e for e in fake.room(fresh).timeline if e["event_id"] == ids[fresh])["content"] == {}
    assert next(e for e in fake.room(other).timeline if e["event_id"] == ids[other])["content"]  # left alone
    assert mod.room_template[fresh] == "class" and other not in mod.room_template


def test_the_same_event_is_judged_once() -> None:
    """Handed over twice (transaction and bot sync, or again after a crash): one strike, not two."""
    mem = ModerationMemory()
    first = mem.judge(PROFILE, _msg("zut", event="$same"), now=NOON)
    again = mem.judge(PROFILE, _msg("zut", event="$same"), now=NOON + timedelta(seconds=1))
    assert [d.protection for d in first.decisions] == ["banned_words"] and again == first  # acted on again
    second = mem.judge(PROFILE, _msg("zut", event="$other"), now=NOON + timedelta(seconds=2))
    assert [d.protection for d in second.decisions] == ["banned_words", "strikes"]  # the 2nd strike, not 3rd


async def test_an_action_that_failed_is_done_when_the_event_is_retried(shell: Any) -> None:
    """The homeserver refuses the redaction (retries exhausted): the handler fails, the dispatcher
    hands the event over again later, and the redaction is done then, with no second strike and
    no second audit entry."""
    from bridge.errors import TemporaryMatrixError

    mod, fake, room, parent, _clock, store = shell
    event_id = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                       {"msgtype": "m.text", "body": "connard"})["event_id"]
    event = {"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": parent,
             "content": {"msgtype": "m.text", "body": "connard"}}
    fake.fail("PUT", "/redact/", 500, times=mod.api.max_retries + 1)
    with pytest.raises(TemporaryMatrixError):
        await mod.on_event(event)
    assert next(e for e in fake.room(room).timeline if e["event_id"] == event_id)["content"]  # not yet
    await mod.on_event(event)  # the dispatcher's retry
    assert next(e for e in fake.room(room).timeline if e["event_id"] == event_id)["content"] == {}
    assert len(mod.memory._strikes[(room, parent)]) == 1
    assert sum("moderation_banned_words" in r.body for r in await store.audit_rows()) == 1


async def test_the_decision_is_audited_before_anything_is_done(shell: Any) -> None:
    from bridge.errors import TemporaryMatrixError

    mod, fake, room, parent, _clock, store = shell
    event_id = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                       {"msgtype": "m.text", "body": "connard"})["event_id"]
    fake.fail("PUT", "/redact/", 500, times=mod.api.max_retries + 1)
    with pytest.raises(TemporaryMatrixError):
        await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": parent,
                            "content": {"msgtype": "m.text", "body": "connard"}})
    rows = [r.body for r in await store.audit_rows()]
    assert any("moderation_banned_words" in b and event_id in b for b in rows)  # recorded, though it failed


async def test_the_engine_runs_off_the_event_loop(shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a long message is being read (here: held on purpose), the event loop keeps running
    other work, and other messages are judged meanwhile: reading happens on the engine's own
    thread, and only the judgement (the memory) on the loop. (Short ones are read on the loop:
    microseconds, less than the hop to a thread.)"""
    import threading

    from bridge import moderation
    from bridge.moderation import INLINE_CHARS

    mod, fake, room, parent, _clock, _store = shell
    body = "connard " + "bla " * (INLINE_CHARS // 4)
    read, release, threads = moderation.read_content, threading.Event(), []

    def held(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        assert release.wait(timeout=60)
        return read(*args, **kwargs)

    monkeypatch.setattr(moderation, "read_content", held)

    def event(text: str) -> dict[str, Any]:
        event_id = fake.store.send_message(fake.room(room), parent, "m.room.message",
                                           {"msgtype": "m.text", "body": text})["event_id"]
        return {"type": "m.room.message", "room_id": room, "event_id": event_id, "sender": parent,
                "content": {"msgtype": "m.text", "body": text}}

    long, short = event(body), event("espèce de connard")
    judged = asyncio.ensure_future(mod.on_event(long))
    ticks = 0
    while not threads or ticks < 50:  # the loop turns while the engine holds the message
        await asyncio.sleep(0)
        ticks += 1
    # Judged and acted on while the long one is still being read (the bound only keeps a
    # regression from hanging the suite: it fails instead).
    await asyncio.wait_for(mod.on_event(short), timeout=60)
    assert not judged.done()
    assert next(e for e in fake.room(room).timeline if e["event_id"] == short["event_id"])["content"] == {}
    release.set()
    await judged
    assert threads == ["moderation-engine_0"] and threading.current_thread() is threading.main_thread()
    assert next(e for e in fake.room(room).timeline if e["event_id"] == long["event_id"])["content"] == {}


def test_a_wave_across_rooms_is_caught_once_with_a_higher_bar_for_moderators() -> None:
    """A hijacked account writing one message in each of many rooms: no room sees a flood, the
    memory sees the wave. Once caught, its mute covers what follows."""
    profile = Profile("p", fan_out=FanOut(max_rooms=3, max_rooms_moderators=6, window_minutes=10, mute_minutes=60))
    mem = ModerationMemory()

    def post(room: int, minute: float, *, power: int = 0, sender: str = "@hijacked:s") -> Any:
        return mem.judge(profile, Message(f"!r{room}:s", f"$w{next(_EVENTS)}", sender, power,
                                          {"msgtype": "m.text", "body": "cliquez ici"}),
                         now=NOON + timedelta(minutes=minute))

    outs = [post(i, i * 0.5) for i in range(6)]
    waves = [[d.protection for d in o.decisions] for o in outs]
    assert waves == [[], [], [], ["fan_out"], [], []]  # a 4th room within 10 minutes; once
    assert outs[3].mute_until_ms == int((NOON + timedelta(minutes=1.5 + 60)).timestamp() * 1000)
    assert outs[3].decisions[0].detail["everywhere"] is True
    # Slowly, over hours, the same rooms are no wave.
    assert all(not post(i, 200 + i * 11, sender="@calm:s").decisions for i in range(6))
    # A teacher writes to several classes: a wave only past the moderators' bar.
    teacher = [post(i, i * 0.5, power=50, sender="@teacher:s") for i in range(8)]
    assert [bool(o.decisions) for o in teacher] == [False] * 6 + [True, False]  # a 7th room: more than 6


async def test_a_wave_mutes_the_account_in_every_room_of_the_school(shell: Any) -> None:
    mod, fake, first, parent, _clock, store = shell
    bot = mod.bot.user_id
    rooms = [first]
    for _ in range(5):
        room = await mod.api.create_room(as_user=bot, body={"preset": "private_chat", "power_level_content_override": {
            "users": {}, "events_default": 0, "state_default": 50}})
        await mod.api.invite(room, parent, as_user=bot)
        fake.store.join(fake.room(room), parent)
        rooms.append(room)
    other_school = rooms.pop()
    mod.room_template = {r: "class" for r in [*rooms, other_school]}
    mod.room_school = {**{r: "0750001A" for r in rooms}, other_school: "0750002B"}
    mod.rooms_of = lambda user: [*rooms, other_school] if user == parent else []
    for i, room in enumerate(rooms):  # one message in each of 5 rooms (the shipped bar: more than 4)
        await mod.on_event({"type": "m.room.message", "room_id": room, "event_id": f"$wave{i}", "sender": parent,
                            "content": {"msgtype": "m.text", "body": "Urgent : cliquez ici"}})
    def muted_in(room: str) -> bool:  # (the fake clock may already have lifted it: look at the history)
        return any((e["content"].get("users") or {}).get(parent) == -1
                   for e in fake.room(room).timeline if e["type"] == "m.room.power_levels")

    assert [muted_in(r) for r in rooms] == [True] * len(rooms)  # every room of the school, at once
    assert not muted_in(other_school)  # another school's room: not this wave's
    assert any("salons de l'établissement" in text for _, text in mod.bot.notices)
    assert any("moderation_fan_out" in r.body for r in await store.audit_rows())


async def test_a_message_with_nothing_to_record_waits_for_no_audit_write(shell: Any) -> None:
    """An insult's audit entry is being written (the store slow to commit): an ordinary message
    judged meanwhile is decided without waiting for that write (it has nothing of its own on it)."""
    mod, _fake, room, parent, _clock, store = shell
    held, release = asyncio.Event(), asyncio.Event()
    extend = store.audit_extend

    async def slow(*args: Any, **kwargs: Any) -> Any:
        held.set()
        await release.wait()
        return await extend(*args, **kwargs)

    store.audit_extend = slow
    insult = asyncio.ensure_future(mod.on_event({
        "type": "m.room.message", "room_id": room, "event_id": "$insult", "sender": parent,
        "content": {"msgtype": "m.text", "body": "espèce de connard"}}))
    await held.wait()
    ordinary = asyncio.ensure_future(mod.on_event({
        "type": "m.room.message", "room_id": room, "event_id": "$hello", "sender": parent,
        "content": {"msgtype": "m.text", "body": "bonjour"}}))
    for _ in range(200):
        if ordinary.done():
            break
        await asyncio.sleep(0)
    assert ordinary.done() and not insult.done()  # decided while the insult's write still waits
    release.set()
    await insult
    assert any("moderation_banned_words" in r.body for r in await store.audit_rows())


async def test_messages_the_bot_could_not_read_back_are_audited_and_reported_to_the_school(shell: Any) -> None:
    """A managed room whose missed messages could not all be read back: on record, and its
    school's moderators are asked to read the room; a room the bridge doesn't run says nothing."""
    mod, _fake, room, _parent, _clock, store = shell
    mod.room_school = {room: "0750001A", "!mods:ent.test": "0750001A"}
    mod.reports_room = {"0750001A": "!mods:ent.test"}
    await mod.gap_unread(room, 5000, "too_long")
    [(target, text)] = mod.bot.notices
    assert target == "!mods:ent.test" and "plus de 5000 messages" in text and "relire" in text
    [row] = [r.body for r in await store.audit_rows() if "moderation_unread" in r.body]
    assert '"why":"too_long"' in row and room in row
    mod._unmanaged["!dm:ent.test"] = 2**62  # known not to be the bridge's
    await mod.gap_unread("!dm:ent.test", 10, "not_read")
    assert len(mod.bot.notices) == 1


def test_unreadable_messages_are_taken_down_without_a_strike_but_a_flood_of_them_mutes() -> None:
    from bridge.policy.unreadable import unreadable

    mem = ModerationMemory()

    def unread(i: int) -> Any:  # an encrypted message judged i minutes after noon
        msg = Message("!r:s", f"$u{next(_EVENTS)}", "@p:s", 0, {}, "m.room.encrypted")
        return mem.judge(PROFILE, msg, now=NOON + timedelta(minutes=i), read=[unreadable()])

    # Two a few minutes apart: both taken down, neither a strike (two strikes would mute here).
    first, second = unread(0), unread(5)
    for out in (first, second):
        assert [d.protection for d in out.decisions] == ["undecryptable"] and out.mute_until_ms is None
        assert out.decisions[0].actions == ("redact", "warn", "report")
    # Four within ten seconds: a flood, muted like any other.
    burst = [mem.judge(PROFILE, Message("!r:s", f"$b{i}", "@p:s", 0, {}, "m.room.encrypted"),
                       now=NOON + timedelta(minutes=10, seconds=i), read=[unreadable()]) for i in range(4)]
    assert burst[-1].mute_until_ms is not None and "flood" in {d.protection for d in burst[-1].decisions}


WAVES = Profile("w", banned_words=BannedWords(("zut",), ("redact", "warn")),
                flood=Flood(max_messages=3, per_seconds=10, action=("mute", "warn"), mute_minutes=5),
                quiet_hours=QuietHours(), strikes=Strikes(threshold=2, window_hours=3, mute_minutes=30),
                fan_out=FanOut(max_rooms=2, window_minutes=10, mute_minutes=20))


@pytest.mark.parametrize("seed", range(6))
def test_letting_go_of_idle_senders_changes_no_decision(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Days of traffic (bursts, insults, waves across rooms, quiet spells of minutes to hours):
    a memory that lets go of what no rule can read decides exactly as one that keeps everything,
    and ends up holding only the senders of the last hours."""
    import random

    from bridge.policy import memory

    rng = random.Random(seed)
    senders = [f"@p{i}:s" for i in range(12)]
    rooms = [f"!r{i}:s" for i in range(4)]
    script, now = [], NOON
    for n in range(3000):
        now += timedelta(seconds=rng.choice([0.5, 2, 5, 30, 300, 2400, 4 * 3600]))
        body = rng.choice(["bonjour", "merci", "zut alors", "à demain"])
        script.append((now, Message(rng.choice(rooms), f"$s{seed}-{n}", rng.choice(senders), 0,
                                    {"msgtype": "m.text", "body": body})))
    forgetting = ModerationMemory()
    outcomes = [forgetting.judge(WAVES, msg, now=at) for at, msg in script]
    monkeypatch.setattr(memory, "FORGET_EVERY_MS", 2 ** 62)  # never lets go
    keeping = ModerationMemory()
    assert [keeping.judge(WAVES, msg, now=at) for at, msg in script] == outcomes
    assert any(o.decisions for o in outcomes) and any(o.mute_until_ms for o in outcomes)
    assert len(keeping._recent) > len(forgetting._recent)  # it did let go of someone
    last = int(script[-1][0].timestamp() * 1000)
    forgetting.forget_idle(last)
    # Each table keeps what its rule reads: the flood's 10 s, the wave's 10 min, the strikes' 3 h.
    assert all(times[-1] >= last - 10_000 for times in forgetting._recent.values())
    assert all(times[-1] >= last - 600_000 for times in forgetting._posted.values())
    assert all(times[-1] >= last - 3 * 3_600_000 for times in forgetting._strikes.values())
    assert set(forgetting._posted) == set(forgetting._posted_rooms)


def test_a_message_with_nothing_to_do_costs_the_memory_no_object_of_its_own() -> None:
    from bridge.policy.memory import NOTHING

    mem = ModerationMemory()
    quiet = [mem.judge(PROFILE, _msg("bonjour", sender=f"@p{i}:s"), now=NOON) for i in range(50)]
    assert all(o is NOTHING for o in quiet)
    assert mem.judge(PROFILE, _msg("zut"), now=NOON).decisions  # one with decisions keeps its own
