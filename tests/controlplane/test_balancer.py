"""The node's round-robin listener for a Service that selects several pods."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from gemini_webhooks.controlplane.balancer import RoundRobin, choose, service_backends
from gemini_webhooks.sandbox.kubelet import PodPorts


def _ports(number: int, name: str, host: int) -> PodPorts:
    return PodPorts(by_number={number: host}, by_name={name: host})


def _service(name: str, selector: dict[str, str], target: int | str = 8080) -> dict:
    return {
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": target}]},
    }


def test_service_backends_lists_every_selected_pod_with_its_readiness() -> None:
    pods = {
        ("ns", "b"): ({"app": "r"}, _ports(8080, "http", 2002), False),
        ("ns", "a"): ({"app": "r"}, _ports(8080, "http", 2001), True),
        ("ns", "c"): ({"app": "other"}, _ports(8080, "http", 2003), True),
        ("other", "d"): ({"app": "r"}, _ports(8080, "http", 2004), True),
    }
    found = service_backends(
        [
            _service("r", {"app": "r"}),
            _service("named", {"app": "r"}, "http"),
            _service("none", {}),
        ],
        pods,
    )
    expected = [("127.0.0.1:2001", True), ("127.0.0.1:2002", False)]
    assert found == {"ns/r:80": expected, "ns/named:80": expected}


def test_choose_prefers_ready_backends_and_falls_back_to_all() -> None:
    assert choose([("a", True), ("b", False), ("c", True)]) == ["a", "c"]
    assert choose([("a", False), ("b", False)]) == ["a", "b"]
    assert choose([]) == []


async def _echo_server(tag: bytes) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(tag + data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def backends() -> AsyncIterator[list[str]]:
    servers = [await _echo_server(tag) for tag in (b"A:", b"B:", b"C:")]
    yield [address for _, address in servers]
    for server, _ in servers:
        server.close()
        await server.wait_closed()


async def _exchange(address: str, payload: bytes) -> bytes:
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(payload)
    await writer.drain()
    answer = await reader.readexactly(len(payload) + 2)
    writer.close()
    return answer


async def test_each_connection_goes_to_the_next_backend(backends: list[str]) -> None:
    balancer = RoundRobin(backends)
    await balancer.start()
    try:
        tags = [(await _exchange(balancer.address, b"hello"))[:2] for _ in range(6)]
        assert tags == [b"A:", b"B:", b"C:", b"A:", b"B:", b"C:"]
        assert balancer.connections == dict.fromkeys(backends, 2)
        # Bytes flow both ways for the whole connection (several exchanges on one).
        host, _, port = balancer.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        for word in (b"one", b"two"):
            writer.write(word)
            assert await reader.readexactly(len(word) + 2) == b"A:" + word
        writer.close()
    finally:
        await balancer.stop()


async def test_a_refusing_backend_is_skipped(backends: list[str]) -> None:
    refused_server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    refused = f"127.0.0.1:{refused_server.sockets[0].getsockname()[1]}"
    refused_server.close()
    await refused_server.wait_closed()
    balancer = RoundRobin([refused, backends[1]])
    await balancer.start()
    try:
        for _ in range(3):
            assert (await _exchange(balancer.address, b"x"))[:2] == b"B:"
        assert refused not in balancer.connections
    finally:
        await balancer.stop()


async def test_no_backend_reachable_closes_the_connection() -> None:
    balancer = RoundRobin([])
    await balancer.start()
    try:
        host, _, port = balancer.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        writer.close()
    finally:
        await balancer.stop()
