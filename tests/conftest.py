"""Shared fixtures: a real Synapse on loopback with the appservice registered, bridges, humans."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import pytest_asyncio
import yaml

from bridge.config import Config, load_config
from bridge.devserver import LocalSynapse, free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT.parent / "shared" / "ent-samples"
SERVER_NAME = "ent.test"


def samples_dir(name: str) -> Path:
    path = SAMPLES / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent")
    return path


# Each test that uses the homeserver gets an appservice registration of its own (its own
# namespace, tokens and port): Synapse sends a registration only the events of rooms where its
# namespace's users are, so no event of an earlier test reaches a later test's bridge.
NAMESPACES = 96


@dataclasses.dataclass
class Homeserver:
    synapse: LocalSynapse
    slots: list[Path]  # one config file per namespace
    workdir: Path
    used: int = 0

    @property
    def url(self) -> str:
        return self.synapse.url

    @property
    def config_path(self) -> Path:
        """The current test's config file (its namespace)."""
        return self.slots[self.used - 1] if self.used else self.slots[0]

    def fresh_namespace(self) -> None:
        if self.used >= len(self.slots):
            raise RuntimeError(f"more than {len(self.slots)} homeserver tests: raise NAMESPACES in conftest.py")
        self.used += 1

    def spare_namespace(self) -> Config:
        """A namespace no test will use (taken from the end of the pool), for a test that needs a
        second, unrelated appservice on the same homeserver."""
        if len(self.slots) <= self.used + 1:
            raise RuntimeError("no spare namespace left: raise NAMESPACES in conftest.py")
        return load_config(self.slots.pop())

    def config(self, data_dir: Path) -> Config:
        """A config for one bridge instance with its own data folder (store, nio store)."""
        base = load_config(self.config_path)
        return dataclasses.replace(
            base,
            database_url=f"sqlite:///{data_dir / 'bridge.db'}",
            bot=dataclasses.replace(base.bot, store_dir=data_dir / "nio"),
            audit_head_file=data_dir / "audit-head",
        )


def with_people(config: Config, tmp_path: Path, people: dict[str, str], **changes: Any) -> Config:
    """The config with these directory people mapped to these (test) Matrix accounts, through an
    identity mapping file, and other changes."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(people))
    return dataclasses.replace(config, identity=dataclasses.replace(config.identity, mapping_file=mapping), **changes)


def config_file(homeserver: Homeserver, data_dir: Path) -> Path:
    """The test's config on disk, pointed at one test's data folder (for subprocesses)."""
    data = yaml.safe_load(homeserver.config_path.read_text())
    data["database"]["url"] = f"sqlite:///{data_dir / 'bridge.db'}"
    data["bot"]["store_dir"] = str(data_dir / "nio")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir.parent / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_bridge_files(workdir: Path, *, hs_url: str, bridge_port: int, namespace: str = "ent-bridge"
                       ) -> tuple[Path, Path]:
    """Config + registration made exactly as an admin would: the example config, edited, then
    `generate-registration` (so Synapse accepting it is tested by every integration test)."""
    from bridge.registration import write_registration

    data = yaml.safe_load((ROOT / "config" / "example.yaml").read_text())
    data["homeserver"].update(url=hs_url, server_name=SERVER_NAME)
    data["appservice"].update(port=bridge_port, id=namespace, sender_localpart=namespace,
                              namespace_prefix=f"{namespace}_")
    data["bot"].update(localpart=f"{namespace}_bot", keyless_localpart=f"{namespace}_keyless")
    data["policies"]["dir"] = str(ROOT / "policies")
    data["bot"]["store_dir"] = str(workdir / "data" / "nio")  # this bridge's own data folder
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(data))
    reg_path = workdir / "registration.yaml"
    write_registration(config_path=config_path, out_path=reg_path, url=f"http://127.0.0.1:{bridge_port}")
    return config_path, reg_path


@pytest.fixture(scope="session")
def homeserver() -> Iterator[Homeserver]:
    workdir = Path(tempfile.mkdtemp(prefix="ent-bridge-hs-"))
    synapse = LocalSynapse(workdir=workdir / "synapse", server_name=SERVER_NAME)
    slots = []
    for i in range(NAMESPACES):
        name = "ent-bridge" if i == 0 else f"ent{i}-bridge"
        config_path, reg_path = write_bridge_files(workdir / f"ns{i}", hs_url=synapse.url, bridge_port=free_port(),
                                                   namespace=name)
        synapse.registrations.append(reg_path)
        slots.append(config_path)
    synapse.start()
    try:
        yield Homeserver(synapse, slots, workdir)
    finally:
        synapse.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _own_namespace(request: pytest.FixtureRequest) -> None:
    """A test that uses the homeserver gets a namespace nobody used before."""
    if "homeserver" in request.fixturenames:
        request.getfixturevalue("homeserver").fresh_namespace()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest_asyncio.fixture
async def bridge_factory(homeserver: Homeserver, data_dir: Path) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Start bridges on the registered port; each started one is stopped at the end."""
    from bridge.app import Bridge

    started: list[Bridge] = []

    async def make(*, with_bot: bool = True, start: bool = True) -> Bridge:
        bridge = await Bridge.create(homeserver.config(data_dir), with_bot=with_bot)
        if start:
            await bridge.start()
            started.append(bridge)
        return bridge

    yield make
    for bridge in started:
        if bridge.runner is not None:
            await bridge.stop()


@pytest_asyncio.fixture
async def humans(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[Callable[[str], Awaitable[Any]]]:
    """Log in people (teachers, parents) as E2EE matrix-nio clients."""
    from nio import AsyncClient, AsyncClientConfig, LoginResponse

    clients: list[AsyncClient] = []

    async def make(name: str) -> AsyncClient:
        username = f"{name}_{secrets.token_hex(3)}"
        password = secrets.token_urlsafe(12)
        homeserver.synapse.register_user(username, password)
        store = tmp_path / f"nio-{username}"
        store.mkdir()
        client = AsyncClient(homeserver.url, f"@{username}:{SERVER_NAME}", store_path=str(store),
                             config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True))
        resp = await client.login(password, device_name=f"{name}-phone")
        assert isinstance(resp, LoginResponse), resp
        await client.keys_upload()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def sync_until(client: Any, predicate: Callable[[], bool], *, timeout: float = 300.0) -> None:
    """Sync a nio client until predicate() holds. `timeout` only turns a hang into a failure: it
    is far above what any step takes on a loaded machine."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached within timeout")
        await client.sync(timeout=500)
        if client.should_query_keys:
            await client.keys_query()


def postgres_dsn() -> str | None:
    return os.environ.get("ENT_BRIDGE_TEST_POSTGRES")


@contextlib.asynccontextmanager
async def postgres_database(dsn: str, prefix: str = "t") -> AsyncIterator[str]:
    """A database of its own (C collation, as Synapse wants it), dropped afterwards: its URL."""
    import asyncpg

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
        try:
            yield urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest_asyncio.fixture
async def fresh_postgres() -> AsyncIterator[str]:
    """A PostgreSQL database for one test (skipped without ENT_BRIDGE_TEST_POSTGRES)."""
    dsn = postgres_dsn()
    if not dsn:
        pytest.skip("ENT_BRIDGE_TEST_POSTGRES not set")
    async with postgres_database(dsn) as url:
        yield url


def unique_school(tmp_path: Path) -> dict[str, Any]:
    """The school.yaml fixture under a fresh UAI: the session's homeserver is shared, and room
    aliases derive from room keys, so each test gets rooms of its own."""
    data = yaml.safe_load((ROOT / "tests" / "fixtures" / "school.yaml").read_text())
    uai = f"07{secrets.randbelow(10**5):05d}{chr(65 + secrets.randbelow(26))}"
    data["schools"][0]["uai"] = uai
    return data


def write_school(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"school-{data['schools'][0]['uai']}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


async def create_encrypted_room(bridge: Any, *, name: str, invite: list[str]) -> str:
    """An invite-only, end-to-end encrypted room made by the bridge's bot (not a managed room)."""
    return str(await bridge.api.create_room(as_user=bridge.config.bot_user_id, body={
        "name": name, "preset": "private_chat", "invite": invite, "initial_state": [
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]}))


async def bot_sees(bridge: Any, room_id: str, *users: str) -> None:
    """Until the bot's client has these people as joined members of the room. A notice the bot sends
    earlier is encrypted for the members it knew: someone who joined a moment before could not
    read it. The bound only turns a hang into a failure."""
    await bridge.bot.wait_for_room(room_id)
    for _ in range(6000):
        room = bridge.bot.client.rooms.get(room_id)
        if room is not None and all(u in room.users and u not in room.invited_users for u in users):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the bot never saw {users} join {room_id}")
