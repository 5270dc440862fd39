"""OpenTelemetry tracing for the receiver and the operator: off unless the standard
`OTEL_*` environment configures it, and then set up from that environment only.

Tracing is on when `OTEL_TRACES_EXPORTER` names an exporter other than `none`, or, with
that variable unset, when an OTLP endpoint is given (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true` turns it off whatever
else is set. The OpenTelemetry SDK then reads the rest as it documents: the endpoint and
headers, `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG`, `OTEL_PROPAGATORS` (W3C `traceparent` by default), the batch
processor's `OTEL_BSP_*`.

`configured` and `check` are pure and import nothing of OpenTelemetry: a process that does
not trace never loads it (the receiver stays lean). `tracer_provider` imports the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

# The exporters this project ships (OTLP over HTTP/protobuf, and the console one to look
# at spans locally); the SDK's others need packages that are not installed.
EXPORTERS = ("otlp", "console")
PROTOCOL = "http/protobuf"


class TracingConfigError(ValueError):
    """The `OTEL_*` environment asks for what cannot be done; the message names the variable."""


def _value(env: Mapping[str, str], name: str) -> str:
    return env.get(name, "").strip()


def configured(env: Mapping[str, str]) -> bool:
    """Whether the environment turns tracing on (see the module's docstring)."""
    if _value(env, "OTEL_SDK_DISABLED").lower() == "true":
        return False
    exporter = _value(env, "OTEL_TRACES_EXPORTER").lower()
    if exporter:
        return exporter != "none"
    return bool(
        _value(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or _value(env, "OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def exporter_name(env: Mapping[str, str]) -> str:
    """The one span exporter the environment names (`otlp` when unset), or
    TracingConfigError: a list of several, or one that is not shipped."""
    names = [n.strip().lower() for n in _value(env, "OTEL_TRACES_EXPORTER").split(",") if n.strip()]
    if not names:
        return "otlp"
    if len(names) > 1 or names[0] not in EXPORTERS:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={_value(env, 'OTEL_TRACES_EXPORTER')!r}: "
            f"expected one of {', '.join(EXPORTERS)} or none"
        )
    return names[0]


def check(env: Mapping[str, str]) -> None:
    """TracingConfigError unless the environment asks for what is shipped: one exporter
    of `EXPORTERS`, OTLP over HTTP/protobuf (the gRPC exporter is not installed)."""
    exporter_name(env)
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = _value(env, name)
        if protocol:
            if protocol != PROTOCOL:
                raise TracingConfigError(f"{name}={protocol!r}: only {PROTOCOL!r} is supported")
            break  # the traces-specific one wins


def _names_service(env: Mapping[str, str]) -> bool:
    attributes = _value(env, "OTEL_RESOURCE_ATTRIBUTES")
    return bool(_value(env, "OTEL_SERVICE_NAME")) or any(
        pair.partition("=")[0].strip() == "service.name" for pair in attributes.split(",")
    )


def tracer_provider(env: Mapping[str, str], service_name: str) -> TracerProvider:
    """A tracer provider exporting in batches as `env` (the process's environment, which
    the SDK reads itself) says; `service_name` unless the environment names the service.
    TracingConfigError for an environment `check` refuses."""
    check(env)
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    resource = Resource.create({} if _names_service(env) else {"service.name": service_name})
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER
    exporter: SpanExporter
    if exporter_name(env) == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
