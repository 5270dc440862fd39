"""Steady state: with every resource Ready and nothing changing, the WebhookService sees
one shared listing per drift interval for all resources together — not one call each —
and nothing else (counted by `FaultProxy`, a recording test double, not a fake API)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_operator import receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.sandbox.kubeapi import KubeApi
from tests.operator.api_proxy import FaultProxy
from tests.operator.harness import Cluster, is_ready, operator_running, resource

RESOURCES = 6
DRIFT = 1.0
WINDOW = 4.0
READS = {"get", "list", "watch"}


async def test_steady_state_costs_one_shared_listing_per_drift_interval(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    endpoint = emulator.endpoint()
    names = [f"steady-{index}" for index in range(RESOURCES)]
    async with operator_running(kube, drift_interval=DRIFT) as running:
        for name in names:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        for name in names:
            await gemini.wait_for(name, is_ready)
        await asyncio.sleep(2 * DRIFT)  # let the creation settle
        drift_before = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
        before = len(api_proxy.calls())
        await asyncio.sleep(WINDOW)
        calls = api_proxy.calls()[before:]
        drift_checks = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
    assert drift_checks - drift_before >= RESOURCES * (WINDOW / DRIFT - 1)  # they all ran
    assert all(c.method == "GET" and c.path.endswith("/webhooks") for c in calls), calls
    # One listing per interval for all six (plus one for an interval boundary in the window).
    assert len(calls) <= WINDOW / DRIFT + 1, len(calls)


Requests = Counter[tuple[str, str, str]]


async def kube_requests(kube: Any) -> Requests:
    """Kubernetes API requests served so far, by (verb, resource, subresource): the sandbox's
    audit, or the real API server's own `apiserver_request_total` (verbs as RBAC names them;
    a server-side apply is a `patch`)."""
    if kube.is_sandbox:
        return Counter((e.verb, e.resource, e.subresource) for e in kube.audit)
    api = KubeApi.from_kubeconfig(kube.kubeconfig)
    try:
        text = await api.text("/metrics")
    finally:
        await api.close()
    verbs = {"POST": "create", "PUT": "update", "APPLY": "patch"}
    counted: Requests = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                verb = labels.get("verb", "")
                key = (
                    verbs.get(verb, verb.lower()),
                    labels.get("resource", ""),
                    labels.get("subresource", ""),
                )
                counted[key] += int(sample.value)
    return counted


WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


def _moved(
    after: Requests, before: Requests, resource: str, *, subresource: str | None = None
) -> dict[str, int]:
    """What grew, by verb, for `resource` (and only `subresource` of it when given)."""
    moved = after - before  # keeps only what grew
    return {
        verb: count
        for (verb, kind, sub), count in moved.items()
        if kind == resource and subresource in (None, sub)
    }


@pytest.mark.sandbox_only
async def test_steady_state_writes_nothing_to_the_kubernetes_api(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    if not kube.is_sandbox:  # the full suite's other tests share kube-apiserver's counters
        pytest.skip(
            "counts requests by the sandbox's audit; bench/operator --kube real measures it"
        )
    endpoint = emulator.endpoint()
    names = [f"quiet-{index}" for index in range(RESOURCES)]
    async with operator_running(kube, drift_interval=DRIFT) as running:
        for name in names:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        for name in names:
            await gemini.wait_for(name, is_ready)
        await asyncio.sleep(2 * DRIFT)  # let the creation settle
        drift_before = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
        before = await kube_requests(kube)
        await asyncio.sleep(WINDOW)
        after = await kube_requests(kube)
        drift_checks = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
    assert drift_checks - drift_before >= RESOURCES * (WINDOW / DRIFT - 1)  # they all ran
    webhooks = _moved(after, before, crd.PLURAL)
    assert set(webhooks) <= READS, webhooks  # no patch, no status write
    secrets = _moved(after, before, "secrets")
    assert set(secrets) <= READS, secrets


@pytest.mark.sandbox_only
async def test_drift_checks_read_secrets_from_the_watch_not_the_api(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    if not kube.is_sandbox:  # the full suite's other tests share kube-apiserver's counters
        pytest.skip(
            "counts requests by the sandbox's audit; bench/operator --kube real measures it"
        )
    endpoint = emulator.endpoint()
    names = [f"listed-{index}" for index in range(RESOURCES)]
    async with operator_running(kube, drift_interval=DRIFT) as running:
        for name in names:
            await gemini.apply(resource(name, endpoint.url, api_proxy.url))
        for name in names:
            await gemini.wait_for(name, is_ready)
        await asyncio.sleep(2 * DRIFT)
        drift_before = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
        before = await kube_requests(kube)
        await asyncio.sleep(WINDOW)
        after = await kube_requests(kube)
        drift_checks = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
    assert drift_checks - drift_before >= RESOURCES * (WINDOW / DRIFT - 1)
    secrets = _moved(after, before, "secrets")
    # Each of the six reads two Secrets per check: 2 x 6 x 4 GETs before the shared listing,
    # one list per interval with it; none from the watch cache.
    assert "get" not in secrets, secrets
    assert "list" not in secrets, secrets


RECEIVER_PLURALS = ("configmaps", "serviceaccounts", "roles", "rolebindings", "deployments")
RECEIVER_PLURALS += ("services", "poddisruptionbudgets", "networkpolicies", "ingresses")


def _served(name: str, base_url: str) -> dict[str, Any]:
    receiver = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
    }
    body = resource(name, "unused", base_url, receiver=receiver)
    del body["spec"]["url"]
    return body


@pytest.mark.sandbox_only
async def test_receiver_objects_are_not_reapplied_or_listed_per_resource_when_unchanged(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    if not kube.is_sandbox:  # the full suite's other tests share kube-apiserver's counters
        pytest.skip(
            "counts requests by the sandbox's audit; bench/operator --kube real measures it"
        )
    names = [f"served-{index}" for index in range(3)]
    async with operator_running(kube, drift_interval=DRIFT) as running:
        for name in names:
            await gemini.apply(_served(name, emulator.base_url))
        for name in names:
            await gemini.wait_for(name, is_ready)
        await asyncio.sleep(2 * DRIFT)
        drift_before = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
        before = await kube_requests(kube)
        await asyncio.sleep(WINDOW)
        after = await kube_requests(kube)
        drift_checks = running.metrics.reconciles.labels(
            "drift", "success", "ReconcileSuccess"
        )._value.get()
    assert drift_checks - drift_before >= len(names) * (WINDOW / DRIFT - 1)
    for plural in RECEIVER_PLURALS:
        # The object itself: on a real control plane, controllers write Deployment status.
        moved = _moved(after, before, plural, subresource="")
        assert set(moved) <= READS, (plural, moved)  # nothing re-applied
        if kube.is_sandbox:
            # From the watch cache: no list at all. Only the sandbox's audit tells who
            # listed: a real control plane's own controllers list Services and
            # ServiceAccounts all the time (bench/operator separates them by an idle run).
            assert "list" not in moved, (plural, moved)


async def test_a_drift_check_reapplies_a_receiver_field_someone_changed(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    name = receiver_names.receiver_name("edited")
    async with operator_running(kube, drift_interval=DRIFT):
        await gemini.apply(_served("edited", emulator.base_url))
        await gemini.wait_for("edited", is_ready)
        deployment = await gemini.client.get("apps/v1", "Deployment", "default", name)
        assert deployment is not None
        replicas = deployment["spec"]["replicas"]
        await gemini.client.merge_patch(
            "apps/v1", "Deployment", "default", name, {"spec": {"replicas": replicas + 3}}
        )
        for _ in range(int(10 * DRIFT / 0.1)):
            deployment = await gemini.client.get("apps/v1", "Deployment", "default", name)
            assert deployment is not None
            if deployment["spec"]["replicas"] == replicas:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the drift check did not re-apply the edited Deployment")


def _reconciled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return is_ready(obj) and status.get("observedGeneration") == obj["metadata"]["generation"]


def _changes(running: Any) -> int:
    """Reconciliations of a change (create, update, resume) the operator has run."""
    return sum(
        int(sample.value)
        for metric in running.metrics.reconciles.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["handler"] == "change"
    )


@pytest.mark.sandbox_only
async def test_a_reconciliation_of_a_change_writes_the_status_once(
    gemini: Cluster, emulator: Any, kube: Any, api_proxy: FaultProxy
) -> None:
    """Fields, conditions and observedGeneration in one apply: a create and a spec edit each
    write the status once, and the object not at all but for our finalizer
    (bench/operator/writes.py counts the same on kube-apiserver)."""
    if not kube.is_sandbox:  # the full suite's other tests share kube-apiserver's counters
        pytest.skip("counts requests by the sandbox's audit; bench/operator/writes.py does")
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=600) as running:
        before = await kube_requests(kube)
        await gemini.apply(resource("once", endpoint.url, api_proxy.url))
        await gemini.wait_for("once", _reconciled)
        patch = {"spec": {"events": ["batch.succeeded", "batch.failed"]}}
        await gemini.client.merge_patch(crd.API_VERSION, crd.KIND, "default", "once", patch)
        await gemini.wait_for("once", lambda o: o["metadata"]["generation"] == 2 and _reconciled(o))
        for _ in range(100):  # the metric is counted as the handler returns
            if _changes(running) >= 2:
                break
            await asyncio.sleep(0.05)
        after = await kube_requests(kube)
        changes = _changes(running)
    status_writes = _moved(after, before, crd.PLURAL, subresource="status")
    assert set(status_writes) <= {"patch"}, status_writes
    assert changes >= 2
    assert status_writes.get("patch", 0) <= changes, (status_writes, changes)
    # The object itself: the test's own spec edit and our finalizer, once; kopf's diff
    # base is in the operator's memory, not one more patch after each change.
    moved = _moved(after, before, crd.PLURAL, subresource="")
    object_writes = {verb: n for verb, n in moved.items() if verb in WRITE_VERBS}
    assert object_writes == {"create": 1, "patch": 2}, object_writes
