"""The emulator embeds in-process (async, port 0) and runs as the `gemini-webhooks emulator`
subprocess."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google import genai
from google.genai import _interactions_errors as sdk_errors
from google.genai import types

from gemini_webhooks.emulator import Emulator, EmulatorConfig


class FakeClock:
    """Test double for the emulator's clock: time moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


async def test_embedded_emulator_serves_on_an_ephemeral_port():
    async with Emulator(EmulatorConfig(port=0)) as emulator:
        assert emulator.port > 0
        client = genai.Client(
            api_key="any", http_options=types.HttpOptions(base_url=emulator.base_url)
        )
        hook = await client.aio.webhooks.create(
            uri="https://x.example/h", subscribed_events=["batch.failed"]
        )
        assert (await client.aio.webhooks.get(id=hook.id)).id == hook.id


async def test_an_injected_clock_decides_when_a_grace_period_ends():
    clock = FakeClock(datetime(2026, 1, 22, 12, 0, tzinfo=UTC))
    async with Emulator(EmulatorConfig(), clock=clock) as emulator:
        client = genai.Client(
            api_key="any", http_options=types.HttpOptions(base_url=emulator.base_url)
        )
        hook = await client.aio.webhooks.create(
            uri="https://x.example/h", subscribed_events=["batch.failed"]
        )
        await client.aio.webhooks.rotate_signing_secret(id=hook.id)
        clock.advance(timedelta(hours=23, minutes=59))
        assert len((await client.aio.webhooks.get(id=hook.id)).signing_secrets) == 2
        clock.advance(timedelta(minutes=1))
        assert len((await client.aio.webhooks.get(id=hook.id)).signing_secrets) == 1


def test_time_scale_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        Emulator(EmulatorConfig(time_scale=0))


def test_config_repr_hides_api_keys():
    assert "s3cret" not in repr(EmulatorConfig(api_keys=("s3cret",)))


def test_the_cli_runs_the_emulator_until_terminated(tmp_path: Path):
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gemini_webhooks",
            "emulator",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--api-key",
            "cli-key",
            "--batch-seconds",
            "1",
            "--time-scale",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text()):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "emulator did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port_file.read_text()}"
        client = genai.Client(api_key="cli-key", http_options=types.HttpOptions(base_url=url))
        hook = client.webhooks.create(uri="https://x.example/h", subscribed_events=["batch.failed"])
        assert client.webhooks.get(id=hook.id).uri == "https://x.example/h"
        other = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=url))
        with pytest.raises(sdk_errors.PermissionDeniedError):
            other.webhooks.list()
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
        assert b"cli-key" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def test_the_cli_refuses_a_non_positive_time_scale():
    result = subprocess.run(
        [sys.executable, "-m", "gemini_webhooks", "emulator", "--time-scale", "0"],
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert b"positive" in result.stderr


async def test_async_control_client_fires_and_reads_the_log(emulator):
    from gemini_webhooks.emulator import AsyncControlClient, ControlError

    endpoint = emulator.endpoint()
    async with AsyncControlClient(emulator.base_url, emulator.api_key) as control:
        assert await control.health()
        fired = await control.fire("video.generated", webhook_config={"uris": [endpoint.url]})
        [entry] = await control.wait_for_deliveries(1, event_id=fired["event_id"])
        assert entry["state"] == "delivered"
        with pytest.raises(ControlError):
            await control.fire("no.such.event")


async def test_idle_waits_for_in_process_deliveries():
    received = []

    async with Emulator(EmulatorConfig()) as emulator:
        from aiohttp import web

        async def handle(request):
            received.append(await request.read())
            return web.Response()

        app = web.Application()
        app.router.add_post("/", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        from gemini_webhooks.emulator.batches import WebhookConfig

        emulator.emit(
            "batch.failed",
            {"id": "b", "error_code": 1, "error_message": "m"},
            WebhookConfig(uris=(f"http://127.0.0.1:{port}/",), user_metadata=None),
        )
        await emulator.idle()
        await runner.cleanup()
    assert len(received) == 1
