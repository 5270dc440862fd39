"""A node without a container runtime, in kwok's way, with one real payload.

To the control plane it is a Node like any other: it registers `gwo-node` (capacity,
addresses, `Ready`), renews its Lease in `kube-node-lease`, and reports the status of
the Pods the real scheduler binds to it — all as `system:node:gwo-node`, so the Node
authorizer and NodeRestriction apply to it as to a kubelet. What it runs: a Pod of our
own image becomes one local process, exactly from the Pod's spec (command and args, env,
ConfigMap/Secret/downward-API/projected volumes written as files, a projected
ServiceAccount token asked from the TokenRequest API for the Pod's ServiceAccount and
bound to the Pod), probed by its readiness probe; every other image gets a clear waiting
status (`UnsupportedImage`) instead of silence. The three ways a loopback pod differs
from a real one are `podplan`'s (files under the pod's directory, loopback ports, no
image): each Pod reports an address of its own from `POD_NETWORK` as its IP, and the
node's forward proxy (`sandbox.proxy`, named by `HTTP_PROXY` in every Pod it runs) maps
that address and the Services that select its Pods to their loopback ports, as the
sandbox's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.controlplane.balancer import RoundRobin, choose, service_backends
from gemini_webhooks.controlplane.node_object import node_object, node_status
from gemini_webhooks.controlplane.pod_credentials import (
    TOKEN_SECONDS,
    pod_kubeconfig,
    request_tokens,
    token_audiences,
)
from gemini_webhooks.controlplane.pod_status import (
    comparable,
    pod_status,
    restarts_after,
    terminated_state,
)
from gemini_webhooks.controlplane.running_pod import RunningPod, pods_of
from gemini_webhooks.sandbox.kubeapi import JSON, KubeApi, KubeApiError
from gemini_webhooks.sandbox.kubelet import (
    pod_endpoints,
    probe,
    service_endpoints,
    venv_executable,
)
from gemini_webhooks.sandbox.pod_inputs import PodPlanError, decode_secret_data, referenced_objects
from gemini_webhooks.sandbox.podplan import PodPlan, plan_pod_object
from gemini_webhooks.sandbox.proxy import SandboxProxy
from gemini_webhooks.sandbox.supervisor import Progress, Supervisor

IMAGE_NAME = "gemini-webhook-operator"  # the repository name of our image, any registry/tag
UNSUPPORTED_IMAGE = "UnsupportedImage"
LEASE_SECONDS = 40
# The Pods' addresses: what `status.podIP` says; only the node's proxy routes them.
POD_NETWORK = ipaddress.ip_network("10.244.0.0/16")


def runs_image(image: str) -> bool:
    """Our image, from any registry, at any tag or digest."""
    repository = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return repository.split(":", 1)[0] == IMAGE_NAME


class Node:
    def __init__(
        self,
        api: KubeApi,
        supervisor: Supervisor,
        state_dir: Path,
        *,
        name: str,
        server: str,
        ca: Path,
        base_env: Mapping[str, str] | None = None,
        static_endpoints: Mapping[str, str] | None = None,
        proxy: SandboxProxy | None = None,
        progress: Progress | None = None,
        interval: float = 0.5,
        executables: Callable[[str], str] = venv_executable,
    ) -> None:
        self.api = api
        self.supervisor = supervisor
        self.state_dir = state_dir
        self.name = name
        self.server = server
        self.ca = ca
        self.base_env = dict(base_env if base_env is not None else os.environ)
        self.static_endpoints = dict(static_endpoints or {})
        self.endpoints: dict[str, str] = dict(self.static_endpoints)
        # The proxy the Pods reach Services and each other through: the caller's (which
        # must serve this node's `endpoints`), else one of the node's own.
        self.proxy = proxy or SandboxProxy(lambda: self.endpoints)
        self._own_proxy = proxy is None
        self._addresses = POD_NETWORK.hosts()
        next(self._addresses)  # .1 is the network's gateway in a cluster: not a Pod's
        self.progress: Progress = progress or (lambda _line: None)
        self.interval = interval
        self.executables = executables
        self.pods: dict[str, RunningPod] = {}  # by uid
        # Services selecting several of our pods: one round-robin listener each.
        self.balancers: dict[str, RoundRobin] = {}
        self.synced = asyncio.Event()
        self._last_lease = 0.0
        self._last_status = 0.0

    @classmethod
    def for_control_plane(
        cls, plane: Any, *, progress: Progress | None = None, **kwargs: Any
    ) -> Node:
        from gemini_webhooks.controlplane.cluster import NODE_NAME

        api = KubeApi.from_kubeconfig(plane.layout.kubeconfig("node"))
        return cls(
            api,
            plane.supervisor,
            plane.layout.root / "node",
            name=NODE_NAME,
            server=plane.server,
            ca=plane.layout.ca,
            progress=progress,
            **kwargs,
        )

    # -- registration and heartbeat -----------------------------------------------------

    async def register(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._own_proxy:
            await self.proxy.start()
        try:
            await self.api.create("nodes", None, node_object(self.name))
        except KubeApiError as error:
            if error.status != 409:
                raise
        await self._report_node()
        await self._renew_lease()
        self.progress(f"node {self.name} registered (Ready, Lease in kube-node-lease)")

    async def _report_node(self) -> None:
        await self.api.patch(
            "nodes", None, self.name, {"status": node_status(self.name)}, status=True
        )
        self._last_status = time.monotonic()

    async def _renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": now_rfc3339("microseconds"),
            },
        }
        resource = "leases.coordination.k8s.io/v1"
        try:
            await self.api.patch(resource, "kube-node-lease", self.name, {"spec": body["spec"]})
        except KubeApiError as error:
            if error.status != 404:
                raise
            node = await self.api.get("nodes", None, self.name)
            if node is not None:
                body["metadata"]["ownerReferences"] = [  # type: ignore[index]
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.name,
                        "uid": node["metadata"]["uid"],
                    }
                ]
            await self.api.create(resource, "kube-node-lease", body)
        self._last_lease = time.monotonic()

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    if time.monotonic() - self._last_lease > LEASE_SECONDS / 4:
                        await self._renew_lease()
                    if time.monotonic() - self._last_status > 60:
                        await self._report_node()
                    await self.sync_once()
                except (KubeApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
                    self.progress(f"node: cannot sync: {error}")
                self.synced.set()
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.shield(self.stop_all())

    async def stop_all(self) -> None:
        for pod in list(self.pods.values()):
            await self._stop(pod)
        self.pods.clear()
        for balancer in self.balancers.values():
            await balancer.stop()
        self.balancers.clear()
        if self._own_proxy:
            await self.proxy.stop()
        await self.api.close()

    def kill_pod(self, namespace: str, name: str) -> int:
        """SIGKILL the process of a pod (by its name or its Deployment's): a crash, which
        the node restarts as a kubelet would."""
        for pod in pods_of(self.pods.values(), namespace, name):
            if pod.child is not None and pod.child.running:
                os.killpg(pod.child.pid, signal.SIGKILL)
                return pod.child.pid
        raise LookupError(f"no running process for pod {namespace}/{name}")

    def restarts(self, namespace: str, name: str) -> int:
        """Container restarts of the pod `name`, or of Deployment `name`'s pods."""
        return sum(p.restarts for p in pods_of(self.pods.values(), namespace, name))

    async def sync_once(self) -> None:
        listed = await self.api.list("pods", field_selector=f"spec.nodeName={self.name}")
        seen = set()
        for pod in listed:
            metadata = pod["metadata"]
            uid = metadata["uid"]
            seen.add(uid)
            running = self.pods.get(uid)
            if running is None:
                running = self.pods[uid] = RunningPod(
                    metadata.get("namespace", "default"),
                    metadata["name"],
                    uid,
                    address=str(next(self._addresses)),
                )
            running.labels = dict(metadata.get("labels") or {})
            containers = (pod.get("spec") or {}).get("containers") or []
            if containers:
                running.ports.allocate(containers[0])
        for uid in set(self.pods) - seen:
            await self._stop(self.pods.pop(uid))
        await self._publish_endpoints()
        for pod in listed:
            running = self.pods[pod["metadata"]["uid"]]
            if pod["metadata"].get("deletionTimestamp"):
                await self._terminate(running, pod)
                continue
            status = await self._converge(running, pod)
            await self._report(running, pod, status)

    async def _publish_endpoints(self) -> None:
        services = await self.api.list("services")
        # Every pod we run keeps its loopback address while it restarts (as the sandbox's
        # kubelet does): a caller sees connection refused, not a missing Service.
        pods = {
            (p.namespace, p.uid): (p.labels, p.ports)
            for p in self.pods.values()
            if p.plan is not None
        }
        mapping = dict(self.static_endpoints)
        mapping.update(service_endpoints(services, pods))
        mapping.update(
            pod_endpoints({p.address: p.ports for p in self.pods.values() if p.plan is not None})
        )
        await self._balance(services, mapping)
        if mapping != self.endpoints:
            for key in sorted(set(mapping) - set(self.endpoints)):
                if "/" in key:  # a Service's (a Pod's own address is not news)
                    self.progress(f"node: Service {key} -> http://{mapping[key]}")
            self.endpoints = mapping

    async def _balance(self, services: list[JSON], mapping: dict[str, str]) -> None:
        """A Service selecting several pods is published as its round-robin listener."""
        backends = service_backends(
            services,
            {
                (p.namespace, p.uid): (p.labels, p.ports, p.ready)
                for p in self.pods.values()
                if p.plan is not None
            },
        )
        spread = {key: found for key, found in backends.items() if len(found) > 1}
        for key in set(self.balancers) - set(spread):
            await self.balancers.pop(key).stop()
        for key, found in spread.items():
            balancer = self.balancers.get(key)
            if balancer is None:
                balancer = self.balancers[key] = RoundRobin(choose(found))
                await balancer.start()
            balancer.backends = choose(found)
            mapping[key] = balancer.address

    # -- one pod ------------------------------------------------------------------------

    async def _objects(self, pod: JSON) -> dict[tuple[str, str, str], Mapping[str, str]]:
        namespace = pod["metadata"].get("namespace", "default")
        found: dict[tuple[str, str, str], Mapping[str, str]] = {}
        for kind, name in referenced_objects(pod.get("spec") or {}):
            resource = "configmaps" if kind == "ConfigMap" else "secrets"
            try:
                obj = await self.api.get(resource, namespace, name)
            except KubeApiError as error:
                if error.status != 403:  # the Node authorizer: not referenced by our Pod
                    raise
                obj = None
            if obj is not None:
                data = (
                    dict(obj.get("data") or {}) if kind == "ConfigMap" else decode_secret_data(obj)
                )
                found[(kind, namespace, name)] = data
        return found

    async def _tokens(self, running: RunningPod, pod: JSON) -> dict[str, str]:
        """Projected ServiceAccount tokens, bound to the Pod, renewed at 80% of their life."""
        audiences = token_audiences(pod)
        fresh = time.monotonic() - running.tokens_at < TOKEN_SECONDS * 0.8
        if fresh and set(running.tokens) == set(audiences):
            return running.tokens
        tokens = await request_tokens(self.api, pod, audiences)
        running.tokens = tokens
        running.tokens_at = time.monotonic()
        return tokens

    def _pod_dir(self, running: RunningPod) -> Path:
        return self.state_dir / "pods" / running.namespace / f"{running.name}-{running.uid[:8]}"

    def _plan(
        self, running: RunningPod, pod: JSON, objects: Mapping[Any, Any], tokens: Mapping[str, str]
    ) -> PodPlan:
        env = dict(self.base_env) | self.proxy.environment()
        env.pop("KUBECONFIG", None)
        env.pop("KUBERNETES_SERVICE_HOST", None)
        pod_dir = self._pod_dir(running)
        plan = plan_pod_object(
            pod,
            lookup=lambda kind, namespace, name: objects.get((kind, namespace, name)),
            tokens=tokens,
            pod_dir=pod_dir,
            host_ports=running.ports.by_number,
            executables=self.executables,
            base_env=env,
            pod_ip=running.address,
        )
        # In-cluster config reads fixed paths; a loopback pod gets the same credentials
        # (the projected token, the cluster CA) through a kubeconfig beside its volumes.
        token_file = next(
            (
                path
                for path in plan.files
                if path.name == "token" and "kube-api-access" in path.parent.name
            ),
            None,
        )
        if token_file is not None:
            kubeconfig = pod_dir / "kubeconfig"
            plan.files[kubeconfig] = pod_kubeconfig(
                self.server, self.ca, token_file, running.namespace
            )
            plan.env["KUBECONFIG"] = str(kubeconfig)
        return plan

    async def _converge(self, running: RunningPod, pod: JSON) -> JSON:
        """Run the Pod's process as its spec says; the container status to report."""
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        image = containers[0].get("image", "")
        if running.terminated is not None:
            return {"terminated": running.terminated}
        if not runs_image(image):
            return {
                "waiting": {
                    "reason": UNSUPPORTED_IMAGE,
                    "message": f"{self.name} runs only the {IMAGE_NAME} image as processes; "
                    f"it cannot run {image!r}",
                }
            }
        try:
            tokens = await self._tokens(running, pod)
            plan = self._plan(running, pod, await self._objects(pod), tokens)
        except PodPlanError as error:
            if str(error) != running.last_error:
                self.progress(f"node: {running.label} cannot start yet: {error}")
                running.last_error = str(error)
            return {"waiting": {"reason": "CreateContainerConfigError", "message": str(error)}}
        running.last_error = ""
        code = running.exit_code()
        if code is not None and not restarts_after(pod, code):
            self.progress(f"node: {running.label} exited with code {code}; not restarted")
            running.forget_exited(self.supervisor)
            running.terminated = terminated_state(code, running.started_at)
            return {"terminated": running.terminated}
        if code is not None:
            delay = running.back_off(self.supervisor)
            self.progress(
                f"node: {running.label} exited with code {code}; restarting in {delay:.0f}s"
            )
        if running.child is None:
            if running.backing_off():
                return {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off restarting"}}
            await self._start(running, plan)
            return {"running": {"startedAt": running.started_at}}
        running.refresh_files(plan)
        running.ready = plan.readiness is None or await probe(plan.readiness)
        return {"running": {"startedAt": running.started_at}}

    async def _start(self, running: RunningPod, plan: PodPlan) -> None:
        for warning in plan.warnings:
            self.progress(f"node: {running.label}: {warning}")
        await running.start(self.supervisor, self._pod_dir(running), plan)
        running.started_at = now_rfc3339()
        ports = ", ".join(f"{p.container_port}->{p.host_port}" for p in plan.ports)
        self.progress(f"node: started pod {running.label} (ports {ports})")

    async def _stop(self, running: RunningPod) -> None:
        await running.stop(self.supervisor)

    async def _terminate(self, running: RunningPod, pod: JSON) -> None:
        """A deleted Pod: stop its process, then remove the object (the kubelet's last word)."""
        await self._stop(running)
        with contextlib.suppress(KubeApiError):
            await self.api.delete_now("pods", running.namespace, running.name, uid=running.uid)

    async def _report(self, running: RunningPod, pod: JSON, state: JSON) -> None:
        status = pod_status(
            pod, state, ready=running.ready, restarts=running.restarts, address=running.address
        )
        key = comparable(status)
        if running.last_status is not None and running.last_status.get("key") == key:
            return
        await self.api.patch(
            "pods", running.namespace, running.name, {"status": status}, status=True
        )
        running.last_status = {"key": key}
