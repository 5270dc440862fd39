"""Kube sandbox at scale: 1,000 custom resources, 50 open watches.

Targets (issue 3): listing all of them and fanning one change out to every watch each stay
under 100 ms; the server's memory stays under 300 MiB. The sandbox runs as its own process
(`gemini-webhooks kube-sandbox`), so its RSS is its own; the clients run here.

    .venv/bin/python bench/kubesandbox/scale.py [--objects 1000] [--watches 50] [--rounds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.kubesandbox.conftest import GROUP, WIDGET_CRD

TARGET_MS = 100.0
TARGET_MIB = 300.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def watcher(
    session: aiohttp.ClientSession,
    url: str,
    rv: str,
    inbox: asyncio.Queue[tuple[str, float]],
    ready: asyncio.Event,
    counter: list[int],
    total: int,
) -> None:
    params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "600"}
    async with session.get(
        url, params=params, timeout=aiohttp.ClientTimeout(total=None)
    ) as response:
        counter[0] += 1
        if counter[0] == total:
            ready.set()
        async for line in response.content:
            if line.strip():
                event = json.loads(line)
                inbox.put_nowait((event["object"]["spec"]["tag"], time.perf_counter()))


async def run(base: str, objects: int, watches: int, rounds: int, pid: int) -> None:
    widgets = f"{base}/apis/{GROUP}/v1/namespaces/default/widgets"
    crd = json.loads(json.dumps(WIDGET_CRD))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "tag"
    ] = {"type": "string"}
    connector = aiohttp.TCPConnector(limit=watches + 20)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{base}/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
        ) as r:
            assert r.status == 201, await r.text()
        rss_empty = rss_mib(pid)
        started = time.perf_counter()
        for i in range(objects):
            body = {
                "apiVersion": f"{GROUP}/v1",
                "kind": "Widget",
                "metadata": {"name": f"w-{i:05d}", "labels": {"bench": "yes"}},
                "spec": {"size": 1 + i % 10, "tag": "init"},
            }
            async with session.post(widgets, json=body) as r:
                assert r.status == 201, await r.text()
        create_s = time.perf_counter() - started

        list_ms = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            async with session.get(widgets) as r:
                items = (await r.json())["items"]
            list_ms.append((time.perf_counter() - t0) * 1000)
            assert len(items) == objects
        table_ms = []
        accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
        for _ in range(rounds):
            t0 = time.perf_counter()
            async with session.get(widgets, headers=accept) as r:
                rows = (await r.json())["rows"]
            table_ms.append((time.perf_counter() - t0) * 1000)
            assert len(rows) == objects

        async with session.get(widgets, params={"limit": "1"}) as r:
            rv = (await r.json())["metadata"]["resourceVersion"]
        inboxes: list[asyncio.Queue[tuple[str, float]]] = [asyncio.Queue() for _ in range(watches)]
        ready = asyncio.Event()
        counter = [0]
        tasks = [
            asyncio.create_task(watcher(session, widgets, rv, inbox, ready, counter, watches))
            for inbox in inboxes
        ]
        await asyncio.wait_for(ready.wait(), 30)
        await asyncio.sleep(0.2)
        fanout_ms = []
        for n in range(rounds):
            tag = f"round-{n}"
            t0 = time.perf_counter()
            async with session.patch(
                f"{widgets}/w-{n % objects:05d}",
                data=json.dumps({"spec": {"tag": tag}}),
                headers={"Content-Type": "application/merge-patch+json"},
            ) as r:
                assert r.status == 200
            arrivals = []
            for inbox in inboxes:
                while True:
                    got, at = await asyncio.wait_for(inbox.get(), 10)
                    if got == tag:
                        arrivals.append(at)
                        break
            fanout_ms.append((max(arrivals) - t0) * 1000)
        rss_full = rss_mib(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def line(name: str, values: list[float]) -> None:
        p50, p95, worst = pct(values, 0.5), pct(values, 0.95), max(values)
        print(
            f"{name:<34} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {worst:7.1f} ms"
            f"  p95/target {p95 / TARGET_MS:5.2f}"
        )

    print(f"objects {objects}, watches {watches}, rounds {rounds}")
    print(f"create {objects} objects: {create_s:.2f} s ({objects / create_s:.0f}/s)")
    line(f"list all {objects} (JSON)", list_ms)
    line(f"list all {objects} (Table)", table_ms)
    line(f"fan-out 1 change to {watches} watches", fanout_ms)
    print(
        f"server RSS: {rss_empty:.0f} MiB empty, {rss_full:.0f} MiB loaded"
        f"  loaded/target {rss_full / TARGET_MIB:5.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--watches", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gemini_webhooks",
                "kube-sandbox",
                "--port",
                "0",
                "--kubeconfig",
                f"{tmp}/kubeconfig",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            base = process.stdout.readline().split()[-1]
            asyncio.run(run(base, args.objects, args.watches, args.rounds, process.pid))
        finally:
            process.terminate()
            process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
