"""One delivery's trace, end to end, read back from a real trace backend: the receiver
process (tracing on through the standard `OTEL_*` environment) verifies a signed delivery
and forwards it to a consumer that continues the trace from the `traceparent` it gets; the
OpenTelemetry Collector (built here from its Go modules) stores what both export.

The consumer is a test double standing in for the user's Service: an HTTP endpoint that
extracts the W3C context with the OpenTelemetry SDK and spans its handling as a child."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.receiver.conftest import (
    base_config,
    envelope,
    listening,
    new_secret,
    signed_headers,
    start_target,
    write_secrets,
)
from tests.tracing import collector as otelcol

# The Collector is built in the background during scripts/test's sandbox phase.
pytestmark = [pytest.mark.real_component, pytest.mark.late_build]

# OTLP JSON's span kinds
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


class TracingConsumer:
    """A test double for the consumer Service: continues the trace it is sent."""

    def __init__(self, endpoint: str) -> None:
        self.provider = TracerProvider(resource=Resource.create({"service.name": "test-consumer"}))
        self.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
        )
        self.tracer = self.provider.get_tracer("test-consumer")
        self.traceparents: list[str | None] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.traceparents.append(request.headers.get("traceparent"))
        context = propagate.extract(dict(request.headers))
        with self.tracer.start_as_current_span("consume event", context, SpanKind.SERVER):
            pass
        return web.Response(status=204)


@pytest.fixture
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[otelcol.Collector]:
    with otelcol.running(tmp_path_factory.mktemp("otelcol")) as running:
        yield running


@pytest.fixture
async def consumer(collector: otelcol.Collector) -> AsyncIterator[TracingConsumer]:
    double = TracingConsumer(collector.endpoint)
    runner, double.url = await start_target(double.handle)
    yield double
    await runner.cleanup()
    double.provider.shutdown()


class TracedReceiver:
    """The real receiver process, tracing to the collector through the OTEL_* environment."""

    def __init__(self, tmp_path: Path, collector: otelcol.Collector) -> None:
        self.secret = new_secret()
        self.secrets_path = tmp_path / "signing-secrets.json"
        write_secrets(self.secrets_path, self.secret)
        self.tmp_path = tmp_path
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.env |= {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_SERVICE_NAME": "receiver-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }

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
    collector: otelcol.Collector, consumer: TracingConsumer, receiver: TracedReceiver
) -> None:
    secret, other_secret = receiver.secret, new_secret()
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body, msg_id="msg_traced")
    forged = signed_headers([other_secret], body, msg_id="msg_forged")
    config = base_config(consumer.url, receiver.secrets_path)
    accepted, refused = await receiver.run(config, [headers, forged], body)
    assert accepted == (200, "accepted")
    assert refused[0] >= 400

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = [s["name"] for s in spans]
        return names.count("webhook delivery") == 2 and "consume event" in names

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
    [consumed] = [s for s in spans if s["name"] == "consume event"]
    assert consumed["service"] == "test-consumer"
    assert consumed["traceId"] == delivery["traceId"]
    assert consumed["parentSpanId"] == forward["spanId"]
    [traceparent] = consumer.traceparents
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
    consumer: TracingConsumer,
    receiver: TracedReceiver,
    redis_server: str,
) -> None:
    body = json.dumps(envelope()).encode()
    headers = signed_headers([receiver.secret], body, msg_id="msg_queued")
    config = base_config(consumer.url, receiver.secrets_path)
    config["redis"] = {"url": redis_server}
    config["dedup"] = {"backend": "redis"}
    # Stopped once the consumer got it: the delivery from the stream has ended by then.
    answers = await receiver.run(config, [headers], body, until=lambda: bool(consumer.traceparents))
    assert answers == [(200, "accepted")]

    def complete(spans: list[dict[str, Any]]) -> bool:
        names = {s["name"] for s in spans}
        return {"webhook delivery", "enqueue", "deliver from stream", "consume event"} <= names

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
    forward, consumed = by_name["forward"], by_name["consume event"]
    assert forward["traceId"] == stream["traceId"] and forward["parentSpanId"] == stream["spanId"]
    assert consumed["traceId"] == stream["traceId"]
    assert consumed["parentSpanId"] == forward["spanId"]
