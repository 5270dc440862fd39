"""One delivery's trace, end to end, read back from a real trace backend: the receiver
process (tracing on through the standard `OTEL_*` environment) verifies a signed delivery
and forwards it to the sample consumer's process (`python -m gemini_webhooks.sandbox.consumer`,
tracing on through the same environment), which continues the trace from the `traceparent`
it gets; the OpenTelemetry Collector (built here from its Go modules) stores what both
export."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gemini_webhooks.sandbox.consumer import RECEIVED_PATH, SERVICE_NAME, SPAN_NAME
from tests.receiver.conftest import (
    base_config,
    envelope,
    listening,
    new_secret,
    signed_headers,
    write_secrets,
)
from tests.tracing import collector as otelcol

# The Collector is built in the background during scripts/test's sandbox phase.
pytestmark = [pytest.mark.real_component, pytest.mark.late_build]

# OTLP JSON's span kinds
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


@pytest.fixture
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[otelcol.Collector]:
    with otelcol.running(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


def _traced_env(collector: otelcol.Collector, service: str | None) -> dict[str, str]:
    """This process's environment without its OTEL_*, exporting to `collector` (as
    `service`, None: the program's own name), a batch every 100 ms."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    if service is not None:
        env["OTEL_SERVICE_NAME"] = service
    return env


class ConsumerProcess:
    """The sample consumer's own process, tracing to the collector."""

    def __init__(self, tmp_path: Path, collector: otelcol.Collector) -> None:
        self.log = tmp_path / "consumer.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gemini_webhooks.sandbox.consumer", "--port", "0"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=_traced_env(collector, None),
            )
        self.url = ""

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while not self.url:
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "consumer did not start: " + self.log.read_text()
            for line in self.log.read_text().splitlines():
                if line.startswith("sample consumer listening on "):
                    self.url = line.rpartition(" ")[2].rstrip("/")
            time.sleep(0.05)

    def traceparents(self) -> list[str | None]:
        """The `traceparent` of each delivery it got, oldest first."""
        with urllib.request.urlopen(self.url + RECEIVED_PATH, timeout=10) as response:
            return [a["headers"].get("traceparent") for a in json.load(response)]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)
        assert self.process.returncode == 0, self.log.read_text()


@pytest.fixture
def consumer(tmp_path: Path, collector: otelcol.Collector) -> Iterator[ConsumerProcess]:
    process = ConsumerProcess(tmp_path, collector)
    try:
        process.wait_listening()
        yield process
    finally:
        if process.process.poll() is None:
            process.stop()


class TracedReceiver:
    """The real receiver process, tracing to the collector through the OTEL_* environment."""

    def __init__(self, tmp_path: Path, collector: otelcol.Collector) -> None:
        self.secret = new_secret()
        self.secrets_path = tmp_path / "signing-secrets.json"
        write_secrets(self.secrets_path, self.secret)
        self.tmp_path = tmp_path
        self.env = _traced_env(collector, "receiver-under-test")

    async def run(
        self,
        config: dict[str, Any],
        deliveries: list[dict[str, str]],
        body: bytes,
        until: Callable[[], bool] = lambda: True,
    ) -> list[tuple[int, str]]:
        """Start it, post each delivery (headers) of `body`, wait `until` holds (bounded),
        stop it (which exports its last spans); each answer's status and `status` or
        `error`."""
        path = self.tmp_path / "receiver.json"
        path.write_text(json.dumps({**config, "logging": {"level": "INFO"}}))
        log = self.tmp_path / "receiver.log"
        answers = []
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "gemini_webhooks", "receiver", "--config", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=self.env,
            )
        try:
            record = await listening(process, log)
            assert record["tracing"] is True
            port = int(record["port"])
            async with aiohttp.ClientSession() as session:
                for headers in deliveries:
                    url = f"http://127.0.0.1:{port}/"
                    async with session.post(url, data=body, headers=headers) as response:
                        answer = await response.json()
                        answers.append((response.status, answer.get("status") or answer["error"]))
            deadline = time.monotonic() + 30
            while not until():
                assert time.monotonic() < deadline, "the condition did not hold in 30s"
                await asyncio.sleep(0.05)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        assert process.returncode == 0, log.read_text()
        return answers


@pytest.fixture
def receiver(tmp_path: Path, collector: otelcol.Collector) -> TracedReceiver:
    return TracedReceiver(tmp_path, collector)


async def test_a_deliverys_trace_holds_the_receivers_spans_and_the_consumers_child(
    collector: otelcol.Collector, consumer: ConsumerProcess, receiver: TracedReceiver
) -> None:
    secret, other_secret = receiver.secret, new_secret()
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body, msg_id="msg_traced")
    forged = signed_headers([other_secret], body, msg_id="msg_forged")
    config = base_config(consumer.url + "/events", receiver.secrets_path)
    accepted, refused = await receiver.run(config, [headers, forged], body)
    assert accepted == (200, "accepted")
    assert refused[0] >= 400

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = [s["name"] for s in spans]
        return names.count("webhook delivery") == 2 and SPAN_NAME in names

    spans = await asyncio.to_thread(collector.wait_for, complete)
    deliveries = {
        otelcol.attributes(s)["gemini.webhook.message_id"]: s
        for s in spans
        if s["name"] == "webhook delivery"
    }
    delivery = deliveries["msg_traced"]
    assert delivery["service"] == "receiver-under-test"
    assert delivery["kind"] == SERVER and not delivery.get("parentSpanId")
    assert int(otelcol.attributes(delivery)["http.response.status_code"]) == 200
    assert [e["name"] for e in delivery["events"]] == ["verified", "routed"]
    [forward] = [s for s in spans if s["name"] == "forward"]
    assert forward["kind"] == CLIENT
    assert forward["traceId"] == delivery["traceId"]
    assert forward["parentSpanId"] == delivery["spanId"]
    assert otelcol.attributes(forward)["gemini.forward.outcome"] == "ok"
    [consumed] = [s for s in spans if s["name"] == SPAN_NAME]
    assert consumed["service"] == SERVICE_NAME
    assert consumed["kind"] == SERVER
    assert consumed["traceId"] == delivery["traceId"]
    assert consumed["parentSpanId"] == forward["spanId"]
    assert otelcol.attributes(consumed)["gemini.event.type"] == json.loads(body)["type"]
    [traceparent] = consumer.traceparents()
    assert traceparent is not None
    version, trace_id, parent_id, flags = traceparent.split("-")
    assert (version, trace_id, parent_id) == ("00", delivery["traceId"], forward["spanId"])
    assert int(flags, 16) & 1  # sampled

    rejected = deliveries["msg_forged"]
    assert rejected["traceId"] != delivery["traceId"]
    assert otelcol.attributes(rejected)["gemini.rejection.reason"] == refused[1]
    assert int(otelcol.attributes(rejected)["http.response.status_code"]) == refused[0]

    # Nothing secret, signed or sent reached the backend: not the signing secrets (nor their
    # key bytes), not a signature, not the body.
    exported = collector.path.read_text()
    data_id = json.loads(body)["data"]["id"]
    for sent in (headers, forged):
        for signature in sent["webhook-signature"].split():
            assert signature.partition(",")[2] not in exported
    for whsec in (secret, other_secret):
        assert whsec not in exported and whsec.removeprefix("whsec_") not in exported
    assert data_id not in exported and "output_file_uri" not in exported


async def test_in_redis_mode_the_delivery_from_the_stream_links_to_the_enqueue(
    collector: otelcol.Collector,
    consumer: ConsumerProcess,
    receiver: TracedReceiver,
    redis_server: str,
) -> None:
    body = json.dumps(envelope()).encode()
    headers = signed_headers([receiver.secret], body, msg_id="msg_queued")
    config = base_config(consumer.url + "/events", receiver.secrets_path)
    config["redis"] = {"url": redis_server}
    config["dedup"] = {"backend": "redis"}
    # Stopped once the consumer got it: the delivery from the stream has ended by then.
    answers = await receiver.run(
        config, [headers], body, until=lambda: bool(consumer.traceparents())
    )
    assert answers == [(200, "accepted")]

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = {s["name"] for s in spans}
        return {"webhook delivery", "enqueue", "deliver from stream", SPAN_NAME} <= names

    spans = await asyncio.to_thread(collector.wait_for, complete)
    by_name = {s["name"]: s for s in spans}
    delivery, enqueue = by_name["webhook delivery"], by_name["enqueue"]
    assert enqueue["kind"] == PRODUCER
    assert enqueue["traceId"] == delivery["traceId"]
    assert enqueue["parentSpanId"] == delivery["spanId"]
    assert otelcol.attributes(enqueue)["gemini.enqueue.outcome"] == "accepted"
    stream = by_name["deliver from stream"]
    assert stream["kind"] == CONSUMER and not stream.get("parentSpanId")
    assert [(link["traceId"], link["spanId"]) for link in stream["links"]] == [
        (enqueue["traceId"], enqueue["spanId"])
    ]
    forward, consumed = by_name["forward"], by_name[SPAN_NAME]
    assert forward["traceId"] == stream["traceId"] and forward["parentSpanId"] == stream["spanId"]
    assert consumed["traceId"] == stream["traceId"]
    assert consumed["parentSpanId"] == forward["spanId"]
