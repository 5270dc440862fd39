"""Receiver memory: resident set size idle, and at its peak under the anchor load.

Starts our receiver as `run.py`'s memory mode does (inline delivery, memory dedup,
forwarding every event to a sink; receiver on core 0, sink and `wrk` on core 1), reads its
VmRSS once it listens and has settled, then drives `run.py`'s anchor load (`wrk -t1 -c32`,
valid unique signed deliveries, a warm-up then `--duration` seconds) and reads its VmHWM.
Prints both against the targets (idle <= 45 MiB, under load <= 60 MiB) and, when given,
the baseline figures to compare with (`--baseline-idle`, `--baseline-load`).

The signing secrets are a file, or with `--secrets kubernetes` a Secret the receiver lists
and watches through the API of a Kubernetes API sandbox that this program serves (in its
own process: the receiver's memory is the receiver's alone).

    .venv/bin/python bench/receiver/memory.py [--duration 10] [--runs 3] [--secrets kubernetes]

Needs `wrk` and `taskset`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from run import (
    machine_problem,
    measure,
    new_secret,
    running_ours,
    signing_secrets_json,
    wait_port,
)

IDLE_TARGET_MIB = 45.0
LOAD_TARGET_MIB = 60.0
SETTLE_SECONDS = 2.0


def resident_mib(pid: int, field: str) -> float:
    """A `/proc/PID/status` memory field (VmRSS now, VmHWM the peak), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"{field}:\s+(\d+) kB", status)
    if match is None:
        raise RuntimeError(f"no {field} for process {pid}")
    return int(match.group(1)) / 1024


@contextlib.contextmanager
def api_with_the_secret(secret: str, work: Path) -> Iterator[Path]:
    """A Kubernetes API sandbox holding the Secret `default/bench-signing-secret`: yields
    its kubeconfig."""
    from gemini_webhooks.kubesandbox import ThreadedKubeSandbox

    kubeconfig = work / "kubeconfig"
    runner = ThreadedKubeSandbox(kubeconfig=kubeconfig)
    runner.start()
    try:
        assert runner.server is not None
        document = signing_secrets_json(secret).encode()
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "bench-signing-secret", "namespace": "default"},
            "data": {"signing-secrets.json": base64.b64encode(document).decode()},
        }
        request = urllib.request.Request(
            f"{runner.server.base_url}/api/v1/namespaces/default/secrets",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30):
            pass
        yield kubeconfig
    finally:
        runner.stop()


def one_run(
    secret: str, duration: int, work: Path, kubeconfig: Path | None
) -> tuple[float, float, float]:
    """Idle RSS, peak RSS under the load, and the load's throughput (req/s)."""
    with running_ours("memory idle-and-load", secret, work, None, kubeconfig=kubeconfig) as (
        process,
        port,
    ):
        wait_port(port, process)
        time.sleep(SETTLE_SECONDS)  # start-up done: what a receiver Pod holds while it waits
        idle = resident_mib(process.pid, "VmRSS")
        result = measure("memory", process, port, "/", secret, duration, work)
        if result.non_2xx or result.errors:
            raise RuntimeError(f"{result.non_2xx} non-2xx answers, {result.errors} errors")
        return idle, resident_mib(process.pid, "VmHWM"), result.requests_per_second


def verdict(value: float, target: float) -> str:
    return f"target <= {target:.0f} MiB: {'met' if value <= target else 'NOT met'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    parser.add_argument("--runs", type=int, default=3, help="runs; the median is reported")
    parser.add_argument("--baseline-idle", type=float, help="idle RSS (MiB) to compare with")
    parser.add_argument("--baseline-load", type=float, help="peak RSS (MiB) to compare with")
    parser.add_argument(
        "--secrets",
        choices=("file", "kubernetes"),
        default="file",
        help="where the receiver's signing secrets come from",
    )
    args = parser.parse_args()
    if problem := machine_problem():
        print(problem, file=sys.stderr)
        return 2
    secret = new_secret()
    runs: list[tuple[float, float, float]] = []
    for number in range(1, args.runs + 1):
        print(f"run {number}/{args.runs} ...", file=sys.stderr, flush=True)
        with contextlib.ExitStack() as stack:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="receiver-memory-")))
            kubeconfig = None
            if args.secrets == "kubernetes":
                kubeconfig = stack.enter_context(api_with_the_secret(secret, work))
            runs.append(one_run(secret, args.duration, work, kubeconfig))
    idle = statistics.median(r[0] for r in runs)
    load = statistics.median(r[1] for r in runs)
    rps = statistics.median(r[2] for r in runs)
    print(f"\n{'run':>4} {'idle RSS MiB':>13} {'peak RSS MiB under load':>24} {'req/s':>8}")
    for number, (i, p, r) in enumerate(runs, 1):
        print(f"{number:>4} {i:13.1f} {p:24.1f} {r:8.0f}")
    baseline_idle = f" (baseline {args.baseline_idle:.1f})" if args.baseline_idle else ""
    baseline_load = f" (baseline {args.baseline_load:.1f})" if args.baseline_load else ""
    print(f"\nsigning secrets from: {args.secrets}")
    print(f"idle RSS: {idle:.1f} MiB{baseline_idle}, {verdict(idle, IDLE_TARGET_MIB)}")
    print(
        f"peak RSS under the anchor load ({rps:.0f} req/s): {load:.1f} MiB{baseline_load}, "
        f"{verdict(load, LOAD_TARGET_MIB)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
