"""Audit log: the HMAC chain catches edited, removed and reordered entries; pruning keeps it valid."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bridge.audit import AuditLog
from bridge.store.sqlite import SqliteStore
from tests.test_store_contract import store  # noqa: F401 - the SQLite + PostgreSQL store fixture


@pytest.fixture
async def log(tmp_path: Path) -> Any:
    store = SqliteStore(str(tmp_path / "a.db"))
    await store.open()
    audit = AuditLog(store, key="k" * 32)
    for i in range(5):
        audit.record(actor="ent-bridge", action="invite", room=f"class:X:{i}", subject=f"@u{i}:s",
                     reason="inscrit", now_ms=1000 * (i + 1))
    await audit.flush()
    yield audit, tmp_path / "a.db"
    await store.close()


async def test_intact_chain_verifies(log: Any) -> None:
    audit, _ = log
    result = await audit.verify()
    assert result.ok and result.checked == 5


async def test_subjects_are_keyed_pseudonyms(log: Any) -> None:
    """The log never names a person by their id (an erasure must leave no identifier in it), but
    the same person always gets the same name, and another audit key gives another."""
    audit, _ = log
    bodies = [r.body for r in await audit.store.audit_rows()]
    assert not any("@u" in b for b in bodies)
    assert audit.pseudonym("@u2:s") in bodies[2] and audit.pseudonym("@u2:s") == audit.pseudonym("@u2:s")
    assert AuditLog(audit.store, key="j" * 32).pseudonym("@u2:s") != audit.pseudonym("@u2:s")


@pytest.mark.parametrize("tamper, problem", [
    ("UPDATE audit SET body = replace(body, 'class:X:2', 'class:X:9') WHERE seq = 3",
     "entry 3 was modified, or entries were reordered"),
    ("DELETE FROM audit WHERE seq = 2", "entry 2 is missing"),
    ("UPDATE audit SET seq = -seq WHERE seq IN (2, 3); UPDATE audit SET seq = 3 WHERE seq = -2;"
     " UPDATE audit SET seq = 2 WHERE seq = -3", "entry 2 was modified, or entries were reordered"),
    ("UPDATE audit SET ts = 1 WHERE seq = 4", "entry 4: its time was changed"),
])
async def test_tampering_is_detected(log: Any, tamper: str, problem: str) -> None:
    audit, db = log
    conn = sqlite3.connect(db)
    conn.executescript(tamper)
    conn.commit()
    conn.close()
    result = await audit.verify()
    assert not result.ok and result.problem.startswith(problem)


async def test_wrong_key_fails_and_prune_keeps_chain(log: Any) -> None:
    audit, _ = log
    assert not (await AuditLog(audit.store, key="other" * 8).verify()).ok
    assert await audit.prune(older_than_ms=3500) == 3
    result = await audit.verify()
    assert result.ok and result.checked == 3  # entries 4, 5 and the prune record
    assert "audit_pruned" in (await audit.store.audit_rows())[-1].body


@pytest.mark.synapse
async def test_sync_actions_are_audited_and_cli_verifies(homeserver: Any, data_dir: Path, tmp_path: Path) -> None:
    from bridge.matrix.appservice_api import AppserviceAPI
    from bridge.reconcile.sync import run_sync
    from bridge.store import open_store
    from tests.conftest import config_file, unique_school, write_school

    config = homeserver.config(data_dir)
    store = await open_store(config.database_url)
    api = AppserviceAPI(base_url=config.homeserver.url, as_token=config.appservice.as_token)
    school = str(write_school(tmp_path, unique_school(tmp_path)))
    result = await run_sync(config, [school], store=store, api=api, apply=True)
    rows = await store.audit_rows()
    await api.close()
    await store.close()
    assert len(rows) == len(result.plan.actions)  # one entry per action, invites folded in createRoom too
    assert all("body" not in r.body for r in rows)
    cfg = config_file(homeserver, data_dir)
    ok = subprocess.run([sys.executable, "-m", "bridge", "-c", str(cfg), "audit", "verify"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    seq = next(r.seq for r in rows if '"invite"' in r.body)  # someone "invited" turned into a kick
    conn = sqlite3.connect(data_dir / "bridge.db")
    conn.execute("UPDATE audit SET body = replace(body, 'invite', 'kick') WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    bad = subprocess.run([sys.executable, "-m", "bridge", "-c", str(cfg), "audit", "verify"],
                         capture_output=True, text=True)
    assert bad.returncode == 1 and f"entry {seq} was modified" in bad.stderr


async def test_concurrent_logs_on_one_store_keep_one_chain(store: Any) -> None:
    """On PostgreSQL the appends really interleave (SQLite's calls don't yield)."""
    import asyncio

    logs = [AuditLog(store, key="k" * 32) for _ in range(4)]  # as moderation, syncs… each make one

    async def write(a: AuditLog, n: int) -> None:
        for i in range(5):
            await a.append(actor="ent-bridge", action="x", reason=f"{n}-{i}")

    await asyncio.gather(*(write(a, n) for n, a in enumerate(logs)))
    result = await logs[0].verify()
    assert result.ok and result.checked == 20


async def test_an_entry_recorded_once_stays_one_across_logs_and_flushes(store: Any) -> None:
    """The same decision recorded again (its event handled again after a failed action, or by a
    restarted bridge whose memory is new) is on record once: in one flush, in a later one, from
    another log on the same store; the chain stays whole, and entries with no key are all kept."""
    first, restarted = AuditLog(store, key="k" * 32), AuditLog(store, key="k" * 32)
    for _ in range(2):
        first.record(actor="ent-bridge", action="moderation_banned_words", reason="insulte", once="m:$e1:bw")
    first.record(actor="ent-bridge", action="unmute", reason="fin")
    assert await first.flush() == 2
    restarted.record(actor="ent-bridge", action="moderation_banned_words", reason="insulte", once="m:$e1:bw")
    restarted.record(actor="ent-bridge", action="moderation_flood", reason="flood", once="m:$e1:flood")
    restarted.record(actor="ent-bridge", action="unmute", reason="fin")
    assert await restarted.flush() == 2  # the flood decision and the unkeyed entry
    assert await restarted.flush() == 0
    bodies = [r.body for r in await store.audit_rows()]
    assert [b.count("banned_words") for b in bodies] == [1, 0, 0, 0]
    assert (await first.verify()).ok


async def test_removing_the_newest_entries_is_detected_by_the_head_file(tmp_path: Path) -> None:
    """Deleting the last entries leaves a shorter chain that is valid in itself: the head file,
    kept outside the database, says how far the chain went."""
    db = tmp_path / "a.db"
    store = SqliteStore(str(db))
    await store.open()
    head = tmp_path / "audit-head"
    audit = AuditLog(store, key="k" * 32, head_file=head)
    try:
        for i in range(5):
            await audit.append(actor="ent-bridge", action="invite", reason=f"r{i}")
        assert head.read_text().startswith("5:")
        assert (await audit.verify()).ok
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM audit WHERE seq >= 4")
        result = await audit.verify()
        assert not result.ok and "entries 4 to 5 were removed" in (result.problem or "")
        assert (await AuditLog(store, key="k" * 32).verify()).ok  # without the head, undetectable
    finally:
        await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writers_in_several_processes_never_share_an_entry_number(backend: str, tmp_path: Path) -> None:
    """`run`, a CLI sync and an `rgpd erase` append at once: the database numbers the entries, so
    none is lost and the chain stays whole."""
    import secrets

    from tests.conftest import postgres_dsn

    if backend == "sqlite":
        opener = f"from bridge.store.sqlite import SqliteStore as S; s = S({str(tmp_path / 'a.db')!r})"
    else:
        dsn = postgres_dsn()
        if not dsn:
            pytest.skip("ENT_BRIDGE_TEST_POSTGRES not set")
        opener = (f"from bridge.store.postgres import PostgresStore as S; "
                  f"s = S({dsn!r}, schema='audit_{secrets.token_hex(4)}')")
    script = (opener + "\nimport asyncio, sys\nfrom bridge.audit import AuditLog\n"
              "async def main():\n    await s.open()\n    a = AuditLog(s, key='k' * 32)\n"
              "    for i in range(100):\n        await a.append(actor='p', action='x', reason=sys.argv[1] + str(i))\n"
              "    await s.close()\nasyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, f"w{n}-"], stderr=subprocess.PIPE, text=True)
             for n in range(4)]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-400:] for e in errors]
    check = (opener + "\nimport asyncio\nfrom bridge.audit import AuditLog\n"
             "async def main():\n    await s.open()\n    r = await AuditLog(s, key='k' * 32).verify()\n"
             "    print(r.ok, r.checked, r.problem)\n    await s.close()\nasyncio.run(main())\n")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.split()[:2] == ["True", "400"], out
