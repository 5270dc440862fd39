"""The internal port: `GET` (and `HEAD`) of a few paths — `/metrics`, `/healthz`, `/readyz`,
the ping status — for the kubelet's probes, Prometheus and the operator.

Its connections are `http1.py`'s, as the public port's are (what they guarantee is listed
in `http1_server.py`), with no web framework: aiohttp's server, which served this port
before, made up 12-16 MiB of an idle receiver's 54 MiB (`bench/receiver/memory.py`), and
nothing else of an http-only receiver needs aiohttp; its client is imported where a
configuration uses it (https targets, the JWKS of dynamic webhooks).

This module is the port's routing and its limits: a request head of at most
`MAX_HEAD_BYTES` (else 431), a body (none of these paths reads one: it is dropped) of at
most `MAX_BODY_BYTES` (else 413), a request that, once begun, arrives within
`READ_SECONDS` (else the connection closes; a body that stops coming, 408), and an idle
keep-alive connection closed after `IDLE_SECONDS` (aiohttp's keep-alive timeout here
before). A request llhttp refuses gets 400; an unknown path 404; a method other than GET
and HEAD 405 with `Allow: GET, HEAD`; a handler that fails 500 (logged); those keep the
connection open, a refusal while reading (400, 408, 413, 431) ends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from .http1_messages import (
    PHRASES,
    Answer,
    Handler,
    Request,
    Route,
    header_lines,
    route_to,
    target_path,
    wanted_headers,
)
from .http1_server import Http1Server
from .logs import log
from .reasons import Rejection

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_SECONDS = 10.0
IDLE_SECONDS = 75.0

JSON = "application/json"
TEXT = b"text/plain; charset=utf-8"

# an endpoint: () -> status and body; its content type is its route's
Endpoint = Callable[[], Awaitable[tuple[int, bytes]]]


def _text(status: int, close: bool = False, extra: bytes = b"") -> Answer:
    body = b"%d: %s" % (status, PHRASES[status])
    return Answer(status, body, header_lines(TEXT, extra), close=close)


_BAD_TARGET = _text(400)
_NOT_FOUND = _text(404)
_NOT_ALLOWED = _text(405, extra=b"Allow: GET, HEAD\r\n")
_FAILED = (500, b"500: Internal Server Error")


def _guarded(path: str, endpoint: Endpoint) -> Handler:
    async def handler(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        try:
            return await endpoint()
        except Exception as error:  # a bug in one answer must not end the port
            log(40, "internal endpoint failed", path=path, error=repr(error))
            return _FAILED

    return handler


class InternalServer(Http1Server):
    """The routes (path -> endpoint and its content type) served to every connection."""

    def __init__(self, routes: Mapping[str, tuple[Endpoint, str]]) -> None:
        super().__init__(
            wanted=wanted_headers(()),
            max_head=MAX_HEAD_BYTES,
            max_body=MAX_BODY_BYTES,
            read_timeout=READ_SECONDS,
            idle_timeout=IDLE_SECONDS,
            max_connections=None,
        )
        self.routes: dict[bytes, tuple[Route, Route]] = {}
        for path, (endpoint, content_type) in routes.items():
            handler = _guarded(path, endpoint)
            get = route_to(handler, content_type.encode())
            head = route_to(handler, content_type.encode(), head_only=True)
            self.routes[path.encode()] = (get, head)

    def route(self, request: Request) -> Route | Answer:
        path = target_path(request.target)
        if path is None:
            return _BAD_TARGET
        routes = self.routes.get(path)
        if routes is None:
            return _NOT_FOUND
        if request.method == b"GET":
            return routes[0]
        return routes[1] if request.method == b"HEAD" else _NOT_ALLOWED

    def refusal(self, rejection: Rejection, request: Request | None) -> Answer:
        return _text(rejection.status, close=True)
