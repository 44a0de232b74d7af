"""The access snapshot: an SQLite file the bridge writes after planning, the module reads.

Written whole to a temporary file and renamed over the old one: a reader sees the previous
snapshot or the new one, never half of one. The module re-opens it when its inode changes, so a
sync's relations apply within the module's refresh interval, without a Synapse restart, and no
request ever leaves the machine: every check is an indexed lookup in this file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.access.links import ManagedRoom, Relations

FORMAT = 5
# 3: before shown state was published, 4: before own names were (a bridge not yet upgraded).
READABLE = frozenset({"3", "4", str(FORMAT)})
# People, rooms and groups are numbered: a département's snapshot is a few million small rows,
# and each row keeps two integers instead of two Matrix ids.
SCHEMA = """
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE person (id INTEGER PRIMARY KEY, mxid TEXT NOT NULL UNIQUE);
CREATE TABLE side (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE link (pid INTEGER NOT NULL, grp INTEGER NOT NULL, side INTEGER NOT NULL,
                   PRIMARY KEY (pid, grp, side)) WITHOUT ROWID;
CREATE TABLE rule (a INTEGER NOT NULL, b INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE TABLE room (id INTEGER PRIMARY KEY, ref TEXT NOT NULL UNIQUE, template TEXT NOT NULL, history TEXT NOT NULL);
CREATE TABLE member (room INTEGER NOT NULL, pid INTEGER NOT NULL, power INTEGER NOT NULL,
                     PRIMARY KEY (room, pid)) WITHOUT ROWID;
CREATE TABLE room_id (room_id TEXT PRIMARY KEY, room INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE family (room INTEGER NOT NULL, fam INTEGER NOT NULL, pid INTEGER NOT NULL,
                     PRIMARY KEY (room, fam, pid)) WITHOUT ROWID;
CREATE TABLE shown (template TEXT PRIMARY KEY, rules TEXT NOT NULL);
CREATE TABLE given (pid INTEGER NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (pid, digest)) WITHOUT ROWID;
"""


class _Numbers(dict[str, int]):
    def __missing__(self, key: str) -> int:
        self[key] = len(self) + 1
        return self[key]


def write_snapshot(path: Path, relations: Relations, rooms: Iterable[ManagedRoom], room_ids: dict[str, str], *,
                   generated_ms: int, shown: Mapping[str, Mapping[str, object]] | None = None,
                   given: Mapping[str, Iterable[str]] | None = None) -> None:
    """room_ids: room id -> ref of the rooms that exist (new rooms name their ref in their
    `fr.ent-bridge.room` state); shown: template -> the moderation rules its rooms' names and
    topics are held to (`access.shown.publish`); given: Matrix id -> digests of the names the
    directory gives that person (`access.given`)."""
    with _replacing(path) as tmp:
        _write(tmp, relations, rooms, room_ids, generated_ms=generated_ms, shown=shown, given=given or {})


def republish_shown(path: Path, shown: Mapping[str, Mapping[str, object]]) -> bool:
    """Replace only the published moderation rules (a policy reload: names and topics follow the
    new rules at once, not at the next sync); False when there is no snapshot yet (the first sync
    writes one with them)."""
    if not path.exists():
        return False
    with _replacing(path) as tmp:
        shutil.copyfile(path, tmp)  # under the lock: no sync renames a newer snapshot meanwhile
        db = sqlite3.connect(tmp)
        try:
            db.execute("DELETE FROM shown")
            _insert_shown(db, shown)
            db.commit()
        finally:
            db.close()
    return True


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file to fill, then renamed over `path`; one writer at a time, across processes
    (a sync in a child process and a reload in the bridge would otherwise undo each other)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            yield tmp
            os.chmod(tmp, 0o640)  # the bridge's and Synapse's group, nobody else (Matrix ids of families)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _insert_shown(db: sqlite3.Connection, shown: Mapping[str, Mapping[str, object]]) -> None:
    db.executemany("INSERT INTO shown VALUES (?, ?)",
                   [(t, json.dumps(r, sort_keys=True)) for t, r in sorted(shown.items())])


def _write(tmp: Path, relations: Relations, rooms: Iterable[ManagedRoom], room_ids: dict[str, str], *,
           generated_ms: int, shown: Mapping[str, Mapping[str, object]] | None,
           given: Mapping[str, Iterable[str]]) -> None:
    people, groups, sides, refs = _Numbers(), _Numbers(), _Numbers(), _Numbers()
    db = sqlite3.connect(tmp)
    try:
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;" + SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [
            ("format", str(FORMAT)), ("generated_ms", str(generated_ms)),
            ("unrestricted", json.dumps(sorted(relations.unrestricted)))])
        db.executemany("INSERT INTO link VALUES (?, ?, ?)",
                       sorted({(people[m], groups[g], sides[s]) for g, m, s in relations.links}))
        db.executemany("INSERT INTO rule VALUES (?, ?)", [(sides[a], sides[b]) for a, b in sorted(relations.rules)])
        for room in rooms:
            if room.ref in refs:
                continue
            rid = refs[room.ref]
            db.execute("INSERT INTO room VALUES (?, ?, ?, ?)", (rid, room.ref, room.template, room.history_visibility))
            db.executemany("INSERT INTO member VALUES (?, ?, ?)",
                           sorted((rid, people[m], p) for m, p in room.members.items()))
            db.executemany("INSERT OR IGNORE INTO family VALUES (?, ?, ?)",
                           [(rid, i, people[m]) for i, family in enumerate(room.families) for m in sorted(family)])
        db.executemany("INSERT INTO room_id VALUES (?, ?)",
                       sorted((i, refs[ref]) for i, ref in room_ids.items() if ref in refs))
        db.executemany("INSERT OR IGNORE INTO given VALUES (?, ?)",
                       sorted((people[m], d) for m, digests in given.items() if m in people for d in digests))
        db.executemany("INSERT INTO person VALUES (?, ?)", [(n, m) for m, n in people.items()])
        db.executemany("INSERT INTO side VALUES (?, ?)", [(n, s) for s, n in sides.items()])
        _insert_shown(db, shown or {})
        db.execute("CREATE INDEX link_grp ON link (grp, pid, side)")
        db.commit()
    finally:
        db.close()


class AccessSnapshot:
    """Read side, for the Synapse module: the latest snapshot at `path`, or none (fail closed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self.unrestricted: frozenset[str] = frozenset()
        self.generated_ms = 0
        self.shown: dict[str, Any] = {}  # template -> its published moderation rules (JSON)
        self._format = ""

    @property
    def loaded(self) -> bool:
        return self._db is not None

    def refresh(self) -> bool:
        """Re-open the file if another one was renamed over it; True when that happened."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # keep what was loaded: a missing file is an operator's slip, not "no rules"
        identity = (st.st_ino, st.st_mtime_ns)
        if identity == self._identity:
            return False
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
        try:
            meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
            if meta.get("format") not in READABLE:
                raise sqlite3.DatabaseError(f"snapshot format {meta.get('format')!r}, expected {FORMAT}")
            shown = ({str(t): json.loads(r) for t, r in db.execute("SELECT template, rules FROM shown")}
                     if meta["format"] != "3" else {})
        except (sqlite3.DatabaseError, ValueError):
            db.close()
            raise
        old, self._db, self._identity = self._db, db, identity
        self.unrestricted = frozenset(json.loads(meta.get("unrestricted", "[]")))
        self.generated_ms = int(meta.get("generated_ms", "0"))
        self.shown = shown
        self._format = str(meta["format"])
        if old is not None:
            old.close()
        return True

    def _one(self, sql: str, *args: str) -> tuple[object, ...] | None:
        if self._db is None:
            return None
        row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
        return row

    def known(self, user: str) -> bool:
        """Is this person in the directory (with an account)?"""
        return self._one("SELECT 1 FROM link WHERE pid = (SELECT id FROM person WHERE mxid = ?) LIMIT 1",
                         user) is not None

    def linked(self, a: str, b: str) -> bool:
        """Do a and b share a group where a's side may reach b's?"""
        return self._one("SELECT 1 FROM link x JOIN link y ON y.grp = x.grp "
                         "AND y.pid = (SELECT id FROM person WHERE mxid = ?) "
                         "JOIN rule r ON r.a = x.side AND r.b = y.side "
                         "WHERE x.pid = (SELECT id FROM person WHERE mxid = ?) LIMIT 1", b, a) is not None

    def ref_of(self, room_id: str) -> str | None:
        row = self._one("SELECT r.ref FROM room_id i JOIN room r ON r.id = i.room WHERE i.room_id = ?", room_id)
        return str(row[0]) if row else None

    def template(self, ref: str) -> str | None:
        row = self._one("SELECT template FROM room WHERE ref = ?", ref)
        return str(row[0]) if row else None

    def history(self, ref: str) -> str | None:
        row = self._one("SELECT history FROM room WHERE ref = ?", ref)
        return str(row[0]) if row else None

    def power(self, ref: str, user: str) -> int | None:
        """The power the template gives `user` in the room (0: a member); None: not entitled."""
        row = self._one("SELECT power FROM member WHERE room = (SELECT id FROM room WHERE ref = ?) "
                        "AND pid = (SELECT id FROM person WHERE mxid = ?)", ref, user)
        return int(str(row[0])) if row else None

    def sides(self, user: str) -> frozenset[str]:
        """What the directory makes this person (teacher, guardian, director…), from their links."""
        if self._db is None:
            return frozenset()
        rows = self._db.execute("SELECT DISTINCT s.name FROM link l JOIN side s ON s.id = l.side "
                                "WHERE l.pid = (SELECT id FROM person WHERE mxid = ?)", (user,)).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def given(self, user: str) -> frozenset[str]:
        """The digests of the names the directory gives this person (`access.given`)."""
        if self._db is None or self._format in ("3", "4"):
            return frozenset()
        rows = self._db.execute("SELECT digest FROM given WHERE pid = (SELECT id FROM person WHERE mxid = ?)",
                                (user,)).fetchall()
        return frozenset(str(r[0]) for r in rows)

    def own_names(self, user: str) -> frozenset[str]:
        """`given`, from the latest snapshot readable (the bridge's reading: the module refreshes
        on its own clock). An unreadable new file leaves the previous one in use."""
        try:
            self.refresh()
        except (sqlite3.DatabaseError, OSError, ValueError):
            pass  # the module logs it; names are then read as if nobody had one of their own
        return self.given(user)

    def families(self, ref: str) -> list[frozenset[str]]:
        """The families of a class or school room: each pupil's legal guardians."""
        if self._db is None:
            return []
        rows = self._db.execute("SELECT f.fam, p.mxid FROM family f JOIN person p ON p.id = f.pid "
                                "WHERE f.room = (SELECT id FROM room WHERE ref = ?)", (ref,)).fetchall()
        grouped: dict[int, set[str]] = {}
        for fam, mxid in rows:
            grouped.setdefault(int(fam), set()).add(str(mxid))
        return [frozenset(v) for _, v in sorted(grouped.items())]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            self._identity = None
