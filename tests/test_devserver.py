"""The throw-away Synapse the tests and the demo run: handed over only once it is settled."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

from bridge.devserver import LocalSynapse


def _search(synapse: LocalSynapse, token: str, term: str) -> set[str]:
    req = urllib.request.Request(f"{synapse.url}/_matrix/client/v3/user_directory/search", method="POST",
                                 data=json.dumps({"search_term": term}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return {r["user_id"] for r in json.loads(resp.read())["results"]}


def test_a_user_registered_as_soon_as_synapse_answers_stays_in_the_user_directory(tmp_path: Path) -> None:
    """Synapse rebuilds the user directory in a background update on a fresh database and drops
    whoever registered after the rebuild listed the users: a test searching for them waited in
    vain (CI, 7 Dec). `start()` returns once those updates are done."""
    synapse = LocalSynapse(workdir=tmp_path / "synapse",
                           extra={"user_directory": {"enabled": True, "search_all_users": True}})
    synapse.start()
    try:
        searcher = synapse.register_user("searcher", "pw-searcher-1")
        parents = [synapse.register_user("parent0000", "pw-parent")["user_id"]]
        while synapse.background_updates():  # on a Synapse handed over too early, the race's window
            parents.append(synapse.register_user(f"parent{len(parents):04d}", "pw-parent")["user_id"])
            time.sleep(0.2)
        for user_id in parents:
            assert _search(synapse, searcher["access_token"], user_id[1:].split(":")[0]) == {user_id}
    finally:
        synapse.stop()
