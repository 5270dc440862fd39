"""Reconciliation behaviours against the emulator (through the SDK) and the kube fixture:
adoption, drift correction, remote deletion healed, the rotate annotation, remote
`disabled_due_to_failed_deliveries`, two resources claiming one webhook."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
import standardwebhooks

from gemini_webhook_operator.model import marker_uid
from gemini_webhooks.contracts.signing_secret import matches_truncated
from tests.operator.harness import (
    Cluster,
    condition,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)


def _remote_knows(remote: Any, secret: str) -> bool:
    return any(matches_truncated(secret, s.truncated_secret) for s in remote.signing_secrets or ())


async def _events(cluster: Cluster, reason: str, about: str) -> list[dict[str, Any]]:
    return [e for e in await cluster.events(about=about) if e.get("reason") == reason]


async def _wait_event(
    cluster: Cluster, reason: str, about: str, timeout: float = 10.0
) -> dict[str, Any]:
    for _ in range(int(timeout * 10)):
        found = await _events(cluster, reason, about)
        if found:
            return found[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {reason} event")


async def test_adopts_an_existing_webhook_and_orphans_it_on_delete(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    existing = client.webhooks.create(
        name="legacy", uri=endpoint.url, subscribed_events=["interaction.completed"]
    )
    body = resource(
        "legacy",
        endpoint.url,
        emulator.base_url,
        events=("interaction.completed",),
        webhookId=existing.id,
        deletionPolicy="Orphan",
    )
    async with operator_running(kube):
        created = await gemini.apply(body)
        obj = await gemini.wait_for("legacy", is_ready)
        assert obj["status"]["webhookId"] == existing.id
        assert obj["status"]["lastRotationReason"] == "SecretMissing"
        remote = client.webhooks.get(id=existing.id)
        assert marker_uid(remote.name) == created["metadata"]["uid"]
        held = await gemini.signing_secrets("legacy")
        assert held is not None and held.current is not None
        assert _remote_knows(remote, held.current.secret)
        await _wait_event(gemini, "Adopted", "legacy")

        await gemini.delete("legacy")
        await gemini.wait_gone("legacy")
        assert client.webhooks.get(id=existing.id).id == existing.id
        secret = await gemini.client.get("v1", "Secret", "default", "legacy-signing-secret")
        assert secret is not None and not secret["metadata"].get("ownerReferences")
        assert len(client.webhooks.list().webhooks) == 1


async def test_adopting_a_missing_webhook_reports_it(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = resource("ghost", "https://hooks.example.com/x", emulator.base_url, webhookId="nope")
    async with operator_running(kube):
        await gemini.apply(body)
        obj = await gemini.wait_for("ghost", lambda o: synced_reason(o) == "AdoptionTargetNotFound")
        assert condition(obj, "Ready")["status"] == "False"
    assert emulator.client().webhooks.list().webhooks in (None, [])


async def test_drift_is_corrected(gemini: Cluster, emulator: Any, kube: Any) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=1.0):
        await gemini.apply(resource("drifty", endpoint.url, emulator.base_url))
        obj = await gemini.wait_for("drifty", is_ready)
        webhook_id = obj["status"]["webhookId"]
        client.webhooks.update(
            id=webhook_id,
            uri="https://elsewhere.example.com/",
            subscribed_events=["video.generated"],
            update_mask="uri,subscribed_events",
        )
        for _ in range(100):
            remote = client.webhooks.get(id=webhook_id)
            if remote.uri == endpoint.url and remote.subscribed_events == ["batch.succeeded"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("drift was not corrected")
        await _wait_event(gemini, "Updated", "drifty")


async def test_remote_deletion_is_healed(gemini: Cluster, emulator: Any, kube: Any) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=1.0) as running:
        await gemini.apply(resource("phoenix", endpoint.url, emulator.base_url))
        first = await gemini.wait_for("phoenix", is_ready)
        old_id = first["status"]["webhookId"]
        client.webhooks.delete(id=old_id)
        healed = await gemini.wait_for(
            "phoenix", lambda o: is_ready(o) and o["status"]["webhookId"] != old_id
        )
        assert [w.id for w in client.webhooks.list().webhooks] == [healed["status"]["webhookId"]]
        held = await gemini.signing_secrets("phoenix")
        assert held is not None and held.webhook_id == healed["status"]["webhookId"]
        await _wait_event(gemini, "Recreated", "phoenix")
        metrics = running.metrics
        assert metrics.heals.labels("RemoteDeleted")._value.get() == 1
        assert metrics.api_requests.labels("create", "200")._value.get() == 2
        assert metrics.reconciles.labels("drift", "success", "ReconcileSuccess")._value.get() >= 1
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        import standardwebhooks

        assert held.current is not None
        standardwebhooks.Webhook(held.current.secret).verify(
            request.body, {k.lower(): v for k, v in request.headers.items()}
        )


async def test_rotate_annotation_rotates_once_and_is_removed(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("spin", endpoint.url, emulator.base_url))
        await gemini.wait_for("spin", is_ready)
        before = await gemini.signing_secrets("spin")
        await gemini.patch(
            "spin", {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "now"}}}
        )
        obj = await gemini.wait_for(
            "spin",
            lambda o: (
                o["status"].get("lastRotationReason") == "RequestedByAnnotation"
                and "gemini.webhooks.dev/rotate" not in (o["metadata"].get("annotations") or {})
            ),
        )
        after = await gemini.signing_secrets("spin")
        assert before is not None and after is not None and before.current and after.current
        assert after.current.secret != before.current.secret
        assert [s.secret for s in after.secrets] == [after.current.secret, before.current.secret]
        assert after.secrets[1].expire_time is not None
        event = await _wait_event(gemini, "Rotated", "spin")
        assert "RequestedByAnnotation" in event["message"]
        assert "last rotation: RequestedByAnnotation at " in condition(obj, "Ready")["message"]
        assert is_ready(obj)


async def test_rotate_annotation_acts_at_once_not_at_the_next_drift_check(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    """kopf keeps its state under a prefix of its own and leaves only that out of the diff:
    setting the rotate annotation, under ours, is a change like a spec edit."""
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=3600.0) as running:
        await gemini.apply(resource("prompt", endpoint.url, emulator.base_url))
        await gemini.wait_for("prompt", is_ready)
        before = await gemini.signing_secrets("prompt")
        await gemini.patch(
            "prompt", {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "now"}}}
        )
        await gemini.wait_for(
            "prompt",
            lambda o: o["status"].get("lastRotationReason") == "RequestedByAnnotation",
            timeout=10,
        )
        assert (
            running.metrics.reconciles.labels("drift", "success", "ReconcileSuccess")._value.get()
            == 0
        )
        after = await gemini.signing_secrets("prompt")
        assert before is not None and after is not None and before.current and after.current
        assert after.current.secret != before.current.secret
        # Removing the annotation (done by the operator) is no second request.
        await gemini.wait_for(
            "prompt",
            lambda o: "gemini.webhooks.dev/rotate" not in (o["metadata"].get("annotations") or {}),
        )
        await asyncio.sleep(1.0)
        assert running.metrics.rotations.labels("RequestedByAnnotation")._value.get() == 1
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        standardwebhooks.Webhook(after.current.secret).verify(
            request.body, {k.lower(): v for k, v in request.headers.items()}
        )


@pytest.mark.emulator_config(
    disable_after=timedelta(seconds=1),
    time_scale=1000.0,
)
async def test_webhook_disabled_after_failed_deliveries_is_surfaced(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint(statuses=[500])
    async with operator_running(kube, drift_interval=0.5) as running:
        await gemini.apply(resource("flaky", endpoint.url, emulator.base_url))
        obj = await gemini.wait_for("flaky", is_ready)
        webhook_id = obj["status"]["webhookId"]
        client = emulator.client()
        for _ in range(200):
            emulator.fire("batch.succeeded")
            await asyncio.sleep(0.1)
            if client.webhooks.get(id=webhook_id).state == "disabled_due_to_failed_deliveries":
                break
        else:
            pytest.fail("the emulator never disabled the webhook")
        # Status fields and conditions are two writes: a reader can see the first alone
        # (on kube-apiserver under load, for a moment).
        disabled = await gemini.wait_for(
            "flaky",
            lambda o: (
                o["status"].get("remoteState") == "disabled_due_to_failed_deliveries"
                and condition(o, "Ready").get("reason") == "DisabledDueToFailedDeliveries"
            ),
        )
        # Only a person can re-enable it: kstatus's Stalled (Failed), not Reconciling.
        assert condition(disabled, "Stalled").get("reason") == "DisabledDueToFailedDeliveries"
        assert condition(disabled, "Reconciling") == {}
        await _wait_event(gemini, "DisabledDueToFailedDeliveries", "flaky")
        state = running.metrics.webhooks.record("default", "flaky")
        assert state is not None and state.remote_state == "disabled_due_to_failed_deliveries"
        # Not re-enabled behind the user's back.
        assert client.webhooks.get(id=webhook_id).state == "disabled_due_to_failed_deliveries"


async def test_two_resources_claiming_one_webhook_are_reported_not_fought_over(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    endpoint = emulator.endpoint()
    async with operator_running(kube):
        await gemini.apply(resource("owner", endpoint.url, emulator.base_url))
        owner = await gemini.wait_for("owner", is_ready)
        webhook_id = owner["status"]["webhookId"]
        await gemini.apply(
            resource(
                "intruder",
                "https://other.example.com/",
                emulator.base_url,
                webhookId=webhook_id,
                deletionPolicy="Orphan",
            )
        )
        obj = await gemini.wait_for(
            "intruder", lambda o: synced_reason(o) == "WebhookClaimedByAnotherResource"
        )
        assert "default/owner" in condition(obj, "Synced")["message"]
        await asyncio.sleep(1.0)
        remote = emulator.client().webhooks.get(id=webhook_id)
        assert remote.uri == endpoint.url  # the intruder changed nothing
        assert is_ready(await gemini.get("owner") or {})
