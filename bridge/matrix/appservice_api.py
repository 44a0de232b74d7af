"""Client-server API calls made with the as_token, masquerading as users of the namespace."""

from __future__ import annotations

import asyncio
import random
import secrets
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.errors import MatrixError, PermanentMatrixError, TemporaryMatrixError, classify_http_error
from bridge.logging import get_logger

log = get_logger(component="appservice_api")


class AppserviceAPI:
    """Thin typed wrapper over the client-server API; retries what is temporary."""

    def __init__(self, *, base_url: str, as_token: str, session: aiohttp.ClientSession | None = None,
                 max_retries: int = 6, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._as_token = as_token
        self._session = session
        self._own_session = session is None
        self.max_retries = max_retries
        self.timeout = timeout
        self.request_count = 0  # write requests, counted so tests can prove a no-op sync writes nothing
        self.write_count = 0

    async def __aenter__(self) -> "AppserviceAPI":
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def request(self, method: str, path: str, *, user_id: str | None = None,
                      device_id: str | None = None, json: Any = None,
                      params: dict[str, str] | None = None, timeout: float | None = None) -> Any:
        query = dict(params or {})
        if user_id:
            query["user_id"] = user_id
        if device_id:
            query["device_id"] = device_id
        headers = {"Authorization": f"Bearer {self._as_token}"}
        url = self.base_url + path
        self.request_count += 1
        if method != "GET":
            self.write_count += 1
        extra: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        attempt = 0
        while True:
            try:
                async with self.session.request(method, url, params=query, json=json, headers=headers,
                                                **extra) as resp:
                    if resp.status < 400:
                        return await resp.json(content_type=None) or {}
                    try:
                        body = await resp.json(content_type=None)
                    except (aiohttp.ContentTypeError, ValueError):
                        body = None
                    err: MatrixError = classify_http_error(resp.status, body if isinstance(body, dict) else None,
                                                           context=f"{method} {path}")
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError) as exc:
                err = TemporaryMatrixError(f"{method} {path}: {type(exc).__name__}")
            if isinstance(err, PermanentMatrixError) or attempt >= self.max_retries:
                raise err
            assert isinstance(err, TemporaryMatrixError)
            delay = err.retry_after if err.retry_after is not None else min(0.25 * 2 ** attempt, 10.0)
            delay *= 1 + random.random() * 0.1  # jitter: don't retry in lock-step
            log.warning("matrix_request_retry", method=method, path=path.split("?")[0],
                        status=err.status, attempt=attempt + 1, delay=round(delay, 2))
            await asyncio.sleep(delay)
            attempt += 1

    # --- user and device management -------------------------------------------------------

    async def register_user(self, localpart: str) -> None:
        """Register a user of the namespace; already registered is success."""
        try:
            await self.request("POST", "/_matrix/client/v3/register",
                               json={"type": "m.login.application_service", "username": localpart,
                                     "inhibit_login": True})
        except PermanentMatrixError as exc:
            if exc.errcode != "M_USER_IN_USE":
                raise

    async def ensure_device(self, user_id: str, device_id: str, *, display_name: str) -> None:
        """Create (or keep) a device for a namespaced user, MSC4190 style."""
        await self.request("PUT", f"/_matrix/client/v3/devices/{quote(device_id, safe='')}",
                           user_id=user_id, json={"display_name": display_name})

    async def whoami(self, user_id: str, device_id: str | None = None) -> dict[str, Any]:
        return await self.request("GET", "/_matrix/client/v3/account/whoami", user_id=user_id,
                                  device_id=device_id)

    # --- rooms (all acting as a namespaced user, usually the bot) ----------------------------

    async def create_room(self, *, as_user: str, body: dict[str, Any]) -> str:
        # A room with its initial state and invites is the slowest request there is: wait longer.
        resp = await self.request("POST", "/_matrix/client/v3/createRoom", user_id=as_user, json=body,
                                  timeout=max(self.timeout, 120.0))
        return str(resp["room_id"])

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            resp = await self.request("GET", f"/_matrix/client/v3/directory/room/{quote(alias, safe='')}")
        except PermanentMatrixError as exc:
            if exc.status == 404:
                return None
            raise
        return str(resp["room_id"])

    async def invite(self, room_id: str, user_id: str, *, as_user: str, reason: str | None = None) -> None:
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        try:
            await self.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/invite",
                               user_id=as_user, json=body)
        except PermanentMatrixError as exc:
            # "already in the room" is success for an ensure-step.
            if not (exc.status == 403 and "already in the room" in str(exc)):
                raise

    async def kick(self, room_id: str, user_id: str, *, as_user: str, reason: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/kick",
                           user_id=as_user, json={"user_id": user_id, "reason": reason})

    async def join(self, room_id: str, *, as_user: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}", user_id=as_user,
                           json={})

    async def ensure_display_name(self, user_id: str, name: str) -> None:
        """Set only when different: each change is a new membership event in every room of the user."""
        path = f"/_matrix/client/v3/profile/{quote(user_id, safe='')}/displayname"
        try:
            current = (await self.request("GET", path, user_id=user_id)).get("displayname")
        except PermanentMatrixError:
            current = None
        if current != name:
            await self.request("PUT", path, user_id=user_id, json={"displayname": name})

    async def leave(self, room_id: str, *, as_user: str) -> None:
        """Leave a room; not being in it (any more) is success."""
        try:
            await self.request("POST", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/leave",
                               user_id=as_user, json={})
        except PermanentMatrixError as exc:
            if exc.status not in (403, 404):
                raise

    async def room_state(self, room_id: str, *, as_user: str) -> list[dict[str, Any]]:
        resp = await self.request("GET", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state",
                                  user_id=as_user)
        return resp if isinstance(resp, list) else []  # type: ignore[return-value]

    async def get_state(self, room_id: str, event_type: str, state_key: str = "", *, as_user: str,
                        whole_event: bool = False) -> dict[str, Any]:
        """One state event's content (or, with whole_event, the event: sender included)."""
        path = (f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state/"
                f"{quote(event_type, safe='')}/{quote(state_key, safe='')}")
        return dict(await self.request("GET", path, user_id=as_user,
                                       params={"format": "event"} if whole_event else None))

    async def redact(self, room_id: str, event_id: str, *, as_user: str, reason: str) -> None:
        await self.request("PUT", f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/redact/"
                                  f"{quote(event_id, safe='')}/{secrets.token_hex(8)}",
                           user_id=as_user, json={"reason": reason})

    async def set_state(self, room_id: str, event_type: str, state_key: str, content: dict[str, Any], *,
                        as_user: str) -> str:
        path = (f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/state/"
                f"{quote(event_type, safe='')}/{quote(state_key, safe='')}")
        resp = await self.request("PUT", path, user_id=as_user, json=content)
        return str(resp.get("event_id", ""))

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any], *, as_user: str,
                         txn_id: str) -> str:
        path = (f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/"
                f"{quote(event_type, safe='')}/{quote(txn_id, safe='')}")
        resp = await self.request("PUT", path, user_id=as_user, json=content)
        return str(resp.get("event_id", ""))
