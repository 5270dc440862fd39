"""The signing secret is never lost (issue 5, point 5): a deleted Secret, or a remote
webhook whose `signing_secrets` no longer know the secret we hold (rotated behind our
back), heals by rotating at once — on the same webhook, never a second one — and the
Secret verifies the next delivery. kopf, our handlers, the emulator through the SDK."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import standardwebhooks

from gemini_webhook_operator.rotation import ANNOTATION_LAST_HEAL
from tests.operator.harness import (
    Cluster,
    FakeClock,
    condition,
    is_ready,
    operator_running,
    resource,
)


def _verify(secret: str, request: Any) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    standardwebhooks.Webhook(secret).verify(request.body, headers)


async def test_a_deleted_signing_secret_is_regained_by_rotating(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=1.0) as running:
        await gemini.apply(resource("lost", endpoint.url, emulator.base_url))
        first = await gemini.wait_for("lost", is_ready)
        webhook_id = first["status"]["webhookId"]
        await gemini.client.delete("v1", "Secret", "default", "lost-signing-secret")
        healed = await gemini.wait_for(
            "lost",
            lambda o: is_ready(o) and o["status"].get("lastRotationReason") == "SecretMissing",
        )
        assert healed["status"]["webhookId"] == webhook_id
        assert [w.id for w in client.webhooks.list().webhooks] == [webhook_id]
        held = await gemini.signing_secrets("lost")
        assert held is not None and held.current is not None and held.webhook_id == webhook_id
        assert running.metrics.heals.labels("SecretMissing")._value.get() == 1
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        _verify(held.current.secret, request)


async def test_a_secret_rotated_behind_our_back_is_regained_by_rotating(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=1.0) as running:
        await gemini.apply(resource("usurped", endpoint.url, emulator.base_url))
        first = await gemini.wait_for("usurped", is_ready)
        webhook_id = first["status"]["webhookId"]
        before = await gemini.signing_secrets("usurped")
        assert before is not None and before.current is not None
        # Someone rotates with immediate revocation: the secret we hold is dead, and the new
        # one was shown only to them.
        client.webhooks.rotate_signing_secret(
            id=webhook_id, revocation_behavior="revoke_previous_secrets_immediately"
        )
        healed = await gemini.wait_for(
            "usurped",
            lambda o: o["status"].get("lastRotationReason") == "SecretUnknownToRemote",
        )
        assert is_ready(healed)
        assert healed["status"]["webhookId"] == webhook_id
        assert [w.id for w in client.webhooks.list().webhooks] == [webhook_id]
        held = await gemini.signing_secrets("usurped")
        assert held is not None and held.current is not None
        assert before.current.secret not in [s.secret for s in held.secrets]
        assert running.metrics.heals.labels("SecretUnknownToRemote")._value.get() == 1
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        _verify(held.current.secret, request)


async def test_a_second_heal_within_the_hour_waits_for_the_rate_limit(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    client = emulator.client()
    endpoint = emulator.endpoint()
    clock = FakeClock()
    async with operator_running(kube, drift_interval=1.0, clock=clock) as running:
        await gemini.apply(resource("flaky", endpoint.url, emulator.base_url))
        first = await gemini.wait_for("flaky", is_ready)
        webhook_id = first["status"]["webhookId"]
        immediately = "revoke_previous_secrets_immediately"
        client.webhooks.rotate_signing_secret(id=webhook_id, revocation_behavior=immediately)
        healed = await gemini.wait_for(
            "flaky", lambda o: o["status"].get("lastRotationReason") == "SecretUnknownToRemote"
        )
        annotations = healed["metadata"]["annotations"]
        assert annotations[ANNOTATION_LAST_HEAL] == healed["status"]["lastRotationTime"]
        clock.advance(timedelta(minutes=30))
        client.webhooks.rotate_signing_secret(id=webhook_id, revocation_behavior=immediately)
        held_back = await gemini.wait_for(
            "flaky", lambda o: condition(o, "Ready").get("reason") == "HealRateLimited"
        )
        assert condition(held_back, "Ready")["status"] == "False"
        assert "next is allowed at" in condition(held_back, "Ready")["message"]
        assert running.metrics.heal_holds.labels("HealRateLimited")._value.get() >= 1
        assert running.metrics.heals.labels("SecretUnknownToRemote")._value.get() == 1
        clock.advance(timedelta(minutes=30))
        await gemini.wait_for("flaky", is_ready)
        assert running.metrics.heals.labels("SecretUnknownToRemote")._value.get() == 2
        held = await gemini.signing_secrets("flaky")
        assert held is not None and held.current is not None
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        _verify(held.current.secret, request)


async def test_a_masked_list_never_heals_a_secret_rotated_behind_our_back(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    # The price of not rotating on an unreadable list: a real loss stays unhealed (and
    # visible as RemoteSecretsUnreadable, and to the health check) rather than every
    # drift check rotating.
    client = emulator.client()
    emulator.control.set_secret_reporting("masked")
    async with operator_running(kube, drift_interval=1.0) as running:
        await gemini.apply(resource("blind", "https://consumer.example/hook", emulator.base_url))
        first = await gemini.wait_for("blind", is_ready)
        client.webhooks.rotate_signing_secret(
            id=first["status"]["webhookId"],
            revocation_behavior="revoke_previous_secrets_immediately",
        )
        await gemini.wait_for(
            "blind", lambda o: condition(o, "Ready").get("reason") == "RemoteSecretsUnreadable"
        )
        before = running.metrics.heal_holds.labels("RemoteSecretsUnreadable")._value.get()
        await gemini.wait_for(
            "blind",
            lambda o: (
                running.metrics.heal_holds.labels("RemoteSecretsUnreadable")._value.get()
                >= before + 2
            ),
        )
        assert running.metrics.heals.labels("SecretUnknownToRemote")._value.get() == 0
