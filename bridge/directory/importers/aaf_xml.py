"""Streaming, hardened reader of AAF `ficAlimMENESR` files into flat request records.

Why pyexpat directly: we need line numbers for every record (ElementTree drops them), a
bounded-memory stream over files of hundreds of megabytes, and the same hardening as
defusedxml (no entity declarations, no external entities or DTDs) in a few lines.
"""

from __future__ import annotations

import html.entities
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from xml.parsers import expat

from bridge.directory.model import Warning
from bridge.errors import InputError

CHUNK = 1 << 20
_XML_ENTITIES = {b"amp", b"lt", b"gt", b"quot", b"apos"}
_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
# The published AAF deltas close `<modification …>` with `</attr>`: unambiguous to repair.
_BAD_CLOSE = re.compile(rb"(<modification\b[^<>\n]*>(?:<value>[^<\n]*</value>|<value ?/>)*)</attr>")


@dataclass
class Record:
    """One add/modify/delete request: category, op, identifier and the kept attributes."""

    op: str  # add | modify | delete
    category: str
    id: str
    attrs: dict[str, list[str]] = field(default_factory=dict)
    file: str = ""
    line: int = 0


class _Forbidden(Exception):
    pass


@dataclass
class _Cursor:
    """Where the streaming parser is: the request being read, and inside which element."""

    rec: Record | None = None
    attr: str | None = None
    in_value: bool = False
    in_id: bool = False
    in_ops: bool = False


def _repair(chunk: bytes, *, first_line: int, file: str, warnings: list[Warning]) -> bytes:
    """Replace HTML named entities by character references and fix the known bad closing tag.
    Neither adds a newline, so expat's line numbers stay those of the file."""

    def entity(m: re.Match[bytes]) -> bytes:
        name = m.group(1)
        if name in _XML_ENTITIES:
            return m.group(0)
        code = html.entities.name2codepoint.get(name.decode("ascii"))
        if code is None:
            return m.group(0)  # left for expat to report as an undefined entity
        return b"&#%d;" % code

    if b"&" in chunk:
        chunk = _ENTITY.sub(entity, chunk)
    if b"</attr>" in chunk and b"<modification" in chunk:
        def fix(m: re.Match[bytes]) -> bytes:
            line = first_line + chunk.count(b"\n", 0, m.start())
            warnings.append(Warning("aaf_repaired_tag", "<modification> closed by </attr>: repaired",
                                    file=file, line=line))
            return m.group(1) + b"</modification>"

        chunk = _BAD_CLOSE.sub(fix, chunk)
    return chunk


def read_records(path: Path, *, keep: frozenset[str], warnings: list[Warning]) -> Iterator[Record]:
    """Yield the file's requests in order, keeping only the attributes named in `keep`."""
    with path.open("rb") as fh:
        yield from _read(fh, file=str(path), keep=keep, warnings=warnings)


def _read(fh: BinaryIO, *, file: str, keep: frozenset[str], warnings: list[Warning]) -> Iterator[Record]:
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.buffer_size = 1 << 16
    # Hardening (what defusedxml does): never read the external DTD, refuse any entity
    # declaration (billion laughs, XXE) at the first one, refuse external references.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def forbid_entity(name: str, *_: object) -> None:
        raise _Forbidden(f"entity declaration {name!r} refused (possible XXE or entity-expansion attack)")

    def forbid_external(*_: object) -> int:
        raise _Forbidden("external entity reference refused")

    def skipped(name: str, _is_param: int) -> None:
        raise _Forbidden(f"undefined entity &{name};")

    parser.EntityDeclHandler = forbid_entity
    parser.UnparsedEntityDeclHandler = forbid_entity
    parser.ExternalEntityRefHandler = forbid_external
    parser.SkippedEntityHandler = skipped

    out: list[Record] = []
    state = _Cursor()
    text: list[str] = []

    def start(name: str, attrs: dict[str, str]) -> None:
        if name in ("addRequest", "modifyRequest", "deleteRequest"):
            state.rec = Record(op=name[:-7], category="", id="", file=file, line=parser.CurrentLineNumber)
        elif name == "operationalAttributes":
            state.in_ops = True
        elif name in ("attr", "modification"):
            attr = attrs.get("name", "")
            if state.in_ops:
                state.attr = "__category__"
            elif state.rec is not None and attr in keep:
                state.attr = attr
                state.rec.attrs[attr] = []
            else:
                state.attr = None
        elif name == "value":
            if state.attr is not None:
                state.in_value = True
                text.clear()
        elif name == "id":
            state.in_id = True
            text.clear()

    def end(name: str) -> None:
        rec = state.rec
        if name == "value" and state.in_value:
            state.in_value = False
            value = "".join(text).strip()
            if rec is None or state.attr is None:
                return
            if state.attr == "__category__":
                rec.category = value
            elif value:
                rec.attrs[state.attr].append(value)
        elif name == "id" and state.in_id:
            state.in_id = False
            if rec is not None:
                rec.id = "".join(text).strip()
        elif name in ("attr", "modification"):
            state.attr = None
        elif name == "operationalAttributes":
            state.in_ops = False
        elif name in ("addRequest", "modifyRequest", "deleteRequest") and rec is not None:
            out.append(rec)
            state.rec = None

    def chars(data: str) -> None:
        if state.in_value or state.in_id:
            text.append(data)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars

    line = 1
    tail = b""
    feed: Callable[[bytes, bool], object] = parser.Parse
    try:
        while True:
            chunk = fh.read(CHUNK)
            final = not chunk
            data = tail + chunk
            if not final:
                # Repair whole lines only, so a tag is never cut in two by a chunk boundary.
                cut = data.rfind(b"\n") + 1
                data, tail = (data[:cut], data[cut:]) if cut else (b"", data)
            else:
                tail = b""
            if data:
                fixed = _repair(data, first_line=line, file=file, warnings=warnings)
                line += data.count(b"\n")
                feed(fixed, False)
                yield from out
                out.clear()
            if final:
                feed(b"", True)
                yield from out
                out.clear()
                return
    except expat.ExpatError as exc:
        raise InputError(f"malformed XML: {expat.errors.messages[exc.code]} (column {exc.offset + 1})",
                         file=file, line=exc.lineno) from None
    except _Forbidden as exc:
        raise InputError(str(exc), file=file, line=parser.CurrentLineNumber) from None
