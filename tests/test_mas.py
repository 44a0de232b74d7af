"""Accounts under MAS (next-gen auth), against a fake built on the contract the bridge keeps of
MAS's admin API (tests/contracts/, read from MAS 1.22.0's published OpenAPI document): every
request the bridge sends must validate, and the whole provisioning path of a sync goes through it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_config
from bridge.devserver import free_port
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.fake import FakeHomeserver
from bridge.matrix.mas_api import MasAdmin, MasAuthError
from bridge.reconcile.actions import ProvisionAccount
from bridge.reconcile.sync import run_sync
from bridge.store import open_store
from tests.conftest import unique_school, write_bridge_files, write_school
from tests.fake_mas import CONTRACT, FakeMas

PROVIDER = "01HQ7ZV6X0K9S5E1ED0CNNECTS"  # a ULID, as MAS names its upstream providers


def _mas(fake: FakeMas, secret: str = "s3cret") -> MasAdmin:
    admin = MasAdmin(base_url="http://mas.invalid", server_name="ent.test", client_id="ent-bridge", client_secret=secret)
    admin.transport = fake
    admin.http.transport = fake
    return admin


def test_the_contract_names_the_mas_version_it_was_read_from() -> None:
    assert CONTRACT["x-mas-version"] == "1.22.0" and "spec.json" in CONTRACT["description"]
    assert set(CONTRACT["operations"]) >= {"createUser", "getUserByUsername", "deactivateUser", "addUserEmail",
                                          "listUserEmails", "addUpstreamOAuthLink"}


async def test_provision_lookup_and_deactivate_through_mas() -> None:
    fake = FakeMas(client_id="ent-bridge", client_secret="s3cret")
    mas = _mas(fake)
    assert not await mas.user_exists("@lea.martin:ent.test")
    await mas.provision("@lea.martin:ent.test", displayname="Léa Martin", email="lea@example.org",
                        sso=(PROVIDER, "AAF-123"))
    await mas.provision("@lea.martin:ent.test", displayname="Léa Martin", email="lea@example.org",
                        sso=(PROVIDER, "AAF-123"))  # again (a retried apply): nothing breaks, nothing doubles
    assert await mas.user_exists("@lea.martin:ent.test")
    (uid, user), = fake.users.items()
    assert user["username"] == "lea.martin" and fake.displaynames[uid] == "Léa Martin"
    assert [e["email"] for e in fake.emails.values()] == ["lea@example.org"]
    assert [(link["provider_id"], link["subject"], link["user_id"]) for link in fake.links.values()] == [
        (PROVIDER, "AAF-123", uid)]
    assert await mas.users_by_email(["lea@example.org", "nobody@example.org"]) == {
        "lea@example.org": "@lea.martin:ent.test"}
    await mas.deactivate("@lea.martin:ent.test", erase=True)
    assert fake.users[uid]["deactivated_at"] and fake.erased[uid] is True
    assert fake.violations == []  # every request kept to the contract
    assert sum(1 for m, p, _ in fake.requests if p == "/oauth2/token") == 1  # one token, reused
    await mas.close()


async def test_refused_credentials_say_what_to_check() -> None:
    mas = _mas(FakeMas(client_id="ent-bridge", client_secret="right"), secret="wrong")
    with pytest.raises(MasAuthError, match="mas_client_id"):
        await mas.user_exists("@x:ent.test")


async def test_a_sync_provisions_its_accounts_through_mas(tmp_path: Path) -> None:
    config_path, _ = write_bridge_files(tmp_path, hs_url="http://fake.invalid", bridge_port=free_port())
    base = load_config(config_path)
    config = dataclasses.replace(base, database_url=f"sqlite:///{tmp_path / 'b.db'}",
                                 identity=dataclasses.replace(base.identity, provision=True, sso_provider=PROVIDER,
                                                              backend="mas"))
    hs = FakeHomeserver(server_name=config.homeserver.server_name, as_token=config.appservice.as_token,
                        sender=config.appservice.sender_localpart)
    api = AppserviceAPI(as_token=config.appservice.as_token, transport=hs)
    store = await open_store(config.database_url)
    fake = FakeMas(client_id="ent-bridge", client_secret="s3cret")
    mas = _mas(fake)
    try:
        school = unique_school(tmp_path)
        result = await run_sync(config, [str(write_school(tmp_path, school))], store=store, api=api, apply=True,
                                accounts=mas)
        made = result.plan.of(ProvisionAccount)
        people = len(school["staff"]) + len(school["guardians"])
        assert len(made) == people and not result.report.failed  # type: ignore[union-attr]
        assert len(fake.users) == people and len(fake.links) == people
        assert {link["subject"] for link in fake.links.values()} == {p["id"] for p in school["staff"] + school["guardians"]}
        assert fake.violations == []
    finally:
        await store.close()
        await api.close()


def test_mas_config_is_checked(tmp_path: Path) -> None:
    import yaml

    config_path, _ = write_bridge_files(tmp_path, hs_url="http://x.invalid", bridge_port=free_port())
    data = yaml.safe_load(config_path.read_text())
    data["identity"].update(backend="mas", mas_url="http://mas:8080")
    config_path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="mas_client_id"):
        load_config(config_path, env={})
    data["identity"].update(mas_client_id="ent-bridge", sso_provider="oidc-educonnect")
    config_path.write_text(yaml.safe_dump(data))
    env = {"ENT_BRIDGE_MAS_CLIENT_SECRET": "x" * 20}
    with pytest.raises(ConfigError, match="ULID"):
        load_config(config_path, env=env)
    data["identity"]["sso_provider"] = PROVIDER
    config_path.write_text(yaml.safe_dump(data))
    loaded = load_config(config_path, env=env).identity
    assert (loaded.backend, loaded.mas_client_secret) == ("mas", "x" * 20)
    assert json.dumps(CONTRACT)  # the contract file parses


async def test_auto_picks_mas_when_the_homeserver_names_an_issuer(tmp_path: Path) -> None:
    """identity.backend auto: a homeserver whose auth metadata (MSC2965) names an issuer delegates
    its accounts to MAS; one that doesn't keeps Synapse's admin API."""
    from aiohttp import web

    from bridge.matrix.accounts import account_admin
    from bridge.matrix.admin_api import SynapseAdmin

    async def metadata(_: web.Request) -> web.Response:
        return web.json_response({"issuer": "https://auth.ent.test/", "token_endpoint": "https://auth.ent.test/oauth2/token"})

    app = web.Application()
    app.router.add_get("/_matrix/client/v1/auth_metadata", metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        config_path, _ = write_bridge_files(tmp_path, hs_url=f"http://127.0.0.1:{port}", bridge_port=free_port())
        base = load_config(config_path)
        auto = dataclasses.replace(base, identity=dataclasses.replace(
            base.identity, backend="auto", mas_client_id="ent-bridge", mas_client_secret="s3cret"))
        admin = await account_admin(auto)
        assert isinstance(admin, MasAdmin) and admin.server_name == base.homeserver.server_name
        await admin.close()
        plain = dataclasses.replace(auto, homeserver=dataclasses.replace(
            base.homeserver, url=f"http://127.0.0.1:{free_port()}", admin_token="syt_admin"))  # no auth metadata
        admin = await account_admin(plain)
        assert isinstance(admin, SynapseAdmin)
        await admin.close()
    finally:
        await runner.cleanup()
