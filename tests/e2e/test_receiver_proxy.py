"""A cluster whose egress goes through an HTTP proxy: the chart's `receivers.proxy` reaches
the operator as its flags, the operator renders it into the receiver's Deployment, and the
receiver it deploys reaches a target outside the cluster only through that proxy.

The target's name (`partner.example.test`, a reserved top-level domain) resolves nowhere,
not even through the real node's cluster DNS: only a proxy that knows it can deliver there,
and the proxy counts what it carried. The proxy's `NO_PROXY` keeps where the emulator
listens direct (loopback; on the real node, the host's end of the node's veth, which the
receiver containers reach), as a cluster's keeps its own names. On the real node
(`GWO_KUBE=real-node`) the receiver is a container of our image and the proxy listens on
the host where the Pods reach it, as an egress proxy outside a cluster does. The session's
sandbox (tests/e2e/conftest.py) runs it, its operator restarted with the chart's proxy
flags and, afterwards, without them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gemini_webhook_operator.receiver_names import receiver_name
from gemini_webhooks.contracts import crd
from gemini_webhooks.emulator import ControlClient
from gemini_webhooks.sandbox.kubelet import DEPLOYMENTS
from gemini_webhooks.sandbox.ports import LOOPBACK
from gemini_webhooks.sandbox.proxy import SandboxProxy, pod_key
from gemini_webhooks.sandbox.system import Sandbox
from tests.chart.rendering import find, manifests
from tests.e2e.conftest import System, sandbox_of

pytestmark = [
    pytest.mark.sandbox_only,  # it restarts the sandbox's operator with the chart's flags
    pytest.mark.asyncio(loop_scope="session"),
]

PARTNER = "partner.example.test"  # outside the cluster, known only to the proxy
NAME = "proxied"


class CountingProxy:
    """An HTTP forward proxy that knows one outside host, and counts what it carried."""

    def __init__(self, target: str, *, host: str) -> None:
        self.carried = 0
        self.proxy = SandboxProxy(self._endpoints, host=host)
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


@pytest_asyncio.fixture(loop_scope="session")  # the test's loop: it serves during the test
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


def _chart_proxy_flags(proxy_url: str, no_proxy: str) -> list[str]:
    """The operator's receiver-proxy flags, exactly as the chart renders them."""
    values = {"receivers": {"proxy": {"httpProxy": proxy_url, "noProxy": no_proxy}}}
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


@contextlib.asynccontextmanager
async def _operator_with(sandbox: Sandbox, flags: list[str]) -> AsyncIterator[None]:
    """The sandbox's operator restarted with `flags` added (as the chart renders them), and
    restarted without them afterwards."""
    usual = sandbox.options.operator_args
    await sandbox.stop_operator()
    sandbox.options.operator_args = [*usual, *flags]
    try:
        await sandbox.start_operator()
        yield
    finally:
        await sandbox.stop_operator()
        sandbox.options.operator_args = usual
        await sandbox.start_operator()


async def test_a_receiver_reaches_an_outside_target_through_the_charts_proxy(
    system: System, partner: tuple[Partner, str]
) -> None:
    sandbox = sandbox_of(system)
    # Where the receivers reach the host: loopback, or the host's end of the node's veth.
    proxy = CountingProxy(partner[1], host=sandbox.host)
    await proxy.proxy.start()
    try:
        no_proxy = ",".join(dict.fromkeys([LOOPBACK, "localhost", sandbox.host]))
        flags = _chart_proxy_flags(proxy.proxy.url, no_proxy)
        assert flags, "the chart rendered no proxy flag"
        async with _operator_with(sandbox, flags):
            try:
                env = await _receiver_env(sandbox)
                assert (env["HTTP_PROXY"], env["NO_PROXY"]) == (proxy.proxy.url, no_proxy)
                carried_before = proxy.carried
                control = ControlClient(sandbox.emulator_url, api_key=sandbox.options.api_key)
                await asyncio.to_thread(
                    control.fire, "batch.succeeded", {"id": "batches/proxied-1"}
                )
                try:
                    await asyncio.wait_for(partner[0].arrived.wait(), 60)
                except TimeoutError:
                    log = await asyncio.to_thread(control.deliveries)
                    raise AssertionError(f"not delivered to the partner: {log}") from None
            finally:
                await system.kubectl(
                    "delete", crd.PLURAL, NAME, "-n", system.namespace, "--wait=false", check=False
                )
    finally:
        await proxy.proxy.stop()

    hosts = {host.partition(":")[0] for host, _ in partner[0].events}
    assert hosts == {PARTNER}
    assert any("batches/proxied-1" in body for _, body in partner[0].events)
    assert proxy.carried > carried_before


async def _receiver_env(sandbox: Sandbox) -> dict[str, str | None]:
    """The example, its receiver forwarding everything to the partner, applied; once its
    receiver Deployment is ready, its container's environment."""
    api: Any = sandbox.api
    namespace = sandbox.options.namespace
    resource = sandbox.example()
    resource["metadata"]["name"] = NAME
    receiver = resource["spec"]["receiver"]
    receiver.pop("dynamic")
    receiver["routes"] = []
    receiver["defaultRoute"] = {"targets": [{"url": f"http://{PARTNER}/hook"}]}
    await api.create(f"{crd.PLURAL}.{crd.API_VERSION}", namespace, resource)

    async def ready() -> dict[str, Any] | None:
        deployment = await api.get(DEPLOYMENTS, namespace, receiver_name(NAME))
        status = (deployment or {}).get("status") or {}
        return deployment if status.get("readyReplicas") == 1 else None

    deployment = await _wait(ready, 180, "the receiver Deployment to be ready")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container["env"]}
