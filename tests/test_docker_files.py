"""The Docker files, checked without a Docker daemon: the compose file parses, every path it
mounts or builds from exists in the repository, the commands it runs are the CLI's, and the
image runs as a non-root user with a health check on the liveness endpoint."""

from __future__ import annotations

from pathlib import Path

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
    # Every ent-bridge command the header tells admins to run is one the CLI has.
    commands = {line.split("ent-bridge ", 1)[1].split()[0] for line in header.splitlines()
                if "run --rm ent-bridge " in line}
    known = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert commands and commands <= known, commands - known


def test_the_image_runs_as_a_user_and_checks_liveness() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "USER entbridge" in text and "/_matrix/mau/live" in text and "HEALTHCHECK" in text
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
