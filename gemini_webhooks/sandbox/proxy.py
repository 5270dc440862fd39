"""The sandbox's forward HTTP proxy: cluster names and Pod addresses on loopback.

In a cluster, `http://NAME.NAMESPACE.svc.cluster.local:PORT` reaches a Service through
cluster DNS and kube-proxy, and `http://POD_IP:PORT` a Pod. The sandbox (and the process
node) has neither: every Pod is a local process on a loopback port of its own. So the
processes it starts get `HTTP_PROXY` naming this proxy (and `NO_PROXY` covering loopback,
where the API server and the emulator listen), and the proxy maps what a cluster would
resolve — a Service host of any cluster domain, or a Pod address it handed out — to the
loopback `host:port` that serves it. When that process does not answer (refused, reset,
timed out), the caller's connection is dropped, as its own would fail in a cluster. The
product code is the same as in a cluster: it honours the standard proxy variables, as any
in-cluster client does.

Each caller connection has its own connections onward, closed when it closes: through
kube-proxy a caller's connection is one backend's, so a Service with several Pods spreads
its callers' connections over them, and one caller's keep-alive requests stay on one Pod.
A proxy sharing one pool for all callers would instead pin every caller to the few Pods
its pool happened to reach.

The map comes from whoever runs the Pods (`endpoints()`, read at every request, so new
Services and Pods are reachable at once), keyed `namespace/name:port` for Services and
`address:port` for Pods. A name the map does not hold gets a 502 that names it. Only
plain http is proxied (Service URLs are http); a CONNECT (https) gets a 501.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gemini_webhooks.sandbox.ports import LOOPBACK

Endpoints = Callable[[], Mapping[str, str]]

_SERVICE_HOST = re.compile(r"^(?P<name>[^.]+)\.(?P<namespace>[^.]+)\.svc(?:\.[^:/]+)?\.?$")
# Hop-by-hop fields (RFC 9110 §7.6.1) and those the proxy frames itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    }
)


def service_key(name: str, namespace: str, port: int) -> str:
    """How the endpoints map names a Service port."""
    return f"{namespace}/{name}:{port}"


def pod_key(address: str, port: int) -> str:
    """How the endpoints map names a Pod's port: its address, as in `status.podIP`."""
    return f"{address}:{port}"


def loopback_for(host: str, port: int, endpoints: Mapping[str, str]) -> str | None:
    """The loopback `host:port` serving `host:port`, or None when nothing does."""
    host = host.lower()
    match = _SERVICE_HOST.match(host)
    if match:
        return endpoints.get(service_key(match["name"], match["namespace"], port))
    return endpoints.get(pod_key(host.strip("[]"), port))


def _forwarded(headers: Mapping[str, str]) -> CIMultiDict[str]:
    return CIMultiDict((k, v) for k, v in headers.items() if k.lower() not in _NOT_FORWARDED)


class SandboxProxy:
    """An HTTP forward proxy on loopback; `url` is what `HTTP_PROXY` should say."""

    def __init__(self, endpoints: Endpoints, *, host: str = LOOPBACK, timeout: float = 60.0):
        self.endpoints = endpoints
        self.host = host
        self.timeout = timeout
        self._runner: web.AppRunner | None = None
        # Per caller connection, its onward connections (one per target it named).
        self._onward: dict[asyncio.BaseTransport, aiohttp.ClientSession] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        assert self.port, "not started"
        return f"http://{self.host}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The variables that send a child's cluster-bound HTTP through this proxy."""
        no_proxy = f"{LOOPBACK},localhost,::1"
        return {
            "HTTP_PROXY": self.url,
            "http_proxy": self.url,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port)
        await site.start()
        server = site._server  # the bound port, when asked for port 0
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for transport in list(self._onward):
            await self._close_onward(transport)

    @property
    def onward_connections(self) -> int:
        """How many caller connections hold onward connections now."""
        return len(self._onward)

    def _onward_for(self, transport: asyncio.BaseTransport) -> aiohttp.ClientSession:
        session = self._onward.get(transport)
        if session is None:
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=1),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
            self._onward[transport] = session
        return session

    async def _close_onward(self, transport: asyncio.BaseTransport) -> None:
        session = self._onward.pop(transport, None)
        if session is not None:
            await session.close()

    async def _sweep(self, every: float = 1.0) -> None:
        # aiohttp tells a handler nothing when its caller's connection closes; the
        # transport says so, and its onward connections close within `every` seconds.
        while True:
            await asyncio.sleep(every)
            for transport in [t for t in self._onward if t.is_closing()]:
                await self._close_onward(transport)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "CONNECT":
            return web.Response(
                status=501, text="sandbox proxy: https (CONNECT) is not proxied; use http\n"
            )
        url = request.url  # absolute form (a proxy request) or the Host header's
        host, port = url.host or "", url.port or 80
        address = loopback_for(host, port, self.endpoints())
        if address is None:
            return web.Response(
                status=502,
                text=f"sandbox proxy: no Service or Pod of the sandbox is {host}:{port}\n",
            )
        caller = request.transport
        if caller is None:  # the caller has gone already
            raise web.HTTPBadGateway(text="")
        session = self._onward_for(caller)
        headers = _forwarded(request.headers)
        target = f"http://{address}{request.rel_url.raw_path_qs}"
        try:
            async with session.request(
                request.method,
                target,
                headers=headers,
                data=await request.read(),
                allow_redirects=False,
                skip_auto_headers=("User-Agent", "Content-Type"),
            ) as answer:
                body = await answer.read()
        except (aiohttp.ClientConnectionError, OSError, TimeoutError):
            # In a cluster the caller's own connection fails (refused, reset, timed out):
            # so here, the proxy drops the caller's, rather than answer for the Pod.
            caller.abort()
            await self._close_onward(caller)
            raise web.HTTPBadGateway(text="") from None
        if not request.keep_alive:  # the caller's connection ends with this answer
            await self._close_onward(caller)
        return web.Response(status=answer.status, body=body, headers=_forwarded(answer.headers))
