"""The Docker files, checked without a Docker daemon: the compose file parses, every path it
mounts or builds from exists in the repository, the commands it runs are the CLI's, and the
image runs as a non-root user with a health check on the liveness endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridge.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def test_compose_file_parses_and_names_what_exists() -> None:
    compose = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    bridge = compose["services"]["ent-bridge"]
    assert (DOCKER / bridge["build"]["context"] / bridge["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source not in ("./synapse", "./config", "./config/registration.yaml",
                                                          "./annuaire"):  # made by the admin at first run
                assert (DOCKER / source).exists(), source
    assert (DOCKER / "initdb").is_dir()
    header = (DOCKER / "docker-compose.yml").read_text().split("services:", 1)[0]
    for variable in ("POSTGRES_PASSWORD", "ENT_BRIDGE_DB_PASSWORD"):
        assert variable in header and variable in str(compose)
    # The init service runs a command the CLI has; everything waits for it.
    known = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert compose["services"]["init"]["entrypoint"][1] in known
    for name in ("synapse", "ent-bridge"):
        assert compose["services"][name]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "docker compose up -d" in header and "SERVER_NAME" in header


def test_the_image_runs_as_a_user_and_checks_liveness() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "USER entbridge" in text and "/_matrix/mau/live" in text and "HEALTHCHECK" in text
    for dockerfile in ("Dockerfile", "Dockerfile.synapse"):
        for line in (DOCKER / dockerfile).read_text().splitlines():
            if line.startswith("COPY ") and "--from" not in line:
                for source in line.split()[1:-1]:
                    assert (ROOT / source).exists(), source


def test_docker_init_writes_every_first_time_file_once(tmp_path: Path, monkeypatch: Any) -> None:
    from bridge.cli import main
    from bridge.config import load_config
    from bridge.doctor import homeserver_findings

    monkeypatch.setenv("POSTGRES_PASSWORD", "pg-secret")
    assert main(["docker-init", "--server-name", "ent.example.fr", "--out", str(tmp_path)]) == 0
    config = load_config(tmp_path / "config" / "config.yaml", env={})
    assert config.homeserver.url == "http://synapse:8008" and config.homeserver.server_name == "ent.example.fr"
    assert config.directory_sources == ("/annuaire",) and str(config.access_snapshot) == "/data/access.sqlite"
    registration = yaml.safe_load((tmp_path / "config" / "registration.yaml").read_text())
    assert registration["as_token"] == config.appservice.as_token and registration["url"] == "http://ent-bridge:29340"
    homeserver = yaml.safe_load((tmp_path / "synapse" / "homeserver.yaml").read_text())
    assert homeserver_findings(homeserver) == []  # the school settings and the module, as doctor wants them
    assert homeserver["database"]["args"]["password"] == "pg-secret"
    module = homeserver["modules"][0]["config"]
    assert config.bot_user_id in module["bridge_users"] and module["snapshot"] == "/ent-bridge/access.sqlite"
    key = (tmp_path / "synapse" / "signing.key").read_text().split()
    assert key[0] == "ed25519" and key[1].startswith("a_") and len(key[2]) == 43
    before = (tmp_path / "config" / "config.yaml").read_text()
    assert main(["docker-init", "--server-name", "other.fr", "--out", str(tmp_path)]) == 0  # a second run keeps all
    assert (tmp_path / "config" / "config.yaml").read_text() == before


def test_synapse_image_holds_what_the_access_module_imports() -> None:
    """The Synapse image installs the bridge without its dependencies: whatever the module
    imports beyond the standard library is Synapse's own or installed by Dockerfile.synapse, and
    nothing of the bridge's runtime (nio, aiohttp, asyncpg, structlog) is imported at all."""
    import re
    import subprocess
    import sys
    from importlib import metadata

    probe = ("import sys, bridge.access.synapse_module; "  # packages on disk (not Cython's runtime module)
             "print(' '.join(sorted({n.split('.')[0] for n, m in list(sys.modules.items()) "
             "if getattr(m, '__file__', None)} - set(sys.stdlib_module_names))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    imported = {m for m in out if not m.startswith("_") and m != "bridge"}
    assert not imported & {"nio", "aiohttp", "asyncpg", "structlog"}
    by_module = metadata.packages_distributions()

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    def with_requirements(dists: set[str]) -> set[str]:
        """The distributions and everything they require, all the way down (extras left out)."""
        todo, seen = list(dists), set(dists)
        while todo:
            try:
                requirements = metadata.requires(todo.pop()) or []
            except metadata.PackageNotFoundError:  # a requirement for other Pythons (a marker)
                continue
            for r in requirements:
                name = canonical(re.split(r"[ ;<>=!\[~(]", r, maxsplit=1)[0])
                if "extra ==" not in r and name not in seen:
                    seen.add(name)
                    todo.append(name)
        return seen

    text = (DOCKER / "Dockerfile.synapse").read_text()
    installed = {canonical(m) for m in re.findall(r'"([A-Za-z0-9_.-]+)[<>=]', text)}
    assert installed, "Dockerfile.synapse installs the module's text reading"
    image = with_requirements({"matrix-synapse"} | installed)
    for module in sorted(imported):
        dists = {canonical(d) for d in by_module.get(module, [module])}
        assert dists & image, f"{module} ({dists}): not in the Synapse image"
