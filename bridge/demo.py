"""`make demo`: a local Synapse, the bridge, the bundled fictitious school, encrypted rooms, a summary.

Everything lives in .demo/ and stays on 127.0.0.1. Running it again reuses that folder: the
homeserver keeps its rooms and the sync finds nothing to do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bridge import logging as blog
from bridge.app import Bridge
from bridge.config import load_config
from bridge.devserver import LocalSynapse, free_port
from bridge.directory.model import Directory
from bridge.directory.sources import load
from bridge.reconcile.inputs import desired_state
from bridge.registration import write_registration
from bridge.rooms.desired import DesiredRoom
from bridge.synapse_settings import access_module

ROOT = Path(__file__).resolve().parent.parent
SCHOOL = ROOT / "config" / "demo-school.yaml"
PASSWORD = "ent-demo-2026"  # demo accounts only, on a loopback homeserver
WELCOME = "Bienvenue dans le salon de la classe ! Les messages y sont chiffrés de bout en bout."
ANNOUNCEMENT = "!annonce Réunion parents-professeurs jeudi à 18 h en salle 12. Merci de confirmer votre présence."


def prepare(workdir: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Config, registration and ports, created once and kept."""
    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "demo.yaml"
    state = yaml.safe_load(state_path.read_text()) if state_path.exists() else None
    config_path, reg_path = workdir / "config.yaml", workdir / "registration.yaml"
    if not state or not config_path.exists():
        state = {"synapse_port": free_port(), "bridge_port": free_port(), "shared_secret": secrets.token_hex(16)}
        data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
        data["homeserver"].update(url=f"http://127.0.0.1:{state['synapse_port']}", server_name="ent.demo")
        data["appservice"]["port"] = state["bridge_port"]
        data["bot"]["store_dir"] = str(workdir / "data" / "nio")
        data["database"]["url"] = f"sqlite:///{workdir / 'data' / 'bridge.db'}"
        data["policies"]["dir"] = str(ROOT / "policies")
        data["directory"]["sources"] = [str(SCHOOL)]
        config_path.write_text(yaml.safe_dump(data, allow_unicode=True))
        write_registration(config_path=config_path, out_path=reg_path, url=f"http://127.0.0.1:{state['bridge_port']}")
        state_path.write_text(yaml.safe_dump(state))
    return config_path, reg_path, state


async def demo(workdir: Path, *, keep_running: bool) -> int:
    config_path, reg_path, state = prepare(workdir)
    config = load_config(config_path)
    assert config.access_snapshot is not None
    module = access_module(config.access_snapshot, [config.sender_user_id, config.bot_user_id, config.keyless_user_id],
                           registration=reg_path, spool=workdir / "synapse" / "ent-bridge-refusals")
    synapse = LocalSynapse(workdir=workdir / "synapse", server_name="ent.demo", port=int(state["synapse_port"]),
                           registrations=[reg_path], shared_secret=str(state["shared_secret"]),
                           extra={"modules": [module]})
    print(f"Starting Synapse on {synapse.url} (with ent-bridge's access module) …")
    synapse.start()
    bridge = None
    try:
        bridge = await Bridge.create(config)
        directory, _ = load([str(SCHOOL)])
        desired, identities = desired_state(config, directory, await bridge.store.identities(),
                                            now=datetime.now(UTC))
        created = 0
        for mxid in sorted(set(identities.values())):
            localpart = mxid[1:].split(":", 1)[0]
            created += synapse.ensure_user(localpart, PASSWORD)  # already there from a previous run: kept
        print(f"Accounts: {created} created, {len(set(identities.values())) - created} already there.")
        # One sync: the bridge's own, at its start (a second one beside it would only wait for it).
        await bridge.start()
        assert bridge.resyncer is not None
        await bridge.resyncer.ran.wait()
        outcome = bridge.ops.last_outcome
        if outcome is None or outcome.refused:
            print(f"The sync failed: {bridge.ops.last_sync}")
            return 1
        done = ", ".join(f"{n} {kind}" for kind, n in outcome.summary.items())
        print(f"Plan: {sum(outcome.summary.values())} actions ({done})" if outcome.summary else
              "Plan: nothing to do; the homeserver matches the directory.")
        if outcome.failed:
            print(f"{outcome.failed} actions failed; see the log above.")
            return 1
        class_rooms = {k: r for k, r in desired.rooms.items() if r.template == "class"}
        first_class = min(class_rooms)
        if await bridge.store.get_value("demo_welcome") is None:
            room_id = (await bridge.store.get_room(first_class)).room_id  # type: ignore[union-attr]
            await bridge.bot.send_notice(room_id, WELCOME)
            await bridge.store.set_value("demo_welcome", "sent")
        parent, _ = _printed_parent(desired.rooms, directory, identities)
        klass = next(r for r in class_rooms.values() if parent in r.members)
        teacher = min(u for u, lvl in (klass.power_levels.get("users") or {}).items() if lvl == 50)
        if await bridge.store.get_value("demo_announcement") is None:
            await _announce(bridge, synapse.url, klass, teacher, workdir)
            await bridge.store.set_value("demo_announcement", "sent")
        _summary(desired.rooms, directory, identities, synapse.url)
        print(f"  In «{klass.name}», {teacher} posted an announcement the families are asked to confirm "
              "(a ✅ reaction or a reply « lu »): log in as the parent and confirm it.")
        if not keep_running:
            print("\nNot on a terminal (or --exit): the demo's Synapse and bridge stop now. Run `make demo` in a "
                  "terminal to keep them up and log in; the accounts and rooms stay for next time.")
        if keep_running:
            print("\nThe homeserver and the bridge keep running; Ctrl-C stops them.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            import signal

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        return 0
    finally:
        if bridge is not None:
            await bridge.stop()
        synapse.stop()


async def _announce(bridge: Bridge, url: str, room: DesiredRoom, teacher: str, workdir: Path) -> None:
    """The teacher, as a real E2EE client, posts an announcement; the bot asks families to confirm."""
    import json

    from nio import AsyncClient, AsyncClientConfig

    record = await bridge.store.get_room(room.key)
    assert record is not None
    store_dir = workdir / "teacher-nio"
    store_dir.mkdir(parents=True, exist_ok=True)
    client = AsyncClient(url, teacher, store_path=str(store_dir),
                         config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
    try:
        await client.login(PASSWORD, device_name="demo")
        await client.sync(timeout=0, full_state=True)
        if record.room_id not in client.rooms:
            await client.join(record.room_id)
            await client.sync(timeout=0)
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        await bridge.bot.wait_for_room(record.room_id)
        sent = await client.room_send(record.room_id, "m.room.message", {"msgtype": "m.text", "body": ANNOUNCEMENT},
                                      ignore_unverified_devices=True)
        for _ in range(600):  # until the bot decrypted it and asked the families (a hang guard)
            if getattr(sent, "event_id", None) in json.loads(await bridge.store.get_value("announcements") or "{}"):
                break
            await asyncio.sleep(0.1)
    finally:
        await client.close()


def _printed_parent(desired: Mapping[str, DesiredRoom], directory: Directory,
                    identities: dict[str, str]) -> tuple[str, DesiredRoom]:
    """The parent the summary offers to log in as, and their child's family room."""
    staff = {identities[s] for s in directory.staff if s in identities}
    family = next(r for r in desired.values() if r.template == "family" and len(r.members) >= 3)
    return min(m for m in family.members if m not in staff), family


def _summary(desired: Mapping[str, DesiredRoom], directory: Directory, identities: dict[str, str], url: str) -> None:
    kinds: dict[str, int] = {}
    for room in desired.values():
        kinds[room.template] = kinds.get(room.template, 0) + 1
    print("\n=== ent-bridge demo ===")
    print("Rooms: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
          + " (all but the Space end-to-end encrypted)")
    teacher = identities[next(s.id for s in directory.staff.values() if s.classes)]
    parent, family = _printed_parent(desired, directory, identities)
    print(f"Homeserver: {url}  (in Element: 'Sign in' > 'Edit' homeserver > {url})")
    print(f"A teacher:  {teacher}   password {PASSWORD}")
    print(f"A parent:   {parent}   password {PASSWORD}")
    print(f"  {parent} sees «{family.name}» and their child's class room, with the teachers.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", type=Path, default=ROOT / ".demo")
    ap.add_argument("--exit", action="store_true", help="stop after the summary (default when not on a terminal)")
    args = ap.parse_args()
    blog.configure(level="warning")
    keep = sys.stdin.isatty() and not args.exit and not os.environ.get("CI")
    raise SystemExit(asyncio.run(demo(args.workdir, keep_running=keep)))


if __name__ == "__main__":
    main()
