"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler, started the way controller-runtime's envtest starts them.

One small description per process (`etcd_argv`, `apiserver_argv`, ...: its flags in one
list, pure), one health wait each (etcd's `/health`, the API server's `/readyz`, the
controllers' `/healthz`), a throw-away CA (`pki`), and kubeconfigs for the admin
(`system:masters`), each control-plane component and the node. The API server serves TLS,
authenticates client certificates and service-account tokens, authorizes with
`Node,RBAC`, runs the default admission plugins plus NodeRestriction, and issues
service-account tokens (TokenRequest); the controller manager runs every default
controller (garbage collector, Deployment/ReplicaSet, EndpointSlice, service accounts,
root CA publisher, ...) under per-controller service-account credentials.

`ControlPlane.start()` starts them in order and returns when the API server is ready and
the `default` ServiceAccount exists; `stop()` stops them newest first (the supervisor
kills each whole process group), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import yaml

from gemini_webhooks.controlplane import pki
from gemini_webhooks.sandbox.kubeapi import KubeApi, KubeApiError
from gemini_webhooks.sandbox.ports import LOOPBACK, free_port
from gemini_webhooks.sandbox.supervisor import (
    ChildFailedError,
    ProcessSpec,
    Progress,
    ReadinessCheck,
    Supervisor,
)

SERVICE_CIDR = "10.0.0.0/24"
ISSUER = "https://kubernetes.default.svc.cluster.local"
NODE_NAME = "gwo-node"
MARKER = ".gemini-webhooks-control-plane"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def allocate(cls) -> Ports:
        return cls(free_port(), free_port(), free_port(), free_port(), free_port())


@dataclass(frozen=True)
class Layout:
    """Where one control plane keeps its state: certificates, kubeconfigs, etcd, logs."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def kubeconfig(self, user: str) -> Path:
        return self.root / f"{user}.kubeconfig"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig("admin")

    @property
    def ca(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def audit_log(self) -> Path:
        """The API server's audit events, one JSON object a line (with an audit policy)."""
        return self.root / "audit.log"


def etcd_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    client = f"http://{LOOPBACK}:{ports.etcd_client}"
    peer = f"http://{LOOPBACK}:{ports.etcd_peer}"
    return [
        str(binary),
        "--name=default",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--unsafe-no-fsync=true",  # a throw-away cluster: durability is not what we test
        "--log-level=warn",
    ]


def apiserver_argv(
    binary: Path,
    layout: Layout,
    ports: Ports,
    address: str = LOOPBACK,
    audit_policy: Path | None = None,
) -> list[str]:
    """`address`: where the API server listens and what the `kubernetes` Service's
    endpoints say; loopback unless a real node's Pods must reach it. `audit_policy`: an
    audit policy file; the events it selects go to `layout.audit_log` (off without it)."""
    p = layout.pki
    # The `kubernetes` Service's endpoints cannot be a loopback address (validation
    # refuses 127.0.0.0/8); on loopback everything reaches the API server by its URL.
    reconciler = ["--endpoint-reconciler-type=none"] if address == LOOPBACK else []
    audit = (
        [
            f"--audit-policy-file={audit_policy}",
            f"--audit-log-path={layout.audit_log}",
            "--audit-log-format=json",
        ]
        if audit_policy is not None
        else []
    )
    return [
        str(binary),
        f"--etcd-servers=http://{LOOPBACK}:{ports.etcd_client}",
        f"--bind-address={address}",
        f"--advertise-address={address}",
        f"--secure-port={ports.apiserver}",
        f"--cert-dir={p}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={layout.ca}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        f"--service-account-issuer={ISSUER}",
        f"--api-audiences={ISSUER}",
        f"--service-account-key-file={p / 'service-account.pub'}",
        f"--service-account-signing-key-file={p / 'service-account.key'}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        "--allow-privileged=true",
        *reconciler,
        *audit,
        # Logs, exec and port-forward reach a kubelet at its Node's address: our nodes'
        # names resolve nowhere.
        "--kubelet-preferred-address-types=InternalIP",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        "--profiling=false",
        "--v=0",
    ]


def _component_argv(binary: Path, layout: Layout, component: str, port: int) -> list[str]:
    """What the controller manager and the scheduler share: their own kubeconfig for the
    API server and for delegated authentication and authorization, a loopback serving
    port with a certificate of their own, and no leader election (there is one of each)."""
    kubeconfig = layout.kubeconfig(component)
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--tls-cert-file={layout.pki / f'{component}-serving.crt'}",
        f"--tls-private-key-file={layout.pki / f'{component}-serving.key'}",
        "--leader-elect=false",
    ]


def controller_manager_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    return [
        *_component_argv(binary, layout, "controller-manager", ports.controller_manager),
        f"--service-account-private-key-file={layout.pki / 'service-account.key'}",
        f"--root-ca-file={layout.ca}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--controllers=*",
        "--concurrent-gc-syncs=20",  # the garbage collector is what tests wait on most
        "--profiling=false",
        "--v=0",
    ]


def scheduler_argv(binary: Path, layout: Layout, ports: Ports) -> list[str]:
    return [
        *_component_argv(binary, layout, "scheduler", ports.scheduler),
        "--profiling=false",
        "--v=0",
    ]


def kubeconfig_document(
    server: str,
    ca: Path,
    user: str,
    *,
    cert: Path | None = None,
    key: Path | None = None,
    token_file: Path | None = None,
) -> dict[str, object]:
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token_file is not None:
        credentials["tokenFile"] = str(token_file)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gwo-control-plane",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": user, "context": {"cluster": "gwo-control-plane", "user": user}}],
        "current-context": user,
    }


def write_kubeconfig(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)


# (file name, common name, groups) of every client certificate the control plane needs.
CLIENTS = (
    ("admin", "gwo-admin", ("system:masters",)),
    ("controller-manager", "system:kube-controller-manager", ()),
    ("scheduler", "system:kube-scheduler", ()),
    ("node", f"system:node:{NODE_NAME}", ("system:nodes",)),
    ("apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)),
    # The real node's helpers: kube-proxy (bound to `system:node-proxier` by the API
    # server's bootstrap policy), CoreDNS and kube-router (bound by the node to read what
    # they serve or enforce).
    ("kube-proxy", "system:kube-proxy", ()),
    ("coredns", "system:coredns", ()),
    ("kube-router", "system:kube-router", ()),
)


def tls_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


def https_ready(
    url: str, ca: Path, *, expect: Callable[[str], bool] | None = None
) -> ReadinessCheck:
    context = tls_context(ca)

    async def check() -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url, ssl=context) as response,
            ):
                body = await response.text()
                return response.status == 200 and (expect is None or expect(body))
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    return check


def etcd_healthy(url: str) -> ReadinessCheck:
    async def check() -> bool:
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session,
                session.get(url) as response,
            ):
                return response.status == 200 and json.loads(await response.text()).get(
                    "health"
                ) in ("true", True)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False

    return check


@dataclass
class ControlPlane:
    """etcd and the Kubernetes control plane, as child processes of this one."""

    root: Path
    binaries: dict[str, Path]
    progress: Progress = field(default=lambda _line: None)
    supervisor: Supervisor | None = None  # share one with the caller's other children
    address: str = LOOPBACK  # where the API server listens (a real node's host address)
    audit_policy: Path | None = None  # an audit policy: its events go to layout.audit_log

    def __post_init__(self) -> None:
        self.layout = Layout(self.root.resolve())
        self.ports = Ports.allocate()
        self._own_supervisor = self.supervisor is None
        if self.supervisor is None:
            self.supervisor = Supervisor(self.layout.logs, progress=self.progress)
        self.server = f"https://{self.address}:{self.ports.apiserver}"
        self.started_seconds = 0.0

    def prepare(self) -> None:
        """A fresh state directory: only one that is empty or a previous control plane's."""
        root = self.layout.root
        if root.exists():
            if any(root.iterdir()) and not (root / MARKER).exists():
                raise ChildFailedError(
                    f"{root} is not empty and was not made by the control plane; refusing to "
                    "empty it (choose another --dir)"
                )
            shutil.rmtree(root)
        self.layout.logs.mkdir(parents=True)
        (root / MARKER).write_text("state of `scripts/control-plane up`; emptied on every start\n")
        (root / ".gitignore").write_text("*\n")
        ca = pki.CertificateAuthority(self.layout.pki)
        for serving in ("apiserver", "controller-manager-serving", "scheduler-serving"):
            ca.issue(serving, common_name=serving, server=True, extra_ips=(self.address,))
        pki.service_account_keys(self.layout.pki)
        for name, common_name, groups in CLIENTS:
            pair = ca.issue(name, common_name=common_name, organizations=groups)
            if name != "apiserver-kubelet-client":
                write_kubeconfig(
                    self.layout.kubeconfig(name),
                    kubeconfig_document(
                        self.server, self.layout.ca, common_name, cert=pair.cert, key=pair.key
                    ),
                )

    async def start(self) -> None:
        started = time.monotonic()
        self.prepare()
        supervisor = self.supervisor
        assert supervisor is not None
        layout, ports, binaries = self.layout, self.ports, self.binaries
        await supervisor.start(
            ProcessSpec(
                "etcd",
                etcd_argv(binaries["etcd"], layout, ports),
                ready=etcd_healthy(f"http://{LOOPBACK}:{ports.etcd_client}/health"),
                ready_what="its /health",
            ),
            ready_timeout=60,
        )
        await supervisor.start(
            ProcessSpec(
                "kube-apiserver",
                apiserver_argv(
                    binaries["kube-apiserver"], layout, ports, self.address, self.audit_policy
                ),
                ready=https_ready(f"{self.server}/readyz", layout.ca),
                ready_what="/readyz",
            ),
            ready_timeout=120,
        )
        await supervisor.start(
            ProcessSpec(
                "kube-controller-manager",
                controller_manager_argv(binaries["kube-controller-manager"], layout, ports),
                ready=https_ready(
                    f"https://{LOOPBACK}:{ports.controller_manager}/healthz", layout.ca
                ),
                ready_what="/healthz",
            ),
            ready_timeout=120,
        )
        await supervisor.start(
            ProcessSpec(
                "kube-scheduler",
                scheduler_argv(binaries["kube-scheduler"], layout, ports),
                ready=https_ready(f"https://{LOOPBACK}:{ports.scheduler}/healthz", layout.ca),
                ready_what="/healthz",
            ),
            ready_timeout=120,
        )
        await self._wait_for_default_service_account()
        self.started_seconds = time.monotonic() - started
        self.progress(f"control plane ready in {self.started_seconds:.1f}s at {self.server}")

    async def _wait_for_default_service_account(self, within: float = 60.0) -> None:
        """The controller manager is working once it made the `default` ServiceAccount
        (the ServiceAccount admission plugin refuses Pods in a namespace without one)."""
        api = KubeApi.from_kubeconfig(self.layout.admin_kubeconfig)
        deadline = time.monotonic() + within
        try:
            while True:
                with contextlib.suppress(KubeApiError, aiohttp.ClientError, OSError):
                    if await api.get("serviceaccounts", "default", "default") is not None:
                        return
                for child in self.supervisor.exited() if self.supervisor else []:
                    raise ChildFailedError(
                        f"{child.name} exited with code {child.process.returncode}; the end of "
                        f"its log ({child.log_path}):\n{child.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise ChildFailedError(
                        "the controller manager made no `default` ServiceAccount within "
                        f"{within:.0f}s; see {self.layout.logs}"
                    )
                await asyncio.sleep(0.2)
        finally:
            await api.close()

    async def stop(self) -> None:
        if self.supervisor is not None and self._own_supervisor:
            await self.supervisor.aclose()
