"""End to end with our Gemini emulator (driven by the real google-genai SDK) as the sender."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gemini_webhooks.contracts import dynamic_jobs
from gemini_webhooks.contracts.delivery import JWKS_PATH
from gemini_webhooks.contracts.signing_secret import matches_truncated

from .conftest import RecordingTarget, StartReceiver, base_config, write_secrets


async def _register(emulator: Any, url: str, events: list[str]) -> Any:
    client = emulator.client()
    return await asyncio.to_thread(client.webhooks.create, uri=url, subscribed_events=events)


async def test_emulator_deliveries_are_verified_and_forwarded(
    emulator: Any, start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    config = base_config(target.url, path)
    client = await start_receiver(config)
    hook = await _register(emulator, client.url, ["batch.failed", "video.generated"])
    write_secrets(path, hook.new_signing_secret)
    await asyncio.sleep(0.5)
    await asyncio.to_thread(emulator.fire, "batch.failed")
    await asyncio.to_thread(emulator.fire, "video.generated")
    await target.wait_for(2)
    assert sorted(r.headers["X-Gemini-Event-Type"] for r in target.requests) == [
        "batch.failed",
        "video.generated",
    ]
    deliveries = await asyncio.to_thread(emulator.wait_for_deliveries, 2, webhook_id=hook.id)
    assert {d["state"] for d in deliveries} == {"delivered"}


async def test_emulator_ping_is_visible_to_the_operator_with_the_secret_fingerprint(
    emulator: Any, start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    client = await start_receiver(base_config(target.url, path))
    hook = await _register(emulator, client.url, ["batch.failed"])
    write_secrets(path, hook.new_signing_secret)
    await asyncio.sleep(0.5)
    sdk = emulator.client()
    await asyncio.to_thread(sdk.webhooks.ping, id=hook.id)
    for _ in range(100):
        _, pings = await client.get_json("/internal/pings")
        if pings["pings"]:
            break
        await asyncio.sleep(0.05)
    record = pings["pings"]["orders"]
    assert record["secret_index"] == 0
    remote = await asyncio.to_thread(sdk.webhooks.get, id=hook.id)
    assert any(
        matches_truncated(hook.new_signing_secret, s.truncated_secret)
        and s.truncated_secret.endswith(record["secret_fingerprint"][-4:])
        for s in remote.signing_secrets
    )
    assert target.requests == []


async def test_rotation_during_an_emulator_stream_fails_no_verification(
    emulator: Any, start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    client = await start_receiver(base_config(target.url, path))
    hook = await _register(emulator, client.url, ["batch.failed"])
    old = hook.new_signing_secret
    write_secrets(path, old)
    await asyncio.sleep(0.5)
    sdk = emulator.client()
    for i in range(30):
        if i == 10:
            rotated = await asyncio.to_thread(sdk.webhooks.rotate_signing_secret, id=hook.id)
            new = rotated.secret
        if i == 20:  # the operator writes the Secret a little later
            write_secrets(path, new, (old, datetime.now(UTC) + timedelta(hours=24)))
        await asyncio.to_thread(emulator.fire, "batch.failed")
        await asyncio.sleep(0.03)
    deliveries = await asyncio.to_thread(emulator.wait_for_deliveries, 30, webhook_id=hook.id)
    assert [d["state"] for d in deliveries] == ["delivered"] * 30
    assert (
        await client.metric(
            "gemini_receiver_deliveries_total", outcome="rejected", reason="bad_signature"
        )
        == 0
    )


async def test_emulator_dynamic_delivery_is_verified_against_its_jwks(
    emulator: Any, start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    key_text = dynamic_jobs.generate_key()
    (tmp_path / "job-key").write_text(key_text)
    config = base_config(target.url, None)
    config["dynamic"] = {
        "enabled": True,
        "audiences": [],
        "jwks_uri": emulator.base_url.rstrip("/") + JWKS_PATH,
        "job_key_file": str(tmp_path / "job-key"),
    }
    # The emulator uses the target URI as the audience; we learn our URL only after start.
    running_probe = await start_receiver(
        {**config, "dynamic": {**config["dynamic"], "audiences": ["x"]}}
    )
    url = running_probe.url
    await running_probe.running.stop(1)
    config["listen"] = {"host": "127.0.0.1", "port": running_probe.running.public_port}
    config["dynamic"]["audiences"] = [url]
    client = await start_receiver(config)
    await asyncio.to_thread(
        emulator.fire,
        "batch.succeeded",
        webhook_config={
            "uris": [client.url],
            "user_metadata": dynamic_jobs.sign({"team": "a"}, dynamic_jobs.decode_key(key_text)),
        },
    )
    await target.wait_for(1)
    forwarded = target.requests[0]
    assert forwarded.headers["X-Gemini-Source"] == "dynamic"
    assert b'"team":"a"' in forwarded.body.replace(b" ", b"")
