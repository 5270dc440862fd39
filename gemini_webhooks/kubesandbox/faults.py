"""Fault injection: what real clusters do to operators, on demand.

Rules are matched against every resource request; a matching rule answers in place of
the API server (409, 429 with `Retry-After`, 500, ...) for its next `count` requests.
Thread-safe: tests may add rules from another thread than the server's event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from gemini_webhooks.kubesandbox.errors import ApiError

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Gone",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


class AuditEntry(NamedTuple):
    """One served resource request, in RBAC terms."""

    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str


@dataclass
class Fault:
    code: int
    count: int
    verb: str | None = None
    resource: str | None = None
    group: str | None = None
    subresource: str | None = None
    namespace: str | None = None
    name: str | None = None
    retry_after: int | None = None
    message: str = ""

    def matches(self, entry: AuditEntry, name: str | None) -> bool:
        return (
            (self.verb is None or self.verb == entry.verb)
            and (self.resource is None or self.resource == entry.resource)
            and (self.group is None or self.group == entry.api_group)
            and (self.subresource is None or self.subresource == entry.subresource)
            and (self.namespace is None or self.namespace == entry.namespace)
            and (self.name is None or self.name == name)
        )

    def error(self) -> ApiError:
        reason = REASONS.get(self.code, "InternalError")
        message = self.message or f"injected fault: {self.code} {reason}"
        details: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            details["retryAfterSeconds"] = self.retry_after
            headers["Retry-After"] = str(self.retry_after)
        return ApiError(self.code, reason, message, details, headers)


class FaultError(ValueError):
    """A fault rule that cannot be understood."""


def fault_from_json(data: Any) -> Fault:
    if not isinstance(data, Mapping):
        raise FaultError("a fault must be a JSON object")
    unknown = set(data) - {
        "code",
        "count",
        "verb",
        "resource",
        "group",
        "subresource",
        "namespace",
        "name",
        "retryAfter",
        "message",
    }
    if unknown:
        raise FaultError(f"unknown fault fields: {sorted(unknown)}")
    code = data.get("code")
    if not isinstance(code, int) or not 400 <= code <= 599:
        raise FaultError("code must be an HTTP error status (400-599)")
    count = data.get("count", 1)
    if not isinstance(count, int) or count < 1:
        raise FaultError("count must be a positive integer")
    verb = data.get("verb")
    if verb is not None and verb not in VERBS:
        raise FaultError(f"verb must be one of {list(VERBS)}")
    retry_after = data.get("retryAfter")
    if retry_after is not None and (not isinstance(retry_after, int) or retry_after < 0):
        raise FaultError("retryAfter must be a non-negative integer")
    strings = {}
    for field in ("resource", "group", "subresource", "namespace", "name", "message"):
        value = data.get(field)
        if value is not None and not isinstance(value, str):
            raise FaultError(f"{field} must be a string")
        strings[field] = value
    return Fault(
        code=code,
        count=count,
        verb=verb,
        retry_after=retry_after,
        resource=strings["resource"],
        group=strings["group"],
        subresource=strings["subresource"],
        namespace=strings["namespace"],
        name=strings["name"],
        message=strings["message"] or "",
    )


def fault_to_json(fault: Fault) -> dict[str, Any]:
    data = asdict(fault)
    data["retryAfter"] = data.pop("retry_after")
    return {k: v for k, v in data.items() if v not in (None, "")}


class Faults:
    """The fault rules of one sandbox, plus hooks for stream cuts and RV expiry."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._cut_watches: Callable[[str | None, str | None], int] | None = None
        self._expire: Callable[[], int] | None = None

    def fail(
        self,
        code: int,
        *,
        count: int = 1,
        verb: str | None = None,
        resource: str | None = None,
        group: str | None = None,
        subresource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        retry_after: int | None = None,
        message: str = "",
    ) -> Fault:
        """Make the next `count` requests matching all the given criteria fail with `code`."""
        payload: dict[str, Any] = {
            "code": code,
            "count": count,
            "verb": verb,
            "resource": resource,
            "group": group,
            "subresource": subresource,
            "namespace": namespace,
            "name": name,
            "retryAfter": retry_after,
            "message": message or None,
        }
        return self.add(fault_from_json({k: v for k, v in payload.items() if v is not None}))

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._rules.append(fault)
        return fault

    def take(self, entry: AuditEntry, name: str | None) -> Fault | None:
        with self._lock:
            for fault in self._rules:
                if fault.count > 0 and fault.matches(entry, name):
                    fault.count -= 1
                    if fault.count == 0:
                        self._rules.remove(fault)
                    return fault
        return None

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def cut_watches(self, resource: str | None = None, group: str | None = None) -> int:
        """End every open watch stream (of one resource, if given); returns how many."""
        if self._cut_watches is None:
            raise RuntimeError("the sandbox is not serving")
        return self._cut_watches(resource, group)

    def expire_resource_versions(self) -> int:
        """Forget the event history: resuming a watch from any earlier RV gets 410 Gone."""
        if self._expire is None:
            raise RuntimeError("the sandbox is not serving")
        return self._expire()
