"""The first hour of an admin: the commands as the docs write them, and one-line errors that say
what to check, never a traceback or a minute of silent retries."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bridge.appservice.server import AppserviceServer
from bridge.cli import main
from bridge.config import load_config
from bridge.devserver import free_port
from bridge.directory.importers.be1d import decode
from bridge.errors import BridgeError, StoreError
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.policy.folder import check_folder
from bridge.store.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parent.parent


def test_generate_registration_takes_the_config_option_after_the_command_too(tmp_path: Path) -> None:
    config, reg = tmp_path / "etc" / "config.yaml", tmp_path / "etc" / "registration.yaml"
    assert main(["generate-registration", "-c", str(config), "-o", str(reg)]) == 0  # as the docs write it
    loaded = load_config(config)
    # A config made outside a checkout uses the policies shipped in the package.
    assert loaded.policies_dir.is_dir() and check_folder(loaded.policies_dir)[0]
    assert yaml.safe_load(reg.read_text())["as_token"] == loaded.appservice.as_token


def test_the_package_carries_the_example_and_the_policies() -> None:
    """What `pip install .` ships (pyproject's package-data) holds the example and every policy file."""
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bridge"]
    shipped = {p for pattern in patterns for p in (ROOT / "bridge").glob(pattern)}
    needed = {ROOT / "bridge" / "resources" / "example.yaml"} | {
        p for p in (ROOT / "bridge" / "resources" / "policies").rglob("*") if p.is_file()}
    assert needed <= shipped, needed - shipped
    assert (ROOT / "config" / "example.yaml").resolve() == ROOT / "bridge" / "resources" / "example.yaml"


async def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    port = free_port()
    first = await AppserviceServer(hs_token="h" * 32, store=store).start(host="127.0.0.1", port=port)
    try:
        with pytest.raises(BridgeError, match=f"can't listen on 127.0.0.1:{port}.*appservice.port"):
            await AppserviceServer(hs_token="h" * 32, store=store).start(host="127.0.0.1", port=port)
    finally:
        await first.cleanup()
        await store.close()


async def test_an_unreachable_homeserver_is_said_at_once() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api = AppserviceAPI(base_url=url, as_token="t")
    try:
        with pytest.raises(BridgeError, match=f"homeserver at {url} does not answer.*homeserver.url"):
            await asyncio.wait_for(api.check_reachable(url), timeout=60)  # a hang guard, not a deadline
    finally:
        await api.close()


def test_run_against_an_unreachable_homeserver_exits_with_one_line(tmp_path: Path) -> None:
    config, reg = tmp_path / "config.yaml", tmp_path / "registration.yaml"
    assert main(["-c", str(config), "generate-registration", "-o", str(reg)]) == 0
    data = yaml.safe_load(config.read_text())
    data["homeserver"]["url"] = f"http://127.0.0.1:{free_port()}"
    data["appservice"]["port"] = free_port()
    data["database"]["url"] = f"sqlite:///{tmp_path / 'b.db'}"
    data["bot"]["store_dir"] = str(tmp_path / "nio")
    config.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "bridge", "-c", str(config), "run"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "Traceback" not in run.stderr and "does not answer" in run.stderr


async def test_a_store_that_cannot_be_made_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreError, match="can't create the database"):
        await SqliteStore(str(tmp_path / "afile" / "b.db")).open()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files anyway")
async def test_a_read_only_store_is_one_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    store = SqliteStore(str(db))
    await store.open()
    await store.close()
    db.chmod(0o400)
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(StoreError, match="can't be written"):
            await SqliteStore(str(db)).open()
    finally:
        tmp_path.chmod(0o700)


def test_csv_encodings_utf16_and_a_stray_latin1_line() -> None:
    text = "NOM;PRENOM\nDupré;Léa\n"
    assert decode(text.encode("utf-16")) == text and decode(text.encode("utf-16-le")) == text
    mixed = "NOM;PRENOM\nHélène;Noé\n".encode() + "Dupré;Zoé\n".encode("iso-8859-1") + "Inès;Maël\n".encode()
    assert decode(mixed) == "NOM;PRENOM\nHélène;Noé\nDupré;Zoé\nInès;Maël\n"  # every line keeps its accents


def test_be1d_schools_get_their_real_name(tmp_path: Path) -> None:
    from bridge.directory.sources import load

    source = f"{ROOT / 'tests' / 'fixtures' / 'be1d-onde'}@0750001A"
    unnamed, _ = load([source])
    assert any(w.code == "be1d_without_name" and "directory.school_names" in w.message for w in unnamed.warnings)
    named, _ = load([source], school_names={"0750001A": "École Jules-Ferry"})
    assert named.schools["0750001A"].name == "École Jules-Ferry"
    assert not any(w.code == "be1d_without_name" for w in named.warnings)
    config, reg = tmp_path / "config.yaml", tmp_path / "registration.yaml"
    assert main(["-c", str(config), "generate-registration", "-o", str(reg)]) == 0
    data = yaml.safe_load(config.read_text())
    data["directory"]["school_names"] = {"0750001a": "École Jules-Ferry"}
    config.write_text(yaml.safe_dump(data, allow_unicode=True))
    assert load_config(config).school_names == {"0750001A": "École Jules-Ferry"}
