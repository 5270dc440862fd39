"""The sample consumer: a tiny HTTP server standing in for an in-cluster Service.

It accepts every POST, prints one line per event it receives, and exposes what it got at
`GET /_consumer/received` (JSON, oldest first) so the demo and the tests can check that each
event arrived. It keeps the last `max_records` arrivals in memory and accepts bodies up
to 1 MiB.

When the process's standard `OTEL_*` environment turns tracing on (`gemini_webhooks.tracing`,
as for the receiver), it continues the W3C trace each delivery carries (`traceparent`, sent
by the receiver's `forward` span) with a `consume event` span of its own, its child, and
exports it; otherwise it loads no OpenTelemetry module. The span holds the event's type and
the request's path, never the body.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gemini_webhooks.contracts.delivery import HEADER_ID
from gemini_webhooks.tracing import TracingConfigError, configured, tracer_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

SERVICE_NAME = "sample-consumer"  # the spans' service.name unless OTEL_* names one
SPAN_NAME = "consume event"
RECEIVED_PATH = "/_consumer/received"
HEALTH_PATH = "/healthz"
MAX_BODY = 1024 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Arrival:
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the text when it is not JSON
    received_at: float

    @property
    def event_type(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("type"), str):
            return str(self.body["type"])
        return None

    @property
    def webhook_id(self) -> str | None:
        for key, value in self.headers.items():
            if key.lower() in (HEADER_ID, "idempotency-key", "ce-id"):
                return value
        return None


def describe(arrival: Arrival) -> str:
    """One line for the terminal: what arrived where."""
    body = arrival.body if isinstance(arrival.body, dict) else {}
    data = body.get("data")
    data = data if isinstance(data, dict) else {}
    subject = data.get("id") or data.get("file_id") or ""
    metadata = body.get("user_metadata")
    extra = f" user_metadata={json.dumps(metadata, sort_keys=True)}" if metadata else ""
    return (
        f"consumer {arrival.path}: {arrival.event_type or '(no type)'} {subject}"
        f" (id {arrival.webhook_id or '?'}){extra}"
    )


class _Spans:
    """The consumer's spans (tracing on): one `consume event` per delivery, the child of the
    context its headers carry (the configured propagators; W3C `traceparent` by default)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("gemini_webhooks.sandbox.consumer")

    def record(self, arrival: Arrival, headers: Mapping[str, str]) -> None:
        from opentelemetry import propagate
        from opentelemetry.trace import SpanKind

        attributes = {"url.path": arrival.path, "http.request.method": "POST"}
        if arrival.event_type is not None:
            attributes["gemini.event.type"] = arrival.event_type
        parent = propagate.extract(dict(headers))
        span = self.tracer.start_span(
            SPAN_NAME, parent, SpanKind.SERVER, attributes, start_time=_nanos(arrival.received_at)
        )
        span.end()


def _nanos(seconds: float) -> int:
    return int(seconds * 1e9)


def spans_from(env: Mapping[str, str]) -> _Spans | None:
    """The consumer's spans when `env` (the process's environment, which the SDK reads
    itself) turns tracing on, else None; TracingConfigError for one that asks what is not
    shipped."""
    if not configured(env):
        return None
    return _Spans(tracer_provider(env, SERVICE_NAME))


class SampleConsumer:
    """The consumer's state and HTTP app; `start()` serves it on loopback (port 0), tracing
    when the process's `OTEL_*` environment says so."""

    def __init__(
        self, *, max_records: int = 10_000, echo: Callable[[str], None] | None = None
    ) -> None:
        self.arrivals: deque[Arrival] = deque(maxlen=max_records)
        self.echo = echo
        self.changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._spans: _Spans | None = None
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_get(RECEIVED_PATH, self._list)
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_post("/{tail:.*}", self._receive)
        return app

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        text = raw.decode("utf-8", errors="replace")
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = text
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        arrival = Arrival(request.path, headers, body, time.time())
        if self._spans is not None:
            self._spans.record(arrival, request.headers)
        self.arrivals.append(arrival)
        self.changed.set()
        if self.echo is not None:
            self.echo(describe(arrival))
        return web.json_response({"received": True})

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(a) for a in self.arrivals])

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve; TracingConfigError (before anything listens) when the `OTEL_*`
        environment asks for what cannot be done."""
        self._spans = spans_from(os.environ)
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = _bound_port(site)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._spans is not None:  # exports what is still batched
            await asyncio.to_thread(self._spans.provider.shutdown)
            self._spans = None

    def received(self, event_type: str | None = None) -> list[Arrival]:
        return [a for a in self.arrivals if event_type is None or a.event_type == event_type]

    async def wait_for(
        self, predicate: Callable[[list[Arrival]], bool], within: float
    ) -> list[Arrival]:
        """Wait until `predicate(arrivals)` holds; raise TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not predicate(list(self.arrivals)):
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("the consumer did not receive what was expected in time")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self.changed.wait()
        return list(self.arrivals)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("the server did not bind a socket")
    port: int = sockets[0].getsockname()[1]
    return port


def main(argv: list[str] | None = None) -> int:
    """`python -m gemini_webhooks.sandbox.consumer [--port P]`: the consumer on its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)

    async def serve() -> None:
        consumer = SampleConsumer(echo=lambda line: print(line, flush=True))
        port = await consumer.start(args.host, args.port)
        print(f"sample consumer listening on http://{args.host}:{port}/", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await consumer.stop()

    try:
        asyncio.run(serve())
    except TracingConfigError as error:
        print(f"sample consumer: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
