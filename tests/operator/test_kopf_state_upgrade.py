"""An upgrade from the operator versions that kept kopf's state on the object — under our own
prefix (`gemini.webhooks.dev/last-handled-configuration`, branded
`gemini.webhooks.dev/kopf-managed`), then under kopf's (`kopf.gemini.webhooks.dev/...`) — to
the one that keeps kopf's diff base in memory: kopf has no state for the resource and takes
it as new, so it is reconciled once — the same webhook, the same signing Secret, no rotation
— and the old annotations go, in one patch, and kopf writes none. Then a request annotation
acts at once again (the old brand made kopf leave all of ours out of the diff)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from gemini_webhook_operator.kopf_state import LEGACY_KOPF_ANNOTATIONS
from gemini_webhooks.contracts import crd
from tests.operator.harness import Cluster, is_ready, operator_running, resource

KOPF_PREFIX_HANDLED = f"{crd.KOPF_STATE_PREFIX}/{crd.KOPF_DIFFBASE_KEY}"
LEGACY_HANDLED = f"{crd.API_GROUP}/{crd.KOPF_DIFFBASE_KEY}"
# What the previous version kept beside it: its brand, and a handler's retry in progress.
LEGACY_MORE = {
    f"{crd.API_GROUP}/kopf-managed": "yes",
    f"{crd.API_GROUP}/reconcile": json.dumps(
        {"started": "2026-12-06T10:00:00.000000+00:00", "purpose": "update", "retries": 1},
        separators=(",", ":"),
    ),
}
NAME = "upgraded"


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})


def _object_patches(kube: Any) -> int:
    """Patches of GeminiWebhook objects (not their status) the sandbox has served so far."""
    audit = Counter((e.verb, e.resource, e.subresource) for e in kube.audit)
    return audit[("patch", crd.PLURAL, "")]


async def test_a_resource_the_previous_version_handled_is_reconciled_once_and_cleaned(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    async with operator_running(kube, drift_interval=3600.0):
        await gemini.apply(resource(NAME, emulator.endpoint().url, emulator.base_url))
        ready = await gemini.wait_for(NAME, is_ready)
    # kopf's state is nowhere on the object; then the resource as the previous versions
    # left it (their last-handled configuration: the essence of the resource, as JSON).
    assert not {a for a in _annotations(ready) if a.startswith(f"{crd.KOPF_STATE_PREFIX}/")}
    essence = json.dumps({"spec": ready["spec"]}, separators=(",", ":"))
    legacy = {LEGACY_HANDLED: essence, KOPF_PREFIX_HANDLED: essence} | LEGACY_MORE
    assert set(legacy) <= LEGACY_KOPF_ANNOTATIONS
    await gemini.patch(NAME, {"metadata": {"annotations": legacy}})
    before = await gemini.get(NAME)
    held = await gemini.signing_secrets(NAME)
    assert before is not None and held is not None
    patches = _object_patches(kube) if kube.is_sandbox else 0

    async with operator_running(kube, drift_interval=3600.0) as running:
        after = await gemini.wait_for(
            NAME, lambda o: not set(legacy) & set(_annotations(o)), timeout=30
        )
        await asyncio.sleep(1.0)  # room for a second reconciliation, which must not come
        changes = running.metrics.reconciles.labels("change", "success", "ReconcileSuccess")
        assert changes._value.get() == 1
        if kube.is_sandbox:  # kube-apiserver's counters are shared with the other tests
            # Ours (the old annotations, all at once); kopf's state is in memory now.
            assert _object_patches(kube) - patches == 1
        assert after["status"]["webhookId"] == before["status"]["webhookId"]
        assert after["status"].get("lastRotationTime") == before["status"].get("lastRotationTime")
        assert [w.id for w in client.webhooks.list().webhooks] == [before["status"]["webhookId"]]
        assert await gemini.signing_secrets(NAME) == held
        rotated = [s for m in running.metrics.rotations.collect() for s in m.samples]
        assert not [s for s in rotated if s.name.endswith("_total") and s.value], rotated

        # The old brand gone, the rotate annotation is a change again: it acts at once.
        await gemini.patch(NAME, {"metadata": {"annotations": {crd.ANNOTATION_ROTATE: "now"}}})
        await gemini.wait_for(
            NAME,
            lambda o: o["status"].get("lastRotationReason") == "RequestedByAnnotation",
            timeout=15,
        )
        drift = running.metrics.reconciles.labels("drift", "success", "ReconcileSuccess")
        assert drift._value.get() == 0
