"""The receiver process: the `Receiver` behind the public delivery endpoint and the
internal endpoint, both served on `http1` connections, started and stopped together."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST

from gemini_webhooks.contracts.receiver_config import PING_STATUS_PATH, ReceiverConfig
from gemini_webhooks.tracing import configured as tracing_configured
from gemini_webhooks.tracing import tracer_provider

from .internal import JSON, Endpoint, InternalServer
from .logs import log
from .public import PublicServer
from .receiver import Receiver

if TYPE_CHECKING:
    from .tracing import Tracing


def internal_routes(receiver: Receiver) -> dict[str, tuple[Endpoint, str]]:
    return {
        "/metrics": (receiver.handle_metrics, CONTENT_TYPE_LATEST),
        "/healthz": (receiver.handle_healthz, JSON),
        "/readyz": (receiver.handle_readyz, JSON),
        PING_STATUS_PATH: (receiver.handle_pings, JSON),
    }


@dataclass
class Running:
    receiver: Receiver
    public: asyncio.Server
    public_connections: PublicServer
    internal: asyncio.Server
    internal_connections: InternalServer
    public_port: int
    internal_port: int

    async def stop(self, drain_seconds: float = 10.0) -> None:
        """Stop listening, let in-flight deliveries finish (up to `drain_seconds`), close."""
        self.public.close()
        self.public_connections.close_idle()
        await self.receiver.stop(drain_seconds)
        self.public_connections.close_all()
        self.internal.close()
        self.internal_connections.close_all()
        await self.internal.wait_closed()
        if self.receiver.tracing is not None:
            await asyncio.to_thread(self.receiver.tracing.shutdown)  # the last spans out


def start_tracing() -> Tracing | None:
    """The receiver's spans when the process's `OTEL_*` environment turns tracing on
    (`gemini_webhooks.tracing`), importing OpenTelemetry only then; None otherwise.
    `TracingConfigError` for an environment asking what cannot be done."""
    if not tracing_configured(os.environ):
        return None
    from .tracing import Tracing

    return Tracing(tracer_provider(os.environ, "gemini-webhook-receiver"))


async def serve(config: ReceiverConfig, *, drain_seconds: float = 10.0) -> Running:
    """Start everything; the returned ports are the bound ones (config may say 0)."""
    tracing = start_tracing()
    receiver = Receiver(config, tracing)
    await receiver.start()
    deliver = receiver.handle_delivery
    connections = PublicServer(
        config.listen.path,
        config.limits.max_body_bytes,
        config.limits.read_timeout_seconds,
        deliver if tracing is None else tracing.deliveries(deliver),
        receiver.rejected,
        config.limits.max_connections,
    )
    loop = asyncio.get_running_loop()
    public = await loop.create_server(
        connections.protocol, config.listen.host, config.listen.port, backlog=1024
    )
    internal_connections = InternalServer(internal_routes(receiver))
    internal = await loop.create_server(
        internal_connections.protocol, config.internal.host, config.internal.port, backlog=1024
    )
    ports = [public.sockets[0].getsockname()[1], internal.sockets[0].getsockname()[1]]
    log(
        20,
        "receiver listening",
        port=ports[0],
        internal_port=ports[1],
        mode="redis" if config.redis else "inline",
        tracing=tracing is not None,
    )
    return Running(
        receiver, public, connections, internal, internal_connections, ports[0], ports[1]
    )
