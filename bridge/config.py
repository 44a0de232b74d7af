"""Load and validate the bridge's YAML configuration; errors name the file and the key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from bridge.errors import ConfigError

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
}


@dataclass(frozen=True)
class HomeserverConfig:
    url: str
    server_name: str
    admin_token: str | None = None


@dataclass(frozen=True)
class AppserviceConfig:
    id: str
    as_token: str
    hs_token: str
    bind_address: str = "127.0.0.1"
    port: int = 29340
    sender_localpart: str = "ent-bridge"
    namespace_prefix: str = "ent-bridge_"


@dataclass(frozen=True)
class BotConfig:
    localpart: str
    store_dir: Path
    store_key: str
    display_name: str = "ENT"
    # Owner of the rooms whose moderation profile says `content_inspection: false`: a user of the
    # namespace that never gets a device, so no client ever shares a room key with it.
    keyless_localpart: str = "ent-bridge_keyless"
    keyless_display_name: str = "ENT (sans accès aux messages)"


@dataclass(frozen=True)
class RoomsConfig:
    key_secret: str
    language: str = "fr"
    concurrency: int = 8
    max_removal_share: float = 0.05
    max_removals: int = 200
    max_directory_shrink: float = 0.10
    archive_grace_days: int = 30
    full_observe_hours: float = 24.0  # between full reads of every room (incremental in between)


@dataclass(frozen=True)
class IdentityConfig:
    localpart_template: str = "{first}.{last}"
    mapping_file: Path | None = None
    match_email: bool = True  # needs homeserver.admin_token
    provision: bool = False  # create missing accounts through the admin API
    sso_provider: str | None = None  # Synapse's idp id (e.g. "oidc-educonnect") for external_ids
    erase_after_days: int = 90  # leavers: the bridge's data (and accounts it created) erased then


@dataclass(frozen=True)
class Config:
    path: Path
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    bot: BotConfig
    database_url: str
    policies_dir: Path
    rooms: RoomsConfig
    directory_sources: tuple[str, ...] = ()
    academie: str | None = None
    log_level: str = "info"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    audit_key: str = ""
    audit_retention_days: int = 365
    resync_minutes: float = 60.0
    watch_sources: bool = True
    sweep_hours: float = 24.0
    admin_room: str | None = None
    admins: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot.localpart}:{self.homeserver.server_name}"

    @property
    def keyless_user_id(self) -> str:
        return f"@{self.bot.keyless_localpart}:{self.homeserver.server_name}"

    @property
    def sender_user_id(self) -> str:
        return f"@{self.appservice.sender_localpart}:{self.homeserver.server_name}"


class _Reader:
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
        return value


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, (section, key) in ENV_OVERRIDES.items():
        if env.get(var):
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                data[section] = {}
            data[section][key] = env[var]


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate a config file."""
    path = Path(path)
    file = str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}invalid YAML ({getattr(exc, 'problem', exc)})", file=file) from None
    if not isinstance(raw, dict):
        raise ConfigError("the file must hold a mapping at top level", file=file)
    _apply_env(raw, os.environ if env is None else env)
    r = _Reader(raw, file)
    base = path.parent

    def rel(p: str) -> Path:
        candidate = Path(p)
        return candidate if candidate.is_absolute() else (base / candidate)

    url = r.get("homeserver", "url", str)
    if not url.startswith(("http://", "https://")):
        raise ConfigError("must start with http:// or https://", file=file, key="homeserver.url")
    homeserver = HomeserverConfig(
        url=url.rstrip("/"),
        server_name=r.get("homeserver", "server_name", str),
        admin_token=r.secret("homeserver", "admin_token", required=False),
    )
    port = r.get("appservice", "port", int, 29340)
    if not 0 < port < 65536:
        raise ConfigError("must be a TCP port", file=file, key="appservice.port")
    appservice = AppserviceConfig(
        id=r.get("appservice", "id", str),
        as_token=r.secret("appservice", "as_token") or "",
        hs_token=r.secret("appservice", "hs_token") or "",
        bind_address=r.get("appservice", "bind_address", str, "127.0.0.1"),
        port=port,
        sender_localpart=r.get("appservice", "sender_localpart", str, "ent-bridge"),
        namespace_prefix=r.get("appservice", "namespace_prefix", str, "ent-bridge_"),
    )
    if appservice.as_token == appservice.hs_token:
        raise ConfigError("as_token and hs_token must differ", file=file, key="appservice.hs_token")
    bot_localpart = r.get("bot", "localpart", str, f"{appservice.namespace_prefix}bot")
    if not bot_localpart.startswith(appservice.namespace_prefix):
        raise ConfigError(f"must start with the namespace prefix {appservice.namespace_prefix!r}",
                          file=file, key="bot.localpart")
    if bot_localpart == appservice.sender_localpart:
        raise ConfigError("the bot must not be the appservice sender (Synapse refuses its /sync)",
                          file=file, key="bot.localpart")
    bot = BotConfig(
        localpart=bot_localpart,
        store_dir=rel(r.get("bot", "store_dir", str, "data/nio")),
        store_key=r.secret("bot", "store_key") or "",
        display_name=r.get("bot", "display_name", str, "ENT"),
        keyless_localpart=r.get("bot", "keyless_localpart", str, f"{appservice.namespace_prefix}keyless"),
        keyless_display_name=r.get("bot", "keyless_display_name", str, "ENT (sans accès aux messages)"),
    )
    if not bot.keyless_localpart.startswith(appservice.namespace_prefix) or bot.keyless_localpart in (
            bot_localpart, appservice.sender_localpart):
        raise ConfigError(f"must start with the namespace prefix {appservice.namespace_prefix!r} and differ "
                          "from the bot and the appservice sender", file=file, key="bot.keyless_localpart")
    database_url = r.get("database", "url", str, "sqlite:///data/ent-bridge.db")
    if database_url.startswith("sqlite:///"):
        db_path = database_url[len("sqlite:///"):]
        database_url = "sqlite:///" + str(rel(db_path)) if db_path != ":memory:" else database_url
    elif not database_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("must be sqlite:///PATH or postgresql://…", file=file, key="database.url")
    language = r.get("rooms", "language", str, "fr")
    if language not in ("fr", "en"):
        raise ConfigError("must be fr or en", file=file, key="rooms.language")
    rooms = RoomsConfig(
        key_secret=r.secret("rooms", "key_secret") or "",
        language=language,
        concurrency=r.get("rooms", "concurrency", int, 8),
        max_removal_share=r.get("rooms", "max_removal_share", float, 0.05),
        max_removals=r.get("rooms", "max_removals", int, 200),
        max_directory_shrink=r.get("rooms", "max_directory_shrink", float, 0.10),
        archive_grace_days=r.get("rooms", "archive_grace_days", int, 30),
        full_observe_hours=r.get("rooms", "full_observe_hours", float, 24.0),
    )
    sources = r.get("directory", "sources", list, [])
    if not all(isinstance(s, str) for s in sources):
        raise ConfigError("must be a list of paths", file=file, key="directory.sources")
    template = r.get("identity", "localpart_template", str, "{first}.{last}")
    try:
        template.format(first="a", last="b", id="c")
    except (KeyError, IndexError, ValueError):
        raise ConfigError("may use only {first}, {last} and {id}", file=file,
                          key="identity.localpart_template") from None
    mapping = r.get("identity", "mapping_file", str, None)
    identity = IdentityConfig(template, rel(mapping) if mapping else None,
                              r.get("identity", "match_email", bool, True),
                              r.get("identity", "provision", bool, False),
                              r.get("identity", "sso_provider", str, None),
                              r.get("identity", "erase_after_days", int, 90))
    return Config(
        identity=identity,
        path=path,
        homeserver=homeserver,
        appservice=appservice,
        bot=bot,
        database_url=database_url,
        policies_dir=rel(r.get("policies", "dir", str, "../policies")),
        rooms=rooms,
        directory_sources=tuple(str(rel(s)) for s in sources),
        academie=r.get("directory", "academie", str, None),
        resync_minutes=r.get("directory", "resync_minutes", float, 60.0),
        audit_key=r.secret("audit", "key") or "",
        audit_retention_days=r.get("audit", "retention_days", int, 365),
        sweep_hours=r.get("retention", "sweep_hours", float, 24.0),
        admin_room=r.get("admin", "room_id", str, None),
        admins=tuple(r.get("admin", "admins", list, [])),
        watch_sources=r.get("directory", "watch", bool, True),
        log_level=r.get("logging", "level", str, "info"),
        extra=raw,
    )
