"""RFC 3339 times, written as Kubernetes and the Gemini API write them (UTC, with `Z`) and
read back: one writer and one reader for every component."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

# "seconds": Kubernetes' metav1.Time (truncated, never rounded); "microseconds": its
# MicroTime and the Gemini API's times; "milliseconds": Redis stream entry ids';
# "auto": microseconds only when there are any.
Precision = Literal["seconds", "milliseconds", "microseconds", "auto"]


def rfc3339(value: datetime, precision: Precision = "seconds") -> str:
    return value.astimezone(UTC).isoformat(timespec=precision).replace("+00:00", "Z")


def now_rfc3339(precision: Precision = "seconds") -> str:
    return rfc3339(datetime.now(UTC), precision)


def parse_rfc3339(value: Any) -> datetime | None:
    """The time `value` names, or None when it is not a time with its zone: a missing value,
    another type, a date alone, or a time without a zone (which no reader could place)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
