"""When the `OTEL_*` environment turns tracing on, and what it may ask for: pure decisions,
and the receiver process refusing, by name, what it cannot do."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gemini_webhooks.sandbox.consumer import spans_from
from gemini_webhooks.tracing import TracingConfigError, check, configured, exporter_name
from tests.receiver.conftest import base_config, new_secret, write_secrets

ENDPOINT = "http://collector:4318"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT + "/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # the SDK's default endpoint
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(env: dict[str, str], on: bool) -> None:
    assert configured(env) is on


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL": ""},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
    ],
)
def test_what_is_not_shipped_is_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(TracingConfigError, match=named):
        check(env)


def test_what_is_shipped_is_accepted() -> None:
    check({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_EXPORTER": "OTLP"})
    # the traces-specific protocol wins over the general one
    check(
        {
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
    )
    assert exporter_name({}) == "otlp"
    assert exporter_name({"OTEL_TRACES_EXPORTER": " Console "}) == "console"


def _refused(argv: list[str]) -> None:
    """`argv` exits 2 at start-up, naming the exporter it does not ship."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_TRACES_EXPORTER"] = "zipkin"
    result = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "OTEL_TRACES_EXPORTER='zipkin'" in result.stderr


def test_the_receiver_refuses_to_start_with_an_exporter_it_does_not_ship(tmp_path: Path) -> None:
    secrets = tmp_path / "signing-secrets.json"
    write_secrets(secrets, new_secret())
    config = tmp_path / "receiver.json"
    config.write_text(json.dumps(base_config("http://127.0.0.1:9/", secrets)))
    _refused(["-m", "gemini_webhooks", "receiver", "--config", str(config)])


def test_the_sample_consumer_refuses_to_start_with_an_exporter_it_does_not_ship() -> None:
    _refused(["-m", "gemini_webhooks.sandbox.consumer", "--port", "0"])


def test_the_sample_consumer_traces_only_when_the_environment_asks() -> None:
    assert spans_from({}) is None
    assert spans_from({"OTEL_TRACES_EXPORTER": "none"}) is None
    spans = spans_from({"OTEL_TRACES_EXPORTER": "console"})
    assert spans is not None
    spans.provider.shutdown()
