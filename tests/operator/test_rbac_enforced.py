"""Least privilege, enforced by kube-apiserver: the operator runs as a ServiceAccount
holding the chart's rules minus one, and the refusal surfaces as a condition and one
Warning Event — not a crash, not a hot loop — and heals when the rule is granted.

(The rest of the suite, on the real control plane, runs every operator as the chart's
own ServiceAccount: that it passes is the proof that the chart's rules are enough.)
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator import receiver_names
from tests.fixtures.control_plane import (
    OPERATOR_KUBECONFIG_ENV,
    chart_rbac,
    kubectl,
    operator_identity,
)
from tests.operator.harness import Cluster, is_ready, operator_running, resource, synced_reason

pytestmark = [pytest.mark.real_cluster_only, pytest.mark.real_component]

DEPLOYMENTS = {"apiGroups": ["apps"], "resources": ["deployments"]}


def _without_rule(rbac: list[dict[str, Any]], suffix: str) -> list[dict[str, Any]]:
    """The chart's RBAC, renamed (so it does not touch the suite's own), minus the rule on
    Deployments."""
    changed = []
    for obj in copy.deepcopy(rbac):
        obj["metadata"]["name"] += suffix
        if obj["kind"] in ("ClusterRole", "Role"):
            obj["rules"] = [
                r for r in obj["rules"] if {k: r.get(k) for k in DEPLOYMENTS} != DEPLOYMENTS
            ]
        if obj["kind"] in ("ClusterRoleBinding", "RoleBinding"):
            obj["roleRef"]["name"] += suffix
            for subject in obj["subjects"]:
                subject["name"] += suffix
        changed.append(obj)
    return changed


def _server_and_ca(kubeconfig: Path) -> tuple[str, Path]:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    return cluster["server"], Path(cluster["certificate-authority"])


async def test_a_missing_rule_is_a_condition_and_one_event_then_heals_when_granted(
    gemini: Cluster, emulator: Any, kube: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suffix = f"-nodeploy-{uuid.uuid4().hex[:5]}"
    rbac = _without_rule(chart_rbac(), suffix)
    assert all(DEPLOYMENTS["resources"][0] not in str(r) for r in rbac if "rules" in r)
    server, ca = _server_and_ca(kube.kubeconfig)
    kubeconfig = operator_identity(kube.kubeconfig, server, ca, tmp_path / "op.kubeconfig", rbac)
    monkeypatch.setenv(OPERATOR_KUBECONFIG_ENV, str(kubeconfig))

    receiver = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
    }
    body = resource("rbac-missing", "unused", emulator.base_url, receiver=receiver)
    del body["spec"]["url"]
    async with operator_running(kube, auth_retry=3.0) as running:
        await gemini.apply(body)
        obj = await gemini.wait_for(
            "rbac-missing", lambda o: synced_reason(o) == "KubernetesForbidden", timeout=30
        )
        synced = next(c for c in obj["status"]["conditions"] if c["type"] == "Synced")
        assert "deployments" in synced["message"] and "forbidden" in synced["message"].lower()
        event = await gemini.wait_event("rbac-missing", {"KubernetesForbidden"})
        assert event["type"] == "Warning"
        await asyncio.sleep(1)  # kopf posts Events from a queue
        before = await _forbidden_events(gemini)

        # No hot loop: over 9 s at most one attempt per auth_retry (3 s) for each of the
        # two paths that reconcile (the change handler's retries and the drift checks)
        # plus the one in flight (the error backoff, 0.5 s, would make ~36); the object
        # moves no more than the attempts; and no new Event (one is posted when the reason
        # first appears).
        attempts = running.metrics.reconciles
        before_attempts = sum(
            attempts.labels(trigger, "retry", "KubernetesForbidden")._value.get()
            for trigger in ("change", "drift")
        )
        versions = await _versions_during(gemini, "rbac-missing", 9.0)
        made = (
            sum(
                attempts.labels(trigger, "retry", "KubernetesForbidden")._value.get()
                for trigger in ("change", "drift")
            )
            - before_attempts
        )
        assert 1 <= made <= 2 * (9 / 3) + 2, made
        assert len(versions) <= 2 * (9 / 3) + 2, versions
        after = await _forbidden_events(gemini)
        assert after == before and 1 <= len(after) <= 2, after
        assert not running.task.done(), "the operator stopped"

        # Granting the rule heals it without a restart.
        role = next(r for r in rbac if r["kind"] == "ClusterRole")
        role["rules"].append(
            {**DEPLOYMENTS, "verbs": ["list", "watch", "create", "patch", "delete"]}
        )
        kubectl(kube.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(role))
        await gemini.wait_for("rbac-missing", is_ready, timeout=30)
        name = receiver_names.receiver_name("rbac-missing")
        assert await gemini.client.get("apps/v1", "Deployment", "default", name) is not None


async def _forbidden_events(gemini: Cluster) -> list[tuple[str, int]]:
    return sorted(
        (e["metadata"]["name"], e.get("count") or 1)
        for e in await gemini.events(about="rbac-missing")
        if e.get("reason") == "KubernetesForbidden"
    )


async def _versions_during(gemini: Cluster, name: str, seconds: float) -> list[str]:
    seen: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        found = await gemini.get(name)
        version = (found or {}).get("metadata", {}).get("resourceVersion", "")
        if version and (not seen or seen[-1] != version):
            seen.append(version)
        await asyncio.sleep(0.05)
    return seen
