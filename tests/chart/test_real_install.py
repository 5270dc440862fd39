"""README's "Install in a real cluster", run as written on the real node (`up --node real`):
our product image as real Pods — the operator with the chart's security context and its
projected ServiceAccount token, no kubeconfig — in namespaces that enforce the `restricted`
Pod Security Standard, the chart's NetworkPolicy enforced by the node; the Gemini API is
our emulator, a Pod of the tools image, which delivers to a receiver through the cluster
(its Service's DNS name) as Gemini would reach an exposed receiver. Then `helm test`,
`helm upgrade` and `helm uninstall`, as docs/deploy.md describes them.

Only the image push and the API key differ from the README: the images are imported into
the node's containerd (`--set image.repository=` the name they are imported under), the
key is the emulator's, and the README's namespaces are labelled `restricted`. The tests
run in order and build on each other (one install per session: seconds each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench.receiver.run import write_deliveries
from gemini_webhook_operator import receiver_names
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import decode_data
from gemini_webhooks.controlplane import nodeconfig
from gemini_webhooks.controlplane.nodeconfig import NODE_NETWORK
from gemini_webhooks.emulator import ControlClient
from gemini_webhooks.sandbox import node_workloads
from gemini_webhooks.sandbox.node_workloads import restricted_pod, service
from tests.chart.rendering import CHART_DIR, ROOT
from tests.chart.test_helm_cli import Helm, helm_binary
from tests.fixtures import gateway_api
from tests.fixtures.kube import KUBECTL
from tests.fixtures.real_node import Cluster, MemoryCgroup, main_process, wait_for
from tests.fixtures.redis import DURABLE_ARGS, RedisServer
from tests.kubectl.plugin import executable
from tests.test_readme import README, readme_blocks

pytestmark = [pytest.mark.real_component, pytest.mark.late_build, pytest.mark.timeout(900)]

VALUES = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
TAG = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
RELEASE, RELEASE_NAMESPACE, TEAM = "gemini-webhooks", "gemini-system", "team-a"
DEPLOYMENT = f"{RELEASE}-gemini-webhook-operator"
API_KEY = "real-install-emulator-key"
RESTRICTED = node_workloads.RESTRICTED
EMULATOR, EMULATOR_PORT = node_workloads.EMULATOR, node_workloads.EMULATOR_PORT
EMULATOR_LABELS = node_workloads.EMULATOR_LABELS
SINK, SINK_PORT = "sink", 8080
RECEIVED = "received"  # the GeminiWebhook whose receiver forwards to the sink
README_IMAGE = "--set image.repository=ghcr.io/gemini-webhook-operator/gemini-webhook-operator"

# What the chart is installed with besides the README's command line: the emulator as the
# Gemini API, and the operator's NetworkPolicy letting it reach the emulator's Pod.
INSTALL_VALUES = {
    "image": {"pullPolicy": "Never"},
    "operator": {
        "apiBaseUrl": f"http://{EMULATOR}.{RELEASE_NAMESPACE}.svc.cluster.local:{EMULATOR_PORT}"
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

# A target for the receiver: a Pod that prints every body it is sent, one line each.
SINK_SERVER = f"""\
import http.server
class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        print("EVENT " + body.decode(), flush=True)
        self.send_response(204)
        self.end_headers()
http.server.HTTPServer(("", {SINK_PORT}), Sink).serve_forever()
"""


def install_block() -> str:
    (block,) = [b for b in readme_blocks(README.read_text()) if b.runner == "install"]
    return block.text


# The Pods' shape and the emulator's are the sandbox's (`sandbox --kube real` runs the same).
_pod, _service = restricted_pod, service


def emulator_objects(namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The emulator (the Gemini API, key `API_KEY`) as a Pod of the tools image in
    `namespace`, and its Service."""
    image = f"{nodeconfig.IMAGE_REPOSITORIES['tools']}:{TAG}"
    return node_workloads.emulator_objects(namespace, api_key=API_KEY, image=image)


def sink_objects() -> list[dict[str, Any]]:
    image = f"{nodeconfig.IMAGE_REPOSITORIES['product']}:{TAG}"
    labels = {"app": SINK}
    return [
        _pod(SINK, TEAM, image, labels, SINK_PORT, command=["python", "-c", SINK_SERVER]),
        _service(SINK, TEAM, labels, SINK_PORT),
    ]


def received_webhook() -> dict[str, Any]:
    """A GeminiWebhook with a receiver that forwards to the sink; its public port open to
    the emulator's Pod only (as to an ingress controller)."""
    emulator_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}},
        "podSelector": {"matchLabels": EMULATOR_LABELS},
    }
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": RECEIVED, "namespace": TEAM},
        "spec": {
            "displayName": "Received in the cluster",
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": {
                "enabled": True,
                "networkPolicy": {"publicFrom": [emulator_peer]},
                "defaultRoute": {
                    "targets": [{"service": {"name": SINK, "port": SINK_PORT, "path": "/events"}}]
                },
            },
        },
    }


class Install:
    """The README's world on the node: kubectl and helm on the admin's kubeconfig."""

    def __init__(self, cluster: Cluster, home: Path) -> None:
        self.cluster = cluster
        self.helm = Helm(home, RELEASE_NAMESPACE)
        self.helm.env["KUBECONFIG"] = str(cluster.kubeconfig)
        self.values = home / "values.yaml"
        self.values.write_text(yaml.safe_dump(INSTALL_VALUES))

    def shell_env(self) -> dict[str, str]:
        path = os.pathsep.join(
            [str(Path(KUBECTL).parent), str(Path(helm_binary()).parent), os.environ["PATH"]]
        )
        return {**self.helm.env, "PATH": path, "GEMINI_API_KEY": API_KEY}

    def ready_pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.cluster.get("pod", "-n", namespace, name)
        conditions = (found.get("status") or {}).get("conditions") or []
        ok = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        return found if ok else None

    def webhook(self, name: str) -> dict[str, Any]:
        return self.cluster.get(crd.PLURAL, "-n", TEAM, name)

    def emulator(self) -> ControlClient:
        ip = self.cluster.get("service", "-n", RELEASE_NAMESPACE, EMULATOR)["spec"]["clusterIP"]
        return ControlClient(f"http://{ip}:{EMULATOR_PORT}", API_KEY)

    def remote_webhook_ids(self) -> set[str]:
        ip = self.cluster.get("service", "-n", RELEASE_NAMESPACE, EMULATOR)["spec"]["clusterIP"]
        request = urllib.request.Request(
            f"http://{ip}:{EMULATOR_PORT}/v1/webhooks?page_size=1000",
            headers={"x-goog-api-key": API_KEY},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            listed = json.load(answer)
        return {hook["id"] for hook in listed.get("webhooks") or []}

    def sink_events(self) -> list[dict[str, Any]]:
        log = self.cluster.kubectl("logs", "-n", TEAM, SINK)
        return [
            json.loads(line[len("EVENT ") :])
            for line in log.splitlines()
            if line.startswith("EVENT ")
        ]

    def operator_pods(self) -> list[dict[str, Any]]:
        selector = (
            f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator,"
            "app.kubernetes.io/name=gemini-webhook-operator"
        )
        pods = self.cluster.get("pods", "-n", RELEASE_NAMESPACE, "-l", selector)["items"]
        return [p for p in pods if "deletionTimestamp" not in p["metadata"]]

    def cleanup(self) -> None:
        """Leaves the node as the module found it, for the next module on it."""
        releases = self.helm("list", "-q")
        if RELEASE in releases.split():
            self.helm("uninstall", RELEASE, "--wait")
        # With the operator gone, nothing removes the resources' finalizers.
        left = self.cluster.get(crd.PLURAL, "-A")["items"] if self.crd_exists() else []
        for resource in left:
            meta = resource["metadata"]
            self.cluster.kubectl(
                "patch",
                crd.PLURAL,
                "-n",
                meta["namespace"],
                meta["name"],
                "--type=merge",
                "-p",
                '{"metadata": {"finalizers": null}}',
            )
        self.waiting(120, "delete", "namespace", TEAM, RELEASE_NAMESPACE, "--ignore-not-found")
        self.cluster.kubectl("delete", "-f", str(ROOT / "crds"), "--ignore-not-found")

    def waiting(self, within: int, *args: str) -> str:
        """A kubectl command that waits (`wait`, `rollout status`, `delete`) up to `within`
        seconds, and its process a little longer."""
        return self.cluster.kubectl(*args, f"--timeout={within}s", timeout=within + 30)

    def crd_exists(self) -> bool:
        found = self.cluster.kubectl("get", "crd", crd.CRD_NAME, "--ignore-not-found", "-o", "name")
        return bool(found.strip())


@pytest.fixture(scope="module")
def install(real_node: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Install]:
    world = Install(real_node, tmp_path_factory.mktemp("real-install"))
    try:
        yield world
    finally:
        world.cleanup()


def test_the_readme_install_block_runs_as_written_and_the_example_is_ready(
    install: Install,
) -> None:
    started = time.monotonic()
    # The emulator first, in the release namespace (restricted), for the operator to call.
    install.cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": RELEASE_NAMESPACE, "labels": RESTRICTED},
        },
    )
    wait_for(
        "the default ServiceAccount",
        lambda: install.cluster.kubectl("get", "sa", "-n", RELEASE_NAMESPACE, "-o", "name").strip(),
        60,
    )
    install.cluster.apply(*emulator_objects())
    block = install_block()
    assert README_IMAGE in block, "the README's helm install changed: update this test"
    image = nodeconfig.IMAGE_REPOSITORIES["product"]
    script = block.replace(
        README_IMAGE, f"--set image.repository={image} -f {install.values}"
    ).replace(
        f"kubectl create namespace {TEAM}\n",
        f"kubectl create namespace {TEAM}\n"
        f"kubectl label namespace {TEAM} pod-security.kubernetes.io/enforce=restricted\n",
    )
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=install.shell_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "batch-results" in result.stdout  # `kubectl -n team-a get geminiwebhooks`
    # Then, as the README says:
    install.waiting(180, "-n", TEAM, "wait", "--for=condition=Ready", "geminiwebhook/batch-results")
    ready = time.monotonic() - started
    hook = install.webhook("batch-results")
    assert hook["status"]["webhookId"] in install.remote_webhook_ids()
    # The operator: a real Pod with a Pod IP, the chart's security context and the projected
    # token (no kubeconfig anywhere in its spec), admitted under `restricted`.
    (operator,) = install.operator_pods()
    spec = operator["spec"]
    assert spec["securityContext"]["runAsUser"] == 65532
    assert not spec["containers"][0]["securityContext"].get("privileged")
    assert "KUBECONFIG" not in {e["name"] for e in spec["containers"][0].get("env") or []}
    assert any(v.get("projected") for v in spec["volumes"]), "no projected ServiceAccount token"
    assert not operator["status"]["podIP"].startswith("127.")
    print(f"\nREADME install block -> batch-results Ready: {ready:.1f}s")


def test_the_chart_reads_the_api_servers_port_from_the_kubernetes_endpoint_slice(
    install: Install,
) -> None:
    """The API server here listens on a free port, not 443/6443: with
    `networkPolicy.apiServerPorts` unset, `helm install` read it (Helm's lookup, where the
    API serves EndpointSlices) into the operator's policy and handed it to the operator for
    the receivers'. Read back from what the install created, not from a render: a render
    without the cluster's discovery would not take that path."""
    found = install.cluster.get("endpointslice", "-n", "default", "kubernetes")
    ports = sorted(p["port"] for p in found["ports"])
    assert ports and not {443, 6443} & set(ports)
    installed = install.cluster.get(
        "networkpolicy,deployment",
        "-n",
        RELEASE_NAMESPACE,
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
    )["items"]
    (policy,) = [o for o in installed if o["kind"] == "NetworkPolicy"]
    assert sorted(p["port"] for p in policy["spec"]["egress"][1]["ports"]) == [443, *ports]
    (deployment,) = [o for o in installed if o["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--api-server-port=")] == [
        f"--api-server-port={p}" for p in ports
    ]


def test_one_event_goes_emulator_receiver_target_through_the_cluster_exactly_once(
    install: Install,
) -> None:
    install.cluster.apply(*sink_objects(), received_webhook())
    install.waiting(180, "-n", TEAM, "wait", f"geminiwebhook/{RECEIVED}", "--for=condition=Ready")
    hook = install.webhook(RECEIVED)
    # The receiver is a real Pod admitted under `restricted` and registered by its DNS name.
    name = receiver_names.receiver_name(RECEIVED)
    assert hook["status"]["url"] == f"http://{name}.{TEAM}.svc.cluster.local:80/"
    wait_for(
        "the receiver's Deployment available",
        lambda: (install.cluster.get("deployment", "-n", TEAM, name).get("status") or {}).get(
            "availableReplicas"
        ),
        within=180,
    )
    wait_for("the sink Ready", lambda: install.ready_pod(TEAM, SINK), within=120)
    # Its NetworkPolicy lets it reach the API server at the port the server listens on.
    api_ports = {
        p["port"]
        for s in install.cluster.get(
            "endpointslices", "-n", "default", "-l", "kubernetes.io/service-name=kubernetes"
        )["items"]
        for p in s["ports"]
    }
    policy = install.cluster.get("networkpolicy", "-n", TEAM, name)
    allowed = {p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports") or []}
    assert api_ports <= allowed, (api_ports, allowed)

    emulator = install.emulator()
    fired = emulator.fire("batch.succeeded")
    started = time.monotonic()
    (delivery,) = emulator.wait_for_deliveries(
        1, timeout=60, event_id=fired["event_id"], webhook_id=hook["status"]["webhookId"]
    )
    assert delivery["state"] == "delivered", delivery
    # Gemini retries; a failed attempt never reached the sink (the receiver forwards what it
    # verified and answers 200 after), and a repeated one is deduplicated by its webhook-id.
    failed = [a["error"] for a in delivery["attempts"][:-1]]
    assert delivery["attempts"][-1]["status_code"] == 200, delivery
    arrived = wait_for(
        "the event at the sink",
        lambda: [e for e in install.sink_events() if e == fired["envelope"]],
        within=60,
    )
    print(f"\nemulator -> receiver -> sink: {time.monotonic() - started:.2f}s; failed: {failed}")
    assert len(arrived) == 1


@pytest.fixture
def node_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server (Debian's, as the Redis-mode tests start it) on the host, bound
    to loopback and to the host's end of the node's veth, where Pods reach the host."""
    server = RedisServer(tmp_path / "redis", DURABLE_ARGS, also_bind=(NODE_NETWORK.host_ip,))
    server.workdir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_kubectl_gemini_replay_execs_in_a_receiver_pod_and_the_dead_letter_arrives_once(
    install: Install, node_redis: RedisServer
) -> None:
    """Redis mode on the node: an event no route takes is dead-lettered for real; once the
    route exists, `kubectl gemini replay` (the user's kubeconfig, `pods/exec` into a Ready
    receiver Pod, the Pod's own config) moves it back and it arrives at the sink once."""
    name = "replayed"
    redis_url = f"redis://{NODE_NETWORK.host_ip}:{node_redis.port}/0"
    webhook = received_webhook()
    webhook["metadata"]["name"] = name
    webhook["spec"]["events"] = ["batch.failed"]  # RECEIVED's sink gets no copy of it
    receiver = webhook["spec"]["receiver"]
    del receiver["defaultRoute"]  # every event unroutable: a dead letter
    receiver["redis"] = {"url": redis_url}
    deployment = receiver_names.receiver_name(name)

    def replay(*args: str) -> dict[str, Any]:
        """`kubectl gemini replay ARGS -o json` with the admin's kubeconfig: its report."""
        plugin = [executable(), "--kubeconfig", str(install.cluster.kubeconfig), "-n", TEAM]
        result = subprocess.run(
            [*plugin, "replay", *args, "-o", "json"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = json.loads(result.stdout)
        return report

    dead_letters = "gemini-webhooks:dead-letters"
    try:
        install.cluster.apply(webhook)
        install.waiting(180, "-n", TEAM, "wait", f"geminiwebhook/{name}", "--for=condition=Ready")
        install.waiting(180, "-n", TEAM, "rollout", "status", f"deployment/{deployment}")
        fired = install.emulator().fire("batch.failed")
        with node_redis.client() as redis_client:
            wait_for("the dead letter", lambda: redis_client.xlen(dead_letters) == 1, 60)
            # The route now exists: the Deployment rolls; replay once only the new Pod runs.
            route = {"targets": [{"service": {"name": SINK, "port": SINK_PORT, "path": "/r"}}]}
            install.cluster.kubectl(
                "-n",
                TEAM,
                "patch",
                crd.PLURAL,
                name,
                "--type=merge",
                "-p",
                json.dumps({"spec": {"receiver": {"defaultRoute": route}}}),
            )
            install.waiting(
                120, "-n", TEAM, "wait", f"geminiwebhook/{name}", "--for=condition=Ready"
            )
            install.waiting(180, "-n", TEAM, "rollout", "status", f"deployment/{deployment}")
            selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(name).items())
            wait_for(
                "one receiver Pod left",
                lambda: len(install.cluster.get("pods", "-n", TEAM, "-l", selector)["items"]) == 1,
                120,
            )
            started = time.monotonic()
            assert replay(name, "--since", "2999-01-01T00:00:00Z")["replayed"] == 0
            report = replay(name, "--since", "10m")
            assert report["replayed"] == 1 and report["webhook"] == name
            assert report["pod"].startswith(deployment + "-")
            arrived = wait_for(
                "the replayed event at the sink",
                lambda: [e for e in install.sink_events() if e == fired["envelope"]],
                within=60,
            )
            print(
                f"\nkubectl gemini replay (twice) -> at the sink: {time.monotonic() - started:.1f}s"
            )
            assert len(arrived) == 1
            assert redis_client.xlen(dead_letters) == 0
    finally:
        install.cluster.kubectl("delete", "-n", TEAM, crd.PLURAL, name, "--ignore-not-found")


def test_the_receivers_network_policy_is_enforced_both_ways(install: Install) -> None:
    """The NetworkPolicy the operator renders for RECEIVED's receiver, enforced by the node:
    its public port answers the emulator's Pod only (`publicFrom`), its internal port the
    operator's only; from its Pod, the API, cluster DNS and its target answer, and a Pod it
    has no business with does not."""
    selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(RECEIVED).items())
    pods = [
        p
        for p in install.cluster.get("pods", "-n", TEAM, "-l", selector)["items"]
        if "deletionTimestamp" not in p["metadata"] and (p.get("status") or {}).get("podIP")
    ]
    assert pods, "no receiver Pod of RECEIVED"
    receiver = pods[0]
    ip, pod = receiver["status"]["podIP"], receiver["metadata"]["name"]
    public, internal = receiver_names.HTTP_PORT, receiver_names.INTERNAL_PORT
    (operator,) = install.operator_pods()
    operator_pod = operator["metadata"]["name"]
    # Ingress: who may open which port.
    reach = {
        "emulator": (RELEASE_NAMESPACE, EMULATOR),
        "operator": (RELEASE_NAMESPACE, operator_pod),
        "sink": (TEAM, SINK),
    }
    opened = {
        (peer, port): install.cluster.connects(namespace, name, ip, port)
        for peer, (namespace, name) in reach.items()
        for port in (public, internal)
    }
    assert opened == {
        ("emulator", public): True,
        ("emulator", internal): False,
        ("operator", public): False,
        ("operator", internal): True,
        ("sink", public): False,
        ("sink", internal): False,
    }, opened
    # Egress, from the receiver's own Pod: the API (the `kubernetes` Service), its target by
    # its DNS name (cluster DNS on the way), and not the emulator's Pod.
    emulator_ip = install.cluster.get("pod", "-n", RELEASE_NAMESPACE, EMULATOR)["status"]["podIP"]
    sink_name = f"{SINK}.{TEAM}.svc.cluster.local"
    assert install.cluster.connects(TEAM, pod, "kubernetes.default.svc.cluster.local", 443)
    assert install.cluster.connects(TEAM, pod, sink_name, SINK_PORT)
    assert not install.cluster.connects(TEAM, pod, emulator_ip, EMULATOR_PORT)


def test_the_kubelet_killed_pods_keep_serving_and_it_is_restarted_and_takes_them_up(
    install: Install,
) -> None:
    """SIGKILL of the kubelet (a crash; systemd would restart it on a real node, and so does
    our node): while it is gone the Pods run on and serve, so events keep arriving at the
    sink through the receiver; the restarted kubelet takes the same containers up again (no
    container restarted or replaced), the Node is Ready, and `kubectl exec` (through the
    kubelet) works."""
    old = install.cluster.node_process("kubelet")
    assert old is not None, "no kubelet of this node"

    def containers() -> dict[str, tuple[str, int]]:
        pods = install.cluster.get("pods", "-n", TEAM)["items"]
        return {
            p["metadata"]["name"]: (s["containerID"], s["restartCount"])
            for p in pods
            for s in (p.get("status") or {}).get("containerStatuses") or []
        }

    before = containers()
    emulator = install.emulator()
    hook = install.webhook(RECEIVED)
    killed = time.monotonic()
    os.kill(old, signal.SIGKILL)
    fired, gone = [], []
    new: int | None = None
    while time.monotonic() - killed < 10 or new is None:
        assert time.monotonic() - killed < 120, "the kubelet was not started again"
        new = install.cluster.node_process("kubelet")
        fired.append(emulator.fire("batch.succeeded"))
        if new in (None, old):
            gone.append(fired[-1]["event_id"])  # fired while no kubelet ran
        time.sleep(0.2)
    back = time.monotonic() - killed
    delivered = [
        emulator.wait_for_deliveries(
            1, timeout=60, event_id=event["event_id"], webhook_id=hook["status"]["webhookId"]
        )[0]
        for event in fired
    ]
    assert all(d["state"] == "delivered" for d in delivered), delivered
    arrived = {json.dumps(e, sort_keys=True) for e in install.sink_events()}
    missing = [
        e["event_id"] for e in fired if json.dumps(e["envelope"], sort_keys=True) not in arrived
    ]
    assert not missing, missing
    node = wait_for(
        "the Node Ready again",
        lambda: next(
            (
                c
                for c in install.cluster.get("nodes")["items"][0]["status"]["conditions"]
                if c["type"] == "Ready" and c["status"] == "True"
            ),
            None,
        ),
        within=120,
    )
    assert containers() == before, (before, containers())
    assert install.cluster.connects(TEAM, SINK, "127.0.0.1", SINK_PORT)  # exec, via the kubelet
    print(
        f"\nkubelet SIGKILL: started again as pid {new}, {back:.1f}s; {len(fired)} events "
        f"delivered through the receiver meanwhile, {len(gone)} of them while no kubelet ran; "
        f"Node Ready ({node['reason']}), {len(before)} containers unchanged"
    )
    assert gone, "every event was fired with a kubelet running: the test showed nothing"


LOADED, FAST_SINK = "loaded", "fast-sink"  # the GeminiWebhook under load, its target
LOAD_SECONDS, LOAD_CONNECTIONS = 10, 32  # bench/receiver/run.py's connections


def test_a_receiver_pod_under_the_benchmark_load_stays_under_its_memory_limit(
    install: Install, tmp_path: Path
) -> None:
    """The receiver benchmark's load (wrk, 32 connections, unique signed deliveries) from
    the host through the receiver's Service, against a receiver Pod as the operator renders
    it, under its default memory limit, forwarding every event to a fast target Pod: every
    delivery answered 2xx, its working set sampled against the limit, no OOM kill."""
    sink = _pod(
        FAST_SINK,
        TEAM,
        f"{nodeconfig.IMAGE_REPOSITORIES['product']}:{TAG}",
        {"app": FAST_SINK},
        SINK_PORT,
        command=["python", "-c", (ROOT / "bench" / "receiver" / "sink.py").read_text()],
        args=[str(SINK_PORT), "0.0.0.0"],
    )
    webhook = received_webhook()
    webhook["metadata"]["name"] = LOADED
    receiver = webhook["spec"]["receiver"]
    receiver["networkPolicy"] = {"enabled": False}  # the load comes from the host
    target = {"service": {"name": FAST_SINK, "port": SINK_PORT, "path": "/events"}}
    receiver["defaultRoute"] = {"targets": [target]}
    name = receiver_names.receiver_name(LOADED)
    try:
        install.cluster.apply(
            sink, _service(FAST_SINK, TEAM, {"app": FAST_SINK}, SINK_PORT), webhook
        )
        install.waiting(180, "-n", TEAM, "wait", f"geminiwebhook/{LOADED}", "--for=condition=Ready")
        install.waiting(180, "-n", TEAM, "rollout", "status", f"deployment/{name}")
        wait_for("the fast sink Ready", lambda: install.ready_pod(TEAM, FAST_SINK), within=120)
        hook = install.webhook(LOADED)
        held = decode_data(
            install.cluster.get("secret", "-n", TEAM, hook["status"]["signingSecretName"])["data"]
        )
        assert held.current is not None
        deliveries = tmp_path / "deliveries.tsv"
        write_deliveries(deliveries, held.current.secret, 150_000)
        selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(LOADED).items())
        (pod,) = install.cluster.get("pods", "-n", TEAM, "-l", selector)["items"]
        memory = MemoryCgroup(main_process(pod))
        limit = memory.limit()
        cluster_ip = install.cluster.get("service", "-n", TEAM, name)["spec"]["clusterIP"]
        url = urllib.parse.urlsplit(hook["status"]["url"])
        samples: list[int] = []
        env = dict(os.environ, BENCH_FILE=str(deliveries), BENCH_OFFSET="0", BENCH_PATH=url.path)
        wrk = subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{LOAD_CONNECTIONS}",
                f"-d{LOAD_SECONDS}s",
                "--timeout",
                "5s",
                "-s",
                str(ROOT / "bench" / "receiver" / "deliveries.lua"),
                f"http://{cluster_ip}:{url.port or 80}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        while wrk.poll() is None:
            samples.append(memory.working_set())
            time.sleep(0.2)
        out = wrk.communicate()[0]
        line = next(x for x in out.splitlines() if x.startswith("BENCH_RESULT"))
        result = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
        status = install.cluster.get("pod", "-n", TEAM, pod["metadata"]["name"])["status"]
        restarts = status["containerStatuses"][0]["restartCount"]
        mib = 1 << 20
        rate = result["requests"] / (result["duration_us"] / 1e6)
        print(
            f"\nreceiver Pod under load (real node, through its Service from the host): "
            f"{rate:.0f} req/s, p50 {result['p50_us'] / 1000:.2f} ms, p99 "
            f"{result['p99_us'] / 1000:.2f} ms, {result['non2xx']} non-2xx, {result['errors']} "
            f"errors; working set peak {max(samples) / mib:.1f} MiB (idle "
            f"{samples[0] / mib:.1f}) of its {limit / mib:.0f} MiB limit, peak usage "
            f"(page cache included) {memory.peak_usage() / mib:.1f} MiB, OOM kills "
            f"{memory.oom_kills()}, restarts {restarts}"
        )
        assert result["requests"] > 0 and result["non2xx"] == 0 and result["errors"] == 0, result
        assert limit == 320 * mib  # the operator's default for a receiver
        assert max(samples) < limit and memory.oom_kills() == 0 and restarts == 0
    finally:
        install.cluster.kubectl("delete", "-n", TEAM, crd.PLURAL, LOADED, "--ignore-not-found")
        install.cluster.kubectl(
            "delete", "-n", TEAM, "pod,service", FAST_SINK, "--ignore-not-found", timeout=120
        )


def test_the_operators_network_policy_is_enforced_and_it_still_reaches_api_and_emulator(
    install: Install,
) -> None:
    (operator,) = install.operator_pods()
    ip = operator["status"]["podIP"]
    # From another namespace, the metrics port is shut; the health port (the kubelet's probes)
    # answers, so the Pod is reachable and the policy is what shuts the first.
    assert install.cluster.connects(TEAM, SINK, ip, VALUES["healthPort"])
    assert not install.cluster.connects(TEAM, SINK, ip, VALUES["metricsPort"])
    # Its egress: the API (it holds the Lease and keeps renewing it) and the emulator (the
    # webhooks above are Ready, and a change reaches the remote now).
    lease = install.cluster.get("lease", "-n", RELEASE_NAMESPACE, DEPLOYMENT)
    assert lease["spec"]["holderIdentity"] == operator["metadata"]["name"]
    install.cluster.kubectl(
        "-n",
        TEAM,
        "patch",
        crd.PLURAL,
        "batch-results",
        "--type=merge",
        "-p",
        '{"spec": {"events": ["batch.succeeded", "batch.failed"]}}',
    )
    install.waiting(
        120,
        "-n",
        TEAM,
        "wait",
        "geminiwebhook/batch-results",
        "--for=jsonpath={.status.observedGeneration}=2",
    )
    wait_for(
        "the Lease renewed",
        lambda: (
            install.cluster.get("lease", "-n", RELEASE_NAMESPACE, DEPLOYMENT)["spec"]["renewTime"]
            != lease["spec"]["renewTime"]
        ),
        within=60,
        every=1,
    )


EXPOSED, EXPOSED_HOST, EXPOSED_PATH = "exposed", "hooks.team-a.example", "/gemini/exposed"
INGRESS_ADDRESS = "192.0.2.10"  # TEST-NET-1: an address the test writes as a controller would
ROUTED, ROUTED_HOST, ROUTED_PATH = "routed", "routes.team-a.example", "/gemini/routed"
# The Gateway the HTTPRoute attaches to (none runs: the test writes its controller's verdict).
GATEWAY = {"name": "public", "namespace": "gateway-system", "sectionName": "https"}
GATEWAY_CONTROLLER = "example.net/gateway-controller"


def exposed_webhook(name: str, expose: dict[str, Any]) -> dict[str, Any]:
    """A GeminiWebhook whose receiver is reached through `expose` (its public port open to
    the ingress controller's namespace, the operator's default), forwarding to the sink."""
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": TEAM},
        "spec": {
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": {
                "enabled": True,
                "expose": expose,
                "defaultRoute": {
                    "targets": [{"service": {"name": SINK, "port": SINK_PORT, "path": "/events"}}]
                },
            },
        },
    }


def not_ready_reason(install: Install, name: str) -> str | None:
    """The reason of the resource's `Ready=False` condition; None while it has none."""
    conditions = (install.webhook(name).get("status") or {}).get("conditions") or []
    ready = next((c for c in conditions if c["type"] == "Ready"), None)
    return ready["reason"] if ready and ready["status"] == "False" else None


def running_receiver_pods(install: Install, name: str) -> list[dict[str, Any]]:
    """The Pods of the resource's receiver whose container runs."""
    selector = ",".join(f"{k}={v}" for k, v in receiver_names.selector_labels(name).items())
    pods = install.cluster.get("pods", "-n", TEAM, "-l", selector)["items"]
    return [
        p
        for p in pods
        if any(
            "running" in (c.get("state") or {}) for c in p["status"].get("containerStatuses") or []
        )
    ]


def check_receiver_runs_unregistered(install: Install, name: str) -> None:
    """While its route waits, the resource's receiver runs (real Pods admitted under
    `restricted`, as UID 65532), not Ready: it holds no signing secret, as no webhook is
    registered."""
    pods = wait_for(
        f"the receiver Pods of {name} running",
        lambda: running_receiver_pods(install, name),
        within=180,
    )
    assert all(p["spec"]["securityContext"]["runAsUser"] == 65532 for p in pods)
    assert "webhookId" not in (install.webhook(name).get("status") or {})


def ready_and_registered(install: Install, name: str, url: str) -> dict[str, Any]:
    """The resource once Ready with `url`, its receiver available (holding its signing
    secret now) and its webhook known to the emulator."""
    install.waiting(120, "-n", TEAM, "wait", f"geminiwebhook/{name}", "--for=condition=Ready")
    hook = install.webhook(name)
    assert hook["status"]["url"] == url
    deployment = receiver_names.receiver_name(name)
    wait_for(
        f"the receiver Deployment of {name} available",
        lambda: (install.cluster.get("deployment", "-n", TEAM, deployment).get("status") or {}).get(
            "availableReplicas"
        ),
        within=120,
    )
    assert hook["status"]["webhookId"] in install.remote_webhook_ids()
    return hook


def test_the_ingress_variant_runs_restricted_and_is_registered_once_its_controller_admits_it(
    install: Install,
) -> None:
    """No ingress controller runs on the node: the test writes the Ingress's address into
    its status as a controller would (a test double of the controller's status write, and
    only that), after checking the operator waits for it and registers nothing before."""
    ingress = {
        "host": EXPOSED_HOST,
        "path": EXPOSED_PATH,
        "tls": {"issuer": {"name": "letsencrypt", "kind": "ClusterIssuer"}},
    }
    install.cluster.apply(exposed_webhook(EXPOSED, {"ingress": ingress}))
    name = receiver_names.receiver_name(EXPOSED)
    reason = wait_for(
        "the resource waiting for its Ingress", lambda: not_ready_reason(install, EXPOSED), 120
    )
    assert reason == "WaitingForIngressAddress", install.webhook(EXPOSED).get("status")
    check_receiver_runs_unregistered(install, EXPOSED)
    # The Ingress as the API server stored it: our host and exact path to the receiver's
    # public Service, TLS from the Secret cert-manager fills, its issuer named.
    (stored,) = install.cluster.get("ingress", "-n", TEAM)["items"]
    (rule,) = stored["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert (rule["host"], path["path"], path["pathType"]) == (EXPOSED_HOST, EXPOSED_PATH, "Exact")
    backend = path["backend"]["service"]
    service = install.cluster.get("service", "-n", TEAM, backend["name"])
    assert backend["port"]["number"] in {p["port"] for p in service["spec"]["ports"]}
    assert stored["metadata"]["annotations"]["cert-manager.io/cluster-issuer"] == "letsencrypt"
    assert stored["spec"]["tls"] == [{"hosts": [EXPOSED_HOST], "secretName": f"{name}-tls"}]
    # The controller takes it: the URL is registered with Gemini, and the resource is Ready.
    status = {"status": {"loadBalancer": {"ingress": [{"ip": INGRESS_ADDRESS}]}}}
    install.cluster.kubectl(
        "patch",
        "ingress",
        "-n",
        TEAM,
        stored["metadata"]["name"],
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    hook = ready_and_registered(install, EXPOSED, f"https://{EXPOSED_HOST}{EXPOSED_PATH}")
    install.waiting(120, "-n", TEAM, "delete", crd.PLURAL, EXPOSED)
    assert hook["status"]["webhookId"] not in install.remote_webhook_ids()


def accepted_by_gateway(route: dict[str, Any]) -> dict[str, Any]:
    """The status a Gateway controller writes for an HTTPRoute it takes: Accepted and
    ResolvedRefs for each of its parentRefs, at the route's current generation."""
    generation = route["metadata"]["generation"]
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": kind,
            "message": "",
            "observedGeneration": generation,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        for kind in ("Accepted", "ResolvedRefs")
    ]
    parents = [
        {"parentRef": ref, "controllerName": GATEWAY_CONTROLLER, "conditions": conditions}
        for ref in route["spec"]["parentRefs"]
    ]
    return {"status": {"parents": parents}}


def test_the_http_route_variant_runs_restricted_and_is_registered_once_its_gateway_accepts_it(
    install: Install,
) -> None:
    """The Gateway API CRDs (the pinned module's) installed while the operator runs; no
    Gateway controller runs on the node: the test writes the HTTPRoute's status as one would
    (a test double of the controller's status write, and only that), after checking the
    operator waits for it and registers nothing before."""
    started = time.monotonic()
    gateway_api.install(install.cluster)
    try:
        registered = install.remote_webhook_ids()
        route = {"parentRefs": [GATEWAY], "hostnames": [ROUTED_HOST], "path": ROUTED_PATH}
        install.cluster.apply(exposed_webhook(ROUTED, {"httpRoute": route}))
        name = receiver_names.receiver_name(ROUTED)

        # The operator learns of a kind installed since it last looked at its next discovery
        # (within 30 s): until then, the route's kind is not served.
        def route_reason() -> str | None:
            reason = not_ready_reason(install, ROUTED)
            return None if reason == "RouteKindNotServed" else reason

        reason = wait_for("the resource waiting for its HTTPRoute", route_reason, within=120)
        assert reason == "WaitingForRouteAccepted", install.webhook(ROUTED).get("status")
        waited = time.monotonic() - started
        check_receiver_runs_unregistered(install, ROUTED)
        assert install.remote_webhook_ids() == registered
        # The HTTPRoute as the API server stored it (the CRD's defaults filled in): our
        # hostname, the exact path for POST, our Gateway's listener, the receiver's public
        # Service at its port.
        stored = install.cluster.get("httproute", "-n", TEAM, name)
        spec = stored["spec"]
        assert spec["hostnames"] == [ROUTED_HOST]
        (parent,) = spec["parentRefs"]
        assert parent == {**GATEWAY, "group": "gateway.networking.k8s.io", "kind": "Gateway"}
        (rule,) = spec["rules"]
        (match,) = rule["matches"]
        assert match == {"path": {"type": "Exact", "value": ROUTED_PATH}, "method": "POST"}
        (backend,) = rule["backendRefs"]
        service = install.cluster.get("service", "-n", TEAM, name)
        (public,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
        assert (backend["name"], backend["port"], backend.get("kind", "Service")) == (
            name,
            public,
            "Service",
        )
        # The Gateway takes it: the URL is registered with Gemini, and the resource is Ready.
        install.cluster.kubectl(
            "patch",
            "httproute",
            "-n",
            TEAM,
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(accepted_by_gateway(stored)),
        )
        hook = ready_and_registered(install, ROUTED, f"https://{ROUTED_HOST}{ROUTED_PATH}")
        assert install.remote_webhook_ids() == registered | {hook["status"]["webhookId"]}
        install.waiting(120, "-n", TEAM, "delete", crd.PLURAL, ROUTED)
        assert install.remote_webhook_ids() == registered
        print(
            f"\nHTTPRoute variant: Gateway API CRDs installed -> waiting for its route "
            f"{waited:.1f}s; whole test {time.monotonic() - started:.1f}s"
        )
    finally:
        install.cluster.kubectl("delete", "-n", TEAM, crd.PLURAL, ROUTED, "--ignore-not-found")
        gateway_api.uninstall(install.cluster)


def test_helm_test_passes(install: Install) -> None:
    # As docs/deploy.md runs it: once the rollout is complete (the Service then has a ready
    # endpoint; before, kube-proxy refuses connections to it).
    install.waiting(300, "-n", RELEASE_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}")
    output = install.helm("test", RELEASE, "--logs", timeout=300)
    assert "Phase:          Succeeded" in output and "operator healthy" in output, output


def test_helm_upgrade_rolls_out_and_the_webhooks_stay_ready(install: Install) -> None:
    (old,) = install.operator_pods()
    started = time.monotonic()
    install.helm(
        "upgrade",
        RELEASE,
        str(CHART_DIR),
        "--reuse-values",
        "--set",
        "replicaCount=2",
        "--set",
        "operator.verbose=true",
    )
    install.waiting(300, "-n", RELEASE_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}")
    rolled = time.monotonic() - started
    pods = install.operator_pods()
    names = {p["metadata"]["name"] for p in pods}
    assert len(pods) == 2 and old["metadata"]["name"] not in names
    assert all("--verbose" in p["spec"]["containers"][0]["args"] for p in pods)
    # One of the new replicas takes the Lease and acts: the webhooks stay Ready, and an
    # event still arrives once.
    wait_for(
        "a new replica holds the Lease",
        lambda: (
            install.cluster.get("lease", "-n", RELEASE_NAMESPACE, DEPLOYMENT)["spec"].get(
                "holderIdentity"
            )
            in names
        ),
        within=120,
        every=1,
    )
    for name in ("batch-results", RECEIVED):
        install.waiting(60, "-n", TEAM, "wait", f"geminiwebhook/{name}", "--for=condition=Ready")
    fired = install.emulator().fire("batch.succeeded")
    wait_for(
        "the second event at the sink",
        lambda: [e for e in install.sink_events() if e == fired["envelope"]],
        within=60,
    )
    print(f"\nhelm upgrade -> rollout complete: {rolled:.1f}s")


def test_helm_uninstall_removes_the_operator_and_leaves_resources_secrets_and_crd(
    install: Install,
) -> None:
    # docs/deploy.md §8: delete the resources first when the remote webhooks should go.
    received_id = install.webhook(RECEIVED)["status"]["webhookId"]
    install.waiting(120, "-n", TEAM, "delete", crd.PLURAL, RECEIVED)
    assert received_id not in install.remote_webhook_ids()
    kept = install.webhook("batch-results")
    install.helm("uninstall", RELEASE, "--wait")
    chart_objects = [
        ("deployment", RELEASE_NAMESPACE, DEPLOYMENT),
        ("serviceaccount", RELEASE_NAMESPACE, DEPLOYMENT),
        ("networkpolicy", RELEASE_NAMESPACE, DEPLOYMENT),
        ("lease", RELEASE_NAMESPACE, DEPLOYMENT),
        ("clusterrole", None, DEPLOYMENT),
        ("clusterrolebinding", None, DEPLOYMENT),
    ]
    for kind, namespace, name in chart_objects:
        where = ["-n", namespace] if namespace else []
        left = install.cluster.kubectl(
            "get", kind, *where, name, "--ignore-not-found", "-o", "name"
        )
        assert left.strip() == "", f"{kind} {name} left after helm uninstall"
    # What stays: the resource, its signing-secret Secret, the CRD (and the remote webhook).
    assert install.webhook("batch-results")["metadata"]["uid"] == kept["metadata"]["uid"]
    secret = kept["status"]["signingSecretName"]
    assert install.cluster.kubectl("get", "secret", "-n", TEAM, secret, "-o", "name").strip()
    assert install.crd_exists()
    assert kept["status"]["webhookId"] in install.remote_webhook_ids()
