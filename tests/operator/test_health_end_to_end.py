"""End-to-end health against real components: the emulator pings through the real SDK,
the real receiver verifies, and the operator's HealthChecker reads the verdict from the
receiver's ping status."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gemini_webhook_operator import health
from gemini_webhook_operator.health import HealthMemo
from gemini_webhook_operator.health_checker import HealthChecker, HeldFingerprint
from gemini_webhook_operator.metrics import DELIVERY_ROUND_TRIP_SECONDS, OperatorMetrics
from gemini_webhook_operator.receiver_names import internal_service_name
from gemini_webhook_receiver import app as receiver_app
from gemini_webhooks.contracts import receiver_config as rc
from gemini_webhooks.contracts.signing_secret import (
    KEY_SECRETS,
    SigningSecret,
    SigningSecrets,
    encode,
    truncate_secret,
)
from tests.fixtures.cluster_proxy import ClusterProxy
from tests.operator.receiver_rendering import PARSEABLE, parsed


@dataclass
class LocalReceiver:
    running: Any
    secrets_file: Path
    cluster: ClusterProxy

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.running.public_port}/"

    def serve(self) -> None:
        """Its internal Service, as the operator reaches it, through the proxy."""
        address = f"127.0.0.1:{self.running.internal_port}"
        self.cluster.serve_service(internal_service_name("orders"), "team-a", 9090, address)

    async def hold(self, webhook_id: str, *secrets: str) -> None:
        """Write the secrets file and wait until the receiver has loaded it."""
        now = datetime.now(UTC)
        document = encode(SigningSecrets(webhook_id, tuple(SigningSecret(s, now) for s in secrets)))
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.write_text(document[KEY_SECRETS])
        tmp.replace(self.secrets_file)
        (secret_set,) = self.running.receiver.secret_sets
        wanted = {truncate_secret(s) for s in secrets}
        for _ in range(100):
            if {s.fingerprint for s in secret_set.secrets} == wanted:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the receiver did not load the secrets file")


@pytest.fixture
async def receiver(tmp_path: Path, cluster_proxy: ClusterProxy) -> AsyncIterator[LocalReceiver]:
    secrets_file = tmp_path / KEY_SECRETS
    config = rc.ReceiverConfig(
        listen=rc.ListenConfig(host="127.0.0.1", port=0),
        internal=rc.InternalConfig(host="127.0.0.1", port=0),
        static_webhooks=[
            rc.StaticWebhookConfig(
                name="static",
                secrets=rc.SecretsSource(file=rc.FileSecretRef(path=str(secrets_file))),
            )
        ],
        dead_letter=rc.DeadLetterConfig(target=rc.TargetConfig(url="http://127.0.0.1:9/")),
    )
    running = await receiver_app.serve(config, drain_seconds=0.1)
    try:
        local = LocalReceiver(running, secrets_file, cluster_proxy)
        local.serve()
        yield local
    finally:
        await running.stop(0.1)


def resource(webhook_id: str, last_rotation: datetime | None = None) -> dict[str, Any]:
    status = {"webhookId": webhook_id, "remoteState": "enabled"}
    if last_rotation is not None:
        status["lastRotationTime"] = last_rotation.isoformat().replace("+00:00", "Z")
    return {
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1"},
        "spec": {
            **PARSEABLE,
            "healthCheck": {"enabled": True, "interval": "10m"},
            "receiver": {"enabled": True},
        },
        "status": status,
    }


def checker(
    local: LocalReceiver,
    metrics: OperatorMetrics,
    settle: timedelta = health.SECRET_SETTLE,
    held_fingerprint: HeldFingerprint | None = None,
) -> HealthChecker:
    return HealthChecker(
        held_fingerprint=held_fingerprint,
        metrics=metrics,
        poll_interval=0.05,
        timeout=timedelta(seconds=8),
        retry_after=timedelta(0),
        settle=settle,
        proxies=local.cluster.settings(),
    )


async def test_ping_that_the_receiver_verifies_makes_delivery_verified_true(
    emulator: Any, receiver: LocalReceiver
) -> None:
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    await receiver.hold(hook.id, hook.new_signing_secret)
    metrics = OperatorMetrics(CollectorRegistry())
    check = checker(receiver, metrics)
    memo = HealthMemo()
    try:
        verdict = await check.tick(
            *parsed(resource(hook.id)),
            memo,
            ping=lambda: client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(hook.new_signing_secret),
        )
    finally:
        await check.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message
    assert verdict.round_trip is not None and verdict.round_trip < timedelta(seconds=8)
    assert memo.last_verified_sent_at == memo.last_sent_at
    text = generate_latest(metrics.registry).decode()
    assert f"{DELIVERY_ROUND_TRIP_SECONDS}_count 1.0" in text
    assert 'gemini_webhook_operator_delivery_verified{name="orders",namespace="team-a"} 1.0' in text
    assert "whsec_" not in text and hook.new_signing_secret not in verdict.message


async def test_rotation_completes_only_when_the_receiver_verifies_with_the_new_secret(
    emulator: Any, receiver: LocalReceiver
) -> None:
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    old = hook.new_signing_secret
    await receiver.hold(hook.id, old)
    # No settle window: the stale verdict is reported at once, as it is past the window.
    check = checker(receiver, OperatorMetrics(CollectorRegistry()), settle=timedelta(0))
    memo = HealthMemo()

    async def tick(current: str, rotated: datetime | None) -> health.Verdict | None:
        return await check.tick(
            *parsed(resource(hook.id, rotated)),
            memo,
            ping=lambda: client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(current),
        )

    try:
        assert (await tick(old, None)).status is True  # type: ignore[union-attr]
        rotation = await client.aio.webhooks.rotate_signing_secret(
            id=hook.id, revocation_behavior="revoke_previous_secrets_after_h24"
        )
        new = rotation.secret
        # The receiver still holds only the old secret: Gemini signs with both during the
        # grace period, so the ping verifies — but not with the current secret.
        rotated_at = datetime.now(UTC)
        stale = await tick(new, rotated_at)
        assert stale is not None
        assert (stale.status, stale.reason) == (False, health.REASON_PREVIOUS_SECRET)
        assert not health.rotation_complete(memo, rotated_at)

        await receiver.hold(hook.id, new, old)
        fresh = await tick(new, rotated_at)
        assert fresh is not None
        assert (fresh.status, fresh.reason) == (True, health.REASON_VERIFIED), fresh.message
        assert health.rotation_complete(memo, rotated_at)
    finally:
        await check.close()


async def test_a_receiver_that_loads_the_rotated_secret_late_is_verified_not_reported(
    emulator: Any, receiver: LocalReceiver
) -> None:
    """Right after a rotation the receiver takes a moment to load the new secret: the ping
    is sent again until it verifies with it, and no previous-secret verdict is counted (it
    once made DeliveryVerified False for a health tick after a rotation on the real node)."""
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    old = hook.new_signing_secret
    await receiver.hold(hook.id, old)
    metrics = OperatorMetrics(CollectorRegistry())
    check = checker(receiver, metrics)
    pings = 0

    async def ping() -> Any:
        nonlocal pings
        pings += 1
        return await client.aio.webhooks.ping(id=hook.id)

    rotation = await client.aio.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_after_h24"
    )
    rotated_at = datetime.now(UTC)

    async def load_late() -> None:
        await asyncio.sleep(1.5)
        await receiver.hold(hook.id, rotation.secret, old)

    loading = asyncio.create_task(load_late())
    try:
        verdict = await check.tick(
            *parsed(resource(hook.id, rotated_at)),
            HealthMemo(),
            ping=ping,
            current_fingerprint=truncate_secret(rotation.secret),
        )
    finally:
        await loading
        await check.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message
    assert pings >= 2
    text = generate_latest(metrics.registry).decode()
    assert 'result="not_verified"} 1.0' not in text
    assert 'result="verified"} 1.0' in text


async def test_a_ping_rotated_while_it_travelled_verifies_with_the_secret_held_now(
    emulator: Any, receiver: LocalReceiver
) -> None:
    """The tick read the secret it holds, sent the ping, and the webhook was rotated before
    the ping was delivered (a delivery retried after the rotation, e.g. while the receiver's
    Pods came up): the receiver verifies it with the new secret. That is the secret the
    operator holds now, so the ping verified; it once said "only a previous signing secret"
    (DeliveryVerified False, seen on the real node). A receiver verifying with a secret the
    operator does not hold at all is still not verified."""
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    old = hook.new_signing_secret
    rotation = await client.aio.webhooks.rotate_signing_secret(
        id=hook.id, revocation_behavior="revoke_previous_secrets_after_h24"
    )
    await receiver.hold(hook.id, rotation.secret, old)
    held = truncate_secret(rotation.secret)

    async def held_now(_: Any) -> str | None:
        return held

    metrics = OperatorMetrics(CollectorRegistry())
    check = checker(receiver, metrics, held_fingerprint=held_now)

    async def tick() -> health.Verdict | None:
        return await check.tick(
            *parsed(resource(hook.id)),
            HealthMemo(),
            ping=lambda: client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(old),  # what the tick read before the ping
        )

    try:
        verdict = await tick()
        assert verdict is not None
        assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message
        held = truncate_secret(
            "whsec_" + base64.b64encode(bytes(32)).decode()
        )  # neither the old one nor the one it verified with
        stale = await tick()
        assert stale is not None
        assert (stale.status, stale.reason) == (False, health.REASON_PREVIOUS_SECRET)
    finally:
        await check.close()


async def test_ping_the_receiver_cannot_verify_makes_delivery_verified_false(
    emulator: Any, receiver: LocalReceiver
) -> None:
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    await receiver.hold(hook.id, "whsec_" + "A" * 43 + "=")  # not the webhook's secret
    check = checker(receiver, OperatorMetrics(CollectorRegistry()))
    check.timeout = timedelta(seconds=2)
    try:
        verdict = await check.tick(
            *parsed(resource(hook.id)),
            HealthMemo(),
            ping=lambda: client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(hook.new_signing_secret),
        )
    finally:
        await check.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (False, health.REASON_NOT_RECEIVED)


async def test_unreachable_receiver_makes_delivery_verified_unknown(
    emulator: Any, cluster_proxy: ClusterProxy
) -> None:
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri="http://127.0.0.1:9/", subscribed_events=["batch.succeeded"]
    )
    cluster_proxy.serve_service(internal_service_name("orders"), "team-a", 9090, "127.0.0.1:9")
    metrics = OperatorMetrics(CollectorRegistry())
    check = HealthChecker(
        metrics=metrics,
        poll_interval=0.05,
        timeout=timedelta(seconds=1),
        proxies=cluster_proxy.settings(),
    )
    try:
        verdict = await check.tick(
            *parsed(resource(hook.id)),
            HealthMemo(),
            ping=lambda: client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(hook.new_signing_secret),
        )
    finally:
        await check.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (None, health.REASON_RECEIVER_UNREACHABLE)
    assert 'result="receiver_unreachable"' in generate_latest(metrics.registry).decode()


async def test_refused_ping_makes_delivery_verified_unknown_without_leaking_the_key(
    emulator: Any, receiver: LocalReceiver
) -> None:
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=receiver.public_url, subscribed_events=["batch.succeeded"]
    )
    bad_client = emulator.client(api_key="wrong-key-do-not-print")
    check = checker(receiver, OperatorMetrics(CollectorRegistry()))
    try:
        verdict = await check.tick(
            *parsed(resource(hook.id)),
            HealthMemo(),
            ping=lambda: bad_client.aio.webhooks.ping(id=hook.id),
            current_fingerprint=truncate_secret(hook.new_signing_secret),
        )
    finally:
        await check.close()
    assert verdict is not None
    assert (verdict.status, verdict.reason) == (None, health.REASON_SEND_FAILED)
    assert "wrong-key" not in verdict.message
    assert "HTTP 40" in verdict.message
    json.dumps(verdict.message)
