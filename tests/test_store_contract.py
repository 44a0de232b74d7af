"""One contract suite for every store backend (SQLite always; PostgreSQL when a DSN is given)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bridge.store.base import RoomRecord
from bridge.store.sqlite import SqliteStore
from tests.conftest import postgres_dsn


@pytest_asyncio.fixture(params=["sqlite", "postgres"])
async def store(request: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteStore(str(tmp_path / "store.db"))
        await s.open()
        yield s
        await s.close()
        return
    dsn = postgres_dsn()
    if not dsn:
        pytest.skip("ENT_BRIDGE_TEST_POSTGRES not set")
    from bridge.store.postgres import PostgresStore

    schema = f"t_{secrets.token_hex(4)}"
    s = PostgresStore(dsn, schema=schema)
    await s.open()
    yield s
    await s.pool.execute(f'DROP SCHEMA "{schema}" CASCADE')
    await s.close()


async def test_migrated_to_latest(store: Any) -> None:
    from bridge.store.migrations import migrations

    assert await store.schema_version() == migrations()[-1][0]


async def test_transaction_recorded_once(store: Any) -> None:
    events = [{"event_id": "$a"}, {"event_id": "$b"}]
    assert await store.record_transaction("t1", events, now_ms=1) is True
    assert await store.record_transaction("t1", events, now_ms=2) is False
    pending = await store.pending_events()
    assert [(p.txn_id, p.idx, p.event["event_id"]) for p in pending] == [("t1", 0, "$a"), ("t1", 1, "$b")]


async def test_inbox_order_done_and_dead_letters(store: Any) -> None:
    await store.record_transaction("t2", [{"event_id": "$late"}], now_ms=20)
    await store.record_transaction("t1", [{"event_id": "$early"}], now_ms=10)
    assert [p.event["event_id"] for p in await store.pending_events()] == ["$early", "$late"]
    await store.events_done([("t1", 0)])
    await store.record_transaction("t3", [{"event_id": "$x"}, {"event_id": "$y"}], now_ms=30)
    await store.events_done([("t3", 0), ("t3", 1)])
    assert await store.event_failed("t2", 0, error="x", max_attempts=2) is False
    assert (await store.pending_events())[0].attempts == 1
    assert await store.event_failed("t2", 0, error="x", max_attempts=2) is True
    assert await store.pending_events() == []
    assert [d.event["event_id"] for d in await store.dead_letters()] == ["$late"]


async def test_kv_roundtrip_and_overwrite(store: Any) -> None:
    assert await store.get_value("k") is None
    await store.set_value("k", "1")
    await store.set_value("k", "2")
    assert await store.get_value("k") == "2"


async def test_rooms(store: Any) -> None:
    rec = RoomRecord("class:0610001A:6A:2026", "!abc:ent.test", "#ent-bridge_x:ent.test", "class")
    await store.put_room(rec, now_ms=1)
    assert await store.get_room(rec.room_key) == rec
    moved = RoomRecord(rec.room_key, "!def:ent.test", rec.alias, "class")
    await store.put_room(moved, now_ms=2)
    assert await store.all_rooms() == [moved]
    await store.delete_room(rec.room_key)
    assert await store.get_room(rec.room_key) is None


async def test_archive_flag(store: Any) -> None:
    rec = RoomRecord("family:0610001A:E1", "!f:ent.test", "#ent-bridge_y:ent.test", "family")
    await store.put_room(rec, now_ms=1)
    await store.archive_room(rec.room_key, now_ms=5)
    assert (await store.get_room(rec.room_key)).archived_at == 5
    assert (await store.all_rooms())[0].archived is True
    await store.unarchive_room(rec.room_key)  # wanted again
    assert (await store.get_room(rec.room_key)).archived_at is None


async def test_identities(store: Any) -> None:
    assert await store.identities() == {}
    await store.put_identities({"E1": "@a:ent.test", "E2": "@b:ent.test"})
    await store.put_identities({"E2": "@c:ent.test"})
    assert await store.identities() == {"E1": "@a:ent.test", "E2": "@c:ent.test"}
    await store.delete_identity("E1")
    assert await store.identities() == {"E2": "@c:ent.test"}


async def test_audit_rows(store: Any) -> None:
    from bridge.store.base import AuditRow

    heads: list[tuple[int | None, str | None, frozenset[str]]] = []

    def chain(rows: list[tuple[AuditRow, str | None]]) -> Any:
        def build(last: AuditRow | None, anchor: str | None, recorded: frozenset[str]
                  ) -> list[tuple[AuditRow, str | None]]:
            heads.append((None if last is None else last.seq, anchor, recorded))
            return [(r, k) for r, k in rows if k not in recorded]
        return build

    await store.set_value("anchor", "0:genesis")
    await store.audit_extend(chain([(AuditRow(1, 10, "{}", "m1"), "a"), (AuditRow(2, 20, "{}", "m2"), None)]),
                             anchor_key="anchor", once=["a"])
    added = await store.audit_extend(chain([(AuditRow(3, 30, "{}", "m3"), "a"), (AuditRow(3, 30, "{}", "m3"), "b")]),
                                     anchor_key="anchor", once=["a", "b"])
    assert [r.mac for r in added] == ["m3"]  # "a" is on record: only "b"'s row went in
    assert heads == [(None, "0:genesis", frozenset()), (2, None, frozenset({"a"}))]  # the anchor while empty
    assert [r.seq for r in await store.audit_rows(after_seq=1)] == [2, 3]
    assert (await store.audit_prune(before_ts=25)).seq == 2
    assert [r.seq for r in await store.audit_rows()] == [3]
    await store.audit_extend(chain([(AuditRow(4, 40, "{}", "m4"), "a")]), anchor_key="anchor", once=["a"])
    assert heads[-1][2] == frozenset()  # "a" went with its pruned entry
    many = [f"k{i}" for i in range(1200)]  # more keys than one statement takes
    await store.audit_extend(chain([(AuditRow(5 + i, 50, "{}", f"m{5 + i}"), k) for i, k in enumerate(many)]),
                             anchor_key="anchor", once=many)
    await store.audit_extend(chain([(AuditRow(9999, 60, "{}", "late"), "k1100")]), anchor_key="anchor",
                             once=["k1100", "k3"])
    assert heads[-1][2] == frozenset({"k1100", "k3"})


async def test_mutes(store: Any) -> None:
    await store.put_mute("!r:s", "@a:s", until_ms=50)
    await store.put_mute("!r:s", "@b:s", until_ms=10)
    await store.put_mute("!r:s", "@a:s", until_ms=60)
    assert await store.mutes() == [("!r:s", "@b:s", 10), ("!r:s", "@a:s", 60)]
    await store.delete_mute("!r:s", "@b:s")
    assert await store.mutes() == [("!r:s", "@a:s", 60)]


async def test_observed_cache(store: Any) -> None:
    assert await store.observed_rooms() == {}
    await store.put_observed({"!a:s": "[1]", "!b:s": "[2]"})
    await store.put_observed({"!b:s": "[3]"})
    assert await store.observed_rooms() == {"!a:s": "[1]", "!b:s": "[3]"}
    await store.put_observed({"!c:s": "[4]"}, replace_all=True)  # a full refresh drops the rest
    assert await store.observed_rooms() == {"!c:s": "[4]"}
    await store.put_observed({"!d:s": "[5]"}, drop=["!c:s", "!unknown:s"])
    assert await store.observed_rooms() == {"!d:s": "[5]"}


async def test_provisioned_and_leavers(store: Any) -> None:
    await store.mark_provisioned("@a:s", "p1")
    await store.mark_provisioned("@a:s", "p1")
    assert await store.provisioned() == {"@a:s": "p1"}
    await store.forget_provisioned("@a:s")
    assert await store.provisioned() == {}
    await store.set_leavers(add={"p1": 10, "p2": 20}, remove=[])
    await store.set_leavers(add={"p1": 99}, remove=["p2"])  # the first departure date is kept
    assert await store.leavers() == {"p1": 10}


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_processes_opening_a_new_store_together_all_succeed(backend: str, tmp_path: Path) -> None:
    """Two bridges (`run` and a CLI `sync`) starting on an empty store: the migrations run once,
    under the store's lock, and neither fails with 'table already exists'."""
    import subprocess
    import sys

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'new.db'}"
        opener = "from bridge.store.sqlite import SqliteStore as S; s = S(sys.argv[1][10:])"
    else:
        dsn = postgres_dsn()
        if not dsn:
            pytest.skip("ENT_BRIDGE_TEST_POSTGRES not set")
        url = dsn
        opener = f"from bridge.store.postgres import PostgresStore as S; s = S(sys.argv[1], schema='n_{secrets.token_hex(4)}')"
    script = ("import asyncio, sys\n" + opener + "\n"
              "async def main():\n    await s.open()\n    print(await s.schema_version())\n    await s.close()\n"
              "asyncio.run(main())\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    results = [p.communicate() for p in procs]
    from bridge.store.migrations import migrations

    latest = str(migrations()[-1][0])
    assert all(p.returncode == 0 for p in procs), [err[-500:] for _, err in results]
    assert [out.strip() for out, _ in results] == [latest] * 6


async def test_lease_one_holder_at_a_time_until_expiry(store: Any) -> None:
    assert await store.acquire_lease("writer", "a", now_ms=1000, ttl_ms=60_000) is None
    assert await store.acquire_lease("writer", "b", now_ms=2000, ttl_ms=60_000) == "a"
    assert await store.acquire_lease("writer", "a", now_ms=30_000, ttl_ms=60_000) is None  # renewed
    assert await store.acquire_lease("writer", "b", now_ms=80_000, ttl_ms=60_000) == "a"  # still valid
    assert await store.acquire_lease("writer", "b", now_ms=90_001, ttl_ms=60_000) is None  # expired: taken
    await store.release_lease("writer", "a")  # not the holder any more: changes nothing
    assert await store.acquire_lease("writer", "a", now_ms=90_002, ttl_ms=60_000) == "b"
    await store.release_lease("writer", "b")
    assert await store.acquire_lease("writer", "a", now_ms=90_003, ttl_ms=60_000) is None


async def test_a_task_cancelled_inside_a_transaction_leaves_the_store_usable(store: Any) -> None:
    """A lease renewal or a handler cancelled at any point of its transaction (the bridge
    stopping) must not leave the connection inside a transaction for the next caller."""
    import asyncio

    for ticks in range(8):
        task = asyncio.ensure_future(store.acquire_lease("writer", f"h{ticks}", now_ms=ticks, ttl_ms=1))
        for _ in range(ticks):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    await store.set_value("after", "ok")
    assert await store.acquire_lease("writer", "last", now_ms=10**6, ttl_ms=1) is None
    assert await store.get_value("after") == "ok"


async def test_inbox_stats_name_the_earliest_retry(store: Any) -> None:
    """The dispatcher sleeps until the earliest postponed event is due, which need not be the
    oldest one's time."""
    await store.record_transaction("old", [{"event_id": "$old"}], now_ms=1)
    await store.record_transaction("new", [{"event_id": "$new"}], now_ms=2)
    await store.event_failed("old", 0, error="x", max_attempts=20, next_attempt_ms=3_600_000)
    await store.event_failed("new", 0, error="x", max_attempts=20, next_attempt_ms=500)
    stats = await store.inbox_stats()
    assert (stats.pending, stats.oldest_pending_ms, stats.next_attempt_ms) == (2, 1, 500)


async def test_a_received_transaction_names_its_events_handled_before(store: Any) -> None:
    """The inbox write also says which of the transaction's events were handled before (in
    another transaction): the dispatcher needs no read of its own for them."""
    assert await store.receive_transaction("t1", [{"event_id": "$a"}], now_ms=1) == set()
    await store.events_done([("t1", 0)], event_ids=["$a"], now_ms=2)
    events = [{"event_id": "$a"}, {"event_id": "$b"}, {"no": "id"}]
    assert await store.receive_transaction("t2", events, now_ms=3) == {"$a"}
    assert await store.receive_transaction("t2", events, now_ms=4) is None  # seen before: nothing stored
    assert [(p.txn_id, p.idx) for p in await store.pending_events()] == [("t2", 0), ("t2", 1), ("t2", 2)]


async def test_a_script_reads_its_own_writes_and_is_all_or_nothing(store: Any) -> None:
    from bridge.store.db import Script, Stmt

    def steps(fail: bool) -> Any:
        def body() -> Script[int]:
            yield Stmt("INSERT INTO kv (key, value) VALUES ($1, $2)", ("s1", "v1"))
            yield Stmt("INSERT INTO kv (key, value) VALUES ($1, $2)", many=[("s2", "v2"), ("s3", "v3")])
            rows = yield Stmt("SELECT count(*) FROM kv WHERE key LIKE $1", ("s%",), rows=True)
            if fail:
                raise ValueError("changed my mind")
            return int(rows[0][0])
        return body

    with pytest.raises(ValueError, match="changed my mind"):
        await store.db.script(steps(True))
    assert await store.get_value("s1") is None  # nothing of it stayed
    assert await store.db.script(steps(False)) == 3
    assert [await store.get_value(k) for k in ("s1", "s2", "s3")] == ["v1", "v2", "v3"]
    with pytest.raises(Exception, match="(?i)unique|duplicate"):
        await store.db.script(steps(False))  # a failing statement rolls back the others too
    await store.set_value("after", "ok")  # and leaves the store usable
    assert await store.get_value("after") == "ok"
