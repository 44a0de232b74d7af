"""A throw-away local Synapse on loopback, for the tests and `make demo` (never for production)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bridge.synapse_settings import school_settings


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Linux: the homeserver gets SIGTERM if the process that started it dies (a test run killed
    by a timeout must not leave Synapse servers behind)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _relaxed(per_second: float = 1000, burst: int = 10000) -> dict[str, Any]:
    return {"per_second": per_second, "burst_count": burst}


@dataclass
class LocalSynapse:
    """Owns one Synapse process; `stop()` ends it by its PID."""

    workdir: Path
    server_name: str = "ent.test"
    port: int = field(default_factory=free_port)
    registrations: list[Path] = field(default_factory=list)
    postgres_dsn: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # more homeserver.yaml settings (e.g. `modules:`)
    process: subprocess.Popen[bytes] | None = None
    shared_secret: str = field(default_factory=lambda: os.urandom(16).hex())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        from signedjson.key import generate_signing_key, write_signing_keys

        self.workdir.mkdir(parents=True, exist_ok=True)
        key_path = self.workdir / "signing.key"
        if not key_path.exists():
            with key_path.open("w") as fh:
                write_signing_keys(fh, [generate_signing_key("a_1")])
        log_config = self.workdir / "log.yaml"
        log_config.write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "f",
                                  "filename": str(self.workdir / "homeserver.log")}},
            "root": {"level": "WARNING", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))
        if self.postgres_dsn:
            database: dict[str, Any] = {"name": "psycopg2", "allow_unsafe_locale": True,
                                        "args": {**self.postgres_dsn, "cp_min": 1, "cp_max": 5}}
        else:
            database = {"name": "sqlite3", "args": {"database": str(self.workdir / "homeserver.db")}}
        config = {
            "server_name": self.server_name,
            "public_baseurl": self.url + "/",
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http",
                           "tls": False, "x_forwarded": False,
                           "resources": [{"names": ["client"], "compress": False}]}],
            "database": database,
            "log_config": str(log_config),
            "media_store_path": str(self.workdir / "media"),
            "signing_key_path": str(key_path),
            "registration_shared_secret": self.shared_secret,
            "macaroon_secret_key": "m" + self.shared_secret,
            "form_secret": "f" + self.shared_secret,
            "report_stats": False,
            "trusted_key_servers": [],
            "bcrypt_rounds": 4,
            "suppress_key_server_warning": True,
            "app_service_config_files": [str(p) for p in self.registrations],
            "rc_message": _relaxed(),
            "rc_registration": _relaxed(),
            "rc_login": {"address": _relaxed(), "account": _relaxed(), "failed_attempts": _relaxed()},
            "rc_joins": {"local": _relaxed(), "remote": _relaxed()},
            "rc_joins_per_room": _relaxed(),
            "rc_invites": {"per_room": _relaxed(), "per_user": _relaxed(), "per_issuer": _relaxed()},
            "rc_admin_redaction": _relaxed(),
            "rc_3pid_validation": _relaxed(),
            "rc_key_requests": _relaxed(),
            "rc_room_creation": _relaxed(),
            "rc_presence": {"per_user": _relaxed()},
            "rc_delayed_event_mgmt": _relaxed(),
            "rc_reports": _relaxed(),
            **school_settings(),
            "enable_metrics": False,
            # A fresh database queues ~60 background updates, run one a second by default; they
            # include the user directory's rebuild, which drops whoever registers meanwhile.
            "background_updates": {"sleep_enabled": False},
            **self.extra,
        }
        path = self.workdir / "homeserver.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self, *, timeout: float = 60.0) -> None:
        config = self.write_config()
        log = (self.workdir / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config)],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}; see {self.workdir}/stdout.log"
                                   f" and homeserver.log")
            try:
                with urllib.request.urlopen(self.url + "/_matrix/client/versions", timeout=1):
                    pass
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
                continue
            if not self.background_updates():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not answer and finish its background updates within {timeout}s")

    def background_updates(self) -> int:
        """How many of Synapse's background updates are still to run. Handing over a fresh
        Synapse before they end loses users: the user directory's rebuild (one of them) lists the
        users when it starts, empties the directory later and puts back only those it listed."""
        query = "SELECT count(*) FROM background_updates"
        if self.postgres_dsn:
            import psycopg2  # type: ignore[import-untyped]  # Synapse's own driver, always beside it

            args = {k: v for k, v in self.postgres_dsn.items() if not k.startswith("cp_")}
            with psycopg2.connect(**args) as pg, pg.cursor() as cur:
                cur.execute(query)
                row = cur.fetchone()
            pg.close()
        else:
            with sqlite3.connect(self.workdir / "homeserver.db", timeout=30) as db:
                row = db.execute(query).fetchone()
            db.close()
        return int(row[0]) if row else 0

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.kill(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def _post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if body is not None else "GET",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def ensure_user(self, username: str, password: str) -> bool:
        """Create the user unless it exists; True when it was created now."""
        try:
            self.register_user(username, password)
        except urllib.error.HTTPError as exc:
            if json.loads(exc.read() or b"{}").get("errcode") != "M_USER_IN_USE":
                raise
            return False
        return True

    def register_user(self, username: str, password: str, *, admin: bool = False) -> dict[str, Any]:
        """Create a user with the shared secret (Synapse's admin registration API)."""
        nonce = self._post("/_synapse/admin/v1/register")["nonce"]
        mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), username.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        return dict(self._post("/_synapse/admin/v1/register", {
            "nonce": nonce, "username": username, "password": password, "admin": admin,
            "mac": mac.hexdigest()}))
