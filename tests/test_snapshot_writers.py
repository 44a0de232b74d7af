"""Two processes writing the access snapshot at once (a sync in its child process, a policy reload in
the bridge): one at a time, so neither puts back an older snapshot over the other's."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

from bridge.access.links import Relations
from bridge.access.snapshot import republish_shown, write_snapshot

ROUNDS = 150


def _generated(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT v FROM meta WHERE k = 'generated_ms'").fetchone()[0])
    finally:
        db.close()


def _syncs(path: str) -> int:
    """Writes snapshots 1..ROUNDS; returns how often it found an older one than its last."""
    rolled_back = 0
    for n in range(1, ROUNDS + 1):
        if n > 1 and _generated(Path(path)) != n - 1:
            rolled_back += 1
        write_snapshot(Path(path), Relations(frozenset({("g", f"@p{n}:s", "guardian")}), frozenset()), [], {},
                       generated_ms=n, shown={"class": {"round": n}})
    return rolled_back


def _reloads(path: str, started: multiprocessing.synchronize.Event, stop: multiprocessing.synchronize.Event) -> None:
    n = 0
    while not stop.is_set():
        n += 1
        republish_shown(Path(path), {"class": {"reload": n}})
        started.set()


def _race(path: Path) -> int:
    write_snapshot(path, Relations(frozenset(), frozenset()), [], {}, generated_ms=0)
    ctx = multiprocessing.get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    reloader = ctx.Process(target=_reloads, args=(str(path), started, stop))
    reloader.start()
    try:
        assert started.wait(120)  # the reloads run before the syncs begin (a hang guard, not a deadline)
        with ctx.Pool(1) as pool:
            rolled_back = pool.apply(_syncs, (str(path),))
    finally:
        stop.set()
        reloader.join()
    assert reloader.exitcode == 0
    return rolled_back


def test_a_reload_never_puts_back_an_older_snapshot_than_a_sync_wrote(tmp_path: Path) -> None:
    path = tmp_path / "access.sqlite"
    assert _race(path) == 0  # with `fcntl.flock` made a no-op in both processes: rolled back in 3 runs of 3
    assert _generated(path) == ROUNDS  # the sync's last, whatever the reloads did meanwhile
    assert sorted(p.name for p in tmp_path.iterdir()) == [".access.sqlite.lock", "access.sqlite"]  # no tmp left
