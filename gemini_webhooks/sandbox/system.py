"""The whole system on loopback: what `gemini-webhooks sandbox` starts, in order.
(`--kube real` runs it on a real control plane and a real node instead, the emulator and
the operator as Pods there: `real_node`.)

1. the sample consumer (in this process), standing in for an in-cluster Service;
2. the Gemini API emulator (`gemini-webhooks emulator`, a child process);
3. the Kubernetes API sandbox (`gemini-webhooks kube-sandbox`), with our CRD installed,
   the API-key Secret and the consumer's Service created;
4. the kubelet (in this process), which runs the receiver of every GeminiWebhook;
5. the operator (`gemini-webhooks operator`), pointed at both.

Before them all, the sandbox's forward proxy (`sandbox.proxy`): every child gets
`KUBECONFIG` and `HTTP_PROXY` naming it (`NO_PROXY` covering loopback), so a cluster name
(`NAME.NAMESPACE.svc.cluster.local:PORT`, a Pod's address) reaches the local process that
serves it, as cluster DNS and kube-proxy would route it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import string
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gemini_webhooks.contracts import crd as crd_contract
from gemini_webhooks.contracts.crd import DEFAULT_API_KEY_SECRET_KEY
from gemini_webhooks.controlplane.cluster import ControlPlane
from gemini_webhooks.sandbox.consumer import SampleConsumer
from gemini_webhooks.sandbox.guide import env_lines
from gemini_webhooks.sandbox.kubeapi import KubeApi, server_from_kubeconfig
from gemini_webhooks.sandbox.kubelet import Kubelet, venv_executable
from gemini_webhooks.sandbox.node_workloads import operator_values
from gemini_webhooks.sandbox.ports import LOOPBACK, free_port
from gemini_webhooks.sandbox.proxy import SandboxProxy, service_key
from gemini_webhooks.sandbox.real_node import (
    ENDPOINT_SLICES,
    RealNodeRun,
    consumer_endpoint_slice,
)
from gemini_webhooks.sandbox.supervisor import (
    Child,
    ChildFailedError,
    ProcessSpec,
    Progress,
    Supervisor,
    http_ready,
)

CONSUMER_SERVICE = "sample-consumer"
CONSUMER_PORT = 8080
API_KEY_SECRET = "gemini-api-key"
EXAMPLES_DIR = Path(__file__).parent / "examples"
STATE_DIR_ENV = "GEMINI_WEBHOOKS_SANDBOX_DIR"
DEFAULT_STATE_DIR = Path(os.environ.get(STATE_DIR_ENV) or ".sandbox")
DEMO_NAME = "sandbox-demo"
OPERATOR_POD_NAME = "gemini-webhook-operator-sandbox"


@dataclass
class SandboxOptions:
    state_dir: Path = DEFAULT_STATE_DIR
    namespace: str = "default"
    api_key: str = "sandbox-api-key"  # not a secret: the emulator's only accepted key
    batch_seconds: float = 5.0
    time_scale: float = 1.0
    echo_consumer: bool = True
    start_operator: bool = True
    drift_interval: float = 10.0
    operator_args: list[str] = field(default_factory=list)
    # "sandbox": the in-memory Kubernetes API sandbox and its kubelet (instant);
    # "real": a real control plane and a real node, the receivers containers (real_node).
    kube: str = "sandbox"


MARKER = ".gemini-webhooks-sandbox"


class StateDirError(ChildFailedError):
    """The state directory holds something that is not a previous sandbox's state."""


def prepare_state_dir(path: Path) -> None:
    """Empty `path` for a new run: only when it is empty or a previous sandbox's own."""
    if path.exists():
        if any(path.iterdir()) and not (path / MARKER).exists():
            raise StateDirError(
                f"{path} is not empty and was not made by the sandbox; refusing to empty it "
                "(choose another --state-dir)"
            )
        shutil.rmtree(path)
    (path / "logs").mkdir(parents=True)
    (path / MARKER).write_text("state of `gemini-webhooks sandbox`; emptied on every start\n")
    (path / ".gitignore").write_text("*\n")


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class Sandbox:
    def __init__(self, options: SandboxOptions, *, progress: Progress | None = None) -> None:
        self.options = options
        self.progress: Progress = progress or (lambda line: print(line, flush=True))
        self.state_dir = options.state_dir.resolve()
        self.supervisor = Supervisor(self.state_dir / "logs", progress=self._say)
        self.consumer = SampleConsumer(echo=self._say if options.echo_consumer else None)
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.proxy = SandboxProxy(self.endpoints)
        self.emulator_url = ""
        self.kube_url = ""
        self.operator_metrics_url = ""
        self.operator: Child | None = None
        self.api: KubeApi | None = None
        self.kubelet: Kubelet | None = None
        self._kubelet_task: asyncio.Task[None] | None = None
        self.control_plane: ControlPlane | None = None
        self.real_node: RealNodeRun | None = None
        if options.kube == "real":
            self.real_node = RealNodeRun(self.state_dir, self.supervisor, self._say)

    def _say(self, line: str) -> None:
        self.progress(f"[sandbox] {line}")

    # -- environment ------------------------------------------------------------------------

    def endpoints(self) -> Mapping[str, str]:
        """Where the host reaches Services (and Pods) by `service_key`: the kubelet's loopback
        ports, the real node's ClusterIPs; until one runs, the consumer's."""
        if self.real_node is not None:
            return self.real_node.endpoints
        return self.kubelet.endpoints if self.kubelet is not None else self.static_endpoints

    @property
    def host(self) -> str:
        """Where the emulator and the consumer listen: loopback, or the host's end of the
        real node's veth pair (the Pods reach it)."""
        return self.real_node.host_ip if self.real_node is not None else LOOPBACK

    @property
    def static_endpoints(self) -> dict[str, str]:
        key = service_key(CONSUMER_SERVICE, self.options.namespace, CONSUMER_PORT)
        return {key: f"{LOOPBACK}:{self.consumer.port}"}

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env.update(self.proxy.environment())
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    # -- start ----------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        prepare_state_dir(self.state_dir)
        self._say(f"state, logs and kubeconfig in {self.state_dir}")

        await self.proxy.start()
        self._say(
            f"cluster names (Services, Pods) served on loopback by the proxy {self.proxy.url}"
        )
        if self.real_node is not None:
            self.control_plane = await self.real_node.start_control_plane()
            self._use_control_plane()
        await self.consumer.start(self.host, 0)
        self._say(f"sample consumer listening on http://{self.host}:{self.consumer.port}/")

        if self.real_node is None:
            await self._start_emulator()
            await self._start_kube()
        await self._install()
        if self.real_node is not None:
            assert self.api is not None
            await self.real_node.start_node(self.api)
            self.emulator_url = await self.real_node.start_emulator(
                self.api, self.options.namespace, self.options.api_key, self._emulator_flags()
            )
            self._say(
                f"emulator: Pod {self.options.namespace}/gemini-emulator, {self.emulator_url}"
            )
        else:
            self._start_kubelet()
        if self.options.start_operator:
            await self.start_operator()
        self._write_examples()
        self._write_env_file()

    def _emulator_flags(self) -> tuple[str, ...]:
        options = self.options
        return (
            "--batch-seconds",
            str(options.batch_seconds),
            "--time-scale",
            str(options.time_scale),
        )

    async def _start_emulator(self) -> None:
        port_file = self.state_dir / "emulator.port"
        argv = [
            venv_executable("gemini-webhooks"),
            "emulator",
            "--host",
            self.host,
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            self.options.api_key,
            *self._emulator_flags(),
        ]

        async def ready() -> bool:
            port = _read_text(port_file)
            if not port:
                return False
            self.emulator_url = f"http://{self.host}:{port}"
            return await http_ready(f"{self.emulator_url}/emulator/v1/healthz")()

        await self.supervisor.start(
            ProcessSpec(
                "emulator",
                argv,
                env=self.child_env(),
                ready=ready,
                ready_what="its port file, then /emulator/v1/healthz",
            )
        )

    async def _start_kube(self) -> None:
        argv = [
            venv_executable("gemini-webhooks"),
            "kube-sandbox",
            "--host",
            LOOPBACK,
            "--port",
            "0",
            "--kubeconfig",
            str(self.kubeconfig),
        ]

        async def ready() -> bool:
            text = _read_text(self.kubeconfig)
            if not text:
                return False
            try:
                self.kube_url = server_from_kubeconfig(text)
            except (ValueError, yaml.YAMLError):
                return False  # being written
            return await http_ready(f"{self.kube_url}/version")()

        await self.supervisor.start(
            ProcessSpec(
                "kube-sandbox",
                argv,
                env=self.child_env(),
                ready=ready,
                ready_what=f"the kubeconfig {self.kubeconfig}, then /version",
            )
        )
        self.api = KubeApi(self.kube_url)

    def _use_control_plane(self) -> None:
        assert self.control_plane is not None
        self.kubeconfig.write_text(self.control_plane.layout.admin_kubeconfig.read_text())
        self.kubeconfig.chmod(0o600)
        self.kube_url = self.control_plane.server
        self.api = KubeApi.from_kubeconfig(self.kubeconfig)

    async def _install(self) -> None:
        """Our CRD, the API-key Secret and the sample consumer's Service."""
        assert self.api is not None
        crd = crd_contract.crd()
        await self.api.apply("customresourcedefinitions.apiextensions.k8s.io/v1", None, crd)
        group_version = f"/apis/{crd_contract.API_VERSION}"
        await self._wait_served(group_version, "the GeminiWebhook API")
        self._say(f"CRD {crd_contract.CRD_NAME} installed")
        namespace = self.options.namespace
        if await self.api.get("namespaces", None, namespace) is None:
            await self.api.create(
                "namespaces",
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            )
        await self.api.apply(
            "secrets",
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": API_KEY_SECRET, "namespace": namespace},
                "type": "Opaque",
                "stringData": {DEFAULT_API_KEY_SECRET_KEY: self.options.api_key},
            },
        )
        await self.api.apply(
            "services",
            namespace,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": CONSUMER_SERVICE,
                    "namespace": namespace,
                    "labels": {"app.kubernetes.io/name": CONSUMER_SERVICE},
                },
                "spec": {"ports": [{"name": "http", "port": CONSUMER_PORT}]},
            },
        )
        if self.real_node is not None:  # the consumer on the host, for the Pods
            slice_ = consumer_endpoint_slice(
                CONSUMER_SERVICE, namespace, "http", self.host, self.consumer.port
            )
            await self.api.apply(ENDPOINT_SLICES, namespace, slice_)
            await self.real_node.secure_namespace(self.api, namespace, self.consumer.port)
        self._say(
            f"Secret {namespace}/{API_KEY_SECRET} (the emulator's API key) and Service "
            f"{namespace}/{CONSUMER_SERVICE}:{CONSUMER_PORT} (the sample consumer) created"
        )

    async def _wait_served(self, path: str, what: str, within: float = 30.0) -> None:
        assert self.api is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await self.api.served(path):
            if loop.time() > deadline:
                raise ChildFailedError(
                    f"{what} did not appear at {self.kube_url}{path} within {within:.0f}s"
                )
            await asyncio.sleep(0.1)

    def _start_kubelet(self) -> None:
        assert self.api is not None
        env = self.child_env()
        self.kubelet = Kubelet(
            self.api,
            self.supervisor,
            self.state_dir,
            base_env=env,
            static_endpoints=self.static_endpoints,
            progress=self._say,
        )
        self._kubelet_task = asyncio.create_task(self.kubelet.run(), name="kubelet")
        self._say("kubelet watching receiver Deployments")

    async def start_operator(self) -> None:
        if self.real_node is not None:
            await self._install_operator()
            return
        metrics_port = free_port()
        liveness = f"http://{LOOPBACK}:{free_port()}/healthz"
        argv = [
            venv_executable("gemini-webhooks"),
            "operator",
            "--kubeconfig",
            str(self.kubeconfig),
            "--api-base-url",
            self.emulator_url,
            "--metrics-address",
            LOOPBACK,
            "--metrics-port",
            str(metrics_port),
            "--liveness",
            liveness,
            # Drift shows within seconds on a laptop (one list call per interval).
            "--drift-interval",
            str(self.options.drift_interval),
            # As the chart runs it: one Lease elects the replica that acts, and
            # `kubectl gemini check` finds the operator by it.
            "--leader-elect",
            "--leader-election-namespace",
            self.options.namespace,
            *self.options.operator_args,
        ]
        env = {**self.child_env(), "POD_NAME": OPERATOR_POD_NAME}
        self.operator_metrics_url = f"http://{LOOPBACK}:{metrics_port}/metrics"
        self.operator = await self.supervisor.start(
            ProcessSpec(
                "operator",
                argv,
                # Its "Pod" name: a restarted operator (a container restarted in its Pod)
                # renews the Lease it held at once instead of waiting for it to expire.
                env=env,
                ready=http_ready(liveness),
                ready_what=f"its liveness probe {liveness}",
            ),
            ready_timeout=60,
        )

    async def _install_operator(self) -> None:
        """The chart's operator on the real node, with `options.operator_args` added."""
        assert self.real_node is not None and self.api is not None
        values = operator_values(
            self.options.namespace,
            api_base_url=self.emulator_url,
            host_ip=self.host,
            drift_interval=self.options.drift_interval,
            extra_args=list(self.options.operator_args),
        )
        self.operator_metrics_url = await self.real_node.install_operator(
            self.api, self.options.namespace, values
        )
        self._say(f"operator: the chart's Deployment (helm), /metrics {self.operator_metrics_url}")

    async def stop_operator(self, *, kill: bool = False) -> None:
        """Stop the operator: SIGTERM (a clean exit), or SIGKILL (a crash) with `kill`; on
        the real node, `helm uninstall` (a crash there is its container's: tests/e2e)."""
        if self.real_node is not None and not kill:
            await self.real_node.uninstall_operator(self.options.namespace)
            self.operator_metrics_url = ""
            return
        if self.operator is None:
            return
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.operator.pid, signal.SIGKILL)
            await self.operator.process.wait()
        await self.supervisor.stop(self.operator)
        self.operator = None

    @property
    def env_file(self) -> Path:
        return self.state_dir / "env"

    def _write_env_file(self) -> None:
        """`source .sandbox/env`: kubectl, the kubeconfig and the emulator, for a shell."""
        self.env_file.write_text("\n".join(env_lines(self)) + "\n")

    def render_example(self, name: str = DEMO_NAME, source: str = "sandbox-demo.yaml") -> str:
        """An example filled with this sandbox's URLs (and `name` for the resource)."""
        values = {
            "EMULATOR_URL": self.emulator_url,
            "NAMESPACE": self.options.namespace,
            "NAME": name,
        }
        return string.Template((EXAMPLES_DIR / source).read_text()).substitute(values)

    def _write_examples(self) -> None:
        """The examples, filled with this sandbox's URLs, ready for `kubectl apply -f`."""
        target = self.state_dir / "examples"
        target.mkdir(exist_ok=True)
        for source in sorted(EXAMPLES_DIR.glob("*.yaml")):
            (target / source.name).write_text(self.render_example(source=source.name))

    def example_path(self, name: str = "sandbox-demo.yaml") -> Path:
        return self.state_dir / "examples" / name

    def example(self, name: str = "sandbox-demo.yaml") -> dict[str, Any]:
        document: dict[str, Any] = yaml.safe_load(self.example_path(name).read_text())
        return document

    # -- stop -----------------------------------------------------------------------------

    async def stop(self) -> None:
        if self._kubelet_task is not None:
            self._kubelet_task.cancel()
            await asyncio.gather(self._kubelet_task, return_exceptions=True)
            self._kubelet_task = None
        if self.real_node is not None:  # the operator's Pod and the emulator's with it
            await self.real_node.stop_node()
        await self.supervisor.aclose()
        if self.real_node is not None:
            await self.real_node.stop_network()
        await self.consumer.stop()
        await self.proxy.stop()
        if self.api is not None:
            await self.api.close()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())
