"""The module's refusals on their way to the bridge's audit: the format read strictly, the module's
queue (batches, backoff, a bound), the bridge's endpoint (token, once each). Live: test_access_live."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.access.refusals import BATCH_MAX, PATH, Refusal, audit_entry, parse_batch, parse_one
from bridge.access.reporter import QUEUE_MAX, RefusalReporter, read_registration
from bridge.access.synapse_module import ModuleConfigError, parse
from bridge.audit import for_config
from tests.test_app_on_fake import running  # noqa: F401 - the bridge on the fake homeserver

GOOD = {"id": "0123456789abcdef", "ts": 1, "kind": "invite", "sender": "@sara:ent.test", "reason": "non liée",
        "room": "!r:ent.test", "target": "@anne:ent.test"}


@pytest.mark.parametrize("change, problem", [
    ({"extra": 1}, "unknown key(s) extra"),
    ({"kind": "hug"}, "refusal.kind: one of"),
    ({"id": "short"}, "refusal.id: 16 to 64"),
    ({"id": "ABCDEF0123456789"}, "refusal.id"),
    ({"ts": True}, "refusal.ts"),
    ({"ts": -1}, "refusal.ts"),
    ({"sender": "sara"}, "refusal.sender: a Matrix user id"),
    ({"target": "anne"}, "refusal.target: a Matrix user id"),
    ({"reason": "x" * 501}, "refusal.reason: a string of 1 to 500"),
    ({"room": ["!r"]}, "refusal.room"),
    ({"sender": None}, "refusal.sender"),
])
def test_a_refusal_is_read_strictly(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_one({**GOOD, **change})


def test_a_batch_is_bounded_and_each_refusal_named_by_its_place() -> None:
    assert parse_batch({"refusals": [GOOD]}) == [parse_one(GOOD)]
    with pytest.raises(ValueError, match=r"refusals\[1\]\.kind"):
        parse_batch({"refusals": [GOOD, {**GOOD, "kind": None}]})
    with pytest.raises(ValueError, match="at most"):
        parse_batch({"refusals": [GOOD] * (BATCH_MAX + 1)})
    for body in ([GOOD], {"refusals": GOOD}, {"refusals": [], "more": 1}):
        with pytest.raises(ValueError, match="body"):
            parse_batch(body)


def test_the_audit_names_people_by_their_pseudonym_only() -> None:
    entry = audit_entry(parse_one(GOOD), lambda user: f"p:{len(user)}")
    assert entry["subject"] == "@sara:ent.test"  # the audit log pseudonymises its subject itself
    assert entry["detail"] == {"target": "p:14"} and entry["action"] == "access_refused_invite"
    assert entry["once"] == "refusal:0123456789abcdef" and entry["now_ms"] == 1


class _Bridge:
    """The bridge's endpoint as the reporter sees it: down, or answering."""

    def __init__(self) -> None:
        self.up = False
        self.got: list[tuple[str, list[str]]] = []

    async def put(self, url: str, body: dict[str, Any], headers: dict[str, list[str]]) -> Any:
        assert headers == {"Authorization": ["Bearer hs"]}
        if not self.up:
            raise ConnectionRefusedError("bridge down")
        self.got.append((url, [r["id"] for r in body["refusals"]]))
        return {}


async def test_refusals_wait_for_the_bridge_with_a_backoff_then_go_in_batches() -> None:
    bridge, now = _Bridge(), [0.0]
    reporter = RefusalReporter("http://b", "hs", bridge.put, now_s=lambda: now[0])
    for n in range(BATCH_MAX + 5):
        reporter.add(kind="join", sender=f"@p{n}:s", reason="non inscrit", room="!r:s")
    assert await reporter.send() == 0 and len(reporter.queue) == BATCH_MAX + 5  # down: kept
    bridge.up = True
    assert await reporter.send() == 0  # within its backoff (1 s): not tried
    now[0] = 1.5
    assert await reporter.send() == BATCH_MAX + 5 and not reporter.queue
    assert [len(ids) for _, ids in bridge.got] == [BATCH_MAX, 5]
    assert all(url == f"http://b{PATH}{ids[0]}" for url, ids in bridge.got)  # the same batch, the same request
    bridge.up = False
    reporter.add(kind="join", sender="@late:s", reason="non inscrit")
    assert await reporter.send() == 0
    bridge.up = True
    assert await reporter.send(now=True) == 1  # a new refusal tries at once, whatever the backoff


async def test_a_bridge_down_for_long_costs_the_oldest_refusals_never_the_memory() -> None:
    reporter = RefusalReporter("http://b", "hs", _Bridge().put)
    for n in range(QUEUE_MAX + 3):
        reporter.add(kind="create_room", sender=f"@p{n}:s", reason="public")
    assert len(reporter.queue) == QUEUE_MAX and reporter.dropped == 3
    assert reporter.queue[0].sender == "@p3:s"


def test_the_module_reads_the_bridge_address_from_the_registration(tmp_path: Path) -> None:
    reg = tmp_path / "reg.yaml"
    reg.write_text("id: ent-bridge\nurl: http://127.0.0.1:29340/\nhs_token: secret\n")
    assert read_registration(reg) == ("http://127.0.0.1:29340", "secret")
    config = {"snapshot": "/s", "bridge_users": ["@b:s"], "registration": str(reg)}
    assert parse(config)["bridge"] == ("http://127.0.0.1:29340", "secret")
    reg.write_text("id: ent-bridge\nurl: null\nhs_token: secret\n")
    assert parse(config)["bridge"] is None  # an appservice with no address: nowhere to send
    for text, problem in (("id: x\n", "no hs_token"), ("[unclosed", "unreadable")):
        reg.write_text(text)
        with pytest.raises(ModuleConfigError, match=problem):
            parse(config)
    with pytest.raises(ModuleConfigError, match="registration: unreadable|registration: registration"):
        parse({**config, "registration": str(tmp_path / "missing.yaml")})


async def test_the_bridge_records_each_refusal_once_and_only_from_its_homeserver(running: Any) -> None:
    bridge, _fake, _ = running
    base = f"http://127.0.0.1:{bridge.config.appservice.port}{PATH}"
    first = Refusal(id="a" * 32, ts=1000, kind="invite", sender="@sara:ent.test", reason="non liée",
                    room="!r:ent.test", target="@anne:ent.test")
    body = {"refusals": [first.to_json(), {**first.to_json(), "id": "b" * 32, "kind": "join"}]}
    token = {"Authorization": f"Bearer {bridge.config.appservice.hs_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.put(base + "x", json=body, headers={"Authorization": "Bearer wrong"}) as resp:
            assert resp.status == 403
        async with http.put(base + "x", json={"refusals": [{**first.to_json(), "kind": "hug"}]},
                            headers=token) as resp:
            assert resp.status == 400 and "refusals[0].kind" in (await resp.json())["error"]
        for _ in range(2):  # the answer was lost: sent again
            async with http.put(base + first.id, json=body, headers=token) as resp:
                assert resp.status == 200 and await resp.json() == {"recorded": 2}
    rows = [r.body for r in await bridge.store.audit_rows() if "access_refused" in r.body]
    assert len(rows) == 2 and "access_refused_invite" in rows[0] and "access_refused_join" in rows[1]
    audit = for_config(bridge.config, bridge.store)
    assert not any("@sara" in r or "@anne" in r for r in rows)  # pseudonyms only
    assert audit.pseudonym("@anne:ent.test") in rows[0] and audit.pseudonym("@sara:ent.test") in rows[1]
    assert (await audit.verify()).ok


async def test_what_waits_for_the_bridge_survives_a_synapse_restart_in_its_spool(tmp_path: Path) -> None:
    spool = tmp_path / "refusals.main.jsonl"
    bridge = _Bridge()
    first = RefusalReporter("http://b", "hs", bridge.put, spool=spool)
    for n in range(3):
        first.add(kind="invite", sender=f"@p{n}:s", target="@other:s", reason="non liée", room="!r:s")
    assert await first.send() == 0 and oct(spool.stat().st_mode & 0o777) == "0o600"
    with spool.open("a") as torn:  # Synapse killed in the middle of a line
        torn.write('{"id": "0123')
    restarted = RefusalReporter("http://b", "hs", bridge.put, spool=spool)  # Synapse restarted
    assert [r.sender for r in restarted.queue] == ["@p0:s", "@p1:s", "@p2:s"]
    assert list(restarted.queue) == list(first.queue)  # the same ids: on record once, wherever they come from
    bridge.up = True
    assert await restarted.send(now=True) == 3 and spool.read_text() == ""
    assert RefusalReporter("http://b", "hs", bridge.put, spool=spool).queue == deque()


def test_a_spool_needs_the_registration(tmp_path: Path) -> None:
    with pytest.raises(ModuleConfigError, match="spool"):
        parse({"snapshot": "/s", "bridge_users": ["@b:s"], "spool": str(tmp_path / "x")})
