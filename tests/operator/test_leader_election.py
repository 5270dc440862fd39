"""One active operator by Lease: the pure rules, then real operator processes.

Each replica is the real CLI (`gemini-webhooks operator --leader-elect ...`) with shorter
Lease timings. Its WebhookService calls go through a recording proxy of its own (the
resources name no `apiBaseUrl`, each replica a default one), so every remote call is
attributed to the replica that made it. Runs against the kube sandbox, or the real control
plane with GWO_KUBE=real.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import itertools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import standardwebhooks
from prometheus_client.parser import text_string_to_metric_families

from gemini_webhook_operator.leader import (
    Fence,
    LeaseRecord,
    LeaseTiming,
    acquirable,
    claim,
    released,
    until_next_try,
)
from gemini_webhook_operator.metrics import LEADER, RECONCILES_TOTAL
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import KNOWN, decode_data, remote_identity
from gemini_webhooks.kube_access import ClusterAccess
from tests.fixtures.kube import KUBECTL
from tests.operator.api_proxy import FaultProxy, KubeLink

ROOT = Path(__file__).resolve().parents[2]
LEASE = "gwo-leader-test"
# Shorter than the defaults, in client-go's proportions (a takeover after a crash within
# 8 s + 1.2 s), and not so short that a loaded 2-core machine running kube-apiserver and
# etcd misses a renewal deadline (3 s did, once: the leader then correctly stood down).
TIMING = LeaseTiming(lease_duration=8.0, renew_deadline=6.0, retry_period=1.0)
pytestmark = pytest.mark.timeout(180)


# --- the rules ---------------------------------------------------------------------------


def _record(holder: str, duration: float = 15, transitions: int = 0) -> LeaseRecord:
    return LeaseRecord(holder, duration, "2026-12-06T09:00:00.000000Z", "t", transitions, "1")


def test_a_missing_released_or_own_lease_is_acquirable() -> None:
    assert acquirable(None, "a", observed_at=0, now=0)
    assert acquirable(_record(""), "a", observed_at=0, now=0)
    assert acquirable(_record("a"), "a", observed_at=0, now=0)


def test_anothers_lease_is_acquirable_only_a_full_duration_after_we_observed_it() -> None:
    """Measured on our own clock from when we saw the record, never from its timestamps."""
    held = _record("b", duration=15)
    assert not acquirable(held, "a", observed_at=100, now=114.9)
    assert acquirable(held, "a", observed_at=100, now=115)


def test_a_candidate_tries_again_the_moment_the_lease_it_observed_expires() -> None:
    """Not at its next retry after that (client-go's polling): up to a retry period sooner."""
    held = _record("b", duration=15)
    assert until_next_try(held, "a", observed_at=100, now=101, retry=2.2) == 2.2
    assert until_next_try(held, "a", observed_at=100, now=114.5, retry=2.2) == 0.5
    # Past the expiry, a try failed (an API error): the retry period, never a busy loop.
    assert until_next_try(held, "a", observed_at=100, now=115.1, retry=2.2) == 2.2
    for free in (None, _record(""), _record("a")):  # tried at once anyway
        assert until_next_try(free, "a", observed_at=100, now=114.5, retry=2.2) == 2.2


def test_a_renewal_keeps_the_acquire_time_and_a_takeover_counts_a_transition() -> None:
    at = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    renewed = claim(_record("a", transitions=3), "a", at, LeaseTiming())
    assert renewed["acquireTime"] == "2026-12-06T09:00:00.000000Z"
    assert renewed["renewTime"] == "2026-12-06T09:30:00.000000Z"
    assert renewed["leaseTransitions"] == 3
    taken = claim(_record("b", transitions=3), "a", at, LeaseTiming())
    assert taken["holderIdentity"] == "a" and taken["leaseTransitions"] == 4
    assert taken["acquireTime"] == "2026-12-06T09:30:00.000000Z"
    assert claim(None, "a", at, LeaseTiming())["leaseTransitions"] == 0
    assert claim(None, "a", at, LeaseTiming())["leaseDurationSeconds"] == 15


def test_a_released_lease_names_nobody_and_expires_at_once() -> None:
    spec = released(_record("a", transitions=2), datetime(2026, 12, 6, tzinfo=UTC))
    assert spec["holderIdentity"] == "" and spec["leaseDurationSeconds"] == 1
    assert spec["leaseTransitions"] == 2


def test_lease_timing_follows_client_gos_rules() -> None:
    assert LeaseTiming().problems() == []
    assert TIMING.problems() == []
    assert LeaseTiming(10, 10, 2).problems()  # the lease must outlast the renew deadline
    assert LeaseTiming(15, 2.4, 2).problems()  # the deadline must exceed 1.2 retries


def test_the_fence_closes_when_the_clock_passes_it() -> None:
    now = [100.0]
    fence = Fence(until=103.0, monotonic=lambda: now[0])
    fence.check("a write")
    assert fence.remaining() == 3.0
    now[0] = 103.0  # e.g. a process resumed after SIGSTOP: the monotonic clock moved on
    with pytest.raises(RuntimeError, match="does not hold the leader Lease"):
        fence.check("a write")
    assert not Fence(until=-math.inf).leading()


# --- real operator processes ---------------------------------------------------------------


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
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    proxy: FaultProxy
    health_port: int
    metrics_port: int = 0
    link: KubeLink | None = None  # its own link to the Kubernetes API, when it has one

    def health(self) -> tuple[int, Any]:
        """The probe's status and body; (0, None) while nothing listens yet (a new
        replica's liveness port opens a moment after its metrics port)."""
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, None
        except urllib.error.URLError:
            return 0, None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def total(self, metric: str) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == metric
        )


def _election_log(text: str) -> str:
    """What a replica said about the Lease, and the end of its log."""
    said = [line for line in text.splitlines() if "leader" in line.lower() and "File" not in line]
    return "\n".join([*said[-30:], "...", text[-2000:]])


@dataclass
class Cluster:
    namespace: str
    objects: Any  # kubernetes.client.CustomObjectsApi
    leases: Any  # kubernetes.client.CoordinationV1Api
    kubeconfig: Path
    workdir: Path
    upstream: str
    replicas: list[Replica] = field(default_factory=list)

    async def start(
        self,
        name: str,
        *,
        link: KubeLink | None = None,
        restart: Replica | None = None,
        drift_interval: float = 600,
    ) -> Replica:
        """A replica; with `link`, it reaches the Kubernetes API only through it; `restart`:
        the same replica again after it exited (as the kubelet restarts a container), with
        the same WebhookService proxy and link."""
        if restart is not None:
            assert restart.process.poll() is not None, "restart only an exited replica"
            self.replicas.remove(restart)
            link = restart.link
        proxy = restart.proxy if restart is not None else await FaultProxy(self.upstream).start()
        kubeconfig = self.kubeconfig
        if link is not None:
            kubeconfig = link.kubeconfig(self.workdir / f"{name}.kubeconfig")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            health_port = probe.getsockname()[1]
        log_path = self.workdir / f"{name}-{len(self.replicas)}.log"
        env = dict(os.environ, POD_NAME=name)
        env.pop("KUBECONFIG", None)
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gemini_webhooks",
                    "operator",
                    "--kubeconfig",
                    str(kubeconfig),
                    "--namespace",
                    self.namespace,
                    "--leader-elect",
                    f"--leader-election-namespace={self.namespace}",
                    f"--leader-election-id={LEASE}",
                    f"--lease-duration={TIMING.lease_duration}",
                    f"--renew-deadline={TIMING.renew_deadline}",
                    f"--retry-period={TIMING.retry_period}",
                    f"--api-base-url={proxy.url}",
                    f"--drift-interval={drift_interval}",
                    f"--liveness=http://127.0.0.1:{health_port}/healthz",
                    "--metrics-port=0",
                    "--metrics-address=127.0.0.1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        replica = Replica(name, process, log_path, proxy, health_port, link=link)
        self.replicas.append(replica)
        match = await self.until(
            lambda: re.search(r"metrics on port (\d+)", replica.log()) or process.poll(),
            f"{name} to serve metrics",
        )
        assert process.poll() is None, replica.log()
        replica.metrics_port = int(match.group(1))
        return replica

    def holder(self) -> str:
        try:
            lease = self.leases.read_namespaced_lease(LEASE, self.namespace)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return ""
            raise
        return lease.spec.holder_identity or ""

    def resource(self, name: str) -> dict[str, Any]:
        return dict(
            self.objects.get_namespaced_custom_object(
                crd.API_GROUP, crd.VERSION, self.namespace, crd.PLURAL, name
            )
        )

    def webhook_id(self, name: str) -> str | None:
        return (self.resource(name).get("status") or {}).get("webhookId")

    def create(self, name: str, url: str, **spec: Any) -> None:
        """A resource without `apiBaseUrl`: each replica calls through its own proxy."""
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
                    **spec,
                },
            },
        )

    def request_rotation(self, name: str) -> None:
        self.objects.patch_namespaced_custom_object(
            crd.API_GROUP,
            crd.VERSION,
            self.namespace,
            crd.PLURAL,
            name,
            {"metadata": {"annotations": {crd.ANNOTATION_ROTATE: "now"}}},
        )

    def rotated(self, name: str) -> bool:
        obj = self.resource(name)
        annotations = obj["metadata"].get("annotations") or {}
        reason = (obj.get("status") or {}).get("lastRotationReason")
        return crd.ANNOTATION_ROTATE not in annotations and reason == "RequestedByAnnotation"

    async def until(self, condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await asyncio.to_thread(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {r.name}\n{_election_log(r.log())}" for r in self.replicas)
                raise AssertionError(f"timed out waiting for {what}\n{logs}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def cluster(kube: Any, emulator: Any, tmp_path: Path) -> AsyncIterator[Cluster]:
    namespace = f"gwo-le-{uuid.uuid4().hex[:6]}"
    kubectl(kube, tmp_path, "apply", "-f", str(ROOT / "crds"))
    api_key = base64.b64encode(emulator.api_key.encode()).decode()
    for manifest in (
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "gemini-api-key", "namespace": namespace},
            "data": {"api-key": api_key},
        },
    ):
        kubectl(kube, tmp_path, "apply", "-f", "-", stdin=json.dumps(manifest))
    api_client = kubernetes.config.new_client_from_config(config_file=str(kube.kubeconfig))
    state = Cluster(
        namespace,
        kubernetes.client.CustomObjectsApi(api_client),
        kubernetes.client.CoordinationV1Api(api_client),
        kube.kubeconfig,
        tmp_path,
        emulator.base_url,
    )
    try:
        yield state
    finally:
        for replica in state.replicas:
            if replica.process.poll() is None:
                os.killpg(replica.process.pid, signal.SIGCONT)
                replica.process.send_signal(signal.SIGTERM)
        for replica in state.replicas:
            try:
                replica.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(replica.process.pid, signal.SIGKILL)
                replica.process.wait(5)
            await replica.proxy.stop()
            if replica.link is not None:
                replica.link.close()
        if not kube.is_sandbox:
            kubectl(kube, tmp_path, "delete", "namespace", namespace, "--wait=false")
        api_client.close()


def _remote_ids(emulator: Any) -> list[str]:
    page = emulator.client().webhooks.list(page_size=100)
    assert not page.next_page_token
    return sorted(w.id for w in page.webhooks or ())


async def test_one_replica_leads_and_a_graceful_stop_hands_over_at_once(
    cluster: Cluster, emulator: Any
) -> None:
    endpoint = emulator.endpoint()
    first = await cluster.start("replica-a")
    await cluster.until(lambda: cluster.holder() == "replica-a", "replica-a to lead")
    cluster.create("one", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("one"), "the first resource reconciled")
    second = await cluster.start("replica-b")
    cluster.create("two", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("two"), "the second resource reconciled")
    await asyncio.sleep(2 * TIMING.retry_period)  # time for a wrongly active standby to act
    assert cluster.holder() == "replica-a"
    assert first.total(LEADER) == 1 and second.total(LEADER) == 0
    assert second.total(RECONCILES_TOTAL) == 0 and second.proxy.calls() == []
    # Both answer their probes: a standby is alive and ready (a rolling update waits for it).
    assert first.health()[0] == 200
    assert second.health() == (200, {"leader": False, "standby": True})

    first.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(first.process.wait, 30)
    assert first.process.returncode == 0, first.log()
    assert "released the leader Lease" in first.log()
    exited_at = time.monotonic()
    await cluster.until(lambda: cluster.holder() == "replica-b", "replica-b to take over")
    handover = time.monotonic() - exited_at
    # Released, not expired: the standby takes it at its next try, not a lease later.
    assert handover < TIMING.lease_duration, f"handover took {handover:.1f} s"
    cluster.create("three", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("three"), "the new leader reconciled")
    await cluster.until(lambda: second.health()[0] == 200, "kopf's probe on the new leader")
    ids = sorted(str(cluster.webhook_id(n)) for n in ("one", "two", "three"))
    assert _remote_ids(emulator) == ids  # nothing created twice
    assert second.total(LEADER) == 1


async def test_a_killed_leader_is_replaced_within_the_lease_duration_and_retry_period(
    cluster: Cluster, emulator: Any
) -> None:
    endpoint = emulator.endpoint()
    first = await cluster.start("replica-a")
    await cluster.until(lambda: cluster.holder() == "replica-a", "replica-a to lead")
    await cluster.start("replica-b")
    cluster.create("one", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("one"), "the resource reconciled")
    killed_at = time.monotonic()
    os.killpg(first.process.pid, signal.SIGKILL)
    await cluster.until(lambda: cluster.holder() == "replica-b", "replica-b to take over")
    takeover = time.monotonic() - killed_at
    bound = TIMING.lease_duration + 1.2 * TIMING.retry_period + 1.0  # + the test's polling
    assert takeover <= bound, f"takeover {takeover:.1f} s > {bound:.1f} s"
    cluster.create("two", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("two"), "the new leader reconciled")
    assert _remote_ids(emulator) == sorted(str(cluster.webhook_id(n)) for n in ("one", "two"))


async def test_a_leader_paused_past_its_lease_writes_nothing_when_it_resumes(
    cluster: Cluster, emulator: Any
) -> None:
    """SIGSTOP (a long GC pause, a frozen VM) for longer than the Lease, with rotations
    requested meanwhile: the standby does them; the resumed replica calls nothing, finds it
    lost the Lease and exits; each requested rotation happened exactly once."""
    endpoint = emulator.endpoint()
    first = await cluster.start("replica-a")
    await cluster.until(lambda: cluster.holder() == "replica-a", "replica-a to lead")
    second = await cluster.start("replica-b")
    names = ["one", "two", "three"]
    for name in names:
        cluster.create(name, endpoint.url)
    for name in names:
        await cluster.until(functools.partial(cluster.webhook_id, name), f"{name} reconciled")

    os.killpg(first.process.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    for name in names:
        cluster.request_rotation(name)
    await cluster.until(lambda: cluster.holder() == "replica-b", "replica-b to take over")
    for name in names:
        await cluster.until(
            functools.partial(cluster.rotated, name), f"{name} rotated by replica-b"
        )
    await asyncio.sleep(max(0.0, paused_at + 2 * TIMING.lease_duration - time.monotonic()))
    calls_before_resume = len(first.proxy.records)
    resumed_at = time.monotonic()
    os.killpg(first.process.pid, signal.SIGCONT)
    returncode = await asyncio.to_thread(first.process.wait, 30)
    after = [r for r in first.proxy.records if r.at >= resumed_at]
    assert after == [], f"the resumed replica called the WebhookService: {after}"
    assert len(first.proxy.records) == calls_before_resume
    assert returncode == 1, first.log()[-3000:]
    assert "lost the leader Lease" in first.log()
    rotations = [
        r for r in first.proxy.records + second.proxy.records if ":rotateSigningSecret" in r.path
    ]
    assert len(rotations) == len(names), rotations  # each requested rotation exactly once
    assert cluster.holder() == "replica-b"


async def test_a_leader_cut_from_the_api_server_stops_writing_and_rejoins_as_a_follower(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    """A partition: the leader's link to the Kubernetes API refuses every connection while
    its WebhookService stays reachable (the dangerous half). It writes nothing past its renew
    deadline (every Kubernetes request and WebhookService call counted at its own proxies),
    stops, the standby takes over and does the rotations requested meanwhile, once each;
    healed and restarted (as the kubelet would), it follows and writes nothing."""
    endpoint = emulator.endpoint()
    access = ClusterAccess.load(str(kube.kubeconfig))
    first = await cluster.start("replica-a", link=KubeLink.serve(access))
    await cluster.until(lambda: cluster.holder() == "replica-a", "replica-a to lead")
    second = await cluster.start("replica-b", link=KubeLink.serve(access))
    names = ["one", "two", "three"]
    for name in names:
        cluster.create(name, endpoint.url)
    for name in names:
        await cluster.until(functools.partial(cluster.webhook_id, name), f"{name} reconciled")
    link = first.link
    assert link is not None and link.writes(), "replica-a's writes do not pass its link"
    assert cluster.holder() == "replica-a" and first.process.poll() is None, first.log()[-3000:]

    link.cut()
    cut_at = link.cut_at
    assert cut_at is not None

    async def stopped_after() -> float:
        await asyncio.to_thread(first.process.wait, 60)
        return time.monotonic() - cut_at

    stopping = asyncio.create_task(stopped_after())
    for name in names:
        cluster.request_rotation(name)
    await cluster.until(lambda: cluster.holder() == "replica-b", "replica-b to take over")
    takeover = time.monotonic() - cut_at
    for name in names:
        await cluster.until(
            functools.partial(cluster.rotated, name), f"{name} rotated by replica-b"
        )
    stopped = await stopping
    assert first.process.returncode == 1, first.log()[-3000:]
    assert "leader Lease not renewed within the renew deadline" in first.log()

    # What replica-a attempted after the cut, as its two proxies saw it.
    tried = [
        r.at - cut_at for r in link.writes(since=cut_at) + first.proxy.calls() if r.at >= cut_at
    ]
    last = max(tried, default=0.0)
    figures = (
        f"HA figures ({'sandbox' if kube.is_sandbox else 'real control plane'}), partition: "
        f"takeover {takeover:.1f} s after the cut (bound "
        f"{TIMING.lease_duration + 2.4 * TIMING.retry_period + 2:.1f}); replica-a stopped "
        f"{stopped:.1f} s after it; its last write attempt {last:.2f} s after it "
        f"({len(tried)} attempted while cut); renew deadline {TIMING.renew_deadline:.0f} s"
    )
    print(figures)
    # In flight at the deadline at the latest (a loaded machine may deliver it a moment
    # later), and always before the standby could act.
    assert last <= TIMING.renew_deadline + 1.0, figures
    assert last < takeover, figures
    assert takeover <= TIMING.lease_duration + 2.4 * TIMING.retry_period + 2, figures

    link.heal()
    healed_at = time.monotonic()
    rejoined = await cluster.start("replica-a", restart=first)
    await cluster.until(lambda: "standing by" in rejoined.log(), "replica-a to stand by")
    cluster.create("four", endpoint.url)
    await cluster.until(lambda: cluster.webhook_id("four"), "four reconciled by replica-b")
    await asyncio.sleep(2 * TIMING.retry_period)  # time for a wrongly active follower to act
    assert cluster.holder() == "replica-b"
    assert rejoined.total(LEADER) == 0 and rejoined.total(RECONCILES_TOTAL) == 0
    assert link.writes(since=healed_at) == [], "the follower wrote to the Kubernetes API"
    assert [r for r in first.proxy.records if r.at >= healed_at] == []
    rotations = [
        r for r in first.proxy.records + second.proxy.records if ":rotateSigningSecret" in r.path
    ]
    assert len(rotations) == len(names), (figures, rotations)  # each exactly once
    ids = sorted(str(cluster.webhook_id(n)) for n in [*names, "four"])
    assert _remote_ids(emulator) == ids  # nothing created twice


# --- under load ----------------------------------------------------------------------------

RESOURCES = 20
ROTATION_INTERVAL = 30.0  # seconds: rotations fall due all through the run
DRIFT_INTERVAL = 5.0  # how often a due rotation is noticed
REQUESTED = 5  # resources whose rotation is requested right after the leader dies
# A SIGKILLed leader's Lease is taken within lease + 1.2 x retry of its last renewal, plus
# the round trips of the taker's own Lease read and write (as its link records them: no
# polling by the test in these figures).
TAKEOVER_SLACK = 0.5
# Then the new leader starts: kopf lists and watches, each reconciliation reads what it
# acts on (re-read before acting), the first SDK client for the API key is built; measured
# 0.5-1.3 s on the shared 2-core machine (1.4-2.7 s before a standby imported the SDK's
# WebhookService models at start).
STARTING = 1.5


def _rotated_id(path: str) -> str:
    return path.rsplit("/", 1)[-1].split(":", 1)[0]


def _acts(replica: Replica) -> list[float]:
    """When the replica wrote anything but the Lease: WebhookService writes and Kubernetes
    writes, as its two proxies saw them."""
    link = replica.link
    assert link is not None
    remote = [r.at for r in replica.proxy.records if r.method != "GET"]
    return sorted(remote + [r.at for r in link.writes() if "/leases/" not in r.path])


@dataclass
class Load:
    """20 resources, an event fired every 2 s to all of them, and what the outside observers
    saw: the emulator, the endpoint, each replica's two proxies. The first `requested`
    resources rotate only when asked (each request must make exactly one rotation), the
    others every 30 s (none may rotate twice within 5 s)."""

    cluster: Cluster
    emulator: Any
    endpoint: Any
    names: list[str]
    requested: list[str]
    webhook_of: dict[str, str] = field(default_factory=dict)
    firing: asyncio.Event = field(default_factory=asyncio.Event)
    firer: asyncio.Task[int] | None = None

    @classmethod
    async def begin(cls, cluster: Cluster, emulator: Any, requested: int) -> Load:
        names = [f"load-{i:02d}" for i in range(RESOURCES)]
        load = cls(cluster, emulator, emulator.endpoint(), names, names[:requested])
        interval = {"interval": f"{ROTATION_INTERVAL:.0f}s"}
        for name in load.names:
            spec = {} if name in load.requested else {"rotation": interval}
            cluster.create(name, f"{load.endpoint.url}/{name}", **spec)
        for name in load.names:
            await cluster.until(functools.partial(cluster.webhook_id, name), f"{name} reconciled")
        load.webhook_of = {name: str(cluster.webhook_id(name)) for name in load.names}
        load.firer = asyncio.create_task(load._fire())
        return load

    async def _fire(self) -> int:
        fired = 0
        while not self.firing.is_set():
            await asyncio.to_thread(self.emulator.fire, "batch.succeeded")
            fired += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.firing.wait(), 2.0)
        return fired

    async def end(self, replicas: list[Replica]) -> tuple[str, list[str]]:
        """Stop firing, let the deliveries settle; the figures, and what went wrong."""
        assert self.firer is not None
        self.firing.set()
        fired = await self.firer
        deliveries = await asyncio.to_thread(
            self.emulator.wait_for_deliveries, fired * RESOURCES, timeout=60
        )
        writes = {
            r.name: (
                len([w for w in (r.link.writes() if r.link else []) if "/leases/" not in w.path]),
                len([c for c in r.proxy.records if c.method != "GET"]),
            )
            for r in replicas
        }
        rotations: dict[str, list[float]] = {}
        for r in replicas:
            for call in r.proxy.records:
                if ":rotateSigningSecret" in call.path and call.status == 200:
                    rotations.setdefault(_rotated_id(call.path), []).append(call.at)
        on_request = {self.webhook_of[n] for n in self.requested}
        doubles = sum(len(rotations.get(w, [])) != 1 for w in on_request) + sum(
            1
            for webhook, times in rotations.items()
            if webhook not in on_request
            for before, after in itertools.pairwise(sorted(times))
            if after - before < 5.0
        )
        core = kubernetes.client.CoreV1Api(self.cluster.objects.api_client)
        # The Secrets first, the remote after: scheduled rotations go on while this reads,
        # and a secret a Secret held stays listed for the grace period (24 h), whereas one
        # rotated between the two reads would be missing from an earlier listing.
        held_in = {}
        for name in self.names:
            secret = core.read_namespaced_secret(
                f"{name}{crd.DEFAULT_SIGNING_SECRET_SUFFIX}", self.cluster.namespace
            )
            held_in[name] = decode_data({k: str(v) for k, v in (secret.data or {}).items()})
        listed = self.emulator.client().webhooks.list(page_size=100).webhooks or ()
        remote = {w.id: w for w in listed}
        unaccepted, held_by = [], {}
        for name in self.names:
            held = held_in[name]
            held_by[name] = [s.secret for s in held.secrets]
            found = remote[self.webhook_of[name]].signing_secrets or []
            reported = [str(s.truncated_secret) for s in found]
            if held.current is None or remote_identity(held.current.secret, reported) != KNOWN:
                unaccepted.append(name)
        failed = 0
        for request in self.endpoint.requests:
            name = request.path.rsplit("/", 1)[-1]
            headers = {k.lower(): v for k, v in request.headers.items()}
            if not any(_verifies(s, request.body, headers) for s in held_by.get(name, [])):
                failed += 1
        undelivered = [d for d in deliveries if d.get("state") != "delivered"]
        writers = _writers(replicas)
        figures = (
            "writes per replica (Kubernetes without the Lease + WebhookService): "
            + ", ".join(f"{n} {k}+{w}" for n, (k, w) in writes.items())
            + f" | writers in turn: {' > '.join(writers)}"
            f" | rotations {sum(len(t) for t in rotations.values())}, double actions (a "
            f"requested rotation not done exactly once, a due one twice within 5 s) {doubles} "
            f"| deliveries "
            f"{len(self.endpoint.requests)} received ({len(deliveries)} logged), "
            f"{failed} failing verification, "
            f"{len(undelivered)} not delivered | Secrets the remote does not accept: "
            f"{len(unaccepted)}"
        )
        wrong = [
            what
            for what, bad in (
                ("a replica wrote again after another had", len(set(writers)) != len(writers)),
                (
                    "not one remote webhook per resource",
                    sorted(remote) != sorted(self.webhook_of.values()),
                ),
                ("a Secret the remote does not accept", bool(unaccepted)),
                ("a rotation done twice", doubles > 0),
                ("a delivery failing verification or undelivered", bool(failed or undelivered)),
                ("deliveries missing", len(self.endpoint.requests) < fired * RESOURCES),
            )
            if bad
        ]
        return figures, wrong


def _takeover(replica: Replica, since: float) -> tuple[float, float, float, float]:
    """Seconds after `since` at which the replica took the Lease, had kopf's listing of the
    GeminiWebhooks answered, read a Secret (its first reconciliation started) and first wrote
    anything but the Lease, as its own link and WebhookService proxy saw them (inf: never)."""
    link = replica.link
    assert link is not None
    seen = link.requests(since)
    acquired = next(
        (r.at for r in seen if r.method == "PATCH" and "/leases/" in r.path and r.status == 200),
        math.inf,
    )
    after = [r for r in seen if r.at >= acquired and r.method == "GET"]
    listed = next(
        (r.at for r in after if r.path.endswith(f"/{crd.PLURAL}") and "watch" not in r.query),
        math.inf,
    )
    read = next((r.at for r in after if "/secrets/" in r.path), math.inf)
    wrote = next((t for t in _acts(replica) if t > since), math.inf)
    return acquired - since, listed - since, read - since, wrote - since


def _held_by_one_of(cluster: Cluster, names: set[str]) -> bool:
    return cluster.holder() in names


def _ready(replica: Replica) -> bool:
    return replica.health()[0] == 200


def _writers(replicas: list[Replica]) -> list[str]:
    """The replicas that wrote, in turn (consecutive writes of one replica as one turn):
    with one writer at any instant, nobody appears twice."""
    ordered = sorted((t, r.name) for r in replicas for t in _acts(r))
    return [name for name, _ in itertools.groupby(name for _, name in ordered)]


@pytest.mark.timeout(600)
@pytest.mark.real_cluster_only  # the issue asks for them there; ~2.5 min each
async def test_three_replicas_under_load_survive_a_killed_leader(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    """Issue 24's load run: 3 replicas, 20 resources with rotations due every 30 s and five
    requested, deliveries flowing all along; the leader is SIGKILLed. The Lease is taken
    within the lease duration and retry period, and the new leader's first write follows
    within STARTING (a standby is warm: kopf's start is all that is left); one replica
    writes at any time; every resource keeps one remote
    webhook and a Secret the remote accepts; no rotation twice; every delivery verifies with
    its resource's Secret. The figures are printed (bench/operator/ha.py shows them)."""
    access = ClusterAccess.load(str(kube.kubeconfig))
    first = await cluster.start(
        "replica-a", link=KubeLink.serve(access), drift_interval=DRIFT_INTERVAL
    )
    await cluster.until(lambda: cluster.holder() == "replica-a", "replica-a to lead")
    others = [
        await cluster.start(name, link=KubeLink.serve(access), drift_interval=DRIFT_INTERVAL)
        for name in ("replica-b", "replica-c")
    ]
    load = await Load.begin(cluster, emulator, REQUESTED)
    await asyncio.sleep(ROTATION_INTERVAL + 5)  # due rotations under replica-a

    # replica-a led all along (a renewal missed under load would end this test early).
    assert cluster.holder() == "replica-a" and first.process.poll() is None, first.log()[-3000:]
    due_before = len([r for r in first.proxy.records if ":rotateSigningSecret" in r.path])
    assert due_before > 0, "no rotation fell due under replica-a"
    killed_at = time.monotonic()
    os.killpg(first.process.pid, signal.SIGKILL)
    for name in load.requested:
        cluster.request_rotation(name)
    await cluster.until(lambda: cluster.holder() in ("replica-b", "replica-c"), "a new leader")
    holder_change = time.monotonic() - killed_at
    leader = next(r for r in others if r.name == cluster.holder())
    for name in load.requested:
        await cluster.until(functools.partial(cluster.rotated, name), f"{name} rotated")
    await asyncio.sleep(ROTATION_INTERVAL + 5)  # due rotations under the new leader
    observed, wrong = await load.end([first, *others])

    acquired, listed, read, wrote = _takeover(leader, killed_at)
    bound = TIMING.lease_duration + 1.2 * TIMING.retry_period
    figures = (
        f"HA figures ({'sandbox' if kube.is_sandbox else 'real control plane'}), load: 3 "
        f"replicas, {RESOURCES} resources, rotation every {ROTATION_INTERVAL:.0f} s (noticed "
        f"within {DRIFT_INTERVAL:.0f} s), {REQUESTED} requested | SIGKILL of the leader: Lease "
        f"taken over after {acquired:.2f} s (lease + retry = {bound:.1f} s; seen by the test "
        f"after {holder_change:.1f} s), then GeminiWebhooks listed +{listed - acquired:.2f} s, "
        f"first Secret read +{read - acquired:.2f} s, first write +{wrote - acquired:.2f} s: "
        f"{wrote:.2f} s after the kill | {due_before} rotations by replica-a before the kill "
        f"| {observed}"
    )
    print(figures)
    assert wrong == [], figures
    assert holder_change <= bound + 1.0, figures  # + the test's polling
    assert acquired <= bound + TAKEOVER_SLACK, figures
    assert wrote <= bound + STARTING, figures


@pytest.mark.timeout(600)
@pytest.mark.real_cluster_only  # the issue asks for them there; ~2.5 min each
async def test_a_rolling_update_under_load_hands_over_without_doing_anything_twice(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    """The Deployment's rollout order (maxSurge 1, maxUnavailable 0), simulated with real
    processes: for each of 3 old replicas a new one starts and stands by, then the old one
    gets SIGTERM (a graceful stop releases the Lease). Under load, with a rotation requested
    at each step: one replica writes at any time, every handover is bounded by a retry
    period or so (released, not expired), nothing is done twice."""
    access = ClusterAccess.load(str(kube.kubeconfig))

    async def start(name: str) -> Replica:
        return await cluster.start(name, link=KubeLink.serve(access), drift_interval=DRIFT_INTERVAL)

    old = [await start("old-a")]
    await cluster.until(lambda: cluster.holder() == "old-a", "old-a to lead")
    old += [await start("old-b"), await start("old-c")]
    load = await Load.begin(cluster, emulator, len(old))
    await asyncio.sleep(10)
    alive = list(old)
    new: list[Replica] = []
    handovers: list[float] = []
    for step, leaving in enumerate(old):
        arriving = await start(f"new-{'abc'[step]}")
        new.append(arriving)
        alive.append(arriving)
        await cluster.until(functools.partial(_ready, arriving), f"{arriving.name} ready")
        name = load.requested[step]
        cluster.request_rotation(name)
        led = cluster.holder() == leaving.name
        leaving.process.send_signal(signal.SIGTERM)
        terminated_at = time.monotonic()
        returncode = await asyncio.to_thread(leaving.process.wait, 30)
        alive.remove(leaving)
        assert returncode == 0, leaving.log()[-3000:]
        if led:
            assert "released the leader Lease" in leaving.log()
            await cluster.until(
                functools.partial(_held_by_one_of, cluster, {r.name for r in alive}), "a new leader"
            )
            handovers.append(time.monotonic() - terminated_at)
        await cluster.until(functools.partial(cluster.rotated, name), f"{name} rotated")
    await asyncio.sleep(10)
    observed, wrong = await load.end([*old, *new])
    figures = (
        f"HA figures ({'sandbox' if kube.is_sandbox else 'real control plane'}), rolling "
        f"update: 3 replicas replaced one by one under load ({RESOURCES} resources, rotation "
        f"every {ROTATION_INTERVAL:.0f} s, 3 requested) | handovers "
        f"{', '.join(f'{h:.1f} s' for h in handovers)} after SIGTERM to the old leader "
        f"(retry period {TIMING.retry_period:.0f} s, lease {TIMING.lease_duration:.0f} s) "
        f"| {observed}"
    )
    print(figures)
    assert wrong == [], figures
    assert handovers, figures  # the leader was among the replaced
    assert max(handovers) < TIMING.lease_duration, figures  # released, not expired


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True
