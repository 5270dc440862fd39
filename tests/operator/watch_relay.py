"""A relay (test double) between the operator's client and the Kubernetes API — the sandbox
or kube-apiserver alike: it forwards every request with the test's credentials and records
it (`watch`, the cache's paged `list`, any other `GET` as `direct`, writes by method;
discovery, which a client reads once, apart in `discovery`), and
on request cuts the open watches, answers the next watch with 410 Gone, starts it with a
malformed event, refuses lists and watches, or holds every watch's bytes back for
`watch_delay` seconds (a watch that lags behind the writes, as kopf's does under load).
Served on loopback over plain HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import aiohttp.web
import pytest
from aiohttp.test_utils import TestServer

from gemini_webhooks.kube_access import ClusterAccess
from tests.operator.harness import operator_kubeconfig

GONE = b'{"type":"ERROR","object":{"kind":"Status","code":410,"reason":"Expired"}}\n'
MALFORMED = b'{"type":"ADDED","object":{"metadata":{"name":["not","a","name"]}}}\n'


class _Late:
    """A watch's chunks written `delay` seconds after each came, in order."""

    def __init__(self, response: aiohttp.web.StreamResponse, delay: float) -> None:
        self.response, self.delay = response, delay
        self.queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        self.writer = asyncio.create_task(self._write())

    def put(self, chunk: bytes) -> None:
        self.queue.put_nowait((asyncio.get_running_loop().time() + self.delay, chunk))

    async def drain(self) -> None:
        self.queue.put_nowait(None)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await self.writer

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while (item := await self.queue.get()) is not None:
            due, chunk = item
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self.response.write(chunk)


@dataclass
class Relay:
    upstream: ClusterAccess
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # (verb, params)
    discovery: list[str] = field(default_factory=list)  # paths
    gone_next: bool = False
    malformed_next: bool = False
    refuse: int | None = None  # a status for every list and watch
    watch_delay: float = 0.0  # each watch chunk passed on this long after it came
    _open: dict[int, aiohttp.web.Request] = field(default_factory=dict)  # by id: unhashable
    _server: TestServer | None = None
    _session: aiohttp.ClientSession | None = None
    url: str = ""

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self.upstream.ssl_context())
        )
        app = aiohttp.web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._server = TestServer(app, host="127.0.0.1")
        await self._server.start_server()
        self.url = str(self._server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
        if self._session is not None:
            await self._session.close()

    def access(self) -> ClusterAccess:
        return ClusterAccess(server=self.url)

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.requests]

    def watches(self) -> list[dict[str, str]]:
        return [params for verb, params in self.requests if verb == "watch"]

    @property
    def open_watches(self) -> int:
        return len(self._open)

    def cut(self) -> None:
        """Drop every open watch's connection, mid-stream."""
        for request in list(self._open.values()):
            if request.transport is not None:
                request.transport.close()

    async def _forward(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        params = dict(request.query)
        parts = request.match_info["path"].strip("/").split("/")
        depth = {"api": 2, "apis": 3}.get(parts[0], 0)  # /api/v1, /apis/group/version
        if len(parts) <= depth and request.method == "GET":
            self.discovery.append(request.path)
            return await self._relay(request, params, watch=False)
        watch = params.get("watch") in ("1", "true")
        verb = "watch" if watch else "list" if "limit" in params else "direct"
        if request.method != "GET":
            verb = request.method
        self.requests.append((verb, params))
        if self.refuse is not None and verb in ("watch", "list"):
            return aiohttp.web.json_response({"code": self.refuse}, status=self.refuse)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        if watch and self.gone_next:
            self.gone_next = False
            await response.prepare(request)
            await response.write(GONE)
            return response
        return await self._relay(request, params, watch=watch)

    async def _relay(
        self, request: aiohttp.web.Request, params: dict[str, str], *, watch: bool
    ) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        assert self._session is not None
        url = self.upstream.server.rstrip("/") + "/" + request.match_info["path"]
        headers = {**self.upstream.headers(), "Accept": request.headers.get("Accept", "*/*")}
        body = await request.read() if request.can_read_body else None
        if body is not None:
            headers["Content-Type"] = request.content_type
        async with self._session.request(
            request.method, url, params=params, headers=headers, data=body
        ) as up:
            response.set_status(up.status)
            await response.prepare(request)
            self._open[id(request)] = request
            late: _Late | None = None
            try:
                if watch and self.malformed_next:
                    self.malformed_next = False
                    await response.write(MALFORMED)
                if watch and self.watch_delay:
                    late = _Late(response, self.watch_delay)
                while request.transport is not None and not request.transport.is_closing():
                    try:  # polled: a client gone is noticed without waiting for a byte
                        chunk = await asyncio.wait_for(up.content.readany(), 0.1)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    if late is not None:
                        late.put(chunk)
                    else:
                        await response.write(chunk)
                if late is not None:
                    await late.drain()
            except (ConnectionResetError, aiohttp.ClientError):
                return response
            finally:
                self._open.pop(id(request), None)
                if late is not None:
                    late.writer.cancel()
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        return response

    async def until(self, what: str, check: object, timeout: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not (check() if callable(check) else check):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"not seen: {what}; requests {self.requests}")
            await asyncio.sleep(0.02)


@pytest.fixture(name="relay")
async def relay_fixture(kube: Any) -> AsyncIterator[Relay]:
    """A relay to the API as the operator's identity (on the real control plane, the
    chart's RBAC)."""
    relay = Relay(ClusterAccess.load(operator_kubeconfig(kube)))
    await relay.start()
    try:
        yield relay
    finally:
        await relay.stop()
