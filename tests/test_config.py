"""Config loading: errors name file and key; placeholders refused; env overrides; registration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bridge.cli import main
from bridge.config import load_config
from bridge.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _example(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text((ROOT / "config" / "example.yaml").read_text())
    return path


def test_example_refuses_placeholder_secrets(tmp_path: Path) -> None:
    path = _example(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.file == str(path)
    assert err.value.key == "appservice.as_token"
    assert "placeholder" in str(err.value)


def test_secrets_from_environment(tmp_path: Path) -> None:
    path = _example(tmp_path)
    env = {"ENT_BRIDGE_AS_TOKEN": "a" * 20, "ENT_BRIDGE_HS_TOKEN": "b" * 20,
           "ENT_BRIDGE_STORE_KEY": "c" * 20, "ENT_BRIDGE_ROOM_KEY_SECRET": "d" * 20,
           "ENT_BRIDGE_AUDIT_KEY": "e" * 20}
    config = load_config(path, env=env)
    assert config.appservice.as_token == "a" * 20
    assert config.bot_user_id == "@ent-bridge_bot:ent.example.fr"
    assert config.database_url.startswith("sqlite:///") and config.database_url.endswith("data/ent-bridge.db")


def test_wrong_type_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    data["appservice"]["port"] = "eighty"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"c\.yaml:appservice\.port: must be int"):
        load_config(path, env={})


def test_bot_must_not_be_the_sender(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    data["appservice"].update(as_token="x" * 20, hs_token="y" * 20, sender_localpart="ent-bridge_bot")
    data["bot"]["store_key"] = "z" * 20
    data["rooms"]["key_secret"] = "w" * 20
    data["audit"]["key"] = "v" * 20
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="bot.localpart"):
        load_config(path, env={})


def test_broken_yaml_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("homeserver:\n  url: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml:\d+: invalid YAML.*\(column \d+\)"):
        load_config(path, env={})


def test_generate_registration_fills_secrets_and_keeps_comments(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    reg = tmp_path / "registration.yaml"
    assert main(["-c", str(config), "generate-registration", "-o", str(reg)]) == 0
    loaded = load_config(config, env={})
    registration = yaml.safe_load(reg.read_text())
    assert registration["as_token"] == loaded.appservice.as_token
    assert registration["hs_token"] == loaded.appservice.hs_token
    assert registration["io.element.msc4190"] is True
    assert registration["rate_limited"] is False
    assert registration["namespaces"]["users"][0]["exclusive"] is True
    assert "# Where the bridge reaches Synapse" in config.read_text()


def test_unknown_keys_are_refused_with_line_and_closest_key(tmp_path: Path) -> None:
    path = _example(tmp_path)
    text = path.read_text().replace("  max_removals: 200", "  max_removal: 200")
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith("  max_removal:"))
    assert (err.value.key, err.value.line) == ("rooms.max_removal", line)
    assert "did you mean 'max_removals'" in str(err.value) and f"{path}:{line}:" in str(err.value)
    path.write_text(text.replace("  max_removal: 200", "  max_removals: 200") + "\nlogings:\n  level: info\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert err.value.key == "logings" and "did you mean 'logging'" in str(err.value)


def test_loaded_config_keeps_no_raw_copy_of_secrets(tmp_path: Path) -> None:
    import dataclasses

    path = _example(tmp_path)
    env = {"ENT_BRIDGE_AS_TOKEN": "a" * 20, "ENT_BRIDGE_HS_TOKEN": "b" * 20, "ENT_BRIDGE_STORE_KEY": "c" * 20,
           "ENT_BRIDGE_ROOM_KEY_SECRET": "d" * 20, "ENT_BRIDGE_AUDIT_KEY": "e" * 20}
    config = load_config(path, env=env)
    assert "extra" not in {f.name for f in dataclasses.fields(config)}
    # Defaults are written once, on the dataclasses: the file's omissions take them.
    from bridge.config import RoomsConfig
    from bridge.reconcile.guards import Limits

    assert config.rooms.max_removals == RoomsConfig.max_removals == Limits.max_removals
