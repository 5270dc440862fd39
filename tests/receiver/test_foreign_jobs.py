"""Dynamic webhooks for our own jobs only: a valid JWT is not enough, the job's
`user_metadata` must carry a MAC under this receiver's job key."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from gemini_webhook_receiver.logs import JsonFormatter
from gemini_webhooks.contracts import dynamic_jobs
from gemini_webhooks.contracts.delivery import PING_EVENT_TYPE

from .conftest import (
    AUDIENCE,
    ISSUER,
    Client,
    RecordingTarget,
    Signer,
    StartReceiver,
    base_config,
    claims_for,
    envelope,
)

KEY_TEXT = dynamic_jobs.generate_key()
KEY = dynamic_jobs.decode_key(KEY_TEXT)
OTHER_KEY = dynamic_jobs.decode_key(dynamic_jobs.generate_key())


def _config(
    target: RecordingTarget, signer: Signer, tmp_path: Path, **dynamic: Any
) -> dict[str, Any]:
    key_file = tmp_path / "job-key"
    key_file.write_text(KEY_TEXT + "\n")  # as a mounted Secret may end
    return base_config(
        target.url,
        None,
        dynamic={
            "enabled": True,
            "audiences": [AUDIENCE],
            "issuer": ISSUER,
            "jwks_uri": signer.jwks_url,
            "job_key_file": str(key_file),
            **dynamic,
        },
        routes=[
            {
                "name": "finance",
                "match": {"user_metadata": {"team": "finance"}},
                "targets": [{"url": target.url + "/finance"}],
            }
        ],
    )


async def _send(client: Client, signer: Signer, event: dict[str, Any], msg_id: str) -> Any:
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": signer.token(claims_for(event, msg_id)),
        "content-type": "application/json",
    }
    return await client.post(json.dumps(event).encode(), headers)


async def test_our_job_is_accepted_and_routed_on_its_metadata(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer, tmp_path: Path
) -> None:
    client = await start_receiver(_config(target, signer, tmp_path))
    metadata = dynamic_jobs.sign({"team": "finance"}, KEY)
    status, answer = await _send(client, signer, envelope(user_metadata=metadata), "ours")
    assert (status, answer["status"]) == (200, "accepted")
    assert target.requests[0].path == "/events/finance"
    assert json.loads(target.requests[0].body)["user_metadata"] == metadata


FOREIGN = {
    "no_metadata": None,
    "no_mac": {"team": "finance"},
    "mac_under_another_key": dynamic_jobs.sign({"team": "finance"}, OTHER_KEY),
    "metadata_changed_after_signing": {
        **dynamic_jobs.sign({"team": "marketing"}, KEY),
        "team": "finance",
    },
    "non_string_value_added": {**dynamic_jobs.sign({"team": "finance"}, KEY), "n": 1},
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
async def test_a_foreign_job_is_refused_counted_and_not_forwarded(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    tmp_path: Path,
    case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start_receiver(_config(target, signer, tmp_path))
    metadata = FOREIGN[case]
    event = envelope() if metadata is None else envelope(user_metadata=metadata)
    with caplog.at_level(logging.DEBUG):
        status, answer = await _send(client, signer, event, f"foreign-{case}")
    assert (status, answer["error"]) == (403, "foreign_job")
    assert target.requests == []
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="foreign_job"
    )
    assert counted == 1
    logged = [
        JsonFormatter().format(r) for r in caplog.records if r.name == "gemini_webhook_receiver"
    ]
    assert any('"reason":"foreign_job"' in line for line in logged)
    assert not any("finance" in line or "marketing" in line for line in logged)


async def test_a_foreign_ping_is_refused_and_not_recorded(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer, tmp_path: Path
) -> None:
    client = await start_receiver(_config(target, signer, tmp_path))
    ping = {"type": PING_EVENT_TYPE, "version": "v1", "data": {}}
    status, answer = await _send(client, signer, ping, "foreign-ping")
    assert (status, answer["error"]) == (403, "foreign_job")
    assert (await client.get_json("/internal/pings"))[1]["pings"] == {}
    signed = {**ping, "user_metadata": dynamic_jobs.sign({}, KEY)}
    assert (await _send(client, signer, signed, "our-ping"))[0] == 200
    assert "dynamic" in (await client.get_json("/internal/pings"))[1]["pings"]


async def test_the_opt_out_accepts_any_projects_jobs(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer, tmp_path: Path
) -> None:
    config = _config(target, signer, tmp_path, accept_jobs_from_any_project=True)
    del config["dynamic"]["job_key_file"]
    client = await start_receiver(config)
    event = envelope(user_metadata={"team": "finance"})
    assert (await _send(client, signer, event, "anyone"))[0] == 200
    assert target.requests[0].path == "/events/finance"


async def test_an_unreadable_job_key_stops_start_up_without_showing_it(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer, tmp_path: Path
) -> None:
    from gemini_webhook_receiver.job_origin import JobKeyUnavailable

    config = _config(target, signer, tmp_path)
    (tmp_path / "job-key").write_text("too-short")
    with pytest.raises(JobKeyUnavailable, match="job_key_file") as caught:
        await start_receiver(config)
    assert "too-short" not in str(caught.value)
    (tmp_path / "job-key").unlink()
    with pytest.raises(JobKeyUnavailable, match="cannot read"):
        await start_receiver(config)
