"""A rotation under steady traffic, with several receiver replicas, measured.

Used on the real node, the receivers containers and kube-proxy spreading the receiver
Service's connections over them: by bench/receiver/rotation.py through the sandbox
(`SandboxOptions(kube="real")`, the operator the chart's Pod there too) and by
tests/chart/test_real_rollout.py (the operator a Pod of the chart). Each place hands
`measure_rotation` a `Rig`: how it fires events, requests the rotation and reads what
happened; the run and its figures are the same.

One run: events fired through the emulator's control API at `rate` per second; the rotation
requested (annotation) after `lead` seconds; every replica's `/metrics` polled (20 Hz) to see
when it reloaded its signing secrets; traffic kept up `tail` seconds after the last replica
reloaded; then every event is awaited at the consumer. Reported: the window (the new
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from gemini_webhook_operator.receiver_names import ready_pod_urls, selector_labels
from gemini_webhooks.sandbox.kubeapi import KubeApi
from gemini_webhooks.sandbox.metric_samples import Samples, scrape, total
from gemini_webhooks.sandbox.real_node import ENDPOINT_SLICES, SERVICE_NAME_LABEL
from gemini_webhooks.sandbox.scenario import Scenario
from gemini_webhooks.sandbox.steps import StepFailed, poll
from gemini_webhooks.sandbox.system import Sandbox

EVENT_TYPE = "interaction.completed"
RELOADS = "gemini_receiver_secret_reloads_total"
DELIVERIES = "gemini_receiver_deliveries_total"
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
        reloads = ",".join(f"{at:+.3f}" for at in sorted(self.reloads_at.values()))
        return (
            f"revocation={self.revocation} replicas={self.replicas} sent={self.sent} "
            f"({self.rate:.1f}/s) window={window} reloads_at=[{reloads}] retried={self.retried} "
            f"failed_attempts={self.failed_attempts} {dict(self.attempt_statuses)} "
            f"rejected={dict(self.rejected)} accepted_by={dict(self.accepted_by)} "
            f"arrivals_per_id={dict(self.arrivals)} undelivered={self.undelivered}"
        )


class Rig(Protocol):
    """Where a run acts and what it reads: one GeminiWebhook, its receiver's replicas, the
    emulator's control API and the consumer its receiver forwards to."""

    async def replicas(self) -> dict[str, str]:
        """Each ready receiver Pod -> the URL of its `/metrics`."""

    async def scrape(self, url: str) -> Samples: ...

    async def fire(self) -> list[str]:
        """One `EVENT_TYPE` event: the ids (`webhook-id`) of its deliveries."""

    async def request_rotation(self) -> None: ...

    async def last_rotation_time(self) -> str | None: ...

    async def newest_secret_created(self) -> float | None:
        """When the Secret's newest signing secret was created (epoch seconds)."""

    async def arrived(self, ids: list[str], within: float) -> list[str]:
        """The `webhook-id` of every copy of `ids` at the consumer, once each has arrived
        (StepFailed after `within` seconds, naming how many never did)."""

    async def deliveries(self) -> list[dict[str, Any]]:
        """The emulator's deliveries to the webhook (`id`, `state`, `attempts`)."""


# --- The figures, from what was read: pure --------------------------------------------


def copies_per_id(arrived: Iterable[str], wanted: Iterable[str]) -> dict[int, int]:
    """How many of `wanted` arrived once, twice... (ids never arrived are not counted)."""
    ids = set(wanted)
    copies = Counter(webhook_id for webhook_id in arrived if webhook_id in ids)
    return dict(Counter(copies.values()))


def attempt_figures(deliveries: Iterable[Mapping[str, Any]]) -> tuple[int, int, dict[str, int]]:
    """Deliveries retried (more than one attempt), those not delivered, and the failed
    attempts (non-2xx, or no answer: `None`) by status code."""
    retried = undelivered = 0
    statuses: Counter[str] = Counter()
    for delivery in deliveries:
        retried += len(delivery["attempts"]) > 1
        undelivered += delivery["state"] != "delivered"
        for attempt in delivery["attempts"]:
            code = attempt.get("status_code")
            if not 200 <= (code or 0) < 300:
                statuses[str(code)] += 1
    return retried, undelivered, dict(statuses)


def verdicts(
    before: Mapping[str, Samples], after: Mapping[str, Samples]
) -> tuple[dict[str, float], dict[str, float]]:
    """From each replica's samples before and after: rejections by reason (summed over the
    replicas) and accepted deliveries by replica, counted since `before`."""
    rejected: dict[str, float] = {}
    accepted: dict[str, float] = {}
    for pod, samples in after.items():
        for (sample, labels), value in samples.items():
            grown = value - before[pod].get((sample, labels), 0.0)
            if sample != DELIVERIES or grown <= 0:
                continue
            labelled = dict(labels)
            if labelled.get("outcome") == "rejected":
                reason = labelled.get("reason", "")
                rejected[reason] = rejected.get(reason, 0.0) + grown
            if labelled.get("outcome") == "accepted":
                accepted[pod] = accepted.get(pod, 0.0) + grown
    return rejected, accepted


def broken_promises(run: RotationRun) -> list[str]:
    """What the run shows went wrong (issue 13 §3): an event lost or delivered twice, or a
    replica that took no delivery or never reloaded (the rotation was not seen through all
    of them); with Grace, any failed attempt or rejection; with Immediate, a rejection
    other than 503 `secret_reload_pending` (a delivery signed with the new secret before
    the replica reloaded) or 401 `revoked_secret` (one signed with the old secret just
    before the rotation, reaching a replica after it: accepting it would accept a leaked
    secret), or a failed attempt not so counted."""
    wrong = []
    if set(run.arrivals) - {1} or run.undelivered:
        wrong.append(f"copies per event {run.arrivals}, {run.undelivered} undelivered")
    if sum(run.arrivals.values()) != run.sent:
        wrong.append(f"{run.sent - sum(run.arrivals.values())} of {run.sent} events never arrived")
    if len(run.accepted_by) != run.replicas or len(run.reloads_at) != run.replicas:
        wrong.append(
            f"{len(run.accepted_by)} of {run.replicas} replicas took deliveries, "
            f"{len(run.reloads_at)} reloaded"
        )
    counted = {"Grace": set(), "Immediate": {"secret_reload_pending", "revoked_secret"}}
    codes = {"Grace": set(), "Immediate": {"503", "401"}}
    allowed = counted.get(run.revocation, set())
    if set(run.rejected) - allowed or set(run.attempt_statuses) - codes.get(run.revocation, set()):
        wrong.append(f"rejected {run.rejected}, failed attempts {run.attempt_statuses}")
    if run.failed_attempts != sum(run.rejected.values()) or run.retried > run.failed_attempts:
        wrong.append(
            f"{run.failed_attempts} failed attempts, {sum(run.rejected.values()):g} "
            f"rejections counted by the replicas, {run.retried} deliveries retried"
        )
    return wrong


# --- One run ---------------------------------------------------------------------------


async def measure_rotation(
    rig: Rig,
    *,
    revocation: str,
    replicas: int,
    rate: float = 50.0,
    lead: float = 2.0,
    tail: float = 3.0,
    within: float = 90.0,
) -> RotationRun:
    run = RotationRun(revocation, replicas)
    urls = await rig.replicas()
    before = {name: await rig.scrape(url) for name, url in urls.items()}
    counts = {name: total(s, RELOADS, outcome="ok") for name, s in before.items()}
    reloaded: dict[str, float] = {}
    stop = asyncio.Event()
    sent: list[str] = []
    last_rotation = await rig.last_rotation_time()

    async def fire_one() -> None:
        sent.extend(await rig.fire())

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

    async def watch_reloads() -> None:
        # The latest reload of each replica (a later write of the Secret moves it on: the
        # window is then over-, never under-stated).
        while not stop.is_set():
            for name, url in urls.items():
                count = total(await rig.scrape(url), RELOADS, outcome="ok")
                if count > counts[name]:
                    counts[name] = count
                    reloaded[name] = time.time()
            await asyncio.sleep(0.05)

    async def all_reloaded() -> bool:
        return len(reloaded) == len(urls)

    async def rotated() -> bool:
        return await rig.last_rotation_time() not in (None, last_rotation)

    started = time.monotonic()
    pump = asyncio.create_task(traffic())
    watcher = asyncio.create_task(watch_reloads())
    try:
        await asyncio.sleep(lead)
        await rig.request_rotation()
        await poll(rotated, within=within, what="status.lastRotationTime to move")
        await poll(all_reloaded, within=within, what="every replica to reload its secrets")
        await asyncio.sleep(tail)
    finally:
        stop.set()
        await pump
        await watcher
    run.sent = len(sent)
    run.rate = len(sent) / (time.monotonic() - started)
    created = await rig.newest_secret_created()
    if created is not None:
        run.reloads_at = {name: at - created for name, at in sorted(reloaded.items())}
        run.window_seconds = max(run.reloads_at.values(), default=None)
    # Every event, including those Gemini retried, must reach the consumer.
    run.arrivals = copies_per_id(await rig.arrived(sent, within + 30.0), sent)
    wanted = set(sent)
    ours: list[dict[str, Any]] = []

    async def settled() -> bool:
        # An event reaches the consumer before the receiver's 2xx reaches the emulator (it
        # answers once the target took it), so the emulator may still be recording a
        # retry's answer: wait until no delivery of ours is pending.
        nonlocal ours
        ours = [d for d in await rig.deliveries() if d["id"] in wanted]
        return all(d["state"] != "pending" for d in ours)

    with contextlib.suppress(StepFailed):  # what is still pending is counted below
        await poll(settled, within=30.0, what="the emulator to record every delivery's answer")
    run.retried, run.undelivered, run.attempt_statuses = attempt_figures(ours)
    run.failed_attempts = sum(run.attempt_statuses.values())
    after = {name: await rig.scrape(url) for name, url in urls.items()}
    run.rejected, run.accepted_by = verdicts(before, after)
    return run


# --- Through the sandbox on the real node (`kube="real"`) -------------------------------


def ready_endpoints(slices: Iterable[Mapping[str, Any]]) -> int:
    """How many ready endpoints the EndpointSlices of a Service hold."""
    return sum(
        1
        for found in slices
        for endpoint in found.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
    )


async def receiver_metrics_urls(api: KubeApi, scenario: Scenario) -> dict[str, str]:
    """Each ready receiver Pod -> its `/metrics`, at its Pod IP."""
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(scenario.name).items())
    pods = await api.list("pods", scenario.namespace, label_selector=selector)
    resource = {"metadata": {"name": scenario.name, "namespace": scenario.namespace}}
    return ready_pod_urls(resource, pods, "/metrics")


def example(sandbox: Sandbox, name: str, revocation: str, replicas: int) -> str:
    document = yaml.safe_load(sandbox.render_example(name))
    spec = document["spec"]
    spec["rotation"] = {**(spec.get("rotation") or {}), "revocation": revocation}
    spec["receiver"]["replicas"] = replicas
    return str(yaml.safe_dump(document, sort_keys=False))


async def wait_replicas(api: KubeApi, scenario: Scenario, replicas: int, within: float) -> None:
    """Until `replicas` receiver Pods are ready and all of them behind its Service."""
    selector = f"{SERVICE_NAME_LABEL}={scenario.receiver}"

    async def spread() -> bool:
        pods = await receiver_metrics_urls(api, scenario)
        slices = await api.list(ENDPOINT_SLICES, scenario.namespace, label_selector=selector)
        return len(pods) == replicas and ready_endpoints(slices) == replicas

    await poll(spread, within=within, what=f"{replicas} ready receiver Pods behind one Service")


@dataclass
class ScenarioRig:
    """The scenario's GeminiWebhook on the real node, its receiver Pods read at their Pod
    IPs from the host (the sandbox routes the Pod range to the node and puts no
    NetworkPolicy on them); the sample consumer is the receiver's target."""

    scenario: Scenario
    api: KubeApi

    async def replicas(self) -> dict[str, str]:
        return await receiver_metrics_urls(self.api, self.scenario)

    async def scrape(self, url: str) -> Samples:
        return await scrape(url)

    async def fire(self) -> list[str]:
        return await self.scenario._fire(EVENT_TYPE)

    async def request_rotation(self) -> None:
        await self.scenario.request_rotation()

    async def last_rotation_time(self) -> str | None:
        status = ((await self.scenario.resource()) or {}).get("status") or {}
        return status.get("lastRotationTime")

    async def newest_secret_created(self) -> float | None:
        _, held = await self.scenario._held_secrets()
        if held is None or not held.secrets or held.secrets[0].created_at is None:
            return None
        return held.secrets[0].created_at.timestamp()

    async def arrived(self, ids: list[str], within: float) -> list[str]:
        await self.scenario._arrivals(ids, within, "events sent during the rotation")
        _, consumer = self.scenario._need_events()
        return [a.webhook_id for a in consumer.arrivals if a.webhook_id is not None]

    async def deliveries(self) -> list[dict[str, Any]]:
        control, _ = self.scenario._need_events()
        return await asyncio.to_thread(control.deliveries, webhook_id=self.scenario.webhook_id)


async def rotate_under_traffic(
    scenario: Scenario, api: KubeApi, *, revocation: str, replicas: int, **timing: float
) -> RotationRun:
    """`measure_rotation` through the sandbox (`timing`: its rate, lead, tail, within),
    the consumer's echo silenced meanwhile."""
    _, consumer = scenario._need_events()
    echo, consumer.echo = consumer.echo, None
    try:
        rig = ScenarioRig(scenario, api)
        return await measure_rotation(rig, revocation=revocation, replicas=replicas, **timing)
    finally:
        consumer.echo = echo


async def set_revocation(scenario: Scenario, revocation: str) -> None:
    patch = json.dumps({"spec": {"rotation": {"revocation": revocation}}})
    name = f"geminiwebhook/{scenario.name}"
    await scenario.kubectl("patch", name, "-n", scenario.namespace, "--type=merge", "-p", patch)
