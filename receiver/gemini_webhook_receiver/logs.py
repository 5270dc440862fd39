"""Structured logs: one JSON object per line; `webhook_id` correlates every line of a delivery.

Callers pass fields through `extra={"fields": {...}}`; never secrets or bodies.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from gemini_webhooks.contracts.times import rfc3339

logger = logging.getLogger("gemini_webhook_receiver")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": rfc3339(datetime.fromtimestamp(record.created, UTC), "milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{record.levelname} {record.name}: {record.getMessage()} {extra}".rstrip()


def configure(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Warnings (a library's, say PyJWT's about a short key) would go to stderr as plain
    # text, breaking one JSON object per line: they become log records of `py.warnings`.
    logging.captureWarnings(True)


def log(level: int, message: str, **fields: Any) -> None:
    if logger.isEnabledFor(level):
        logger.log(level, message, extra={"fields": fields})
