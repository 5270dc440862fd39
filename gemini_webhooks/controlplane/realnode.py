"""A real Kubernetes node beside the control plane: containerd, the kubelet, kube-proxy,
CoreDNS and kube-router (NetworkPolicy) in a network namespace of their own, Pods on a
CNI bridge with a Pod IP each.

`nodeconfig` decides every file and flag; this module acts: it records what it will change
on the host, builds the namespace and its veth pair, starts the processes (through the
control plane's supervisor, so a dead parent takes them along), imports our images into
containerd, and on `stop()` takes everything down again in the reverse order — Pods,
shims, mounts, cgroups, the namespace, the paths the components hard-code, the sysctls
the kubelet changed. `stop()` is idempotent and also runs first on `up`, to clear what a
killed run left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from gemini_webhooks.controlplane import nodeconfig
from gemini_webhooks.controlplane.cluster import NODE_NAME, ControlPlane
from gemini_webhooks.controlplane.hostlock import (
    HostBusyError,
    HostLock,
    HostState,
    read_sysctl,
    write_sysctl,
)
from gemini_webhooks.controlplane.nodeconfig import NodeLayout, NodeNetwork
from gemini_webhooks.sandbox.kubeapi import KubeApi, KubeApiError
from gemini_webhooks.sandbox.supervisor import (
    ChildFailedError,
    ProcessSpec,
    Progress,
    ReadinessCheck,
    Supervisor,
    http_ready,
)

CGROUP_ROOT = Path("/sys/fs/cgroup")
# systemd's default start limit (StartLimitBurst=5 within StartLimitIntervalSec=10s) is
# for units that fail at once; a node process that ran for minutes and exited is started
# again up to this many times within this window.
RESTART_BURST, RESTART_WINDOW = 5, 600.0
MARKER = ".gemini-webhooks-real-node"
NETFILTER_TOOLS = ("iptables", "iptables-save", "iptables-restore", "ipset")


@dataclass(frozen=True)
class NodeBinaries:
    kubelet: Path
    kube_proxy: Path
    containerd: Path
    ctr: Path
    shim: Path  # containerd-shim-runc-v2, found by containerd on PATH
    runc: Path
    crictl: Path
    coredns: Path
    kube_router: Path  # its network policy controller only
    cni_bin: Path  # the directory of the CNI plugins (bridge, host-local, loopback, portmap)
    pause_archive: Path  # the pause image as an OCI archive
    sandbox_image: str  # its reference, as containerd is told to pin it


def _run(argv: list[str], *, timeout: float = 60.0, check: bool = True) -> str:
    result = subprocess.run(  # noqa: S603 - our own argv
        argv, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise ChildFailedError(
            f"`{' '.join(argv)}` failed ({result.returncode}): {result.stderr.strip()}"
        )
    return result.stdout


def unix_socket_ready(path: Path) -> ReadinessCheck:
    """A readiness check: something accepts connections on the Unix socket `path`."""

    async def check() -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            return False
        writer.close()
        return True

    return check


def mounts_under(roots: list[Path]) -> list[Path]:
    """Mount points at or below any of `roots`, deepest first (so each unmounts cleanly)."""
    found: list[Path] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            target = Path(line.split()[4].encode().decode("unicode_escape"))
            if any(target == root or root in target.parents for root in roots):
                found.append(target)
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def kubepods_cgroups() -> list[Path]:
    """Every `kubepods` cgroup directory of every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        top = hierarchy / nodeconfig.KUBEPODS_CGROUP
        if top.is_dir():
            found += [Path(d) for d, _, _ in os.walk(top)]
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def processes_to_end(containerd_sockets: list[Path]) -> set[int]:
    """Our containers' processes (in a `kubepods` cgroup) and the shims of our containerds
    (their command line names its socket)."""
    pids: set[int] = set()
    for cgroup in kubepods_cgroups():
        with contextlib.suppress(OSError):
            pids |= {int(p) for p in (cgroup / "cgroup.procs").read_text().split()}
    needles = [str(socket).encode() for socket in containerd_sockets]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes()
                if any(needle in cmdline for needle in needles):
                    pids.add(int(entry.name))
    pids.discard(os.getpid())
    return pids


@dataclass
class RealNode:
    root: Path
    binaries: NodeBinaries
    images: dict[str, Path]  # our OCI archives by name (`nodeconfig.IMAGE_REPOSITORIES`)
    progress: Progress = field(default=lambda _line: None)

    def __post_init__(self) -> None:
        self.layout = NodeLayout(self.root.resolve())
        self.network: NodeNetwork = nodeconfig.NODE_NETWORK
        self.namespace_file = self.layout.root / "netns"
        self.supervisor = Supervisor(self.layout.logs, progress=self.progress)
        self.kubelet_started_at: float | None = None  # wall-clock seconds
        self.host_lock = HostLock(nodeconfig.HOST_LOCK)
        self.refused = False  # another living node had the machine: nothing here is ours

    # --- the network ---------------------------------------------------------------

    def create_network(self) -> None:
        """Record the host's state, then build the namespace, the veth pair and the routes.
        The API server must then listen on `network.host_ip`. HostBusyError, having touched
        nothing, while another living process runs a node on this machine."""
        try:
            self.host_lock.acquire(f"real node {self.layout.root}")
        except HostBusyError:
            self.refused = True
            raise
        self._clear_node()
        self._clear_host()
        # kube-router runs them (in the node's namespace, where its rules and sets stay).
        missing = [tool for tool in NETFILTER_TOOLS if shutil.which(tool) is None]
        if missing:
            raise ChildFailedError(
                f"the real node's NetworkPolicy enforcement needs {', '.join(missing)} on PATH "
                "(Debian's iptables and ipset packages; `scripts/bootstrap` installs them)"
            )
        self._fresh_directory()
        HostState.record(self.layout.root).save(nodeconfig.HOST_STATE)
        self.namespace_file.touch()
        _run(["unshare", f"--net={self.namespace_file}", "true"])
        for command in self.network.setup_commands(self.namespace_file):
            _run(command)

    def _fresh_directory(self) -> None:
        """An empty node directory: only one that is empty or a previous node's (whose
        mounts `stop_leftovers` has just removed)."""
        root = self.layout.root
        if root.exists():
            if any(root.iterdir()) and not (root / MARKER).exists():
                raise ChildFailedError(
                    f"{root} is not empty and was not made by a real node; refusing to empty it"
                )
            shutil.rmtree(root)
        root.mkdir(parents=True)
        (root / MARKER).write_text(
            "state of a real node (`scripts/control-plane up --node real`)\n"
        )

    def _delete_network(self) -> None:
        _run(["ip", "link", "delete", self.network.host_veth], check=False)
        if self.namespace_file.exists():
            _run(["umount", str(self.namespace_file)], check=False)
            self.namespace_file.unlink(missing_ok=True)

    # --- the processes -------------------------------------------------------------

    def _write_configs(self, plane: ControlPlane) -> None:
        layout, network, b = self.layout, self.network, self.binaries
        for directory in (layout.config, layout.cni_conf, layout.cni_ipam, layout.pod_logs):
            directory.mkdir(parents=True, exist_ok=True)
        files = {
            layout.config / "containerd.toml": nodeconfig.containerd_config(
                layout, runc=b.runc, cni_bin=b.cni_bin, sandbox_image=b.sandbox_image
            ),
            layout.cni_conf / "10-gwo.conflist": nodeconfig.cni_config(network, layout),
            layout.config / "kubelet.yaml": nodeconfig.kubelet_config(
                network, layout, plane.layout.ca
            ),
            layout.config / "kube-proxy.yaml": nodeconfig.kube_proxy_config(
                network, plane.layout.kubeconfig("kube-proxy")
            ),
            layout.config / "Corefile": nodeconfig.corefile(plane.layout.kubeconfig("coredns")),
            # Pods resolve through CoreDNS only; the node itself needs no resolver.
            layout.resolv_conf: "",
        }
        for path, text in files.items():
            path.write_text(text)

    async def _start(self, name: str, argv: list[str], ready: ReadinessCheck, what: str) -> None:
        env = dict(os.environ)
        env["PATH"] = f"{self.binaries.shim.parent}:{env.get('PATH', '')}"
        await self.supervisor.start(
            ProcessSpec(
                name,
                nodeconfig.in_node(self.namespace_file, argv),
                env=env,
                ready=ready,
                ready_what=what,
            ),
            ready_timeout=120,
        )

    def _ctr(self, *args: str, timeout: float = 300.0) -> str:
        return _run(
            [
                str(self.binaries.ctr),
                f"--address={self.layout.containerd_socket}",
                "-n",
                "k8s.io",
                *args,
            ],
            timeout=timeout,
        )

    def import_images(self) -> None:
        started = time.monotonic()
        # The pause archive names itself (io.containerd.image.name); ours carry a tag only.
        self._ctr("images", "import", str(self.binaries.pause_archive))
        for name, archive in self.images.items():
            repository = nodeconfig.IMAGE_REPOSITORIES[name]
            self._ctr("images", "import", "--base-name", repository, str(archive))
        self.progress(f"images imported into containerd ({time.monotonic() - started:.1f}s)")

    async def start(self, plane: ControlPlane) -> None:
        """Start the node's processes against `plane` (listening on `network.host_ip`) and
        return once the Node is Ready and Services and DNS answer."""
        started = time.monotonic()
        self._write_configs(plane)
        layout, network, b = self.layout, self.network, self.binaries
        await self._start(
            "containerd",
            [str(b.containerd), f"--config={layout.config / 'containerd.toml'}"],
            unix_socket_ready(layout.containerd_socket),
            "its socket",
        )
        await asyncio.to_thread(self.import_images)
        await self._apply_rbac(plane)
        self.kubelet_started_at = time.time()
        await self._start(
            "kubelet",
            nodeconfig.kubelet_argv(b.kubelet, layout, network, plane.layout.kubeconfig("node")),
            http_ready(f"http://{network.node_ip}:{nodeconfig.KUBELET_HEALTHZ_PORT}/healthz"),
            "/healthz",
        )
        await self._start(
            "kube-proxy",
            nodeconfig.kube_proxy_argv(b.kube_proxy, layout),
            http_ready(f"http://{network.node_ip}:{nodeconfig.KUBE_PROXY_HEALTHZ_PORT}/healthz"),
            "/healthz",
        )
        await self._start(
            "coredns",
            nodeconfig.coredns_argv(b.coredns, layout),
            http_ready(f"http://{network.node_ip}:{nodeconfig.COREDNS_READY_PORT}/ready"),
            "/ready",
        )
        await self._wait_node_ready(plane)
        # It reads its Node's addresses when it starts, so only once the Node exists.
        await self._start(
            "kube-router",
            nodeconfig.kube_router_argv(
                b.kube_router, network, plane.layout.kubeconfig("kube-router")
            ),
            http_ready(f"http://{network.node_ip}:{nodeconfig.KUBE_ROUTER_HEALTH_PORT}/healthz"),
            "/healthz",
        )
        kubelet_to_ready = time.time() - self.kubelet_started_at
        self.progress(
            f"real node {NODE_NAME} ready in {time.monotonic() - started:.1f}s "
            f"({kubelet_to_ready:.1f}s after the kubelet started)"
        )

    async def watch(self) -> None:
        """Return never. A node process that exits is started again, as systemd restarts
        the kubelet and containerd on a real node (`Restart=always`): the Pods run on (their
        shims outlive containerd and the kubelet) and the restarted kubelet takes them up
        again. More than RESTART_BURST exits within RESTART_WINDOW seconds (systemd's start
        limit) raise instead, with the end of the process's log."""
        exits: list[float] = []
        while True:
            exited = self.supervisor.exited()
            if not exited:
                await asyncio.sleep(1.0)
                continue
            child = exited[0]
            now = time.monotonic()
            exits = [*(t for t in exits if now - t < RESTART_WINDOW), now]
            said = f"{child.name} exited with code {child.process.returncode}"
            if len(exits) > RESTART_BURST:
                raise ChildFailedError(
                    f"{said}, its {len(exits)}th exit within {RESTART_WINDOW:.0f}s; the end of "
                    f"its log ({child.log_path}):\n{child.log_tail()}"
                )
            self.progress(f"{said}; starting it again")
            self.supervisor.forget(child)
            await self.supervisor.start(child.spec, ready_timeout=120)

    async def _apply_rbac(self, plane: ControlPlane) -> None:
        api = KubeApi.from_kubeconfig(plane.layout.admin_kubeconfig)
        try:
            for resource, body in nodeconfig.helper_rbac():
                await api.apply(resource, None, body)
        finally:
            await api.close()

    async def _wait_node_ready(self, plane: ControlPlane, within: float = 120.0) -> None:
        api = KubeApi.from_kubeconfig(plane.layout.admin_kubeconfig)
        deadline = time.monotonic() + within
        try:
            while True:
                node = None
                with contextlib.suppress(KubeApiError, OSError):
                    node = await api.get("nodes", None, NODE_NAME)
                conditions = (node or {}).get("status", {}).get("conditions", [])
                if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                    return
                for child in self.supervisor.exited():
                    raise ChildFailedError(
                        f"{child.name} exited with code {child.process.returncode}; the end of "
                        f"its log ({child.log_path}):\n{child.log_tail()}"
                    )
                if time.monotonic() > deadline:
                    raise ChildFailedError(
                        f"Node {NODE_NAME} was not Ready within {within:.0f}s: {conditions}; "
                        f"see {self.layout.logs}"
                    )
                await asyncio.sleep(0.5)
        finally:
            await api.close()

    # --- taking it down ------------------------------------------------------------

    async def stop(self, *, keep_network: bool = False) -> None:
        """Stop the node and leave nothing of it on the machine; with `keep_network`, the
        namespace and veth pair stay until `stop_leftovers()` (the API server listens on
        the pair's host address: it stops cleanly only while that address exists)."""
        containerd = next((c for c in self.supervisor.children if c.name == "containerd"), None)
        for child in reversed(list(self.supervisor.children)):
            if child is not containerd:
                await self.supervisor.stop(child)
        if containerd is not None and containerd.running:
            # Through the CRI, so that each sandbox's CNI DEL releases its address.
            await asyncio.to_thread(
                _run,
                [
                    str(self.binaries.crictl),
                    f"--runtime-endpoint=unix://{self.layout.containerd_socket}",
                    "rmp",
                    "--all",
                    "--force",
                ],
                timeout=120,
                check=False,
            )
        await self.supervisor.aclose()
        await asyncio.to_thread(self.stop_leftovers, keep_network=keep_network)

    def stop_leftovers(self, *, keep_network: bool = False) -> None:
        """Whatever a previous `stop()` (or a killed run) left: processes, mounts, cgroups,
        the namespace, fixed host paths, sysctls. Safe on a clean machine; refused, touching
        nothing, while another living process runs a node here (`hostlock`): the names it
        clears are that node's too (nothing at all after `create_network` was refused).
        Without `keep_network`, the machine is free again after."""
        if self.refused:
            return
        self.host_lock.acquire(f"real node {self.layout.root}")
        if keep_network:
            self._clear_node()
            return
        try:
            self._clear_node()
            self._clear_host()
        finally:
            self.host_lock.release()

    def _clear_node(self) -> None:
        """The node's processes, mounts and cgroups (and a killed previous node's, whatever
        its directory)."""
        roots = [self.layout.root]
        state = HostState.load(nodeconfig.HOST_STATE)
        if state is not None and Path(state.root) != self.layout.root:
            roots.append(Path(state.root))
        self._end_processes([NodeLayout(root).containerd_socket for root in roots])
        for mount in mounts_under([*roots, *nodeconfig.FIXED_HOST_PATHS]):
            if mount != self.namespace_file:
                _run(["umount", "--lazy", str(mount)], check=False)
        for cgroup in kubepods_cgroups():
            with contextlib.suppress(OSError):
                cgroup.rmdir()

    def _clear_host(self) -> None:
        """The namespace and veth pair, the fixed host paths and the sysctls `up` found."""
        state = HostState.load(nodeconfig.HOST_STATE)
        self._delete_network()
        if state is None:
            return
        for path in nodeconfig.FIXED_HOST_PATHS:
            if str(path) not in state.existing_paths:
                shutil.rmtree(path, ignore_errors=True)
        for name, value in state.sysctls.items():
            if read_sysctl(name) != value:
                write_sysctl(name, value)
        left = [str(m) for m in mounts_under([self.layout.root, Path(state.root)])]
        if left or kubepods_cgroups():
            # The record stays, so that the next `up` tries again.
            raise ChildFailedError(
                f"could not remove mounts {left} or cgroups {kubepods_cgroups()}"
            )
        nodeconfig.HOST_STATE.unlink()

    def _end_processes(self, sockets: list[Path], within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        while pids := processes_to_end(sockets):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise ChildFailedError(f"processes {sorted(pids)} of the node do not end")
            time.sleep(0.1)


def node_binaries(built: dict[str, Path]) -> NodeBinaries:
    """The node's part of what `build.build_all` made."""
    from gemini_webhooks.controlplane import node_images

    return NodeBinaries(
        kubelet=built["kubelet"],
        kube_proxy=built["kube-proxy"],
        containerd=built["containerd"],
        ctr=built["ctr"],
        shim=built["containerd-shim-runc-v2"],
        runc=built["runc"],
        crictl=built["crictl"],
        coredns=built["coredns"],
        kube_router=built["kube-router"],
        cni_bin=built["bridge"].parent,
        pause_archive=built["pause.oci.tar"],
        sandbox_image=node_images.PAUSE_IMAGE,
    )
