"""Health that GitOps tools understand (issue 26 §2), read off live resources by the tools'
own code: kstatus (`sigs.k8s.io/cli-utils`, also what Flux computes by default), Flux's
`healthCheckExprs` evaluator with the block docs/deploy.md documents, and Argo CD's Lua
health runtime with the shipped `health.lua` — for a resource that is healthy, one that
converges, one whose spec is invalid, and one whose edit the operator has not seen yet."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator.conditions import MANAGER_RECONCILER
from tests.gitops import tools
from tests.operator.harness import (
    Cluster,
    condition,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)

# The Go programs are built in the background during scripts/test's sandbox phase.
pytestmark = [pytest.mark.real_component, pytest.mark.late_build]

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = (
    ROOT / "gitops/argocd/resource_customizations/gemini.webhooks.dev/GeminiWebhook/health.lua"
)
DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def flux_expressions(document: str) -> dict[str, str]:
    """The GeminiWebhook entry of the Kustomization's `healthCheckExprs` in the block
    docs/deploy.md marks `<!-- gitops-test: flux -->`."""
    found = re.search(r"<!-- gitops-test: flux -->\n```yaml\n(.*?)```", document, re.DOTALL)
    assert found, "docs/deploy.md has no Flux block marked for the test"
    kustomization = yaml.safe_load(found.group(1))
    (entry,) = [
        e for e in kustomization["spec"]["healthCheckExprs"] if e["kind"] == "GeminiWebhook"
    ]
    return {k: entry[k] for k in ("current", "inProgress", "failed")}


@pytest.fixture(scope="module")
def flux_exprs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("flux") / "exprs.json"
    path.write_text(json.dumps(flux_expressions(DEPLOY_DOC.read_text())))
    yield path


@pytest.fixture(scope="module", autouse=True)
def built_tools() -> None:
    """Build (or find cached) the Go programs before any test's timing starts."""
    for tool in tools.TOOLS:
        tools.binary(tool)


def verdicts(obj: dict[str, Any], flux_exprs: Path) -> tuple[str, str, str]:
    """(kstatus, Flux, Argo CD) on the resource as stored."""
    return (
        tools.kstatus(obj)["status"],
        tools.flux(flux_exprs, obj)["status"],
        tools.argocd(HEALTH_LUA, obj)["status"],
    )


def _reconciling(obj: dict[str, Any]) -> bool:
    return condition(obj, "Reconciling").get("status") == "True"


def _stalled(obj: dict[str, Any]) -> bool:
    return condition(obj, "Stalled").get("status") == "True"


def _observed(obj: dict[str, Any]) -> bool:
    return obj["status"].get("observedGeneration") == obj["metadata"]["generation"]


async def test_healthy_is_current_and_an_invalid_spec_is_failed_until_fixed(
    gemini: Cluster, emulator: Any, kube: Any, flux_exprs: Path
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("steady", endpoint.url, emulator.base_url))
        ready = await gemini.wait_for("steady", lambda o: is_ready(o) and _observed(o))
        assert not _reconciling(ready) and not _stalled(ready)
        assert verdicts(ready, flux_exprs) == ("Current", "Current", "Healthy")

        # An edit the operator rejects: Stalled, for the generation it describes.
        await gemini.patch("steady", {"spec": {"rotation": {"interval": "0h"}}})
        broken = await gemini.wait_for(
            "steady", lambda o: synced_reason(o) == "InvalidSpec" and _observed(o)
        )
        assert condition(broken, "Stalled")["reason"] == "InvalidSpec"
        assert not _reconciling(broken)
        assert verdicts(broken, flux_exprs) == ("Failed", "Failed", "Degraded")
        assert tools.argocd(HEALTH_LUA, broken)["message"].startswith("InvalidSpec: ")

        await gemini.patch("steady", {"spec": {"rotation": {"interval": "720h"}}})
        fixed = await gemini.wait_for("steady", lambda o: is_ready(o) and _observed(o))
        assert not _stalled(fixed) and not _reconciling(fixed)
        assert verdicts(fixed, flux_exprs) == ("Current", "Current", "Healthy")


async def test_a_problem_the_operator_retries_is_in_progress(
    gemini: Cluster, emulator: Any, kube: Any, flux_exprs: Path
) -> None:
    endpoint = emulator.endpoint()
    keyless = resource("keyless", endpoint.url, emulator.base_url)
    keyless["spec"]["apiKeySecretRef"] = {"name": "not-created-yet"}
    async with operator_running(kube):
        await gemini.apply(keyless)
        waiting = await gemini.wait_for(
            "keyless", lambda o: synced_reason(o) == "APIKeySecretMissing" and _observed(o)
        )
        assert condition(waiting, "Reconciling")["reason"] == "APIKeySecretMissing"
        assert not _stalled(waiting)
        assert verdicts(waiting, flux_exprs) == ("InProgress", "InProgress", "Progressing")


async def test_an_edit_not_yet_reconciled_is_in_progress(
    gemini: Cluster, emulator: Any, kube: Any, flux_exprs: Path
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("edited", endpoint.url, emulator.base_url))
        await gemini.wait_for("edited", lambda o: is_ready(o) and _observed(o))
    # The operator is stopped: the edit waits, Ready still describes the previous generation.
    await gemini.patch("edited", {"spec": {"displayName": "edited while stopped"}})
    pending = await gemini.wait_for("edited", lambda o: not _observed(o))
    assert is_ready(pending)
    assert verdicts(pending, flux_exprs) == ("InProgress", "InProgress", "Progressing")
    async with operator_running(kube):
        done = await gemini.wait_for("edited", _observed)
    assert verdicts(done, flux_exprs) == ("Current", "Current", "Healthy")


@pytest.mark.real_cluster_only  # the sandbox keeps field ownership but shows no managedFields
async def test_observed_generation_is_applied_with_the_reconcilers_conditions(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    """One server-side apply carries both: no reader sees the new generation marked observed
    beside conditions of the previous one (the old separate merge patch allowed that)."""
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("one-write", endpoint.url, emulator.base_url))
        await gemini.wait_for("one-write", lambda o: is_ready(o) and _observed(o))
        await gemini.patch("one-write", {"spec": {"displayName": "second generation"}})
        obj = await gemini.wait_for(
            "one-write", lambda o: _observed(o) and o["metadata"]["generation"] == 2
        )
    applied = [
        entry
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("manager") == MANAGER_RECONCILER
        and entry.get("operation") == "Apply"
        and entry.get("subresource") == "status"
    ]
    assert len(applied) == 1, obj["metadata"].get("managedFields")
    owned = applied[0]["fieldsV1"]["f:status"]
    assert "f:observedGeneration" in owned and "f:conditions" in owned
    updated = [
        entry
        for entry in obj["metadata"].get("managedFields") or []
        if entry.get("operation") == "Update"
        and "f:observedGeneration" in (entry.get("fieldsV1") or {}).get("f:status", {})
    ]
    assert updated == []
    assert all(c["observedGeneration"] == 2 for c in obj["status"]["conditions"])
