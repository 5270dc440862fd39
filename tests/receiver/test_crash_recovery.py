"""A receiver killed with SIGKILL in the middle of a stream loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .conftest import RecordingTarget, base_config, envelope, signed_headers

pytestmark = pytest.mark.real_component


class ReceiverProcess:
    """The real `gemini-webhooks receiver` in a subprocess; its port is read from its log."""

    def __init__(self, config_file: Path, log_file: Path) -> None:
        self.log_file = log_file
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gemini_webhooks", "receiver", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=log_file.open("wb"),
        )
        self.port = 0

    async def wait_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_file.read_text()
            for line in self.log_file.read_text().splitlines():
                if '"receiver listening"' in line:
                    self.port = json.loads(line)["port"]
                    return
            await asyncio.sleep(0.05)
        raise AssertionError("receiver did not start: " + self.log_file.read_text())

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


async def _stream(
    port: int, secret: str, count: int, acked: list[str], stop: asyncio.Event
) -> None:
    url = f"http://127.0.0.1:{port}/"
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            body = json.dumps(envelope()).encode()
            headers = signed_headers([secret], body)
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status == 200:
                        acked.append(headers["webhook-id"])
            except (aiohttp.ClientError, OSError):
                pass  # not acknowledged: Gemini would retry it

        for _ in range(count // 8):
            if stop.is_set():
                return
            await asyncio.gather(*(one() for _ in range(8)))


async def test_sigkill_mid_stream_then_restart_delivers_every_acknowledged_event(
    target: RecordingTarget, secrets_file: tuple[Path, str], redis_server: str, tmp_path: Path
) -> None:
    path, secret = secrets_file
    target.delay = 0.05  # keep deliveries in flight when the kill lands
    config: dict[str, Any] = base_config(target.url, path)
    config["logging"] = {"level": "INFO"}
    config["dedup"] = {"backend": "redis"}
    config["forwarding"] = {"timeout_seconds": 2, "backoff_initial_seconds": 0.05}
    config["redis"] = {"url": redis_server, "claim_idle_seconds": 1, "consumer_name": "replica-1"}
    first_config = tmp_path / "first.json"
    first_config.write_text(json.dumps(config))
    config["redis"]["consumer_name"] = "replica-2"  # a new pod: reclaims replica-1's pending
    second_config = tmp_path / "second.json"
    second_config.write_text(json.dumps(config))

    acked: list[str] = []
    first = ReceiverProcess(first_config, tmp_path / "first.log")
    second: ReceiverProcess | None = None
    try:
        await first.wait_listening()
        stop = asyncio.Event()
        streaming = asyncio.create_task(_stream(first.port, secret, 400, acked, stop))
        while len(acked) < 120:
            await asyncio.sleep(0.01)
        first.kill()
        stop.set()
        await streaming
        delivered_before_restart = set(target.ids())
        assert set(acked) - delivered_before_restart, "the kill should leave work pending"

        second = ReceiverProcess(second_config, tmp_path / "second.log")
        await second.wait_listening()
        await _stream(second.port, secret, 40, acked, asyncio.Event())
        deadline = time.monotonic() + 20
        while set(acked) - set(target.ids()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert set(acked) - set(target.ids()) == set()
    finally:
        first.kill()
        if second is not None:
            second.process.send_signal(signal.SIGTERM)
            try:
                second.process.wait(10)
            except subprocess.TimeoutExpired:
                second.kill()


async def test_sigterm_drains_an_inline_delivery_in_flight(
    target: RecordingTarget, secrets_file: tuple[Path, str], tmp_path: Path
) -> None:
    path, secret = secrets_file
    target.delay = 0.8
    config: dict[str, Any] = base_config(target.url, path)
    config["logging"] = {"level": "INFO"}
    config_file = tmp_path / "inline.json"
    config_file.write_text(json.dumps(config))
    receiver = ReceiverProcess(config_file, tmp_path / "inline.log")
    try:
        await receiver.wait_listening()
        body = json.dumps(envelope()).encode()
        headers = signed_headers([secret], body)
        async with aiohttp.ClientSession() as session:
            request = asyncio.create_task(
                session.post(f"http://127.0.0.1:{receiver.port}/", data=body, headers=headers)
            )
            await asyncio.sleep(0.3)
            receiver.process.send_signal(signal.SIGTERM)
            response = await request
            assert response.status == 200
            response.release()
        assert target.ids() == [headers["webhook-id"]]
        assert await asyncio.to_thread(receiver.process.wait, 10) == 0
    finally:
        receiver.kill()
