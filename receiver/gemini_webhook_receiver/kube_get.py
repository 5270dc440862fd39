"""One GET to the Kubernetes API whose answer's body arrives as it is read: the Secret's
list and its watch stream, over asyncio streams (TLS with `ClusterAccess`'s context).

Why not aiohttp's client: the receiver imports it only for https targets and JWKS, and it
costs 9.4 MiB of resident memory, a fifth of the receiver's idle footprint (bench/receiver/
memory.py --secrets kubernetes: 51.6 MiB idle with aiohttp, 42.0 without). Two GETs are all
the Secret's watch needs; llhttp (`httptools`, which frames the receiver's other HTTP)
decodes the chunked answer. One connection per request, closed after it."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from gemini_webhooks.kube_access import ClusterAccess

_READ_BYTES = 64 * 1024
_MAX_HEAD = 64 * 1024


class BrokenAnswer(OSError):
    """The connection ended, or the answer was not HTTP we can read."""


class _Answer:
    """httptools' callbacks: the answer's status, body pieces not yet handed on, its end."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.body: list[bytes] = []
        self.complete = False
        self.received = 0  # bytes read

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


def _request(access: ClusterAccess, target: str) -> tuple[str, int, str, bytes]:
    url = urlsplit(access.server)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise BrokenAnswer(f"not an http(s) API server: {url.scheme}://")
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    headers = {"Host": f"{host}:{port}", "Accept": "application/json", "Connection": "close"}
    headers.update(access.headers())
    head = f"GET {url.path.rstrip('/')}{target} HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return url.hostname, port, url.scheme, (head + "\r\n").encode()


@contextlib.asynccontextmanager
async def get(
    access: ClusterAccess,
    tls: ssl.SSLContext | bool,
    target: str,
    *,
    connect_timeout: float,
    read_timeout: float,
) -> AsyncIterator[tuple[int, AsyncIterator[bytes]]]:
    """GET `target` (path and query, already encoded): the answer's status and its body's
    pieces as they arrive. Each read waits at most `read_timeout` seconds (TimeoutError);
    an answer that ends before its framing says it is complete raises BrokenAnswer."""
    hostname, port, scheme, request = _request(access, target)
    context = tls if isinstance(tls, ssl.SSLContext) and scheme == "https" else None
    async with asyncio.timeout(connect_timeout):
        reader, writer = await asyncio.open_connection(
            hostname, port, ssl=context, limit=_READ_BYTES
        )
    try:
        writer.write(request)
        answer = _Answer()

        async def read() -> bool:
            """Feeds the next bytes to the parser; False once the answer is complete."""
            if answer.complete:
                return False
            async with asyncio.timeout(read_timeout):
                data = await reader.read(_READ_BYTES)
            if not data:
                raise BrokenAnswer("the API server closed the connection mid-answer")
            answer.received += len(data)
            try:
                answer.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as error:
                raise BrokenAnswer("not an HTTP answer") from error
            return True

        while not answer.status:
            await read()
            if answer.received > _MAX_HEAD and not answer.status:
                raise BrokenAnswer("the answer's head is too large")

        async def body() -> AsyncIterator[bytes]:
            while True:
                while answer.body:
                    yield answer.body.pop(0)
                if not await read():
                    return

        yield answer.status, body()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
