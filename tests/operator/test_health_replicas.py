"""DeliveryVerified with three receiver replicas: whichever replica takes the ping, the
operator's verdict is right.

Three real receivers run in this process (as three Pods would), the emulator delivers the
pings through the real SDK to a round-robin loopback proxy in front of their public ports
(a Service spreading connections over its Pods; the emulator opens one connection per
delivery, so successive pings reach successive replicas). With Redis every replica records
its pings there, and the operator's HealthChecker asks the internal Service, mapped to
replica 0 — the worst case: two of three pings land on a pod it does not ask. Without
Redis it asks every ready receiver Pod (given here by a test double of the Pod listing,
each Pod mapped to its replica as the local node maps Pod addresses); where none is
listed, "not received" from the one pod the Service picked becomes Unknown
(PingsPerReplica).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gemini_webhook_operator import health
from gemini_webhook_operator.health import HealthMemo
from gemini_webhook_operator.health_checker import HealthChecker, ReceiverPods
from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.receiver_names import internal_service_name, selector_labels
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

REPLICAS = 3


@dataclass
class RoundRobinProxy:
    """A test double for a Service's load balancing: each new connection goes to the next
    upstream port in turn, bytes are piped both ways."""

    upstreams: list[int]
    port: int = 0
    _next: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = self.upstreams[self._next % len(self.upstreams)]
        self._next += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
        pipes = [
            asyncio.create_task(_pipe(reader, up_writer)),
            asyncio.create_task(_pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._tasks.difference_update(pipes)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()


def pod_ip(index: int) -> str:
    return f"10.244.9.{index + 1}"


@dataclass
class Replicas:
    running: list[Any]
    proxy: RoundRobinProxy
    secrets_file: Path
    cluster: ClusterProxy

    @property
    def public_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}/"

    def serve(self) -> None:
        """The internal Service reaches replica 0; each pod's address (`pod_ip`) its own
        internal port, as the local node's proxy serves them."""
        first = f"127.0.0.1:{self.running[0].internal_port}"
        self.cluster.serve_service(internal_service_name("orders"), "team-a", 9090, first)
        for index, running in enumerate(self.running):
            self.cluster.serve_pod(pod_ip(index), 9090, f"127.0.0.1:{running.internal_port}")
        self.cluster.serve_pod(pod_ip(99), 9090, "127.0.0.1:9")  # "orders-gone": refuses

    def pods(self, *, unreachable_pod: bool = False) -> list[dict[str, Any]]:
        """The receiver's Pods as the API lists them: Ready, on the local node's address."""
        names = {f"orders-{index}": index for index in range(len(self.running))}
        if unreachable_pod:
            names["orders-gone"] = 99
        return [
            {
                "metadata": {"name": name, "labels": selector_labels("orders")},
                "status": {
                    "podIP": pod_ip(index),
                    "conditions": [{"type": "Ready", "status": "True"}],
                },
            }
            for name, index in names.items()
        ]

    def took(self) -> list[str | None]:
        """The webhook-id of the ping each replica took itself (its own memory)."""
        out = []
        for running in self.running:
            record = running.receiver.pings.get("static")
            out.append(None if record is None else record.webhook_id)
        return out

    async def hold(self, webhook_id: str, secret: str) -> None:
        document = encode(SigningSecrets(webhook_id, (SigningSecret(secret, datetime.now(UTC)),)))
        tmp = self.secrets_file.with_suffix(".tmp")
        tmp.write_text(document[KEY_SECRETS])
        tmp.replace(self.secrets_file)
        wanted = {truncate_secret(secret)}
        for _ in range(200):
            if all(
                {s.fingerprint for s in r.receiver.secret_sets[0].secrets} == wanted
                for r in self.running
            ):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("a replica did not load the secrets file")


def _config(secrets_file: Path, redis_url: str | None, name: str) -> rc.ReceiverConfig:
    return rc.ReceiverConfig(
        listen=rc.ListenConfig(host="127.0.0.1", port=0),
        internal=rc.InternalConfig(host="127.0.0.1", port=0),
        static_webhooks=[
            rc.StaticWebhookConfig(
                name="static",
                secrets=rc.SecretsSource(file=rc.FileSecretRef(path=str(secrets_file))),
            )
        ],
        dead_letter=rc.DeadLetterConfig(target=rc.TargetConfig(url="http://127.0.0.1:9/")),
        redis=None if redis_url is None else rc.RedisConfig(url=redis_url, consumer_name=name),
        dedup=rc.DedupConfig(backend="memory" if redis_url is None else "redis"),
    )


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, redis_url: str | None, cluster: ClusterProxy
) -> AsyncIterator[Replicas]:
    secrets_file = tmp_path / KEY_SECRETS
    running = []
    proxy: RoundRobinProxy | None = None
    try:
        for index in range(REPLICAS):
            config = _config(secrets_file, redis_url, f"pod-{index}")
            running.append(await receiver_app.serve(config, drain_seconds=0.1))
        proxy = RoundRobinProxy([r.public_port for r in running])
        await proxy.start()
        group = Replicas(running, proxy, secrets_file, cluster)
        group.serve()
        yield group
    finally:
        if proxy is not None:
            await proxy.stop()
        for started in running:
            await started.stop(0.1)


def resource(webhook_id: str, receiver: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "u1"},
        "spec": {
            **PARSEABLE,
            "healthCheck": {"enabled": True, "interval": "10m"},
            "receiver": receiver,
        },
        "status": {"webhookId": webhook_id, "remoteState": "enabled"},
    }


async def _ping_three_times(
    group: Replicas,
    emulator: Any,
    receiver_spec: dict[str, Any],
    timeout: float,
    *,
    pods: list[dict[str, Any]] | None = None,
    held_secret: str | None = None,
    listing: ReceiverPods | None = None,
) -> list[tuple[health.Verdict, list[str | None]]]:
    """Three health checks (a fresh memo each: every one pings); each verdict with which
    replica had taken which ping by then. `pods`: what listing the receiver's Pods finds
    (None: the listing is not offered), or `listing` lists them; `held_secret`: what the
    receivers verify with (default: the webhook's secret)."""
    client = emulator.client()
    hook = await client.aio.webhooks.create(
        uri=group.public_url, subscribed_events=["batch.succeeded"]
    )
    await group.hold(hook.id, held_secret or hook.new_signing_secret)

    async def list_pods(_: Any) -> list[dict[str, Any]]:
        return list(pods or [])

    check = HealthChecker(
        metrics=OperatorMetrics(CollectorRegistry()),
        poll_interval=0.05,
        timeout=timedelta(seconds=timeout),
        proxies=group.cluster.settings(),
        receiver_pods=listing or (None if pods is None else list_pods),
    )
    results = []
    try:
        for _ in range(REPLICAS):
            verdict = await check.tick(
                *parsed(resource(hook.id, receiver_spec)),
                HealthMemo(),
                ping=lambda: client.aio.webhooks.ping(id=hook.id),
                current_fingerprint=truncate_secret(hook.new_signing_secret),
            )
            assert verdict is not None
            results.append((verdict, group.took()))
    finally:
        await check.close()
    return results


@pytest.mark.real_component
async def test_with_redis_the_verdict_is_right_whichever_replica_took_the_ping(
    emulator: Any, redis_server: str, tmp_path: Path, cluster_proxy: ClusterProxy
) -> None:
    spec = {"enabled": True, "replicas": REPLICAS, "redis": {"url": redis_server}}
    async with replicas(tmp_path, redis_server, cluster_proxy) as group:
        results = await _ping_three_times(group, emulator, spec, timeout=8)
    for verdict, _ in results:
        assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message
    *_, (_, took) = results
    # Each replica took exactly one of the three pings (the operator asked only replica 0).
    assert all(took) and len(set(took)) == REPLICAS


OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
MEMORY_SPEC = {
    "enabled": True,
    "replicas": REPLICAS,
    "deadLetter": {"target": {"url": "http://127.0.0.1:9/"}},
}


async def test_without_redis_every_ready_pod_is_asked_and_the_verdict_is_right(
    emulator: Any, tmp_path: Path, cluster_proxy: ClusterProxy
) -> None:
    async with replicas(tmp_path, None, cluster_proxy) as group:
        results = await _ping_three_times(
            group, emulator, MEMORY_SPEC, timeout=8, pods=group.pods()
        )
    for verdict, _ in results:
        assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message
    *_, (_, took) = results
    assert all(took) and len(set(took)) == REPLICAS  # each replica took one of the pings


async def test_without_redis_a_pod_ready_only_after_the_listing_is_asked_before_not_received(
    emulator: Any, tmp_path: Path, cluster_proxy: ClusterProxy
) -> None:
    """The first listing finds replicas 1 and 2 ready, not yet replica 0, which the Service
    then gives the first ping (a Deployment coming up): asked again before the ping is
    called not received, the Pods listed now include it, and it verified the ping. Asking
    only the Pods listed before the ping, the verdict was Unknown (PingsPerReplica)."""
    listings: list[int] = []

    async with replicas(tmp_path, None, cluster_proxy) as group:

        async def listing(_: Any) -> list[dict[str, Any]]:
            listings.append(1)
            return group.pods()[1:] if len(listings) == 1 else group.pods()

        results = await _ping_three_times(
            group, emulator, MEMORY_SPEC, timeout=1.5, listing=listing
        )
    (first, took_first), *others = results
    assert took_first[0] is not None and took_first[1:] == [None, None]
    assert (first.status, first.reason) == (True, health.REASON_VERIFIED), first.message
    for verdict, _ in others:
        assert (verdict.status, verdict.reason) == (True, health.REASON_VERIFIED), verdict.message


@pytest.mark.parametrize(
    ("unreadable_pod", "status", "reason", "said"),
    [
        (False, False, health.REASON_NOT_RECEIVED, "any of the 3 receiver pods"),
        # The pod that could not be read may have taken it.
        (True, None, health.REASON_RECEIVER_UNREACHABLE, "1 of 4 receiver pods"),
    ],
)
async def test_without_redis_a_ping_no_pod_verified_is_not_received_unless_one_was_unread(
    emulator: Any,
    tmp_path: Path,
    cluster_proxy: ClusterProxy,
    unreadable_pod: bool,
    status: bool | None,
    reason: str,
    said: str,
) -> None:
    async with replicas(tmp_path, None, cluster_proxy) as group:
        results = await _ping_three_times(
            group,
            emulator,
            MEMORY_SPEC,
            timeout=1.5,
            pods=group.pods(unreachable_pod=unreadable_pod),
            held_secret=OTHER_SECRET,  # not the webhook's: every ping is refused
        )
    for verdict, _ in results:
        assert (verdict.status, verdict.reason) == (status, reason), verdict.message
        assert said in verdict.message


async def test_without_redis_or_pod_listing_a_ping_on_another_replica_is_unknown(
    emulator: Any, tmp_path: Path, cluster_proxy: ClusterProxy
) -> None:
    async with replicas(tmp_path, None, cluster_proxy) as group:
        results = await _ping_three_times(group, emulator, MEMORY_SPEC, timeout=1.5, pods=[])
    (first, took_first), *others = results
    assert took_first[0] is not None  # the first ping reached replica 0, the one asked
    assert (first.status, first.reason) == (True, health.REASON_VERIFIED), first.message
    for verdict, _ in others:  # the next two reached replicas 1 and 2
        assert (verdict.status, verdict.reason) == (None, health.REASON_PINGS_PER_REPLICA)
        assert "spec.receiver.redis" in verdict.message
    assert all(others[-1][1])
