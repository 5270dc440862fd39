"""`gemini-webhooks sandbox [--demo]`: the whole system on loopback, in one command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from gemini_webhooks.sandbox.guide import next_steps
from gemini_webhooks.sandbox.supervisor import ChildFailedError, install_stop_signals
from gemini_webhooks.sandbox.system import DEFAULT_STATE_DIR, Sandbox, SandboxOptions

T = TypeVar("T")


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return number


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run the Gemini API emulator, a Kubernetes API sandbox with the GeminiWebhook CRD, "
        "the operator, a receiver for every GeminiWebhook and a sample consumer, all on "
        "127.0.0.1. Ctrl-C stops everything."
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the guided tour (apply, fire every event, rotate under traffic, delete), "
        "print a summary table and exit: 0 when every step held",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the kubeconfig, logs and ready-to-apply examples go; emptied at start "
        "(default: ./.sandbox)",
    )
    parser.add_argument(
        "--namespace", default="default", help="namespace of the examples (default: default)"
    )
    parser.add_argument(
        "--kube",
        choices=("sandbox", "real"),
        default="sandbox",
        help="the Kubernetes API: `sandbox`, the in-memory API sandbox (instant; default), or "
        "`real`, a real control plane and a real node built from the official Go modules "
        "(etcd, kube-apiserver, kube-controller-manager, kube-scheduler; containerd, runc, "
        "the kubelet, kube-proxy, CoreDNS, in a network namespace), the receivers containers "
        "of our image (root; the first run builds the binaries, about 15 minutes on 2 cores, "
        "and the images with `scripts/image build` if missing)",
    )
    parser.add_argument(
        "--batch-seconds",
        type=_positive,
        default=5.0,
        help="how long an emulated batch runs before it finishes by itself (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    options = SandboxOptions(
        state_dir=args.state_dir,
        namespace=args.namespace,
        batch_seconds=args.batch_seconds,
        echo_consumer=True,
        kube=args.kube,
    )
    try:
        return asyncio.run(_main(options, demo=args.demo))
    except KeyboardInterrupt:  # a Ctrl-C before the handlers were installed
        return 130


async def _main(options: SandboxOptions, *, demo: bool) -> int:
    stop = asyncio.Event()
    restore = install_stop_signals(stop)
    sandbox = Sandbox(options)
    try:
        start = await _unless_stopped(sandbox.start(), stop)
        if start is None:
            print("[sandbox] interrupted while starting; stopped everything", flush=True)
            return 130
        try:
            start.result()
        except ChildFailedError as error:
            print(f"[sandbox] could not start: {error}", file=sys.stderr, flush=True)
            return 1
        if demo:
            from gemini_webhooks.sandbox.demo import run_demo

            tour = await _unless_stopped(run_demo(sandbox), stop)
            if tour is None:
                print("[sandbox] demo interrupted; stopping everything", flush=True)
                return 130
            return 0 if tour.result() else 1
        print(next_steps(sandbox), flush=True)
        code = await _wait_until_stopped_or_crashed(sandbox, stop)
        print("\n[sandbox] stopping everything", flush=True)
        return code
    finally:
        await asyncio.shield(sandbox.stop())
        restore()
        print("[sandbox] stopped; no processes left behind", flush=True)


async def _unless_stopped(
    work: Coroutine[Any, Any, T], stop: asyncio.Event
) -> asyncio.Task[T] | None:
    """Run `work` until it ends or `stop` is set: its finished task, or None when the stop
    came first (`work` is then cancelled and awaited)."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return None
    return task


async def _wait_until_stopped_or_crashed(sandbox: Sandbox, stop: asyncio.Event) -> int:
    """Serve until Ctrl-C (0); say so when a core child dies (pods are the kubelet's
    concern); stop when the real node fails (1: a node process exiting too often,
    `RealNode.watch`)."""
    reported: set[int] = set()
    while not stop.is_set():
        failure = sandbox.real_node.failed() if sandbox.real_node is not None else None
        if failure is not None:
            print(f"[sandbox] the real node failed: {failure}", file=sys.stderr, flush=True)
            return 1
        for child in sandbox.supervisor.exited():
            if child.pid not in reported and not child.name.startswith("pod-"):
                reported.add(child.pid)
                print(
                    f"[sandbox] {child.name} exited with code {child.process.returncode}; "
                    f"the end of its log:\n{child.log_tail()}",
                    flush=True,
                )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
    return 0
