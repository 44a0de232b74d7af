"""Observability of a running bridge (on the fake homeserver): /metrics in Prometheus format with
the ecosystem's `bridge_` names, liveness and readiness as mautrix bridges answer them."""

from __future__ import annotations

from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bridge.metrics import endpoint
from tests.test_app_on_fake import _invited_by_hand, _put, _until, running  # noqa: F401 - the fixture


async def _get(bridge: Any, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{bridge.config.appservice.port}{path}") as resp:
        return resp.status, await resp.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_count_what_the_bridge_did(running: Any) -> None:
    bridge, fake, _ = running
    room = next(r for r in await bridge.store.all_rooms() if r.template == "class")
    assert await _put(bridge, "m1", [_invited_by_hand(bridge, fake, room.room_id, "@intrus:ent.test")]) == 200
    await _until(lambda: fake.room(room.room_id).membership("@intrus:ent.test") == "leave")
    await bridge.ops.resync()
    status, text = await _get(bridge, "/metrics")
    assert status == 200
    got = _samples(text)
    rooms = await bridge.store.all_rooms()
    assert got[("bridge_managed_rooms", (("state", "active"), ("template", "class")))] == \
        sum(1 for r in rooms if r.template == "class" and not r.archived)
    assert got[("bridge_matrix_event_total", (("type", "m.room.member"),))] == 1
    assert got[("bridge_matrix_api_calls_total", (("method", "rooms kick"),))] >= 1  # the outsider
    assert got[("bridge_matrix_api_calls_total", (("method", "createRoom"),))] == len(rooms)
    assert got[("bridge_sync_duration_seconds_count", ())] == 2  # at start, and the one above
    assert got[("bridge_actions_applied_total", (("kind", "create_room"),))] == len(rooms) - 1  # the Space aside
    assert got[("bridge_transaction_seconds_count", ())] == 1
    assert got[("bridge_inbox_pending_events", ())] == 0 and got[("bridge_dead_letters", ())] == 0
    assert ("bridge_event_loop_lag_seconds", ()) in got
    assert not any(name.startswith("bridge_") and "@" in str(labels) for name, labels in got)  # no person's id


async def test_liveness_and_readiness(running: Any) -> None:
    bridge, _, _ = running
    assert await _get(bridge, "/_matrix/mau/live") == (200, '{"ok": true}')
    status, body = await _get(bridge, "/_matrix/mau/ready")
    assert status == 200, body  # the store answers, the homeserver answered the ping; no bot here
    bridge.readiness.pinged = False
    status, body = await _get(bridge, "/_matrix/mau/ready")
    assert status == 503 and "ping" in body


def test_endpoint_labels_never_carry_ids() -> None:
    assert endpoint("/_matrix/client/v3/rooms/%21abc%3Aent.test/invite") == "rooms invite"
    assert endpoint("/_matrix/client/v3/rooms/!abc:ent.test/state/m.room.name/") == "rooms state"
    assert endpoint("/_matrix/client/v3/profile/%40anne%3Aent.test/displayname") == "profile displayname"
    assert endpoint("/_matrix/client/v3/createRoom") == "createRoom"
    assert endpoint("/_matrix/client/v1/appservice/ent-bridge/ping") == "appservice ent-bridge"


def test_the_grafana_dashboard_uses_only_metrics_the_bridge_exports() -> None:
    """docker/grafana-dashboard.json: every metric a panel asks for is one the bridge defines."""
    import json
    import re
    from pathlib import Path

    from bridge.metrics import Metrics

    exported = set()
    for family in Metrics().registry.collect():
        exported |= {s.name for s in family.samples} | {family.name}
    exported |= {n + suffix for n in list(exported) for suffix in ("_total", "_bucket", "_sum", "_count")}
    dashboard = json.loads((Path(__file__).parent.parent / "docker" / "grafana-dashboard.json").read_text())
    asked = {m for p in dashboard["panels"] for t in p["targets"] for m in re.findall(r"bridge_[a-z_]+", t["expr"])}
    assert asked and asked <= exported, asked - exported
