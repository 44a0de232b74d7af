"""aiohttp routes of the appservice API: hs_token auth, persistent txn dedupe, queries, ping."""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.access.refusals import PATH, Refusal, parse_batch
from bridge.appservice.handling import DispatcherState
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.metrics import CONTENT_TYPE, Metrics
from bridge.store.base import Store

log = get_logger(component="appservice")

# Called with a user id or alias the homeserver asks about; True means "exists / now created".
QueryHandler = Callable[[str], Awaitable[bool]]


def _error(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


class AppserviceServer:
    """Receives transactions and queries from the homeserver.

    Semantics of a transaction: its events are written to the store's inbox together with
    the txn id in one database transaction, then the PUT is answered 200. Handling happens
    afterwards, from the inbox: a handler error leaves the event in the inbox to be retried
    with backoff, and after `max_attempts` it stays there as a dead letter (logged, counted
    by `/health`). A txn id already stored is answered 200 without being processed again,
    also after a restart. If the store write fails the PUT answers 500 and Synapse resends.
    """

    def __init__(
        self,
        *,
        hs_token: str,
        store: Store,
        on_new_events: Callable[[str, list[dict[str, Any]], set[str]], None] = lambda txn_id, events, handled: None,
        user_query: QueryHandler | None = None,
        alias_query: QueryHandler | None = None,
        dispatcher_state: DispatcherState | None = None,
        stale_after_s: float = 60.0,
        metrics: Metrics | None = None,
        ready: Callable[[], Awaitable[dict[str, Any]]] | None = None,
        on_refusals: Callable[[list[Refusal]], Awaitable[None]] | None = None,
    ) -> None:
        """on_new_events: told of each new transaction's events once they are on record (and of
        those of their ids handled before, in another transaction);
        metrics: served at /metrics; ready: what /_matrix/mau/ready reports (problems under
        "problems", none when ready); on_refusals: puts on record what the Synapse module refused
        (answered once it is)."""
        self.metrics = metrics
        self.ready = ready
        self.dispatcher_state = dispatcher_state
        self.stale_after_s = stale_after_s
        self._hs_token = hs_token.encode()
        self.store = store
        self.on_new_events = on_new_events
        self.user_query = user_query
        self.alias_query = alias_query
        self.on_refusals = on_refusals
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        r = self.app.router
        r.add_put("/_matrix/app/v1/transactions/{txn_id}", self.put_transaction)
        r.add_get("/_matrix/app/v1/users/{user_id}", self.get_user)
        r.add_get("/_matrix/app/v1/rooms/{alias}", self.get_alias)
        r.add_post("/_matrix/app/v1/ping", self.ping)
        r.add_put(PATH + "{batch}", self.put_refusals)
        r.add_get("/health", self.health)
        # Liveness and readiness as mautrix bridges answer them; metrics for Prometheus. This port
        # is the homeserver's side: keep it on loopback or a private network.
        r.add_get("/_matrix/mau/live", self.live)
        r.add_get("/_matrix/mau/ready", self.get_ready)
        if metrics is not None:
            r.add_get("/metrics", self.get_metrics)

    def _authorised(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer "):] if header.startswith("Bearer ") else None
        if token is None:
            # Deprecated query-parameter form, still sent by older homeservers.
            token = request.query.get("access_token")
        if not token:
            return _error(401, "M_MISSING_TOKEN", "missing homeserver token")
        if not hmac.compare_digest(token.encode(), self._hs_token):
            return _error(403, "M_FORBIDDEN", "bad homeserver token")
        return None

    async def put_transaction(self, request: web.Request) -> web.Response:
        txn_id = request.match_info["txn_id"]
        if (denied := self._authorised(request)) is not None:
            log.warning("txn_refused", txn_id=txn_id, status=denied.status)
            return denied
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "M_NOT_JSON", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _error(400, "M_BAD_JSON", "events must be a list")
        # Ephemeral and to-device events (MSC2409) are not persisted: the bot reads its own
        # to-device messages through /sync, and typing/receipts are not worth keeping.
        started = time.perf_counter()
        kept = [e for e in events if isinstance(e, dict)]
        handled = await self.store.receive_transaction(txn_id, kept, now_ms=int(time.time() * 1000))
        fresh = handled is not None
        if self.metrics is not None:
            self.metrics.transaction.observe(time.perf_counter() - started)
            for event in kept if fresh else ():
                self.metrics.events.labels(str(event.get("type"))[:100]).inc()
        (log.debug if fresh else log.info)("txn_received" if fresh else "txn_duplicate", txn_id=txn_id,
                                           events=len(events))
        if handled is not None:
            self.on_new_events(txn_id, kept, handled)
        return web.json_response({})

    async def put_refusals(self, request: web.Request) -> web.Response:
        """The access module's refusals (its registration's hs_token): on record before the answer,
        once each (a batch sent again is answered as the first time)."""
        if (denied := self._authorised(request)) is not None:
            log.warning("refusals_refused", status=denied.status)
            return denied
        if self.on_refusals is None:
            return _error(404, "M_UNRECOGNIZED", "this bridge does not record refusals")
        try:
            refusals = parse_batch(await request.json())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "M_NOT_JSON", "body is not JSON")
        except ValueError as exc:
            return _error(400, "M_BAD_JSON", str(exc))
        await self.on_refusals(refusals)
        return web.json_response({"recorded": len(refusals)})

    async def get_user(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        user_id = request.match_info["user_id"]
        if self.user_query is not None and await self.user_query(user_id):
            return web.json_response({})
        return _error(404, "M_NOT_FOUND", "no such user")

    async def get_alias(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        alias = request.match_info["alias"]
        if self.alias_query is not None and await self.alias_query(alias):
            return web.json_response({})
        return _error(404, "M_NOT_FOUND", "no such room alias")

    async def ping(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        return web.json_response({})

    async def health(self, _request: web.Request) -> web.Response:
        """ok, or degraded (200) when events are not draining or dead letters wait; 503 when the
        store can't even be read."""
        try:
            stats = await self.store.inbox_stats()
        except Exception as exc:  # noqa: BLE001 - the answer is the report
            return web.json_response({"status": "degraded", "store": f"unreachable: {type(exc).__name__}"},
                                     status=503)
        now_ms = int(time.time() * 1000)
        oldest_s = None if stats.oldest_pending_ms is None else round((now_ms - stats.oldest_pending_ms) / 1000, 1)
        report: dict[str, Any] = {"pending_events": stats.pending, "oldest_pending_s": oldest_s,
                                  "dead_letters": stats.dead}
        problems = []
        if self.dispatcher_state is not None:
            d = self.dispatcher_state
            report["dispatcher"] = {"store_failures": d.store_failures, "restarts": d.restarts,
                                    "last_error": d.last_error, "handled": d.handled}
            if d.store_failures:
                problems.append("the dispatcher can't reach the store")
        if oldest_s is not None and oldest_s > self.stale_after_s:
            problems.append(f"events wait for {oldest_s:.0f} s")
        if stats.dead:
            problems.append(f"{stats.dead} dead letters (ent-bridge events list)")
        report["status"] = "degraded" if problems else "ok"
        if problems:
            report["problems"] = problems
        return web.json_response(report)

    async def live(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_ready(self, _request: web.Request) -> web.Response:
        """200 when the store answers, the homeserver answered our ping and the bot's device is up."""
        report = await self.ready() if self.ready is not None else {}
        return web.json_response({"ok": not report.get("problems"), **report},
                                 status=503 if report.get("problems") else 200)

    async def get_metrics(self, _request: web.Request) -> web.Response:
        assert self.metrics is not None
        try:
            body = await self.metrics.render(self.store)
        except Exception as exc:  # noqa: BLE001 - a scrape never takes the bridge down
            return web.Response(status=503, text=f"store unreachable: {type(exc).__name__}\n")
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def start(self, *, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise BridgeError(f"can't listen on {host}:{port} ({exc.strerror}): another ent-bridge, or another "
                              "program, has it; stop it or change appservice.port (and the registration's url)"
                              ) from None
        log.info("appservice_listening", host=host, port=port)
        return runner
