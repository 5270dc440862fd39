"""Emulator delivery throughput and API latency, against named baselines.

1. Static deliveries/s: events emitted in-process to one subscribed webhook, each signed,
   logged and POSTed to a local aiohttp endpoint, until all are delivered.
   Baseline: the same number of bare aiohttp POSTs of the same body to the same endpoint,
   with the same connection policy (fresh connection each) and concurrency, unsigned.
2. WebhookService `get` through the real SDK (sync) vs a bare httpx GET of the same URL.

Run: .venv/bin/python bench/emulator/delivery_throughput.py [--events 2000]
Prints figures and ratios; it is a program, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp
import httpx
from aiohttp import web
from google import genai
from google.genai import types

from gemini_webhooks.emulator import Emulator, EmulatorConfig, ThreadedEmulator


async def start_endpoint() -> tuple[web.AppRunner, str, list[int]]:
    count = [0]

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        count[0] += 1
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/hook", count


async def bench_deliveries(events: int, concurrency: int) -> tuple[float, float]:
    runner, url, count = await start_endpoint()
    body = json.dumps({"type": "batch.succeeded", "version": "v1", "data": {"id": "x"}}).encode()

    # Baseline: bare aiohttp POSTs, same concurrency bound, fresh connection each.
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> None:
            async with gate, session.post(url, data=body) as response:
                await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(post() for _ in range(events)))
        baseline = events / (time.perf_counter() - started)

    config = EmulatorConfig(per_target_concurrency=concurrency)
    async with Emulator(config) as emulator:
        from gemini_webhooks.emulator import decisions

        emulator.webhooks.create(
            decisions.NewWebhook("bench", url, ["batch.succeeded"]), emulator.clock.now()
        )
        count[0] = 0
        started = time.perf_counter()
        for _ in range(events):
            emulator.emit("batch.succeeded", {"id": "batches/x", "output_file_uri": "f"})
        await emulator.engine.idle()
        emulator_rate = events / (time.perf_counter() - started)
        delivered = len(emulator.engine.deliveries(state="delivered"))
        assert delivered == events, f"only {delivered} of {events} delivered"
    await runner.cleanup()
    return emulator_rate, baseline


def bench_api(requests: int) -> tuple[float, float]:
    with ThreadedEmulator(EmulatorConfig(api_keys=("k",))) as running:
        client = genai.Client(
            api_key="k", http_options=types.HttpOptions(base_url=running.base_url)
        )
        hook = client.webhooks.create(uri="https://x.example/h", subscribed_events=["batch.failed"])
        sdk: list[float] = []
        for _ in range(requests):
            t = time.perf_counter()
            client.webhooks.get(id=hook.id)
            sdk.append(time.perf_counter() - t)
        raw: list[float] = []
        with httpx.Client(headers={"x-goog-api-key": "k"}) as http:
            for _ in range(requests):
                t = time.perf_counter()
                http.get(f"{running.base_url}/v1/webhooks/{hook.id}").raise_for_status()
                raw.append(time.perf_counter() - t)
        client.close()
    return statistics.median(sdk) * 1000, statistics.median(raw) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rate, baseline = asyncio.run(bench_deliveries(args.events, args.concurrency))
    print(f"static deliveries/s (signed, logged)   : {rate:8.0f}")
    print(f"baseline bare aiohttp POSTs/s           : {baseline:8.0f}")
    print(f"ratio emulator / baseline               : {rate / baseline:8.2f}")
    sdk_ms, raw_ms = bench_api(args.requests)
    print(f"webhooks.get via SDK, median ms         : {sdk_ms:8.2f}")
    print(f"baseline bare httpx GET, median ms      : {raw_ms:8.2f}")
    print(f"ratio SDK / baseline                    : {sdk_ms / raw_ms:8.2f}")


if __name__ == "__main__":
    main()
