"""What a Kubernetes list or watch of one Secret says, read from its bytes: pure functions,
no I/O. A watch stream is one JSON event per line; each line (and a list's body) is bounded
in bytes, so a huge or endless line is an error, not unbounded memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import json_depth

# A Secret holds at most 1 MiB of data, sent base64-encoded (4/3) with its metadata: 2 MiB
# leaves room for both and for the event's framing.
MAX_EVENT_BYTES = 2 * 1024 * 1024

Data = dict[str, str]  # a Secret's `data`: base64-encoded values


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
    """A line or body that is not the JSON of a watch event or a Secret list."""


class OversizedEvent(WatchStreamError):
    """A line or body longer than MAX_EVENT_BYTES."""


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # ADDED, MODIFIED, DELETED or BOOKMARK
    data: Data | None  # the Secret's data; None when it was deleted (and for a bookmark)
    resource_version: str | None


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


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json_depth.loads(raw)  # a deep document is refused, not a RecursionError
    except ValueError:
        raise MalformedEvent("not JSON") from None
    if not isinstance(value, dict):
        raise MalformedEvent("not a JSON object")
    return value


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedEvent(f"{what} is not an object")
    return value


def _data(secret: dict[str, Any]) -> Data:
    data = _mapping(secret.get("data"), "the Secret's data")
    if not all(isinstance(v, str) for v in data.values()):
        raise MalformedEvent("the Secret's data holds a value that is not a string")
    return data


def _version(obj: dict[str, Any]) -> str | None:
    version = _mapping(obj.get("metadata"), "metadata").get("resourceVersion")
    return str(version) if version else None


def parse_event(line: bytes) -> WatchEvent:
    """One line of a watch stream; raises ResourceVersionGone or ApiError for the server's
    ERROR events, MalformedEvent for anything else we do not know."""
    event = _json_object(line)
    kind, obj = event.get("type"), event.get("object")
    if not isinstance(obj, dict):
        raise MalformedEvent("an event without an object")
    if kind == "ERROR":
        code = obj.get("code")
        if code == 410:
            raise ResourceVersionGone()
        raise ApiError(code if isinstance(code, int) else None)
    if kind in ("ADDED", "MODIFIED"):
        return WatchEvent(kind, _data(obj), _version(obj))
    if kind in ("DELETED", "BOOKMARK"):
        return WatchEvent(kind, None, _version(obj))
    raise MalformedEvent(f"an event of unknown type {str(kind)[:32]!r}")


def parse_list(body: bytes) -> tuple[Data | None, str]:
    """A list of the one Secret: its data (None when absent) and the list's resourceVersion."""
    listed = _json_object(body)
    version = _version(listed)
    items = listed.get("items") or []
    if not isinstance(items, list) or not version:
        raise MalformedEvent("not a list with a resourceVersion")
    if not items:
        return None, version
    return _data(_mapping(items[0], "the listed Secret")), version
