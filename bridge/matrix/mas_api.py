"""Accounts through the Matrix Authentication Service (MAS, next-gen auth): its admin API, with an
OAuth2 client-credentials token (scope urn:mas:admin). Under MAS, Synapse's own user admin makes
accounts that can't log in: users, their e-mail and their SSO link are made here instead.

The operations used are written down, with their fields and status codes, in
tests/contracts/mas-admin-1.22.0.schema.json (read from MAS's published OpenAPI document)."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from urllib.parse import quote, urlencode

from bridge.errors import BridgeError, MNotFound
from bridge.matrix.appservice_api import AppserviceAPI
from bridge.matrix.transport import AiohttpTransport, Transport, TransportFailure

ADMIN = "/api/admin/v1"
SCOPE = "urn:mas:admin"


class MasAuthError(BridgeError):
    """MAS refused the bridge's client credentials."""


class MasAdmin:
    def __init__(self, *, base_url: str, server_name: str, client_id: str, client_secret: str,
                 transport: Transport | None = None) -> None:
        self.transport: Transport = transport or AiohttpTransport(base_url)
        # The admin API: the appservice client's retries and error classes, with MAS's token.
        self.http = AppserviceAPI(as_token="", transport=self.transport)
        self.server_name = server_name
        self._basic = base64.b64encode(f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()).decode()
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self.http.close()

    async def _token(self) -> None:
        """A fresh access token when the last one is about to expire (client_secret_basic)."""
        async with self._lock:
            if time.monotonic() < self._expires:
                return
            form = urlencode({"grant_type": "client_credentials", "scope": SCOPE}).encode()
            try:
                status, body = await self.transport.send(
                    "POST", "/oauth2/token", params={}, json=None, timeout=30, data=form,
                    headers={"Authorization": f"Basic {self._basic}",
                             "Content-Type": "application/x-www-form-urlencoded"})
            except TransportFailure as exc:
                raise BridgeError(f"MAS does not answer ({exc}): check identity.mas_url") from None
            if status != 200 or not isinstance(body, dict) or "access_token" not in body:
                raise MasAuthError(f"MAS refused the bridge's client credentials (HTTP {status}): check "
                                   "identity.mas_client_id and its secret, and that the client may use urn:mas:admin")
            self.http.set_token(str(body["access_token"]))
            self._expires = time.monotonic() + max(0, int(body.get("expires_in", 300)) - 30)

    async def _call(self, method: str, path: str, *, json_body: Any = None,
                    params: dict[str, str] | None = None) -> dict[str, Any]:
        await self._token()
        return dict(await self.http.request(method, ADMIN + path, json=json_body, params=params))

    def _localpart(self, user_id: str) -> str:
        localpart, _, server = user_id[1:].partition(":")
        if server != self.server_name:
            raise BridgeError(f"{user_id} is not a user of {self.server_name}")
        return localpart

    async def _user(self, user_id: str) -> dict[str, Any] | None:
        try:
            found = await self._call("GET", f"/users/by-username/{quote(self._localpart(user_id), safe='')}")
            return dict(found["data"])
        except MNotFound:
            return None

    # --- the AccountLookup and AccountAdmin ports ------------------------------------------------

    async def user_exists(self, user_id: str) -> bool:
        return await self._user(user_id) is not None

    async def users_by_email(self, emails: list[str], *, concurrency: int = 8) -> dict[str, str]:
        sem = asyncio.Semaphore(concurrency)

        async def one(email: str) -> tuple[str, str | None]:
            async with sem:
                found = (await self._call("GET", "/user-emails", params={"filter[email]": email})).get("data") or []
                if not found:
                    return email, None
                user = (await self._call("GET", f"/users/{found[0]['attributes']['user_id']}"))["data"]
                return email, f"@{user['attributes']['username']}:{self.server_name}"

        pairs = await asyncio.gather(*(one(e) for e in sorted(set(emails))))
        return {e: u for e, u in pairs if u}

    async def provision(self, user_id: str, *, displayname: str, email: str | None,
                        sso: tuple[str, str] | None) -> None:
        """The account, then its e-mail and its link to the ENT's identity provider (provider id:
        MAS's ULID for it; subject: the directory's id), so the first SSO login lands in it."""
        user = await self._user(user_id)
        if user is None:
            user = (await self._call("POST", "/users", json_body={
                "username": self._localpart(user_id), "displayname": displayname}))["data"]
        if email:
            try:
                await self._call("POST", "/user-emails", json_body={"user_id": user["id"], "email": email})
            except BridgeError as exc:
                if getattr(exc, "status", None) != 409:  # already there: done
                    raise
        if sso:
            await self._call("POST", "/upstream-oauth-links", json_body={
                "user_id": user["id"], "provider_id": sso[0], "subject": sso[1]})

    async def deactivate(self, user_id: str, *, erase: bool) -> None:
        """MAS deactivates, and (unless skipped) asks the homeserver to erase the account."""
        user = await self._user(user_id)
        if user is None:
            return
        await self._call("POST", f"/users/{user['id']}/deactivate", json_body={"skip_erase": not erase})

