"""Static (HMAC) deliveries in inline mode (no Redis): verify, window, dedup, forward."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

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


async def test_valid_delivery_is_forwarded_with_idempotency_and_type_headers(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    event = envelope("batch.failed")
    status, answer, msg_id = await client.deliver([secret], event)
    assert (status, answer["status"]) == (200, "accepted")
    assert len(target.requests) == 1
    forwarded = target.requests[0]
    assert json.loads(forwarded.body) == event
    assert forwarded.headers["webhook-id"] == msg_id
    assert forwarded.headers["Idempotency-Key"] == msg_id
    assert forwarded.headers["X-Gemini-Event-Type"] == "batch.failed"
    assert forwarded.headers["X-Gemini-Source"] == "orders"


async def test_grace_period_secret_still_verifies(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    old = new_secret()
    write_secrets(path, new_secret(), (old, datetime.now(UTC) + timedelta(hours=24)))
    client = await start_receiver(base_config(target.url, path))
    status, _, _ = await client.deliver([old])
    assert status == 200


async def test_one_matching_signature_among_several_is_enough(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    status, _, _ = await client.deliver([new_secret(), secret, new_secret()])
    assert status == 200


async def test_wrong_secret_is_rejected_as_bad_signature(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, _ = secrets_file
    client = await start_receiver(base_config(target.url, path))
    status, answer, _ = await client.deliver([new_secret()])
    assert (status, answer["error"]) == (401, "bad_signature")
    assert target.requests == []
    assert (
        await client.metric(
            "gemini_receiver_deliveries_total", outcome="rejected", reason="bad_signature"
        )
        >= 1
    )


async def test_expired_grace_secret_is_reported_as_revoked(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    old = new_secret()
    write_secrets(path, new_secret(), (old, datetime.now(UTC) - timedelta(seconds=1)))
    client = await start_receiver(base_config(target.url, path))
    status, answer, _ = await client.deliver([old])
    assert (status, answer["error"]) == (401, "revoked_secret")
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="revoked_secret"
    )
    not_counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="bad_signature"
    )
    assert (counted, not_counted) == (1, 0)


async def test_secret_removed_by_rotation_is_reported_as_revoked(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, old = secrets_file
    client = await start_receiver(base_config(target.url, path))
    new = new_secret()
    write_secrets(path, new)  # revoked immediately
    await asyncio.sleep(0.6)
    status, answer, _ = await client.deliver([old])
    assert (status, answer["error"]) == (401, "revoked_secret")
    status, _, _ = await client.deliver([new])
    assert status == 200


async def test_old_timestamp_is_rejected_as_expired(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    status, answer, _ = await client.deliver([secret], timestamp=int(time.time()) - 301)
    assert (status, answer["error"]) == (400, "timestamp_expired")
    assert target.requests == []


async def test_future_timestamp_is_rejected_as_clock_skew(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    status, answer, _ = await client.deliver([secret], timestamp=int(time.time()) + 301)
    assert (status, answer["error"]) == (400, "clock_skew")
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="clock_skew"
    )
    not_counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="timestamp_expired"
    )
    assert (counted, not_counted) == (1, 0)


async def test_replay_window_is_configurable(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path, replay={"tolerance_seconds": 30}))
    status, answer, _ = await client.deliver([secret], timestamp=int(time.time()) - 60)
    assert (status, answer["error"]) == (400, "timestamp_expired")


async def test_duplicate_is_answered_2xx_and_not_forwarded_again(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    first = await client.post(body, headers)
    second = await client.post(body, headers)
    assert first == (200, {"status": "accepted"})
    assert second == (200, {"status": "duplicate"})
    assert len(target.requests) == 1


async def test_duplicate_arriving_while_the_first_copy_is_in_flight_is_answered_after_it(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    target.delay = 0.3
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    first = asyncio.create_task(client.post(body, headers))
    await asyncio.sleep(0.1)
    second = await client.post(body, headers)
    assert len(target.requests) == 1  # the duplicate's 2xx came after the delivery
    assert second == (200, {"status": "duplicate"})
    assert await first == (200, {"status": "accepted"})


async def test_duplicate_of_a_copy_whose_delivery_fails_is_not_acknowledged(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Gemini may retry while its first attempt is still being forwarded (it gave up
    waiting); a 2xx to that retry would end its retries although nothing was delivered."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    target.delay = 0.3
    target.fail_next = 1
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    first = asyncio.create_task(client.post(body, headers))
    await asyncio.sleep(0.1)
    assert (await client.post(body, headers))[0] == 503
    assert (await first)[0] == 503
    target.delay = 0
    assert await client.post(body, headers) == (200, {"status": "accepted"})
    assert target.ids() == [headers["webhook-id"]]


async def test_failed_forward_answers_503_and_the_retry_is_delivered(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    target.fail_next = 1
    body = json.dumps(envelope()).encode()
    headers = signed_headers([secret], body)
    assert (await client.post(body, headers))[0] == 503
    assert (await client.post(body, headers)) == (200, {"status": "accepted"})
    assert target.ids() == [headers["webhook-id"]]


async def test_inline_retries_within_the_deadline(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    config = base_config(target.url, path)
    config["forwarding"] = {"inline_attempts": 3, "backoff_initial_seconds": 0.01}
    client = await start_receiver(config)
    target.fail_next = 2
    status, _, msg_id = await client.deliver([secret])
    assert status == 200
    assert target.ids() == [msg_id]


async def test_unreachable_target_answers_503_within_the_deadline(
    start_receiver: StartReceiver, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    config = base_config("http://127.0.0.1:9/unreachable", path)
    config["forwarding"] = {"inline_deadline_seconds": 1.0, "inline_attempts": 10}
    client = await start_receiver(config)
    started = time.monotonic()
    status, _, _ = await client.deliver([secret])
    assert status == 503
    assert time.monotonic() - started < 2.0


async def test_ping_is_recorded_with_the_verifying_secret_and_not_forwarded(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    current, old = new_secret(), new_secret()
    write_secrets(path, current, (old, datetime.now(UTC) + timedelta(hours=1)))
    client = await start_receiver(base_config(target.url, path))
    status, answer, msg_id = await client.deliver([old], {"type": PING_EVENT_TYPE, "data": {}})
    assert (status, answer["status"]) == (200, "ping")
    assert target.requests == []
    status, pings = await client.get_json("/internal/pings")
    record = pings["pings"]["orders"]
    assert record["webhook_id"] == msg_id
    assert record["secret_index"] == 1
    assert record["secret_fingerprint"].endswith(old[-4:])
    assert old not in json.dumps(pings)


async def test_a_replayed_ping_is_a_duplicate_and_changes_no_ping_record(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """A captured ping sent again must not make the health check see a fresh delivery."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    body = json.dumps({"type": PING_EVENT_TYPE, "data": {}}).encode()
    headers = signed_headers([secret], body)
    assert await client.post(body, headers) == (200, {"status": "ping"})
    _, first = await client.get_json("/internal/pings")
    await asyncio.sleep(1.1)  # a refreshed record would show a later received_at
    assert await client.post(body, headers) == (200, {"status": "duplicate"})
    _, again = await client.get_json("/internal/pings")
    assert again == first
    counted = await client.metric("gemini_receiver_deliveries_total", outcome="ping", reason="ok")
    assert counted == 1


async def test_readyz_waits_for_secrets(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    client = await start_receiver(base_config(target.url, path))
    assert (await client.get_json("/readyz"))[0] == 503
    assert (await client.get_json("/healthz"))[0] == 200
    write_secrets(path, new_secret())
    await asyncio.sleep(0.6)
    assert (await client.get_json("/readyz"))[0] == 200


async def test_corrupt_secret_file_keeps_previous_secrets(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    path.write_text("{not json")
    await asyncio.sleep(0.6)
    status, _, _ = await client.deliver([secret])
    assert status == 200
    assert (
        await client.metric(
            "gemini_receiver_secret_reloads_total", webhook="orders", outcome="error"
        )
        >= 1
    )


async def test_a_secret_file_nested_100_000_deep_keeps_the_secrets_and_later_files_are_read(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Its RecursionError killed the file's poll task: no reload ever again."""
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    path.write_text("[" * 100_000 + "]" * 100_000)
    await asyncio.sleep(0.6)
    assert (await client.deliver([secret]))[0] == 200
    errors = await client.metric(
        "gemini_receiver_secret_reloads_total", webhook="orders", outcome="error"
    )
    assert errors == 1
    new = new_secret()
    write_secrets(path, new)
    await asyncio.sleep(0.6)
    assert (await client.deliver([new]))[0] == 200


async def test_rotation_mid_stream_has_zero_failed_verifications(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    """Gemini signs with every valid secret during a rotation; the receiver sees the new
    Secret at some point in the stream; no delivery may fail verification."""
    path, old = secrets_file
    client = await start_receiver(base_config(target.url, path))
    new = new_secret()
    statuses = []
    for i in range(60):
        if i == 20:
            # Gemini now holds both and signs with both; the Secret catches up later.
            signing = [new, old]
        elif i < 20:
            signing = [old]
        else:
            signing = [new, old]
        if i == 30:
            write_secrets(path, new, (old, datetime.now(UTC) + timedelta(hours=24)))
        status, _, _ = await client.deliver(signing)
        statuses.append(status)
        await asyncio.sleep(0.02)
    assert statuses == [200] * 60
    assert len(target.requests) == 60


async def test_metrics_healthz_and_pings_are_on_the_internal_port_only(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, _ = secrets_file
    client = await start_receiver(base_config(target.url, path))
    async with aiohttp.ClientSession() as session:
        for route in ("/metrics", "/internal/pings", "/readyz"):
            async with session.get(client.url.rstrip("/") + route) as response:
                assert response.status in (404, 405)
    assert (await client.get_json("/internal/pings"))[0] == 200


async def test_draining_receiver_is_unready_refuses_new_work_and_finishes_what_it_has(
    start_receiver: StartReceiver, target: RecordingTarget, secrets_file: tuple[Path, str]
) -> None:
    path, secret = secrets_file
    client = await start_receiver(base_config(target.url, path))
    assert (await client.get_json("/readyz"))[0] == 200
    target.delay = 0.5
    in_flight = asyncio.create_task(client.deliver([secret]))
    await asyncio.sleep(0.1)
    draining = asyncio.create_task(client.running.receiver.stop(drain_seconds=5))
    await asyncio.sleep(0.05)
    status, readiness = await client.get_json("/readyz")
    assert (status, readiness["checks"]["accepting"]) == (503, False)
    assert (await client.deliver([secret]))[0] == 503  # Gemini retries it elsewhere/later
    status, _, msg_id = await in_flight
    assert status == 200
    await draining
    assert target.ids() == [msg_id]


async def test_loaded_secrets_gauge_counts_the_secrets_in_force(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    write_secrets(path, new_secret(), (new_secret(), datetime.now(UTC) + timedelta(hours=1)))
    client = await start_receiver(base_config(target.url, path))
    assert await client.metric("gemini_receiver_loaded_secrets", webhook="orders") == 2
    write_secrets(
        path,
        new_secret(),
        (new_secret(), datetime.now(UTC) + timedelta(hours=1)),
        (new_secret(), datetime.now(UTC) - timedelta(seconds=1)),  # expired: not in force
    )
    await asyncio.sleep(0.6)
    assert await client.metric("gemini_receiver_loaded_secrets", webhook="orders") == 2
    assert (
        await client.metric("gemini_receiver_secret_reloads_total", webhook="orders", outcome="ok")
        == 1
    )


def _kubelet_write(directory: Path, current: str, generation: int) -> None:
    """A Secret volume update as kubelet's atomic writer does it: the files go into a new
    timestamped directory, then the `..data` symlink is swapped in one rename."""
    fresh = directory / f"..2026_11_30_00_00_{generation:02d}.000000001"
    fresh.mkdir()
    write_secrets(fresh / "signing-secrets.json", current)
    (directory / "..data_tmp").symlink_to(fresh.name)
    (directory / "..data_tmp").replace(directory / "..data")
    visible = directory / "signing-secrets.json"
    if not visible.is_symlink():
        visible.symlink_to("..data/signing-secrets.json")
    for old in directory.glob("..2026_*"):
        if old != fresh:
            (old / "signing-secrets.json").unlink()
            old.rmdir()


async def test_mounted_secret_directory_is_reloaded_when_kubelet_swaps_it(
    start_receiver: StartReceiver, target: RecordingTarget, tmp_path: Path
) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    old, new = new_secret(), new_secret()
    _kubelet_write(mount, old, 1)
    client = await start_receiver(base_config(target.url, mount))
    assert (await client.deliver([old]))[0] == 200
    _kubelet_write(mount, new, 2)
    changed_at = time.monotonic()
    while (await client.deliver([new]))[0] != 200:
        assert time.monotonic() - changed_at < 1.0, "swap not seen within 1 s"
        await asyncio.sleep(0.02)
    status, answer, _ = await client.deliver([old])
    assert (status, answer["error"]) == (401, "revoked_secret")
