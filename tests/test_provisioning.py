"""Accounts through Synapse's admin API: existing ones found by e-mail, missing ones created for SSO."""

from __future__ import annotations

import dataclasses
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from bridge.clock import FixedTime
from bridge.matrix.admin_api import SynapseAdmin
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.reconcile.actions import ErasePerson, Kick, ProvisionAccount
from bridge.reconcile.sync import run_sync
from bridge.store import open_store
from tests.conftest import unique_school, write_school

pytestmark = pytest.mark.synapse


async def test_email_match_and_provisioning(homeserver: Any, data_dir: Path, tmp_path: Path) -> None:
    admin_name = f"admin_{secrets.token_hex(3)}"
    token = homeserver.synapse.register_user(admin_name, secrets.token_urlsafe(12), admin=True)["access_token"]
    admin = SynapseAdmin(base_url=homeserver.url, token=token)
    school = unique_school(tmp_path)
    email = f"anne.{secrets.token_hex(3)}@example.org"
    next(g for g in school["guardians"] if g["id"] == "g-anne")["email"] = email
    existing = f"@anne-deja-la-{secrets.token_hex(2)}:{homeserver.synapse.server_name}"
    await admin.provision(existing, displayname="Anne", email=email, sso=None)
    src = str(write_school(tmp_path, school))

    base = homeserver.config(data_dir)
    no_token = dataclasses.replace(base, identity=dataclasses.replace(base.identity, provision=True))
    store = await open_store(base.database_url)
    api = AppserviceAPI(base_url=base.homeserver.url, as_token=base.appservice.as_token)
    try:
        planned = await run_sync(no_token, [src], store=store, api=api, apply=False)
        notes = " ".join(planned.plan.notes)
        assert "without homeserver.admin_token" in notes and "provisioning needs homeserver.admin_token" in notes

        config = dataclasses.replace(
            base, homeserver=dataclasses.replace(base.homeserver, admin_token=token),
            identity=dataclasses.replace(base.identity, provision=True, sso_provider="oidc-educonnect"))
        result = await run_sync(config, [src], store=store, api=api, apply=True)
        assert result.verdict.ok and not result.report.failed
        provisioned = {a.user_id for a in result.plan.of(ProvisionAccount)}
        assert existing not in provisioned
        assert (await store.identities())["g-anne"] == existing  # matched by e-mail
        assert any(existing in r.members for r in result.plan.desired.values())
        claire = next(u for u in provisioned if u.startswith("@claire.dubois"))
        info = await admin.http.request("GET", f"/_synapse/admin/v2/users/{quote(claire, safe='')}")
        assert info["external_ids"] == [{"auth_provider": "oidc-educonnect", "external_id": "t-cp"}]
        assert len(provisioned) == len({m for r in result.plan.desired.values() for m in r.members}) - 1
        again = await run_sync(config, [src], store=store, api=api, apply=False)
        assert again.plan.is_empty()

        # Claire leaves: out of her rooms at the next sync, erased after the grace period.
        school["staff"] = [p for p in school["staff"] if p["id"] != "t-cp"]
        src = str(write_school(tmp_path, school))
        t0 = datetime.now(UTC)
        left = await run_sync(config, [src], store=store, api=api, apply=True, clock=FixedTime(t0),
                              allow_mass_removal=True)  # 1 of 8 people: the tiny school trips the shrink guard
        assert {a.user_id for a in left.plan.of(Kick)} == {claire}
        assert not left.report.failed, left.report.failed
        assert "t-cp" in await store.leavers()
        assert not left.plan.of(ErasePerson)
        soon = await run_sync(config, [src], store=store, api=api, apply=False, clock=FixedTime(t0 + timedelta(days=89)))
        assert soon.plan.is_empty()
        late = await run_sync(config, [src], store=store, api=api, apply=True, clock=FixedTime(t0 + timedelta(days=91)))
        [erase] = late.plan.of(ErasePerson)
        assert (erase.user_id, erase.person_id, erase.deactivate) == (claire, "t-cp", True)
        assert not late.report.failed
        info = await admin.http.request("GET", f"/_synapse/admin/v2/users/{quote(claire, safe='')}")
        assert info["deactivated"] is True
        assert "t-cp" not in await store.identities() and "t-cp" not in await store.leavers()
        last = [r.body for r in await store.audit_rows() if "erase_person" in r.body][-1]
        assert "claire" not in last.lower() and "t-cp" not in last
    finally:
        await admin.close()
        await api.close()
        await store.close()
