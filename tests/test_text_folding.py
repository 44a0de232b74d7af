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


def _reference(text: str) -> str:
    """The normal form as first written: tokens found with an expression, repeats squeezed with
    a back-reference, joined with spaces."""
    strip = texts._strip_table()
    text = unicodedata.normalize("NFKC", text.translate(texts._CONFUSABLE))
    text = unicodedata.normalize("NFKD", text).translate(strip).translate(texts._CONFUSABLE)
    tokens = _TOKEN.findall(_REPEAT.sub(r"\1", text.lower().translate(texts._LEET)))
    spaced = " " + " ".join(tokens) + " "
    joined = [_REPEAT.sub(r"\1", m.group(0).replace(" ", "")) for m in texts._SINGLES.finditer(spaced)]
    return spaced + (" ".join(joined) + " " if joined else "")


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
    if expected.strip():
        assert got == expected
    else:  # no word at all: one space, where the token pipeline gave two
        assert got.strip() == ""


def test_the_strip_table_is_every_format_character_and_combining_mark() -> None:
    everything = {c for c in range(sys.maxunicode + 1)
                  if unicodedata.category(chr(c)) == "Cf" or unicodedata.combining(chr(c))}
    assert set(texts._strip_table()) == everything
