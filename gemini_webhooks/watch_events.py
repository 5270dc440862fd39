"""What a Kubernetes list or watch says, read from its bytes: pure functions, no I/O.

A watch stream is one JSON event per line; each line is bounded in bytes (a huge or endless
line is an error, not unbounded memory) and parsed with its nesting bounded (`json_depth`).
The receiver's watch of its one Secret and the operator's watch cache both read their
streams here; what each keeps of an object is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gemini_webhooks import json_depth

# A Secret or a ConfigMap holds at most 1 MiB of data, a Secret's sent base64-encoded (4/3)
# with its metadata: 2 MiB leaves room for both and for the event's framing.
MAX_EVENT_BYTES = 2 * 1024 * 1024

JSON = dict[str, Any]


class WatchStreamError(Exception):
    """The API answered something we cannot follow; the caller lists again."""

    status: int | None = None


class ApiError(WatchStreamError):
    def __init__(self, status: int | None) -> None:
        super().__init__(f"the API answered {status}")
        self.status = status


class ResourceVersionGone(ApiError):
    """410 Gone: the server no longer has the history since our resourceVersion."""

    def __init__(self) -> None:
        super().__init__(410)


class MalformedEvent(WatchStreamError):
    """A line or body that is not the JSON of a watch event or a list."""


class OversizedEvent(WatchStreamError):
    """A line or body longer than its limit."""


@dataclass(frozen=True)
class Event:
    kind: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    object: JSON | None  # the object (its last state when DELETED); None for a bookmark
    resource_version: str | None


@dataclass(frozen=True)
class ListPage:
    items: list[JSON]
    resource_version: str
    continue_token: str | None  # more pages follow


class LineSplitter:
    """Splits a byte stream into its non-empty lines, each at most `limit` bytes."""

    def __init__(self, limit: int = MAX_EVENT_BYTES) -> None:
        self._limit = limit
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines `chunk` completes; raises OversizedEvent once a line exceeds the limit."""
        searched = len(self._buffer)  # no newline before this: search only the new bytes
        self._buffer += chunk
        lines = []
        while (end := self._buffer.find(b"\n", searched)) >= 0:
            if end > self._limit:
                raise OversizedEvent(f"a watch event over {self._limit} bytes")
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            searched = 0
            if line:
                lines.append(line)
        if len(self._buffer) > self._limit:
            raise OversizedEvent(f"a watch event over {self._limit} bytes")
        return lines


def json_object(raw: bytes) -> JSON:
    try:
        value = json_depth.loads(raw)  # a deep document is refused, not a RecursionError
    except ValueError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(value, dict):
        raise MalformedEvent("not a JSON object")
    return value


def mapping(value: Any, what: str) -> JSON:
    """`value` as an object (None: an empty one); MalformedEvent for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedEvent(f"{what} is not an object")
    return value


def resource_version(obj: JSON) -> str | None:
    version = mapping(obj.get("metadata"), "metadata").get("resourceVersion")
    return str(version) if version else None


def name(obj: JSON) -> str:
    """An object's metadata.name (what a cache keys it by); MalformedEvent without one."""
    found = mapping(obj.get("metadata"), "metadata").get("name")
    if not isinstance(found, str) or not found:
        raise MalformedEvent("an object without a name")
    return found


def parse_event(line: bytes) -> Event:
    """One line of a watch stream; raises ResourceVersionGone or ApiError for the server's
    ERROR events, MalformedEvent for anything else we do not know."""
    event = json_object(line)
    kind, obj = event.get("type"), event.get("object")
    if not isinstance(obj, dict):
        raise MalformedEvent("an event without an object")
    if kind == "ERROR":
        code = obj.get("code")
        if code == 410:
            raise ResourceVersionGone()
        raise ApiError(code if isinstance(code, int) else None)
    if kind in ("ADDED", "MODIFIED", "DELETED"):
        return Event(kind, obj, resource_version(obj))
    if kind == "BOOKMARK":
        return Event(kind, None, resource_version(obj))
    raise MalformedEvent(f"an event of unknown type {str(kind)[:32]!r}")


def parse_list(body: bytes) -> ListPage:
    """One page of a list: its objects, its resourceVersion, its continuation token."""
    listed = json_object(body)
    version = resource_version(listed)
    items = listed.get("items") or []
    if not isinstance(items, list) or not version:
        raise MalformedEvent("not a list with a resourceVersion")
    objects = [mapping(item, "a listed object") for item in items]
    token = mapping(listed.get("metadata"), "metadata").get("continue")
    return ListPage(objects, version, str(token) if token else None)
