"""The internal port: `GET` (and `HEAD`) of a few paths — `/metrics`, `/healthz`, `/readyz`,
the ping status — for the kubelet's probes, Prometheus and the operator.

Framed by llhttp (`httptools`), as the public port is, with no web framework: aiohttp's
server, which served this port before, made up 12-16 MiB of an idle receiver's 54 MiB
(`bench/receiver/memory.py`), and nothing else of an http-only receiver needs aiohttp; its
client is imported where a configuration uses it (https targets, the JWKS of dynamic
webhooks).

Each thing a client can make us hold is bounded: a request head of at most
`MAX_HEAD_BYTES` (else 431; counted as its bytes arrive, since llhttp holds a header line
until it ends), a body (none of these paths reads one: it is dropped) of at most
`MAX_BODY_BYTES` by its `Content-Length`, or with the head at most both limits together
when chunked (else 413), a request that, once begun, arrives whole within
`READ_SECONDS` (else the connection closes), an idle keep-alive connection closed after
`IDLE_SECONDS` (aiohttp's keep-alive timeout here before), and pipelined requests answered
in order with reading paused while `MAX_PIPELINED` wait. A request llhttp refuses gets
400; an unknown path 404; a method other than GET and HEAD 405 with `Allow: GET, HEAD`;
a handler that fails 500 (logged). A refusal (400, 413, 431) ends the connection after its
answer, lingering up to `LINGER_SECONDS` so that the client can read it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple

import httptools

from .logs import log
from .public import PHRASES, HttpDate, target_path

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024
READ_SECONDS = 10.0
IDLE_SECONDS = 75.0
MAX_PIPELINED = 8
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str = JSON


Handler = Callable[[], Awaitable[Answer]]

_NOT_FOUND = Answer(404, b"404: Not Found", TEXT)
_NOT_ALLOWED = Answer(405, b"405: Method Not Allowed", TEXT)
_BAD_REQUEST = Answer(400, b"400: Bad Request", TEXT)
_HEAD_TOO_LARGE = Answer(431, b"431: Request Header Fields Too Large", TEXT)
_BODY_TOO_LARGE = Answer(413, b"413: Content Too Large", TEXT)
_FAILED = Answer(500, b"500: Internal Server Error", TEXT)


class _Request(NamedTuple):
    method: bytes
    path: bytes | None
    keep_alive: bool


class InternalServer:
    """The routes (path -> handler) served to every connection `protocol` makes."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = {path.encode(): handler for path, handler in routes.items()}
        self.connections: set[_Connection] = set()
        self.date = HttpDate()

    def protocol(self) -> asyncio.Protocol:
        return _Connection(self)

    def close_all(self) -> None:
        for connection in list(self.connections):
            connection.close()


class _Connection(asyncio.Protocol):
    def __init__(self, server: InternalServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Request] = deque()
        self.worker: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.target = b""
        self.content_length = 0
        self.head_size = 0  # of the head as llhttp reports it
        # Bytes received of the request being read, counted as they arrive (llhttp holds a
        # header line until it ends), and whether its head is still coming.
        self.unread = 0
        self.in_head = True
        self.done = False  # refused or closing: nothing more is read or answered
        self.discarded = 0
        self.paused = False

    # ---- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.server.connections.add(self)
        self._close_in(IDLE_SECONDS)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.done = True
        self._disarm()
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        if self.done:  # lingering after a refusal
            self.discarded += len(data)
            if self.discarded > LINGER_BYTES:
                self.close()
            return
        self.unread += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:  # bad framing, an upgrade
            self._refuse(_BAD_REQUEST)
            return
        # A request completed within `data` resets the count: what follows it in `data` is
        # not counted, an undercount of less than one read.
        if self.in_head and self.unread > MAX_HEAD_BYTES:
            self._refuse(_HEAD_TOO_LARGE)
        elif self.unread > MAX_HEAD_BYTES + MAX_BODY_BYTES:
            self._refuse(_BODY_TOO_LARGE)  # a chunked body, or trailers, without end

    # ---- httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        self.target = b""
        self.content_length = 0
        self.head_size = 0
        self._close_in(READ_SECONDS)

    def on_url(self, url: bytes) -> None:
        self.target += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_size += len(name) + len(value) + 4
        # llhttp has checked the value's framing (digits, one value) by the head's end.
        if name.lower() == b"content-length" and value.strip().isdigit():
            self.content_length = int(value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_size > MAX_HEAD_BYTES:  # a whole head within one read
            self._refuse(_HEAD_TOO_LARGE)
        elif self.content_length > MAX_BODY_BYTES:
            self._refuse(_BODY_TOO_LARGE)  # no path here takes a body: read and dropped

    def on_message_complete(self) -> None:
        self.in_head = True
        self.unread = 0
        if self.done:
            return
        self._disarm()
        parser = self.parser
        self.pending.append(
            _Request(parser.get_method(), target_path(self.target), parser.should_keep_alive())
        )
        if self.worker is None:
            self.worker = self.loop.create_task(self._work())
        if len(self.pending) >= MAX_PIPELINED and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    # ---- answering -------------------------------------------------------------------

    async def _work(self) -> None:
        while self.pending and not self.done:
            request = self.pending.popleft()
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            answer = await self._answer(request)
            if self.done:
                return
            self._write(answer, head_only=request.method == b"HEAD", close=not request.keep_alive)
            if not request.keep_alive:
                self.close()
                return
        self.worker = None
        if not self.done and self.timer is None:
            self._close_in(IDLE_SECONDS)

    async def _answer(self, request: _Request) -> Answer:
        if request.path is None:
            return _BAD_REQUEST
        handler = self.server.routes.get(request.path)
        if handler is None:
            return _NOT_FOUND
        if request.method not in (b"GET", b"HEAD"):
            return _NOT_ALLOWED
        try:
            return await handler()
        except Exception as error:  # a bug in one answer must not end the port
            log(40, "internal endpoint failed", path=request.path.decode(), error=repr(error))
            return _FAILED

    def _write(self, answer: Answer, *, head_only: bool = False, close: bool = False) -> None:
        assert self.transport is not None
        status, body, content_type = answer
        head = (
            f"HTTP/1.1 {status} {PHRASES[status].decode()}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            f"Date: {self.server.date.now().decode()}\r\n"
            + ("Allow: GET, HEAD\r\n" if status == 405 else "")
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode()
        self.transport.write(head if head_only else head + body)

    def _refuse(self, answer: Answer) -> None:
        """Answer now (requests still waiting are dropped with the connection), then close
        our side and linger, reading and dropping what the client still sends, so that
        closing with its bytes unread does not reset the connection before it reads the
        answer."""
        if self.done:
            return
        self._write(answer, close=True)
        self.done = True
        self._disarm()
        assert self.transport is not None
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.timer = self.loop.call_later(LINGER_SECONDS, self.close)
        else:
            self.close()

    # ---- timers and shutdown ---------------------------------------------------------

    def _close_in(self, seconds: float) -> None:
        self._disarm()
        self.timer = self.loop.call_later(seconds, self.close)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """Close once what is written has gone out."""
        self.done = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()
