"""Issue 24 on the real node: the chart's operator Deployment — 3 replicas electing a leader
by Lease — rolled (`helm upgrade` changing the Pod template) under load, as a cluster admin
would roll it; then its leader's container killed from the host; then stopped (SIGSTOP)
for twice the Lease and resumed; then its Pod cut from the API server by an nftables rule
in its network namespace, the WebhookService still in reach, and healed.

The load: 20 GeminiWebhooks, 15 rotating every 30 s (rotations fall due during the rollout),
5 rotating only when asked (each asked once while the rollout runs), 2 of them delivering
through a receiver to a sink, the others straight to it; the emulator (a Pod, the Gemini
API) fires an event to all of them every 3 s.

What each Pod wrote is counted without a proxy: the API server's audit log (the real-node
fixture turns it on) names the Pod of every write, from the ServiceAccount token the kubelet
projected into it (`user.extra["authentication.kubernetes.io/pod-name"]`, Kubernetes 1.30+);
the emulator records every WebhookService call by the caller's Pod IP. From those:
at most one replica writes at any instant, and only while it holds a Lease it renewed less
than the renew deadline ago; the Lease changes hands only when released or expired; no
rotation is done twice; every resource keeps exactly one remote webhook and a Secret
holding a secret the emulator accepts; every delivery is delivered and verifies.
The figures (takeover, writes per Pod in time order, double actions) are printed.

Last, in the same world, issue 22 §4: a rotation under ~50 events/s through a receiver of 3
Pods (Grace, then Immediate), measured by `gemini_webhooks.sandbox.rotation_run` as on the
process node (bench/receiver/rotation.py); its figures are printed."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from gemini_webhook_operator import receiver_names
from gemini_webhook_operator.leader import JITTER
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import (
    KNOWN,
    SigningSecrets,
    decode_data,
    remote_identity,
)
from gemini_webhooks.controlplane import nodeconfig
from gemini_webhooks.emulator.control import AsyncControlClient
from gemini_webhooks.sandbox import rotation_run
from gemini_webhooks.sandbox.metric_samples import Samples, parse
from gemini_webhooks.sandbox.rotation_run import RotationRun
from gemini_webhooks.sandbox.steps import StepFailed, poll
from tests.chart.rendering import CHART_DIR
from tests.chart.test_real_install import (
    API_KEY,
    DEPLOYMENT,
    EMULATOR,
    EMULATOR_LABELS,
    EMULATOR_PORT,
    RELEASE,
    RELEASE_NAMESPACE,
    RESTRICTED,
    TAG,
    TEAM,
    Install,
    _pod,
    _service,
    emulator_objects,
)
from tests.fixtures.real_node import (
    Cluster,
    NodeNetwork,
    main_process,
    pod_processes,
    wait_for,
)
from tests.operator.test_leader_election import _verifies

pytestmark = [pytest.mark.real_component, pytest.mark.late_build, pytest.mark.timeout(900)]

RESOURCES, REQUESTED, RECEIVED = 20, 5, 2
ROTATION = 30.0  # seconds between scheduled rotations
DRIFT = 5  # seconds: how soon a due rotation is noticed (the chart's operator.driftInterval)
TWICE_WITHIN = 5.0  # two rotations of one webhook this close: one was done twice
FIRE_EVERY = 3.0
LEASE = {"leaseDuration": 15, "renewDeadline": 10, "retryPeriod": 2}  # the chart's defaults
OPERATOR_USER = f"system:serviceaccount:{RELEASE_NAMESPACE}:{DEPLOYMENT}"
POD_NAME = "authentication.kubernetes.io/pod-name"
REMOTE_WRITES = {"create", "update", "delete", "rotateSigningSecret"}
SINK, SINK_PORT = "ha-sink", 8080
SINK_URL = f"http://{SINK}.{TEAM}.svc.cluster.local:{SINK_PORT}"
SINK_SERVER = f"""\
import http.server, json, threading
lock = threading.Lock()  # one line per request, whole, from concurrent handlers
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {{k.lower(): v for k, v in self.headers.items()}}
        seen = {{"path": self.path, "headers": headers, "body": body.decode()}}
        with lock:
            print("EVENT " + json.dumps(seen), flush=True)
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("", {SINK_PORT}), Sink).serve_forever()
"""
VALUES = {
    "image": {"pullPolicy": "Never"},
    "replicaCount": 3,
    "leaderElection": LEASE,
    "operator": {
        "apiBaseUrl": f"http://{EMULATOR}.{RELEASE_NAMESPACE}.svc.cluster.local:{EMULATOR_PORT}",
        "driftInterval": DRIFT,
    },
    "networkPolicy": {
        "extraEgress": [
            {
                "to": [{"podSelector": {"matchLabels": EMULATOR_LABELS}}],
                "ports": [{"protocol": "TCP", "port": EMULATOR_PORT}],
            }
        ]
    },
}


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- What the observers saw, as plain data; the rules below are pure -------------------


@dataclass(frozen=True)
class Write:
    at: float  # the API server's receipt (epoch seconds)
    pod: str
    verb: str
    what: str  # resource[/subresource] namespace/name
    code: int


@dataclass(frozen=True)
class LeaseWrite:
    at: float
    pod: str
    holder: str  # "" once released


def operator_writes(events: list[dict[str, Any]]) -> tuple[list[Write], list[LeaseWrite]]:
    """The operator Pods' writes from the audit log: the Lease's (successful ones, with the
    holder they wrote) and all others (attempts included). Every event must name its Pod."""
    writes, leases = [], []
    for event in events:
        user = event.get("user") or {}
        if user.get("username") != OPERATOR_USER or event.get("stage") != "ResponseComplete":
            continue
        pods = (user.get("extra") or {}).get(POD_NAME)
        assert pods, f"an operator write without its Pod in the token's extra: {event}"
        at, pod = parse_time(event["requestReceivedTimestamp"]), pods[0]
        ref = event.get("objectRef") or {}
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        if ref.get("resource") == "leases" and ref.get("name") == DEPLOYMENT:
            if code < 300:
                spec = (event.get("requestObject") or {}).get("spec") or {}
                leases.append(LeaseWrite(at, pod, spec.get("holderIdentity") or ""))
            continue
        resource = "/".join(filter(None, [ref.get("resource"), ref.get("subresource")]))
        what = f"{resource} {ref.get('namespace', '')}/{ref.get('name', '')}"
        writes.append(Write(at, pod, event["verb"], what, code))
    return sorted(writes, key=lambda w: w.at), sorted(leases, key=lambda w: w.at)


def holder_at(leases: list[LeaseWrite], at: float) -> LeaseWrite | None:
    """The Lease as its last write before `at` left it."""
    before = [w for w in leases if w.at <= at]
    return before[-1] if before else None


def unfenced(writes: list[Write], leases: list[LeaseWrite], deadline: float) -> list[str]:
    """Writes made by a Pod that did not hold the Lease, or had not renewed it within the
    renew deadline, when the write reached the API server."""
    wrong = []
    for write in writes:
        lease = holder_at(leases, write.at)
        if lease is None or lease.holder != write.pod or write.at - lease.at > deadline:
            wrong.append(f"{write.pod} {write.verb} {write.what} at {write.at:.3f} ({lease})")
    return wrong


def takeovers(leases: list[LeaseWrite], duration: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Each change of holder: from whom, to whom, and how: after a release (seconds from
    it) or after expiry, which may not come before `duration` past the last renewal."""
    changes, wrong = [], []
    for before, after in itertools.pairwise(leases):
        if after.holder in ("", before.holder):
            continue
        if after.pod != after.holder:
            wrong.append(f"{after.pod} wrote {after.holder} into the Lease")
        released = before.holder == ""
        gap = after.at - before.at
        changes.append(
            {
                "from": before.pod,
                "to": after.holder,
                "released": released,
                "after": gap,
                "at": after.at,
            }
        )
        if not released and gap < duration:
            wrong.append(f"{after.holder} took the Lease {gap:.1f}s after {before.holder} renewed")
    return changes, wrong


def turns(stamped: list[tuple[float, str]]) -> list[str]:
    """The writers in turn (consecutive writes of one as one turn): with one writer at any
    instant, none appears twice."""
    return [name for name, _ in itertools.groupby(name for _, name in sorted(stamped))]


def double_rotations(
    rotations: dict[str, list[float]], requested: set[str], expected: dict[str, int]
) -> list[str]:
    """Rotations done twice: a requested webhook rotated other than as often as asked, a
    scheduled one twice within TWICE_WITHIN seconds."""
    wrong = [
        f"{w} rotated {len(rotations.get(w, []))} times, asked {expected[w]}"
        for w in requested
        if len(rotations.get(w, [])) != expected[w]
    ]
    for webhook, times in rotations.items():
        for a, b in itertools.pairwise(sorted(times)):
            if webhook not in requested and b - a < TWICE_WITHIN:
                wrong.append(f"{webhook} rotated twice {b - a:.2f}s apart")
    return wrong


# --- The world on the node -------------------------------------------------------------


def resource(name: str, *, requested: bool, received: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "events": ["batch.succeeded"],
        "apiKeySecretRef": {"name": "gemini-api-key"},
    }
    if not requested:
        spec["rotation"] = {"interval": f"{ROTATION:.0f}s"}
    if received:
        emulator_peer = {
            "namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}
            },
            "podSelector": {"matchLabels": EMULATOR_LABELS},
        }
        target = {"service": {"name": SINK, "port": SINK_PORT, "path": f"/received/{name}"}}
        spec["receiver"] = {
            "enabled": True,
            "networkPolicy": {"publicFrom": [emulator_peer]},
            "defaultRoute": {"targets": [target]},
        }
    else:
        spec["url"] = f"{SINK_URL}/direct/{name}"
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": TEAM},
        "spec": spec,
    }


@dataclass
class World:
    install: Install
    names: list[str]
    requested: list[str]
    received: list[str]
    webhook_of: dict[str, str] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)  # rotations requested per resource
    pod_ips: dict[str, str] = field(default_factory=dict)  # IP -> operator Pod, ever seen
    began: float = field(default_factory=time.time)  # the module's world, not earlier ones
    fired: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def cluster(self) -> Cluster:
        return self.install.cluster

    def emulator_url(self) -> str:
        ip = self.cluster.get("service", "-n", RELEASE_NAMESPACE, EMULATOR)["spec"]["clusterIP"]
        return f"http://{ip}:{EMULATOR_PORT}"

    def emulator_get(self, path: str) -> Any:
        request = urllib.request.Request(
            f"{self.emulator_url()}{path}", headers={"x-goog-api-key": API_KEY}
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def note_pods(self) -> None:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
        for pod in self.cluster.get("pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"]:
            ip = (pod.get("status") or {}).get("podIP")
            if ip:
                self.pod_ips[ip] = pod["metadata"]["name"]

    def _run(self) -> None:
        emulator = self.install.emulator()
        while not self._stop.is_set():
            try:
                emulator.fire("batch.succeeded")
                self.fired += 1
                self.note_pods()
            except Exception as error:  # reported by stop(), never swallowed
                self.failures.append(repr(error))
            self._stop.wait(FIRE_EVERY)

    def start_load(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()

    def stop_load(self) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(60)
        assert not self.failures, self.failures

    def request_rotation(self, name: str) -> None:
        self.cluster.kubectl(
            "-n", TEAM, "annotate", crd.PLURAL, name, f"{crd.ANNOTATION_ROTATE}=now", "--overwrite"
        )
        self.asked[name] = self.asked.get(name, 0) + 1

    def rotated_on_request(self, name: str) -> bool:
        found = self.install.webhook(name)
        annotations = found["metadata"].get("annotations") or {}
        reason = (found.get("status") or {}).get("lastRotationReason")
        return crd.ANNOTATION_ROTATE not in annotations and reason == "RequestedByAnnotation"

    def leader(self) -> str:
        lease = self.cluster.get("lease", "-n", RELEASE_NAMESPACE, DEPLOYMENT)
        return str(lease["spec"].get("holderIdentity") or "")

    def wind_down(self, asked: list[str], start: float, tail: float) -> tuple[str, list[str]]:
        """The end of a scenario: the rotations `asked` done, `tail` seconds more of load,
        then everything since `start` checked (`check`)."""
        for name in asked:
            wait_for(
                f"{name} rotated on request", functools.partial(self.rotated_on_request, name), 120
            )
        time.sleep(tail)
        self.stop_load()
        return self.check(start)

    def operator_writes(self) -> tuple[list[Write], list[LeaseWrite]]:
        writes, leases = operator_writes(self.cluster.audit_events())
        return (
            [w for w in writes if w.at >= self.began],
            [w for w in leases if w.at >= self.began],
        )

    def calls(self) -> list[tuple[float, str, dict[str, Any]]]:
        """Every WebhookService call the emulator recorded: when, from which Pod (its
        address where no operator Pod had it), and the call."""
        self.note_pods()
        calls = self.emulator_get("/emulator/v1/calls")["calls"]
        return [
            (parse_time(c["time"]), self.pod_ips.get(c["source"], c["source"]), c) for c in calls
        ]

    def settled_deliveries(self) -> list[dict[str, Any]]:
        def settled() -> list[dict[str, Any]] | None:
            found = self.emulator_get("/emulator/v1/deliveries")["deliveries"]
            return None if any(d["state"] == "pending" for d in found) else found

        result: list[dict[str, Any]] = wait_for("the deliveries settled", settled, 120, every=2)
        return result

    def sink_events(self) -> list[dict[str, Any]]:
        log = self.cluster.kubectl("logs", "-n", TEAM, SINK, timeout=120)
        return [json.loads(line[6:]) for line in log.splitlines() if line.startswith("EVENT ")]

    def check(self, since: float) -> tuple[str, list[str]]:
        """Everything observed from `since` (epoch seconds) on, checked: the figures, and
        what went wrong."""
        writes, leases = self.operator_writes()
        deadline, duration = float(LEASE["renewDeadline"]), float(LEASE["leaseDuration"])
        wrong = unfenced(writes, leases, deadline)
        changes, bad_changes = takeovers(leases, duration)
        wrong += bad_changes
        remote = [(at, pod, c) for at, pod, c in self.calls() if c["operation"] in REMOTE_WRITES]
        strangers = sorted({pod for _, pod, _ in remote if pod not in self.pod_ips.values()})
        if strangers:
            wrong.append(f"WebhookService writes from outside the operator Pods: {strangers}")
        # Each Pod's remote writes while it held the Lease (one host clock: the emulator's
        # Pod and the API server share it).
        for at, pod, call in remote:
            lease = holder_at(leases, at)
            if lease is None or lease.holder != pod or at - lease.at > deadline:
                wrong.append(f"{pod} {call['operation']} {call['webhook_id']} unfenced ({lease})")
        # Within the window: a Pod may lead again in a later term, after another did.
        writers = turns(
            [(w.at, w.pod) for w in writes if w.at >= since]
            + [(a, p) for a, p, _ in remote if a >= since]
        )
        if len(set(writers)) != len(writers):
            wrong.append(f"a Pod wrote again after another had: {' > '.join(writers)}")

        rotations: dict[str, list[float]] = {}
        creates = 0
        for at, _who, call in remote:
            if call["status_code"] != 200:
                continue
            creates += call["operation"] == "create"
            if call["operation"] == "rotateSigningSecret":
                rotations.setdefault(call["webhook_id"], []).append(at)
        requested = {self.webhook_of[n] for n in self.requested}
        expected = {self.webhook_of[n]: self.asked.get(n, 0) for n in self.requested}
        doubles = double_rotations(rotations, requested, expected)
        wrong += doubles
        # How late scheduled rotations came: each one's gap from the one before, past the
        # interval (due the interval after the last; noticed within the drift interval).
        late = max(
            (
                b - a - ROTATION
                for webhook, times in rotations.items()
                if webhook not in requested
                for a, b in itertools.pairwise(sorted(times))
                if b >= since
            ),
            default=0.0,
        )
        if creates != len(self.names):
            wrong.append(f"{creates} remote webhooks created for {len(self.names)} resources")

        # The cluster first, the remote after: scheduled rotations go on while this reads,
        # and a secret the Secret held stays listed for the grace period (24 h), whereas one
        # rotated in between the two reads would be missing from an earlier listing.
        hooks = {
            h["metadata"]["name"]: h for h in self.cluster.get(crd.PLURAL, "-n", TEAM)["items"]
        }
        secrets = {
            s["metadata"]["name"]: s for s in self.cluster.get("secrets", "-n", TEAM)["items"]
        }
        listed = self.emulator_get("/v1/webhooks?page_size=1000")["webhooks"]
        reported = {w["id"]: [s["truncated_secret"] for s in w["signing_secrets"]] for w in listed}
        if sorted(reported) != sorted(self.webhook_of.values()):
            wrong.append("not exactly one remote webhook per resource")
        held_by: dict[str, list[str]] = {}
        for name in self.names:
            hook = hooks[name]
            if hook["status"].get("webhookId") != self.webhook_of[name]:
                wrong.append(f"{name}: its webhook changed")
            secret = secrets[hook["status"]["signingSecretName"]]
            held = decode_data(secret.get("data") or {})
            held_by[name] = [s.secret for s in held.secrets]
            known = reported.get(self.webhook_of[name], [])
            if held.current is None or remote_identity(held.current.secret, known) != KNOWN:
                wrong.append(f"{name}: its Secret holds no secret the emulator accepts")

        deliveries = self.settled_deliveries()
        undelivered = [d["id"] for d in deliveries if d["state"] != "delivered"]
        refused = sum(
            1 for d in deliveries for a in d["attempts"] if a.get("status_code") in (401, 403)
        )
        failed = 0
        sink = self.sink_events()
        for seen in sink:
            if int(seen["headers"].get("webhook-timestamp") or 0) < since:
                continue  # verified when it was new (standardwebhooks' tolerance: 5 min)
            kind, name = seen["path"].strip("/").split("/")
            if kind == "direct" and not any(
                _verifies(s, seen["body"].encode(), seen["headers"]) for s in held_by[name]
            ):
                failed += 1
        if undelivered or failed or refused:
            wrong.append(
                f"deliveries: {len(undelivered)} not delivered, {refused} attempts refused by "
                f"a receiver, {failed} at the sink failing verification"
            )

        per_pod: dict[str, list[float]] = {}
        stamped = [(w.at, w.pod) for w in writes] + [(a, p) for a, p, _ in remote]
        for at, pod in sorted(s for s in stamped if s[0] >= since):
            per_pod.setdefault(pod, []).append(at)
        kube_by = {p: sum(1 for w in writes if w.pod == p and w.at >= since) for p in per_pod}
        remote_by = {p: sum(1 for a, q, _ in remote if q == p and a >= since) for p in per_pod}
        order = ", ".join(
            f"{p} {kube_by[p]}+{remote_by[p]} [{ts[0] - since:+.1f}s..{ts[-1] - since:+.1f}s]"
            for p, ts in sorted(per_pod.items(), key=lambda item: item[1][0])
        )
        # Each handover in the window: bounded, and how soon the new holder wrote.
        retry = float(LEASE["retryPeriod"])
        handed = []
        for change in (c for c in changes if c["at"] >= since):
            bound = 1.2 * retry + (0 if change["released"] else duration) + 2.0  # + load
            if change["after"] > bound:
                wrong.append(f"a takeover {change['after']:.1f}s after the Lease was free")
            wrote = [at for at, pod in stamped if pod == change["to"] and at >= change["at"]]
            first = f"{min(wrote) - change['at']:.1f}s" if wrote else "never"
            handed.append(
                f"{change['from']} -> {change['to']} at {change['at'] - since:+.1f}s, "
                f"{change['after']:.1f}s after the Lease was "
                f"{'released' if change['released'] else 'last renewed'}, first write {first}"
                f" after"
            )
        figures = (
            f"writes per Pod in time order (Kubernetes + WebhookService; relative to the "
            f"start): {order} | Lease changes: {'; '.join(handed) or 'none'} | rotations "
            f"{sum(len(t) for t in rotations.values())}, double actions {len(doubles)}, "
            f"a scheduled one at most {late:.1f}s past due (drift interval {DRIFT}s) | "
            f"deliveries {len(deliveries)} ({self.fired} events fired), {len(sink)} at the "
            f"sink, {failed} failing verification, {len(undelivered)} not delivered"
        )
        return figures, wrong


@pytest.fixture(scope="module")
def world(real_node: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    install = Install(real_node, tmp_path_factory.mktemp("real-rollout"))
    install.values.write_text(yaml.safe_dump(VALUES))
    names = [f"ha-{i:02d}" for i in range(RESOURCES)]
    built = World(install, names, names[:REQUESTED], names[-RECEIVED:])
    try:
        for namespace in (RELEASE_NAMESPACE, TEAM):
            real_node.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": namespace, "labels": RESTRICTED},
                }
            )
            wait_for(
                f"the default ServiceAccount in {namespace}",
                functools.partial(real_node.kubectl, "get", "sa", "-n", namespace, "-o", "name"),
                60,
            )
        image = f"{nodeconfig.IMAGE_REPOSITORIES['product']}:{TAG}"
        labels = {"app": SINK}
        real_node.apply(
            *emulator_objects(),
            _pod(SINK, TEAM, image, labels, SINK_PORT, command=["python", "-c", SINK_SERVER]),
            _service(SINK, TEAM, labels, SINK_PORT),
        )
        real_node.kubectl("apply", "-f", str(CHART_DIR.parents[1] / "crds"))
        real_node.kubectl(
            "-n",
            TEAM,
            "create",
            "secret",
            "generic",
            "gemini-api-key",
            f"--from-literal=api-key={API_KEY}",
        )
        install.helm(
            "install",
            RELEASE,
            str(CHART_DIR),
            "--set",
            f"image.repository={nodeconfig.IMAGE_REPOSITORIES['product']}",
            "-f",
            str(install.values),
        )
        wait_for("the emulator Ready", lambda: install.ready_pod(RELEASE_NAMESPACE, EMULATOR), 120)
        wait_for("the sink Ready", lambda: install.ready_pod(TEAM, SINK), 120)
        install.waiting(
            240, "-n", RELEASE_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}"
        )
        real_node.apply(
            *(
                resource(n, requested=n in built.requested, received=n in built.received)
                for n in names
            )
        )
        install.waiting(240, "-n", TEAM, "wait", "--for=condition=Ready", crd.PLURAL, "--all")
        built.webhook_of = {n: install.webhook(n)["status"]["webhookId"] for n in names}
        for name in built.received:
            deployment = receiver_names.receiver_name(name)
            install.waiting(180, "-n", TEAM, "rollout", "status", f"deployment/{deployment}")
        yield built
    finally:
        with contextlib.suppress(AssertionError):
            built.stop_load() if built._thread else None
        install.cleanup()


def test_a_rolling_update_under_load_hands_over_once_and_does_nothing_twice(
    world: World,
) -> None:
    """`helm upgrade` changing the Pod template: the Deployment replaces the 3 replicas one
    by one (maxSurge 1, maxUnavailable 0), a rotation requested at each step."""
    install = world.install
    before = {p["metadata"]["name"] for p in install.operator_pods()}
    world.start_load()
    start = time.time()
    time.sleep(FIRE_EVERY * 2)  # deliveries flowing before anything changes
    upgraded = time.time()
    install.helm(
        "upgrade",
        RELEASE,
        str(CHART_DIR),
        "--reuse-values",
        "--set-string",
        f"podAnnotations.gwo-test/rolled={int(upgraded)}",
    )
    for name in world.requested:  # one request every few seconds, while the Pods turn over
        world.request_rotation(name)
        time.sleep(4)
    install.waiting(300, "-n", RELEASE_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}")
    rolled = time.time() - upgraded
    after = {p["metadata"]["name"] for p in install.operator_pods()}
    assert len(after) == 3 and not after & before, (before, after)
    wait_for("a new replica holds the Lease", lambda: world.leader() in after, 120, every=1)
    # Due rotations under the new leader too.
    figures, wrong = world.wind_down(world.requested, start, ROTATION / 2)
    figures = (
        f"HA figures (real node), rolling update of the chart's Deployment: 3 replicas, "
        f"{RESOURCES} resources ({RESOURCES - REQUESTED} rotating every {ROTATION:.0f}s, "
        f"{REQUESTED} on request, {RECEIVED} through receivers), rollout complete after "
        f"{rolled:.1f}s | {figures}"
    )
    print(f"\n{figures}")
    assert wrong == [], f"{wrong}\n{figures}"


def sandbox_process(pod_uid: str) -> int:
    """The host PID of the Pod's sandbox (pause): it holds the Pod's network namespace
    while the container restarts."""
    (pid,) = [pid for pid, cmd in pod_processes(pod_uid).items() if cmd.endswith(b"/pause")]
    return pid


def leading_container(world: World) -> tuple[dict[str, Any], int]:
    """The Pod that holds the Lease, and its container's main process on the host."""
    leader = world.leader()
    (pod,) = [p for p in world.install.operator_pods() if p["metadata"]["name"] == leader]
    return pod, main_process(pod)


def pod_writes(world: World, pod: str) -> list[tuple[float, str]]:
    """Every write the Pod made since the module began, in time order: each the API server
    received from it (failed attempts and the Lease's included) and each WebhookService
    write the emulator received from its address."""
    found = []
    for event in world.cluster.audit_events():
        user = event.get("user") or {}
        if (user.get("extra") or {}).get(POD_NAME) != [pod]:
            continue
        if event.get("stage") != "ResponseComplete":
            continue
        at = parse_time(event["requestReceivedTimestamp"])
        ref = event.get("objectRef") or {}
        found.append((at, f"{event['verb']} {ref.get('resource')} {ref.get('name')}"))
    found += [
        (at, f"WebhookService {call['operation']} {call['webhook_id']}")
        for at, who, call in world.calls()
        if who == pod and call["operation"] in REMOTE_WRITES
    ]
    return sorted(w for w in found if w[0] >= world.began)


def container_status(world: World, pod: str, namespace: str = RELEASE_NAMESPACE) -> dict[str, Any]:
    found = world.cluster.get("pod", "-n", namespace, pod)
    status: dict[str, Any] = found["status"]["containerStatuses"][0]
    return status


BURST = 0.2  # seconds between events while a receiver container is killed: 5 a second


def test_sigkill_of_a_receiver_container_mid_stream_loses_no_acknowledged_event(
    world: World,
) -> None:
    """kill -9 of a receiver container's main process from the host while events stream in
    (5 a second, each to every webhook): the kubelet restarts it; every delivery the
    emulator saw answered 2xx by a receiver is at the sink (inline mode forwards before it
    answers), and every delivery ends delivered (Gemini's retries reach the other replica
    or the restarted one)."""
    name = world.received[0]
    selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(name).items())
    pods = [
        p
        for p in world.cluster.get("pods", "-n", TEAM, "-l", selector)["items"]
        if "deletionTimestamp" not in p["metadata"]
    ]
    assert pods, f"no receiver Pod of {name}"
    pod = pods[0]
    victim = pod["metadata"]["name"]
    restarts = container_status(world, victim, TEAM)["restartCount"]
    main = main_process(pod)
    emulator = world.install.emulator()
    fired: list[str] = []

    def burst(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            fired.append(emulator.fire("batch.succeeded")["event_id"])
            time.sleep(BURST)

    start = time.time()
    burst(2.0)
    os.kill(main, signal.SIGKILL)
    killed = time.time()
    burst(4.0)

    def restarted() -> dict[str, Any] | None:
        status = container_status(world, victim, TEAM)
        return status if status["restartCount"] > restarts and status.get("ready") else None

    wait_for(f"{victim} restarted and Ready", restarted, 120, every=1)
    back = time.time() - killed
    burst(2.0)
    figures, wrong = world.check(start)
    ours = {world.webhook_of[n]: n for n in world.received}
    deliveries = [d for d in world.settled_deliveries() if d.get("webhook_id") in ours]
    at_sink = {(seen["path"], seen["headers"].get("webhook-id")) for seen in world.sink_events()}
    acknowledged = [d for d in deliveries if d["state"] == "delivered"]
    lost = [
        d["id"]
        for d in acknowledged
        if (f"/received/{ours[d['webhook_id']]}", d["id"]) not in at_sink
    ]
    burst_ids = set(fired)
    retried = sum(1 for d in deliveries if d["event_id"] in burst_ids and len(d["attempts"]) > 1)
    figures = (
        f"receiver SIGKILL (real node): {victim} pid {main} killed mid-stream, back Ready "
        f"{back:.1f}s after; {len(fired)} events fired, {len(deliveries)} deliveries to the "
        f"receivers ({retried} of this burst's retried), {len(acknowledged)} acknowledged, "
        f"{len(lost)} of those missing at the sink | {figures}"
    )
    print(f"\n{figures}")
    assert not lost, f"acknowledged but not at the sink: {lost}\n{figures}"
    assert len(acknowledged) == len(deliveries), figures
    assert wrong == [], f"{wrong}\n{figures}"


def test_sigkill_of_the_leaders_container_hands_over_once_and_does_nothing_twice(
    world: World,
) -> None:
    """kill -9 of the leading container's main process from the host: the kubelet restarts
    it, the Lease goes to whichever replica acquires first (the restarted one may, under its
    own name); nobody acts twice, and the first write after the kill comes within the lease
    duration and retry period (plus kopf's start)."""
    world.start_load()
    start = time.time()
    time.sleep(FIRE_EVERY * 2)
    pod, main = leading_container(world)
    leader = pod["metadata"]["name"]
    killed = time.time()
    os.kill(main, signal.SIGKILL)
    for name in world.requested[:2]:
        world.request_rotation(name)
    figures, wrong = world.wind_down(world.requested[:2], start, ROTATION / 2)
    writes, leases = world.operator_writes()
    acquired = [w for w in leases if w.at > killed and w.holder]
    first_write = [w.at - killed for w in writes if w.at > killed]
    takeover = acquired[0].at - killed if acquired else float("inf")
    first = first_write[0] if first_write else float("inf")
    restarts = container_status(world, leader)["restartCount"]
    bound = LEASE["leaseDuration"] + 1.2 * LEASE["retryPeriod"]
    figures = (
        f"HA figures (real node), SIGKILL of the leader's container ({leader}, pid {main}, "
        f"restarted {restarts}x by the kubelet): Lease acquired {takeover:.1f}s after the "
        f"kill by {acquired[0].holder if acquired else 'nobody'}, first write {first:.1f}s "
        f"after it (lease + retry = {bound:.1f}s) | {figures}"
    )
    print(f"\n{figures}")
    assert wrong == [], f"{wrong}\n{figures}"
    assert takeover <= bound + 2.0, figures
    assert first <= bound + 20.0, figures  # + kopf starting and listing on the new leader


def liveness_failure_window() -> float:
    """How long the chart's liveness probe takes, at the least, to have the kubelet restart a
    container that stopped answering: its failures come a period apart, and the first may
    be under way already when the container stops."""
    probe = yaml.safe_load((CHART_DIR / "values.yaml").read_text())["livenessProbe"]
    return float((probe["failureThreshold"] - 1) * probe["periodSeconds"] + probe["timeoutSeconds"])


TAIL = LEASE["retryPeriod"]  # after the scenario: the old leader keeps standing by


def lost_its_lease_and_exited(world: World, pod: str, restarts: int) -> str:
    """Wait for the Pod's container to have exited on losing the Lease (LeadershipLost: exit
    1 and its log line, not the kubelet's kill) and to stand by again (Ready: the standby's
    health answers); its last words."""

    def restarted() -> dict[str, Any] | None:
        status = container_status(world, pod)
        return status if status["restartCount"] > restarts and status.get("ready") else None

    status = wait_for(f"{pod} restarted and standing by", restarted, 120, every=1)
    assert status["restartCount"] == restarts + 1, status
    ended = status["lastState"]["terminated"]
    log = world.cluster.kubectl("logs", "-n", RELEASE_NAMESPACE, pod, "--previous", timeout=60)
    lost = [line for line in log.splitlines() if "lost the leader Lease" in line]
    assert ended["exitCode"] == 1 and lost, (ended, log[-3000:])
    return lost[-1]


def test_a_leader_stopped_past_its_lease_writes_nothing_when_it_resumes_and_then_follows(
    world: World,
) -> None:
    """SIGSTOP of the leading container's main process from the host (a long GC pause, a
    frozen VM) past the Lease, rotations requested during the pause, then SIGCONT: a
    follower took the Lease and did the rotations meanwhile; the resumed process finds its
    fence expired, writes nothing (not at the API server, not at the WebhookService), exits
    on LeadershipLost, and its restarted container stands by.

    The pause lasts until then, and ends well inside the liveness probe's failure window
    (45 s with the chart's defaults), so that the process resumes rather than being
    restarted by the kubelet, and the resumed process is what is judged."""
    window = liveness_failure_window()
    shortest, longest = LEASE["leaseDuration"] + JITTER * LEASE["retryPeriod"], window - 10
    assert shortest + 5 < longest
    world.start_load()
    start = time.time()
    time.sleep(FIRE_EVERY)
    pod, main = leading_container(world)
    leader = pod["metadata"]["name"]
    restarts = container_status(world, leader)["restartCount"]
    asked = world.requested[2:4]
    stopped = time.time()
    os.kill(main, signal.SIGSTOP)
    try:
        for name in asked:
            world.request_rotation(name)
        successor = wait_for(
            "another replica holds the Lease",
            lambda: (holder := world.leader()) not in ("", leader) and holder,
            longest,
            every=1,
        )
        done_in_pause = False
        while time.time() < stopped + longest and not done_in_pause:
            done_in_pause = all(world.rotated_on_request(name) for name in asked)
            time.sleep(0 if done_in_pause else 0.5)
        # Longer than the Lease in any case (its holder may renew just before the stop).
        time.sleep(max(0.0, stopped + shortest - time.time()))
    finally:
        os.kill(main, signal.SIGCONT)
    resumed = time.time()
    last_words = lost_its_lease_and_exited(world, leader, restarts)
    standing_by = time.time() - resumed
    mine = pod_writes(world, leader)
    after = [f"{at - resumed:+.2f}s {what}" for at, what in mine if at >= resumed]
    assert after == [], f"the resumed process wrote: {after}"  # before what two writers do
    figures, wrong = world.wind_down(asked, start, TAIL)
    mine = pod_writes(world, leader)
    before = [at for at, _ in mine if at < stopped]
    after = [f"{at - resumed:+.2f}s {what}" for at, what in mine if at >= resumed]
    _writes, leases = world.operator_writes()
    taken = [w for w in leases if w.at > stopped and w.holder == successor]
    figures = (
        f"HA figures (real node), SIGSTOP of the leader's container ({leader}, pid {main}) "
        f"for {resumed - stopped:.1f}s (Lease {LEASE['leaseDuration']}s; the liveness probe "
        f"restarts a stopped container no sooner than {window:.0f}s), {len(asked)} rotations "
        f"requested during it ({'done' if done_in_pause else 'not yet done'} by its end): "
        f"its last write {stopped - before[-1]:.1f}s before the stop; {successor} took the "
        f"Lease {taken[0].at - stopped:.1f}s after the stop; the resumed process wrote "
        f"{len(after)} times and exited ({last_words.strip()[-90:]!r}), its restarted "
        f"container standing by {standing_by:.1f}s after the resume | {figures}"
    )
    print(f"\n{figures}")
    assert after == [], f"{after}\n{figures}"
    assert wrong == [], f"{wrong}\n{figures}"
    assert world.leader() != leader, figures


PARTITION_TABLE = "gwo_partition"  # the nftables table of the partition (one of ours only)


def api_server_addresses(cluster: Cluster) -> list[tuple[str, int]]:
    """Where a Pod reaches the API server: the `kubernetes` Service's address (what the
    Pod connects to) and its endpoints' (what the node translates that into)."""
    service = cluster.get("service", "-n", "default", "kubernetes")["spec"]
    found = [(service["clusterIP"], int(port["port"])) for port in service["ports"]]
    endpoints = cluster.get("endpointslice", "-n", "default", "kubernetes")
    found += [
        (address, int(port["port"]))
        for endpoint in endpoints["endpoints"]
        for address in endpoint["addresses"]
        for port in endpoints["ports"]
    ]
    return found


def nft_in(pid: int, *args: str, stdin: str | None = None) -> str:
    """nft in the network namespace of a host process."""
    done = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "nft", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def cut_off(pid: int, addresses: list[tuple[str, int]]) -> Iterator[None]:
    """The network namespace of `pid` cut from `addresses` both ways (nothing sent to them,
    nothing taken from them: connections open hang, as in a partition), by a table of its
    own; removed on the way out whatever happened, and the namespace's ruleset shown as it
    was."""
    pairs = ", ".join(f"{ip} . {port}" for ip, port in addresses)
    ruleset = (
        f"table inet {PARTITION_TABLE} {{\n"
        f"  chain out {{ type filter hook output priority -300; "
        f"ip daddr . tcp dport {{ {pairs} }} drop; }}\n"
        f"  chain in {{ type filter hook input priority -300; "
        f"ip saddr . tcp sport {{ {pairs} }} drop; }}\n"
        f"}}\n"
    )
    before = nft_in(pid, "list", "ruleset")
    assert PARTITION_TABLE not in before, before
    nft_in(pid, "-f", "-", stdin=ruleset)
    try:
        yield
    finally:
        nft_in(pid, "delete", "table", "inet", PARTITION_TABLE)
        after = nft_in(pid, "list", "ruleset")
        assert after == before, f"the Pod's ruleset changed:\n{before}\n---\n{after}"


def test_a_leader_cut_from_the_api_server_stops_writing_in_time_and_rejoins_as_a_follower(
    world: World,
) -> None:
    """The leading Pod cut from the API server (an nftables rule in its network namespace,
    set from the host) while the WebhookService stays reachable, a rotation requested
    meanwhile: its last write (at the API server and at the emulator) comes within the
    renew deadline of the cut, another replica takes over within the lease duration and
    retry period, nothing is done twice; healed, its restarted container stands by."""
    world.start_load()
    start = time.time()
    time.sleep(FIRE_EVERY)
    pod, _main = leading_container(world)
    leader, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    restarts = container_status(world, leader)["restartCount"]
    api = api_server_addresses(world.cluster)
    emulator_ip = world.cluster.get("service", "-n", RELEASE_NAMESPACE, EMULATOR)["spec"][
        "clusterIP"
    ]
    asked = world.requested[4:] + world.requested[:1]
    deadline = float(LEASE["renewDeadline"])
    with cut_off(sandbox_process(uid), api):
        cut = time.time()
        for name in asked:
            world.request_rotation(name)
        # The dangerous half: the API server is out of reach, the WebhookService is not.
        reaches = functools.partial(world.cluster.connects, RELEASE_NAMESPACE, leader)
        assert not reaches(*api[0]) and reaches(emulator_ip, EMULATOR_PORT)
        successor = wait_for(
            "another replica holds the Lease",
            lambda: (holder := world.leader()) not in ("", leader) and holder,
            LEASE["leaseDuration"] + deadline + 10,
            every=1,
        )
        taken = time.time() - cut
        last_words = lost_its_lease_and_exited(world, leader, restarts)
        standing_by = time.time() - cut
    healed = time.time()
    figures, wrong = world.wind_down(asked, start, TAIL)
    mine = [(at, what) for at, what in pod_writes(world, leader) if at >= start]
    kube = [at - cut for at, what in mine if not what.startswith("WebhookService")]
    remote = [at - cut for at, what in mine if what.startswith("WebhookService")]
    late = [f"{at - cut:+.2f}s {what}" for at, what in mine if at - cut > deadline]

    def last(seen: list[float]) -> str:
        return f"{max(seen):+.1f}s from the cut" if seen else "none since the scenario began"

    figures = (
        f"HA figures (real node), partition of the leader's Pod ({leader}) from the API "
        f"server ({', '.join(f'{a}:{p}' for a, p in api)} dropped both ways in its network "
        f"namespace; the emulator reachable) for {healed - cut:.1f}s, {len(asked)} rotations "
        f"requested during it: its last write at the API server {last(kube)}, at the "
        f"emulator {last(remote)} (renew deadline {deadline:.0f}s); {successor} held the "
        f"Lease {taken:.1f}s after the cut (seen by polling); the cut process exited "
        f"({last_words.strip()[-90:]!r}), its restarted container standing by "
        f"{standing_by:.1f}s after the cut, and writing nothing once healed | {figures}"
    )
    print(f"\n{figures}")
    assert late == [], f"{late}\n{figures}"
    assert wrong == [], f"{wrong}\n{figures}"
    assert world.leader() != leader and not [at for at, _ in mine if at >= healed], figures


# --- Issue 22 §4: a rotation under ~50 events/s with 3 receiver replicas, as containers --

ROTATED, ROTATED_REPLICAS = "rotated", 3


def ready_receivers(cluster: Cluster, name: str) -> list[dict[str, Any]]:
    """The receiver Pods of `name` that are Ready and not going away."""
    selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(name).items())
    return [
        p
        for p in cluster.get("pods", "-n", TEAM, "-l", selector)["items"]
        if "deletionTimestamp" not in p["metadata"]
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    ]


def ready_endpoints(cluster: Cluster, service: str) -> int:
    """How many ready endpoints the Service's EndpointSlices list (what kube-proxy spreads
    connections over)."""
    slices = cluster.get(
        "endpointslices", "-n", TEAM, "-l", f"kubernetes.io/service-name={service}"
    )["items"]
    return sum(
        1
        for found in slices
        for endpoint in found.get("endpoints") or []
        if (endpoint.get("conditions") or {}).get("ready")
    )


def held_secrets(world: World) -> SigningSecrets:
    """What ROTATED's signing Secret holds."""
    name = world.install.webhook(ROTATED)["status"]["signingSecretName"]
    return decode_data(world.cluster.get("secret", "-n", TEAM, name).get("data") or {})


@dataclass
class NodeRig:
    """`rotation_run.Rig` on the real node: the emulator's control API (a Pod, through its
    ClusterIP), the receivers' `/metrics` from the node's network namespace (their
    NetworkPolicy admits the node, not the host), the sink's log for what arrived."""

    world: World
    network: NodeNetwork
    control: AsyncControlClient
    webhook_id: str
    since: str  # RFC 3339: the sink's log from here on

    async def replicas(self) -> dict[str, str]:
        pods = await asyncio.to_thread(ready_receivers, self.world.cluster, ROTATED)
        port = receiver_names.INTERNAL_PORT
        return {
            p["metadata"]["name"]: f"http://{p['status']['podIP']}:{port}/metrics" for p in pods
        }

    async def scrape(self, url: str) -> Samples:
        return parse(await self.network.get(url))

    async def fire(self) -> list[str]:
        return list((await self.control.fire(rotation_run.EVENT_TYPE))["deliveries"])

    async def request_rotation(self) -> None:
        # A value of its own each time: the previous run's may not be removed yet.
        requested = f"{crd.ANNOTATION_ROTATE}=requested-{time.time_ns()}"
        await asyncio.to_thread(
            self.world.cluster.kubectl,
            *("-n", TEAM, "annotate", crd.PLURAL, ROTATED, requested, "--overwrite"),
        )

    async def last_rotation_time(self) -> str | None:
        found = await asyncio.to_thread(self.world.install.webhook, ROTATED)
        return (found.get("status") or {}).get("lastRotationTime")

    async def newest_secret_created(self) -> float | None:
        held = await asyncio.to_thread(held_secrets, self.world)
        return held.secrets[0].created_at.timestamp() if held.secrets else None

    def _at_sink(self) -> list[str]:
        log = self.world.cluster.kubectl(
            "logs", "-n", TEAM, SINK, f"--since-time={self.since}", timeout=120
        )
        path = f"/received/{ROTATED}"
        return [
            seen["headers"].get("webhook-id", "")
            for seen in (json.loads(line[6:]) for line in log.splitlines() if line[:6] == "EVENT ")
            if seen["path"] == path
        ]

    async def arrived(self, ids: list[str], within: float) -> list[str]:
        wanted, found = set(ids), []

        async def all_there() -> bool:
            nonlocal found
            found = await asyncio.to_thread(self._at_sink)
            return wanted <= set(found)

        try:
            await poll(all_there, within=within, what="every event at the sink", every=1.0)
        except StepFailed:
            raise StepFailed(
                f"{len(wanted - set(found))} of {len(wanted)} events never reached the sink"
            ) from None
        return found

    async def deliveries(self) -> list[dict[str, Any]]:
        return await self.control.deliveries(webhook_id=self.webhook_id)


@pytest.fixture(scope="module")
def rotated(world: World) -> Iterator[tuple[World, NodeNetwork]]:
    """A GeminiWebhook whose receiver runs 3 replicas forwarding inline to the sink, on an
    event type none of the world's others subscribe to; Ready, with 3 ready Pods behind its
    Service's endpoints. Deleted afterwards."""
    found = resource(ROTATED, requested=True, received=True)
    found["spec"]["events"] = [rotation_run.EVENT_TYPE]
    found["spec"]["receiver"]["replicas"] = ROTATED_REPLICAS
    network = NodeNetwork(world.cluster)
    service = receiver_names.receiver_name(ROTATED)
    try:
        world.cluster.apply(found)
        world.install.waiting(
            180, "-n", TEAM, "wait", "--for=condition=Ready", f"{crd.PLURAL}/{ROTATED}"
        )
        wait_for(
            f"{ROTATED_REPLICAS} ready receivers behind the Service",
            lambda: (
                len(ready_receivers(world.cluster, ROTATED)) == ROTATED_REPLICAS
                and ready_endpoints(world.cluster, service) == ROTATED_REPLICAS
            ),
            180,
            every=1,
        )
        yield world, network
    finally:
        network.close()
        world.cluster.kubectl(
            "delete", "-n", TEAM, crd.PLURAL, ROTATED, "--ignore-not-found", timeout=120
        )


def rotate_on_the_node(world: World, network: NodeNetwork, revocation: str) -> RotationRun:
    """`rotation_run.measure_rotation` with the resource's revocation set to `revocation`."""
    patch = {"spec": {"rotation": {"revocation": revocation}}}
    world.cluster.kubectl(
        "-n", TEAM, "patch", crd.PLURAL, ROTATED, "--type=merge", "-p", json.dumps(patch)
    )
    webhook_id = world.install.webhook(ROTATED)["status"]["webhookId"]
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def measured() -> RotationRun:
        async with AsyncControlClient(world.emulator_url(), API_KEY) as control:
            rig = NodeRig(world, network, control, webhook_id, since)
            return await rotation_run.measure_rotation(
                rig, revocation=revocation, replicas=ROTATED_REPLICAS
            )

    run = asyncio.run(measured())
    print(f"\nrotation under traffic (real node, receivers as containers): {run.summary()}")
    return run


def test_a_grace_rotation_under_50_events_per_second_fails_nothing_across_3_receiver_pods(
    rotated: tuple[World, NodeNetwork],
) -> None:
    """Issue 22 §4 on the real node: every event at the sink exactly once (by
    `webhook-id`), every replica reloaded and took deliveries (kube-proxy spreads the
    emulator's one connection per delivery), zero failed attempts and no rejection."""
    run = rotate_on_the_node(*rotated, "Grace")
    assert run.sent >= 100 and 40 <= run.rate <= 60, run.summary()
    assert rotation_run.broken_promises(run) == [], run.summary()
    assert (run.rejected, run.failed_attempts, run.retried) == ({}, 0, 0), run.summary()
    assert len(held_secrets(rotated[0]).secrets) >= 2  # the previous one kept, in grace


def test_an_immediate_rotation_under_50_events_per_second_loses_nothing_across_3_pods(
    rotated: tuple[World, NodeNetwork],
) -> None:
    """The same with `revocation: Immediate`: the only failed attempts are 503
    `secret_reload_pending` (signed with the new secret before a replica reloaded) and 401
    `revoked_secret` (signed with the old one just before, reaching a replica after),
    counted by the replicas, each retried and delivered once."""
    run = rotate_on_the_node(*rotated, "Immediate")
    assert run.sent >= 100 and 40 <= run.rate <= 60, run.summary()
    assert rotation_run.broken_promises(run) == [], run.summary()
    assert len(held_secrets(rotated[0]).secrets) == 1  # the previous one revoked at once
