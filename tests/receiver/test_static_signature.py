"""The receiver's static signature is the `standardwebhooks` library's, byte for byte."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from gemini_webhook_receiver import static

_KEY = bytes(range(32))


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + base64.b64encode(_KEY).decode(),
        "whsec_" + base64.b64encode(_KEY[:31]).decode().rstrip("="),  # unpadded
        "whsec_" + base64.b64encode(b"k" * 64).decode(),  # longer than the hash's block
    ],
)
@pytest.mark.parametrize(
    ("msg_id", "timestamp", "body"),
    [
        ("msg_1", 1_764_000_000, b'{"type":"batch.succeeded"}'),
        ("msg_\u00e9\u4e2d", 0, '{"type":"caf\u00e9"}'.encode()),
        ("m", static.MAX_TIMESTAMP, b""),
    ],
)
def test_signature_matches_the_library(
    secret: str, msg_id: str, timestamp: int, body: bytes
) -> None:
    mac = static.keyed_mac(secret)
    expected = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)
    assert b"v1," + static.signature(mac, msg_id, timestamp, body) == expected.encode()
    # The keyed MAC is copied, never updated: the same delivery signs the same again.
    assert b"v1," + static.signature(mac, msg_id, timestamp, body) == expected.encode()


def test_an_empty_key_is_refused() -> None:
    with pytest.raises(ValueError):
        static.keyed_mac("whsec_")
