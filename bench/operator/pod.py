"""`bench_operator.py --kube node` (issue 22 §4): the operator as the chart's Pod on the real
node with 1,000 resources, beside the operator as a host process, in one run.

    .venv/bin/python bench/operator/bench_operator.py --kube node [--resources 1000]

Root. It takes /tmp/gwo-real-node.lock itself (one real node per machine; under
`flock /tmp/gwo-real-node.lock` it sees the lock held by its parent and does not wait).
Brings up the control plane with the real node (`scripts/control-plane up --node real`, as
tests/fixtures/real_node.py does: our images, built by `scripts/image build`, imported into
its containerd). Two phases on that one control plane and machine, each with a namespace
of its own and a fresh emulator in this process behind the counting proxy, the proxy on
the host's end of the node's veth, where Pods reach the host (as the real-node Redis test
reaches its server); each creates the bench's URL-only GeminiWebhooks, times them from
applied to the last Ready, then counts the steady state:

1. process: `gemini-webhooks operator` on the host under the chart's ServiceAccount
   (as `--kube real` runs it), watching its namespace;
2. Pod: the operator installed by the chart (`helm install`; its defaults — the 384 MiB
   memory limit, leader election, the NetworkPolicy — but for the drift interval and the
   API rate, set to the process's, `watchNamespaces` its namespace, and the NetworkPolicy
   letting it reach the proxy and the host scrape its metrics).

Printed side by side, with Pod/process ratios: creation and Ready times, CPU seconds of the
operator, kube-apiserver and this process from applied to Ready, reconciles, WebhookService
calls, Kubernetes API requests, steady-state calls per resource per interval, the
operator's peak RSS (VmHWM, from the host). For the Pod also, against its limit: the
container's working set (usage less inactive file pages, as the kubelet counts it) sampled
every 0.2 s, its cgroup's peak usage (page cache included), OOM kills and restarts (both
must be 0). Then the machine's load, `down`, and what `down` left on the host compared
with before `up` (must be nothing); the run's directory then keeps only the logs.
Ctrl-C stops everything it started and takes the node down in full.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.operator.bench_operator import (
    API_KEY,
    API_RATE,
    OPERATOR,
    TARGET_READY_SECONDS,
    _delta,
    apiserver_requests,
    apply_and_wait_ready,
    phase_costs,
    rss_mib,
    stop,
)
from bench.operator.writes import free_port, wait_for_metrics
from gemini_webhooks.controlplane import nodeconfig, realnode
from gemini_webhooks.controlplane.cluster import Layout
from gemini_webhooks.emulator import EmulatorConfig, ThreadedEmulator
from tests.chart.rendering import CHART_DIR, ROOT
from tests.chart.test_helm_cli import Helm
from tests.fixtures.control_plane import chart_rbac, operator_identity
from tests.fixtures.real_node import (
    Cluster,
    MemoryCgroup,
    host_snapshot,
    main_process,
    running_node,
    wait_for,
)
from tests.operator.api_proxy import FaultProxy

LOCK = "/tmp/gwo-real-node.lock"
RELEASE, RELEASE_NAMESPACE = "bench", "gemini-system"
PROCESS_NAMESPACE, POD_NAMESPACE = "bench-process", "bench-pod"
CHART_VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
MIB = 1 << 20


@dataclass
class Phase:
    """What one phase measured."""

    created: float  # seconds to create every resource
    to_ready: float  # seconds from the first create to the last Ready
    ready: int
    total: int
    cpu: dict[str, float]  # CPU seconds by process, applied -> Ready
    reconciles: Counter[str]  # by trigger, applied -> Ready
    calls: Counter[str]  # WebhookService calls by method, applied -> Ready
    kube_reads: float  # Kubernetes API requests, applied -> Ready
    kube_writes: float
    steady_per_resource: float  # WebhookService calls per resource per drift interval
    rss_now_mib: float = 0.0
    rss_peak_mib: float = 0.0  # VmHWM of the operator process
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # at the end of the phase


@dataclass
class PodMemory:
    """The operator container's memory cgroup, its working set sampled in a thread."""

    cgroup: MemoryCgroup
    peak_working_set: int = 0
    samples: int = 0
    lost: str = ""  # why sampling stopped early (the container went away)
    # Read by `read_totals()` while the container still runs.
    limit: int = 0
    peak_usage: int = 0
    oom_kills: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def read_totals(self) -> None:
        self.limit = self.cgroup.limit()
        self.peak_usage = self.cgroup.peak_usage()
        self.oom_kills = self.cgroup.oom_kills()

    def sample(self, every: float = 0.2) -> None:
        while not self._stop.is_set():
            try:
                self.peak_working_set = max(self.peak_working_set, self.cgroup.working_set())
            except OSError as error:
                self.lost = f"its cgroup went away: {error}"
                return
            self.samples += 1
            self._stop.wait(every)

    @contextlib.contextmanager
    def sampling(self) -> Iterator[PodMemory]:
        thread = threading.Thread(target=self.sample, name="pod-memory", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)


def lock_held_by_a_parent(path: str) -> bool:
    """Whether a process above this one is `flock PATH ...` (the lock is then ours)."""
    pid = os.getppid()
    while pid > 1:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        if Path(argv[0].decode(errors="replace")).name == "flock" and path.encode() in argv:
            return True
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


@contextlib.contextmanager
def real_node_lock() -> Iterator[None]:
    if lock_held_by_a_parent(LOCK):
        yield
        return
    with open(LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {LOCK}: another real node runs on this machine", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def prepare(cluster: Cluster) -> None:
    """The CRD, and each phase's namespace holding the API key Secret."""
    cluster.kubectl("apply", "-f", str(ROOT / "crds"))
    for namespace in (PROCESS_NAMESPACE, POD_NAMESPACE, RELEASE_NAMESPACE):
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for namespace in (PROCESS_NAMESPACE, POD_NAMESPACE):
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "gemini-api-key", "namespace": namespace},
                "stringData": {"api-key": API_KEY},
            }
        )


def measure(
    cluster: Cluster,
    namespace: str,
    pids: dict[str, int],
    metrics_url: str,
    proxy: FaultProxy,
    args: argparse.Namespace,
) -> Phase:
    """Create the resources in `namespace`, wait for all Ready, then count the WebhookService
    calls over whole drift intervals (after one skipped: the first checks spread over it)."""
    kubeconfig = cluster.kubeconfig
    cpu_before, reconciles_before = phase_costs(pids, metrics_url)
    calls_before = len(proxy.calls())
    kube_before = asyncio.run(apiserver_requests(kubeconfig))
    created, to_ready, ready, total = apply_and_wait_ready(
        kubeconfig, args.resources, proxy.url, args.ready_timeout, namespace
    )
    cpu_ready, reconciles_ready = phase_costs(pids, metrics_url)
    calls = Counter(c.method for c in proxy.calls()[calls_before:])
    reads, writes, _ = _delta(asyncio.run(apiserver_requests(kubeconfig)), kube_before)
    time.sleep(args.drift * 1.2)
    before = len(proxy.calls())
    time.sleep(args.drift * args.windows)
    steady = (len(proxy.calls()) - before) / args.resources / args.windows
    return Phase(
        created,
        to_ready,
        ready,
        total,
        {name: cpu_ready[name] - cpu_before[name] for name in pids},
        reconciles_ready - reconciles_before,
        calls,
        reads,
        writes,
        steady,
        load=os.getloadavg(),
    )


def process_phase(
    cluster: Cluster, proxy: FaultProxy, apiserver: int, args: argparse.Namespace, workdir: Path
) -> Phase:
    admin = cluster.kubeconfig
    server = yaml.safe_load(admin.read_text())["clusters"][0]["cluster"]["server"]
    rbac = chart_rbac({"watchNamespaces": [PROCESS_NAMESPACE]})
    identity = operator_identity(
        admin, server, Layout(cluster.directory).ca, workdir / "operator.kubeconfig", rbac
    )
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    with (workdir / "operator.log").open("w") as log:
        operator = subprocess.Popen(
            [
                OPERATOR,
                "operator",
                *("--kubeconfig", str(identity), "--namespace", PROCESS_NAMESPACE),
                *("--drift-interval", str(args.drift), "--api-rate", str(API_RATE)),
                *("--metrics-port", str(port), "--metrics-address", "127.0.0.1"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_metrics(metrics_url, operator)
        pids = {"operator": operator.pid, "kube-apiserver": apiserver, "this process": os.getpid()}
        phase = measure(cluster, PROCESS_NAMESPACE, pids, metrics_url, proxy, args)
        phase.rss_now_mib, phase.rss_peak_mib = rss_mib(operator.pid)
        return phase
    finally:
        stop(operator)


def chart_values(proxy_port: int, args: argparse.Namespace) -> dict[str, Any]:
    """The chart's defaults but for what the process phase also sets, the namespace it
    watches and the NetworkPolicy's way to the proxy (and of the host to its metrics)."""
    host = {"ipBlock": {"cidr": f"{nodeconfig.NODE_NETWORK.host_ip}/32"}}
    return {
        "image": {"repository": nodeconfig.IMAGE_REPOSITORIES["product"], "pullPolicy": "Never"},
        "watchNamespaces": [POD_NAMESPACE],
        "operator": {"driftInterval": args.drift, "apiRate": API_RATE},
        "networkPolicy": {
            "extraEgress": [{"to": [host], "ports": [{"protocol": "TCP", "port": proxy_port}]}],
            "metricsFrom": [host],
        },
    }


def operator_pod(cluster: Cluster) -> dict[str, Any]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
    pods = cluster.get("pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"]
    (pod,) = [p for p in pods if "deletionTimestamp" not in p["metadata"]]
    return pod


def metrics_answer(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def pod_phase(
    cluster: Cluster, proxy: FaultProxy, apiserver: int, args: argparse.Namespace, workdir: Path
) -> tuple[Phase, PodMemory, dict[str, Any], float]:
    """The chart's install, then the phase: (its figures, the container's memory, the Pod's
    last status, seconds from `helm install` to the Pod Ready)."""
    helm = Helm(workdir / "helm", RELEASE_NAMESPACE)
    helm.env["KUBECONFIG"] = str(cluster.kubeconfig)
    values = workdir / "values.yaml"
    port = int(proxy.url.rsplit(":", 1)[1])
    values.write_text(yaml.safe_dump(chart_values(port, args)))
    started = time.monotonic()
    helm("install", RELEASE, str(CHART_DIR), "-f", str(values), "--wait", "--timeout", "10m")
    pod_ready = time.monotonic() - started
    pod = operator_pod(cluster)
    pid = main_process(pod)
    memory = PodMemory(MemoryCgroup(pid))
    metrics_url = f"http://{pod['status']['podIP']}:{CHART_VALUES['metricsPort']}/metrics"
    wait_for("the operator Pod's metrics", lambda: metrics_answer(metrics_url), within=120)
    pids = {"operator": pid, "kube-apiserver": apiserver, "this process": os.getpid()}
    with memory.sampling():
        phase = measure(cluster, POD_NAMESPACE, pids, metrics_url, proxy, args)
    phase.rss_now_mib, phase.rss_peak_mib = rss_mib(pid)
    memory.read_totals()
    status = cluster.get("pod", "-n", RELEASE_NAMESPACE, pod["metadata"]["name"])["status"]
    return phase, memory, status, pod_ready


def _ratio(pod: float, process: float) -> str:
    return f"{pod / process:.2f}" if process else "-"


def report(
    process: Phase,
    pod: Phase,
    memory: PodMemory,
    status: dict[str, Any],
    pod_ready: float,
    args: argparse.Namespace,
) -> bool:
    """Print the two phases side by side; whether issue 22 §4 holds for the Pod."""
    rows: list[tuple[str, float, float, str]] = [
        ("created (API writes), s", process.created, pod.created, ".1f"),
        ("applied -> all Ready, s", process.to_ready, pod.to_ready, ".1f"),
        *(
            (f"CPU s applied -> Ready, {name}", process.cpu[name], pod.cpu[name], ".1f")
            for name in process.cpu
        ),
        (
            "change reconciles per resource",
            process.reconciles["change"] / args.resources,
            pod.reconciles["change"] / args.resources,
            ".2f",
        ),
        (
            "WebhookService calls -> Ready",
            sum(process.calls.values()),
            sum(pod.calls.values()),
            ".0f",
        ),
        ("Kubernetes API reads -> Ready", process.kube_reads, pod.kube_reads, ".0f"),
        ("Kubernetes API writes -> Ready", process.kube_writes, pod.kube_writes, ".0f"),
        (
            "steady calls / resource / interval",
            process.steady_per_resource,
            pod.steady_per_resource,
            ".4f",
        ),
        ("operator RSS when done, MiB", process.rss_now_mib, pod.rss_now_mib, ".0f"),
        ("operator peak RSS (VmHWM), MiB", process.rss_peak_mib, pod.rss_peak_mib, ".0f"),
    ]
    print(f"resources: {args.resources} per phase; drift interval {args.drift:.0f} s")
    print(f"{'':38}{'process':>10}{'Pod':>10}{'Pod/process':>13}")
    ready = [f"{phase.ready}/{phase.total}" for phase in (process, pod)]
    print(f"{'Ready':38}{ready[0]:>10}{ready[1]:>10}")
    for name, a, b, spec in rows:
        print(f"{name:38}{a:>10{spec}}{b:>10{spec}}{_ratio(b, a):>13}")
    print(f"WebhookService -> Ready by method: process {dict(sorted(process.calls.items()))}")
    print(f"{'':34}Pod {dict(sorted(pod.calls.items()))}")
    limit, peak_usage, oom_kills = memory.limit, memory.peak_usage, memory.oom_kills
    (container,) = status["containerStatuses"]
    restarts = container["restartCount"]
    last = (container.get("lastState") or {}).get("terminated") or {}
    print(
        f"operator Pod (chart default limit {limit / MIB:.0f} MiB): peak working set "
        f"{memory.peak_working_set / MIB:.1f} MiB ({memory.samples} samples, ratio to the "
        f"limit {memory.peak_working_set / limit:.2f}), cgroup peak usage "
        f"{peak_usage / MIB:.1f} MiB (page cache included; ratio {peak_usage / limit:.2f}), "
        f"OOM kills {oom_kills}, restarts {restarts}"
        + (f" (last: {last.get('reason')})" if last else "")
        + (f"; sampling stopped: {memory.lost}" if memory.lost else "")
    )
    print(f"operator Pod Ready after `helm install`: {pod_ready:.1f} s")
    for name, phase in (("process", process), ("Pod", pod)):
        print(
            f"{name} phase: all Ready in {phase.to_ready:.1f} s (target "
            f"{TARGET_READY_SECONDS:.0f} s; ratio {phase.to_ready / TARGET_READY_SECONDS:.2f}); "
            f"load average at its end {' / '.join(f'{x:.2f}' for x in phase.load)} "
            f"on {os.cpu_count()} CPUs"
        )
    return (
        pod.ready >= args.resources
        and not memory.lost
        and memory.peak_working_set < limit
        and peak_usage < limit
        and oom_kills == 0
        and restarts == 0
    )


def left_behind(before: dict[str, object], state: Path) -> list[str]:
    """What differs on the host from `before` (`up`'s), and processes still naming `state`;
    each difference written out in full to `state`/left-behind.json."""
    after = host_snapshot(state)
    differ = {key: {"before": before[key], "after": after[key]} for key in before}
    differ = {key: both for key, both in differ.items() if both["before"] != both["after"]}
    (state / "left-behind.json").write_text(json.dumps(differ, indent=1, default=str))
    found = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True, check=False)
    return [*differ, *(f"process {pid}" for pid in found.stdout.split())]


def keep_logs_only(workdir: Path) -> None:
    """Free the disk (our images' copy, containerd's content, etcd: 1 GiB; call it only
    with nothing mounted under `workdir`); the logs and the small files stay."""
    shutil.rmtree(workdir / "images", ignore_errors=True)
    for state in (workdir / "control-plane", workdir / "control-plane-node"):
        for child in state.iterdir() if state.is_dir() else []:
            if child.name == "logs":
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)


@contextlib.contextmanager
def counted_emulator() -> Iterator[FaultProxy]:
    """A fresh emulator, and the counting proxy in front of it where the node's Pods reach
    the host."""
    emulator = ThreadedEmulator(EmulatorConfig(api_keys=(API_KEY,))).start()
    proxy = FaultProxy(emulator.base_url, host=nodeconfig.NODE_NETWORK.host_ip)
    emulator.call(proxy.start())
    try:
        yield proxy
    finally:
        emulator.call(proxy.stop())
        emulator.stop()


def both_phases(
    cluster: Cluster, args: argparse.Namespace, workdir: Path
) -> tuple[Phase, Phase, PodMemory, dict[str, Any], float]:
    prepare(cluster)
    apiserver = cluster.control_plane_process("kube-apiserver")
    assert apiserver is not None, "no kube-apiserver of this control plane"
    # An emulator each: its webhooks are not kept apart by API key, and the second
    # operator's drift checks would page through the first one's 1,000 too.
    with counted_emulator() as proxy:
        process = process_phase(cluster, proxy, apiserver, args, workdir)
    print(f"process phase done: Ready in {process.to_ready:.1f} s", flush=True)
    with counted_emulator() as proxy:
        return process, *pod_phase(cluster, proxy, apiserver, args, workdir)


def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-node-"))
    with real_node_lock():
        started = time.monotonic()
        try:
            with running_node(workdir / "control-plane") as cluster:
                print(
                    f"control plane and real node up in {cluster.up_seconds:.0f} s; "
                    f"logs in {workdir}",
                    flush=True,
                )
                process, pod, memory, status, pod_ready = both_phases(cluster, args, workdir)
            left = left_behind(cluster.before, workdir)
        finally:  # Ctrl-C included
            if not realnode.mounts_under([workdir]):
                keep_logs_only(workdir)
    met = report(process, pod, memory, status, pod_ready, args)
    print(f"whole run (up, both phases, down): {time.monotonic() - started:.0f} s")
    print(
        "left on the host after `down`: "
        + (f"{', '.join(left)} (see {workdir / 'left-behind.json'})" if left else "nothing")
    )
    print(
        "verdict (issue 22 §4: the Pod under its limit, 0 OOM kills, 0 restarts, all Ready; "
        "nothing left): " + ("met" if met and not left else "TARGET MISSED")
    )
    return 0 if met and not left else 1
