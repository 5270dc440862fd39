"""`FaultProxy`: a test double in front of the emulator's WebhookService; `KubeLink`: one
replica's cuttable, recording link to the Kubernetes API.

It forwards every request unchanged (after `latency` seconds, when set), records
`(method, path, status)` for counting and the most requests it held at once, and
injects faults on demand: an HTTP error (with `Retry-After`), or a stall longer than the
client's timeout. The emulator stays the only implementation of the API; this only
breaks the wire, the way a flaky network or an overloaded Google frontend would.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from gemini_webhooks.kube_access import ClusterAccess


async def _serve(
    app: web.Application,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    host: str = "127.0.0.1",
) -> tuple[web.AppRunner, str]:
    """Serve every path with `handler` on an ephemeral port of `host` (loopback unless
    told): the runner, the URL."""
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://{host}:{port}"


@dataclass
class ProxyFault:
    status: int  # 0: stall, then drop; -1: forward upstream, then stall and drop
    count: int = 1
    method: str | None = None
    path_contains: str | None = None
    retry_after: int | None = None
    stall: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_contains is None or self.path_contains in path
        )


@dataclass
class Recorded:
    method: str
    path: str
    status: int
    at: float = field(default_factory=time.monotonic)
    query: str = ""  # KubeLink's: e.g. whether a GET lists or watches


@dataclass
class FaultProxy:
    upstream: str
    records: list[Recorded] = field(default_factory=list)
    faults: list[ProxyFault] = field(default_factory=list)
    url: str = ""
    latency: float = 0.0
    in_flight: int = 0
    most_in_flight: int = 0
    host: str = "127.0.0.1"  # where it listens: the node's Pods reach the host at its veth end
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    def fail(self, status: int, **kwargs: object) -> ProxyFault:
        fault = ProxyFault(status, **kwargs)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def calls(self, method: str | None = None, path_contains: str = "/webhooks") -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.records
                if path_contains in r.path and (method is None or r.method == method)
            ]

    def _take(self, method: str, path: str) -> ProxyFault | None:
        with self._lock:
            for fault in self.faults:
                if fault.count > 0 and fault.matches(method, path):
                    fault.count -= 1
                    return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        fault = self._take(request.method, path)
        if fault is not None:
            with self._lock:
                self.records.append(Recorded(request.method, path, fault.status))
            if fault.status == 0:
                await asyncio.sleep(fault.stall)
                raise ConnectionResetError("stalled")
            if fault.status == -1:
                await self._forward(request)
                await asyncio.sleep(fault.stall)
                raise ConnectionResetError("stalled after forwarding")
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
            body = {"error": {"code": fault.status, "message": "injected", "status": "FAULT"}}
            return web.json_response(body, status=fault.status, headers=headers)
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            return await self._forward(request, record=True)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _forward(self, request: web.Request, record: bool = False) -> web.Response:
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            data=await request.read(),
            headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
        ) as upstream:
            payload = await upstream.read()
            if record:
                with self._lock:
                    self.records.append(Recorded(request.method, request.path, upstream.status))
            return web.Response(
                status=upstream.status,
                body=payload,
                content_type=upstream.content_type,
            )

    async def start(self) -> FaultProxy:
        self._session = aiohttp.ClientSession()
        self._runner, self.url = await _serve(web.Application(), self._handle, self.host)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class KubeLink:
    """A test double for the network between one operator replica and the Kubernetes API:
    the replica's kubeconfig names this plain-HTTP proxy, which forwards every request
    (watches streamed as they come) with the credentials of `access`, and records it.

    `cut()` partitions the replica: every open connection is aborted and every new one is
    dropped unanswered (recorded with status 0: what the replica tried), until `heal()`.
    It serves from a thread of its own (`serve`, `close`): a test's loop that blocks on a
    synchronous API call must not stall the replica's link (a leader would miss renewals).
    """

    access: ClusterAccess
    records: list[Recorded] = field(default_factory=list)
    url: str = ""
    cut_at: float | None = None
    _open: set[asyncio.Transport] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def serve(cls, access: ClusterAccess) -> KubeLink:
        link = cls(access)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="kube-link", daemon=True)
        thread.start()
        link._loop, link._thread = loop, thread
        asyncio.run_coroutine_threadsafe(link._start(), loop).result(timeout=10)
        return link

    def close(self) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    def _record(self, method: str, path: str, status: int, query: str = "") -> None:
        with self._lock:
            self.records.append(Recorded(method, path, status, query=query))

    def requests(self, since: float = -math.inf) -> list[Recorded]:
        """Every request answered (or dropped) from `since` on, in order."""
        with self._lock:
            return [r for r in self.records if r.at >= since]

    def writes(self, since: float = -math.inf) -> list[Recorded]:
        return [r for r in self.requests(since) if r.method in WRITES]

    def kubeconfig(self, path: Path) -> Path:
        """A kubeconfig that reaches the API only through this link."""
        cluster = {"name": "link", "cluster": {"server": self.url}}
        context = {"name": "link", "context": {"cluster": "link", "user": "link"}}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "contexts": [context],
            "users": [{"name": "link", "user": {}}],
            "current-context": "link",
        }
        path.write_text(json.dumps(config))
        return path

    def cut(self) -> None:
        self.cut_at = time.monotonic()  # from now on every request is dropped
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._abort_open)

    def _abort_open(self) -> None:
        for transport in list(self._open):
            transport.abort()

    def heal(self) -> None:
        self.cut_at = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if self.cut_at is not None or transport is None:
            self._record(request.method, request.path, 0)
            if transport is not None:
                transport.abort()
            raise ConnectionResetError("partitioned")
        assert self._session is not None
        body = await request.read()
        dropped = {"host", "authorization", "content-length", *(() if body else ("content-type",))}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in dropped}
        token = self.access.bearer_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._open.add(transport)
        try:
            async with self._session.request(
                request.method,
                self.access.server.rstrip("/") + request.path_qs,
                data=body or None,
                headers=headers,
            ) as upstream:
                self._record(request.method, request.path, upstream.status, request.query_string)
                response = web.StreamResponse(status=upstream.status)
                if upstream.content_type:
                    response.content_type = upstream.content_type
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            self._open.discard(transport)

    async def _start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        connector = aiohttp.TCPConnector(ssl=self.access.ssl_context())
        self._session = aiohttp.ClientSession(timeout=timeout, connector=connector)
        app = web.Application(client_max_size=16 * 1024 * 1024)
        self._runner, self.url = await _serve(app, self._handle)

    async def _stop(self) -> None:
        self._abort_open()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
