"""What the HTTP/1.1 ports' messages are made of: a request as read, an answer or a route
decided for it, the path a request target names, whether its Host field is acceptable
(RFC 9112 §3.2), and the `Date` header."""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple

import httptools

PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}
JSON = b"application/json"


def target_path(target: bytes) -> bytes | None:
    """The path a request target names: the origin form `/p?q`, or the absolute form
    `http://host/p?q` that a server must accept too (RFC 9112 §3.2.2; its host is not
    ours to check, the Host header is not either); None for any other form (asterisk,
    authority, another scheme, or userinfo, which RFC 9110 §4.2.4 calls an error)."""
    if target.startswith(b"/"):
        query = target.find(b"?")
        return target if query < 0 else target[:query]
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        return None
    if url.schema is None or url.schema.lower() not in (b"http", b"https") or url.userinfo:
        return None
    return url.path or b"/"


# uri-host [":" port] (RFC 3986 §3.2.2-3): an IP literal in brackets, or a reg-name — an
# IPv4 address is one too, and it may be empty (RFC 9112 §3.2: a URI without authority).
_HOST = re.compile(
    r"(?:\[(?P<literal>[^\]]*)\]"
    r"|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?"
)
_IP_FUTURE = re.compile(r"v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")


def valid_host(value: str) -> bool:
    """Whether a Host field value (without its surrounding whitespace) is
    `uri-host [":" port]`."""
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal = match.group("literal")
    if literal is None:
        return True
    if _IP_FUTURE.fullmatch(literal):
        return True
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return "%" not in literal  # a zone id is not part of a URI's IPv6 literal


def host_is_acceptable(version: str, host: str | None, repeated: bool, target: bytes) -> bool:
    """RFC 9112 §3.2: one Host field with a valid value, which HTTP/1.0 may leave out;
    with an absolute-form target the target's authority replaces its value (§3.2.2), so
    that value is not judged."""
    if repeated:
        return False
    if host is None:
        return version == "1.0"
    return not target.startswith(b"/") or valid_host(host.rstrip(" \t"))


class HttpDate:
    """The `Date` header's value, formatted once per second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def now(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode()
        return self._value


# the headers a port reads (lower-case names) and the body -> status and body
Handler = Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


def header_lines(content_type: bytes, extra: bytes = b"") -> bytes:
    """An answer's `content-type` and `extra` header lines (each ending in CRLF), joined
    once where the answer is defined rather than on every request."""
    return b"content-type: %s\r\n%s" % (content_type, extra)


JSON_HEADERS = header_lines(JSON)

# Where a request goes: the handler that answers it, its answer's header lines, and
# whether it answers HEAD (the headers of a body it does not carry). A plain tuple, not a
# NamedTuple: unpacking a tuple subclass goes through an iterator, on every request.
Route = tuple[Handler, bytes, bool]


def route_to(handler: Handler, content_type: bytes = JSON, head_only: bool = False) -> Route:
    return (handler, header_lines(content_type), head_only)


class Answer(NamedTuple):
    """An answer decided without a handler: a refusal, 404, 405, a 100 Continue. Decided
    while reading, it is queued behind the requests read before it, whose answers must
    come first (RFC 9112 §9.3.2)."""

    status: int
    body: bytes = b""
    headers: bytes = JSON_HEADERS  # `header_lines`
    head_only: bool = False
    close: bool = True  # the connection ends with it


def wanted_headers(names: Iterable[str]) -> dict[bytes, str]:
    """The request headers a port reads besides those framing needs, by their wire name
    (lower-case or capitalized, as most clients send them: found without lower-casing)
    and lower-cased; the first of a repeated field counts."""
    return {
        wire.encode(): name
        for name in (*names, "content-length", "expect", "host")
        for wire in (name, name.title())
    }


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "repeated_host", "target")

    def __init__(self) -> None:
        self.target = b""
        self.headers: dict[str, str] = {}
        self.body = b""
        self.method = b""
        self.keep_alive = True
        self.repeated_host = False
