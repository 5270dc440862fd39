"""A Service with several pods on the node: one loopback port spreading connections.

kube-proxy balances a ClusterIP Service per connection; the node does the same for a
Service that selects more than one of its pods: a TCP listener on loopback hands each new
connection to the next ready backend in turn (round robin), and pipes bytes both ways until
either side closes. A backend that refuses the connection is skipped for that connection
(the next one is tried), so a restarting pod does not fail a caller while another is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Mapping, Sequence

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.sandbox.kubelet import PodPorts, service_key

_CHUNK = 64 * 1024


def service_backends(
    services: Sequence[Mapping[str, object]],
    pods: Mapping[tuple[str, str], tuple[Mapping[str, str], PodPorts, bool]],
) -> dict[str, list[tuple[str, bool]]]:
    """`namespace/name:port` -> every selected pod's `127.0.0.1:<port>` with its readiness,
    in a stable order (by pod key)."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for service in services:
        metadata: Mapping[str, str] = service["metadata"]  # type: ignore[assignment]
        spec: Mapping[str, object] = service.get("spec") or {}  # type: ignore[assignment]
        namespace = metadata.get("namespace", "default")
        selector: Mapping[str, str] = spec.get("selector") or {}  # type: ignore[assignment]
        if not selector:  # a Service without a selector has its endpoints made by hand
            continue
        selects = label_selector.from_labels(selector)
        for (pod_namespace, _), (labels, ports, ready) in sorted(
            pods.items(), key=lambda item: item[0]
        ):
            if pod_namespace != namespace or not selects.matches(labels):
                continue
            for port in spec.get("ports") or []:  # type: ignore[attr-defined]
                host_port = ports.lookup(port.get("targetPort", port["port"]))
                if host_port is not None:
                    key = service_key(metadata["name"], namespace, int(port["port"]))
                    found.setdefault(key, []).append((f"127.0.0.1:{host_port}", ready))
    return found


def choose(backends: Sequence[tuple[str, bool]]) -> list[str]:
    """The addresses to rotate over: the ready ones, or all while none is ready (a caller
    then sees connection refused, as through a Service whose pods are all starting)."""
    ready = [address for address, is_ready in backends if is_ready]
    return ready or [address for address, _ in backends]


class RoundRobin:
    """One loopback listener; each accepted connection goes to the next backend."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends: list[str] = list(backends)
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self.connections: dict[str, int] = {}  # backend -> connections handed to it

    @property
    def address(self) -> str:
        assert self._server is not None, "not started"
        port = self._server.sockets[0].getsockname()[1]
        return f"127.0.0.1:{port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._pipes):
                task.cancel()
            for task in list(self._pipes):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._server.wait_closed()

    async def _connect(self) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        backends = list(self.backends)
        if not backends:
            return None
        first = next(self._turn)
        for offset in range(len(backends)):
            address = backends[(first + offset) % len(backends)]
            host, _, port = address.rpartition(":")
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
            except OSError:
                continue
            return address, reader, writer
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            connected = await self._connect()
            if connected is None:
                return
            address, backend_reader, backend_writer = connected
            self.connections[address] = self.connections.get(address, 0) + 1
            try:
                await asyncio.gather(_pipe(reader, backend_writer), _pipe(backend_reader, writer))
            finally:
                backend_writer.close()
        finally:
            writer.close()
            self._pipes.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(_CHUNK):
            sink.write(chunk)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
