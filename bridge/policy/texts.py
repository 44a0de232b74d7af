"""Every text a message shows, and its normal form for matching (pure, linear in the input's size).

What a reader sees comes from more than `body`: the HTML of `formatted_body` (its text, its
tooltips and its links), an edit's `m.new_content`, a file's name, a poll's question and answers,
an extensible event's text, a reaction's key. A reply's quoted fallback (only a reply has one) is
someone else's text and is left out. Content of the wrong shape is not guessed at: `Malformed` is
raised, and the engine treats it as a rule of its own (fail closed).

The normal form defeats the usual disguises: compatibility forms (NFKC: fullwidth, ligatures),
invisible format characters (zero-width, soft hyphen, bidi controls), look-alike letters
(Unicode's confusables, TR39: Cyrillic а for a), case, accents, leetspeak, repeated and
spaced-out letters.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata
from collections.abc import Mapping
from typing import Any

from confusable_homoglyphs import confusables
from lxml import etree
from lxml import html as lxml_html

POLL_KEYS = ("m.poll.start", "org.matrix.msc3381.poll.start")
EXTENSIBLE_KEYS = ("m.text", "org.matrix.msc1767.text", "org.matrix.msc1767.message")
_LEET = str.maketrans({"4": "a", "@": "a", "3": "e", "€": "e", "1": "i", "!": "i", "0": "o", "5": "s", "$": "s",
                       "7": "t"})
# Letters drawn with punctuation: "c()nnard", "sa|ope" (a pipe reads as an l, as in "sa|aud").
_DRAWN = (("()", "o"), ("[]", "o"), ("{}", "o"), ("|", "l"))
_ALNUM = b"abcdefghijklmnopqrstuvwxyz0123456789"
# Every byte but a lowercase letter or a digit reads as a word break (a space).
_BREAKS = bytes(c if c in _ALNUM else 0x20 for c in range(256))
_KEEP = bytes([0x00] + [0xFF] * 255)


class Malformed(ValueError):
    """A message whose content doesn't have the shape the spec gives it."""


# A Latin letter by its Unicode name, whatever its decoration: Ø, ł and đ (which no decomposition
# takes back to o, l and d), 🅰 and 🄰, ʀ (small capital), and the regional indicators 🇦…🇿 that
# some clients draw as boxed letters.
_LETTER_NAME = re.compile(r"(?:LATIN|REGIONAL INDICATOR SYMBOL)\b.*\bLETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .*)?$")


@functools.cache
def _confusable_map() -> dict[int, str]:
    """Each non-ASCII character that Unicode lists as confusable with one ASCII letter or digit,
    to that letter or digit (from the confusables data the `confusable-homoglyphs` package ships);
    then, for the rest, the Latin letter its name says it is. Built once, at the first message or
    at `warm`, not at import: reading the names of the letter planes takes some 40 ms."""
    out: dict[int, str] = {}
    for char, glyphs in confusables.confusables_data.items():
        if len(char) != 1 or ord(char) < 128:
            continue
        for glyph in glyphs:
            c = glyph.get("c", "")
            if len(c) == 1 and c.isascii() and c.isalnum():
                out[ord(char)] = c.lower()
                break
    for c in range(0x80, 0x20000):  # the planes where letters are
        if c not in out and (m := _LETTER_NAME.search(unicodedata.name(chr(c), ""))):
            out[c] = m.group(1).lower()
    return out




# Planes 4 to 13, 15 and 16 hold no format character and no combining mark (they are unassigned
# or private use): not scanning them makes the table four times quicker to build.
_ASSIGNED = (range(0x40000), range(0xE0000, 0xF0000))


def _invisible(char: str) -> bool:
    """Drawn as nothing, or as nothing but a blank: format characters (zero-width, soft hyphen,
    bidi controls: category Cf), marks (accents, but also the variation selectors and the
    grapheme joiner, which attach to no base: categories Mn and Me), and the Hangul fillers
    (letters by category, blanks on screen)."""
    category = unicodedata.category(char)
    return (category in ("Cf", "Mn", "Me") or bool(unicodedata.combining(char))
            or (category == "Lo" and "HANGUL" in (name := unicodedata.name(char, "")) and "FILLER" in name))


@functools.cache
def _strip_table() -> dict[int, None]:
    """Every invisible character (`_invisible`), removed in one `str.translate` (C speed, computed
    once)."""
    return {c: None for block in _ASSIGNED for c in block if _invisible(chr(c))}


def warm() -> None:
    """Build the strip and look-alike tables now rather than in the first message's time (a fifth
    of a second)."""
    _strip_table()
    _confusable_map()


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


def _unicode_fold(text: str) -> str:
    """Lower case, with look-alikes, compatibility forms, invisible characters and accents folded."""
    # Look-alikes are mapped before and after normalising, as TR39's skeleton does: NFKC itself
    # turns some of them into others (the lunate sigma ϲ into the final sigma ς). Every step is a
    # whole-string operation: linear, and fast on a message at the size limit.
    confusable = _confusable_map()
    text = unicodedata.normalize("NFKC", text.translate(confusable))
    return unicodedata.normalize("NFKD", text).translate(_strip_table()).translate(confusable).lower()


def _words(folded: str) -> str:
    # What is still not ASCII after folding is no letter of a banned word: a word break, as is
    # punctuation ("?" from the encoding, then a space from the table).
    return _squeeze(b" " + folded.encode("ascii", "replace").translate(_BREAKS) + b" ").decode("ascii")


def word_form(text: str) -> str:
    """' w1 w2 … ': a text's words in their normal form, one space apart and around; a banned
    word or phrase is looked for in this form (' conard ', ' fils de pute ')."""
    return _words(_leet(_unicode_fold(text)))


def _leet(folded: str) -> str:
    for drawn, letter in _DRAWN:
        if drawn in folded:  # rare: most texts pay one search per pair, not a copy
            folded = folded.replace(drawn, letter)
    return folded.translate(_LEET)


_SINGLES = re.compile(r"(?<= )(?:[a-z0-9] ){2,}")  # one-letter tokens in a row: linear, no nesting
FORMS_APART = " | "  # between two readings of a text: no phrase is found across it


def normalise(text: str) -> str:
    """' C0NN4RD ', ' соnnаrd ' (Cyrillic), ' con\u200bnard ', ' c o n n a r d ', ' connard ! ' ->
    contains ' conard '.

    A text with leetspeak's characters in it is read twice: with them as letters ("c0nn4rd") and as
    what they also are, punctuation ("connard !", "connard!", where "!" is no i)."""
    folded = _unicode_fold(text)
    leet = _leet(folded)
    readings = []
    for form in (leet, folded) if leet != folded else (leet,):
        spaced = _words(form)
        # Letters spaced out ("c o n n a r d") are also read joined.
        joined = [_squeeze(m.group(0).encode().translate(None, b" ")).decode()
                  for m in _SINGLES.finditer(spaced)]
        readings.append(spaced + (" ".join(joined) + " " if joined else ""))
    return FORMS_APART.join(readings)


# Elements a client draws apart from what surrounds them: their text is read between line breaks
# ("<p>quel connard</p><p>bonjour</p>" is two lines on screen, not "connardbonjour"). The text is
# written out by libxml2's XSLT processor: C from the tree to the string, whatever the markup.
_BLOCKS = "p|div|br|li|ul|ol|blockquote|pre|hr|h1|h2|h3|h4|h5|h6|table|caption|tr|td|th|details|summary|dl|dt|dd"
_TEXT_XSLT = f"""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
<xsl:output method="text" encoding="UTF-8"/>
<xsl:template match="{_BLOCKS}"><xsl:text>&#10;</xsl:text><xsl:apply-templates/><xsl:text>&#10;</xsl:text>
</xsl:template>
</xsl:stylesheet>"""
# The attributes that link (href, src) or show text (title: a tooltip; alt: a picture's text), in
# one walk of the tree.
_ATTRIBUTES = "//@*[name()='href' or name()='src' or name()='title' or name()='alt']"
_LINKING = frozenset({"href", "src"})
_compiled = threading.local()  # lxml's compiled XSLT and XPath are not for two threads at once


def _readers() -> tuple[Any, Any]:
    readers = getattr(_compiled, "readers", None)
    if readers is None:
        readers = _compiled.readers = (etree.XSLT(etree.XML(_TEXT_XSLT)), etree.XPath(_ATTRIBUTES))
    return readers


def _html(html: str, *, reply: bool) -> tuple[str, list[str]]:
    """Text and link targets of an HTML body, by libxml2's HTML parser (C: linear, and a
    twentieth of the time of the standard library's); a reply's quoted fallback (<mx-reply>)
    left out. What the parser can't read is read as plain text: never skipped."""
    try:
        root = lxml_html.fragment_fromstring(html, create_parent="div")
    except (etree.ParserError, ValueError):
        return html, []
    if reply:
        for quoted in list(root.iter("mx-reply")):
            quoted.drop_tree()  # its tail (what follows the quote) stays
    text_of, attributes = _readers()
    # XPath hands back the attributes' values alone: no Python object for each element.
    hrefs: list[str] = []
    shown = [str(text_of(root))]
    for value in attributes(root):
        if value:
            (hrefs if value.attrname in _LINKING else shown).append(str(value))
    return "\n".join(shown), hrefs


def string_at(content: Mapping[str, Any], key: str) -> str:
    """content[key], a string or nothing ("" for absent or null); raises Malformed otherwise."""
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


def _one(content: Mapping[str, Any], texts: list[str], hrefs: list[str], *, reply: bool) -> None:
    body = string_at(content, "body")
    # Only a reply has a fallback to leave out: a message that merely starts with "> " shows it all.
    texts.append(strip_reply_fallback(body) if reply else body)
    html = string_at(content, "formatted_body")
    if html:
        text, targets = _html(html, reply=reply)
        texts.append(text)
        hrefs.extend(targets)
    texts.append(string_at(content, "filename"))
    for key in EXTENSIBLE_KEYS:  # extensible events (MSC1767): the text some clients show instead
        if key in content:
            texts.extend(text_blocks(content[key], key))
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


def _is_reply(content: Mapping[str, Any]) -> bool:
    relation = content.get("m.relates_to")
    return isinstance(relation, Mapping) and isinstance(relation.get("m.in_reply_to"), Mapping)


def text_blocks(value: Any, key: str) -> list[str]:
    """MSC1767's text: a string, or a list of {body, mimetype} renderings of the same text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(t, Mapping) for t in value):
        return [string_at(t, "body") for t in value]
    raise Malformed(f"{key} has the wrong shape")


def _poll_texts(part: Any, key: str) -> list[str]:
    """A poll's question or answer: `body`, or `m.text` as a string or a list of {body} (MSC1767)."""
    if part is None:
        return []
    if not isinstance(part, Mapping):
        raise Malformed(f"{key} has a question or answer that is not an object")
    out = [string_at(part, "body")]
    if part.get("m.text") is not None:
        out += text_blocks(part["m.text"], f"{key} m.text")
    return out


def message_texts(content: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """(every text the message shows, every link target of its HTML); an edit's new content
    counts as a new message. Raises Malformed."""
    if not isinstance(content, Mapping):
        raise Malformed("content is not an object")
    texts: list[str] = []
    hrefs: list[str] = []
    reply = _is_reply(content)
    _one(content, texts, hrefs, reply=reply)
    relation = content.get("m.relates_to")
    if isinstance(relation, Mapping) and "key" in relation:  # a reaction's key: shown under the message
        texts.append(string_at(relation, "key"))
    new = content.get("m.new_content")
    if new is not None:
        if not isinstance(new, Mapping):
            raise Malformed("m.new_content is not an object")
        _one(new, texts, hrefs, reply=reply)
    mentions = content.get("m.mentions")
    if mentions is not None and (not isinstance(mentions, Mapping)
                                 or not isinstance(mentions.get("user_ids", []), list)
                                 or not isinstance(mentions.get("room", False), bool)):
        raise Malformed("m.mentions has the wrong shape")
    return [t for t in texts if t], hrefs
