"""A small keep-alive HTTP/1.1 client pool for plain-http targets, on `h11`.

Why not aiohttp's client here: forwarding happens once per delivery on the hot path, and
aiohttp's `ClientSession.post` costs about as much CPU as the whole rest of the request
(measured with cProfile under wrk). `h11` is the sans-IO HTTP/1.1 state machine that httpx
uses; this module only feeds it bytes from an asyncio protocol and pools connections.
https targets still go through aiohttp (TLS, proxies, redirects are not handled here).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import h11


class ConnectionBroken(OSError):
    """The connection closed or spoke invalid HTTP before a complete response."""


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(ConnectionBroken("connection closed"))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def data_received(self, data: bytes) -> None:
        try:
            self.h11.receive_data(data)
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Response):
                    self.status = event.status_code
                elif isinstance(event, h11.EndOfMessage):
                    if self.waiter is not None and not self.waiter.done():
                        self.waiter.set_result(self.status)
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    self._fail(ConnectionBroken("connection closed"))
                    return
        except h11.RemoteProtocolError as error:
            self._fail(ConnectionBroken(f"invalid HTTP response: {error}"))
            self.close()

    def reusable(self) -> bool:
        if self.closed:
            return False
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(self, head: h11.Request, body: bytes) -> int:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.status = 0
        self.transport.write(
            self.h11.send(head)
            + self.h11.send(h11.Data(data=body))
            + self.h11.send(h11.EndOfMessage())
        )
        return await self.waiter


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
            head = h11.Request(
                method=b"POST",
                target=target,
                headers=[
                    (b"host", f"{host}:{port}".encode()),
                    *headers,
                    (b"content-length", str(len(body)).encode()),
                ],
            )
            try:
                try:
                    status = await connection.request(head, body)
                except ConnectionBroken:
                    if fresh:
                        raise
                    # A kept-alive connection the server had closed: retry once, fresh.
                    connection.close()
                    connection = await self._connect(host, port)
                    status = await connection.request(
                        h11.Request(method=b"POST", target=target, headers=head.headers), body
                    )
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
