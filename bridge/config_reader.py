"""Reading the configuration file: typed values with errors naming file, line and key (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from bridge.errors import ConfigError
from bridge.yamlutil import where

# Values an admin copied from the example without changing: refuse to run with them.
PLACEHOLDERS = frozenset({"", "change_me", "changeme", "CHANGE_ME", "secret", "xxx", "TODO"})

# Secrets may come from the environment instead of the file (containers, systemd credentials).
ENV_OVERRIDES: dict[str, tuple[str, str]] = {
    "ENT_BRIDGE_AS_TOKEN": ("appservice", "as_token"),
    "ENT_BRIDGE_HS_TOKEN": ("appservice", "hs_token"),
    "ENT_BRIDGE_STORE_KEY": ("bot", "store_key"),
    "ENT_BRIDGE_DATABASE_URL": ("database", "url"),
    "ENT_BRIDGE_ADMIN_TOKEN": ("homeserver", "admin_token"),
    "ENT_BRIDGE_ROOM_KEY_SECRET": ("rooms", "key_secret"),
    "ENT_BRIDGE_HOMESERVER_URL": ("homeserver", "url"),
    "ENT_BRIDGE_AUDIT_KEY": ("audit", "key"),
    "ENT_BRIDGE_MAS_CLIENT_SECRET": ("identity", "mas_client_secret"),
}



def _closest(word: str, choices: frozenset[str] | set[str]) -> str:
    near = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(sorted(choices))}"


def check_keys(raw: Mapping[str, Any], file: str, known: Mapping[str, frozenset[str]]) -> None:
    """Refuse unknown sections and keys, naming the line and the closest valid key."""
    for section, body in raw.items():
        if section.startswith("__"):
            continue
        if section not in known:
            raise ConfigError("unknown section" + _closest(section, set(known)), file=file, key=section,
                              line=where(raw, section)[0])
        if isinstance(body, Mapping):
            for key in body:
                if not key.startswith("__") and key not in known[section]:
                    raise ConfigError("unknown key" + _closest(key, known[section]), file=file,
                                      key=f"{section}.{key}", line=where(body, key)[0])


class ConfigReader:
    """Typed access to nested YAML with errors that name file and dotted key."""

    def __init__(self, data: Mapping[str, Any], file: str) -> None:
        self.data = data
        self.file = file

    def section(self, name: str, *, required: bool = True) -> Mapping[str, Any]:
        value = self.data.get(name)
        if value is None:
            if required:
                raise ConfigError("missing section", file=self.file, key=name)
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError("must be a mapping", file=self.file, key=name)
        return value

    def get(self, section: str, key: str, kind: type, default: Any = ...) -> Any:
        sect = self.section(section, required=default is ...)
        dotted = f"{section}.{key}"
        if key not in sect or sect[key] is None:
            if default is ...:
                raise ConfigError("missing key", file=self.file, key=dotted)
            return default
        value = sect[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ConfigError(f"must be {kind.__name__}, got {type(value).__name__}",
                              file=self.file, key=dotted)
        return value

    def secret(self, section: str, key: str, *, required: bool = True) -> str | None:
        value = self.get(section, key, str, default=... if required else None)
        if value is None:
            return None
        if value.strip() in PLACEHOLDERS or value.startswith("CHANGE"):
            raise ConfigError("placeholder secret: generate a real one "
                              "(ent-bridge generate-registration) or set it in the environment",
                              file=self.file, key=f"{section}.{key}")
        return str(value)


def apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                data[section] = {}
            data[section][key] = env[var]
