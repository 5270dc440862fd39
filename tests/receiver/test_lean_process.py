"""The receiver process holds only what it runs: neither the operator, kopf, google-genai
nor any of the tools (emulator, sandboxes, control plane), nor the Redis client and the JWT
libraries when its configuration uses neither, nor aiohttp (the client of https targets and
the JWKS) when it forwards over plain http only, nor OpenTelemetry when tracing is off."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import RecordingTarget, base_config, envelope, listening, signed_headers

NOT_THE_RECEIVER = (
    "kopf",
    "google.genai",
    "gemini_webhook_operator",
    "gemini_webhooks.emulator",
    "gemini_webhooks.kubesandbox",
    "gemini_webhooks.sandbox",
    "gemini_webhooks.controlplane",
    "gemini_webhooks.observability",
    "gemini_webhooks.jobs",
    "gemini_webhooks.generate",
    "kmock",
    "httpx",
    "websockets",
)


def _imported(stderr: str) -> set[str]:
    """Module names from `python -X importtime`'s report: `import time: self | total | name`."""
    return {
        line.rpartition("|")[2].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }


@contextlib.asynccontextmanager
async def importtime_receiver(
    config: dict[str, Any], tmp_path: Path, **env: str
) -> AsyncIterator[tuple[dict[str, Any], Path]]:
    """A real receiver process run with `config` under `python -X importtime` (extra
    environment `env`): yields its `receiver listening` record and the file its report is
    written to, complete once the block ends (the process is stopped then)."""
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(config))
    log = tmp_path / "stderr"
    command = [sys.executable, "-X", "importtime", "-m", "gemini_webhooks", "receiver"]
    # Tracing off, as it is unless configured: no OTEL_* variable reaches the process.
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*command, "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**environment, **env},
        )
    try:
        yield await listening(process, log), log
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


async def _modules_of_a_receiver_run(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> set[str]:
    """Every module the real receiver process imports, from start-up through one static
    delivery verified and forwarded over plain http (inline mode, dynamic webhooks off) and
    its internal port's readiness and metrics read, to its shutdown."""
    path, secret = secrets_file
    config = base_config(target.url, path, logging={"level": "INFO"})
    async with importtime_receiver(config, tmp_path) as (ports, log):
        body = json.dumps(envelope()).encode()
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{ports['port']}/",
                data=body,
                headers=signed_headers([secret], body),
            ) as response:
                assert response.status == 200, await response.text()
            await target.wait_for(1, timeout=30)
            for endpoint in ("/readyz", "/metrics"):
                internal = f"http://127.0.0.1:{ports['internal_port']}{endpoint}"
                async with session.get(internal) as got:
                    assert got.status == 200, await got.text()
    imported = _imported(log.read_text())
    assert "gemini_webhook_receiver.app" in imported  # the report is read right
    return imported


def _under(roots: tuple[str, ...], imported: set[str]) -> list[str]:
    return sorted(
        name
        for name in imported
        if any(name == root or name.startswith(root + ".") for root in roots)
    )


async def test_the_receiver_process_imports_neither_the_operator_nor_the_tools(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> None:
    imported = await _modules_of_a_receiver_run(target, secrets_file, tmp_path)
    assert _under(NOT_THE_RECEIVER, imported) == []


async def test_an_inline_static_receiver_imports_neither_redis_nor_the_jwt_libraries(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> None:
    imported = await _modules_of_a_receiver_run(target, secrets_file, tmp_path)
    assert _under(("redis", "jwt", "cryptography"), imported) == []


async def test_a_receiver_forwarding_over_plain_http_does_not_import_aiohttp(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> None:
    imported = await _modules_of_a_receiver_run(target, secrets_file, tmp_path)
    assert _under(("aiohttp", "multidict", "yarl"), imported) == []


async def test_without_tracing_configured_no_opentelemetry_is_imported_nor_traceparent_sent(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> None:
    imported = await _modules_of_a_receiver_run(target, secrets_file, tmp_path)
    assert (
        _under(("opentelemetry", "gemini_webhook_receiver.tracing", "google.protobuf"), imported)
        == []
    )
    [forwarded] = target.requests
    assert not {"traceparent", "tracestate", "baggage"} & {h.lower() for h in forwarded.headers}
