"""Slot-exhaustion benchmark: genuine deliveries while an attacker holds idle connections.

Our receiver (memory mode, `limits.max_connections` 1024, forwarding to the benchmark's
sink) runs on core 0; this program runs on core 1. The attacker opens `--held` (2,000)
connections that never send a byte — more than the receiver has slots — and re-opens
each one the receiver closes, at up to `--refill` (500) per second. Meanwhile genuine,
freshly signed deliveries arrive at `--rate` (20) per second, each on a new connection
(`connection: close`), for `--duration` (20) seconds. Prints how many of them were
accepted (2xx; target >= 99%) and their latency, connect to answer (p50, p99), with the
ratio to the target, and what the receiver counted (evictions, 503s).

    .venv/bin/python bench/receiver/slot_exhaustion.py [--held 2000] [--refill 500]
        [--rate 20] [--duration 20]

Everything is on loopback, bounded in count and time. The process's soft limit on open
files is raised to its hard limit (the attacker holds `--held` sockets); it needs
`--held` + 100 at least. Needs `taskset`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from standardwebhooks.webhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import HERE, VENV_BIN, free_port, stop, wait_port

MAX_CONNECTIONS = 1024
ACCEPTED_TARGET = 0.99
ANSWER_TIMEOUT_SECONDS = 5.0


class _Held(asyncio.Protocol):
    """An attacker's connection: sends nothing, notes when the receiver closes it."""

    def __init__(self, attacker: Attacker) -> None:
        self.attacker = attacker

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.attacker.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.attacker.transports.discard(self.transport)
        self.attacker.open -= 1
        self.attacker.closed_by_receiver += 1


class Attacker:
    """Keeps `held` connections open, re-opening closed ones at up to `refill` a second."""

    def __init__(self, port: int, held: int, refill: float) -> None:
        self.port = port
        self.held = held
        self.refill = refill
        self.open = 0
        self.connecting = 0
        self.opened = 0
        self.closed_by_receiver = 0
        self.failed = 0
        self.transports: set[asyncio.BaseTransport] = set()

    async def _open_one(self) -> None:
        loop = asyncio.get_running_loop()
        self.connecting += 1
        try:
            await loop.create_connection(lambda: _Held(self), "127.0.0.1", self.port)
            self.open += 1
            self.opened += 1
        except OSError:
            self.failed += 1
        finally:
            self.connecting -= 1

    async def fill(self) -> None:
        """Open all of them at once (the first `MAX_CONNECTIONS` fill the receiver's slots)."""
        batch = 200
        for start in range(0, self.held, batch):
            await asyncio.gather(*(self._open_one() for _ in range(min(batch, self.held - start))))

    async def keep_refilling(self, stop_at: float) -> None:
        budget = 0.0
        tasks: set[asyncio.Task[None]] = set()
        last = time.monotonic()
        while last < stop_at:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            budget = min(budget + self.refill * (now - last), self.refill)  # a second's worth
            last = now
            missing = self.held - self.open - self.connecting
            for _ in range(min(int(budget), missing)):
                budget -= 1
                task = asyncio.create_task(self._open_one())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)

    def close(self) -> None:
        for transport in list(self.transports):
            transport.close()


def _delivery(webhook: Webhook, port: int, number: int) -> bytes:
    msg_id = f"msg_slots_{number:06d}_{secrets.token_hex(4)}"
    body = json.dumps(
        {
            "type": "batch.succeeded",
            "version": "v1",
            "timestamp": "2026-11-25T12:00:00Z",
            "data": {"id": f"batches/s{number:06d}", "output_file_uri": "gs://b/o.jsonl"},
        },
        separators=(",", ":"),
    )
    now = int(time.time())
    signature = webhook.sign(msg_id, datetime.fromtimestamp(now, tz=UTC), body)
    return (
        f"POST / HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\nwebhook-id: {msg_id}\r\n"
        f"webhook-timestamp: {now}\r\nwebhook-signature: {signature}\r\n\r\n{body}"
    ).encode()


async def _deliver(port: int, request: bytes) -> tuple[int, float, float]:
    """Status (0: no answer), seconds from connecting to the whole answer, and of them
    seconds to connect."""
    started = time.perf_counter()
    connected = started
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT_SECONDS):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            connected = time.perf_counter()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
            finally:
                writer.close()
        status = int(head.split(b" ", 2)[1])
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError):
        status = 0
    return status, time.perf_counter() - started, connected - started


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _counters(internal_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{internal_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    wanted = {
        'gemini_receiver_connections_evicted_total{state="head"}': "evicted head",
        'gemini_receiver_connections_evicted_total{state="idle"}': "evicted idle",
        'gemini_receiver_connections_evicted_total{state="lingering"}': "evicted lingering",
        'gemini_receiver_deliveries_total{outcome="rejected",reason="too_many_connections"}': (
            "503 too_many_connections"
        ),
        'gemini_receiver_deliveries_total{outcome="accepted",reason="ok"}': "accepted",
    }
    found = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        if metric in wanted:
            found[wanted[metric]] = float(value)
    return found


async def attack_and_deliver(
    receiver_pid: int,
    port: int,
    internal_port: int,
    secret: str,
    held: int,
    refill: float,
    rate: float,
    duration: float,
) -> int:
    attacker = Attacker(port, held, refill)
    began = time.monotonic()
    await attacker.fill()
    print(
        f"attacker: {attacker.opened} connections opened in {time.monotonic() - began:.1f} s"
        f" ({attacker.open} still open; receiver slots: {MAX_CONNECTIONS})",
        flush=True,
    )
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(_counters, internal_port)
    cpu_before = _cpu_seconds(receiver_pid)
    opened_before, closed_before = attacker.opened, attacker.closed_by_receiver
    started = time.monotonic()
    refilling = asyncio.create_task(attacker.keep_refilling(started + duration))
    webhook = Webhook(secret)
    deliveries: list[asyncio.Task[tuple[int, float, float]]] = []
    count = int(duration * rate)
    for number in range(count):
        await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
        deliveries.append(asyncio.create_task(_deliver(port, _delivery(webhook, port, number))))
    results = await asyncio.gather(*deliveries)
    await refilling
    attacker.close()
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(receiver_pid) - cpu_before
    after = await asyncio.to_thread(_counters, internal_port)

    accepted = [seconds for status, seconds, _ in results if 200 <= status < 300]
    connecting = [seconds for status, _, seconds in results if 200 <= status < 300]
    statuses: dict[int, int] = {}
    for status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    share = len(accepted) / len(results)
    reopened = attacker.opened - opened_before
    print(
        f"attacker: {held} held, {reopened} re-opened in {elapsed:.1f} s"
        f" ({reopened / elapsed:.0f}/s), {attacker.closed_by_receiver - closed_before} closed"
        f" by the receiver (evicted, or idle past its read timeout), {attacker.failed} failed"
        " to connect"
    )
    print(
        "receiver: "
        + ", ".join(f"{name} {after[name] - before[name]:.0f}" for name in after)
        + f"; {cpu:.2f} CPU seconds ({100 * cpu / elapsed:.0f}% of a core) during the deliveries"
    )
    print(
        f"genuine deliveries: {len(results)} sent at {rate:g}/s, {len(accepted)} accepted"
        f" ({100 * share:.1f}%; target >= {100 * ACCEPTED_TARGET:.0f}%: ratio"
        f" {share / ACCEPTED_TARGET:.3f}, {'met' if share >= ACCEPTED_TARGET else 'NOT met'});"
        f" statuses {dict(sorted(statuses.items()))} (0: no answer within"
        f" {ANSWER_TIMEOUT_SECONDS:g} s)"
    )
    print(
        f"accepted latency, connect to answer: p50 {1000 * _percentile(accepted, 0.5):.2f} ms,"
        f" p99 {1000 * _percentile(accepted, 0.99):.2f} ms,"
        f" max {1000 * max(accepted, default=0.0):.2f} ms; of which connecting: p50"
        f" {1000 * _percentile(connecting, 0.5):.2f} ms, p99"
        f" {1000 * _percentile(connecting, 0.99):.2f} ms (about 1 s: a SYN retransmitted)"
    )
    return 0


def raise_open_files_limit(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = hard if hard == resource.RLIM_INFINITY else max(soft, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--held", type=int, default=2000, help="idle connections held")
    parser.add_argument("--refill", type=float, default=500, help="re-opens per second, at most")
    parser.add_argument("--rate", type=float, default=20, help="genuine deliveries per second")
    parser.add_argument("--duration", type=float, default=20, help="seconds of deliveries")
    args = parser.parse_args()
    limit = raise_open_files_limit(args.held + 100)
    if limit < args.held + 100:
        print(f"open-files limit {limit} < {args.held + 100}", file=sys.stderr)
        return 2
    os.sched_setaffinity(0, {1})  # the receiver has core 0
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with tempfile.TemporaryDirectory(prefix="slot-bench-") as tmp:
        work = Path(tmp)
        secrets_file = work / "signing-secrets.json"
        secrets_file.write_text(
            json.dumps(
                {
                    "version": 1,
                    "webhookId": "wh_bench",
                    "secrets": [
                        {"secret": secret, "createdAt": "2026-11-25T00:00:00Z", "expireTime": None}
                    ],
                }
            )
        )
        sink_port, port, internal_port = free_port(), free_port(), free_port()
        config = {
            "listen": {"host": "127.0.0.1", "port": port},
            "internal": {"host": "127.0.0.1", "port": internal_port},
            "limits": {"max_connections": MAX_CONNECTIONS},
            "static_webhooks": [
                {"name": "bench", "secrets": {"file": {"path": str(secrets_file)}}}
            ],
            "default_route": {"targets": [{"url": f"http://127.0.0.1:{sink_port}/events"}]},
            "logging": {"level": "WARNING"},
        }
        (work / "receiver.json").write_text(json.dumps(config))
        sink = subprocess.Popen(
            ["taskset", "-c", "1", sys.executable, str(HERE / "sink.py"), str(sink_port)]
        )
        receiver = subprocess.Popen(
            [
                "taskset",
                "-c",
                "0",
                str(VENV_BIN / "gemini-webhooks"),
                "receiver",
                "--config",
                str(work / "receiver.json"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(sink_port, sink)
            wait_port(port, receiver)
            print(
                f"receiver max_connections {MAX_CONNECTIONS}, open-files limit {limit};"
                f" load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
            return asyncio.run(
                attack_and_deliver(
                    receiver.pid,
                    port,
                    internal_port,
                    secret,
                    args.held,
                    args.refill,
                    args.rate,
                    args.duration,
                )
            )
        finally:
            stop(receiver)
            stop(sink)


if __name__ == "__main__":
    sys.exit(main())
