"""`gemini-webhooks sandbox --kube real`: the sandbox on a real node.

The real control plane (`controlplane.cluster`) and a real node beside it
(`controlplane.realnode`: containerd, the kubelet, kube-proxy, CoreDNS and kube-router in a
network namespace of their own; our images imported into its containerd), as
`scripts/control-plane up --node real` runs them. The receivers are the Pods the operator
renders, containers of our product image. The sandbox's own parts stay on the host, on the
host's end of the node's veth pair (`NodeNetwork.host_ip`), which the Pods reach:

- the sample consumer listens there; its Service has no selector, and an EndpointSlice of
  ours names that address (`consumer_endpoint_slice`), so the receivers reach it by its
  cluster name as they would an in-cluster Service;
- the emulator listens there (the receivers fetch its JWKS) and reaches a receiver as
  Gemini reaches an exposed receiver: through its Service, from outside the node — the
  sandbox's proxy maps the Service's cluster name to its ClusterIP (`service_addresses`),
  which kube-proxy's rules on the host's routes lead to a Pod;
- the operator runs on the host as in the other modes (admin kubeconfig, no proxy: the
  API server and the emulator listen on the host, the Pods' addresses are routed), with
  the receivers' NetworkPolicy off: its Pod selectors cannot name the sandbox's processes
  on the host (the emulator delivering, the operator reading a receiver's ping status), so
  a policy would shut them out. tests/chart/test_real_install.py shows the policies
  enforced, with the operator and the emulator as Pods.

Root is required (namespaces, mounts, cgroups): without it `require_root` says so before
anything starts. The node's binaries are built on demand (cached), as the control plane's
are; our images by `scripts/image build` when these sources have none yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemini_webhooks import __version__
from gemini_webhooks.controlplane import build, node_images, nodeconfig, realnode
from gemini_webhooks.controlplane.cluster import ControlPlane
from gemini_webhooks.sandbox.kubeapi import KubeApi, KubeApiError
from gemini_webhooks.sandbox.proxy import service_key
from gemini_webhooks.sandbox.supervisor import ChildFailedError, Progress, Supervisor

JSON = dict[str, Any]
# The receivers' image, as `RealNode.import_images` names it in containerd.
PRODUCT_IMAGE = f"{nodeconfig.IMAGE_REPOSITORIES['product']}:{__version__}"
ENDPOINT_SLICES = "endpointslices.discovery.k8s.io/v1"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
REFRESH_SECONDS = 0.5
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


def without_proxy(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without the proxy variables (the operator's on the real node: what it reaches,
    the API server, the emulator and Pod addresses, is routed from the host)."""
    names = {"http_proxy", "https_proxy", "no_proxy", "all_proxy"}
    return {k: v for k, v in env.items() if k.lower() not in names}
