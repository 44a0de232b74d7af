"""The bridge's error tree: temporary errors are retried, permanent ones stop and report."""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """A configuration file or value is wrong; names the file and key."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        self.file = file
        self.key = key
        where = ":".join(part for part in (file, key) if part)
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


class MatrixError(BridgeError):
    """A homeserver request failed."""

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


def classify_http_error(
    status: int, body: dict[str, object] | None, *, context: str
) -> MatrixError:
    """Turn a homeserver error answer into a typed error (pure; used by every client)."""
    body = body or {}
    errcode = str(body.get("errcode") or "") or None
    error = str(body.get("error") or "")
    message = f"{context}: HTTP {status} {errcode or ''} {error}".strip()
    if status == 429 or errcode == "M_LIMIT_EXCEEDED":
        retry_ms = body.get("retry_after_ms")
        retry_after = float(retry_ms) / 1000 if isinstance(retry_ms, (int, float)) else None
        return TemporaryMatrixError(message, status=status, errcode=errcode, retry_after=retry_after)
    if status >= 500 or status == 408:
        return TemporaryMatrixError(message, status=status, errcode=errcode)
    return PermanentMatrixError(message, status=status, errcode=errcode)
