"""`scripts/control-plane build|up|down|env`: build the binaries, run a control plane in
the foreground until Ctrl-C or `down`, stop it from another shell, print its environment."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gemini_webhooks.controlplane import build
from gemini_webhooks.controlplane.cluster import ControlPlane
from gemini_webhooks.sandbox.ports import LOOPBACK

if TYPE_CHECKING:
    from gemini_webhooks.controlplane.realnode import RealNode
from gemini_webhooks.sandbox.supervisor import ChildFailedError, install_stop_signals

DEFAULT_DIR = Path(os.environ.get("GWO_CONTROL_PLANE_DIR") or ".control-plane")


def _say(line: str) -> None:
    print(f"[control-plane] {line}", flush=True)


def env_lines(plane: ControlPlane) -> list[str]:
    return [
        "# Written by `scripts/control-plane up` for this run; `source` it in a shell.",
        f"export KUBECONFIG={shlex.quote(str(plane.layout.admin_kubeconfig))}",
        f'export PATH={shlex.quote(str(Path(sys.executable).parent))}:"$PATH"',
    ]


def _real_node(directory: Path, binaries: dict[str, Path], images: Path | None) -> RealNode:
    from gemini_webhooks.controlplane import node_images, realnode

    # Beside the control plane's directory, which is emptied on every start: the node's
    # must outlive a killed run, to say what to clean up.
    return realnode.RealNode(
        directory.resolve().parent / f"{directory.name}-node",
        realnode.node_binaries(binaries),
        node_images.our_images(images) if images else node_images.our_images_built(_say),
        progress=_say,
    )


def refusal(node_kind: str, euid: int) -> str | None:
    """Why `up --node node_kind` cannot run as `euid`, naming what to do instead."""
    if node_kind == "real" and euid != 0:
        return (
            "the node is a real Kubernetes node (containerd, the kubelet and runc in a network "
            "namespace, with mounts and cgroups of its own), which needs root: run `sudo "
            "scripts/control-plane up`, or `scripts/control-plane up --node none` for the "
            "control plane alone"
        )
    return None


async def _up(
    directory: Path,
    node_kind: str,
    images: Path | None = None,
    audit_policy: Path | None = None,
) -> int:
    # The node's binaries only for a node.
    binaries = (build.build_all if node_kind == "real" else build.build_control_plane)(_say)
    try:
        real_node = _real_node(directory, binaries, images) if node_kind == "real" else None
    except ChildFailedError as error:  # our images missing, and not buildable here
        _say(f"failed: {error}")
        return 1
    plane = ControlPlane(
        directory,
        binaries,
        progress=_say,
        address=real_node.network.host_ip if real_node else LOOPBACK,
        audit_policy=audit_policy,
    )
    stop = asyncio.Event()
    restore = install_stop_signals(stop)
    node_task = None
    try:
        if real_node is not None:
            await asyncio.to_thread(real_node.create_network)
        await plane.start()
        if real_node is not None:
            await real_node.start(plane)
            node_task = asyncio.create_task(real_node.watch(), name="real-node")
        (plane.layout.root / "env").write_text("\n".join(env_lines(plane)) + "\n")
        (plane.layout.root / "up.pid").write_text(f"{os.getpid()}\n")
        _say(f"admin kubeconfig: {plane.layout.admin_kubeconfig}")
        _say(f"in another shell: source {plane.layout.root / 'env'}; kubectl get nodes")
        _say("Ctrl-C (or `scripts/control-plane down`) stops everything")
        waiter = asyncio.create_task(stop.wait())
        watched = {waiter} | ({node_task} if node_task else set())
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if node_task in done and node_task is not None:
            node_task.result()  # the node failed: say why
        return 0
    except ChildFailedError as error:
        _say(f"failed: {error}")
        return 1
    finally:
        # Until everything is down, a second Ctrl-C or `down` (a terminal's Ctrl-C reaches
        # the whole process group) only sets `stop` again: the default action would kill this
        # process mid-teardown and leave mounts, links, cgroups and changed sysctls behind.
        if node_task is not None:
            node_task.cancel()
            await asyncio.gather(node_task, return_exceptions=True)
        try:
            if real_node is not None:
                await asyncio.shield(real_node.stop(keep_network=True))
        finally:
            await asyncio.shield(plane.stop())
            if real_node is not None:
                await asyncio.to_thread(real_node.stop_leftovers)
        with contextlib.suppress(FileNotFoundError):
            (plane.layout.root / "up.pid").unlink()
        restore()
        _say("stopped")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited `up` whose parent has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _down(directory: Path, within: float = 180.0) -> int:
    pid_file = directory / "up.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        _say(f"no control plane is running from {directory}")
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _running(pid):
            _say("stopped")
            return 0
        time.sleep(0.2)
    _say(f"pid {pid} did not stop within {within:.0f}s")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/control-plane", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    build_command = sub.add_parser(
        "build", help="build (or find cached) the control plane's, helm's and the node's binaries"
    )
    build_command.add_argument(
        "--control-plane-only",
        action="store_true",
        help="only etcd, kube-apiserver, kube-controller-manager, kube-scheduler and helm",
    )
    up = sub.add_parser("up", help="run a control plane and a node until Ctrl-C or `down`")
    up.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory")
    up.add_argument(
        "--node",
        choices=("real", "none"),
        default="real",
        help="real (as root): containerd, the kubelet, kube-proxy, CoreDNS and a "
        "NetworkPolicy controller in a network namespace, our images imported; none: the "
        "control plane alone",
    )
    up.add_argument("--no-node", action="store_true", help="the same as --node none")
    up.add_argument(
        "--images",
        type=Path,
        help="with --node real: the folder `scripts/image build --output DIR` wrote "
        "(default: the images of these sources in scripts/image's cache)",
    )
    up.add_argument(
        "--audit-policy",
        type=Path,
        help="a kube-apiserver audit policy file: the events it selects are written to "
        "DIR/audit.log, one JSON object a line (default: no audit log)",
    )
    down = sub.add_parser("down", help="stop the control plane `up` started")
    down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    sub.add_parser("paths", help="print where each built binary is")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            (build.build_control_plane if args.control_plane_only else build.build_all)(_say)
            return 0
        if args.command == "paths":
            binaries = build.binaries_if_built()
            if binaries is None:
                _say("not built yet: run `scripts/control-plane build`")
                return 1
            for name, path in sorted(binaries.items()):
                print(f"{name}\t{path}")
            return 0
        if args.command == "up":
            node = "none" if args.no_node else args.node
            refused = refusal(node, os.geteuid())
            if refused is not None:
                _say(refused)
                return 1
            policy = args.audit_policy
            if policy is not None and not policy.is_file():
                parser.error(f"--audit-policy: no file {policy}")
            return asyncio.run(
                _up(args.dir, node, args.images, policy.resolve() if policy else None)
            )
        return _down(args.dir)
    except build.BuildError as error:
        _say(str(error))
        return 1
