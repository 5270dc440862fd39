"""A rotation under steady traffic, with several receiver replicas, measured.

Used by tests/e2e/test_rotation_replicas.py and bench/receiver/rotation.py, on the real
control plane (`SandboxOptions(kube="real")`), whose node runs every Pod of the receiver's
ReplicaSet and spreads the receiver Service's connections over them (controlplane/balancer).

One run: events fired through the emulator's control API at `rate` per second; the rotation
requested (annotation) after `lead` seconds; every replica's `/metrics` polled (20 Hz) to see
when it reloaded its signing secrets; traffic kept up `tail` seconds after the last replica
reloaded; then every event is awaited at the sample consumer. Reported: the window (the new
secret's creation — the operator's rotate call — to the last replica's reload, after which
it verifies with the new secret), deliveries retried (more than one attempt), attempts that
failed, rejections by reason summed over the replicas, and arrivals per `webhook-id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

from gemini_webhooks.controlplane.node import Node
from gemini_webhooks.controlplane.running_pod import RunningPod
from gemini_webhooks.sandbox.metric_samples import scrape, total
from gemini_webhooks.sandbox.scenario import INTERNAL_PORT, Scenario
from gemini_webhooks.sandbox.steps import StepFailed, poll
from gemini_webhooks.sandbox.system import Sandbox

EVENT_TYPE = "interaction.completed"
_IN_FLIGHT = 16


@dataclass
class RotationRun:
    revocation: str
    replicas: int
    sent: int = 0
    rate: float = 0.0  # events fired per second, measured
    window_seconds: float | None = None  # new secret created -> last replica reloaded
    reloads_at: dict[str, float] = field(default_factory=dict)  # pod -> seconds after it
    retried: int = 0  # deliveries with more than one attempt
    failed_attempts: int = 0  # attempts answered non-2xx (or not at all)
    attempt_statuses: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, float] = field(default_factory=dict)  # reason -> count, all replicas
    accepted_by: dict[str, float] = field(default_factory=dict)  # pod -> accepted deliveries
    arrivals: dict[int, int] = field(default_factory=dict)  # copies per id -> how many ids
    undelivered: int = 0

    def summary(self) -> str:
        window = "n/a" if self.window_seconds is None else f"{self.window_seconds:.3f} s"
        return (
            f"revocation={self.revocation} replicas={self.replicas} sent={self.sent} "
            f"({self.rate:.1f}/s) window={window} retried={self.retried} "
            f"failed_attempts={self.failed_attempts} {dict(self.attempt_statuses)} "
            f"rejected={dict(self.rejected)} accepted_by={dict(self.accepted_by)} "
            f"arrivals_per_id={dict(self.arrivals)} undelivered={self.undelivered}"
        )


def node_of(sandbox: Sandbox) -> Node:
    if not isinstance(sandbox.kubelet, Node):
        raise StepFailed("several receiver replicas need the real control plane (kube='real')")
    return sandbox.kubelet


def receiver_pods(node: Node, namespace: str, deployment: str) -> list[RunningPod]:
    """The running pods of `deployment` (`<deployment>-<hash>-<id>`) on the node."""
    prefix = deployment + "-"
    return sorted(
        (
            p
            for p in node.pods.values()
            if p.namespace == namespace
            and p.name.startswith(prefix)
            and p.name[len(prefix) :].count("-") == 1
            and p.ready
        ),
        key=lambda p: p.name,
    )


def example(sandbox: Sandbox, name: str, revocation: str, replicas: int) -> str:
    document = yaml.safe_load(sandbox.render_example(name))
    spec = document["spec"]
    spec["rotation"] = {**(spec.get("rotation") or {}), "revocation": revocation}
    spec["receiver"]["replicas"] = replicas
    return str(yaml.safe_dump(document, sort_keys=False))


async def wait_replicas(scenario: Scenario, node: Node, replicas: int, within: float) -> None:
    key = f"{scenario.namespace}/{scenario.receiver}:80"

    async def spread() -> bool:
        pods = receiver_pods(node, scenario.namespace, scenario.receiver)
        balancer = node.balancers.get(key)
        return len(pods) == replicas and balancer is not None and len(balancer.backends) == replicas

    await poll(spread, within=within, what=f"{replicas} ready receiver pods behind one Service")


def _metrics_url(pod: RunningPod) -> str:
    port = pod.ports.lookup(INTERNAL_PORT)
    if port is None:
        raise StepFailed(f"pod {pod.label} has no internal port")
    return f"http://127.0.0.1:{port}/metrics"


async def rotate_under_traffic(
    scenario: Scenario,
    node: Node,
    *,
    revocation: str,
    replicas: int,
    rate: float = 50.0,
    lead: float = 2.0,
    tail: float = 3.0,
    within: float = 90.0,
) -> RotationRun:
    control, consumer = scenario._need_events()
    run = RotationRun(revocation, replicas)
    pods = receiver_pods(node, scenario.namespace, scenario.receiver)
    urls = {p.name: _metrics_url(p) for p in pods}
    before = {name: await scrape(url) for name, url in urls.items()}
    reloads_before = {
        name: total(s, "gemini_receiver_secret_reloads_total", outcome="ok")
        for name, s in before.items()
    }
    reloaded: dict[str, float] = {}
    stop = asyncio.Event()
    sent: list[str] = []
    resource = await scenario.resource() or {}
    last_rotation = (resource.get("status") or {}).get("lastRotationTime")

    async def fire_one() -> None:
        sent.extend(await scenario._fire(EVENT_TYPE))

    async def traffic() -> None:
        # One control-API call per event, started on a fixed schedule (`rate` per second)
        # whatever each call takes; at most `_IN_FLIGHT` calls at once.
        started = time.monotonic()
        calls: set[asyncio.Task[None]] = set()
        fired = 0
        while not stop.is_set():
            if len(calls) < _IN_FLIGHT:
                task = asyncio.create_task(fire_one())
                calls.add(task)
                task.add_done_callback(calls.discard)
                fired += 1
            delay = started + fired / rate - time.monotonic()
            await asyncio.sleep(max(delay, 0.001))
        await asyncio.gather(*calls)

    counts = dict(reloads_before)

    async def watch_reloads() -> None:
        # The latest reload of each replica (a later write of the Secret moves it on: the
        # window is then over-, never under-stated).
        while not stop.is_set():
            for name, url in urls.items():
                samples = await scrape(url)
                count = total(samples, "gemini_receiver_secret_reloads_total", outcome="ok")
                if count > counts[name]:
                    counts[name] = count
                    reloaded[name] = time.time()
            await asyncio.sleep(0.05)

    async def all_reloaded() -> bool:
        return len(reloaded) == len(urls)

    echo, consumer.echo = consumer.echo, None
    started = time.monotonic()
    pump = asyncio.create_task(traffic())
    watcher = asyncio.create_task(watch_reloads())
    try:
        await asyncio.sleep(lead)
        await scenario.request_rotation()

        async def rotated() -> bool:
            status = ((await scenario.resource()) or {}).get("status") or {}
            return status.get("lastRotationTime") not in (None, last_rotation)

        await poll(rotated, within=within, what="status.lastRotationTime to move")
        await poll(all_reloaded, within=within, what="every replica to reload its secrets")
        await asyncio.sleep(tail)
    finally:
        stop.set()
        await pump
        await watcher
        consumer.echo = echo
    run.sent = len(sent)
    run.rate = len(sent) / (time.monotonic() - started)
    _, held = await scenario._held_secrets()
    if held is not None and held.secrets and held.secrets[0].created_at is not None:
        created = held.secrets[0].created_at.timestamp()
        run.reloads_at = {name: at - created for name, at in sorted(reloaded.items())}
        run.window_seconds = max(run.reloads_at.values(), default=None)
    # Every event, including those Gemini retried, must reach the consumer.
    retry_wait = within + 30.0
    await scenario._arrivals(sent, retry_wait, f"events sent during a {revocation} rotation")
    wanted = set(sent)
    copies = Counter(a.webhook_id for a in consumer.arrivals if a.webhook_id in wanted)
    run.arrivals = dict(Counter(copies.values()))
    ours: list[dict[str, Any]] = []

    async def settled() -> bool:
        # An event reaches the consumer before the receiver's 2xx reaches the emulator (it
        # answers once the target took it), so the emulator may still be recording a
        # retry's answer: wait until no delivery of ours is pending.
        nonlocal ours
        deliveries = await asyncio.to_thread(control.deliveries, webhook_id=scenario.webhook_id)
        ours = [d for d in deliveries if d["id"] in wanted]
        return all(d["state"] != "pending" for d in ours)

    with contextlib.suppress(StepFailed):  # what is still pending is counted below
        await poll(settled, within=30.0, what="the emulator to record every delivery's answer")
    run.retried = sum(1 for d in ours if len(d["attempts"]) > 1)
    run.undelivered = sum(1 for d in ours if d["state"] != "delivered")
    statuses: Counter[str] = Counter()
    for d in ours:
        for attempt in d["attempts"]:
            code = attempt.get("status_code")
            if not 200 <= (code or 0) < 300:
                statuses[str(code)] += 1
    run.failed_attempts = sum(statuses.values())
    run.attempt_statuses = dict(statuses)
    rejected: dict[str, float] = {}
    for pod in pods:
        after = await scrape(urls[pod.name])
        for (sample, labels), value in after.items():
            if sample != "gemini_receiver_deliveries_total":
                continue
            labelled = dict(labels)
            old = before[pod.name].get((sample, labels), 0.0)
            if labelled.get("outcome") == "rejected" and value > old:
                reason = labelled.get("reason", "")
                rejected[reason] = rejected.get(reason, 0.0) + value - old
            if labelled.get("outcome") == "accepted" and value > old:
                run.accepted_by[pod.name] = run.accepted_by.get(pod.name, 0) + value - old
    run.rejected = rejected
    return run


async def set_revocation(scenario: Scenario, revocation: str) -> None:
    patch = json.dumps({"spec": {"rotation": {"revocation": revocation}}})
    name = f"geminiwebhook/{scenario.name}"
    await scenario.kubectl("patch", name, "-n", scenario.namespace, "--type=merge", "-p", patch)
