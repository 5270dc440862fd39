"""`scripts/control-plane up --node real`: our image as real Pods on a real kubelet node —
restricted Pod Security, a Pod IP in Endpoints and EndpointSlices, a ClusterIP that answers
from the host and from a Pod, cluster DNS, the in-cluster API path, a memory limit the
kernel enforces, the operator's NetworkPolicy enforced — and `down` leaves the machine as
it found it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gemini_webhook_operator import receiver_exposure
from gemini_webhooks.contracts.crd_receiver import ReceiverSpec
from gemini_webhooks.controlplane import nodeconfig
from gemini_webhooks.controlplane.cluster import NODE_NAME
from tests.chart.container import build_images
from tests.fixtures.real_node import Cluster, host_snapshot, wait_for
from tests.test_readme import README, readme_blocks

pytestmark = [pytest.mark.real_component, pytest.mark.late_build, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((ROOT / "charts/gemini-webhook-operator/values.yaml").read_text())
NAMESPACE = "real-node"
IMAGE = f"{nodeconfig.IMAGE_REPOSITORIES['product']}:0.1.0"
SERVE_PORT = 8080
PUBLIC_PORT, INTERNAL_PORT = "http", "internal"  # as receiver_resources names them
CALLER = {"role": "caller"}
CLIENT_API = """\
import json, os, ssl, urllib.request
account = "/var/run/secrets/kubernetes.io/serviceaccount"
context = ssl.create_default_context(cafile=f"{account}/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
request = urllib.request.Request(
    f"https://{host}:{port}/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=b'{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}',
    headers={"Authorization": "Bearer " + open(f"{account}/token").read(),
             "Content-Type": "application/json"},
    method="POST",
)
review = json.load(urllib.request.urlopen(request, context=context, timeout=10))
print(review["status"]["userInfo"]["username"])
"""


@pytest.fixture(scope="module")
def cluster(real_node: Cluster) -> Cluster:
    """The session's real node (tests/fixtures/real_node.py)."""
    return real_node


def pod(name: str, labels: dict[str, str], args: list[str], **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "spec": {
            "securityContext": VALUES["podSecurityContext"],
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["python", *args],
                    "securityContext": VALUES["securityContext"],
                    **container,
                }
            ],
        },
    }


def exec_python(cluster: Cluster, pod: str, code: str) -> str:
    return cluster.kubectl("exec", "-n", NAMESPACE, pod, "--", "python", "-c", code)


def ready(cluster: Cluster, name: str) -> dict[str, Any] | None:
    found = cluster.get("pod", "-n", NAMESPACE, name)
    conditions = found.get("status", {}).get("conditions", [])
    return (
        found if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions) else None
    )


@pytest.fixture(scope="module")
def serving(cluster: Cluster) -> dict[str, Any]:
    """A restricted namespace, a Pod of our image serving HTTP, its Service, a client Pod."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": NAMESPACE,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        }
    )
    wait_for(
        "the default ServiceAccount",
        lambda: cluster.kubectl("get", "sa", "-n", NAMESPACE, "-o", "name").strip(),
        60,
    )
    created = time.monotonic()
    cluster.apply(
        pod(
            "web",
            {"app": "web"},
            ["-m", "http.server", str(SERVE_PORT), "--directory", "/opt/venv"],
            # Named as the receiver's public port, which the operator's NetworkPolicy names.
            ports=[{"containerPort": SERVE_PORT, "name": PUBLIC_PORT}],
            readinessProbe={"httpGet": {"path": "/", "port": SERVE_PORT}, "periodSeconds": 1},
            resources={"limits": {"cpu": "500m", "memory": "128Mi"}},
        ),
        pod("client", {"app": "client"}, ["-c", "import time; time.sleep(3600)"]),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": SERVE_PORT}]},
        },
    )
    web = wait_for("Pod web Ready", lambda: ready(cluster, "web"), within=180)
    first_ready = time.monotonic() - created
    wait_for("Pod client Ready", lambda: ready(cluster, "client"), within=180)
    node_ready = [line for line in cluster.log.read_text().splitlines() if "ready in" in line]
    print(f"\n`up --node real` {cluster.up_seconds:.1f}s; {node_ready[-1]}")
    print(f"a first Pod created -> Ready {first_ready:.1f}s")
    return web


def test_our_image_runs_restricted_with_a_pod_ip_in_endpoints(
    cluster: Cluster, serving: dict[str, Any]
) -> None:
    ip = serving["status"]["podIP"]
    assert ip and not ip.startswith("127.")
    slices = wait_for(
        "the EndpointSlice carries the Pod IP",
        lambda: [
            s
            for s in cluster.get(
                "endpointslices", "-n", NAMESPACE, "-l", "kubernetes.io/service-name=web"
            )["items"]
            if any(ip in e.get("addresses", []) for e in s.get("endpoints") or [])
        ],
        within=60,
    )
    assert slices
    endpoints = cluster.get("endpoints", "-n", NAMESPACE, "web")
    assert [a["ip"] for s in endpoints["subsets"] for a in s["addresses"]] == [ip]
    # The kubernetes Service's endpoints are the API server's, reconciled again.
    api = cluster.get("endpoints", "-n", "default", "kubernetes")
    assert [a["ip"] for s in api["subsets"] for a in s["addresses"]] == [
        nodeconfig.NODE_NETWORK.host_ip
    ]


def test_a_cluster_ip_answers_from_the_host_and_from_a_pod_by_its_dns_name(
    cluster: Cluster, serving: dict[str, Any]
) -> None:
    cluster_ip = cluster.get("service", "-n", NAMESPACE, "web")["spec"]["clusterIP"]
    fetch = (
        "import urllib.request, sys; print(urllib.request.urlopen(sys.argv[1], timeout=5).status)"
    )

    def from_host() -> subprocess.CompletedProcess[str] | None:
        fetched = subprocess.run(
            [sys.executable, "-c", fetch, f"http://{cluster_ip}/"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return fetched if fetched.stdout.strip() == "200" else None

    # kube-proxy programs the Service's rules when it sees them, a moment after the
    # EndpointSlice exists; until then the node answers "network unreachable".
    wait_for("the ClusterIP answers the host", from_host, within=60, every=1)
    name = f"web.{NAMESPACE}.svc.cluster.local"
    in_pod = (
        "import socket, urllib.request; "
        f"print(socket.gethostbyname({name!r})); "
        f"print(urllib.request.urlopen('http://{name}/', timeout=5).status)"
    )
    resolved, status = exec_python(cluster, "client", in_pod).split()
    assert (resolved, status) == (cluster_ip, "200")


def test_a_pod_reaches_the_api_with_its_projected_service_account_token(
    cluster: Cluster, serving: dict[str, Any]
) -> None:
    assert (
        exec_python(cluster, "client", CLIENT_API).strip()
        == f"system:serviceaccount:{NAMESPACE}:default"
    )


def test_a_container_allocating_past_its_memory_limit_is_oom_killed(
    cluster: Cluster, serving: dict[str, Any]
) -> None:
    cluster.apply(
        pod(
            "hog",
            {"app": "hog"},
            ["-c", "chunks = [bytearray(16 << 20) for _ in range(64)]"],
            resources={"limits": {"cpu": "500m", "memory": "64Mi"}},
        )
    )

    def terminated() -> dict[str, Any] | None:
        statuses = (
            cluster.get("pod", "-n", NAMESPACE, "hog")
            .get("status", {})
            .get("containerStatuses", [])
        )
        return next(
            (s["state"]["terminated"] for s in statuses if "terminated" in s["state"]), None
        )

    state = wait_for("the hog terminated", terminated, within=180)
    assert (state["reason"], state["exitCode"]) == ("OOMKilled", 137)


def connects(cluster: Cluster, pod_name: str, ip: str, port: int) -> bool:
    return cluster.connects(NAMESPACE, pod_name, ip, port)


def receiver_policy() -> dict[str, Any]:
    """The NetworkPolicy the operator renders for a receiver whose public port only Pods
    labelled `CALLER` may reach, around the `web` Pod."""
    spec = ReceiverSpec.model_validate(
        {"networkPolicy": {"publicFrom": [{"podSelector": {"matchLabels": CALLER}}]}}
    )
    policy = receiver_exposure.network_policy(
        spec,
        {"name": "web", "namespace": NAMESPACE},
        selector={"app": "web"},
        settings=receiver_exposure.NetworkPolicySettings(),
        public_port=PUBLIC_PORT,
        internal_port=INTERNAL_PORT,
    )
    assert policy is not None
    return policy


def api_egress_policy(cluster: Cluster) -> dict[str, Any]:
    """Egress from the `web` Pod to the API server's own endpoint (the `kubernetes`
    Endpoints: its address and port)."""
    api = cluster.get("endpoints", "-n", "default", "kubernetes")["subsets"][0]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "web-api", "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [{"ipBlock": {"cidr": f"{a['ip']}/32"}} for a in api["addresses"]],
                    "ports": [{"protocol": "TCP", "port": p["port"]} for p in api["ports"]],
                }
            ],
        },
    }


def test_the_operators_network_policy_is_enforced_by_the_node(
    cluster: Cluster, serving: dict[str, Any]
) -> None:
    """kube-router enforces the rendered policy in the node's namespace: the receiver's
    public port answers only Pods with the allowed label; its egress reaches DNS, not what
    the policy does not name, and the API once the API server's own port is allowed."""
    ip = serving["status"]["podIP"]
    node_ip, kubelet_port = nodeconfig.NODE_NETWORK.node_ip, nodeconfig.KUBELET_HEALTHZ_PORT
    # No policy yet: both open.
    assert connects(cluster, "client", ip, SERVE_PORT)
    assert connects(cluster, "web", node_ip, kubelet_port)
    cluster.apply(receiver_policy())
    applied = time.monotonic()
    try:
        wait_for(
            "the unlabelled client shut out of the public port",
            lambda: not connects(cluster, "client", ip, SERVE_PORT),
            within=90,
            every=1,
        )
        shut_out = time.monotonic() - applied
        host_rules = subprocess.run(
            ["nft", "list", "ruleset"], capture_output=True, text=True, check=True
        ).stdout
        node_rules = subprocess.run(
            ["nsenter", f"--net={cluster.node_namespace}", "--", "iptables-save", "-t", "filter"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "KUBE-NWPLCY" in node_rules and "KUBE-NWPLCY" not in host_rules
        cluster.kubectl("label", "pod", "-n", NAMESPACE, "client", "role=caller")
        labelled = time.monotonic()
        wait_for(
            "the labelled client let in",
            lambda: connects(cluster, "client", ip, SERVE_PORT),
            within=90,
            every=1,
        )
        print(
            f"policy applied -> unlabelled Pod shut out within {shut_out:.1f}s; "
            f"labelled -> let in within {time.monotonic() - labelled:.1f}s"
        )
        # The server's own egress: what the policy does not name is shut (the kubelet's port
        # on the node), and so is the API: the API server listens on a free port here, not
        # on the 443/6443 the operator allows for it, and policies see a Service's traffic
        # after kube-proxy's DNAT, at the endpoint's port.
        assert not connects(cluster, "web", node_ip, kubelet_port)
        with pytest.raises(RuntimeError, match="URLError"):
            exec_python(cluster, "web", CLIENT_API)
        # A second policy (policies add up) allows the API server's own endpoint, as a
        # cluster whose API server listens elsewhere needs; then DNS by name and the API.
        cluster.apply(api_egress_policy(cluster))
        name = f"web.{NAMESPACE}.svc.cluster.local"
        resolved = exec_python(
            cluster, "web", f"import socket; print(socket.gethostbyname({name!r}))"
        )
        assert (
            resolved.strip() == cluster.get("service", "-n", NAMESPACE, "web")["spec"]["clusterIP"]
        )
        assert (
            wait_for(
                "the API reached with the API server's port allowed",
                lambda: api_username(cluster, "web"),
                within=60,
                every=1,
            )
            == f"system:serviceaccount:{NAMESPACE}:default"
        )
    finally:
        cluster.kubectl(
            "delete", "networkpolicy", "-n", NAMESPACE, "web", "web-api", "--ignore-not-found"
        )
        cluster.kubectl("label", "pod", "-n", NAMESPACE, "client", "role-")


def api_username(cluster: Cluster, pod_name: str) -> str | None:
    """Who the API says the Pod is, or None while it cannot reach the API."""
    try:
        return exec_python(cluster, pod_name, CLIENT_API).strip()
    except RuntimeError:
        return None


def test_a_second_real_node_is_refused_and_the_first_keeps_serving(
    cluster: Cluster, serving: dict[str, Any], tmp_path: Path
) -> None:
    """A second `up --node real` on the machine (another checkout, a CI job beside a
    developer's run) would clear the first node's veth pair, cgroups and Pods by their fixed
    names: it is refused at once, naming the node that runs, and touches nothing of it."""
    before = host_snapshot(cluster.directory.parent)
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "gemini_webhooks.controlplane",
            "up",
            "--dir",
            str(tmp_path / "cp"),
            "--images",
            str(cluster.directory.parent / "images"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert second.returncode == 1, second.stdout + second.stderr
    said = second.stdout + second.stderr
    assert "another real node runs on this machine" in said, said
    assert f"pid {cluster.process.pid}, real node " in said, said
    assert "Traceback" not in said, said
    assert host_snapshot(cluster.directory.parent) == before
    assert ready(cluster, "web")  # its Pods still run and serve
    assert cluster.connects(NAMESPACE, "client", serving["status"]["podIP"], SERVE_PORT)


def test_down_leaves_nothing_behind(cluster: Cluster) -> None:
    cluster.down()
    after = host_snapshot(cluster.directory.parent)
    assert after == cluster.before
    leftovers = subprocess.run(
        ["pgrep", "-f", str(cluster.directory.parent)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""


def test_ctrl_c_of_a_program_holding_a_real_node_leaves_nothing_behind(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Ctrl-C reaches a terminal's whole foreground process group: a program holding a real
    node by `running_node` (bench/operator --kube node does) is interrupted, and the node is
    taken down in full. (`up` must not get its own SIGINT: the SIGTERM that follows would
    reach it mid-teardown and kill it there.) After `down` above: one node per machine."""
    assert cluster.process.poll() is not None, "the session's node still runs"
    tmp_path = tmp_path_factory.mktemp("ctrl-c")  # short: containerd's socket paths are bound
    ready = tmp_path / "ready"
    holder = (
        "import time\n"
        "from pathlib import Path\n"
        "from tests.fixtures.real_node import running_node\n"
        f"with running_node(Path({str(tmp_path / 'control-plane')!r})):\n"
        f"    Path({str(ready)!r}).touch()\n"
        "    time.sleep(600)\n"
    )
    before = host_snapshot(tmp_path)

    def as_from_a_terminal() -> None:  # a background job's SIGINT is ignored, not a terminal's
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    program = subprocess.Popen(
        [sys.executable, "-c", holder],
        cwd=ROOT,
        start_new_session=True,
        preexec_fn=as_from_a_terminal,
    )
    try:
        wait_for("the node up", lambda: ready.exists() or program.poll() is not None, 600)
        assert program.poll() is None
        os.killpg(program.pid, signal.SIGINT)
        program.wait(timeout=300)
    finally:
        if program.poll() is None:
            program.kill()
    assert host_snapshot(tmp_path) == before
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""


# --- `gemini-webhooks sandbox --kube real` on its own real node (after `down` above) -------


def _sandbox(command: str, state: Path) -> subprocess.Popen[str]:
    """`command` (a `scripts/sandbox --kube real ...` line) in bash, its state in `state`
    (short: containerd's socket paths are bound), in a process group of its own."""
    assert not Path("/sys/class/net", nodeconfig.NODE_NETWORK.host_veth).exists(), (
        "a real node runs on this machine"
    )
    return subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", command],
        cwd=ROOT,
        env={**os.environ, "GEMINI_WEBHOOKS_SANDBOX_DIR": str(state)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _nothing_left(tmp_path: Path, before: dict[str, object]) -> None:
    assert host_snapshot(tmp_path) == before
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""


def test_sandbox_demo_on_the_real_node_holds_and_leaves_nothing_behind(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The README's `scripts/sandbox --kube real --demo`, as written: the operator (our
    chart) and the receivers containers of our image on the real node, the emulator a Pod
    delivering through their Service, the receivers' NetworkPolicy on, the consumer reached
    through its Service (an EndpointSlice to the host); every step holds, each static event
    reaches the consumer exactly once, and the end takes the node down in full."""
    (block,) = [b for b in readme_blocks(README.read_text()) if b.runner == "real-node"]
    (command,) = block.commands
    tmp_path = tmp_path_factory.mktemp("sbx")  # short: containerd's socket paths are bound
    before = host_snapshot(tmp_path)
    build_images()  # as the session's node has them (cached; the host's CA bundle)
    started = time.monotonic()
    process = _sandbox(command, tmp_path / "s")
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=300)
    print(f"sandbox --kube real --demo: {time.monotonic() - started:.1f}s, down included")
    assert process.returncode == 0, output[-6000:]
    assert "Every step held." in output
    assert "each exactly once" in output
    assert f"real node {NODE_NAME} ready in" in output  # the receivers: its containers
    # The operator and the emulator are Pods there too (the chart's, the tools image's).
    assert "operator: the chart's Deployment (helm)" in output
    assert "emulator: Pod default/gemini-emulator" in output
    _nothing_left(tmp_path, before)


def test_ctrl_c_of_the_sandbox_on_the_real_node_leaves_nothing_behind(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Ctrl-C (the terminal's SIGINT to the sandbox's whole process group) once it is up:
    exit 0, and nothing of the node or the control plane is left."""
    tmp_path = tmp_path_factory.mktemp("sbx-int")
    before = host_snapshot(tmp_path)
    build_images()  # as the session's node has them (cached; the host's CA bundle)
    started = time.monotonic()
    process = _sandbox("scripts/sandbox --kube real", tmp_path / "s")
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C stops everything."):
                break
        assert process.poll() is None, "".join(lines)[-6000:]
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    print(f"sandbox --kube real, up then Ctrl-C: {time.monotonic() - started:.1f}s")
    assert process.returncode == 0, (output or "")[-6000:]
    assert "no processes left behind" in output
    _nothing_left(tmp_path, before)
