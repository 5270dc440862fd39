from __future__ import annotations

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from gemini_webhooks.contracts.delivery import signature_scheme


def test_standard_webhooks_signature_is_recognised_as_hmac() -> None:
    hook = Webhook("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    from datetime import UTC, datetime

    header = hook.sign("msg_1", datetime.now(UTC), "{}")
    assert signature_scheme(header) == "hmac"
    assert signature_scheme(f"{header} {header}") == "hmac"


def test_rs256_jwt_is_recognised_as_jwt() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode({"a": 1}, key, algorithm="RS256", headers={"kid": "k1"})
    assert signature_scheme(token) == "jwt"


@pytest.mark.parametrize("header", ["", "garbage", "v1", "a.b", "v1,abc def"])
def test_malformed_headers_have_no_scheme(header: str) -> None:
    assert signature_scheme(header) is None


def _entry_is_versioned(entry: str) -> bool:
    """`v<digits>[a-z]*,<non-space>` for one entry, in plain Python."""
    head, comma, rest = entry.partition(",")
    if not comma or not rest or any(c.isspace() for c in rest) or not head.startswith("v"):
        return False
    digits = head[1:].rstrip("abcdefghijklmnopqrstuvwxyz")
    return digits.isascii() and digits.isdigit()


@given(st.text(alphabet="v12,ab.= \t/+xz", max_size=30))
def test_signature_lists_are_recognised_by_the_per_entry_rule(value: str) -> None:
    """The one-regex check accepts exactly the non-empty space-separated lists of
    versioned entries (whatever is not a JWT shape)."""
    if signature_scheme(value) == "jwt":
        return
    entries = [e for e in value.strip().split(" ") if e]
    expected = bool(entries) and all(_entry_is_versioned(e) for e in entries)
    assert (signature_scheme(value) == "hmac") == expected, value
