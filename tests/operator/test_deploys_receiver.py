"""With `spec.receiver.enabled`, the operator applies the receiver's objects (owned by the
resource), points the webhook at the receiver's Service, and prunes them when disabled."""

from __future__ import annotations

import asyncio
from typing import Any

from gemini_webhook_operator import receiver_names
from tests.operator import receiver_rendering
from tests.operator.harness import (
    Cluster,
    condition,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)

KINDS = (
    ("v1", "ConfigMap"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
)


async def test_receiver_objects_are_applied_owned_and_pruned(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    receiver = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
    }
    body = resource("served", "unused", emulator.base_url, receiver=receiver)
    del body["spec"]["url"]
    name = receiver_names.receiver_name("served")
    async with operator_running(kube):
        created = await gemini.apply(body)
        obj = await gemini.wait_for("served", is_ready)
        uid = created["metadata"]["uid"]
        for kind in KINDS:
            found = await gemini.client.get(*kind, "default", name)
            assert found is not None, kind
            assert found["metadata"]["ownerReferences"][0]["uid"] == uid
        expected_url = receiver_rendering.public_url(obj)
        assert obj["status"]["url"] == expected_url
        remote = emulator.client().webhooks.get(id=obj["status"]["webhookId"])
        assert remote.uri == expected_url

        await gemini.patch(
            "served", {"spec": {"receiver": {"enabled": False}, "url": "https://x.example.com/"}}
        )
        left: list[tuple[str, str]] = []
        for _ in range(100):  # the operator deletes them one by one: wait for all of them
            left = [k for k in KINDS if await gemini.client.get(*k, "default", name) is not None]
            if not left:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the receiver was not pruned: {left} remain")


async def test_an_invalid_receiver_is_reported_before_any_remote_change(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = resource("unroutable", "unused", emulator.base_url, receiver={"enabled": True})
    del body["spec"]["url"]
    async with operator_running(kube):
        await gemini.apply(body)
        obj = await gemini.wait_for("unroutable", lambda o: synced_reason(o) == "InvalidReceiver")
        assert "spec.receiver" in condition(obj, "Synced")["message"]
    assert emulator.client().webhooks.list().webhooks in (None, [])
