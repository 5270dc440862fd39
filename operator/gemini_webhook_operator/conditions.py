"""Status conditions per the Kubernetes API conventions, computed purely."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def set_condition(
    conditions: Sequence[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """The conditions with `type_` set; `lastTransitionTime` moves only when status does."""
    status_text = "Unknown" if status is None else ("True" if status else "False")
    previous = next((c for c in conditions if c.get("type") == type_), None)
    transition = (
        previous.get("lastTransitionTime")
        if previous is not None and previous.get("status") == status_text
        else None
    ) or rfc3339(now)
    updated = {
        "type": type_,
        "status": status_text,
        "reason": reason,
        "message": message[:4096],
        "lastTransitionTime": transition,
        "observedGeneration": generation,
    }
    others = [dict(c) for c in conditions if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: str(c.get("type")))


def condition(conditions: Sequence[dict[str, Any]], type_: str) -> dict[str, Any] | None:
    return next((dict(c) for c in conditions if c.get("type") == type_), None)
