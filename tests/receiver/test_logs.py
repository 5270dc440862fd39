"""The receiver's logs: one JSON object per line, every line about a delivery carries its
`webhook_id`, and neither secrets nor bodies nor signatures ever appear."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gemini_webhook_receiver import logs, static
from gemini_webhooks.contracts.delivery import PING_EVENT_TYPE

from .conftest import (
    RecordingTarget,
    StartReceiver,
    base_config,
    envelope,
    new_secret,
    signed_headers,
    write_secrets,
)
from .test_crash_recovery import ReceiverProcess

BODY_MARKER = "body-marker-7f3a9c"


async def test_logs_are_json_lines_correlated_by_webhook_id_without_secrets_or_bodies(
    target: RecordingTarget, tmp_path: Path
) -> None:
    secrets_path = tmp_path / "signing-secrets.json"
    current, old = new_secret(), new_secret()
    write_secrets(secrets_path, current, (old, datetime.now(UTC) + timedelta(hours=1)))
    # The forged delivery below must be a final 401 bad_signature, not the retryable 503
    # secret_reload_pending that follows verified deliveries by default.
    config: dict[str, Any] = base_config(
        target.url, secrets_path, replay={"reload_pending_seconds": 0}
    )
    config["logging"] = {"level": "DEBUG", "format": "json"}
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(config))
    receiver = ReceiverProcess(config_file, tmp_path / "receiver.log")
    sent: dict[str, str] = {}  # webhook-id -> what happened to it
    signatures: list[str] = []
    try:
        await receiver.wait_listening()
        url = f"http://127.0.0.1:{receiver.port}/"
        async with aiohttp.ClientSession() as session:

            async def send(what: str, secrets: list[str], event: dict[str, Any], **kw: Any) -> int:
                body = json.dumps(event).encode()
                headers = signed_headers(secrets, body, **kw)
                signatures.extend(headers["webhook-signature"].split(" "))
                sent[headers["webhook-id"]] = what
                async with session.post(url, data=body, headers=headers) as response:
                    return response.status

            def marked(event_type: str = "batch.succeeded") -> dict[str, Any]:
                return envelope(event_type, user_metadata={"note": BODY_MARKER})

            assert await send("accepted", [current], marked()) == 200
            duplicate = marked()
            body = json.dumps(duplicate).encode()
            headers = signed_headers([current], body)
            sent[headers["webhook-id"]] = "accepted then duplicate"
            for _ in range(2):
                async with session.post(url, data=body, headers=headers) as response:
                    assert response.status == 200
            assert await send("forged", [new_secret()], marked()) == 401
            stale = int(time.time()) - 3600
            assert await send("expired", [current], marked(), timestamp=stale) == 400
            ping = {"type": PING_EVENT_TYPE, "data": {"note": BODY_MARKER}}
            assert await send("ping", [old], ping) == 200
            target.fail_always = True
            assert await send("failed", [current], marked()) == 503
        receiver.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(receiver.process.wait, 10) == 0
    finally:
        receiver.kill()

    text = receiver.log_file.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert all({"time", "level", "message"} <= line.keys() for line in lines)
    for msg_id, what in sent.items():
        about = [line for line in lines if line.get("webhook_id") == msg_id]
        assert about, f"no log line carries the webhook_id of the {what} delivery"
    for secret in (current, old):
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
    for signature in signatures:
        assert signature.removeprefix("v1,") not in text
    assert BODY_MARKER not in text
    assert "gs://" not in text  # the envelopes' output_file_uri


def test_a_python_warning_is_logged_as_a_json_line() -> None:
    """A library's warning (PyJWT's InsecureKeyLengthWarning, say) would otherwise reach
    stderr as plain text among the JSON lines."""
    program = (
        "import warnings, jwt\n"
        "from gemini_webhook_receiver import logs\n"
        "logs.configure('INFO', 'json')\n"
        "warnings.warn('short key', jwt.InsecureKeyLengthWarning)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    [line] = [json.loads(line) for line in result.stderr.splitlines()]
    assert (line["logger"], line["level"]) == ("py.warnings", "warning")
    assert "InsecureKeyLengthWarning: short key" in line["message"]


async def test_the_line_of_an_internal_error_carries_the_webhook_id(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    secrets_file: tuple[Path, str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))

    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(static, "verify", broken)
    status, _, msg_id = await client.deliver([secret])
    assert status == 503
    [line] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert getattr(line, "fields", {}) == {"webhook_id": msg_id, "error": "RuntimeError"}


def test_a_json_line_is_stamped_in_rfc_3339_utc_to_the_millisecond() -> None:
    record = logging.LogRecord("gemini_webhook_receiver", logging.INFO, __file__, 1, "hi", (), None)
    record.created = datetime(2026, 12, 6, 12, 30, 45, 123999, tzinfo=UTC).timestamp()
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["time"] == "2026-12-06T12:30:45.123Z"
