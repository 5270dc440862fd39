"""Kubernetes API faults (409, 410 Gone, dropped watches, 500 on status patches) and
invalid resources rejected by the API server with the field named."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.harness import Cluster, is_ready, kubectl, operator_running, resource

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.sandbox_only
async def test_conflict_on_the_secret_write_heals_to_one_webhook(
    gemini: Cluster, emulator: Any, kube_sandbox: Any
) -> None:
    kube = kube_sandbox  # skips on a real cluster: fault injection is the sandbox's
    kube.faults.fail(409, verb="create", resource="secrets", count=1)
    async with operator_running(kube):
        await gemini.apply(resource("conflicted", "https://hooks.example.com/x", emulator.base_url))
        obj = await gemini.wait_for("conflicted", is_ready, timeout=20)
    webhooks = emulator.client().webhooks.list().webhooks
    assert [w.id for w in webhooks] == [obj["status"]["webhookId"]]
    held = await gemini.signing_secrets("conflicted")
    assert held is not None and held.webhook_id == obj["status"]["webhookId"]


@pytest.mark.sandbox_only
async def test_server_error_on_status_patch_is_retried(
    gemini: Cluster, emulator: Any, kube_sandbox: Any
) -> None:
    kube = kube_sandbox
    kube.faults.fail(500, verb="patch", resource="geminiwebhooks", count=2)
    async with operator_running(kube):
        await gemini.apply(resource("patchy", "https://hooks.example.com/x", emulator.base_url))
        await gemini.wait_for("patchy", is_ready, timeout=20)
    assert len(emulator.client().webhooks.list().webhooks) == 1


@pytest.mark.sandbox_only
async def test_dropped_watches_and_expired_versions_do_not_stop_reconciling(
    gemini: Cluster, emulator: Any, kube_sandbox: Any
) -> None:
    kube = kube_sandbox
    async with operator_running(kube):
        await gemini.apply(resource("before", "https://hooks.example.com/a", emulator.base_url))
        await gemini.wait_for("before", is_ready)
        kube.faults.expire_resource_versions()
        kube.faults.cut_watches()
        await asyncio.sleep(0.2)
        await gemini.apply(resource("after", "https://hooks.example.com/b", emulator.base_url))
        await gemini.wait_for("after", is_ready, timeout=20)
    assert len(emulator.client().webhooks.list().webhooks) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"events": ["batch.completed"]}, "spec.events"),
        ({"rotation": {"interval": "30d"}}, "spec.rotation.interval"),
        ({"deletionPolicy": "Keep"}, "spec.deletionPolicy"),
        ({"url": "ftp://hooks.example.com/"}, "spec.url"),
    ],
)
def test_invalid_resources_are_rejected_naming_the_field(
    cluster: Cluster, kube: Any, change: dict[str, Any], field: str
) -> None:
    body = yaml.safe_load((EXAMPLES / "basic.yaml").read_text())
    body["metadata"]["name"] = "invalid"
    body["spec"].update(change)
    output = kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "invalid" in output.lower() or "unsupported" in output.lower(), output
    assert field in output, output
    assert "created" not in output
