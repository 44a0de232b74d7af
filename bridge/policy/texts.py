"""Every text a message shows, and its normal form for matching (pure, linear in the input's size).

What a reader sees comes from more than `body`: the HTML of `formatted_body` (its text and its
links), an edit's `m.new_content`, a file's name, a poll's question and answers. A reply's quoted
fallback is someone else's text and is left out. Content of the wrong shape is not guessed at:
`Malformed` is raised, and the engine treats it as a rule of its own (fail closed).

The normal form defeats the usual disguises: compatibility forms (NFKC: fullwidth, ligatures),
invisible format characters (zero-width, soft hyphen, bidi controls), look-alike letters
(Unicode's confusables, TR39: Cyrillic а for a), case, accents, leetspeak, repeated and
spaced-out letters.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from confusable_homoglyphs import confusables
from lxml import etree
from lxml import html as lxml_html

POLL_KEYS = ("m.poll.start", "org.matrix.msc3381.poll.start")
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s", "7": "t"})
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
# Every byte but a lowercase letter or a digit reads as a word break (a space).
_BREAKS = bytes(c if c in _ALNUM else 0x20 for c in range(256))
_KEEP = bytes([0x00] + [0xFF] * 255)


class Malformed(ValueError):
    """A message whose content doesn't have the shape the spec gives it."""


def _confusable_map() -> dict[int, str]:
    """Each non-ASCII character that Unicode lists as confusable with one ASCII letter or digit,
    to that letter or digit (from the confusables data the `confusable-homoglyphs` package ships)."""
    out: dict[int, str] = {}
    for char, glyphs in confusables.confusables_data.items():
        if len(char) != 1 or ord(char) < 128:
            continue
        for glyph in glyphs:
            c = glyph.get("c", "")
            if len(c) == 1 and c.isascii() and c.isalnum():
                out[ord(char)] = c.lower()
                break
    return out


_CONFUSABLE = _confusable_map()


# Planes 4 to 13, 15 and 16 hold no format character and no combining mark (they are unassigned
# or private use): not scanning them makes the table four times quicker to build.
_ASSIGNED = (range(0x40000), range(0xE0000, 0xF0000))


@functools.cache
def _strip_table() -> dict[int, None]:
    """Invisible format characters (zero-width, soft hyphen, bidi controls: category Cf) and
    combining marks (accents), removed in one `str.translate` (C speed, computed once)."""
    return {c: None for block in _ASSIGNED for c in block
            if unicodedata.category(chr(c)) == "Cf" or unicodedata.combining(chr(c))}


def warm() -> None:
    """Build the strip table now rather than in the first message's time (a fifth of a second)."""
    _strip_table()


def _squeeze(spaced: bytes) -> bytes:
    """Every run of one repeated byte down to one ("connnard" -> "conard"), for bytes without NUL.

    A regular expression with a back-reference pays a match attempt at every position (half a
    millisecond at the size limit). Here each step is one C pass over the bytes, read as big
    integers: XOR with the bytes shifted by one is zero where a byte repeats the one before it;
    those bytes become NUL, and NULs are removed."""
    n = len(spaced)
    this = int.from_bytes(spaced, "big")
    before = int.from_bytes(b"\x00" + spaced[:-1], "big")  # the first byte has no predecessor: kept
    repeats = (this ^ before).to_bytes(n, "big").translate(_KEEP)  # 0x00 repeat, 0xFF keep
    return (this & int.from_bytes(repeats, "big")).to_bytes(n, "big").translate(None, b"\x00")


def word_form(text: str) -> str:
    """' w1 w2 … ': a text's words in their normal form, one space apart and around; a banned
    word or phrase is looked for in this form (' conard ', ' fils de pute ')."""
    # Look-alikes are mapped before and after normalising, as TR39's skeleton does: NFKC itself
    # turns some of them into others (the lunate sigma ϲ into the final sigma ς). Every step is a
    # whole-string operation: linear, and fast on a message at the size limit.
    text = unicodedata.normalize("NFKC", text.translate(_CONFUSABLE))
    text = unicodedata.normalize("NFKD", text).translate(_strip_table()).translate(_CONFUSABLE)
    folded = text.lower().translate(_LEET)
    # What is still not ASCII after folding is no letter of a banned word: a word break, as is
    # punctuation ("?" from the encoding, then a space from the table).
    spaced = _squeeze(b" " + folded.encode("ascii", "replace").translate(_BREAKS) + b" ")
    return spaced.decode("ascii")


_SINGLES = re.compile(r"(?<= )(?:[a-z0-9] ){2,}")  # one-letter tokens in a row: linear, no nesting


def normalise(text: str) -> str:
    """' C0NN4RD ', ' соnnаrd ' (Cyrillic), ' con\u200bnard ', ' c o n n a r d ' -> contains ' conard '."""
    spaced = word_form(text)
    # Letters spaced out ("c o n n a r d") are also read joined.
    joined = [_squeeze(m.group(0).encode().translate(None, b" ")).decode() for m in _SINGLES.finditer(spaced)]
    return spaced + (" ".join(joined) + " " if joined else "")


def _html(html: str) -> tuple[str, list[str]]:
    """Text and link targets of an HTML body, by libxml2's HTML parser (C: linear, and a
    twentieth of the time of the standard library's); a reply's quoted fallback (<mx-reply>)
    left out. What the parser can't read is read as plain text: never skipped."""
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return html, []
    for quoted in list(root.iter("mx-reply")):
        quoted.drop_tree()  # its tail (what follows the quote) stays
    # XPath hands back the attributes' values alone: no Python object for each element.
    hrefs = [str(v) for v in root.xpath("//@href | //@src") if v]
    return str(root.text_content()), hrefs


def _str(content: Mapping[str, Any], key: str) -> str:
    value = content.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def strip_reply_fallback(body: str) -> str:
    """A reply's body starts with the quoted message ("> …" lines, then an empty line)."""
    if not body.startswith("> "):
        return body
    lines = body.split("\n")
    i = 0
    while i < len(lines) and lines[i].startswith(">"):
        i += 1
    return "\n".join(lines[i:])


def _one(content: Mapping[str, Any], texts: list[str], hrefs: list[str]) -> None:
    texts.append(strip_reply_fallback(_str(content, "body")))
    html = _str(content, "formatted_body")
    if html:
        text, targets = _html(html)
        texts.append(text)
        hrefs.extend(targets)
    texts.append(_str(content, "filename"))
    for key in POLL_KEYS:
        poll = content.get(key)
        if poll is None:
            continue
        if not isinstance(poll, Mapping):
            raise Malformed(f"{key} is not an object")
        answers = poll.get("answers") or []
        if not isinstance(answers, list):
            raise Malformed(f"{key}.answers is not a list")
        for part in [poll.get("question"), *answers]:
            texts.extend(_poll_texts(part, key))


def _poll_texts(part: Any, key: str) -> list[str]:
    """A poll's question or answer: `body`, or `m.text` as a string or a list of {body} (MSC1767)."""
    if part is None:
        return []
    if not isinstance(part, Mapping):
        raise Malformed(f"{key} has a question or answer that is not an object")
    out = [_str(part, "body")]
    text = part.get("m.text")
    if isinstance(text, str):
        out.append(text)
    elif isinstance(text, list):
        out += [str(t.get("body", "")) for t in text if isinstance(t, Mapping)]
    elif text is not None:
        raise Malformed(f"{key} has an m.text of the wrong shape")
    return out


def message_texts(content: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(every text the message shows, every link target of its HTML); an edit's new content
    counts as a new message. Raises Malformed."""
    if not isinstance(content, Mapping):
        raise Malformed("content is not an object")
    texts: list[str] = []
    hrefs: list[str] = []
    _one(content, texts, hrefs)
    new = content.get("m.new_content")
    if new is not None:
        if not isinstance(new, Mapping):
            raise Malformed("m.new_content is not an object")
        _one(new, texts, hrefs)
    mentions = content.get("m.mentions")
    if mentions is not None and (not isinstance(mentions, Mapping)
                                 or not isinstance(mentions.get("user_ids", []), list)
                                 or not isinstance(mentions.get("room", False), bool)):
        raise Malformed("m.mentions has the wrong shape")
    return [t for t in texts if t], hrefs
