"""`ent-bridge doctor`: risky homeserver settings and the bridge's secret files at rest."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.devserver import LocalSynapse
from bridge.doctor import homeserver_findings
from bridge.store.sqlite import SqliteStore
from bridge.synapse_settings import access_module


def _homeserver_yaml(tmp_path: Path, *, module: bool, registration: bool = True) -> Path:
    reg = tmp_path / "registration.yaml" if registration else None
    extra = {"modules": [access_module(tmp_path / "access.sqlite", ["@ent-bridge_bot:ent.test"], registration=reg)]
             } if module else {}
    return LocalSynapse(workdir=tmp_path / "synapse", extra=extra).write_config()


def test_the_tests_and_demo_synapse_pass_with_the_module(tmp_path: Path) -> None:
    good = yaml.safe_load(_homeserver_yaml(tmp_path, module=True).read_text())
    assert homeserver_findings(good) == []
    bare = yaml.safe_load(_homeserver_yaml(tmp_path, module=False).read_text())
    assert [f.key for f in homeserver_findings(bare)] == ["modules"]
    unaudited = yaml.safe_load(_homeserver_yaml(tmp_path, module=True, registration=False).read_text())
    assert [f.key for f in homeserver_findings(unaudited)] == ["modules.config.registration"]


def test_synapse_defaults_are_reported_one_by_one() -> None:
    keys = {f.key for f in homeserver_findings({"server_name": "ent.test"})}
    assert keys == {"modules", "require_auth_for_profile_requests", "limit_profile_requests_to_users_who_share_rooms",
                    "include_profile_data_on_invite", "federation_domain_whitelist", "retention.enabled",
                    "media_retention.local_media_lifetime", "presence.enabled"}
    risky = {"user_directory": {"search_all_users": True}, "enable_registration": True,
             "room_list_publication_rules": [{"action": "allow"}], "redaction_retention_period": None,
             "url_preview_enabled": True, "allow_guest_access": True, "allow_public_rooms_without_auth": True,
             "media_retention": {"local_media_lifetime": "5y"}}
    found = {f.key for f in homeserver_findings(risky)}
    assert {"user_directory.search_all_users", "enable_registration", "room_list_publication_rules",
            "redaction_retention_period", "url_preview_enabled", "allow_guest_access",
            "allow_public_rooms_without_auth", "media_retention.local_media_lifetime"} <= found


def test_doctor_command_exit_codes_and_secret_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, reg = tmp_path / "conf" / "config.yaml", tmp_path / "conf" / "registration.yaml"
    assert main(["-c", str(config), "generate-registration", "-o", str(reg)]) == 0
    assert oct(config.stat().st_mode & 0o777) == "0o600" and oct(reg.stat().st_mode & 0o777) == "0o600"
    data = yaml.safe_load(config.read_text())
    data["database"]["url"] = f"sqlite:///{tmp_path / 'data' / 'bridge.db'}"
    data["bot"]["store_dir"] = str(tmp_path / "data" / "nio")
    config.write_text(yaml.safe_dump(data))
    old = os.umask(0o022)  # a library caller's usual umask: the store must still be private
    try:
        store = SqliteStore(str(tmp_path / "data" / "bridge.db"))
        asyncio.run(store.open())
        asyncio.run(store.close())
    finally:
        os.umask(old)
    assert oct((tmp_path / "data" / "bridge.db").stat().st_mode & 0o777) == "0o600"
    hs = _homeserver_yaml(tmp_path, module=True)
    hs_data = yaml.safe_load(hs.read_text())
    hs_data["app_service_config_files"] = [str(reg)]
    hs.write_text(yaml.safe_dump(hs_data))
    capsys.readouterr()
    assert main(["-c", str(config), "doctor", str(hs)]) == 0, capsys.readouterr().out
    assert "no risky setting" in capsys.readouterr().out
    (tmp_path / "data" / "bridge.db").chmod(0o644)
    reg.chmod(0o640)
    assert main(["-c", str(config), "doctor", str(hs)]) == 1
    out = capsys.readouterr().out
    assert "chmod 600 " + str(tmp_path / "data" / "bridge.db") in out and "chmod 600 " + str(reg) in out
    assert "2 finding(s)" in out
    hs_data["user_directory"] = {"search_all_users": True}
    hs.write_text(yaml.safe_dump(hs_data))
    (tmp_path / "data" / "bridge.db").chmod(0o600)
    reg.chmod(0o600)
    assert main(["-c", str(config), "doctor", str(hs)]) == 1
    assert "search_all_users: false" in capsys.readouterr().out
