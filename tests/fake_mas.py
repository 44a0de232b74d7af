"""A fake Matrix Authentication Service built on the contract the bridge keeps of MAS's admin API
(tests/contracts/mas-admin-1.22.0.schema.json): every request is checked against it (what breaks
it is recorded and refused with a 400, as MAS would), and every answer is one the contract allows."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import jsonschema

CONTRACT = json.loads((Path(__file__).parent / "contracts" / "mas-admin-1.22.0.schema.json").read_text())
ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid() -> str:
    return "".join(secrets.choice(ULID_CHARS) for _ in range(26))


class FakeMas:
    def __init__(self, *, client_id: str, client_secret: str) -> None:
        self.client_id, self.client_secret = client_id, client_secret
        self.tokens: set[str] = set()
        self.users: dict[str, dict[str, Any]] = {}  # id -> attributes
        self.emails: dict[str, dict[str, Any]] = {}
        self.links: dict[str, dict[str, Any]] = {}
        self.displaynames: dict[str, str | None] = {}
        self.erased: dict[str, bool] = {}  # user id -> whether the homeserver was asked to erase it
        self.requests: list[tuple[str, str, Any]] = []
        self.violations: list[str] = []  # requests the contract does not allow

    async def close(self) -> None:
        pass

    def _operation(self, method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        for name, op in CONTRACT["operations"].items():
            pattern = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", op["path"]) + "$"
            if op["method"] == method and (m := re.match(pattern, path)):
                return name, op, {k: unquote(v) for k, v in m.groupdict().items()}
        return None

    def _answer(self, op: dict[str, Any], status: int, body: Any) -> tuple[int, Any]:
        jsonschema.validate(body, op["responses"][str(status)])  # the fake keeps to the contract too
        return status, body

    async def send(self, method: str, path: str, *, params: Mapping[str, str], headers: Mapping[str, str],
                   json: Any, timeout: float | None, data: bytes | None = None) -> tuple[int, Any]:
        self.requests.append((method, path, json))
        if path == CONTRACT["token"]["path"]:
            return self._token(headers, data)
        found = self._operation(method, path)
        if found is None:
            self.violations.append(f"{method} {path}: not an operation of the contract")
            return 404, {"errors": [{"title": "Not found"}]}
        name, op, args = found
        if headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return 401, {"errors": [{"title": "Unauthorized"}]}
        if "request" in op:
            try:
                jsonschema.validate(json, op["request"], format_checker=jsonschema.FormatChecker())
            except jsonschema.ValidationError as exc:
                self.violations.append(f"{name}: {exc.message}")
                return 400, {"errors": [{"title": exc.message}]}
        unknown = set(params) - set(op.get("query", []))
        if unknown:
            self.violations.append(f"{name}: unknown query parameters {sorted(unknown)}")
        return getattr(self, "_" + name)(op, args, json or {}, params)

    def _token(self, headers: Mapping[str, str], data: bytes | None) -> tuple[int, Any]:
        form = {k: v[0] for k, v in parse_qs((data or b"").decode()).items()}
        try:
            jsonschema.validate(form, CONTRACT["token"]["form"])
        except jsonschema.ValidationError as exc:
            self.violations.append(f"token: {exc.message}")
            return 400, {"error": "invalid_request"}
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if headers.get("Authorization") != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        token = "mat_" + secrets.token_hex(8)
        self.tokens.add(token)
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300}

    def _user(self, user_id: str) -> dict[str, Any]:
        return {"data": {"type": "user", "id": user_id, "attributes": self.users[user_id]}}

    def _getUserByUsername(self, op: dict[str, Any], args: dict[str, str], *_: Any) -> tuple[int, Any]:
        for uid, attrs in self.users.items():
            if attrs["username"] == args["username"]:
                return self._answer(op, 200, self._user(uid))
        return self._answer(op, 404, {"errors": [{"title": "User not found"}]})

    def _getUser(self, op: dict[str, Any], args: dict[str, str], *_: Any) -> tuple[int, Any]:
        if args["id"] not in self.users:
            return self._answer(op, 404, {"errors": [{"title": "User not found"}]})
        return self._answer(op, 200, self._user(args["id"]))

    def _createUser(self, op: dict[str, Any], _: dict[str, str], body: dict[str, Any], *__: Any) -> tuple[int, Any]:
        if any(u["username"] == body["username"] for u in self.users.values()):
            return self._answer(op, 409, {"errors": [{"title": "User already exists"}]})
        uid = ulid()
        self.users[uid] = {"username": body["username"], "created_at": "2026-11-30T00:00:00Z", "locked_at": None,
                           "deactivated_at": None, "admin": False}
        self.displaynames[uid] = body.get("displayname")
        return self._answer(op, 201, self._user(uid))

    def _deactivateUser(self, op: dict[str, Any], args: dict[str, str], body: dict[str, Any], *_: Any
                        ) -> tuple[int, Any]:
        if args["id"] not in self.users:
            return self._answer(op, 404, {"errors": [{"title": "User not found"}]})
        self.users[args["id"]]["deactivated_at"] = "2026-11-30T01:00:00Z"
        self.erased[args["id"]] = not body.get("skip_erase", False)
        return self._answer(op, 200, self._user(args["id"]))

    def _listUserEmails(self, op: dict[str, Any], _: dict[str, str], __: Any, params: Mapping[str, str]
                        ) -> tuple[int, Any]:
        found = [{"type": "user-email", "id": eid, "attributes": e} for eid, e in self.emails.items()
                 if e["email"] == params.get("filter[email]", e["email"])]
        return self._answer(op, 200, {"data": found, "links": {"self": "/api/admin/v1/user-emails"}})

    def _addUserEmail(self, op: dict[str, Any], _: dict[str, str], body: dict[str, Any], *__: Any) -> tuple[int, Any]:
        if body["user_id"] not in self.users:
            return self._answer(op, 404, {"errors": [{"title": "User not found"}]})
        if any(e["email"] == body["email"] for e in self.emails.values()):
            return self._answer(op, 409, {"errors": [{"title": "Email already in use"}]})
        eid = ulid()
        self.emails[eid] = {"created_at": "2026-11-30T00:00:00Z", "user_id": body["user_id"], "email": body["email"]}
        return self._answer(op, 201, {"data": {"type": "user-email", "id": eid, "attributes": self.emails[eid]}})

    def _addUpstreamOAuthLink(self, op: dict[str, Any], _: dict[str, str], body: dict[str, Any], *__: Any
                              ) -> tuple[int, Any]:
        if body["user_id"] not in self.users:
            return self._answer(op, 404, {"errors": [{"title": "User not found"}]})
        for lid, link in self.links.items():
            if (link["provider_id"], link["subject"]) == (body["provider_id"], body["subject"]):
                same = link["user_id"] == body["user_id"]
                return self._answer(op, 200 if same else 409, {"data": {
                    "type": "upstream-oauth-link", "id": lid, "attributes": link}} if same else
                    {"errors": [{"title": "Link already exists"}]})
        lid = ulid()
        self.links[lid] = {"created_at": "2026-11-30T00:00:00Z", "provider_id": body["provider_id"],
                           "subject": body["subject"], "user_id": body["user_id"], "human_account_name": None}
        return self._answer(op, 201, {"data": {"type": "upstream-oauth-link", "id": lid, "attributes": self.links[lid]}})
