"""`kubectl gemini status` writes a signing secret's times as every component does: RFC 3339
in UTC with a `Z`, whatever offset the Secret was written with."""

from __future__ import annotations

import base64
import json

from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.kubectl.status import fingerprints


def _secret(created_at: str, expire_time: str | None) -> dict[str, object]:
    document = {
        "version": contract.FORMAT_VERSION,
        "webhookId": "wh-1",
        "secrets": [
            {"secret": "whsec_" + "A" * 32, "createdAt": created_at, "expireTime": expire_time}
        ],
    }
    raw = json.dumps(document).encode()
    return {"data": {contract.KEY_SECRETS: base64.b64encode(raw).decode()}}


def test_times_written_with_an_offset_are_shown_in_utc_with_a_z() -> None:
    shown, problem = fingerprints(
        _secret("2026-12-06T14:30:45+02:00", "2026-12-06T20:00:00.250000+05:30")
    )
    assert problem is None
    [held] = shown
    assert held["createdAt"] == "2026-12-06T12:30:45Z"
    assert held["expireTime"] == "2026-12-06T14:30:00.250000Z"


def test_a_secret_without_an_expiry_shows_none() -> None:
    [held], _ = fingerprints(_secret("2026-12-06T12:30:45Z", None))
    assert (held["createdAt"], held["expireTime"]) == ("2026-12-06T12:30:45Z", None)
