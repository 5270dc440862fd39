"""`gemini-webhooks sandbox --kube real`: the sandbox on a real node.

The real control plane (`controlplane.cluster`) and a real node beside it
(`controlplane.realnode`: containerd, the kubelet, kube-proxy, CoreDNS and kube-router in a
network namespace of their own; our images imported into its containerd), as
`scripts/control-plane up --node real` runs them. Everything of the product runs there as
it would in a cluster (`node_workloads`), in the sandbox's namespace, which enforces the
`restricted` Pod Security Standard:

- the operator is our chart's Deployment (helm, our product image): its projected
  ServiceAccount token, its own NetworkPolicy, the receivers' NetworkPolicy on (the chart's
  default);
- the emulator is a Pod of the tools image behind a Service; the operator and the receivers
  reach it at its ClusterIP, and so does the host (kube-proxy's rules are on the host's
  routes), which makes `emulator_url` one address for all. It delivers to a receiver
  through the receiver's Service and cluster DNS, as Gemini reaches an exposed receiver
  through an ingress controller: the chart's `ingressControllerNamespace` is the sandbox's
  namespace, so the receivers' policies let it in;
- the receivers are the Pods the operator renders, containers of our product image.

Only the sample consumer stays on the host, on the host's end of the node's veth pair
(`NodeNetwork.host_ip`), inside the sandbox process (its arrivals are what the tour
checks): its Service has no selector, and an EndpointSlice of ours names that address
(`consumer_endpoint_slice`). A NetworkPolicy of the sandbox's own
(`node_workloads.host_access_policy`) adds to each receiver's the way to that port, and lets
the host scrape the receivers' internal port as a Prometheus would; NetworkPolicies only
add up, so nothing else of the receivers' is loosened. tests/chart/test_real_install.py
shows the receivers' and the operator's policies enforced from allowed and other Pods.

Root is required (namespaces, mounts, cgroups): without it `require_root` says so before
anything starts. The node's binaries are built on demand (cached), as the control plane's
are; our images by `scripts/image build` when these sources have none yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gemini_webhooks.controlplane import build, node_images, nodeconfig, realnode
from gemini_webhooks.controlplane.cluster import ControlPlane
from gemini_webhooks.sandbox import node_workloads
from gemini_webhooks.sandbox.kubeapi import KubeApi, KubeApiError
from gemini_webhooks.sandbox.node_workloads import Helm, HelmError
from gemini_webhooks.sandbox.proxy import service_key
from gemini_webhooks.sandbox.supervisor import ChildFailedError, Progress, Supervisor

JSON = dict[str, Any]
T = TypeVar("T")
ENDPOINT_SLICES = "endpointslices.discovery.k8s.io/v1"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REFRESH_SECONDS = 0.5
NETWORK_POLICIES = "networkpolicies.networking.k8s.io/v1"
POD_READY_SECONDS = 120
HELM_WAIT_SECONDS = 240
# containerd refuses a longer Unix socket path (its ttrpc socket's is the longest it binds).
SOCKET_PATH_MAX = 104


def require_root(euid: int) -> None:
    """Refuse, naming what to do, unless `euid` is root's."""
    if euid != 0:
        raise ChildFailedError(
            "--kube real runs a real Kubernetes node (containerd, the kubelet and runc in a "
            "network namespace, with mounts and cgroups of its own), which needs root: run "
            "`sudo scripts/sandbox --kube real`, or leave out `--kube real` for the instant "
            "in-memory sandbox"
        )


def service_addresses(services: list[JSON]) -> dict[str, str]:
    """Every port of every Service with a ClusterIP, by `service_key`: `clusterIP:port`."""
    found: dict[str, str] = {}
    for service in services:
        metadata, spec = service.get("metadata") or {}, service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None":
            continue
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") == "TCP":
                key = service_key(metadata["name"], metadata["namespace"], int(port["port"]))
                found[key] = f"{cluster_ip}:{port['port']}"
    return found


def consumer_endpoint_slice(
    service: str, namespace: str, port_name: str, address: str, port: int
) -> JSON:
    """The EndpointSlice that sends the selector-less `service` to `address:port` (the
    sample consumer on the host's end of the node's veth)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-host",
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }


def check_socket_paths(node_root: Path) -> None:
    """Refuse a node directory whose sockets containerd could not bind, before anything
    starts (else containerd exits at start with `unix socket path too long`)."""
    socket = nodeconfig.NodeLayout(node_root.resolve()).containerd_socket
    longest = socket.with_name(socket.name + ".ttrpc")
    if len(str(longest)) > SOCKET_PATH_MAX:
        raise ChildFailedError(
            f"the real node's directory {node_root} is too deep: containerd's socket "
            f"{longest} would be {len(str(longest))} characters, more than the "
            f"{SOCKET_PATH_MAX} a Unix socket path may have; choose a shorter --state-dir "
            "(the node's directory is beside it)"
        )


async def wait_until(check: Callable[[], Awaitable[T]], within: float, what: str) -> T:
    """`check()`'s first true answer, polled; `what` names it in the failure."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not (found := await check()):
        if loop.time() > deadline:
            raise ChildFailedError(f"{what}: not within {within:.0f}s")
        await asyncio.sleep(0.2)
    return found


async def _ready_pod(api: KubeApi, namespace: str, name: str) -> bool:
    return node_workloads.pod_ready(await api.get("pods", namespace, name))


async def operator_pods(api: KubeApi, namespace: str) -> list[JSON]:
    """The operator's Pods of the sandbox's release that are Ready and not going away."""
    selector = ",".join(f"{k}={v}" for k, v in node_workloads.OPERATOR_SELECTOR.items())
    pods = await api.list("pods", namespace, label_selector=selector)
    return [
        pod
        for pod in pods
        if node_workloads.pod_ready(pod) and "deletionTimestamp" not in pod["metadata"]
    ]


@dataclass
class RealNodeRun:
    """The control plane and the real node the sandbox runs on, and the Services' addresses
    as the host reaches them."""

    state_dir: Path
    supervisor: Supervisor
    progress: Progress
    node: realnode.RealNode | None = None
    plane: ControlPlane | None = None
    endpoints: dict[str, str] = field(default_factory=dict)
    helm: Helm | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _network_made: bool = False

    @property
    def host_ip(self) -> str:
        return nodeconfig.NODE_NETWORK.host_ip

    async def start_control_plane(self) -> ControlPlane:
        """Root checked, binaries built and images found (or built), the node's network made
        (the API server listens on its host end), then the control plane started."""
        require_root(os.geteuid())
        # Beside the state directory, which is emptied on every start: the node's must
        # outlive a killed run, to say what to clean up (as `up` keeps DIR-node).
        root = self.state_dir.parent / f"{self.state_dir.name}-node"
        check_socket_paths(root)
        try:
            binaries = await asyncio.to_thread(build.build_all, self.progress)
        except build.BuildError as error:
            raise ChildFailedError(str(error)) from None
        images = await asyncio.to_thread(node_images.our_images_built, self.progress)
        self.helm = Helm(binaries["helm"], self.state_dir / "kubeconfig", self.state_dir / "helm")
        self.node = realnode.RealNode(
            root, realnode.node_binaries(binaries), images, progress=self.progress
        )
        # Made by us from here on (a failure below leaves it half made: `stop_network`).
        self._network_made = True
        await asyncio.to_thread(self.node.create_network)
        self.plane = ControlPlane(
            self.state_dir / "control-plane",
            binaries,
            progress=self.progress,
            supervisor=self.supervisor,
            address=self.host_ip,
        )
        await self.plane.start()
        return self.plane

    async def start_node(self, api: KubeApi) -> None:
        assert self.node is not None and self.plane is not None
        await self.node.start(self.plane)
        self._tasks.append(asyncio.create_task(self.node.watch(), name="real-node"))
        await self._refresh(api)
        self._tasks.append(asyncio.create_task(self._keep_refreshed(api), name="services"))

    async def secure_namespace(self, api: KubeApi, namespace: str, consumer_port: int) -> None:
        """`namespace` enforcing the `restricted` Pod Security Standard, and the sandbox's
        own NetworkPolicy for the host (`node_workloads.host_access_policy`)."""
        labelled = {"metadata": {"labels": node_workloads.RESTRICTED}}
        await api.patch("namespaces", None, namespace, labelled)
        policy = node_workloads.host_access_policy(namespace, self.host_ip, consumer_port)
        await api.apply(NETWORK_POLICIES, namespace, policy)

    async def start_emulator(
        self, api: KubeApi, namespace: str, api_key: str, args: tuple[str, ...]
    ) -> str:
        """The emulator's Pod and Service in `namespace`, once the Pod is Ready: its URL at
        the Service's ClusterIP (the host, the operator and the receivers all reach it)."""
        for body in node_workloads.emulator_objects(namespace, api_key=api_key, args=args):
            resource = "pods" if body["kind"] == "Pod" else "services"
            await api.apply(resource, namespace, body)
        name = node_workloads.EMULATOR
        await wait_until(
            lambda: _ready_pod(api, namespace, name),
            POD_READY_SECONDS,
            f"the emulator's Pod {namespace}/{name} Ready (`kubectl describe pod {name}`)",
        )
        found = await api.get("services", namespace, name)
        assert found is not None
        return f"http://{found['spec']['clusterIP']}:{node_workloads.EMULATOR_PORT}"

    async def install_operator(self, api: KubeApi, namespace: str, values: JSON) -> str:
        """Our chart installed (or upgraded) in `namespace` with `values`, its operator Pod
        Ready (`helm --wait`): the URL of that Pod's /metrics, which the host reaches."""
        assert self.helm is not None
        try:
            await self.helm.install(
                node_workloads.RELEASE, namespace, values, within=HELM_WAIT_SECONDS
            )
        except HelmError as error:
            raise ChildFailedError(f"the operator's chart: {error}") from None
        pods = await wait_until(
            lambda: operator_pods(api, namespace),
            POD_READY_SECONDS,
            "the operator's Pod Ready after `helm upgrade --install`",
        )
        port = node_workloads.CHART_VALUES["metricsPort"]
        return f"http://{pods[0]['status']['podIP']}:{port}/metrics"

    async def uninstall_operator(self, namespace: str) -> None:
        assert self.helm is not None
        try:
            await self.helm.uninstall(node_workloads.RELEASE, namespace, within=HELM_WAIT_SECONDS)
        except HelmError as error:
            raise ChildFailedError(f"the operator's chart: {error}") from None

    async def _refresh(self, api: KubeApi) -> None:
        self.endpoints = service_addresses(await api.list("services"))

    async def _keep_refreshed(self, api: KubeApi) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            with contextlib.suppress(KubeApiError, OSError):
                await self._refresh(api)

    def failed(self) -> BaseException | None:
        """Why the node stopped (its restarts exhausted), None while it runs."""
        for task in self._tasks:
            if task.done() and not task.cancelled():
                return task.exception()
        return None

    async def stop_node(self) -> None:
        """The node and every Pod on it (the network stays until `stop_network`: the API
        server listens on its host end, and stops cleanly only while that exists)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.node is not None:
            await asyncio.shield(self.node.stop(keep_network=True))

    async def stop_network(self) -> None:
        """What the node left: the network namespace, the veth pair, host paths, sysctls."""
        if self.node is not None and self._network_made:
            await asyncio.to_thread(self.node.stop_leftovers)
