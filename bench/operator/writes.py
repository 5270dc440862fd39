"""Kubernetes writes per reconcile (issue 25): what one reconciliation writes, counted by the
real API server.

    .venv/bin/python bench/operator/writes.py [--resources 5] [--drift 30]

Starts a real control plane (scripts/control-plane: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler; no node), the emulator, and the operator as a
subprocess under the chart's ServiceAccount, exactly as deployed. Each GeminiWebhook serves a
receiver, so its reconciliations also apply children. Three phases, each counted from the
API server's own `apiserver_request_total{verb,group,resource,subresource}`, read before and
after, and divided by the reconciliations the operator's own metrics
(`gemini_webhook_operator_reconciles_total{handler}`) say ran in that phase:

- create: every resource created, Ready, and settled;
- spec edit: every resource's `spec.events` changed, reconciled (`observedGeneration`);
- rotation: every resource's signing secret rotated on request (the rotate annotation),
  the signing Secret's writes per rotation counted (issue 25: one request each);
- drift: nothing changes for two drift intervals; every resource's drift check runs;
- health ticks: one more resource, with `spec.healthCheck` on (interval 1 m, the least
  allowed), whose receiver the bench runs as a process (reading the signing Secret through
  the API, its internal Service served to the operator by the sandbox's proxy, as the
  local sandbox does); once its first ping verified, the health timer ticks (every 30 s)
  until the operator has sent and verified periodic pings, and every write is counted.

Printed per phase: writes of `geminiwebhooks` (the object, our finalizer and kopf's bookkeeping
annotations among them; its `status` subresource apart) per reconciliation, and the
children's (Secrets, ConfigMaps, Services, Deployments, NetworkPolicies, ...) apart. A
Deployment's count includes the deployment controller's own writes (its revision annotation,
its status), which `apiserver_request_total` cannot tell from ours; only the objects are
shown, not their status. The bench's own creates and edits are not counted. Targets
(issue 25): at most 1 write of the resource (status and object together) per reconciliation
of a changed resource, children apart, plus our finalizer once in a resource's life (so 2
for a create); 0 writes at all per drift tick and per health tick of an unchanged, healthy
resource.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.operator.bench_operator import API_KEY, install, stop  # noqa: E402
from gemini_webhook_operator.receiver_names import (  # noqa: E402
    INTERNAL_PORT,
    STATIC_SOURCE,
    internal_service_name,
)
from gemini_webhooks.contracts import crd  # noqa: E402
from gemini_webhooks.emulator import EmulatorConfig, ThreadedEmulator  # noqa: E402
from gemini_webhooks.sandbox.kubeapi import KubeApi  # noqa: E402
from tests.fixtures.cluster_proxy import ClusterProxy  # noqa: E402
from tests.operator.api_proxy import FaultProxy  # noqa: E402

BIN = Path(sys.executable).parent  # the venv this runs in
KUBECTL = str(BIN / "kubectl")
OPERATOR = str(BIN / "gemini-webhooks")
READS = frozenset({"GET", "LIST", "WATCH"})
CRD_RESOURCE = f"{crd.PLURAL}.{crd.API_GROUP}/{crd.VERSION}"
# The children a served GeminiWebhook has, by (group, resource).
CHILDREN = {
    ("", "secrets"),
    ("", "configmaps"),
    ("", "services"),
    ("", "serviceaccounts"),
    ("apps", "deployments"),
    ("networking.k8s.io", "networkpolicies"),
    ("policy", "poddisruptionbudgets"),
    ("rbac.authorization.k8s.io", "roles"),
    ("rbac.authorization.k8s.io", "rolebindings"),
}
EVENTS = ["batch.succeeded"]
EDIT = '{"spec":{"events":["batch.succeeded","batch.failed"]}}'
# Before issue 25's write path (main at a0a2768, this bench, 5 resources): GeminiWebhook
# writes per reconciliation, (status, the object).
BEFORE = {"create": (2.0, 2.0), "spec edit": (1.0, 1.0), "drift tick": (0.0, 0.0)}
TARGET_CHANGE = 1.0  # writes of the resource per reconciliation of a changed resource
FINALIZER_ONCE = 1.0  # and our finalizer, once in each resource's life (its creation)
TARGET_DRIFT = 0.0  # per drift tick of an unchanged one
TARGET_HEALTH = 0.0  # per health tick (and periodic ping) of an unchanged, healthy one
HEALTH = "writes-health"
HEALTH_INTERVAL = "1m"  # the least spec.healthCheck.interval allows
HEALTH_TICK = 30.0  # the operator's health timer (runtime.OperatorConfig.health_tick)
PERIODIC_PINGS = 2  # verified pings to wait for after the first
# Before the health timer stopped writing verdicts that repeat the condition (main at
# 8505e1e, this bench): writes of the resource per periodic ping that verified again.
BEFORE_HEALTH_PER_PING = 1.0

# (group, resource, subresource, verb) -> requests served so far
Requests = Counter[tuple[str, str, str, str]]


async def apiserver_requests(kubeconfig: Path) -> Requests:
    """`apiserver_request_total` by (group, resource, subresource, verb)."""
    from prometheus_client.parser import text_string_to_metric_families

    api = KubeApi.from_kubeconfig(kubeconfig, timeout=60)
    try:
        text = await api.text("/metrics")
    finally:
        await api.close()
    counted: Requests = Counter()
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name == "apiserver_request_total":
                labels = sample.labels
                key = (
                    labels.get("group", ""),
                    labels.get("resource", ""),
                    labels.get("subresource", ""),
                    labels.get("verb", ""),
                )
                counted[key] += int(sample.value)
    return counted


def writes(moved: Requests, keep: Callable[[str, str, str], bool]) -> Counter[str]:
    """Write requests (every verb but a read) among `moved`, by `resource[/subresource] VERB`."""
    out: Counter[str] = Counter()
    for (group, resource, sub, verb), count in moved.items():
        if verb not in READS and count > 0 and keep(group, resource, sub):
            out[f"{resource}{'/' + sub if sub else ''} {verb}"] += count
    return out


def reads(moved: Requests, keep: Callable[[str, str, str], bool]) -> Counter[str]:
    """Read requests (GET, LIST, WATCH) among `moved`, by verb."""
    out: Counter[str] = Counter()
    for (group, resource, sub, verb), count in moved.items():
        if verb in READS and count > 0 and keep(group, resource, sub):
            out[verb] += count
    return out


def operator_counts(metrics_url: str, sample_name: str, label: str) -> Counter[str]:
    """One of the operator's counters so far, summed by one label."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    counted: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == sample_name:
                counted[sample.labels[label]] += int(sample.value)
    return counted


def reconciles(metrics_url: str) -> Counter[str]:
    """Reconciliations the operator ran so far, by handler (its own counter)."""
    return operator_counts(metrics_url, "gemini_webhook_operator_reconciles_total", "handler")


def pings(metrics_url: str) -> Counter[str]:
    """Health pings the operator sent so far, by result (`verified`, ...)."""
    return operator_counts(metrics_url, "gemini_webhook_operator_delivery_pings_total", "result")


def body(name: str, api_base: str, events: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "events": events,
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "apiBaseUrl": api_base,
            "receiver": {
                "enabled": True,
                "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
            },
        },
    }


def health_body(name: str, api_base: str, receiver_port: int) -> dict[str, Any]:
    """A resource whose health checks ping the receiver the bench runs on `receiver_port`."""
    resource = body(name, api_base, EVENTS)
    spec = resource["spec"]
    spec["url"] = f"http://127.0.0.1:{receiver_port}/"
    spec["receiver"]["replicas"] = 1  # its pings are asked of the internal Service
    spec["healthCheck"] = {"enabled": True, "interval": HEALTH_INTERVAL}
    return resource


def start_receiver(
    name: str, public_port: int, internal_port: int, kubeconfig: Path, workdir: Path
) -> subprocess.Popen[bytes]:
    """The real receiver of GeminiWebhook `name`, standing in for its Pod: it reads the
    signing Secret through the Kubernetes API, as its Deployment would."""
    config = {
        "listen": {"host": "127.0.0.1", "port": public_port},
        "internal": {"host": "127.0.0.1", "port": internal_port},
        "static_webhooks": [
            {
                "name": STATIC_SOURCE,
                "secrets": {
                    "kubernetes": {"namespace": "default", "name": f"{name}-signing-secret"}
                },
            }
        ],
        "dead_letter": {"target": {"url": "http://127.0.0.1:9/"}},
    }
    path = workdir / "receiver.json"
    path.write_text(json.dumps(config))
    return subprocess.Popen(
        [OPERATOR, "receiver", "--config", str(path)],
        stdout=(workdir / "receiver.log").open("w"),
        stderr=subprocess.STDOUT,
        env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
    )


def health_verified(item: dict[str, Any]) -> bool:
    return any(
        c.get("type") == crd.CONDITION_DELIVERY_VERIFIED and c.get("status") == "True"
        for c in (item.get("status") or {}).get("conditions") or []
    )


def wait_until(what: str, check: Callable[[], bool], timeout: float) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)
    return time.monotonic() - started


def health_report(moved: Requests, verified: int, seconds: float) -> tuple[bool, float]:
    """Print the health phase: every write of the resource in it, per periodic ping and per
    tick of the health timer."""
    own = writes(moved, lambda g, r, s: g == crd.API_GROUP and r == crd.PLURAL and s == "")
    status = writes(moved, lambda g, r, s: g == crd.API_GROUP and r == crd.PLURAL and s == "status")
    children = writes(moved, lambda g, r, s: (g, r) in CHILDREN and s == "")
    total = sum(own.values()) + sum(status.values())
    ticks = seconds / HEALTH_TICK
    print(
        f"health ticks: {seconds:.0f} s, about {ticks:.0f} ticks of {HEALTH}'s health timer "
        f"(every {HEALTH_TICK:.0f} s), {verified} periodic pings sent and verified "
        f"(interval {HEALTH_INTERVAL}); the other resources' drift checks ran meanwhile"
    )
    print(
        f"  geminiwebhooks writes:   {total} in all: {total / verified:.2f} per periodic ping, "
        f"{total / ticks:.2f} per tick (target <= {TARGET_HEALTH:.0f})"
    )
    print(f"    before (8505e1e):      {BEFORE_HEALTH_PER_PING:.2f} per periodic ping (its status)")

    def show(c: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

    print(f"    the object:            {show(own)}")
    print(f"    its status:            {show(status)}")
    print(f"  children writes:         {show(children)}")
    return verified > 0 and total <= TARGET_HEALTH, total / ticks


async def listed(kubeconfig: Path) -> list[dict[str, Any]]:
    api = KubeApi.from_kubeconfig(kubeconfig, timeout=60)
    try:
        items: list[dict[str, Any]] = await api.list(CRD_RESOURCE, "default")
        return items
    finally:
        await api.close()


def settled(item: dict[str, Any]) -> bool:
    """Ready, and reconciled at its current generation."""
    status = item.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return ready and status.get("observedGeneration") == item["metadata"].get("generation")


def wait_settled(kubeconfig: Path, count: int, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        items = asyncio.run(listed(kubeconfig))
        if len(items) >= count and all(settled(i) for i in items):
            return time.monotonic() - started
        time.sleep(0.3)
    raise SystemExit(f"the resources did not settle within {timeout:.0f} s")


def rotated(item: dict[str, Any]) -> bool:
    """The rotation the bench asked for is done (the operator removes the annotation)."""
    annotations = item["metadata"].get("annotations") or {}
    reason = (item.get("status") or {}).get("lastRotationReason")
    return crd.ANNOTATION_ROTATE not in annotations and reason == "RequestedByAnnotation"


def rotation_phase(
    kubectl: list[str], env: dict[str, str], kubeconfig: Path, names: list[str], timeout: float
) -> Requests:
    """Every resource rotated on request; the signing Secret's writes per rotation printed.
    Returns the requests counted from before the first annotation to after the last write."""
    before = asyncio.run(apiserver_requests(kubeconfig))
    started = time.monotonic()
    for name in names:
        annotation = f"{crd.ANNOTATION_ROTATE}=bench"
        command = [*kubectl, "annotate", crd.PLURAL, name, annotation, "--overwrite"]
        subprocess.run(command, env=env, check=True, capture_output=True)
    wait_until(
        "the rotations",
        lambda: all(rotated(i) for i in asyncio.run(listed(kubeconfig))),
        timeout,
    )
    quiet(kubeconfig, 1.5, timeout=timeout)
    moved = asyncio.run(apiserver_requests(kubeconfig)) - before
    secret_writes = writes(moved, lambda g, r, s: (g, r, s) == ("", "secrets", ""))
    total = sum(secret_writes.values())
    shown = ", ".join(f"{k} {v / len(names):.2f}" for k, v in sorted(secret_writes.items()))
    print(f"rotation: {len(names)} resources rotated in {time.monotonic() - started:.1f} s")
    print(f"  signing Secret writes:   {total / len(names):.2f} per rotation: {shown or 'none'}")
    return moved


def quiet(kubeconfig: Path, seconds: float, timeout: float) -> None:
    """Wait until no GeminiWebhook write has been served for `seconds` (kopf's bookkeeping
    patch follows the handler)."""
    started = time.monotonic()
    last = asyncio.run(apiserver_requests(kubeconfig))
    calm = time.monotonic()
    while time.monotonic() - started < timeout:
        time.sleep(0.5)
        now = asyncio.run(apiserver_requests(kubeconfig))
        if writes(now - last, lambda g, r, s: g == crd.API_GROUP):
            calm = time.monotonic()
        last = now
        if time.monotonic() - calm >= seconds:
            return


def wait_for_metrics(metrics_url: str, operator: subprocess.Popen[Any]) -> None:
    """Until the operator serves its metrics (its start takes seconds on a loaded machine)."""
    deadline = time.monotonic() + 120.0
    while True:
        try:
            with urllib.request.urlopen(metrics_url, timeout=5):
                return
        except OSError:
            if operator.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(
    phase: str,
    moved: Requests,
    ran: Counter[str],
    handler: str,
    target: float,
    bench: Requests | None = None,
) -> tuple[bool, float]:
    """Print one phase's figures; `bench`: the writes the bench itself made (its creates and
    edits), not counted."""
    count = ran[handler]
    moved = moved - (bench or Counter())
    own = writes(moved, lambda g, r, s: g == crd.API_GROUP and r == crd.PLURAL and s == "")
    status = writes(moved, lambda g, r, s: g == crd.API_GROUP and r == crd.PLURAL and s == "status")
    children = writes(moved, lambda g, r, s: (g, r) in CHILDREN and s == "")
    events = writes(moved, lambda g, r, s: r == "events")
    total = sum(own.values()) + sum(status.values())
    per_status = sum(status.values()) / count if count else float("nan")
    # Status and object together: kopf writes the object only for its finalizer (the
    # create phase's target allows it), its diff base being in the operator's memory.
    per = total / count if count else 0.0

    def show(c: Counter[str]) -> str:
        return ", ".join(f"{k} {v / count:.2f}" for k, v in sorted(c.items())) or "none"

    print(f"{phase}: {count} reconciliations ({handler}); per reconciliation:")
    print(
        f"  geminiwebhooks writes:   {total / count if count else 0.0:.2f}: "
        f"status {per_status:.2f}, object {sum(own.values()) / count if count else 0.0:.2f} "
        f"(target <= {target:.0f} in all)"
    )
    before_status, before_object = BEFORE[phase]
    print(f"    before (a0a2768):      status {before_status:.2f}, object {before_object:.2f}")
    print(f"    the object:            {show(own)}  (the finalizer, once)")
    print(f"    its status:            {show(status)}")
    print(f"  children writes:         {show(children)}")
    print(f"  events:                  {show(events)}")
    # Issue 25: the Secrets and children read from watches, not listed per reconciliation
    # (a watch is counted when it ends; the control plane's own reads are included).
    read = reads(moved, lambda g, r, s: (g, r) in CHILDREN)
    print(f"  Secret and children reads: {show(read)}")
    others = {k: v for k, v in ran.items() if k != handler and v}
    if others:
        print(f"  (other reconciliations in this phase: {dict(others)})")
    return count > 0 and per <= target, per


def health_phase(
    kubectl: list[str],
    env: dict[str, str],
    kubeconfig: Path,
    api_base: str,
    metrics_url: str,
    receiver_port: int,
) -> tuple[bool, float]:
    """Create the health-checked resource, wait for its first verified ping and quiet, then
    count every write while its health timer ticks through `PERIODIC_PINGS` periodic pings."""
    command = [*kubectl, "apply", "-f", "-"]
    resource = json.dumps(health_body(HEALTH, api_base, receiver_port))
    subprocess.run(command, input=resource.encode(), env=env, check=True, capture_output=True)

    def first_verified() -> bool:
        return any(
            i["metadata"]["name"] == HEALTH and health_verified(i)
            for i in asyncio.run(listed(kubeconfig))
        )

    waited = wait_until("the first health ping verified", first_verified, timeout=180)
    print(f"health: {HEALTH} created; its first ping verified after {waited:.1f} s")
    quiet(kubeconfig, 1.5, timeout=60)
    before = asyncio.run(apiserver_requests(kubeconfig)), pings(metrics_url)
    started = time.monotonic()
    wait_until(
        f"{PERIODIC_PINGS} periodic pings verified",
        lambda: pings(metrics_url)["verified"] - before[1]["verified"] >= PERIODIC_PINGS,
        timeout=PERIODIC_PINGS * 60 + 3 * HEALTH_TICK + 60,
    )
    time.sleep(3.0)  # what the last tick writes, given time to land
    seconds = time.monotonic() - started
    after = asyncio.run(apiserver_requests(kubeconfig)), pings(metrics_url)
    verified = after[1]["verified"] - before[1]["verified"]
    unverified = sum((after[1] - before[1]).values()) - verified
    if unverified:
        print(f"  ({unverified} pings did not verify: the resource was not healthy throughout)")
    return health_report(after[0] - before[0], verified, seconds)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=5)
    parser.add_argument("--drift", type=float, default=30.0, help="drift interval, seconds")
    args = parser.parse_args()

    from gemini_webhooks.controlplane.threaded import ThreadedControlPlane
    from tests.fixtures.control_plane import chart_rbac, operator_identity

    workdir = Path(tempfile.mkdtemp(prefix="bench-writes-"))
    plane = ThreadedControlPlane(workdir / "control-plane")
    plane.start()
    kubeconfig = plane.admin_kubeconfig
    assert plane.plane is not None  # started
    ca = plane.plane.layout.ca
    operator_kubeconfig = operator_identity(
        kubeconfig, plane.server, ca, workdir / "op.kubeconfig", chart_rbac()
    )
    emulator = ThreadedEmulator(EmulatorConfig(api_keys=(API_KEY,))).start()
    proxy = FaultProxy(emulator.base_url)
    emulator.call(proxy.start())
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    kubectl = [KUBECTL, "--kubeconfig", str(kubeconfig)]
    install(kubectl, env)
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    receiver_port, receiver_internal = free_port(), free_port()
    receiver = start_receiver(HEALTH, receiver_port, receiver_internal, kubeconfig, workdir)
    # The operator reaches the receiver's internal Service by its cluster name, through
    # the sandbox's proxy (as the sandbox runs it).
    cluster = ClusterProxy()
    cluster.start()
    address = f"127.0.0.1:{receiver_internal}"
    cluster.serve_service(internal_service_name(HEALTH), "default", INTERNAL_PORT, address)
    env.update(cluster.environment())
    log = (workdir / "operator.log").open("w")
    operator = subprocess.Popen(
        [
            *(OPERATOR, "operator", "--kubeconfig", str(operator_kubeconfig)),
            *("--drift-interval", str(args.drift), "--drift-jitter", "0"),
            *("--metrics-port", str(port), "--metrics-address", "127.0.0.1", "--api-rate", "1000"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    names = [f"writes-{i}" for i in range(args.resources)]
    try:
        wait_for_metrics(metrics_url, operator)
        results = []
        mine: dict[str, list[str]] = {}
        for name in names:  # create, then edit: the bench's own writes, not counted
            mine.setdefault("create", []).append(json.dumps(body(name, proxy.url, EVENTS)))
            mine.setdefault("spec edit", []).append(name)
        counted = asyncio.run(apiserver_requests(kubeconfig)), reconciles(metrics_url)
        for phase, verb in (("create", "POST"), ("spec edit", "PATCH")):
            started = time.monotonic()
            for item in mine[phase]:
                if phase == "create":
                    command, stdin = [*kubectl, "apply", "-f", "-"], item.encode()
                else:
                    command = [*kubectl, "patch", crd.PLURAL, item, "--type", "merge", "-p", EDIT]
                    stdin = None
                subprocess.run(command, input=stdin, env=env, check=True, capture_output=True)
            time.sleep(0.5)
            wait_settled(kubeconfig, len(names), timeout=0.8 * args.drift)
            quiet(kubeconfig, 1.5, timeout=args.drift)
            print(f"{phase}: {len(names)} resources settled in {time.monotonic() - started:.1f} s")
            now = asyncio.run(apiserver_requests(kubeconfig)), reconciles(metrics_url)
            bench = Counter({(crd.API_GROUP, crd.PLURAL, "", verb): len(names)})
            moved, ran = now[0] - counted[0], now[1] - counted[1]
            target = TARGET_CHANGE + (FINALIZER_ONCE if phase == "create" else 0.0)
            results.append(report(phase, moved, ran, "change", target, bench))
            counted = now
        rotation_phase(kubectl, env, kubeconfig, names, timeout=args.drift)
        counted = asyncio.run(apiserver_requests(kubeconfig)), reconciles(metrics_url)
        time.sleep(2 * args.drift)  # nothing changes: every resource's drift checks run
        now = asyncio.run(apiserver_requests(kubeconfig)), reconciles(metrics_url)
        moved, ran = now[0] - counted[0], now[1] - counted[1]
        results.append(report("drift tick", moved, ran, "drift", TARGET_DRIFT))
        results.append(
            health_phase(kubectl, env, kubeconfig, proxy.url, metrics_url, receiver_port)
        )
        ok = all(met for met, _ in results)
        print("verdict: " + ("all targets met" if ok else "TARGET MISSED"))
        return 0 if ok else 1
    finally:
        stop(operator)
        stop(receiver)
        cluster.stop()
        log.close()
        emulator.call(proxy.stop())
        emulator.stop()
        plane.stop()


if __name__ == "__main__":
    sys.exit(main())
