"""The policies in force: one validated, pinned value that syncs, sweeps and moderation share."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

import pytest

from bridge.app import Bridge
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.matrix.fake import FakeHomeserver
from bridge.policy import holder as holder_module
from bridge.policy.holder import PolicyHolder
from tests.conftest import ROOT, unique_school, write_bridge_files, write_school


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", path)
    return path


def test_a_reload_pins_a_validated_copy(folder: Path, tmp_path: Path) -> None:
    holder = PolicyHolder(folder, pins=tmp_path / "pins")
    assert holder.reload() is None
    first = holder.current
    assert first.folder.parent == tmp_path / "pins" and "class" in first.templates
    # An edit the reload has not accepted yet is not what anyone reads.
    (folder / "rooms.yaml").write_text((folder / "rooms.yaml").read_text().replace("180d", "90d"))
    assert "180d" in (first.folder / "rooms.yaml").read_text()
    assert holder.reload() is None and holder.current.digest != first.digest
    assert holder.current.templates["family"].retention_ms == 90 * 86_400_000
    assert first.folder.exists()  # the previous copy stays: a sync may still be reading it


def test_a_broken_edit_keeps_the_value_in_force(folder: Path, tmp_path: Path) -> None:
    holder = PolicyHolder(folder, pins=tmp_path / "pins")
    assert holder.reload() is None
    before = holder.current
    (folder / "moderation.yaml").write_text("profiles:\n  default:\n    protections:\n      banned_words:\n"
                                            "        words: [connard, [a, b]]\n")
    error = holder.reload()
    assert error is not None and "moderation.yaml" in error
    assert holder.current is before and before.folder.exists()
    assert sorted(p.name for p in (tmp_path / "pins").iterdir()) == [before.digest]  # the refused copy is gone


def test_old_copies_are_pruned_and_huge_folders_refused(folder: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    holder = PolicyHolder(folder, pins=tmp_path / "pins")
    for days in (100, 200, 300):
        (folder / "rooms.yaml").write_text((ROOT / "policies" / "rooms.yaml").read_text().replace("180d", f"{days}d"))
        assert holder.reload() is None
    assert len(list((tmp_path / "pins").iterdir())) == 2  # in force, and the one before
    monkeypatch.setattr(holder_module, "MAX_FOLDER_BYTES", 1000)
    error = holder.reload()
    assert error is not None and "more than 1000 bytes" in error


async def test_the_running_bridge_syncs_and_moderates_by_the_value_in_force(folder: Path, tmp_path: Path) -> None:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=free_port())
    src = write_school(tmp_path, unique_school(tmp_path))
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 directory_sources=(str(src),), watch_sources=False, policies_dir=folder,
                                 bot=dataclasses.replace(load_config(config_path).bot, store_dir=tmp_path / "d" / "nio"))
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    bridge = await Bridge.create(config, with_bot=False, transport=fake)
    try:
        in_force = bridge.ops.policies.current
        assert in_force.folder.parent == tmp_path / "d" / "policies-in-force"
        # A broken edit: refused, and the next sync still plans by the value in force.
        (folder / "rooms.yaml").write_text("templates:\n  class: {scope: nowhere}\n")
        assert await bridge.ops.reload_policies() is not None
        assert bridge.ops.policies.current is in_force
        outcome = await bridge.ops.sync(apply=False)
        assert outcome.summary.get("create_room", 0) > 0 and not outcome.refused
        assert bridge.ops._config().policies_dir == in_force.folder
    finally:
        await asyncio.sleep(0)
        await bridge.api.close()
        await bridge.store.close()


async def test_a_reload_holds_names_and_topics_to_the_new_rules_before_any_sync(folder: Path, tmp_path: Path) -> None:
    from bridge.access.shown import global_name_refused, restore
    from bridge.access.snapshot import AccessSnapshot

    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=free_port())
    src = write_school(tmp_path, unique_school(tmp_path))
    snapshot = tmp_path / "access" / "access.sqlite"
    config = dataclasses.replace(load_config(config_path), database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 directory_sources=(str(src),), watch_sources=False, policies_dir=folder,
                                 access_snapshot=snapshot,
                                 bot=dataclasses.replace(load_config(config_path).bot, store_dir=tmp_path / "d" / "nio"))
    fake = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                          sender=config.appservice.sender_localpart)
    bridge = await Bridge.create(config, with_bot=False, transport=fake)

    def refused(name: str) -> bool:
        read = AccessSnapshot(snapshot)
        assert read.refresh()
        return global_name_refused([restore(read.shown["class"])], name)

    def rows() -> tuple[int, int, int]:
        import sqlite3

        db = sqlite3.connect(snapshot)
        try:
            return tuple(db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                         for t in ("link", "member", "room_id"))
        finally:
            db.close()

    try:
        await bridge.ops.resync()
        assert snapshot.exists() and not refused("Monsieur Zorglub")
        synced = rows()
        assert synced[0] > 0 and synced[1] > 0
        words = folder / "banned-words-fr.txt"
        words.write_text(words.read_text() + "zorglub\n")
        assert not refused("Monsieur Zorglub")  # an edit not yet accepted is not in force
        assert await bridge.ops.reload_policies() is None
        assert refused("Monsieur Zorglub") and not refused("Anne Martin")
        assert rows() == synced  # the relations and rooms are the sync's, untouched
        assert not list(snapshot.parent.glob(".*.tmp"))
    finally:
        await asyncio.sleep(0)
        await bridge.api.close()
        await bridge.store.close()
