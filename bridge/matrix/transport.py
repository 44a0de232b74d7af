"""HTTP transport under the homeserver client: aiohttp for real, or any object answering requests."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp


class TransportFailure(Exception):
    """No HTTP answer at all: connection refused or reset, or a timeout (always worth a retry)."""


class Transport(Protocol):
    async def send(self, method: str, path: str, *, params: Mapping[str, str], headers: Mapping[str, str],
                   json: Any, timeout: float | None, data: bytes | None = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON body or None); raises TransportFailure when nothing answered.
        data: a raw body (a media upload) instead of JSON."""
        ...

    async def close(self) -> None: ...


class AiohttpTransport:
    def __init__(self, base_url: str, *, timeout: float = 30.0, session: aiohttp.ClientSession | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session
        self._own_session = session is None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self._session

    async def send(self, method: str, path: str, *, params: Mapping[str, str], headers: Mapping[str, str],
                   json: Any, timeout: float | None, data: bytes | None = None) -> tuple[int, Any]:
        extra: dict[str, Any] = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        extra.update({"data": data} if data is not None else {"json": json})
        try:
            async with self.session.request(method, self.base_url + path, params=dict(params),
                                            headers=dict(headers), **extra) as resp:
                raw = await resp.read()
                try:
                    body = jsonlib.loads(raw) if raw else None
                except ValueError:
                    body = None  # an HTML error page from a proxy: the status alone decides
                return resp.status, body
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise TransportFailure(type(exc).__name__) from exc

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None
