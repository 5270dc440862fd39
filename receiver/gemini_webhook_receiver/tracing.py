"""The receiver's spans, imported only when the `OTEL_*` environment turns tracing on
(`gemini_webhooks.tracing.configured`): a receiver that does not trace loads no
OpenTelemetry module and its hot path does not branch on it but for an `is None`.

- `webhook delivery` (SERVER): one per request to the public port, ended with its answer;
  events on it say what was decided — `verified` (scheme, source), `rejected` (reason),
  `duplicate`, `routed` (rule, target count);
- `forward` (CLIENT), its child: one per attempt at one target, carrying the W3C
  `traceparent` (the configured propagators) to the target, which continues the trace.

In Redis mode the delivery's child is `enqueue` (PRODUCER), whose `traceparent` is stored
with the stream entry; the consumer's `deliver from stream` (CONSUMER), whichever replica
runs it and however late, starts a trace of its own linked to it, and the `forward` spans
(and the targets' spans) are its children.

Attributes hold names and outcomes only: never a signing secret, a signature, a token, the
body or the verified claims. Exceptions are not recorded (their messages are not ours to
export): a span they end is marked as an error with the exception's class only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from gemini_webhooks.contracts.delivery import HEADER_ID

from .forwarding import Event, Target
from .metrics import FORWARD_OK

DeliveryHandler = Callable[[dict[str, str], bytes], Awaitable[tuple[int, bytes]]]
Send = Callable[[Mapping[str, str]], Awaitable[str]]

# Attribute names: OpenTelemetry's semantic conventions where one exists, ours otherwise.
MESSAGE_ID = "gemini.webhook.message_id"  # `webhook-id`: the delivery's id, not a secret
STATUS_CODE = "http.response.status_code"


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("gemini_webhook_receiver")

    @contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, str | int],
        parent: context.Context | None = None,
        links: list[Link] | None = None,
    ) -> Iterator[trace.Span]:
        with self.tracer.start_as_current_span(
            name,
            parent,
            kind,
            attributes,
            links,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as error:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise

    def deliveries(self, deliver: DeliveryHandler) -> DeliveryHandler:
        """`deliver` inside a `webhook delivery` span."""

        async def traced(headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
            attributes: dict[str, str | int] = {
                "http.request.method": "POST",
                "http.request.body.size": len(body),
            }
            msg_id = headers.get(HEADER_ID)
            if msg_id:
                attributes[MESSAGE_ID] = msg_id[:256]
            with self._span("webhook delivery", SpanKind.SERVER, attributes) as span:
                status, answer = await deliver(headers, body)
                span.set_attribute(STATUS_CODE, status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return status, answer

        return traced

    @staticmethod
    def verified(event: Event) -> None:
        trace.get_current_span().add_event(
            "verified",
            {"gemini.signature_scheme": event.scheme, "gemini.webhook.source": event.source},
        )

    @staticmethod
    def rejected(reason: str) -> None:
        span = trace.get_current_span()
        span.set_attribute("gemini.rejection.reason", reason)
        span.add_event("rejected", {"gemini.rejection.reason": reason})

    @staticmethod
    def duplicate() -> None:
        trace.get_current_span().add_event("duplicate")

    @staticmethod
    def routed(rule: str | None, targets: int) -> None:
        attributes: dict[str, str | int] = {"gemini.route.targets": targets}
        if rule is not None:
            attributes["gemini.route.rule"] = rule
        trace.get_current_span().add_event("routed", attributes)

    async def forward(self, event: Event, target: Target, send: Send) -> str:
        """One attempt (`send`, given the headers to add) inside a `forward` span, whose
        context those headers carry; returns its outcome."""
        with self._span(
            "forward",
            SpanKind.CLIENT,
            {
                "gemini.target": target.name,  # a URL target's, without credentials or query
                MESSAGE_ID: event.msg_id,
                "gemini.event_type": event.event_type,
            },
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            outcome = await send(carrier)
            span.set_attribute("gemini.forward.outcome", outcome)
            if outcome != FORWARD_OK:
                span.set_status(Status(StatusCode.ERROR, outcome))
            return outcome

    @contextmanager
    def enqueue(self, event: Event, stream: str) -> Iterator[str | None]:
        """An `enqueue` span around storing the event; yields the `traceparent` to store."""
        with self._span(
            "enqueue",
            SpanKind.PRODUCER,
            {
                "messaging.system": "redis",
                "messaging.destination.name": stream,
                MESSAGE_ID: event.msg_id,
            },
        ):
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            yield carrier.get("traceparent")

    @staticmethod
    def admitted(outcome: str) -> None:
        trace.get_current_span().set_attribute("gemini.enqueue.outcome", outcome)

    @contextmanager
    def from_stream(self, event: Event, traceparent: bytes | None) -> Iterator[None]:
        """A `deliver from stream` span, the root of a trace of its own, linked to the
        `enqueue` span whose `traceparent` the entry carries (none: no link)."""
        links = []
        if traceparent:
            carrier = {"traceparent": traceparent.decode("ascii", "replace")}
            stored = trace.get_current_span(propagate.extract(carrier)).get_span_context()
            if stored.is_valid:
                links.append(Link(stored))
        with self._span(
            "deliver from stream",
            SpanKind.CONSUMER,
            {
                "messaging.system": "redis",
                MESSAGE_ID: event.msg_id,
                "gemini.event_type": event.event_type,
            },
            parent=context.Context(),  # a root: the enqueueing request has long ended
            links=links,
        ):
            yield

    def shutdown(self) -> None:
        """Export what is still buffered (bounded by the SDK's export timeout)."""
        self.provider.shutdown()
