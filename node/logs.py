"""Logging set-up: human-readable text on a terminal, JSON lines otherwise.

Under systemd, in a container or when `redwood localnet` redirects a node to
`node.log`, stdout is not a terminal and every record becomes one JSON object
per line (``ts``, ``level``, ``logger``, ``msg``, plus any ``extra=`` fields and
``exc`` for tracebacks), which log shippers parse without a grammar. On a
terminal the same records read as ``05:20:01.123 INFO  redwood.driver: msg``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

# attributes every LogRecord has; anything else came from `extra=` and is emitted
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, _jsonable(value))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL logger: message key=value ...`."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        millis = int(record.msecs)
        extras = " ".join(f"{k}={_jsonable(v)}" for k, v in _extras(record).items())
        line = f"{clock}.{millis:03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _iso_time(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def choose_format(fmt: str, stream: TextIO) -> str:
    """Resolve "auto" to "text" on a terminal and "json" otherwise."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):
        return "json"


def setup_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> str:
    """Configure the root logger once (replacing earlier handlers); return the format used."""
    stream = stream if stream is not None else sys.stderr
    chosen = choose_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # libraries that are chatty at INFO
    for noisy in ("hypercorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return chosen
