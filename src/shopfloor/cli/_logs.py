"""Logging of the long-running commands (``up``, ``demo``, ``serve``): text or JSON lines.

``--log-format json`` writes one JSON object per line on stderr: ``ts`` (RFC 3339, UTC, with
milliseconds), ``level``, ``logger``, ``message``, every ``extra=`` field of the call, and
``exc_info`` with the traceback when there is one. uvicorn's loggers are routed through the
same handler, so the server's lines are JSON too.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import typer

__all__ = ["LOG_FORMAT_OPT", "JsonFormatter", "LogFormat", "adopt_uvicorn", "setup_logging"]

_TEXT_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"
_UVICORN: Final = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
    "taskName",
}


class LogFormat(StrEnum):
    """``--log-format``: human-readable text, or one JSON object per line."""

    text = "text"
    json = "json"


LOG_FORMAT_OPT = typer.Option(
    LogFormat.text, "--log-format", help="text, or json: one JSON object per line on stderr."
)

_json_mode = False


class JsonFormatter(logging.Formatter):
    """A log record as one line of JSON (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(fmt: LogFormat | str, level: int = logging.WARNING) -> None:
    """Configure the root logger for ``fmt`` on stderr.

    Text is :func:`logging.basicConfig`'s (nothing changes when logging is configured
    already); JSON replaces plain stream handlers on the root with the JSON one.
    """
    global _json_mode
    _json_mode = LogFormat(fmt) is LogFormat.json
    if not _json_mode:
        logging.basicConfig(level=level, format=_TEXT_FORMAT)
        return
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) is logging.StreamHandler:
            root.removeHandler(old)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    adopt_uvicorn()


def adopt_uvicorn() -> None:
    """In JSON mode, send uvicorn's records to the root handler (uvicorn installs its own
    text handlers whenever a server configuration is made: call this after that)."""
    if not _json_mode:
        return
    for name in _UVICORN:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
