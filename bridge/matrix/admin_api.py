"""Synapse admin API (optional, needs homeserver.admin_token): accounts by e-mail, provisioning."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from bridge.errors import MNotFound
from bridge.matrix.appservice_api import AppserviceAPI


class SynapseAdmin:
    def __init__(self, *, base_url: str, token: str) -> None:
        # Same transport, retries and error classes as the appservice client; another token.
        self.http = AppserviceAPI(base_url=base_url, as_token=token)

    async def close(self) -> None:
        await self.http.close()

    async def user_by_email(self, email: str) -> str | None:
        try:
            resp = await self.http.request("GET", f"/_synapse/admin/v1/threepid/email/users/{quote(email, safe='')}")
        except MNotFound:
            return None
        return str(resp["user_id"])

    async def users_by_email(self, emails: list[str], *, concurrency: int = 8) -> dict[str, str]:
        sem = asyncio.Semaphore(concurrency)

        async def one(email: str) -> tuple[str, str | None]:
            async with sem:
                return email, await self.user_by_email(email)

        found = await asyncio.gather(*(one(e) for e in sorted(set(emails))))
        return {e: u for e, u in found if u}

    async def user_exists(self, user_id: str) -> bool:
        try:
            await self.http.request("GET", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}")
        except MNotFound:
            return False
        return True

    async def provision(self, user_id: str, *, displayname: str, email: str | None,
                        sso: tuple[str, str] | None) -> None:
        """Create the account (no password: people sign in through the ENT's SSO)."""
        body: dict[str, Any] = {"displayname": displayname}
        if email:
            body["threepids"] = [{"medium": "email", "address": email}]
        if sso:
            body["external_ids"] = [{"auth_provider": sso[0], "external_id": sso[1]}]
        await self.http.request("PUT", f"/_synapse/admin/v2/users/{quote(user_id, safe='')}", json=body)

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """Deactivate; with erase, Synapse also forgets the profile and hides the messages from newcomers."""
        await self.http.request("POST", f"/_synapse/admin/v1/deactivate/{quote(user_id, safe='')}",
                                json={"erase": erase})
