"""`spec.receiver.tracing`, end to end in the sandbox: the operator renders the receiver's
OTEL_* environment into its Deployment, the sandbox's kubelet runs the real receiver from
it, and the delivery's spans reach the OpenTelemetry Collector (built here), the sample
consumer getting the `traceparent` of the receiver's forward span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gemini_webhook_operator.receiver_names import receiver_name
from gemini_webhooks.contracts import crd
from gemini_webhooks.emulator import ControlClient
from gemini_webhooks.sandbox.kubeapi import KubeApi
from gemini_webhooks.sandbox.kubelet import DEPLOYMENTS
from gemini_webhooks.sandbox.system import Sandbox, SandboxOptions
from tests.tracing import collector as otelcol

# The Collector is built in the background during scripts/test's sandbox phase.
pytestmark = [pytest.mark.real_component, pytest.mark.late_build]

GWH = f"{crd.PLURAL}.{crd.API_VERSION}"


@pytest.fixture
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[otelcol.Collector]:
    with otelcol.running(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


async def _until(predicate: Any, within: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while not (value := await predicate()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
    return value


async def test_a_receiver_traces_as_its_resource_says(
    collector: otelcol.Collector, tmp_path: Path
) -> None:
    options = SandboxOptions(state_dir=tmp_path / "sandbox", echo_consumer=False)
    async with Sandbox(options, progress=lambda line: None) as sandbox:
        api: KubeApi = sandbox.api  # type: ignore[assignment]
        resource = sandbox.example()
        resource["spec"]["receiver"]["tracing"] = {"otlpEndpoint": collector.endpoint}
        created = await api.create(GWH, options.namespace, resource)
        name = receiver_name(created["metadata"]["name"])

        async def ready() -> bool:
            webhook = await api.get(GWH, options.namespace, created["metadata"]["name"])
            deployment = await api.get(DEPLOYMENTS, options.namespace, name)
            conditions = ((webhook or {}).get("status") or {}).get("conditions") or []
            return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) and bool(
                deployment and (deployment.get("status") or {}).get("readyReplicas") == 1
            )

        await _until(ready, 90, "the webhook Ready and its receiver running")
        control = ControlClient(sandbox.emulator_url, api_key=options.api_key)
        await asyncio.to_thread(control.fire, "batch.succeeded", {"id": "batches/traced-1"})
        arrivals = await sandbox.consumer.wait_for(
            lambda got: any(a.body.get("data", {}).get("id") == "batches/traced-1" for a in got),
            within=30,
        )
    # The sandbox has stopped the receiver: its last spans are exported.
    [arrival] = [a for a in arrivals if a.body["data"]["id"] == "batches/traced-1"]
    traceparent = {k.lower(): v for k, v in arrival.headers.items()}["traceparent"]
    _, trace_id, forward_id, _ = traceparent.split("-")

    def forwarded(spans: list[dict[str, Any]]) -> bool:
        return any(s["spanId"] == forward_id for s in spans)

    spans = await asyncio.to_thread(collector.wait_for, forwarded)
    [forward] = [s for s in spans if s["spanId"] == forward_id]
    assert forward["name"] == "forward" and forward["traceId"] == trace_id
    [delivery] = [s for s in spans if s["spanId"] == forward["parentSpanId"]]
    assert delivery["name"] == "webhook delivery"
    # the environment the operator rendered, as the receiver's process got it
    assert delivery["service"] == name
    assert delivery["resource"]["k8s.namespace.name"] == options.namespace
    assert delivery["resource"]["k8s.deployment.name"] == name
    assert delivery["resource"]["k8s.pod.name"].startswith(name + "-")  # $(POD_NAME) expanded
