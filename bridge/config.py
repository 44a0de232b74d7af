"""Load and validate the bridge's YAML configuration; errors name the file and the key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.config_reader import ConfigReader, apply_env, check_keys
from bridge.errors import ConfigError, InputError
from bridge.reconcile.guards import Limits
from bridge.yamlutil import clean, load_with_lines


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
    keyless_localpart: str = ""  # the loader defaults it to the namespace prefix + "keyless"
    keyless_display_name: str = "ENT (sans accès aux messages)"
    avatar: Path | None = None  # the bot's avatar (PNG or JPEG); a drawn one by default


@dataclass(frozen=True)
class RoomsConfig:
    key_secret: str
    language: str = "fr"
    concurrency: int = 8
    max_removal_share: float = Limits.max_removal_share
    max_removals: int = Limits.max_removals
    max_directory_shrink: float = Limits.max_directory_shrink
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
    # Who makes accounts: Synapse's admin API, or the Matrix Authentication Service (next-gen auth);
    # auto: MAS when the homeserver's auth metadata names an issuer.
    backend: str = "synapse"
    mas_url: str | None = None  # MAS's base URL (auto: the issuer the homeserver names)
    mas_client_id: str | None = None  # an OAuth2 client allowed the client-credentials grant, scope urn:mas:admin
    mas_client_secret: str | None = None


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
    school_names: Mapping[str, str] = field(default_factory=dict)  # UAI -> name (BE1D exports name none)
    academie: str | None = None
    log_level: str = "info"
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    audit_key: str = ""
    audit_retention_days: int = 365
    audit_head_file: Path | None = None  # the audit chain's newest entry, kept outside the database
    resync_minutes: float = 60.0
    watch_sources: bool = True
    sweep_hours: float = 24.0
    admin_room: str | None = None
    admins: tuple[str, ...] = ()
    # Where each applied sync publishes who may reach whom, for the Synapse module (None: nowhere).
    access_snapshot: Path | None = None

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot.localpart}:{self.homeserver.server_name}"

    @property
    def keyless_user_id(self) -> str:
        return f"@{self.bot.keyless_localpart}:{self.homeserver.server_name}"

    @property
    def sender_user_id(self) -> str:
        return f"@{self.appservice.sender_localpart}:{self.homeserver.server_name}"


# Every key the file may hold, by section: anything else is a typo, refused with the closest key.
# A section that maps one dataclass field for field takes its keys from the dataclass.
KNOWN: dict[str, frozenset[str]] = {
    "homeserver": frozenset(f.name for f in fields(HomeserverConfig)),
    "appservice": frozenset(f.name for f in fields(AppserviceConfig)),
    "bot": frozenset(f.name for f in fields(BotConfig)),
    "database": frozenset({"url"}),
    "policies": frozenset({"dir"}),
    "rooms": frozenset(f.name for f in fields(RoomsConfig)),
    "directory": frozenset({"sources", "academie", "resync_minutes", "watch", "school_names"}),
    "retention": frozenset({"sweep_hours"}),
    "audit": frozenset({"key", "retention_days", "head_file"}),
    "identity": frozenset(f.name for f in fields(IdentityConfig)),
    "admin": frozenset({"room_id", "admins"}),
    "logging": frozenset({"level"}),
    "access": frozenset({"snapshot"}),
}


def default(cls: type, name: str) -> Any:
    """A field's default, written once on its dataclass."""
    f = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    if f.default is not MISSING:
        return f.default
    raise KeyError(f"{cls.__name__}.{name} has no default")  # pragma: no cover - programming error


def _school_names(raw: dict[str, Any], file: str) -> dict[str, str]:
    if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in raw.items()):
        raise ConfigError("must map each UAI to its school's name ('0750001A: École Jules-Ferry')", file=file,
                          key="directory.school_names")
    return {k.strip().upper(): v.strip() for k, v in raw.items()}


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> Config:
    """Read, override from the environment, and validate a config file."""
    path = Path(path)
    file = str(path)
    try:
        located = load_with_lines(path)
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except InputError as exc:
        raise ConfigError(str(exc).split(": ", 1)[-1], file=file, line=exc.line) from None
    if not isinstance(located, dict):
        raise ConfigError("the file must hold a mapping at top level", file=file)
    check_keys(located, file, KNOWN)
    raw: dict[str, Any] = clean(located)
    apply_env(raw, os.environ if env is None else env)
    r = ConfigReader(raw, file)
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
    port = r.get("appservice", "port", int, default(AppserviceConfig, "port"))
    if not 0 < port < 65536:
        raise ConfigError("must be a TCP port", file=file, key="appservice.port")
    appservice = AppserviceConfig(
        id=r.get("appservice", "id", str),
        as_token=r.secret("appservice", "as_token") or "",
        hs_token=r.secret("appservice", "hs_token") or "",
        bind_address=r.get("appservice", "bind_address", str, default(AppserviceConfig, "bind_address")),
        port=port,
        sender_localpart=r.get("appservice", "sender_localpart", str, default(AppserviceConfig, "sender_localpart")),
        namespace_prefix=r.get("appservice", "namespace_prefix", str, default(AppserviceConfig, "namespace_prefix")),
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
        display_name=r.get("bot", "display_name", str, default(BotConfig, "display_name")),
        keyless_localpart=r.get("bot", "keyless_localpart", str, f"{appservice.namespace_prefix}keyless"),
        keyless_display_name=r.get("bot", "keyless_display_name", str, default(BotConfig, "keyless_display_name")),
        avatar=rel(avatar) if (avatar := r.get("bot", "avatar", str, None)) else None,
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
    language = r.get("rooms", "language", str, default(RoomsConfig, "language"))
    if language not in ("fr", "en"):
        raise ConfigError("must be fr or en", file=file, key="rooms.language")
    rooms = RoomsConfig(
        key_secret=r.secret("rooms", "key_secret") or "",
        language=language,
        concurrency=r.get("rooms", "concurrency", int, default(RoomsConfig, "concurrency")),
        max_removal_share=r.get("rooms", "max_removal_share", float, default(RoomsConfig, "max_removal_share")),
        max_removals=r.get("rooms", "max_removals", int, default(RoomsConfig, "max_removals")),
        max_directory_shrink=r.get("rooms", "max_directory_shrink", float,
                                   default(RoomsConfig, "max_directory_shrink")),
        archive_grace_days=r.get("rooms", "archive_grace_days", int, default(RoomsConfig, "archive_grace_days")),
        full_observe_hours=r.get("rooms", "full_observe_hours", float, default(RoomsConfig, "full_observe_hours")),
    )
    sources = r.get("directory", "sources", list, list(default(Config, "directory_sources")))
    if not all(isinstance(s, str) for s in sources):
        raise ConfigError("must be a list of paths", file=file, key="directory.sources")
    template = r.get("identity", "localpart_template", str, default(IdentityConfig, "localpart_template"))
    try:
        template.format(first="a", last="b", id="c")
    except (KeyError, IndexError, ValueError):
        raise ConfigError("may use only {first}, {last} and {id}", file=file,
                          key="identity.localpart_template") from None
    mapping = r.get("identity", "mapping_file", str, default(IdentityConfig, "mapping_file"))
    backend = r.get("identity", "backend", str, default(IdentityConfig, "backend"))
    if backend not in ("synapse", "mas", "auto"):
        raise ConfigError("must be synapse, mas or auto", file=file, key="identity.backend")
    identity = IdentityConfig(template, rel(mapping) if mapping else None,
                              r.get("identity", "match_email", bool, default(IdentityConfig, "match_email")),
                              r.get("identity", "provision", bool, default(IdentityConfig, "provision")),
                              r.get("identity", "sso_provider", str, default(IdentityConfig, "sso_provider")),
                              r.get("identity", "erase_after_days", int, default(IdentityConfig, "erase_after_days")),
                              backend, r.get("identity", "mas_url", str, None),
                              r.get("identity", "mas_client_id", str, None),
                              r.secret("identity", "mas_client_secret", required=False))
    if backend == "mas" and not (identity.mas_url and identity.mas_client_id and identity.mas_client_secret):
        raise ConfigError("identity.backend mas needs mas_url, mas_client_id and mas_client_secret",
                          file=file, key="identity.backend")
    ulid = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
    if backend == "mas" and identity.sso_provider and not ulid.fullmatch(identity.sso_provider):
        raise ConfigError("under MAS, the id (a ULID) of the upstream provider in MAS's configuration",
                          file=file, key="identity.sso_provider")
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
        academie=r.get("directory", "academie", str, default(Config, "academie")),
        school_names=_school_names(r.get("directory", "school_names", dict, {}), file),
        resync_minutes=r.get("directory", "resync_minutes", float, default(Config, "resync_minutes")),
        audit_key=r.secret("audit", "key") or "",
        audit_retention_days=r.get("audit", "retention_days", int, default(Config, "audit_retention_days")),
        audit_head_file=rel(r.get("audit", "head_file", str, str(bot.store_dir.parent / "audit-head"))),
        sweep_hours=r.get("retention", "sweep_hours", float, default(Config, "sweep_hours")),
        admin_room=r.get("admin", "room_id", str, default(Config, "admin_room")),
        admins=tuple(r.get("admin", "admins", list, list(default(Config, "admins")))),
        watch_sources=r.get("directory", "watch", bool, default(Config, "watch_sources")),
        log_level=r.get("logging", "level", str, default(Config, "log_level")),
        access_snapshot=rel(r.get("access", "snapshot", str, str(bot.store_dir.parent / "access.sqlite"))),
    )
