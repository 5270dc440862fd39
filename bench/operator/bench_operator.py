"""Operator benchmark: 1,000 GeminiWebhooks to Ready, steady-state API cost, memory.

    .venv/bin/python bench/operator/bench_operator.py [--resources 1000] [--drift 20]

Runs the kube sandbox and the emulator in this process (threads), a counting proxy in
front of the emulator (every WebhookService call the operator makes passes through it),
and the operator as a subprocess (`gemini-webhooks operator`), exactly as deployed.
Prints figures and ratios against the targets of issue 5:
- all resources Ready within 60 s;
- at steady state at most 1 WebhookService call per resource per drift interval;
- operator resident memory under 200 MiB.
The machine may be shared; the lead re-runs this on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gemini_webhooks.contracts import crd  # noqa: E402
from gemini_webhooks.emulator import EmulatorConfig, ThreadedEmulator  # noqa: E402
from gemini_webhooks.kubesandbox import ThreadedKubeSandbox  # noqa: E402
from tests.operator.api_proxy import FaultProxy  # noqa: E402

API_KEY = "bench-api-key"
TARGET_READY_SECONDS = 60.0
TARGET_CALLS_PER_RESOURCE_PER_INTERVAL = 1.0
TARGET_RSS_MIB = 200.0
KUBECTL = str(ROOT / ".venv" / "bin" / "kubectl")
OPERATOR = str(ROOT / ".venv" / "bin" / "gemini-webhooks")


def rss_mib(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    to_mib = lambda v: int(v.split()[0]) / 1024  # noqa: E731 - kB
    return to_mib(fields["VmRSS"]), to_mib(fields["VmHWM"])


async def create_all(base: str, count: int, url: str, api_base: str) -> None:
    path = f"{base}/apis/{crd.API_GROUP}/{crd.VERSION}/namespaces/default/{crd.PLURAL}"
    semaphore = asyncio.Semaphore(16)
    async with aiohttp.ClientSession() as session:

        async def one(index: int) -> None:
            body = {
                "apiVersion": crd.API_VERSION,
                "kind": crd.KIND,
                "metadata": {"name": f"bench-{index:04d}"},
                "spec": {
                    "url": f"{url}/{index}",
                    "events": ["batch.succeeded"],
                    "apiKeySecretRef": {"name": "gemini-api-key"},
                    "apiBaseUrl": api_base,
                    "rotation": {"interval": "720h"},
                },
            }
            async with semaphore, session.post(path, json=body) as response:
                if response.status >= 300:
                    raise RuntimeError(f"create {index}: {response.status} {await response.text()}")

        await asyncio.gather(*(one(i) for i in range(count)))


async def count_ready(base: str) -> tuple[int, int]:
    path = f"{base}/apis/{crd.API_GROUP}/{crd.VERSION}/namespaces/default/{crd.PLURAL}"
    async with aiohttp.ClientSession() as session, session.get(path) as response:
        items: list[dict[str, Any]] = (await response.json())["items"]
    ready = sum(
        1
        for item in items
        if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (item.get("status") or {}).get("conditions") or []
        )
    )
    return ready, len(items)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--drift", type=float, default=20.0, help="drift interval, seconds")
    parser.add_argument("--windows", type=int, default=2, help="steady-state intervals")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    kubeconfig = workdir / "kubeconfig"
    sandbox = ThreadedKubeSandbox(kubeconfig=kubeconfig)
    sandbox.start()
    assert sandbox.server is not None
    kube_base = sandbox.server.base_url
    emulator = ThreadedEmulator(EmulatorConfig(api_keys=(API_KEY,))).start()
    proxy = FaultProxy(emulator.base_url)
    emulator.call(proxy.start())
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    subprocess.run(
        [KUBECTL, "apply", "-f", str(ROOT / "crds" / f"{crd.CRD_NAME}.yaml")],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            KUBECTL,
            "create",
            "secret",
            "generic",
            "gemini-api-key",
            f"--from-literal=api-key={API_KEY}",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    log = (workdir / "operator.log").open("w")
    operator = subprocess.Popen(
        [
            OPERATOR,
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--drift-interval",
            str(args.drift),
            "--api-rate",
            "1000",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        time.sleep(2.0)
        started = time.monotonic()
        asyncio.run(create_all(kube_base, args.resources, "https://hooks.example.com", proxy.url))
        created = time.monotonic() - started
        ready = total = 0
        while time.monotonic() - started < 300:
            ready, total = asyncio.run(count_ready(kube_base))
            if ready >= args.resources:
                break
            time.sleep(0.5)
        to_ready = time.monotonic() - started
        rss_after_create, _ = rss_mib(operator.pid)

        # Steady state: skip one interval (the first drift checks are spread over it), then
        # count every WebhookService call over whole intervals.
        time.sleep(args.drift * 1.2)
        before = len(proxy.calls())
        time.sleep(args.drift * args.windows)
        steady_calls = len(proxy.calls()) - before
        per_resource = steady_calls / args.resources / args.windows
        rss, peak = rss_mib(operator.pid)
        methods: dict[str, int] = {}
        for call in proxy.calls():
            methods[call.method] = methods.get(call.method, 0) + 1

        print(f"resources:                      {args.resources}")
        print(f"created (API writes) in:        {created:.1f} s")
        print(
            f"Ready:                          {ready}/{total} after {to_ready:.1f} s "
            f"(target {TARGET_READY_SECONDS:.0f} s; ratio {to_ready / TARGET_READY_SECONDS:.2f})"
        )
        print(f"WebhookService calls, total:    {len(proxy.calls())} by method {methods}")
        print(
            f"steady state:                   {steady_calls} calls in {args.windows} x "
            f"{args.drift:.0f} s = {per_resource:.4f} per resource per interval "
            f"(target <= {TARGET_CALLS_PER_RESOURCE_PER_INTERVAL}; ratio "
            f"{per_resource / TARGET_CALLS_PER_RESOURCE_PER_INTERVAL:.4f})"
        )
        print(
            f"operator RSS:                   {rss:.0f} MiB now, {peak:.0f} MiB peak, "
            f"{rss_after_create:.0f} MiB when all Ready (target < {TARGET_RSS_MIB:.0f} MiB; "
            f"ratio {peak / TARGET_RSS_MIB:.2f})"
        )
        ok = (
            ready >= args.resources
            and to_ready <= TARGET_READY_SECONDS
            and per_resource <= TARGET_CALLS_PER_RESOURCE_PER_INTERVAL
            and peak < TARGET_RSS_MIB
        )
        print("verdict:                        " + ("all targets met" if ok else "TARGET MISSED"))
        return 0 if ok else 1
    finally:
        operator.terminate()
        try:
            operator.wait(timeout=10)
        except subprocess.TimeoutExpired:
            operator.kill()
        log.close()
        emulator.call(proxy.stop())
        emulator.stop()
        sandbox.stop()


if __name__ == "__main__":
    sys.exit(main())
