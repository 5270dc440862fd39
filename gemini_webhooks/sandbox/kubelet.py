"""The sandbox's kubelet: runs the operator's receiver Deployments as local processes.

It watches (by polling, every half second) the Deployments labelled as the operator's
receivers, and for each one runs the real `gemini-webhooks receiver` process exactly as
its pod template says (see `podplan` for the three ways a loopback pod differs from a
node's). It restarts the process when the pod template changes (Recreate: the Service's
loopback port stays the same) or when it exits (with a CrashLoopBackOff-like delay),
keeps mounted ConfigMap/Secret files current, keeps `endpoints` (every Service that
selects one of these pods -> its loopback address, which the sandbox's proxy serves at
the Service's cluster name, `sandbox.proxy`), and writes the Deployment's `status` (`readyReplicas`
and friends) from the readiness probe.

Limits, by design: one process per Deployment whatever `replicas` says (above zero);
no image, resources or security context; only our own Deployments.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.contracts.signing_secret import LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY
from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.sandbox.kubeapi import JSON, KubeApi, KubeApiError
from gemini_webhooks.sandbox.pod_inputs import PodPlanError, decode_secret_data, referenced_objects
from gemini_webhooks.sandbox.pod_process import PodProcess
from gemini_webhooks.sandbox.podplan import PodPlan, Probe, plan_pod, template_hash
from gemini_webhooks.sandbox.ports import free_port
from gemini_webhooks.sandbox.proxy import pod_key, service_key
from gemini_webhooks.sandbox.supervisor import Progress, Supervisor

RECEIVER_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}=receiver"
DEPLOYMENTS = "deployments.apps/v1"


def venv_executable(name: str) -> str:
    """The image's binaries are this virtualenv's: look there first, then PATH."""
    if "/" in name:
        name = os.path.basename(name)
    here = Path(sys.executable).parent
    return shutil.which(name, path=str(here)) or shutil.which(name) or name


def service_endpoints(
    services: list[JSON], pods: Mapping[tuple[str, str], tuple[Mapping[str, str], PodPorts]]
) -> dict[str, str]:
    """`namespace/name:port` -> `127.0.0.1:<loopback port>` for Services selecting our pods."""
    mapping: dict[str, str] = {}
    for service in services:
        metadata = service["metadata"]
        namespace = metadata.get("namespace", "default")
        selector = (service.get("spec") or {}).get("selector") or {}
        if not selector:  # a Service without a selector has its endpoints made by hand
            continue
        selects = label_selector.from_labels(selector)
        for (pod_namespace, _), (labels, ports) in sorted(pods.items()):
            if pod_namespace != namespace or not selects.matches(labels):
                continue
            for port in (service.get("spec") or {}).get("ports") or []:
                target = port.get("targetPort", port["port"])
                host_port = ports.lookup(target)
                if host_port is not None:
                    key = service_key(metadata["name"], namespace, int(port["port"]))
                    mapping[key] = f"127.0.0.1:{host_port}"
            break
    return mapping


def pod_endpoints(pods: Mapping[str, PodPorts]) -> dict[str, str]:
    """`address:port` -> `127.0.0.1:<loopback port>` for every container port of the Pods
    we run, by their Pod address: what a Pod IP and port are in a cluster."""
    return {
        pod_key(address, number): f"127.0.0.1:{host_port}"
        for address, ports in sorted(pods.items())
        for number, host_port in sorted(ports.by_number.items())
    }


@dataclass
class PodPorts:
    """A Deployment's loopback ports, allocated once and kept across restarts."""

    by_number: dict[int, int] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)

    def allocate(self, container: JSON) -> None:
        for port in container.get("ports") or []:
            number = int(port["containerPort"])
            if number not in self.by_number:
                self.by_number[number] = free_port()
            if port.get("name"):
                self.by_name[port["name"]] = self.by_number[number]

    def lookup(self, port: int | str) -> int | None:
        if isinstance(port, str) and not port.isdigit():
            return self.by_name.get(port)
        return self.by_number.get(int(port))


@dataclass
class Pod(PodProcess):
    """The one pod of a receiver Deployment."""

    ports: PodPorts
    labels: dict[str, str]
    template_hash: str = ""


async def probe(target: Probe, *, within: float = 1.0) -> bool:
    try:
        if target.kind == "tcp":
            async with asyncio.timeout(within):
                _, writer = await asyncio.open_connection("127.0.0.1", target.port)
            writer.close()
            return True
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
            session.get(f"http://127.0.0.1:{target.port}{target.path}") as response,
        ):
            return 200 <= response.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


class Kubelet:
    def __init__(
        self,
        api: KubeApi,
        supervisor: Supervisor,
        state_dir: Path,
        *,
        base_env: Mapping[str, str],
        static_endpoints: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        selector: str = RECEIVER_SELECTOR,
        interval: float = 0.5,
    ) -> None:
        self.api = api
        self.supervisor = supervisor
        self.state_dir = state_dir
        self.base_env = dict(base_env)
        self.static_endpoints = dict(static_endpoints or {})
        self.endpoints: dict[str, str] = dict(self.static_endpoints)
        self.progress: Progress = progress or (lambda _line: None)
        self.selector = selector
        self.interval = interval
        self.pods: dict[tuple[str, str], Pod] = {}
        self.synced = asyncio.Event()

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync until cancelled; on cancellation, stop every pod."""
        try:
            while True:
                try:
                    await self.sync_once()
                except (KubeApiError, aiohttp.ClientError, TimeoutError, OSError) as error:
                    self.progress(f"kubelet: cannot sync: {error}")
                self.synced.set()
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.shield(self.stop_all())

    def kill_pod(self, namespace: str, name: str) -> int:
        """SIGKILL the pod of Deployment `namespace/name` (a crash; the kubelet restarts it)."""
        pod = self.pods.get((namespace, name))
        if pod is None or pod.child is None or not pod.child.running:
            raise LookupError(f"no running pod for Deployment {namespace}/{name}")
        os.killpg(pod.child.pid, signal.SIGKILL)
        return pod.child.pid

    def restarts(self, namespace: str, name: str) -> int:
        """Restarts of Deployment `namespace/name`'s pod (the same question as a node's)."""
        pod = self.pods.get((namespace, name))
        return 0 if pod is None else pod.restarts

    async def stop_all(self) -> None:
        for pod in list(self.pods.values()):
            await self._stop(pod)
        self.pods.clear()

    async def sync_once(self) -> None:
        deployments = await self.api.list(DEPLOYMENTS, label_selector=self.selector)
        seen = set()
        for deployment in deployments:
            metadata = deployment["metadata"]
            key = (metadata.get("namespace", "default"), metadata["name"])
            seen.add(key)
            pod = self.pods.get(key)
            template = deployment["spec"].get("template") or {}
            labels = dict((template.get("metadata") or {}).get("labels") or {})
            if pod is None:
                pod = self.pods[key] = Pod(key[0], key[1], PodPorts(), labels)
            pod.labels = labels
            containers = (template.get("spec") or {}).get("containers") or []
            if containers:
                pod.ports.allocate(containers[0])
        for key in set(self.pods) - seen:
            pod = self.pods[key]
            self.progress(f"kubelet: deployment {pod.label} is gone; stopping its pod")
            await self._stop(pod)
            del self.pods[key]  # only once stopped: `pods` never hides a running process

        await self._publish_endpoints()

        for deployment in deployments:
            metadata = deployment["metadata"]
            pod = self.pods[(metadata.get("namespace", "default"), metadata["name"])]
            await self._converge(pod, deployment)
            await self._report(pod, deployment)

    async def _publish_endpoints(self) -> None:
        services = await self.api.list("services")
        pods = {key: (pod.labels, pod.ports) for key, pod in self.pods.items()}
        mapping = dict(self.static_endpoints)
        mapping.update(service_endpoints(services, pods))
        if mapping != self.endpoints:
            added = sorted(set(mapping) - set(self.endpoints))
            self.endpoints = mapping
            for key in added:
                self.progress(f"kubelet: Service {key} -> http://{mapping[key]}")

    # -- one pod --------------------------------------------------------------------------

    async def _lookup_objects(self, deployment: JSON) -> dict[tuple[str, str, str], Any]:
        """Fetch every ConfigMap/Secret the pod template refers to."""
        namespace = deployment["metadata"].get("namespace", "default")
        spec = deployment["spec"]["template"].get("spec") or {}
        wanted = referenced_objects(spec)
        found: dict[tuple[str, str, str], Any] = {}
        for kind, name in wanted:
            resource = "configmaps" if kind == "ConfigMap" else "secrets"
            obj = await self.api.get(resource, namespace, name)
            if obj is None:
                continue
            data = dict(obj.get("data") or {}) if kind == "ConfigMap" else decode_secret_data(obj)
            found[(kind, namespace, name)] = data
        return found

    def _pod_dir(self, pod: Pod) -> Path:
        return self.state_dir / "pods" / pod.namespace / pod.name

    def _plan(self, pod: Pod, deployment: JSON, objects: Mapping[Any, Any]) -> PodPlan:
        env = dict(self.base_env)
        return plan_pod(
            deployment,
            lookup=lambda kind, namespace, name: objects.get((kind, namespace, name)),
            pod_dir=self._pod_dir(pod),
            host_ports=pod.ports.by_number,
            executables=venv_executable,
            base_env=env,
        )

    async def _converge(self, pod: Pod, deployment: JSON) -> None:
        replicas = deployment["spec"].get("replicas", 1)
        if replicas == 0:
            if pod.child is not None:
                self.progress(f"kubelet: {pod.label} scaled to zero")
                await self._stop(pod)
            return
        wanted_hash = template_hash(deployment)
        try:
            plan = self._plan(pod, deployment, await self._lookup_objects(deployment))
        except PodPlanError as error:
            if str(error) != pod.last_error:
                self.progress(f"kubelet: {pod.label} cannot start yet: {error}")
                pod.last_error = str(error)
            return
        pod.last_error = ""
        if pod.child is not None and pod.template_hash != wanted_hash:
            self.progress(f"kubelet: {pod.label} pod template changed; restarting its pod")
            await self._stop(pod)
            pod.restarts = 0
            pod.not_before = 0.0
        code = pod.exit_code()
        if code is not None and pod.child is not None:
            log_path = pod.child.log_path
            delay = pod.back_off(self.supervisor)
            self.progress(
                f"kubelet: {pod.label} exited with code {code}; restarting in {delay:.0f}s "
                f"(log {log_path})"
            )
        if pod.child is None:
            if pod.backing_off():
                return
            await self._start(pod, plan, wanted_hash)
            return
        # Running the right template: keep mounted files current, probe readiness.
        pod.refresh_files(plan)
        pod.ready = plan.readiness is None or await probe(plan.readiness)

    async def _start(self, pod: Pod, plan: PodPlan, wanted_hash: str) -> None:
        for warning in plan.warnings:
            self.progress(f"kubelet: {pod.label}: {warning}")
        await pod.start(self.supervisor, self._pod_dir(pod), plan)
        pod.template_hash = wanted_hash
        ports = ", ".join(f"{p.container_port}->{p.host_port}" for p in plan.ports)
        self.progress(f"kubelet: started pod of {pod.label} (ports {ports})")
        for port in plan.ports:
            if port.name in ("internal", "metrics"):
                self.progress(
                    f"kubelet: {pod.label} metrics at http://127.0.0.1:{port.host_port}/metrics"
                )

    async def _stop(self, pod: Pod) -> None:
        await pod.stop(self.supervisor)

    async def _report(self, pod: Pod, deployment: JSON) -> None:
        running = 1 if pod.child is not None and pod.child.running else 0
        ready = 1 if running and pod.ready else 0
        generation = deployment["metadata"].get("generation", 1)
        wanted = {
            "observedGeneration": generation,
            "replicas": running,
            "updatedReplicas": running,
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        current = deployment.get("status") or {}
        if all(current.get(k, 0) == v for k, v in wanted.items()):
            return
        condition = {
            "type": "Available",
            "status": "True" if ready else "False",
            "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable",
            "message": "run by the sandbox's kubelet as a local process",
            "lastUpdateTime": now_rfc3339(),
            "lastTransitionTime": now_rfc3339(),
        }
        with contextlib.suppress(KubeApiError):
            await self.api.patch(
                DEPLOYMENTS,
                pod.namespace,
                pod.name,
                {"status": wanted | {"conditions": [condition]}},
                status=True,
            )
