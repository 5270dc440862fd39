"""Forwarding one event to one target: envelope JSON or a binary-mode CloudEvent.

`webhook-id` travels as `webhook-id` and `idempotency-key` so targets can deduplicate too.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from gemini_webhooks.contracts.egress_proxy import ProxySettings
from gemini_webhooks.contracts.receiver_config import TargetConfig
from gemini_webhooks.contracts.service_endpoints import service_url

from . import metrics
from .http11 import PlainHttp, Pool
from .logs import log
from .metrics import (
    FORWARD_CONNECTION_ERROR,
    FORWARD_HTTP_ERROR,
    FORWARD_INTERNAL_ERROR,
    FORWARD_OK,
    FORWARD_TIMEOUT,
)

if TYPE_CHECKING:
    import aiohttp  # imported with the session, by the first https forward

    from .tracing import Tracing  # imported only when tracing is on

HEADER_EVENT_TYPE = "x-gemini-event-type"
HEADER_SOURCE = "x-gemini-source"
HEADER_SCHEME = "x-gemini-signature-scheme"
HEADER_CLAIMS = "x-gemini-verified-claims"
CLOUDEVENTS_SOURCE_PREFIX = "gemini.googleapis.com/webhooks/"


class Event(NamedTuple):
    """A verified event, as stored and forwarded (immutable: what was authenticated).

    A NamedTuple rather than a frozen dataclass: one is built per delivery, and a frozen
    dataclass's `__init__` sets each field through `object.__setattr__`.
    """

    msg_id: str
    source: str  # static webhook name or "dynamic"
    scheme: str  # "hmac" or "jwt"
    event_type: str
    envelope: bytes  # the envelope JSON that was authenticated
    claims: bytes = b""  # dynamic: the verified registered claims, JSON
    received_at: float = 0.0  # unix seconds
    # The envelope's user_metadata, kept from verification so routing needs no re-parse.
    user_metadata: Any = None


@dataclass(frozen=True)
class Target:
    """A resolved target: a stable name for metrics/logs, its URL and the HTTP proxy it
    goes through (None: directly), decided once from the proxy variables."""

    name: str
    url: str
    cloudevents: bool
    proxy: str | None = None

    @cached_property
    def plain_http(self) -> PlainHttp | None:
        """For http:// URLs, directly or through a plain-http proxy without credentials:
        what the lean pool needs. None sends the target through aiohttp."""
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or parts.username:
            return None
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        authority = f"{host}:{parts.port or 80}".encode()
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if self.proxy is None:
            return PlainHttp(parts.hostname, parts.port or 80, authority, path.encode())
        proxy = urlsplit(self.proxy)
        if proxy.scheme != "http" or not proxy.hostname or proxy.username:
            return None  # TLS to the proxy, or its credentials: aiohttp's proxy support
        absolute = f"http://{authority.decode()}{path}".encode()
        return PlainHttp(proxy.hostname, proxy.port or 80, authority, absolute)


def _public_name(url: str) -> str:
    """The URL as a metric label and in logs: without credentials, query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def resolve(target: TargetConfig, cluster_domain: str, proxies: ProxySettings) -> Target:
    """A target's URL (a Service's by cluster DNS) and the proxy it goes through."""
    if target.service is not None:
        svc = target.service
        url = service_url(
            svc.name, svc.namespace, svc.port, svc.path, cluster_domain=cluster_domain
        )
        name = f"{svc.namespace}/{svc.name}:{svc.port}"
    else:
        assert target.url is not None
        url = target.url
        name = _public_name(url)
    return Target(
        name=name,
        url=url,
        cloudevents=target.format == "cloudevents",
        proxy=proxies.proxy_for(url),
    )


def request_for(event: Event, target: Target) -> tuple[dict[str, str], bytes]:
    headers = {
        "content-type": "application/json",
        "webhook-id": event.msg_id,
        "idempotency-key": event.msg_id,
        HEADER_EVENT_TYPE: event.event_type,
        HEADER_SOURCE: event.source,
        HEADER_SCHEME: event.scheme,
    }
    if event.claims:
        headers[HEADER_CLAIMS] = event.claims.decode()
    if not target.cloudevents:
        return headers, event.envelope
    envelope: dict[str, Any] = orjson.loads(event.envelope)
    headers.update(
        {
            "ce-specversion": "1.0",
            "ce-id": event.msg_id,
            "ce-type": event.event_type,
            "ce-source": CLOUDEVENTS_SOURCE_PREFIX + event.source,
        }
    )
    if isinstance(envelope.get("timestamp"), str):
        headers["ce-time"] = envelope["timestamp"]
    data = envelope.get("data")
    if isinstance(envelope.get("data"), dict) and isinstance(data, dict) and "id" in data:
        headers["ce-subject"] = str(data["id"])
    if "user_metadata" in envelope:
        headers["ce-usermetadata"] = orjson.dumps(envelope["user_metadata"]).decode()
    return headers, orjson.dumps(data if data is not None else {})


class Forwarder:
    """Sends one event to one target: plain http (directly or through a plain proxy)
    through the lean pool, the rest via aiohttp;
    with tracing, each attempt in a span of its own, whose `traceparent` the target gets."""

    def __init__(
        self,
        max_connections: int,
        session: Callable[[], aiohttp.ClientSession],
        tracing: Tracing | None = None,
    ):
        self.pool = Pool(max_connections)
        self._session = session
        self._counters: dict[tuple[str, str], Any] = {}
        self._tracing = tracing
        # Chosen once: without tracing an attempt costs no check at all.
        self.forward: Callable[[Event, Target, float], Awaitable[str]] = (
            self._send if tracing is None else self._traced
        )

    def _count(self, target: Target, outcome: str) -> None:
        key = (target.name, outcome)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = metrics.forwards.labels(target.name, outcome)
        counter.inc()

    async def _post_via_aiohttp(
        self, target: Target, headers: dict[str, str], body: bytes, seconds: float
    ) -> int:
        """One attempt to a target the lean pool does not serve (https, or a proxy it does
        not speak to), bounded by `seconds` in all; fails as the plain pool does, with
        TimeoutError or OSError (a ConnectionError for aiohttp's errors)."""
        session = self._session()
        from aiohttp import ClientError  # loaded with the session

        try:
            async with asyncio.timeout(seconds):
                async with session.post(
                    target.url,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                    proxy=target.proxy,
                ) as response:
                    # Read to its end, so the connection can be reused, but kept nowhere: a
                    # target's answer, however large, costs one chunk of memory.
                    async for _ in response.content.iter_chunked(64 * 1024):
                        pass
                    return response.status
        except ClientError as error:
            if isinstance(error, TimeoutError):  # aiohttp's read and connect timeouts
                raise
            raise ConnectionError(f"{type(error).__name__}: {error}") from error

    async def _traced(self, event: Event, target: Target, attempt_seconds: float) -> str:
        assert self._tracing is not None
        send = functools.partial(self._send, event, target, attempt_seconds)
        return await self._tracing.forward(event, target, send)

    async def _send(
        self,
        event: Event,
        target: Target,
        attempt_seconds: float,
        trace_headers: Mapping[str, str] | None = None,
    ) -> str:
        """POST once; returns the outcome label, one of `metrics.FORWARD_OUTCOMES`."""
        headers, body = request_for(event, target)
        if trace_headers:
            headers.update(trace_headers)
        plain = target.plain_http
        try:
            if plain is not None:  # bounded by `attempt_seconds` in all, connecting included
                status = await self.pool.post(plain, headers, body, attempt_seconds)
            else:
                status = await self._post_via_aiohttp(target, headers, body, attempt_seconds)
            outcome = FORWARD_OK if 200 <= status < 300 else FORWARD_HTTP_ERROR
        except TimeoutError:
            outcome = FORWARD_TIMEOUT
        except (OSError, ValueError):
            outcome = FORWARD_CONNECTION_ERROR
        except Exception as error:  # a bug here must fail the attempt, not the process
            log(
                40,
                "forward failed unexpectedly",
                webhook_id=event.msg_id,
                target=target.name,
                error=type(error).__name__,
            )
            outcome = FORWARD_INTERNAL_ERROR
        self._count(target, outcome)
        return outcome

    def close(self) -> None:
        self.pool.close()
