"""High availability: two real kopf operators in one peering — only the oldest acts, and
the other takes over when it stops.

Each operator instance gets its own metrics registry, so its reconcile counter is a record
of the handlers *it* ran; the emulator's inventory shows that no webhook was created twice.
Runs against the kube sandbox, or a real cluster when KUBECONFIG is set (in a namespace of
its own).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_operator import ha
from gemini_webhook_operator.metrics import API_REQUESTS_TOTAL, RECONCILES_TOTAL
from gemini_webhooks.contracts import crd
from gemini_webhooks.kubesandbox.store import KOPF_PEERING_CRDS
from tests.fixtures.kube import KUBECTL

ROOT = Path(__file__).resolve().parents[2]
PEERING = "gwo-ha-test"
pytestmark = pytest.mark.timeout(120)


def kubectl(kube: Any, tmp_path: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [KUBECTL, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=kube.kubectl_env(tmp_path / "kubectl-cache"),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@dataclass
class Replica:
    """One operator process (`gemini-webhooks operator --peering ...`)."""

    name: str
    priority: int
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int | None = None

    def metrics_text(self) -> str:
        assert self.metrics_port is not None
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()

    def total(self, metric: str) -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(self.metrics_text())
            for sample in family.samples
            if sample.name == metric
        )

    def reconciles(self) -> float:
        return self.total(RECONCILES_TOTAL)

    def api_calls(self) -> float:
        return self.total(API_REQUESTS_TOTAL)


@dataclass
class Cluster:
    namespace: str
    objects: Any  # kubernetes.client.CustomObjectsApi
    kubeconfig: Path
    workdir: Path
    replicas: list[Replica] = field(default_factory=list)

    async def start(self, name: str) -> Replica:
        priority = ha.seniority_priority()
        log_path = self.workdir / f"{name}.log"
        env = dict(os.environ, POD_ID=name)  # kopf's peer identity
        env.pop("KUBECONFIG", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gemini_webhooks",
                    "operator",
                    "--kubeconfig",
                    str(self.kubeconfig),
                    "--namespace",
                    self.namespace,
                    "--peering",
                    PEERING,
                    f"--priority={priority}",
                    "--drift-interval=600",
                    "--metrics-port=0",
                    "--metrics-address=127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        replica = Replica(name, priority, process, log_path)
        self.replicas.append(replica)
        match = await self.until(
            lambda: (
                re.search(r"metrics on port (\d+)", log_path.read_text(errors="replace"))
                or process.poll() is not None
            ),
            f"{name} to serve metrics",
        )
        assert process.poll() is None, log_path.read_text()
        replica.metrics_port = int(match.group(1))
        await self.until(lambda: name in self.peers(), f"{name} in the peering")
        return replica

    async def stop(self, replica: Replica) -> None:
        replica.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(replica.process.wait, 30)

    def peers(self) -> dict[str, Any]:
        peering = self.objects.get_namespaced_custom_object(
            "kopf.dev", "v1", self.namespace, "kopfpeerings", PEERING
        )
        return dict(peering.get("status") or {})

    def webhook_id(self, name: str) -> str | None:
        body = self.objects.get_namespaced_custom_object(
            crd.API_GROUP, crd.VERSION, self.namespace, crd.PLURAL, name
        )
        return (body.get("status") or {}).get("webhookId")

    def create(self, name: str, base_url: str, url: str) -> None:
        self.objects.create_namespaced_custom_object(
            crd.API_GROUP,
            crd.VERSION,
            self.namespace,
            crd.PLURAL,
            {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "metadata": {"name": name},
                "spec": {
                    "url": url,
                    "events": ["batch.succeeded"],
                    "apiKeySecretRef": {"name": "gemini-api-key"},
                    "apiBaseUrl": base_url,
                },
            },
        )

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await asyncio.to_thread(condition)
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            await asyncio.sleep(0.2)


@pytest.fixture
async def cluster(kube: Any, emulator: Any, tmp_path: Path) -> AsyncIterator[Cluster]:
    namespace = f"gwo-ha-{uuid.uuid4().hex[:6]}"
    kubectl(kube, tmp_path, "apply", "-f", str(ROOT / "crds"), "-f", str(KOPF_PEERING_CRDS))
    api_key = base64.b64encode(emulator.api_key.encode()).decode()
    manifests = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gemini-api-key", "namespace": namespace},
            "data": {"api-key": api_key},
        },
        ha.peering_object(PEERING, namespace),
    ]
    for manifest in manifests:
        kubectl(kube, tmp_path, "apply", "-f", "-", stdin=json.dumps(manifest))
    api_client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    state = Cluster(
        namespace, kubernetes.client.CustomObjectsApi(api_client), kube.kubeconfig, tmp_path
    )
    try:
        yield state
    finally:
        for replica in state.replicas:
            if replica.process.poll() is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in state.replicas:
            try:
                replica.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(replica.process.pid, signal.SIGKILL)
                replica.process.wait(5)
        if not kube.is_sandbox:
            kubectl(kube, tmp_path, "delete", "namespace", namespace, "--wait=false")
        api_client.close()


def remote_webhooks(emulator: Any) -> list[Any]:
    page = emulator.client().webhooks.list(page_size=100)
    assert not page.next_page_token
    return list(page.webhooks or ())


async def test_only_the_oldest_replica_acts_and_the_next_takes_over_when_it_stops(
    cluster: Cluster, emulator: Any
) -> None:
    endpoint = emulator.endpoint()
    first = await cluster.start("replica-a")
    cluster.create("one", emulator.base_url, endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("one"), "the first resource reconciled")

    second = await cluster.start("replica-b")
    assert second.priority < first.priority  # started later: never preempts
    cluster.create("two", emulator.base_url, endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("two"), "the second resource reconciled")
    await asyncio.sleep(1.0)  # give a wrongly active replica time to show itself
    assert first.reconciles() > 0
    assert second.reconciles() == 0 and second.api_calls() == 0
    assert len(remote_webhooks(emulator)) == 2

    await cluster.stop(first)
    assert first.process.returncode == 0, first.log_path.read_text()
    await cluster.until(lambda: "replica-a" not in cluster.peers(), "the first to leave")
    cluster.create("three", emulator.base_url, endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("three"), "the standby took over")
    assert second.reconciles() > 0
    # The standby resumed the first two resources without creating them again.
    ids = {cluster.webhook_id(n) for n in ("one", "two", "three")}
    assert {w.id for w in remote_webhooks(emulator)} == ids
    assert len(ids) == 3


def test_seniority_gives_older_replicas_higher_priorities() -> None:
    assert ha.seniority_priority(1_000_000_000) > ha.seniority_priority(1_000_001_000)
    assert ha.seniority_priority() != ha.seniority_priority(0)


def test_peering_object_matches_the_operators_scope() -> None:
    assert ha.peering_object("p")["kind"] == "ClusterKopfPeering"
    namespaced = ha.peering_object("p", "team-a")
    assert namespaced["kind"] == "KopfPeering"
    assert namespaced["metadata"] == {"name": "p", "namespace": "team-a"}
