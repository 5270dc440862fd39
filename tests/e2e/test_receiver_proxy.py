"""A cluster whose egress goes through an HTTP proxy: the chart's `receivers.proxy` reaches
the operator as its flags, the operator renders it into the receiver's Deployment, and the
receiver it deploys reaches a target outside the cluster only through that proxy.

The target's name (`partner.example.test`, a reserved top-level domain) resolves nowhere:
only a proxy that knows it can deliver there, and the proxy counts what it carried. The
proxy's `NO_PROXY` keeps loopback (the API server, the emulator) direct, as a cluster's
keeps its own names.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gemini_webhook_operator.receiver_names import receiver_name
from gemini_webhooks.contracts import crd
from gemini_webhooks.emulator import ControlClient
from gemini_webhooks.sandbox.kubelet import DEPLOYMENTS
from gemini_webhooks.sandbox.ports import LOOPBACK
from gemini_webhooks.sandbox.proxy import SandboxProxy, pod_key
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions
from tests.chart.rendering import find, manifests
from tests.e2e.conftest import ON_CONTROL_PLANE

pytestmark = pytest.mark.sandbox_only  # it starts its own operator with the chart's flags

PARTNER = "partner.example.test"  # outside the cluster, known only to the proxy
NAME = "proxied"


class CountingProxy:
    """An HTTP forward proxy that knows one outside host, and counts what it carried."""

    def __init__(self, target: str) -> None:
        self.carried = 0
        self.proxy = SandboxProxy(self._endpoints)
        self._target = target

    def _endpoints(self) -> dict[str, str]:
        self.carried += 1  # read once per request it handles
        return {pod_key(PARTNER, 80): self._target}


class Partner:
    """The outside target: records the events it is sent."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []  # (Host, body)
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.events.append((request.host, await request.text()))
        self.arrived.set()
        return web.Response(status=204)


@pytest.fixture
async def partner() -> AsyncIterator[tuple[Partner, str]]:
    partner = Partner()
    app = web.Application()
    app.router.add_post("/hook", partner.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, LOOPBACK, 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield partner, f"{LOOPBACK}:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def proxy(partner: tuple[Partner, str]) -> AsyncIterator[CountingProxy]:
    counting = CountingProxy(partner[1])
    await counting.proxy.start()
    try:
        yield counting
    finally:
        await counting.proxy.stop()


def _chart_proxy_flags(proxy_url: str) -> list[str]:
    """The operator's receiver-proxy flags, exactly as the chart renders them."""
    values = {"receivers": {"proxy": {"httpProxy": proxy_url, "noProxy": "127.0.0.1,localhost"}}}
    (deployment,) = find(manifests(values), "Deployment")
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return [arg for arg in args if arg.startswith("--receiver-") and "proxy" in arg]


async def _wait(predicate: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_a_receiver_reaches_an_outside_target_through_the_charts_proxy(
    tmp_path: Path, partner: tuple[Partner, str], proxy: CountingProxy
) -> None:
    flags = _chart_proxy_flags(proxy.proxy.url)
    assert flags, "the chart rendered no proxy flag"
    options = SandboxOptions(
        state_dir=tmp_path / "sandbox",
        echo_consumer=False,
        operator_args=flags,
        kube="process-node" if ON_CONTROL_PLANE else "sandbox",
    )
    async with Sandbox(options, progress=lambda line: None) as sandbox:
        api: Any = sandbox.api
        resource = sandbox.example()
        resource["metadata"]["name"] = NAME
        receiver = resource["spec"]["receiver"]
        receiver.pop("dynamic")
        receiver["routes"] = []
        receiver["defaultRoute"] = {"targets": [{"url": f"http://{PARTNER}/hook"}]}
        await api.create(f"{crd.PLURAL}.{crd.API_VERSION}", options.namespace, resource)

        name = receiver_name(NAME)

        async def ready() -> dict[str, Any] | None:
            deployment = await api.get(DEPLOYMENTS, options.namespace, name)
            status = (deployment or {}).get("status") or {}
            return deployment if status.get("readyReplicas") == 1 else None

        deployment = await _wait(ready, 90, "the receiver Deployment to be ready")
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HTTP_PROXY"] == proxy.proxy.url
        assert env["NO_PROXY"] == "127.0.0.1,localhost"

        carried_before = proxy.carried
        control = ControlClient(sandbox.emulator_url, api_key=options.api_key)
        await asyncio.to_thread(control.fire, "batch.succeeded", {"id": "batches/proxied-1"})
        try:
            await asyncio.wait_for(partner[0].arrived.wait(), 60)
        except TimeoutError:
            log = await asyncio.to_thread(control.deliveries)
            raise AssertionError(f"not delivered to the partner; emulator log: {log}") from None

    hosts = {host.partition(":")[0] for host, _ in partner[0].events}
    assert hosts == {PARTNER}
    assert any("batches/proxied-1" in body for _, body in partner[0].events)
    assert proxy.carried > carried_before
