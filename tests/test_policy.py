"""Moderation policies (pure): loader errors, the generated schema, each protection, the engine."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.errors import InputError
from bridge.policy.engine import Message, evaluate, strike_escalation
from bridge.policy.loader import json_schema, load_policies
from bridge.policy.model import Links, Media, Mentions, QuietHours
from bridge.policy.protections import other, text

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")


def profile():
    return load_policies(ROOT / "policies").profiles["default"]


def test_shipped_policies_and_schema_in_sync() -> None:
    p = profile()
    assert p.banned_words and "connard" in p.banned_words.words
    shipped = json.loads((ROOT / "policies" / "schema" / "moderation.schema.json").read_text())
    assert shipped == json_schema()  # regenerate with `ent-bridge policy schema`
    assert "yaml-language-server: $schema=schema/moderation.schema.json" in (
        ROOT / "policies" / "moderation.yaml").read_text()


@pytest.mark.parametrize("edit, message", [
    (("max_messages: 8", "max_messages: huit"), "max_messages: expected a whole number"),
    (("      flood:", "      floood:"), "unknown protection 'floood'"),
    (("action: [mute, warn, report]", "action: [mute, shout, report]"), "action: unknown shout"),
    (('start: "20:00"', 'start: "8 pm"'), "start: expected a time like 20:00"),
    (("words_file: banned-words-fr.txt", "words_file: nope.txt"), "not found"),
])
def test_policy_errors_have_line_and_column(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    folder = tmp_path / "p"
    shutil.copytree(ROOT / "policies", folder)
    path = folder / "moderation.yaml"
    original = path.read_text()
    assert edit[0] in original
    line = original[:original.index(edit[0])].count("\n") + 1  # the edited line, wherever comments put it
    path.write_text(original.replace(*edit, 1))
    with pytest.raises(InputError) as err:
        load_policies(folder)
    assert message in str(err.value) and err.value.line == line and "column" in str(err.value)


@pytest.mark.parametrize("body, hit", [
    ("Quel connard ce prof", True), ("CONNARD", True), ("c0nn4rd !", True), ("connnnard", True),
    ("espèce d'Enculé", True), ("nique ta mère", True), ("NiQuE   tA   MèRe", True),
    ("je suis à l'ordinateur", False), ("computer science", False), ("député", False),
    ("ta gueule", True), ("une tagueule", False), ("Bonjour, merci pour la sortie", False),
])
def test_banned_words(body: str, hit: bool) -> None:
    assert (text.banned_word([body], profile().banned_words) is not None) is hit


@pytest.mark.parametrize("body, allowed, hit", [
    ("voir https://www.education.gouv.fr/x", ("education.gouv.fr",), False),
    ("voir https://evil.example.com/x", ("education.gouv.fr",), True),
    ("le site www.ac-lyon.fr", ("ac-*.fr",), False),
    ("le site ac-lyon.fr.evil.com", ("ac-*.fr",), True),
    ("http://a.b.fr", (), True),
    ("pas de lien ici. Fin.", (), False),
])
def test_links(body: str, allowed: tuple[str, ...], hit: bool) -> None:
    assert (text.links([body], [], Links(allowed)) is not None) is hit


def test_mentions_media_flood() -> None:
    m = Mentions()
    assert text.mentions({"body": "@room réunion"}, ["@room réunion"], m, is_moderator=False)
    assert text.mentions({"body": "x", "m.mentions": {"room": True}}, ["x"], m, is_moderator=True) is None
    assert text.mentions({"body": "x", "m.mentions": {"user_ids": [f"@u{i}:s" for i in range(6)]}}, ["x"], m,
                         is_moderator=False)
    media = Media(("image/png",), 1.0)
    assert other.media({"msgtype": "m.file", "info": {"mimetype": "application/x-msdownload"}}, media)
    assert other.media({"msgtype": "m.image", "info": {"mimetype": "image/png", "size": 2_000_000}}, media)
    assert other.media({"msgtype": "m.image", "info": {"mimetype": "image/png", "size": 1000}}, media) is None
    assert other.media({"msgtype": "m.text", "body": "x"}, media) is None
    from bridge.policy.model import Flood

    f = Flood(max_messages=3, per_seconds=10)
    assert other.flood([0, 1000, 2000], 2000, f) is None
    assert other.flood([0, 1000, 2000, 3000], 3000, f)
    assert other.flood([0, 1000, 2000, 30000], 30000, f) is None  # old messages left the window


@pytest.mark.parametrize("local, quiet", [
    (datetime(2026, 12, 1, 21, 0), True),   # Tuesday evening
    (datetime(2026, 12, 1, 7, 0), True),    # Tuesday early morning
    (datetime(2026, 12, 1, 7, 30), False),  # the window ends at 07:30
    (datetime(2026, 12, 1, 12, 0), False),
    (datetime(2026, 12, 5, 12, 0), True),   # Saturday
])
def test_quiet_hours_in_school_timezone(local: datetime, quiet: bool) -> None:
    now = local.replace(tzinfo=PARIS).astimezone(UTC)
    assert other.in_quiet_hours(now, QuietHours()) is quiet


def test_engine_exempts_moderators_and_escalates() -> None:
    p = profile()
    noon = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    rude = Message("!r", "$e", "@parent:s", 0, {"msgtype": "m.text", "body": "connard"})
    [d] = evaluate(p, rude, now=noon)
    assert d.protection == "banned_words" and d.actions == ("redact", "warn", "report")
    teacher = Message("!r", "$e", "@prof:s", 50, {"msgtype": "m.text", "body": "connard"})
    assert evaluate(p, teacher, now=noon) == []
    evening = datetime(2026, 12, 1, 20, 30, tzinfo=UTC)
    polite = Message("!r", "$e", "@parent:s", 0, {"msgtype": "m.text", "body": "Bonsoir, une question"})
    assert [d.protection for d in evaluate(p, polite, now=evening)] == ["quiet_hours"]
    now_ms = int(noon.timestamp() * 1000)
    assert strike_escalation([now_ms - 1000, now_ms], now_ms, p) is None
    assert strike_escalation([now_ms - 2000, now_ms - 1000, now_ms], now_ms, p) == 60
    assert strike_escalation([now_ms - 25 * 3_600_000, now_ms - 1000, now_ms], now_ms, p) is None  # decay


@pytest.mark.parametrize("user, membership, expect", [
    ("@stranger:s", "invite", "@stranger:s"), ("@stranger:s", "join", "@stranger:s"),
    ("@stranger:s", "leave", None), ("@parent:s", "join", None),
    ("@ent-bridge_bot:s", "join", None), ("@ent-bridge_keyless:s", "join", None),  # the bridge's own users
])
def test_outsider(user: str, membership: str, expect: str | None) -> None:
    from bridge.policy.outsiders import outsider

    event = {"type": "m.room.member", "room_id": "!r:s", "state_key": user, "content": {"membership": membership}}
    bridge_users = ("@ent-bridge_bot:s", "@ent-bridge_keyless:s")
    assert outsider(event, {"!r:s": frozenset({"@parent:s"})}, bridge_users=bridge_users) == expect
    assert outsider({**event, "room_id": "!unmanaged:s"}, {"!r:s": frozenset()}, bridge_users=bridge_users) is None


def test_policy_explain_says_who_reads_and_where_reports_go(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    folder = tmp_path / "p"
    shutil.copytree(ROOT / "policies", folder)
    assert main(["policy", "explain", "moderators", "--dir", str(folder)]) == 0
    assert "signalements" in capsys.readouterr().out
    mod = folder / "moderation.yaml"
    mod.write_text(mod.read_text().replace("content_inspection: true", "content_inspection: false"))
    assert main(["policy", "explain", "family", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "compte sans appareil" in out and "métadonnées" in out
