"""The public port: HTTP/1.1 parsed by llhttp (`httptools`), one route, no web framework.

The public port serves exactly one thing — `POST <path>` with a small JSON body — on the
hot path of every event. aiohttp's server (which served both ports once) spends, per
request, a parser wrapper, a request object with a payload stream, a response object with
a header multidict and a writer; measured with bench/receiver, that was a fifth of the
CPU of a delivery. Here llhttp (the parser Node.js uses, through `httptools`, the binding
uvicorn uses) frames the request, and the answer is one preformatted write.

Its connections are `http1.py`'s (shared with the internal port; what they guarantee is
listed in `http1_server.py`); this module is the port's routing and its words: `POST
<path>` goes to the delivery handler; other paths get 404 and other methods 405 with
`Allow: POST`, each closing the connection after its answer; a refusal decided while
reading (`reasons`: 400, 408, 413, 431, 503 `too_many_connections`) is counted and logged
by the receiver (`reject`), and evictions to make room for a new connection are counted
in `connections_evicted_total{state}`. Bounds: a head of `MAX_HEAD_BYTES`, a body of
`max_body_bytes`, `read_timeout_seconds` for a head from the connection or the previous
answer and for a body from the end of its head, `max_connections` open connections.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from gemini_webhooks.contracts.delivery import HEADER_ID, HEADER_SIGNATURE, HEADER_TIMESTAMP

from . import metrics
from .http1_messages import (
    JSON,
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
from .reasons import Rejection

MAX_HEAD_BYTES = 32 * 1024

# a rejection decided here (body too large, read timeout, unparsable request) → its body,
# counted and logged by the receiver
RejectionHandler = Callable[[Rejection, str | None], bytes]

# The only request headers anything reads besides framing's (llhttp's).
_WANTED = wanted_headers((HEADER_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE, "content-type"))
_NOT_FOUND = Answer(404, orjson.dumps({"error": "not_found", "message": "no such path"}))
_NOT_ALLOWED_BODY = orjson.dumps({"error": "method_not_allowed", "message": "only POST"})
_NOT_ALLOWED_HEADERS = header_lines(JSON, b"allow: POST\r\n")
_NOT_ALLOWED = Answer(405, _NOT_ALLOWED_BODY, _NOT_ALLOWED_HEADERS)
# An answer to HEAD carries the headers of the body it does not have.
_NOT_ALLOWED_TO_HEAD = Answer(405, _NOT_ALLOWED_BODY, _NOT_ALLOWED_HEADERS, head_only=True)


class PublicServer(Http1Server):
    """The public port: its one route, its refusals, its limits."""

    def __init__(
        self,
        path: str,
        max_body_bytes: int,
        read_timeout_seconds: float,
        deliver: Handler,
        reject: RejectionHandler,
        max_connections: int = 1024,
    ) -> None:
        super().__init__(
            wanted=_WANTED,
            max_head=MAX_HEAD_BYTES,
            max_body=max_body_bytes,
            read_timeout=read_timeout_seconds,
            idle_timeout=read_timeout_seconds,
            max_connections=max_connections,
        )
        self.path = path.encode()
        self.reject = reject
        self.deliveries = route_to(deliver)
        self.evicted = {
            state: metrics.connections_evicted.labels(state) for state in metrics.EVICTED_STATES
        }

    def route(self, request: Request) -> Route | Answer:
        if target_path(request.target) != self.path:
            return _NOT_FOUND
        if request.method != b"POST":
            return _NOT_ALLOWED_TO_HEAD if request.method == b"HEAD" else _NOT_ALLOWED
        return self.deliveries

    def refusal(self, rejection: Rejection, request: Request | None) -> Answer:
        msg_id = None if request is None else request.headers.get(HEADER_ID)
        return Answer(rejection.status, self.reject(rejection, msg_id))

    def count_eviction(self, state: str) -> None:
        self.evicted[state].inc()
