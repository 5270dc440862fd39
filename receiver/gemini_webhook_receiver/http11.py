"""A small keep-alive HTTP/1.1 client pool for plain-http targets.

Why not aiohttp's client (or h11) here: forwarding happens once per delivery on the hot
path, and under wrk cProfile showed aiohttp's `ClientSession.post` costing as much CPU as
the whole rest of the request, and h11 (pure-Python validation of every header) a third
of it. What a forward needs is narrow — one POST with headers we build ourselves, then the
status of the answer — so this module writes the request bytes itself, and the answer is
framed by llhttp (`httptools`' response parser, as the public port's requests are): what
it refuses (duplicate or conflicting Content-Length, Content-Length with chunked, invalid
characters, an upgrade) fails the forward rather than being guessed at. https targets go
through aiohttp (TLS, proxies that need TLS or credentials, and redirects are not
handled here). A plain-http proxy is: the request goes to the proxy with the absolute URL
as its target (RFC 9112 §3.2.2), which is all forwarding through one takes.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import NamedTuple

import httptools

from .writes import WriteBatch

_MAX_HEAD = 64 * 1024


class PlainHttp(NamedTuple):
    """How the lean pool sends to a plain-http target: where it connects, the `host`
    header and the request target (origin form, or the absolute URL through a proxy)."""

    host: str
    port: int
    authority: bytes
    request_target: bytes


class ConnectionBroken(OSError):
    """The connection closed or spoke invalid HTTP before a complete response."""


def encode_request(host: bytes, target: bytes, headers: Mapping[str, str], body: bytes) -> bytes:
    """The request's bytes; refuses header fields that would split the request.

    A `host` entry is skipped (the pool writes its own). Built as one str and encoded once,
    and checked by counting: every line ends in CRLF, so any other CR or LF (or a NUL)
    means a field tried to start a new line — a third of the cost of formatting and
    checking each field as bytes, on every forward.
    """
    fields = "".join([f"{name}: {value}\r\n" for name, value in headers.items() if name != "host"])
    lines = len(headers) - ("host" in headers)
    if fields.count("\r") != lines or fields.count("\n") != lines or "\0" in fields:
        raise ValueError("header contains a line break or NUL")
    return b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        target,
        host,
        len(body),
        fields.encode(),
        body,
    )


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, batch: WriteBatch) -> None:
        self.loop = loop
        self.batch = batch
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False
        self.deadline = 0.0  # of the request under way (loop time)
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0  # of the answer whose head was read
        self.keep_alive = True
        self.framed = False  # the answer's length is known (else it ends with the close)
        self.head_bytes = 0  # received while its head is unfinished

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self.status and not self.framed:
            self.keep_alive = False
            self._finish()  # a body without a length ends with the connection
        else:
            self._fail("connection closed")

    def _fail(self, reason: str) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionBroken(reason))

    def _finish(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.status)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self._fail("unsolicited data")
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._fail("invalid HTTP response")  # also duplicate or conflicting lengths
            return
        if not self.status:  # the head is not complete yet
            self.head_bytes += len(data)
            if self.head_bytes > _MAX_HEAD:
                self._fail("response head too large")

    # ---- httptools callbacks: llhttp frames the answer, these note what it found ---------

    def on_message_begin(self) -> None:
        if self.waiter is not None and self.waiter.done():
            self.keep_alive = False  # bytes after our answer: the next one would not be ours

    def on_header(self, name: bytes, value: bytes) -> None:
        # Only whether the body has a length matters here (llhttp applies it; a close
        # before its end is then a failure, not the end of the body).
        if len(name) == 14 or len(name) == 17:
            name = name.lower()
            if name == b"content-length" or (
                name == b"transfer-encoding" and value.rstrip().lower().endswith(b"chunked")
            ):
                self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200:  # not an interim answer (100 Continue): the real one follows
            self.status = status

    def on_message_complete(self) -> None:
        if not self.status:
            self._reset()  # an interim answer ended
            return
        self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
        self._finish()

    def reusable(self) -> bool:
        return not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.close()

    def _on_timer(self) -> None:
        self.timer = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return  # no request under way: the next one arms a timer again
        if self.loop.time() < self.deadline:
            self._arm(self.deadline)
        else:
            waiter.set_exception(TimeoutError())

    def _cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self, at: float) -> None:
        self._cancel_timer()
        self.timer = self.loop.call_at(at, self._on_timer)
        self.timer_at = at

    def request(self, data: bytes, deadline: float) -> asyncio.Future[int]:
        """Send one request; the future is its status, or fails at `deadline` (loop time).

        The bound is one lazy timer on the connection rather than an `asyncio.timeout`
        around the call: a timer that is already set to fire no later than `deadline` is
        kept (when it fires early it re-arms for the request then under way), so a busy
        connection arms a timer about once per timeout, not once per forward. Measured
        with bench/receiver: a Timeout context manager cost several times a call_at and
        a cancel, and those were still ~4% of a delivery. A plain method returning the
        future (not a coroutine) saves a frame per forward; the caller awaits it.
        """
        assert self.transport is not None
        self._reset()
        waiter = self.waiter = self.loop.create_future()
        self.deadline = deadline
        if self.timer is None or self.timer_at > deadline:
            self._arm(deadline)
        self.batch.write(self.transport, data)
        return waiter


class _Slots:
    """At most `limit` holders at once, first come first served.

    What asyncio.Semaphore does, minus its cost on the uncontended path (Python 3.11's
    `acquire` runs `locked()`, a generator over the waiters, every time): taking a free
    slot here is a compare and a decrement. A released slot is handed straight to the
    oldest waiter.
    """

    def __init__(self, limit: int) -> None:
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_acquire(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                return
        self._free += 1


class Pool:
    """Idle connections per (host, port); at most `limit` connections in use at once."""

    def __init__(self, limit: int) -> None:
        self._idle: defaultdict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._slots = _Slots(limit)
        # The loop the pool (and its connections) run in, learned once: on Linux
        # `asyncio.get_running_loop()` makes a getpid() system call every time (CPython's
        # fork check), measured at several percent of a delivery with py-spy --native.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batch: WriteBatch | None = None

    async def _connect(self, host: str, port: int, deadline: float) -> _Connection:
        loop, batch = self._loop, self._batch
        assert loop is not None and batch is not None
        async with asyncio.timeout_at(deadline):
            _, protocol = await loop.create_connection(lambda: _Connection(loop, batch), host, port)
        return protocol

    async def post(
        self, to: PlainHttp, headers: Mapping[str, str], body: bytes, seconds: float
    ) -> int:
        """POST and return the status; raises OSError/ConnectionBroken on transport errors
        and TimeoutError when `seconds` pass first.

        `seconds` bounds the whole attempt: waiting for a free slot and connecting (the
        uncommon paths, under an `asyncio.timeout`), and the request itself (a timer on
        the connection). A request that fails or is cancelled closes its connection; it
        is never reused.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._batch = WriteBatch(loop)
        deadline = loop.time() + seconds
        host, port = to.host, to.port
        data = encode_request(to.authority, to.request_target, headers, body)
        if not self._slots.try_acquire():
            async with asyncio.timeout_at(deadline):
                await self._slots.acquire()
        try:
            idle = self._idle[(host, port)]
            connection = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    connection = candidate
                    break
            fresh = connection is None
            if connection is None:
                connection = await self._connect(host, port, deadline)
            try:
                try:
                    status = await connection.request(data, deadline)
                except ConnectionBroken:
                    if fresh:
                        raise
                    # A kept-alive connection the server had closed: retry once, fresh.
                    connection.close()
                    connection = await self._connect(host, port, deadline)
                    status = await connection.request(data, deadline)
            except BaseException:
                connection.close()
                raise
            if connection.reusable():
                idle.append(connection)
            else:
                connection.close()
            return status
        finally:
            self._slots.release()

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
