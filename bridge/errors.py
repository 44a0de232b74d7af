"""The bridge's error tree: temporary errors are retried, permanent ones stop and report."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration file or value is wrong; names the file and key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.file = file
        self.key = key
        self.line = line
        where = ":".join(part for part in (file, str(line) if line else None, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InputError(BridgeError):
    """Bad input data (directory file, policy); names the file and line."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        self.file = file
        self.line = line
        where = file or ""
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}" if where else message)


class StoreError(BridgeError):
    """The bridge's own database failed or holds something unexpected."""


class NotYet(BridgeError):
    """An event that can't be handled yet (waiting on something else): its handler asks the
    dispatcher to look at it again at `until_ms`, which is no failure."""

    def __init__(self, message: str, *, until_ms: int) -> None:
        super().__init__(message)
        self.until_ms = until_ms


class MatrixError(BridgeError):
    """A homeserver request failed."""

    errcode_name: str | None = None  # the spec's errcode a subclass stands for

    def __init__(self, message: str, *, status: int | None = None, errcode: str | None = None) -> None:
        self.status = status
        self.errcode = errcode
        super().__init__(message)


class TemporaryMatrixError(MatrixError):
    """Worth retrying: rate limit, 5xx, timeout, connection reset."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errcode: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, errcode=errcode)
        self.retry_after = retry_after


class PermanentMatrixError(MatrixError):
    """Retrying will not help: forbidden, not found, bad request."""


# --- by errcode (the spec's error codes), like mautrix's `errors/`: callers catch a class, never
# a message. Only where Synapse uses one errcode for several situations (M_FORBIDDEN for "already
# in the room" and "not in the room") does an ensure-step decide by reading the state, not the text.

class MForbidden(PermanentMatrixError):
    errcode_name = "M_FORBIDDEN"


class MNotFound(PermanentMatrixError):
    errcode_name = "M_NOT_FOUND"


class MUnknownToken(PermanentMatrixError):
    errcode_name = "M_UNKNOWN_TOKEN"


class MMissingToken(PermanentMatrixError):
    errcode_name = "M_MISSING_TOKEN"


class MRoomInUse(PermanentMatrixError):
    errcode_name = "M_ROOM_IN_USE"


class MUserInUse(PermanentMatrixError):
    errcode_name = "M_USER_IN_USE"


class MBadJson(PermanentMatrixError):
    errcode_name = "M_BAD_JSON"


class MInvalidParam(PermanentMatrixError):
    errcode_name = "M_INVALID_PARAM"


class MExclusive(PermanentMatrixError):
    errcode_name = "M_EXCLUSIVE"


class MUnrecognized(PermanentMatrixError):
    errcode_name = "M_UNRECOGNIZED"


class MLimitExceeded(TemporaryMatrixError):
    errcode_name = "M_LIMIT_EXCEEDED"


ERRCODES: dict[str, type[MatrixError]] = {
    cls.errcode_name: cls for cls in (MForbidden, MNotFound, MUnknownToken, MMissingToken, MRoomInUse, MUserInUse,
                                      MBadJson, MInvalidParam, MExclusive, MUnrecognized, MLimitExceeded)}
# Without an errcode (a proxy's error page), the status decides.
_BY_STATUS: dict[int, type[MatrixError]] = {403: MForbidden, 404: MNotFound, 401: MUnknownToken, 429: MLimitExceeded}


def classify_http_error(
    status: int, body: dict[str, object] | None, *, context: str
) -> MatrixError:
    """Turn a homeserver error answer into a typed error (pure; used by every client).

    5xx, 408 and 429 are temporary whatever the errcode; otherwise the errcode's class, then the
    status's, then a plain permanent error."""
    body = body or {}
    errcode = str(body.get("errcode") or "") or None
    error = str(body.get("error") or "")
    message = f"{context}: HTTP {status} {errcode or ''} {error}".strip()
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        retry_ms = body.get("retry_after_ms")
        retry_after = float(retry_ms) / 1000 if isinstance(retry_ms, (int, float)) else None
        return MLimitExceeded(message, status=status, errcode=errcode, retry_after=retry_after)
    if status >= 500 or status == 408:
        return TemporaryMatrixError(message, status=status, errcode=errcode)
    cls = ERRCODES.get(errcode or "") or _BY_STATUS.get(status) or PermanentMatrixError
    return cls(message, status=status, errcode=errcode)
