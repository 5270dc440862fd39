"""`gemini-webhooks kube-sandbox`: serve the in-memory Kubernetes API until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from gemini_webhooks.kubesandbox.runner import KubeSandboxServer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help="port to bind (default: 0, any free port)"
    )
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=Path("kube-sandbox.kubeconfig"),
        help="where to write a kubeconfig for the sandbox (default: ./kube-sandbox.kubeconfig)",
    )


async def _serve(args: argparse.Namespace) -> None:
    server = KubeSandboxServer(host=args.host, port=args.port, kubeconfig=args.kubeconfig)
    await server.start()
    print(f"kube sandbox serving on {server.base_url}", flush=True)
    print(f"kubeconfig written to {args.kubeconfig}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        print(f"error: --port must be 0-65535, not {args.port}", file=sys.stderr)
        return 2
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(args))
    except OSError as e:
        print(f"error: cannot serve on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    return 0
