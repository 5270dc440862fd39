"""The sandbox's forward proxy: cluster names and Pod addresses reach loopback processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from gemini_webhooks.sandbox.proxy import SandboxProxy, loopback_for, pod_key, service_key


def test_a_service_host_of_any_cluster_domain_maps_to_its_loopback_address() -> None:
    endpoints = {service_key("orders", "shop", 8080): "127.0.0.1:4123"}
    for host in ("orders.shop.svc.cluster.local", "orders.shop.svc", "ORDERS.shop.svc.corp"):
        assert loopback_for(host, 8080, endpoints) == "127.0.0.1:4123"
    assert loopback_for("orders.shop.svc.cluster.local", 80, endpoints) is None
    assert loopback_for("orders.other.svc.cluster.local", 8080, endpoints) is None


def test_a_pod_address_maps_to_its_loopback_address() -> None:
    endpoints = {pod_key("10.244.0.7", 9090): "127.0.0.1:4124"}
    assert loopback_for("10.244.0.7", 9090, endpoints) == "127.0.0.1:4124"
    assert loopback_for("10.244.0.8", 9090, endpoints) is None


@pytest.fixture
async def backend() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(request)
        assert request.transport is not None
        request["peer"] = request.transport.get_extra_info("peername")
        await request.read()
        return web.Response(status=201, text=f"got {request.path_qs}", headers={"x-b": "1"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.fixture
async def proxy_for_backend(
    backend: tuple[str, list[web.Request]],
) -> AsyncIterator[SandboxProxy]:
    address, _ = backend
    proxy = SandboxProxy(lambda: {service_key("orders", "shop", 8080): address})
    await proxy.start()
    yield proxy
    await proxy.stop()


async def test_a_request_for_a_service_reaches_its_process_with_its_host(
    proxy_for_backend: SandboxProxy, backend: tuple[str, list[web.Request]]
) -> None:
    _, seen = backend
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            "http://orders.shop.svc.cluster.local:8080/in?x=1",
            data=b"{}",
            proxy=proxy_for_backend.url,
        ) as response,
    ):
        assert (response.status, await response.text()) == (201, "got /in?x=1")
        assert response.headers["x-b"] == "1"
    assert seen[0].headers["host"] == "orders.shop.svc.cluster.local:8080"


def _onward_ports(seen: list[web.Request]) -> set[int]:
    """The proxy's source ports the backend saw: one per onward connection."""
    return {request["peer"][1] for request in seen}


async def test_each_caller_connection_has_its_own_onward_connection_as_through_kube_proxy(
    proxy_for_backend: SandboxProxy, backend: tuple[str, list[web.Request]]
) -> None:
    """A Service of several Pods spreads callers' connections (kube-proxy balances per
    connection): a caller opening one connection per request reaches the backend on as
    many; a keep-alive caller on one, as it would one Pod. A shared pool would pin both."""
    _, seen = backend
    url = "http://orders.shop.svc.cluster.local:8080/in"
    closing = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=closing) as session:
        for _ in range(3):
            async with session.post(url, data=b"{}", proxy=proxy_for_backend.url) as response:
                assert response.status == 201
    assert len(_onward_ports(seen)) == 3
    seen.clear()
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(url, data=b"{}", proxy=proxy_for_backend.url) as response:
                assert response.status == 201
        assert len(_onward_ports(seen)) == 1
        assert proxy_for_backend.onward_connections >= 1
    # The callers' connections are closed: so, within the sweep, are theirs onward.
    for _ in range(50):
        if proxy_for_backend.onward_connections == 0:
            break
        await asyncio.sleep(0.1)
    assert proxy_for_backend.onward_connections == 0


async def test_a_caller_closing_after_its_request_closes_the_onward_connection_at_once(
    proxy_for_backend: SandboxProxy, backend: tuple[str, list[web.Request]]
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            "http://orders.shop.svc.cluster.local:8080/",
            proxy=proxy_for_backend.url,
            headers={"Connection": "close"},
        ) as response,
    ):
        assert response.status == 201
    assert proxy_for_backend.onward_connections == 0


async def test_an_unknown_name_gets_a_502_that_names_it(proxy_for_backend: SandboxProxy) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            "http://payments.shop.svc.cluster.local:8080/", proxy=proxy_for_backend.url
        ) as response,
    ):
        assert response.status == 502
        assert "payments.shop.svc.cluster.local:8080" in await response.text()


async def test_a_known_name_whose_process_refuses_fails_the_callers_connection() -> None:
    """As a refused connection to a Pod does in a cluster: no HTTP answer to count on."""
    proxy = SandboxProxy(lambda: {service_key("orders", "shop", 8080): "127.0.0.1:9"})
    await proxy.start()
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                async with session.get(
                    "http://orders.shop.svc.cluster.local:8080/", proxy=proxy.url
                ) as response:
                    await response.read()
    finally:
        await proxy.stop()


async def test_the_environment_sends_cluster_names_through_it_and_loopback_around_it() -> None:
    from gemini_webhooks.contracts.egress_proxy import ProxySettings

    proxy = SandboxProxy(dict)
    await proxy.start()
    try:
        settings = ProxySettings.from_environ(proxy.environment())
        assert settings.proxy_for("http://orders.shop.svc.cluster.local:80/") == proxy.url
        assert settings.proxy_for("http://10.244.0.2:9090/") == proxy.url
        assert settings.proxy_for("http://127.0.0.1:6443/api") is None
        assert settings.proxy_for("http://localhost:6443/api") is None
    finally:
        await proxy.stop()
