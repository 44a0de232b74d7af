"""structlog set-up: JSON off a terminal, readable console on one; secrets and bodies scrubbed."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys that must never reach a log line, whatever a caller passes by mistake.
_SECRET_KEYS = frozenset(
    {"as_token", "hs_token", "access_token", "token", "password", "body", "formatted_body",
     "store_key", "pickle_key", "registration_shared_secret", "admin_token", "content"}
)


def _scrub(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key in _SECRET_KEYS:
            event_dict[key] = "[redacted]"
    return event_dict


_STATIC = re.compile(r"[A-Za-z][A-Za-z ]{0,59}")


class ThirdPartyScrub(logging.Filter):
    """nio and aiohttp write what they handle into their messages: nio quotes an event that fails
    its schema check, decrypted content included. Their records keep only their own opening words
    ("Error validating event"), never what follows."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in ("nio", "aiohttp", "peewee"):
            head = record.getMessage().split(":", 1)[0].split("\n", 1)[0]
            static = _STATIC.fullmatch(head.strip())
            error = f" [{record.exc_info[0].__name__}]" if record.exc_info and record.exc_info[0] else ""
            record.msg = f"{record.name}: {static.group(0) if static else 'message'}{error} (details withheld)"
            record.args = ()
            record.exc_info = None  # an exception's text may quote the content too
            record.exc_text = None
        return True


def configure(*, level: str = "info", json: bool | None = None) -> None:
    """Configure structlog once for the process."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(message)s")
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ThirdPartyScrub) for f in handler.filters):
            handler.addFilter(ThirdPartyScrub())
    # nio logs decrypted payloads at debug level; keep third parties at warning.
    for noisy in ("nio", "peewee", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _scrub,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger(**bound: Any) -> Any:
    """A logger with the given context bound (txn_id, room_id…)."""
    # Initial values go to the lazy proxy: configuration is read when the logger is used, so
    # module-level loggers honour a configure() that happens later.
    return structlog.get_logger("ent_bridge", **bound)
