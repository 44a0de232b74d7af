"""The text folding's fast steps give what their plain definitions give: the run squeeze (big
integers) against a back-reference expression, the normal form against the token pipeline it
replaced, and the strip table against a scan of all of Unicode."""

from __future__ import annotations

import re
import sys
import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.policy import texts

_RUNS = re.compile(rb"(.)\1+", re.DOTALL)
_TOKEN = re.compile(r"[a-z0-9]+")
_REPEAT = re.compile(r"(.)\1+")
# Letters, digits, separators, look-alikes, format characters, accents, ligatures, leetspeak.
_ALPHABET = "aAbcCdnNoOrRst  ..,\n-\u200b\u00ad\u202e\u0430\u043e\u0441éÉèß@$!01345İK\u212a\u0301\ufb01ａ😀"


def _reading(text: str) -> str:
    """One reading as first written: tokens found with an expression, repeats squeezed with a
    back-reference, joined with spaces."""
    tokens = _TOKEN.findall(_REPEAT.sub(r"\1", text))
    spaced = " " + " ".join(tokens) + " "
    joined = [_REPEAT.sub(r"\1", m.group(0).replace(" ", "")) for m in texts._SINGLES.finditer(spaced)]
    return spaced + (" ".join(joined) + " " if joined else "")


def _reference(text: str) -> str:
    """The normal form: the reading with leetspeak's characters as letters, and, when there are
    any, the reading without."""
    strip = texts._strip_table()
    text = unicodedata.normalize("NFKC", text.translate(texts._confusable_map()))
    text = unicodedata.normalize("NFKD", text).translate(strip).translate(texts._confusable_map()).lower()
    leet = text.translate(texts._LEET)
    return texts.FORMS_APART.join(_reading(t) for t in ((leet, text) if leet != text else (leet,)))


@given(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"")))
@settings(max_examples=500, deadline=None)
def test_the_squeeze_is_the_back_reference_substitution(data: bytes) -> None:
    assert texts._squeeze(data) == _RUNS.sub(rb"\1", data)


def test_the_squeeze_of_long_runs_and_edges() -> None:
    assert texts._squeeze(b"") == b""
    assert texts._squeeze(b"a") == b"a"
    assert texts._squeeze(b" " + b"b" * 20_000 + b" ") == b" b "
    assert texts._squeeze(b"co" + b"n" * 7 + b"ard  ") == b"conard "


@given(st.text(alphabet=_ALPHABET, max_size=40))
@settings(max_examples=2000, deadline=None)
def test_the_normal_form_is_the_token_pipelines(text: str) -> None:
    expected, got = _reference(text), texts.normalise(text)
    # Where a reading has no word at all: one space, where the token pipeline gave two.
    assert [r.strip() for r in got.split(texts.FORMS_APART)] == [r.strip() for r in expected.split(texts.FORMS_APART)]


def test_the_strip_table_is_every_invisible_character() -> None:
    everything = {c for c in range(sys.maxunicode + 1) if texts._invisible(chr(c))}
    assert {0x200B, 0x00AD, 0x202E, 0x034F, 0xFE0F, 0x3164, 0xFFA0, 0x0301} <= everything
    assert set(texts._strip_table()) == everything
