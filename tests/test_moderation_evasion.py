"""Evasions tried as a prankster would, each with the decision it must get (pure engine, shipped policy)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.policy.engine import Message, evaluate
from bridge.policy.loader import load_policies
from bridge.policy.protections.text import compile_words
from bridge.policy.texts import message_texts, normalise

ROOT = Path(__file__).resolve().parent.parent
NOON = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # a Tuesday: no quiet hours
PROFILE = load_policies(ROOT / "policies").profiles["default"]
WORDS = compile_words(PROFILE.banned_words.words) if PROFILE.banned_words else ()


def decide(content: dict[str, Any], etype: str = "m.room.message") -> set[str]:
    msg = Message("!r:s", "$e", "@parent:s", 0, content, etype)
    return {d.protection for d in evaluate(PROFILE, msg, now=NOON, recent_ms=[0], compiled_words=WORDS)}


def text(body: str, **extra: Any) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, **extra}


@pytest.mark.parametrize("name, content, protection", [
    ("zero-width space inside", text("quel con\u200bnard"), "banned_words"),
    ("soft hyphen inside", text("quel con\u00adnard"), "banned_words"),
    ("bidi controls around", text("quel \u202econnard\u202c"), "banned_words"),
    ("Cyrillic а for a", text("quel connаrd"), "banned_words"),
    ("Cyrillic о and с", text("quel соnnаrd"), "banned_words"),
    ("fullwidth letters", text("ｃｏｎｎａｒｄ"), "banned_words"),
    ("spaced-out letters", text("c o n n a r d"), "banned_words"),
    ("leetspeak and repeats", text("c0nnnn4rrrd !!"), "banned_words"),
    ("only in formatted_body", text("bonjour", format="org.matrix.custom.html",
                                    formatted_body="<p>quel <b>connard</b></p>"), "banned_words"),
    ("only in an edit", text("* bonjour", **{"m.new_content": text("quel connard"),
                                           "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
     "banned_words"),
    ("in a file name", {"msgtype": "m.file", "body": "doc", "filename": "connard.pdf",
                        "info": {"mimetype": "application/pdf"}, "url": "mxc://s/a"}, "banned_words"),
    ("in a poll", {"org.matrix.msc3381.poll.start": {"question": {"body": "Qui est un connard ?"},
                                                     "answers": [{"id": "a", "m.text": "oui"}]}}, "banned_words"),
    ("link only in an href", text("voir ici", format="org.matrix.custom.html",
                                  formatted_body='<a href="https://evil.ru/x">ici</a>'), "links"),
    ("bare short link", text("regarde bit.ly/abc"), "links"),
    ("bare domain, any public suffix", text("va sur evil.ru"), "links"),
    ("link in parentheses", text("(https://evil.example.com)"), "links"),
    ("malformed mentions", text("bonjour", **{"m.mentions": "x"}), "malformed"),
    ("malformed body", {"msgtype": "m.text", "body": ["connard"]}, "malformed"),
    ("malformed edit", text("x", **{"m.new_content": "connard"}), "malformed"),
    ("malformed media info", {"msgtype": "m.image", "body": "i", "info": "x", "url": "mxc://s/a"}, "malformed"),
    ("media with url and no msgtype", {"body": "x", "url": "mxc://s/a", "info": {"mimetype": "application/x-msdownload"}},
     "media"),
    ("huge message", text("a." * 12_000), "size"),
    ("variation selector inside", text("quel con\ufe0fnard"), "banned_words"),
    ("grapheme joiner inside", text("quel con\u034fnard"), "banned_words"),
    ("Hangul filler inside", text("quel con\u3164nard"), "banned_words"),
    ("Greek omicron and alpha", text("quel cοnnαrd"), "banned_words"),
    ("letters no decomposition undoes", text("quel cønnard"), "banned_words"),
    ("squared letters", text("🅲🅾🅽🅽🅰🆁🅳"), "banned_words"),
    ("small capitals", text("ᴄᴏɴɴᴀʀᴅ"), "banned_words"),
    ("regional indicators", text("🇨 🇴 🇳 🇳 🇦 🇷 🇩"), "banned_words"),
    ("circled letters", text("ⓒⓞⓝⓝⓐⓡⓓ"), "banned_words"),
    ("a quote that is no reply", text("> quel connard\n\nbonjour"), "banned_words"),
    ("a reply fallback in HTML, in no reply", text("bonjour", format="org.matrix.custom.html",
                                                  formatted_body="<mx-reply>quel connard</mx-reply> bonjour"),
     "banned_words"),
    ("in one paragraph of several", text("bonjour", format="org.matrix.custom.html",
                                         formatted_body="<p>quel connard</p><p>bonjour</p>"), "banned_words"),
    ("before a line break", text("bonjour", format="org.matrix.custom.html",
                                 formatted_body="quel connard<br>bonjour"), "banned_words"),
    ("in a table cell", text("bonjour", format="org.matrix.custom.html",
                             formatted_body="<table><tr><td>connard</td><td>x</td></tr></table>"), "banned_words"),
    ("in a tooltip", text("bonjour", format="org.matrix.custom.html",
                          formatted_body='<span title="quel connard">bonjour</span>'), "banned_words"),
    ("extensible event text", text("bonjour", **{"m.text": [{"body": "quel connard"}]}), "banned_words"),
    ("extensible event text, unstable", {"org.matrix.msc1767.text": "quel connard"}, "banned_words"),
    ("malformed extensible text", text("bonjour", **{"m.text": 3}), "malformed"),
    ("bare domain in fullwidth", text("va sur ｅｖｉｌ．ｒｕ"), "links"),
    ("bare domain, ideographic dot", text("va sur evil。ru"), "links"),
    ("followed by an exclamation mark", text("quel connard!"), "banned_words"),
    ("after an exclamation mark", text("oh!connard"), "banned_words"),
    ("plural", text("des connards"), "banned_words"),
    ("feminine", text("quelle abrutie"), "banned_words"),
    ("feminine plural", text("bande de salopes"), "banned_words"),
    ("plural, disguised", text("des c0nn4rdsss"), "banned_words"),
    ("split by one space", text("quel con nard"), "banned_words"),
    ("split after two letters", text("une vraie sa lope"), "banned_words"),
    ("split by a braille blank", text("quel con\u2800nard"), "banned_words"),
    ("split, disguised", text("quel c0n n4rd"), "banned_words"),
    ("brackets for an o", text("quel c()nnard"), "banned_words"),
    ("a pipe for an l", text("quel sa|aud"), "banned_words"),
    ("a javascript: link", text("clique", format="org.matrix.custom.html",
                                formatted_body='<a href="javascript:alert(1)">ici</a>'), "links"),
    ("a javascript: link, disguised", text("clique", format="org.matrix.custom.html",
                                           formatted_body='<a href=" Java&#9;Script:alert(1)">ici</a>'), "links"),
    ("a data: link", text("clique", format="org.matrix.custom.html",
                          formatted_body='<a href="data:text/html;base64,PHNjcmlwdD4=">ici</a>'), "links"),
])
def test_evasions_are_caught(name: str, content: dict[str, Any], protection: str) -> None:
    assert protection in decide(content), name


@pytest.mark.parametrize("content", [
    text("Bonjour, Lina sera absente demain matin."),
    text("Le site de l'académie : www.ac-lyon.fr"),
    text("voir https://www.education.gouv.fr/x"),
    text("> <@a:s> quel connard\n\nnon, restons polis",  # a reply's quoted fallback is someone else's text
         **{"m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}),
    text("Bonjour, à demain ! Ça va très bien, ŒUVRE, cœur, Noël, garçon"),  # letters with accents
    text("Le portail : www.ac-lyon．fr"),  # an allowed domain, written with a fullwidth dot
    text("Bonjour ! Merci !! À demain, 10h30 salle 4 :)"),
    text("Les cônes de signalisation sont dans la cour"),
    text("version 1.2 du document, fichier rapport.txt"),  # not public suffixes: not links
    text("Je suis à l'ordinateur, computer science"),
    text("Il a pu te le dire hier, la mer de glace, en cas de pluie"),  # short words side by side
    text("Choix (a|b) : () vide, [] aussi, {} encore"),  # brackets and pipes that draw no letter
    text("voir", format="org.matrix.custom.html",
         formatted_body='<a href="mailto:secretariat@ac-lyon.fr">écrire</a> <a href="#haut">haut</a>'),
])
def test_ordinary_messages_pass(content: dict[str, Any]) -> None:
    assert decide(content) == set()


def test_reply_fallback_html_is_left_out() -> None:
    texts, _ = message_texts({"body": "ok", "formatted_body": "<mx-reply><blockquote>connard</blockquote></mx-reply>ok",
                              "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}})
    assert "connard" not in " ".join(texts)


FORMAT_CHARS = ["\u200b", "\u200c", "\u200d", "\u2060", "\u00ad", "\ufeff", "\u202e", "\u202c", "\u2066"]
CONFUSABLE = {"a": ["а", "ɑ"], "o": ["о", "ο", "〇"], "e": ["е"], "c": ["с", "ϲ"], "p": ["р"], "i": ["і"],
              "n": ["ո"], "r": ["г"], "d": ["ԁ"]}


@settings(max_examples=300, deadline=None)
@given(word=st.sampled_from(["connard", "salope", "enculé", "putain", "abruti"]), data=st.data(),
       before=st.text(alphabet=st.characters(categories=["Ll", "Zs"]), max_size=20),
       after=st.text(alphabet=st.characters(categories=["Ll", "Zs"]), max_size=20))
def test_format_characters_and_confusables_never_make_a_banned_word_pass(word: str, data: Any, before: str,
                                                                         after: str) -> None:
    disguised = ""
    for ch in word:
        if ch in CONFUSABLE and data.draw(st.booleans()):
            ch = data.draw(st.sampled_from(CONFUSABLE[ch]))
        disguised += ch + "".join(data.draw(st.lists(st.sampled_from(FORMAT_CHARS), max_size=2)))
    body = f"{before} {disguised} {after}"
    assert "banned_words" in decide(text(body)), body


def test_normal_form_is_linear_on_hostile_input() -> None:
    """No backtracking pattern: the work grows with the input, checked by its output, not a clock."""
    for n in (1_000, 10_000, 100_000):
        # n one-letter tokens, and the spaced-out reading of them all ("aaa…" collapsed to "a").
        assert normalise("a." * n).split() == ["a"] * (n + 1)


async def test_admin_commands_come_only_from_new_text_messages() -> None:
    """An edit whose new body is `!status`, a notice, or a malformed message (which moderation
    takes down) never runs an admin command."""
    from bridge.admin_room import AdminRoom
    from bridge.matrix.received import ReceivedMessage

    ran: list[str] = []
    said: list[str] = []

    class Bot:
        async def send_notice(self, room_id: str, text: str, **_: Any) -> str:
            said.append(text)
            return "$n"

    async def status() -> str:
        ran.append("status")
        return "ok"

    room = AdminRoom(bot=Bot(), room_id="!admin:s", admins=frozenset({"@admin:s"}),  # type: ignore[arg-type]
                     commands=lambda: {"status": status})

    def message(content: dict[str, Any]) -> ReceivedMessage:
        return ReceivedMessage("!admin:s", "$e", "@admin:s", str(content.get("body", "")), True, content)

    edit = {"msgtype": "m.text", "body": "!status", "m.new_content": {"msgtype": "m.text", "body": "!status"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}
    await room.on_message(message(edit))
    await room.on_message(message({"msgtype": "m.notice", "body": "!status"}))
    await room.on_message(message({"msgtype": "m.text", "body": "!status", "formatted_body": 3}))
    await room.on_message(message({"msgtype": "m.text", "body": "!status", "m.mentions": "x"}))
    assert ran == [] and said == []
    await room.on_message(message({"msgtype": "m.text", "body": "!status"}))
    assert ran == ["status"] and said == ["ok"]


def test_crafted_policy_files_are_refused_fast(tmp_path: Path) -> None:
    """An alias bomb is refused before anything is built (it took 106 s and 3 GB, then 'OK');
    a nested word list is an error, not silently part of the policy."""
    import shutil

    from bridge.errors import InputError
    from bridge.policy.folder import check_folder

    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    path = folder / "moderation.yaml"
    original = path.read_text()
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(  # 9 levels of 9: 387 million elements
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9))
    path.write_text(bomb + original)
    with pytest.raises(InputError, match="aliases"):
        check_folder(folder)
    path.write_text("note: x\n" + original)
    with pytest.raises(InputError, match="unknown key 'note'"):
        check_folder(folder)
    path.write_text(original.replace("words_file: banned-words-fr.txt", "words: [connard, [a, b]]"))
    with pytest.raises(InputError, match="list of texts") as err:
        check_folder(folder)
    assert err.value.line is not None
    path.write_text("x" * (2 * 1024 * 1024))
    with pytest.raises(InputError, match="too large"):
        check_folder(folder)


def test_nio_never_writes_message_content_to_the_logs() -> None:
    """An event that fails nio's schema check is quoted by nio's warning; the bridge's logging keeps
    nio's own words only (a subprocess: logging is configured once per process)."""
    import subprocess
    import sys

    script = (
        "from bridge import logging as blog\n"
        "blog.configure(level='debug', json=True)\n"
        "from nio.events import Event\n"
        "Event.parse_event({'type': 'm.room.message', 'event_id': '$x', 'sender': '@a:s', 'origin_server_ts': 1,"
        " 'content': {'msgtype': 'm.text', 'body': {'x': 'quel connard'}, 'formatted_body': 'sale con'}})\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    logged = out.stdout + out.stderr
    assert "Error validating event" in logged  # the warning is there…
    assert "connard" not in logged and "sale con" not in logged  # …without the content
