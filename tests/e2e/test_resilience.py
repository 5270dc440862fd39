"""What real clusters do to the system: crashes mid-stream and mid-rotation, bad input."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from typing import Any

import aiohttp
import pytest

from gemini_webhook_operator import receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.sandbox.kubeapi import KubeApi
from gemini_webhooks.sandbox.metric_samples import scrape, total
from gemini_webhooks.sandbox.scenario import real_cluster_example
from gemini_webhooks.sandbox.steps import StepFailed, poll
from gemini_webhooks.sandbox.system import Sandbox
from tests.e2e.conftest import System, kube_sandbox_of, sandbox_of
from tests.fixtures.real_node import main_process

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _cleanup(system: System, name: str) -> None:
    await system.kubectl(
        "delete",
        "geminiwebhook",
        name,
        "-n",
        system.namespace,
        "--ignore-not-found",
        "--wait=false",
        check=False,
    )


async def _receiver_pod(api: KubeApi, namespace: str, webhook: str) -> dict[str, Any]:
    """The one running receiver Pod of GeminiWebhook `webhook` (not one going away)."""
    selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(webhook).items())
    pods = [
        pod
        for pod in await api.list("pods", namespace, label_selector=selector)
        if "deletionTimestamp" not in pod["metadata"]
    ]
    assert len(pods) == 1, [pod["metadata"]["name"] for pod in pods]
    return pods[0]


def _restarts(pod: dict[str, Any]) -> int:
    return sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or [])


class ReceiverCrash:
    """SIGKILL of a receiver's process and the restarts seen after it: the container's
    main process on the real node (from the host, as an OOM kill or a crash ends it; the
    kubelet restarts the container, counted in the Pod's restartCount), the Pod's process
    on the API sandbox's kubelet."""

    def __init__(self, system: System, sandbox: Sandbox, webhook: str) -> None:
        self.system, self.sandbox, self.webhook = system, sandbox, webhook
        self.receiver = receiver_names.receiver_name(webhook)
        self.pod: dict[str, Any] = {}

    async def kill(self) -> None:
        if self.sandbox.real_node is None:
            assert self.sandbox.kubelet is not None
            self.sandbox.kubelet.kill_pod(self.system.namespace, self.receiver)
            return
        assert self.sandbox.api is not None
        self.pod = await _receiver_pod(self.sandbox.api, self.system.namespace, self.webhook)
        assert _restarts(self.pod) == 0
        os.kill(main_process(self.pod), signal.SIGKILL)

    async def restarts(self) -> int:
        if self.sandbox.real_node is None:
            assert self.sandbox.kubelet is not None
            return self.sandbox.kubelet.restarts(self.system.namespace, self.receiver)
        name = self.pod["metadata"]["name"]
        found = await self.system.api.get("pods", self.system.namespace, name)
        assert found is not None, "the killed receiver's Pod was replaced, not restarted"
        return _restarts(found)


@pytest.mark.sandbox_only
async def test_a_receiver_killed_mid_stream_loses_no_event(system: System) -> None:
    sandbox = sandbox_of(system)
    scenario = await system.scenario("crash-receiver")
    crash = ReceiverCrash(system, sandbox, "crash-receiver")
    try:
        await scenario.apply()
        await scenario.wait_ready()
        sent: list[str] = []
        for index in range(40):
            sent += await scenario._fire("batch.succeeded", data={"id": f"batches/{index}"})
            if index == 10:
                await crash.kill()
            await asyncio.sleep(0.05)
        # Deliveries that failed while the receiver was down are retried by Gemini (the
        # emulator) and verified by the restarted receiver: every event arrives.
        arrivals = await scenario._arrivals(sent, within=60, what="events sent around the crash")
        assert {a.webhook_id for a in arrivals} == set(sent)
        await poll(crash.restarts, within=60, what="the receiver's restart counted")
        assert await crash.restarts() == 1
    finally:
        await _cleanup(system, scenario.name)


async def test_an_operator_killed_mid_rotation_heals(system: System) -> None:
    """Rotation requested, operator SIGKILLed 0.3 s later and restarted: afterwards there
    is exactly one remote webhook, and the Secret holds the secret Gemini signs with now.
    Where the kill lands (before, inside or after the rotation) is not controlled, so
    this runs on a real cluster too; the exact boundary is the `sandbox_only` test below."""
    scenario = await system.scenario("crash-operator")
    try:
        await scenario.apply()
        await scenario.wait_ready()
        before = ((await scenario.resource()) or {}).get("status", {}).get("lastRotationTime")
        await scenario.request_rotation()
        await asyncio.sleep(0.3)
        await system.restart_operator()

        async def healed() -> bool:
            status = ((await scenario.resource()) or {}).get("status") or {}
            ready = await scenario.condition(crd.CONDITION_READY)
            return (
                status.get("lastRotationTime") not in (None, before)
                and ready is not None
                and ready.get("status") == "True"
            )

        await poll(healed, within=90, what="the rotation to complete after the restart")
        assert await scenario.remote_webhooks_of_resource() == 1
        assert await scenario.secret_matches_remote()
        if system.sandbox is not None:
            ids = await scenario._fire("video.generated")
            await scenario._arrivals(ids, within=30, what="an event after the heal")
    finally:
        await _cleanup(system, scenario.name)


@pytest.mark.sandbox_only
async def test_an_operator_killed_between_the_rotate_call_and_the_secret_write_heals(
    system: System,
) -> None:
    """The exact mid-rotation crash: Gemini has issued the new secret, the Secret was never
    written (the API server refuses the write), the operator is SIGKILLed there and
    restarted. Events flow throughout: every one arrives and none is rejected, and after
    the heal the Secret's current secret is the one Gemini calls current."""
    sandbox = kube_sandbox_of(system)
    scenario = await system.scenario("crash-mid-rotation")
    faults = f"{sandbox.kube_url}/sandbox/v1/faults"
    secret_name = scenario.name + crd.DEFAULT_SIGNING_SECRET_SUFFIX
    try:
        await scenario.apply()
        await scenario.wait_ready()
        webhook_id = scenario.webhook_id
        client = scenario.gemini()

        async def remote_secrets() -> list[Any]:
            remote = await asyncio.to_thread(client.webhooks.get, id=webhook_id)
            return list(remote.signing_secrets or [])

        assert len(await remote_secrets()) == 1
        rejected_before = total(
            await scrape(scenario.receiver_metrics_url()),
            "gemini_receiver_deliveries_total",
            outcome="rejected",
        )
        stop = asyncio.Event()
        sent: list[str] = []

        async def traffic() -> None:
            while not stop.is_set():
                sent.extend(await scenario._fire("interaction.completed"))
                await asyncio.sleep(0.1)

        pump = asyncio.create_task(traffic())
        async with aiohttp.ClientSession() as http:
            rule = {"code": 500, "count": 1000, "verb": "patch", "resource": "secrets"}
            rule |= {"namespace": system.namespace, "name": secret_name}
            async with http.post(faults, json=rule) as response:
                assert response.status < 300, await response.text()

            async def refused_writes() -> int:
                async with http.get(faults) as response:
                    pending = (await response.json())["faults"]
                return sum(1000 - f["count"] for f in pending if f.get("name") == secret_name)

            try:
                await asyncio.sleep(0.5)
                await scenario.request_rotation()

                async def at_the_boundary() -> bool:
                    return await refused_writes() >= 1

                await poll(
                    at_the_boundary, within=30, what="the Secret write after rotate", every=0.05
                )
                await sandbox.stop_operator(kill=True)  # SIGKILL right there
                # Read while no operator runs: a fresh one heals by rotating again.
                kept = await scenario.signing_secrets()
                issued = len(await remote_secrets())
                await sandbox.start_operator()
            finally:
                async with http.delete(faults) as response:
                    assert response.status < 300
        # Crashed mid-rotation: Gemini holds a secret the Secret never got.
        assert (kept, issued) == (1, 2)
        try:

            async def healed() -> bool:
                secrets = await remote_secrets()
                current = [s.truncated_secret for s in secrets if s.expire_time is None]
                return len(current) == 1 and await scenario.current_secret_matches(current[0])

            await poll(healed, within=60, what="the Secret to hold Gemini's current secret")
            await asyncio.sleep(1.0)  # traffic signed by the healed state
        finally:
            stop.set()
            await pump
        assert await scenario.remote_webhooks_of_resource() == 1
        await scenario._arrivals(sent, within=60, what="events sent around the crash")
        rejected = (
            total(
                await scrape(scenario.receiver_metrics_url()),
                "gemini_receiver_deliveries_total",
                outcome="rejected",
            )
            - rejected_before
        )
        assert rejected == 0
    finally:
        await _cleanup(system, scenario.name)


INVALID = textwrap.dedent(
    """
    apiVersion: gemini.webhooks.dev/v1alpha1
    kind: GeminiWebhook
    metadata:
      name: invalid-events
    spec:
      url: https://hooks.example.com/gemini
      events: [batch.completed]
      apiKeySecretRef: {name: gemini-api-key}
    """
)


async def test_an_invalid_resource_applied_with_kubectl_gets_the_schema_error(
    system: System,
) -> None:
    with pytest.raises(StepFailed) as refused:
        await system.kubectl("apply", "-n", system.namespace, "-f", "-", stdin=INVALID)
    message = str(refused.value)
    assert "spec.events[0]" in message
    assert 'Unsupported value: "batch.completed"' in message
    assert (
        await system.api.get(f"{crd.PLURAL}.{crd.API_VERSION}", system.namespace, "invalid-events")
        is None
    )


async def test_the_resource_a_real_cluster_run_applies_passes_the_api_servers_schema(
    system: System,
) -> None:
    """What `tests/e2e` applies on a real cluster (the demo resource without the emulator)
    is valid against the CRD installed where this runs: checked with a server dry run."""
    manifest = real_cluster_example(
        "real-cluster-example", system.namespace, "https://real-cluster-example.example.com/"
    )
    out = await system.kubectl(
        "apply", "--dry-run=server", "-n", system.namespace, "-f", "-", stdin=manifest
    )
    assert "geminiwebhook.gemini.webhooks.dev/real-cluster-example created (server dry run)" in out
    assert "apiBaseUrl" not in manifest and "jwksUri" not in manifest
