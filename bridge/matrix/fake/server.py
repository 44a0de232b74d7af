"""An in-memory homeserver answering the client-server requests the bridge sends (a `Transport`).

Faults are injected by rule: a status and errcode (429 with retry_after_ms, 500, 403…) or no
answer at all (a timeout), for the next N requests matching a method and a path fragment; or
`down` for a dead homeserver. Every request is recorded in `requests`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from bridge.matrix.fake.rooms import Refused, Room, RoomStore, client_event
from bridge.matrix.transport import TransportFailure

CS = "/_matrix/client/v3/"


@dataclass
class Fault:
    method: str
    fragment: str
    status: int | None  # None: no answer (timeout)
    errcode: str = "M_UNKNOWN"
    times: int = 1
    retry_after_ms: int | None = None
    done: bool = False  # with status None: the request took effect, only its answer was lost


class FakeHomeserver:
    def __init__(self, *, server_name: str = "ent.test", as_token: str = "as-token",
                 sender: str = "ent-bridge") -> None:
        self.server_name = server_name
        self.as_token = as_token
        self.sender = f"@{sender}:{server_name}"
        self.store = RoomStore(server_name)
        self.users: dict[str, str] = {self.sender: sender}  # user id -> display name
        self.avatars: dict[str, str] = {}  # user id -> mxc:// URI
        self.faults: list[Fault] = []
        self.requests: list[tuple[str, str]] = []
        self.down = False
        self._txns: dict[tuple[str, str], str] = {}

    # --- test controls ------------------------------------------------------------------------

    def fail(self, method: str, fragment: str, status: int | None, errcode: str = "M_UNKNOWN", *, times: int = 1,
             retry_after_ms: int | None = None, done: bool = False) -> None:
        self.faults.append(Fault(method, fragment, status, errcode, times, retry_after_ms, done))

    def register(self, user_id: str) -> None:
        self.users.setdefault(user_id, user_id[1:].split(":", maxsplit=1)[0])

    def room(self, room_id: str) -> Room:
        return self.store.rooms[room_id]

    # --- the Transport ----------------------------------------------------------------------

    async def close(self) -> None:
        return None

    async def send(self, method: str, path: str, *, params: Mapping[str, str], headers: Mapping[str, str],
                   json: Any, timeout: float | None, data: bytes | None = None) -> tuple[int, Any]:
        self.requests.append((method, path))
        if self.down:
            raise TransportFailure("ClientConnectorError")
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.fragment in unquote(path):
                fault.times -= 1
                if fault.status is None:
                    if fault.done:  # the homeserver did it; the client timed out before the answer
                        await self._answer(method, path, params, headers, json)
                    raise TransportFailure("TimeoutError")
                body: dict[str, Any] = {"errcode": fault.errcode, "error": "injected fault"}
                if fault.retry_after_ms is not None:
                    body["retry_after_ms"] = fault.retry_after_ms
                return fault.status, body
        return await self._answer(method, path, params, headers, json)

    async def _answer(self, method: str, path: str, params: Mapping[str, str], headers: Mapping[str, str],
                      json: Any) -> tuple[int, Any]:
        if headers.get("Authorization") != f"Bearer {self.as_token}":
            return 401, {"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token"}
        user = params.get("user_id") or self.sender
        try:
            return 200, self._route(method, [unquote(p) for p in path.split("/")], user, dict(params), json or {})
        except Refused as exc:
            return exc.status, {"errcode": exc.errcode, "error": str(exc)}

    # --- routes -----------------------------------------------------------------------------

    def _route(self, method: str, parts: list[str], user: str, params: dict[str, str], body: dict[str, Any]) -> Any:
        if parts[1:4] == ["_matrix", "client", "v1"] and parts[4] == "appservice":
            return {"duration_ms": 1}
        if parts[1:4] == ["_matrix", "media", "v3"] and parts[4] == "upload" and method == "POST":
            return {"content_uri": f"mxc://{self.server_name}/{self.store.new_id('m')[1:]}"}
        if parts[1:4] != ["_matrix", "client", "v3"]:
            raise Refused(404, "M_UNRECOGNIZED", "Unrecognized request")
        p = parts[4:]
        match (method, p[0]):
            case ("POST", "register"):
                return self._register(str(body.get("username")))
            case ("PUT", "devices") | ("GET", "account"):
                return {"user_id": user}
            case ("GET" | "PUT", "profile"):
                return self._profile(method, p[1], p[2] if len(p) > 2 else "displayname", body)
            case ("POST", "createRoom"):
                return self._create(user, body)
            case ("DELETE", "directory"):
                if self.store.aliases.pop(p[2], None) is None:
                    raise Refused(404, "M_NOT_FOUND", f"Room alias {p[2]} not found")
                return {}
            case ("GET", "directory"):
                room_id = self.store.aliases.get(p[2])
                if room_id is None:
                    raise Refused(404, "M_NOT_FOUND", f"Room alias {p[2]} not found")
                return {"room_id": room_id, "servers": [self.server_name]}
            case ("POST", "join"):
                self.store.join(self.store.room(p[1]), user)
                return {"room_id": p[1]}
            case ("GET", "joined_rooms"):
                return {"joined_rooms": sorted(r for r, room in self.store.rooms.items()
                                               if room.membership(user) == "join")}
            case ("GET", "sync"):
                return self._sync(user, params)
            case (_, "rooms"):
                return self._room_request(method, p[1:], user, params, body)
        raise Refused(404, "M_UNRECOGNIZED", "Unrecognized request")

    def _register(self, localpart: str) -> dict[str, Any]:
        user_id = f"@{localpart}:{self.server_name}"
        if user_id in self.users:
            raise Refused(400, "M_USER_IN_USE", "User ID already taken.")
        self.users[user_id] = localpart
        return {"user_id": user_id}

    def _profile(self, method: str, user_id: str, field: str, body: dict[str, Any]) -> dict[str, Any]:
        if user_id not in self.users:
            raise Refused(404, "M_NOT_FOUND", "Profile was not found")
        if field == "avatar_url":
            if method == "PUT":
                self.avatars[user_id] = str(body.get("avatar_url"))
                return {}
            return {"avatar_url": self.avatars[user_id]} if user_id in self.avatars else {}
        if method == "PUT":
            self.users[user_id] = str(body.get("displayname"))
            return {}
        return {"displayname": self.users[user_id]}

    def _create(self, user: str, body: dict[str, Any]) -> dict[str, Any]:
        alias = f"#{body['room_alias_name']}:{self.server_name}" if body.get("room_alias_name") else None
        if alias and alias in self.store.aliases:
            raise Refused(400, "M_ROOM_IN_USE", "Room alias already taken")
        s = self.store
        room = Room(s.new_id("!"), user)
        s.rooms[room.room_id] = room
        if alias:
            s.aliases[alias] = room.room_id
        s.append(room, user, "m.room.create", {"room_version": room.version, **(body.get("creation_content") or {})},
                 state_key="")
        s.append(room, user, "m.room.member", {"membership": "join"}, state_key=user)
        power = {"users": {}, "users_default": 0, "events_default": 0, "state_default": 50, "invite": 0,
                 "kick": 50, "ban": 50, "redact": 50, "events": {}}
        s.append(room, user, "m.room.power_levels", {**power, **(body.get("power_level_content_override") or {})},
                 state_key="")
        preset = [("m.room.join_rules", {"join_rule": "invite"}),
                  ("m.room.history_visibility", {"history_visibility": "shared"}),
                  ("m.room.guest_access", {"guest_access": "can_join"})]
        for etype, content in preset:
            s.append(room, user, etype, content, state_key="")
        for ev in body.get("initial_state") or []:
            s.append(room, user, ev["type"], ev.get("content") or {}, state_key=ev.get("state_key", ""))
        if alias:
            s.append(room, user, "m.room.canonical_alias", {"alias": alias}, state_key="")
        for etype, key in (("m.room.name", "name"), ("m.room.topic", "topic")):
            if body.get(key):
                s.append(room, user, etype, {key: body[key]}, state_key="")
        for target in body.get("invite") or []:
            s.invite(room, user, target, None)
        return {"room_id": room.room_id}

    def _room_request(self, method: str, p: list[str], user: str, params: dict[str, str],
                      body: dict[str, Any]) -> Any:
        room = self.store.room(p[0])
        match (method, p[1]):
            case ("POST", "invite"):
                self.store.invite(room, user, str(body["user_id"]), body.get("reason"))
            case ("POST", "kick"):
                self.store.kick(room, user, str(body["user_id"]), str(body.get("reason", "")))
            case ("POST", "leave"):
                self.store.leave(room, user)
            case ("GET", "state") if len(p) == 2:
                return self.store.visible_state(room, user)
            case ("GET", "state"):
                self.store.joined(room, user)
                ev = room.state.get((p[2], p[3] if len(p) > 3 else ""))
                if ev is None:
                    raise Refused(404, "M_NOT_FOUND", "Event not found.")
                return client_event(ev) if params.get("format") == "event" else dict(ev["content"])
            case ("PUT", "state"):
                ev = self.store.send_state(room, user, p[2], p[3] if len(p) > 3 else "", body)
                return {"event_id": ev["event_id"]}
            case ("PUT", "send"):
                key = (user, p[3])
                if key not in self._txns:  # a resent transaction id is the same event
                    self._txns[key] = self.store.send_message(room, user, p[2], body)["event_id"]
                return {"event_id": self._txns[key]}
            case ("PUT", "redact"):
                key = (user, f"redact/{p[3] if len(p) > 3 else ''}")
                if key not in self._txns:
                    self._txns[key] = self.store.redact(room, user, p[2], str(body.get("reason", "")))["event_id"]
                return {"event_id": self._txns[key]}
            case ("GET", "messages"):
                return self._messages(room, user, params)
            case _:
                raise Refused(404, "M_UNRECOGNIZED", "Unrecognized request")
        return {}

    def _messages(self, room: Room, user: str, params: dict[str, str]) -> dict[str, Any]:
        self.store.joined(room, user)
        end = int(params.get("from", len(room.timeline)))
        start = max(0, end - int(params.get("limit", "10")))
        chunk = [client_event(e) for e in reversed(room.timeline[start:end])]
        return {"chunk": chunk, "start": str(end), **({"end": str(start)} if start > 0 else {})}

    def _sync(self, user: str, params: dict[str, str]) -> dict[str, Any]:
        """Rooms with events of the filter's types since the token, in the user's sections, as
        Synapse answers: the newest `limit` events (`limited` when there were more), and for joined
        rooms a state block: the full state at the timeline's start for a room newly joined (or an
        initial sync), else what changed between the token and the timeline's start."""
        filt = json.loads(params.get("filter", "{}"))
        room_filter = filt.get("room") or {}
        timeline_filter = room_filter.get("timeline") or {}
        types, limit = timeline_filter.get("types"), int(timeline_filter.get("limit", 10))
        state_filter = room_filter.get("state") or {}
        only = room_filter.get("rooms")
        since = int(params["since"][1:]) if params.get("since") else None
        out: dict[str, dict[str, Any]] = {"join": {}, "leave": {}, "invite": {}}
        for room_id, room in self.store.rooms.items():
            if only is not None and room_id not in only:
                continue
            mine = room.membership(user)
            section = {"join": "join", "invite": "invite", "leave": "leave", "ban": "leave"}.get(mine or "")
            if section is None:
                continue
            events = [e for e in room.timeline if (since is None or e["stream"] > since)
                      and (types is None or e["type"] in types)]
            if not ((since is None and section == "join") or events):
                continue
            shown = events[-limit:] if limit > 0 else []
            entry: dict[str, Any] = {"timeline": {"events": [client_event(e) for e in shown],
                                                  "limited": len(shown) < len(events)}}
            if section == "join":
                entry["state"] = {"events": self._state_block(room, user, since, shown, state_filter)}
            out[section][room_id] = entry
        return {"next_batch": f"s{self.store.pos}", "rooms": out}

    def _state_block(self, room: Room, user: str, since: int | None, shown: list[dict[str, Any]],
                     state_filter: dict[str, Any]) -> list[dict[str, Any]]:
        start = shown[0]["stream"] if shown else self.store.pos + 1
        at_start = _state_at(room, start - 1)
        before = {} if since is None else _state_at(room, since)
        newly = (before.get(("m.room.member", user)) or {}).get("content", {}).get("membership") != "join"
        block = [ev for key, ev in at_start.items() if newly or before.get(key) is not ev]
        types = state_filter.get("types")
        senders = {e["sender"] for e in shown}
        return [client_event(ev) for ev in block if (types is None or ev["type"] in types)
                and not (state_filter.get("lazy_load_members") and ev["type"] == "m.room.member"
                         and ev["state_key"] not in senders)]


def _state_at(room: Room, pos: int) -> dict[tuple[str, str], dict[str, Any]]:
    """The room's state after the events up to stream position `pos`."""
    return {(ev["type"], ev["state_key"]): ev for ev in room.timeline if ev["stream"] <= pos and "state_key" in ev}
