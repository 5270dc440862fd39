"""Every replica's pings count for DeliveryVerified without Redis (issue 12 §6), with 3
receiver replicas as containers on the real node (`GWO_KUBE=real-node`).

The operator's health check has the emulator (Gemini) send a ping through the receiver's
Service, which kube-proxy spreads over the 3 Pods; the replicas keep the pings they
verified in memory (the example has no Redis), so the operator asks every ready receiver
Pod, at its Pod IP, whether it verified the ping. Asking only the one Pod the internal
Service picks, two rotations in three would end Unknown/PingsPerReplica.

A rotation under ~50 events/s across 3 receiver replicas (Grace and Immediate, every event
exactly once; issue 13 §3, issue 22 §4) is shown on the real node, the operator a Pod of
the chart, by tests/chart/test_real_rollout.py's last two tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from gemini_webhook_operator.metrics import DELIVERY_PINGS_TOTAL
from gemini_webhooks.contracts import crd
from gemini_webhooks.sandbox.metric_samples import scrape, total
from gemini_webhooks.sandbox.rotation_run import example, wait_replicas
from gemini_webhooks.sandbox.scenario import Scenario
from gemini_webhooks.sandbox.steps import StepFailed, poll
from gemini_webhooks.sandbox.system import Sandbox
from tests.e2e.conftest import System, sandbox_of

pytestmark = [
    pytest.mark.real_component,
    # Several Pods of one Deployment: a real node's (the API sandbox's kubelet runs one).
    pytest.mark.real_cluster_only,
    pytest.mark.sandbox_only,  # the emulator's metrics and rotations
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(600),
]

REPLICAS = 3
NAME = "rotation-replicas"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def three(system: System) -> AsyncIterator[tuple[Sandbox, Scenario]]:
    """The example with 3 receiver replicas, Ready, its 3 Pods ready behind its Service."""
    sandbox = sandbox_of(system)
    assert sandbox.api is not None
    api = sandbox.api
    scenario = await system.scenario(NAME)
    scenario.example_path.write_text(example(sandbox, NAME, "Grace", REPLICAS))

    try:
        await scenario.apply()
        await scenario.wait_ready(within=180)
        await wait_replicas(api, scenario, REPLICAS, within=180)
        yield sandbox, scenario
    finally:
        await system.kubectl(
            "delete", "geminiwebhook", NAME, "-n", system.namespace, "--wait=false", check=False
        )


async def test_without_redis_every_replicas_pings_count_for_delivery_verified(
    three: tuple[Sandbox, Scenario],
) -> None:
    """Three rotations, each followed by the health check's ping: the Service spreads the
    pings over the replicas, and each verifies whichever replica took it."""
    sandbox, scenario = three
    assert sandbox.operator_metrics_url

    async def pings(result: str) -> float:
        samples = await scrape(str(sandbox.operator_metrics_url))
        return total(samples, DELIVERY_PINGS_TOTAL, result=result)

    async def seen() -> str:
        """What the health check saw: its counts, the condition, and its Warning Events
        (a ping verified only with a previous secret, or not received)."""
        condition = await scenario.condition(crd.CONDITION_DELIVERY_VERIFIED) or {}
        results = {r: await pings(r) for r in ("verified", "not_verified", "receiver_unreachable")}
        events = await scenario.kubectl(
            "get",
            "events",
            "-n",
            scenario.namespace,
            "--field-selector",
            f"involvedObject.name={NAME}",
            "-o",
            "custom-columns=TIME:.lastTimestamp,TYPE:.type,REASON:.reason,MESSAGE:.message",
            check=False,
        )
        return f"pings {results}; DeliveryVerified {condition}; events:\n{events}"

    verified_before, unverified_before = await pings("verified"), await pings("not_verified")
    for rotation in range(1, 4):
        await scenario.request_rotation()

        async def verified(wanted: float = verified_before + rotation) -> bool:
            return await pings("verified") >= wanted

        try:
            await poll(verified, within=120, what=f"a verified ping after rotation {rotation}")
        except StepFailed as error:
            raise AssertionError(f"{error}: {await seen()}") from None
    assert await pings("not_verified") == unverified_before, await seen()

    async def shown() -> bool:  # the verdict is counted just before it is written
        condition = await scenario.condition(crd.CONDITION_DELIVERY_VERIFIED) or {}
        return (condition.get("status"), condition.get("reason")) == ("True", "PingVerified")

    await poll(shown, within=30, what="DeliveryVerified=True (PingVerified)")
