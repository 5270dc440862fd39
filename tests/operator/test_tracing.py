"""The operator's spans: each reconciliation is a span, and each WebhookService call it
makes is a child span in the same trace; neither carries the API key nor a signing secret."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.operator.harness import Cluster, is_ready, operator_running, resource


async def test_a_reconciliation_spans_its_webhookservice_calls(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    name = "traced"
    async with operator_running(kube, tracer=provider.get_tracer("test")):
        await gemini.apply(resource(name, emulator.endpoint().url, emulator.base_url))
        await gemini.wait_for(name, is_ready, timeout=60)
        held = await gemini.signing_secrets(name)
    assert held is not None
    spans = exported.get_finished_spans()
    reconciles = {
        span.context.span_id: span
        for span in spans
        if span.name == "reconcile" and span.attributes["gemini.webhook.resource"] == name
    }
    assert reconciles, [s.name for s in spans]
    [create] = [s for s in spans if s.name == "WebhookService create"]
    assert create.parent is not None and create.parent.span_id in reconciles
    parent = reconciles[create.parent.span_id]
    assert create.context.trace_id == parent.context.trace_id
    assert parent.attributes["k8s.namespace.name"] == "default"
    assert create.attributes["rpc.method"] == "create"
    everything = "\n".join(span.to_json() for span in spans)
    for secret in (emulator.api_key, *(s.secret for s in held.secrets)):
        assert secret not in everything
