"""A small keep-alive HTTP/1.1 client pool for plain-http targets.

Why not aiohttp's client (or h11) here: forwarding happens once per delivery on the hot
path, and under wrk cProfile showed aiohttp's `ClientSession.post` costing as much CPU as
the whole rest of the request, and h11 (pure-Python validation of every header) a third
of it. What a forward needs is narrow — one POST with headers we build ourselves, then the
status of the answer — so this module writes the request bytes itself and reads only the
response framing (status line, Content-Length or chunked, Connection). https targets go
through aiohttp (TLS, proxies and redirects are not handled here).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

_MAX_HEAD = 64 * 1024


class ConnectionBroken(OSError):
    """The connection closed or spoke invalid HTTP before a complete response."""


def encode_request(
    host: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> bytes:
    """The request's bytes; refuses header fields that would split the request."""
    fields = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    if (
        fields.count(b"\r\n") != len(headers)
        or b"\n" in fields.replace(b"\r\n", b"")
        or (b"\0" in fields or b"\r" in fields.replace(b"\r\n", b""))
    ):
        raise ValueError("header contains a line break or NUL")
    return b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n%s" % (
        target,
        host,
        len(body),
        fields,
        body,
    )


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.buffer = bytearray()
        self.closed = False
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.keep_alive = True
        self.remaining = -1  # body bytes still expected; -1: head not parsed yet
        self.chunked = False
        self.until_close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.until_close and self.status:
            self._finish()
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
        self.buffer += data
        try:
            while self._step():
                pass
        except (ValueError, IndexError):
            self._fail("invalid HTTP response")

    def _step(self) -> bool:
        """Consume what the buffer holds; True to be called again."""
        buffer = self.buffer
        if self.remaining == -1 and not self.chunked and not self.until_close:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    raise ValueError("response head too large")
                return False
            head = bytes(buffer[:end]).split(b"\r\n")
            del buffer[: end + 4]
            version, status = head[0].split(b" ", 2)[:2]
            code = int(status)
            if 100 <= code < 200:
                return True  # interim response (100 Continue): the real one follows
            self.status = code
            self.keep_alive = version == b"HTTP/1.1"
            length = None
            for line in head[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                value = value.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding" and value.endswith(b"chunked"):
                    self.chunked = True
                elif name == b"connection":
                    self.keep_alive = value != b"close" and (
                        self.keep_alive or value == b"keep-alive"
                    )
            if code in (204, 304):
                self.remaining = 0
            elif self.chunked:
                self.remaining = -2  # at a chunk-size line
            elif length is not None:
                self.remaining = length
            else:
                self.until_close = True
                self.keep_alive = False
                buffer.clear()
                return False
        if self.until_close:
            buffer.clear()
            return False
        if self.chunked:
            return self._chunk()
        if len(buffer) >= self.remaining:
            del buffer[: self.remaining]
            self._finish()
            return False
        return False

    def _chunk(self) -> bool:
        buffer = self.buffer
        if self.remaining == -2:  # chunk-size line
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            size = int(bytes(buffer[:end]).split(b";")[0], 16)
            del buffer[: end + 2]
            self.remaining = size + 2 if size else -3
            return True
        if self.remaining == -3:  # trailers, up to an empty line
            end = buffer.find(b"\r\n")
            if end < 0:
                return False
            del buffer[: end + 2]
            if end == 0:
                self._finish()
                return False
            return True
        if len(buffer) < self.remaining:
            return False
        del buffer[: self.remaining]
        self.remaining = -2
        return True

    def reusable(self) -> bool:
        return not self.closed and self.keep_alive and not self.buffer

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, data: bytes) -> int:
        assert self.transport is not None
        self._reset()
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None


class Pool:
    """Idle connections per (host, port); at most `limit` connections in use at once."""

    def __init__(self, limit: int) -> None:
        self._idle: defaultdict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._slots = asyncio.Semaphore(limit)

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Connection, host, port)
        return protocol

    async def post(
        self, host: str, port: int, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> int:
        """POST and return the status; raises OSError/ConnectionBroken on transport errors.

        The caller bounds the time (asyncio.timeout); a cancelled request's connection is
        closed, never reused.
        """
        data = encode_request(f"{host}:{port}".encode(), target, headers, body)
        async with self._slots:
            idle = self._idle[(host, port)]
            connection = None
            while idle:
                candidate = idle.pop()
                if not candidate.closed:
                    connection = candidate
                    break
            fresh = connection is None
            if connection is None:
                connection = await self._connect(host, port)
            try:
                try:
                    status = await connection.request(data)
                except ConnectionBroken:
                    if fresh:
                        raise
                    # A kept-alive connection the server had closed: retry once, fresh.
                    connection.close()
                    connection = await self._connect(host, port)
                    status = await connection.request(data)
            except BaseException:
                connection.close()
                raise
            if connection.reusable():
                idle.append(connection)
            else:
                connection.close()
            return status

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
