"""`kubectl gemini check` and the leader Lease: the replica that acts is the one renewing
it, so `check` reads it — for the chart's Deployment (from its arguments) and for an
operator run outside a Deployment, as the local sandbox runs it."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gemini_webhook_operator.leader import DEFAULT_LEASE_NAME
from gemini_webhooks.contracts.times import rfc3339
from gemini_webhooks.kubectl.check import leader_lease, lease_state
from tests.fixtures.kube import KUBECTL
from tests.kubectl.plugin import run
from tests.operator.harness import Cluster

NOW = datetime(2026, 12, 6, 19, 0, tzinfo=UTC)


def _lease(holder: str, renewed: datetime | None, duration: int | None = 15) -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": holder}
    if renewed is not None:
        spec["renewTime"] = rfc3339(renewed, "microseconds")
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    return {"metadata": {"name": DEFAULT_LEASE_NAME}, "spec": spec}


def test_a_lease_renewed_within_its_duration_has_a_live_holder() -> None:
    ok, detail = lease_state(_lease("op-1", NOW - timedelta(seconds=3)), NOW)
    assert ok and detail == "held by op-1, renewed 3 s ago"


def test_a_lease_not_renewed_for_its_duration_has_stopped() -> None:
    ok, detail = lease_state(_lease("op-1", NOW - timedelta(seconds=16)), NOW)
    assert not ok and "not renewed for 16 s (lease 15 s)" in detail


@pytest.mark.parametrize(
    ("lease", "says"),
    [
        (_lease("", NOW), "no replica holds it"),
        (_lease("op-1", None), "without a renewTime"),
        (_lease("op-1", NOW, duration=None), "without a renewTime and leaseDurationSeconds"),
        ({"metadata": {}}, "no replica holds it"),
    ],
)
def test_a_released_or_incomplete_lease_is_not_a_live_holder(
    lease: dict[str, Any], says: str
) -> None:
    ok, detail = lease_state(lease, NOW)
    assert not ok and says in detail


def test_a_renewal_slightly_ahead_of_our_clock_is_live() -> None:
    assert lease_state(_lease("op-1", NOW + timedelta(seconds=2)), NOW) == (
        True,
        "held by op-1, renewed 0 s ago",
    )


def test_the_lease_is_read_from_the_charts_deployment() -> None:
    from tests.chart.rendering import RELEASE_NAMESPACE, manifests

    (deployment,) = [m for m in manifests({}) if m["kind"] == "Deployment"]
    (lease,) = [m for m in manifests({}) if m["kind"] == "Lease"]
    assert leader_lease(deployment) == (RELEASE_NAMESPACE, lease["metadata"]["name"])
    off = [
        m for m in manifests({"leaderElection": {"enabled": False}}) if m["kind"] == "Deployment"
    ]
    assert leader_lease(off[0]) is None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--leader-elect"], ("ns-d", DEFAULT_LEASE_NAME)),
        (["--leader-elect", "--leader-election-id", "x"], ("ns-d", "x")),
        (
            ["--leader-elect", "--leader-election-namespace=elsewhere"],
            ("elsewhere", DEFAULT_LEASE_NAME),
        ),
        (["--drift-interval=60"], None),
    ],
)
def test_the_lease_follows_the_operators_arguments(
    args: list[str], expected: tuple[str, str] | None
) -> None:
    deployment = {
        "metadata": {"namespace": "ns-d", "name": "d"},
        "spec": {"template": {"spec": {"containers": [{"name": "operator", "args": args}]}}},
    }
    assert leader_lease(deployment) == expected


@pytest.mark.real_component
async def test_check_finds_an_operator_outside_a_deployment_by_its_live_lease(
    cluster: Cluster, kube: Any
) -> None:
    """No Deployment, a Lease renewed now: the operator counts as running (as the sandbox's
    does), its RBAC unnamed; a Lease its holder stopped renewing is reported, exit 1."""
    namespace = "plugin-lease"
    subprocess.run(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), "create", "namespace", namespace],
        check=False,
        capture_output=True,
        timeout=60,
    )
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": DEFAULT_LEASE_NAME, "namespace": namespace},
        "spec": _lease("op-outside", datetime.now(UTC))["spec"],
    }
    await cluster.client.create(lease)
    live = await run(kube, "check", "--operator-namespace", namespace, "-o", "json")
    checks = {c["check"]: c for c in json.loads(live.out)["checks"]}
    found = checks[f"operator (no Deployment; leader Lease {namespace}/{DEFAULT_LEASE_NAME})"]
    assert found["ok"] is True and found["detail"].startswith("held by op-outside, renewed")
    assert "operator Deployment" not in checks
    assert not [c for c in checks if c.startswith("RBAC")]
    assert live.code == 0, live.all

    stale = datetime.now(UTC) - timedelta(minutes=5)
    await cluster.client.request(
        "PATCH",
        f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{DEFAULT_LEASE_NAME}",
        {"spec": {"renewTime": rfc3339(stale, "microseconds")}},
        content_type="application/merge-patch+json",
    )
    stopped = await run(kube, "check", "--operator-namespace", namespace)
    assert stopped.code == 1, stopped.all
    assert "✗ operator Deployment: none labelled" in stopped.out
    assert f"no live leader Lease {DEFAULT_LEASE_NAME}: install the chart" in stopped.out
