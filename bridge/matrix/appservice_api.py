"""Client-server API calls made with the as_token, masquerading as users of the namespace.

The one implementation of the homeserver port (`bridge.matrix.port.Homeserver`): over aiohttp
against Synapse, or over the in-memory fake homeserver in unit tests; the contract suite
(tests/test_homeserver_contract.py) runs the same calls on both.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from typing import Any, Self
from urllib.parse import quote

from bridge.clock import SYSTEM, Clock
from bridge.errors import (
    BridgeError,
    MatrixError,
    MForbidden,
    MNotFound,
    MUserInUse,
    PermanentMatrixError,
    TemporaryMatrixError,
    classify_http_error,
)
from bridge.logging import get_logger
from bridge.matrix.transport import AiohttpTransport, Transport, TransportFailure
from bridge.metrics import Metrics, endpoint

log = get_logger(component="appservice_api")
CS = "/_matrix/client/v3"


def _q(part: str) -> str:
    return quote(part, safe="")


class AppserviceAPI:
    """Thin typed wrapper over the client-server API; retries what is temporary."""

    def __init__(self, *, base_url: str = "", as_token: str, transport: Transport | None = None,
                 max_retries: int = 6, timeout: float = 30.0, clock: Clock = SYSTEM,
                 metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.transport: Transport = transport or AiohttpTransport(base_url, timeout=timeout)
        self._as_token = as_token
        self.max_retries = max_retries
        self.timeout = timeout
        self.clock = clock
        self.request_count = 0  # counted so tests can prove a no-op sync writes nothing
        self.write_count = 0

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.transport.close()

    def set_token(self, token: str) -> None:
        """Another bearer token from now on (an OAuth2 access token that was renewed)."""
        self._as_token = token

    async def request(self, method: str, path: str, *, user_id: str | None = None,
                      device_id: str | None = None, json: Any = None,
                      params: Mapping[str, str] | None = None, timeout: float | None = None,
                      retries: int | None = None, data: bytes | None = None, content_type: str | None = None) -> Any:
        """retries: how many times a temporary failure is retried (default: the client's max_retries)."""
        query = dict(params or {})
        if user_id:
            query["user_id"] = user_id
        if device_id:
            query["device_id"] = device_id
        headers = {"Authorization": f"Bearer {self._as_token}"}
        if content_type:
            headers["Content-Type"] = content_type
        self.request_count += 1
        if method != "GET":
            self.write_count += 1
        label = endpoint(path) if self.metrics is not None else ""
        if self.metrics is not None:
            self.metrics.api_calls.labels(label).inc()
        attempt = 0
        while True:
            try:
                status, body = await self.transport.send(method, path, params=query, headers=headers, json=json,
                                                         timeout=timeout, data=data)
                if status < 400:
                    return body if body is not None else {}
                err: MatrixError = classify_http_error(status, body if isinstance(body, dict) else None,
                                                       context=f"{method} {path}")
            except TransportFailure as exc:
                err = TemporaryMatrixError(f"{method} {path}: {exc}")
            if isinstance(err, PermanentMatrixError) or attempt >= (self.max_retries if retries is None else retries):
                if self.metrics is not None:
                    self.metrics.api_failed.labels(label, err.errcode or str(err.status or "network")).inc()
                raise err
            assert isinstance(err, TemporaryMatrixError)
            delay = err.retry_after if err.retry_after is not None else min(0.25 * 2 ** attempt, 10.0)
            delay *= 1 + random.random() * 0.1  # jitter: don't retry in lock-step
            log.warning("matrix_request_retry", method=method, path=path.split("?", maxsplit=1)[0],
                        status=err.status, attempt=attempt + 1, delay=round(delay, 2))
            await self.clock.sleep(delay)
            attempt += 1

    # --- users, devices, the appservice itself ---------------------------------------------

    async def check_reachable(self, url: str) -> None:
        """One quick look at the homeserver (a few seconds, not a minute of silent retries): a
        clear error naming the URL when nothing answers."""
        try:
            await self.request("GET", "/_matrix/client/versions", retries=1, timeout=5)
        except MatrixError as exc:
            if exc.status is not None:
                return  # it answers, if badly: the calls that follow say how
            raise BridgeError(f"the homeserver at {url} does not answer ({exc}): is Synapse running, and is "
                              "homeserver.url right?") from None

    async def register_user(self, localpart: str) -> None:
        """Register a user of the namespace; already registered is success."""
        try:
            await self.request("POST", f"{CS}/register", json={"type": "m.login.application_service",
                                                              "username": localpart, "inhibit_login": True})
        except MUserInUse:
            pass

    async def ensure_device(self, user_id: str, device_id: str, *, display_name: str) -> None:
        """Create (or keep) a device for a namespaced user, MSC4190 style."""
        await self.request("PUT", f"{CS}/devices/{_q(device_id)}", user_id=user_id,
                           json={"display_name": display_name})

    async def whoami(self, user_id: str, device_id: str | None = None) -> dict[str, Any]:
        return dict(await self.request("GET", f"{CS}/account/whoami", user_id=user_id, device_id=device_id))

    async def ping(self, appservice_id: str, txn_id: str) -> None:
        """MSC2659: the homeserver calls us back; it also retries held transactions at once."""
        await self.request("POST", f"/_matrix/client/v1/appservice/{_q(appservice_id)}/ping",
                           json={"transaction_id": txn_id})

    async def upload(self, data: bytes, *, content_type: str, filename: str, as_user: str) -> str:
        """A file in the homeserver's media repository; its mxc:// URI."""
        resp = await self.request("POST", "/_matrix/media/v3/upload", user_id=as_user, data=data,
                                  content_type=content_type, params={"filename": filename})
        return str(resp["content_uri"])

    async def avatar_url(self, user_id: str) -> str | None:
        try:
            profile = await self.request("GET", f"{CS}/profile/{_q(user_id)}/avatar_url", user_id=user_id)
            uri = profile.get("avatar_url")
        except MNotFound:
            return None
        return str(uri) if uri else None

    async def set_avatar_url(self, user_id: str, uri: str) -> None:
        await self.request("PUT", f"{CS}/profile/{_q(user_id)}/avatar_url", user_id=user_id, json={"avatar_url": uri})

    async def ensure_display_name(self, user_id: str, name: str) -> None:
        """Set only when different: each change is a new membership event in every room of the user."""
        path = f"{CS}/profile/{_q(user_id)}/displayname"
        try:
            current = (await self.request("GET", path, user_id=user_id)).get("displayname")
        except MNotFound:
            current = None
        if current != name:
            await self.request("PUT", path, user_id=user_id, json={"displayname": name})

    # --- reading ------------------------------------------------------------------------------

    async def sync(self, user_id: str, *, filter_json: str, since: str | None = None) -> dict[str, Any]:
        """A non-blocking /sync without a device id (so no to-device message is consumed)."""
        params = {"filter": filter_json, "timeout": "0", "set_presence": "offline"}
        if since:
            params["since"] = since
        return dict(await self.request("GET", f"{CS}/sync", user_id=user_id, params=params))

    async def joined_rooms(self, user_id: str) -> list[str]:
        resp = await self.request("GET", f"{CS}/joined_rooms", user_id=user_id)
        return [str(r) for r in resp.get("joined_rooms", [])]

    async def messages(self, room_id: str, *, as_user: str, limit: int, from_token: str | None = None,
                       ) -> dict[str, Any]:
        """One page of a room's history, newest first."""
        params = {"dir": "b", "limit": str(limit)}
        if from_token:
            params["from"] = from_token
        return dict(await self.request("GET", f"{CS}/rooms/{_q(room_id)}/messages", user_id=as_user, params=params))

    async def resolve_alias(self, alias: str) -> str | None:
        try:
            resp = await self.request("GET", f"{CS}/directory/room/{_q(alias)}")
        except MNotFound:
            return None
        return str(resp["room_id"])

    async def delete_alias(self, alias: str) -> None:
        """Take back an alias of the namespace (as the appservice); already gone is success."""
        try:
            await self.request("DELETE", f"{CS}/directory/room/{_q(alias)}")
        except MNotFound:
            pass

    async def room_state(self, room_id: str, *, as_user: str) -> list[dict[str, Any]]:
        resp = await self.request("GET", f"{CS}/rooms/{_q(room_id)}/state", user_id=as_user)
        if not isinstance(resp, list):
            raise PermanentMatrixError(f"GET /rooms/{room_id}/state: expected a list, got {type(resp).__name__}")
        return resp

    async def get_state(self, room_id: str, event_type: str, state_key: str = "", *, as_user: str,
                        whole_event: bool = False) -> dict[str, Any]:
        """One state event's content (or, with whole_event, the event: sender included)."""
        path = f"{CS}/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        return dict(await self.request("GET", path, user_id=as_user,
                                       params={"format": "event"} if whole_event else None))

    async def membership(self, room_id: str, user_id: str, *, as_user: str) -> str | None:
        """A user's membership as `as_user` sees it (None: never a member)."""
        try:
            content = await self.get_state(room_id, "m.room.member", user_id, as_user=as_user)
        except MNotFound:
            return None
        return str(content.get("membership", "leave"))

    # --- writing (ensure-steps: "already so" is success) --------------------------------------

    async def create_room(self, *, as_user: str, body: dict[str, Any]) -> str:
        # A room with its initial state and invites is the slowest request there is: wait longer.
        resp = await self.request("POST", f"{CS}/createRoom", user_id=as_user, json=body,
                                  timeout=max(self.timeout, 120.0))
        return str(resp["room_id"])

    async def invite(self, room_id: str, user_id: str, *, as_user: str, reason: str | None = None) -> None:
        """Ensure `user_id` is invited or joined."""
        body: dict[str, Any] = {"user_id": user_id}
        if reason:
            body["reason"] = reason
        try:
            await self.request("POST", f"{CS}/rooms/{_q(room_id)}/invite", user_id=as_user, json=body)
        except MForbidden:
            # Synapse answers M_FORBIDDEN both for "already in the room" and for a real refusal:
            # the room's state, not the message, tells which.
            if await self._membership_or_none(room_id, user_id, as_user=as_user) not in ("invite", "join"):
                raise

    async def kick(self, room_id: str, user_id: str, *, as_user: str, reason: str) -> bool:
        """Ensure `user_id` is neither joined nor invited; False when they already were not."""
        try:
            await self.request("POST", f"{CS}/rooms/{_q(room_id)}/kick", user_id=as_user,
                               json={"user_id": user_id, "reason": reason})
        except MForbidden:
            if await self._membership_or_none(room_id, user_id, as_user=as_user) in ("invite", "join", "?"):
                raise
            return False
        return True

    async def _membership_or_none(self, room_id: str, user_id: str, *, as_user: str) -> str | None:
        try:
            return await self.membership(room_id, user_id, as_user=as_user)
        except PermanentMatrixError:
            return "?"  # can't tell (the actor itself is not in the room): the refusal stands

    async def join(self, room_id: str, *, as_user: str) -> None:
        await self.request("POST", f"{CS}/join/{_q(room_id)}", user_id=as_user, json={})

    async def leave(self, room_id: str, *, as_user: str) -> None:
        """Ensure `as_user` is not in the room."""
        try:
            await self.request("POST", f"{CS}/rooms/{_q(room_id)}/leave", user_id=as_user, json={})
        except (MForbidden, MNotFound):
            if room_id in await self.joined_rooms(as_user):
                raise

    async def set_state(self, room_id: str, event_type: str, state_key: str, content: Mapping[str, Any], *,
                        as_user: str) -> str:
        path = f"{CS}/rooms/{_q(room_id)}/state/{_q(event_type)}/{_q(state_key)}"
        resp = await self.request("PUT", path, user_id=as_user, json=dict(content))
        return str(resp.get("event_id", ""))

    async def send_event(self, room_id: str, event_type: str, content: Mapping[str, Any], *, as_user: str,
                         txn_id: str) -> str:
        path = f"{CS}/rooms/{_q(room_id)}/send/{_q(event_type)}/{_q(txn_id)}"
        resp = await self.request("PUT", path, user_id=as_user, json=dict(content))
        return str(resp.get("event_id", ""))

    async def redact(self, room_id: str, event_id: str, *, as_user: str, reason: str,
                     txn_id: str | None = None) -> None:
        """txn_id: the same id sent again is the same redaction (the homeserver deduplicates)."""
        txn = txn_id or secrets.token_hex(8)
        await self.request("PUT", f"{CS}/rooms/{_q(room_id)}/redact/{_q(event_id)}/{_q(txn)}",
                           user_id=as_user, json={"reason": reason})
