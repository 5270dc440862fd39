"""Who called the WebhookService: every call's operation, webhook and answer, by the address
it came from (`GET /emulator/v1/calls`). With several clients — replicas of an operator,
each a Pod with an address of its own — this says which of them did what, and when."""

from __future__ import annotations

import re
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gemini_webhooks.contracts.times import rfc3339

_WEBHOOKS = re.compile(r"^/(?:v1|v1beta|v1alpha)/webhooks(?:/(?P<rest>[^/]+)(?P<tail>/.*)?)?$")
_METHODS = {"ping": "ping", "rotateSigningSecret": "rotateSigningSecret"}


def operation(method: str, path: str) -> tuple[str, str | None] | None:
    """The WebhookService operation a request names and its webhook id, or None when the
    path is not the WebhookService's (a wrong method is still the caller's call)."""
    found = _WEBHOOKS.match(path)
    if found is None:
        return None
    rest, tail = found["rest"], found["tail"]
    if rest is None:
        return ("list" if method == "GET" else "create" if method == "POST" else method), None
    webhook_id, _, custom = rest.partition(":")
    if tail == "/rotate_secret":
        return "rotateSigningSecret", webhook_id
    if tail is not None:
        return method, webhook_id
    if custom:
        return _METHODS.get(custom, custom), webhook_id
    named = {"GET": "get", "PATCH": "update", "DELETE": "delete"}
    return named.get(method, method), webhook_id


@dataclass(frozen=True)
class Call:
    time: datetime
    source: str
    operation: str
    webhook_id: str | None
    status_code: int

    def show(self) -> dict[str, Any]:
        return {
            "time": rfc3339(self.time, "microseconds"),
            "source": self.source,
            "operation": self.operation,
            "webhook_id": self.webhook_id,
            "status_code": self.status_code,
        }


class CallLog:
    """The last `keep` calls in order, and a count of every call by source and operation
    since the last reset (sources are few: the count stays small however long it runs)."""

    def __init__(self, keep: int = 10_000) -> None:
        self._recent: deque[Call] = deque(maxlen=keep)
        self._counts: dict[str, Counter[str]] = {}

    def record(self, call: Call) -> None:
        self._recent.append(call)
        self._counts.setdefault(call.source, Counter())[call.operation] += 1

    def clear(self) -> None:
        self._recent.clear()
        self._counts.clear()

    def show(self, source: str | None = None) -> dict[str, Any]:
        counts = {
            s: dict(sorted(c.items()))
            for s, c in sorted(self._counts.items())
            if source is None or s == source
        }
        calls = [c.show() for c in self._recent if source is None or c.source == source]
        return {"by_source": counts, "calls": calls}
