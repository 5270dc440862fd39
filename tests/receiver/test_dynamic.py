"""Dynamic (JWT) deliveries: RS256 against our own JWKS server, and the attack catalogue."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gemini_webhook_receiver.dynamic import RefreshOutcome, unknown_kid
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
    start_app,
)
from .test_crash_recovery import ReceiverProcess


def _config(
    target: RecordingTarget, signer: Signer, secrets_path: Path | None = None
) -> dict[str, Any]:
    return base_config(
        target.url,
        secrets_path,
        dynamic={
            "enabled": True,
            "audiences": [AUDIENCE],
            "issuer": ISSUER,
            "jwks_uri": signer.jwks_url,
            "jwks_min_refresh_seconds": 60,
            "leeway_seconds": 5,
            # The JWT verification itself, whoever's job it is (test_foreign_jobs.py: the MAC)
            "accept_jobs_from_any_project": True,
        },
    )


async def _send(client: Client, token: str, msg_id: str, body: bytes) -> tuple[int, dict[str, Any]]:
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": token,
        "content-type": "application/json",
    }
    return await client.post(body, headers)


async def test_valid_token_is_forwarded_with_verified_claims(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    event = envelope("batch.succeeded", user_metadata={"team": "a"})
    token = signer.token(claims_for(event, "msg_dyn_1"))
    status, answer = await _send(client, token, "msg_dyn_1", json.dumps(event).encode())
    assert (status, answer["status"]) == (200, "accepted")
    forwarded = target.requests[0]
    assert json.loads(forwarded.body) == event
    assert forwarded.headers["X-Gemini-Source"] == "dynamic"
    claims = json.loads(forwarded.headers["X-Gemini-Verified-Claims"])
    assert claims["aud"] == AUDIENCE and claims["jti"] == "msg_dyn_1"


async def test_empty_body_forwards_the_envelope_from_the_claims(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    event = envelope("video.generated")
    status, _ = await _send(client, signer.token(claims_for(event, "m2")), "m2", b"")
    assert status == 200
    assert json.loads(target.requests[0].body) == event


async def test_static_and_dynamic_share_one_endpoint(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    secrets_file: tuple[Path, str],
) -> None:
    path, secret = secrets_file
    client = await start_receiver(_config(target, signer, path))
    assert (await client.deliver([secret]))[0] == 200
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "m3")), "m3", b""))[0] == 200
    assert [r.headers["X-Gemini-Signature-Scheme"] for r in target.requests] == ["hmac", "jwt"]


async def test_alg_none_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    event = envelope()
    token = jwt.encode(claims_for(event, "m"), None, algorithm="none", headers={"kid": signer.kid})  # type: ignore[arg-type]
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "unsupported_algorithm")
    assert target.requests == []


async def test_hs256_signed_with_the_public_key_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    public_pem = signer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    event = envelope()
    # PyJWT refuses to HMAC with a PEM key, as an attacker's tool would not: build it by hand.
    header = jwt.utils.base64url_encode(
        json.dumps({"alg": "HS256", "typ": "JWT", "kid": signer.kid}).encode()
    )
    payload = jwt.utils.base64url_encode(json.dumps(claims_for(event, "m")).encode())
    import hashlib
    import hmac

    mac = hmac.new(public_pem, header + b"." + payload, hashlib.sha256).digest()
    token = (header + b"." + payload + b"." + jwt.utils.base64url_encode(mac)).decode()
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "unsupported_algorithm")


async def test_token_signed_by_another_key_with_our_kid_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    event = envelope()
    status, answer = await _send(client, signer.token(claims_for(event, "m"), key=other), "m", b"")
    assert (status, answer["error"]) == (401, "invalid_token")


async def test_unknown_kid_while_the_refresh_is_rate_limited_gets_a_retryable_503(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """Forged kids cannot make us fetch more than once per interval; while we may not
    fetch, an unknown kid may be a real new key, so the answer asks for a retry."""
    client = await start_receiver(_config(target, signer))
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "ok")), "ok", b""))[0] == 200
    fetches = signer.fetches
    for i in range(5):
        token = signer.token(claims_for(event, f"m{i}"), kid=f"forged-{i}")
        status, answer = await _send(client, token, f"m{i}", b"")
        assert (status, answer["error"]) == (503, "jwks_rate_limited")
    assert signer.fetches == fetches
    counted = await client.metric(
        "gemini_receiver_deliveries_total", outcome="rejected", reason="jwks_rate_limited"
    )
    assert counted == 5
    assert target.ids() == ["ok"]


async def test_unknown_kid_after_a_completed_refresh_is_401(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["dynamic"]["jwks_min_refresh_seconds"] = 0.05
    client = await start_receiver(config)
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "ok")), "ok", b""))[0] == 200
    await asyncio.sleep(0.1)
    fetches = signer.fetches
    token = signer.token(claims_for(event, "m"), kid="forged")
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "unknown_kid")
    assert signer.fetches == fetches + 1


async def test_unknown_kids_arriving_together_share_one_refresh_and_are_all_401(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """The refresh the first one makes started after all of them arrived: it settles them
    all, although the others' own refreshes are rate-limited."""
    config = _config(target, signer)
    config["dynamic"]["jwks_min_refresh_seconds"] = 0.05
    client = await start_receiver(config)
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "ok")), "ok", b""))[0] == 200
    await asyncio.sleep(0.1)
    fetches = signer.fetches
    signer.delay = 0.5  # all of them arrive while the first one's refresh is under way
    tokens = [signer.token(claims_for(event, f"m{i}"), kid=f"forged-{i}") for i in range(4)]
    answers = await asyncio.gather(
        *(_send(client, token, f"m{i}", b"") for i, token in enumerate(tokens))
    )
    assert [(status, answer["error"]) for status, answer in answers] == [(401, "unknown_kid")] * 4
    assert signer.fetches == fetches + 1


async def test_a_new_signing_key_during_the_rate_limit_is_taken_on_the_retry(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """A forged kid spends the refresh just before Google's new key arrives: the new key's
    delivery gets 503 (Gemini retries), and the retry after the interval is accepted."""
    config = _config(target, signer)
    config["dynamic"]["jwks_min_refresh_seconds"] = 0.3
    client = await start_receiver(config)
    event = envelope()
    # Made before the clock matters: on a loaded machine a key takes longer than 0.3 s.
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (await _send(client, signer.token(claims_for(event, "ok")), "ok", b""))[0] == 200
    await asyncio.sleep(0.35)
    forged = signer.token(claims_for(event, "f"), kid="forged")
    assert (await _send(client, forged, "f", b""))[0] == 401  # a completed refresh: final
    signer.extra_keys.append(("test-key-2", rotated))
    token = signer.token(claims_for(event, "new"), kid="test-key-2", key=rotated)
    status, answer = await _send(client, token, "new", b"")
    assert (status, answer["error"]) == (503, "jwks_rate_limited")
    await asyncio.sleep(0.35)
    assert (await _send(client, token, "new", b""))[0] == 200
    assert target.ids() == ["ok", "new"]


async def test_unknown_kid_when_the_refresh_fails_gets_503_jwks_unavailable(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["dynamic"]["jwks_min_refresh_seconds"] = 0.05
    client = await start_receiver(config)
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "ok")), "ok", b""))[0] == 200
    await asyncio.sleep(0.1)
    signer.broken = True
    token = signer.token(claims_for(event, "m"), kid="test-key-2")
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (503, "jwks_unavailable")
    # the known key still works from the cache
    assert (await _send(client, signer.token(claims_for(event, "k")), "k", b""))[0] == 200


@pytest.mark.parametrize(
    ("have_keys", "refreshed_since_asked", "outcome", "reason"),
    [
        (False, False, "error", "jwks_unavailable"),
        (False, False, "rate_limited", "jwks_unavailable"),
        (False, True, "ok", "jwks_unavailable"),  # the key set came back empty
        (True, True, "ok", "unknown_kid"),
        (True, True, "rate_limited", "unknown_kid"),  # another token's refresh, since
        (True, True, "error", "unknown_kid"),
        (True, False, "rate_limited", "jwks_rate_limited"),
        (True, False, "error", "jwks_unavailable"),
    ],
)
def test_why_a_kid_is_unknown(
    have_keys: bool, refreshed_since_asked: bool, outcome: RefreshOutcome, reason: str
) -> None:
    assert unknown_kid(have_keys, refreshed_since_asked, outcome).reason == reason


async def test_new_kid_is_picked_up_by_a_refresh(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["dynamic"]["jwks_min_refresh_seconds"] = 0.01
    client = await start_receiver(config)
    event = envelope()
    assert (await _send(client, signer.token(claims_for(event, "a")), "a", b""))[0] == 200
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer.extra_keys.append(("test-key-2", rotated))
    time.sleep(0.02)
    token = signer.token(claims_for(event, "b"), kid="test-key-2", key=rotated)
    assert (await _send(client, token, "b", b""))[0] == 200


async def test_expired_token_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    now = int(time.time())
    token = signer.token(claims_for(envelope(), "m", iat=now - 120, exp=now - 60))
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "token_expired")


async def test_wrong_audience_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    token = signer.token(claims_for(envelope(), "m", aud="https://attacker.example/"))
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "wrong_audience")


async def test_wrong_issuer_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    token = signer.token(claims_for(envelope(), "m", iss="https://attacker.example"))
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "wrong_issuer")


async def test_body_swapped_under_a_valid_token_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    event = envelope("batch.failed")
    token = signer.token(claims_for(event, "m"))
    swapped = dict(event, type="batch.succeeded")
    status, answer = await _send(client, token, "m", json.dumps(swapped).encode())
    assert (status, answer["error"]) == (401, "body_mismatch")
    assert target.requests == []


async def test_token_for_another_webhook_id_is_rejected(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    token = signer.token(claims_for(envelope(), "original"))
    status, answer = await _send(client, token, "replayed-as-new", b"")
    assert (status, answer["error"]) == (401, "id_mismatch")


async def test_old_iat_is_rejected_as_replay(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    now = int(time.time())
    token = signer.token(claims_for(envelope(), "m", iat=now - 600, exp=now + 600))
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (400, "timestamp_expired")


async def test_jwt_rejected_when_dynamic_is_disabled(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    secrets_file: tuple[Path, str],
) -> None:
    client = await start_receiver(base_config(target.url, secrets_file[0]))
    status, answer = await _send(client, signer.token(claims_for(envelope(), "m")), "m", b"")
    assert (status, answer["error"]) == (401, "dynamic_disabled")


async def test_dynamic_ping_is_recorded_with_its_key_id(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    event = {"type": PING_EVENT_TYPE, "version": "v1", "data": {}}
    assert (await _send(client, signer.token(claims_for(event, "p")), "p", b""))[0] == 200
    _, pings = await client.get_json("/internal/pings")
    assert pings["pings"]["dynamic"]["secret_fingerprint"] == signer.kid
    assert target.requests == []


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


async def test_arbitrary_tokens_and_claims_never_get_a_5xx(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """Junk in every part of a token, and validly signed tokens with claims of any JSON
    shape (wrong types, huge numbers, NaN, missing fields): 4xx or 2xx, never 5xx."""
    client = await start_receiver(_config(target, signer))
    loop = asyncio.get_running_loop()
    problems: list[str] = []
    segment = st.binary(max_size=40).map(lambda b: jwt.utils.base64url_encode(b).decode())
    header_json = st.dictionaries(
        st.sampled_from(["alg", "kid", "typ", "jku", "x5u", "crit"]), _json_values, max_size=4
    ).map(lambda h: jwt.utils.base64url_encode(json.dumps(h).encode()).decode())

    # Found by earlier runs, kept: integers beyond 64 bits, non-finite numbers, a NaN `iat`.
    @example("signed", ("", "", ""), {}, {"n": 2**70}, b"")
    @example("signed", ("", "", ""), {}, {"n": 2**70}, json.dumps({"n": 2**70}))
    @example("signed", ("", "", ""), {"exp": float("inf")}, {}, b"")
    @example("signed", ("", "", ""), {"iat": float("nan")}, {}, b"")
    @example("signed", ("", "", ""), {"iss": None, "aud": {"a": 1}}, {}, b"\xff")
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        kind=st.sampled_from(["junk", "signed"]),
        parts=st.tuples(st.one_of(segment, header_json), segment, segment),
        overrides=st.dictionaries(
            st.sampled_from(["iss", "aud", "iat", "exp", "nbf", "jti", "type", "data"]),
            _json_values,
            max_size=4,
        ),
        extra=st.dictionaries(st.text(max_size=8), _json_values, max_size=3),
        body=st.one_of(st.just(b""), st.binary(max_size=60), _json_values.map(json.dumps)),
    )
    def check(
        kind: str,
        parts: tuple[str, str, str],
        overrides: dict[str, Any],
        extra: dict[str, Any],
        body: bytes | str,
    ) -> None:
        msg_id = "msg_fuzz"
        if kind == "signed":
            claims = {**extra, **claims_for(envelope(), msg_id), **overrides}
            # Signed as raw JWS bytes: PyJWT's own encode() refuses some malformed claims.
            payload = json.dumps(claims).encode()
            token = jwt.api_jws.encode(payload, signer.key, "RS256", headers={"kid": signer.kid})
        else:
            token = ".".join(parts)
        raw = body.encode() if isinstance(body, str) else body
        sent = asyncio.run_coroutine_threadsafe(_send(client, token, msg_id, raw), loop)
        status, _ = sent.result(10)
        if status >= 500:
            problems.append(f"{status} for {token!r} {raw!r}")

    await loop.run_in_executor(None, check)
    assert problems == []


async def test_token_pointing_at_another_key_set_is_not_fetched_from_there(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """`jku`/`x5u` in the header are ignored: keys come only from the pinned JWKS URI."""
    attacker_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker = Signer(key=attacker_key, kid="attacker-key")

    async def jwks(request: web.Request) -> web.Response:
        attacker.fetches += 1
        return web.json_response(attacker.jwks())

    app = web.Application()
    app.router.add_get("/jwks.json", jwks)
    runner, port = await start_app(app)
    try:
        client = await start_receiver(_config(target, signer))
        event = envelope()
        headers = {
            "kid": "attacker-key",
            "jku": f"http://127.0.0.1:{port}/jwks.json",
            "x5u": f"http://127.0.0.1:{port}/jwks.json",
        }
        token = jwt.encode(claims_for(event, "m"), attacker_key, "RS256", headers=headers)
        status, answer = await _send(client, token, "m", b"")
        assert (status, answer["error"]) == (401, "unknown_kid")
        assert attacker.fetches == 0
        assert target.requests == []
    finally:
        await runner.cleanup()


async def test_keys_are_cached_between_deliveries(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    for i in range(5):
        token = signer.token(claims_for(envelope(), f"c{i}"))
        assert (await _send(client, token, f"c{i}", b""))[0] == 200
    assert signer.fetches == 1
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="ok") == 1


async def test_expiry_within_the_leeway_is_accepted(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))  # leeway_seconds: 5
    now = int(time.time())
    token = signer.token(claims_for(envelope(), "m", iat=now - 60, exp=now - 2))
    assert (await _send(client, token, "m", b""))[0] == 200


async def test_token_issued_in_the_future_is_rejected_as_clock_skew(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))  # leeway_seconds: 5
    now = int(time.time())
    token = signer.token(claims_for(envelope(), "m", iat=now + 60, exp=now + 600))
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (400, "clock_skew")
    token = signer.token(claims_for(envelope(), "n", iat=now + 3, exp=now + 600))
    assert (await _send(client, token, "n", b""))[0] == 200  # within the leeway


async def test_key_set_older_than_its_max_age_is_fetched_again(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["dynamic"].update(jwks_max_age_seconds=0.2, jwks_min_refresh_seconds=0.01)
    client = await start_receiver(config)
    assert (await _send(client, signer.token(claims_for(envelope(), "a")), "a", b""))[0] == 200
    await asyncio.sleep(0.3)
    assert (await _send(client, signer.token(claims_for(envelope(), "b")), "b", b""))[0] == 200
    assert signer.fetches == 2


async def test_unreachable_key_set_answers_503_so_gemini_retries(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["dynamic"]["jwks_uri"] = "http://127.0.0.1:9/.well-known/jwks.json"
    client = await start_receiver(config)
    status, answer = await _send(client, signer.token(claims_for(envelope(), "m")), "m", b"")
    assert (status, answer["error"]) == (503, "jwks_unavailable")
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="error") == 1
    assert target.requests == []


# ---- the key set's body: read whole, bounded, whatever its framing -------------------


@dataclass
class ScriptedJwks:
    """A JWKS server that writes its answer as scripted: raw bytes, pauses (seconds)
    between them, then the close — framings and timings aiohttp's server would not send."""

    url: str = ""
    answer: list[bytes | float] = field(default_factory=list)
    fetches: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.fetches += 1
        try:
            await reader.readuntil(b"\r\n\r\n")
            for piece in self.answer:
                if isinstance(piece, float):
                    await writer.drain()
                    await asyncio.sleep(piece)
                else:
                    writer.write(piece)
            await writer.drain()
        finally:
            writer.close()


@pytest.fixture
async def scripted_jwks() -> AsyncIterator[ScriptedJwks]:
    jwks = ScriptedJwks()
    server = await asyncio.start_server(jwks.serve, "127.0.0.1", 0)
    jwks.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/jwks.json"
    yield jwks
    server.close()
    await server.wait_closed()


def _answer(body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in ("content-type: application/json", *headers))
    return b"HTTP/1.1 200 OK\r\n" + head.encode() + b"\r\n" + body


def _chunked(*chunks: bytes) -> list[bytes | float]:
    """Each chunk written 0.1 s after the one before."""
    pieces: list[bytes | float] = []
    for chunk in chunks:
        pieces += [b"%x\r\n%s\r\n" % (len(chunk), chunk), 0.1]
    return [*pieces, b"0\r\n\r\n"]


def _halves(raw: bytes) -> tuple[bytes, bytes]:
    return raw[: len(raw) // 2], raw[len(raw) // 2 :]


async def _accepts_a_token(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer, jwks_url: str
) -> Client:
    config = _config(target, signer)
    config["dynamic"]["jwks_uri"] = jwks_url
    client = await start_receiver(config)
    status, answer = await _send(client, signer.token(claims_for(envelope(), "m")), "m", b"")
    assert (status, answer.get("status")) == (200, "accepted"), answer
    return client


async def test_a_key_set_written_in_two_parts_300_ms_apart_is_read_whole(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    body = json.dumps(signer.jwks()).encode()
    first, second = _halves(_answer(body, f"content-length: {len(body)}"))
    scripted_jwks.answer = [first, 0.3, second]
    await _accepts_a_token(start_receiver, target, signer, scripted_jwks.url)


async def test_a_chunked_key_set_is_read_whole(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    head = _answer(b"", "transfer-encoding: chunked")
    scripted_jwks.answer = [head, *_chunked(*_halves(json.dumps(signer.jwks()).encode()))]
    await _accepts_a_token(start_receiver, target, signer, scripted_jwks.url)


async def test_a_key_set_ended_by_the_close_is_read_whole(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    first, second = _halves(json.dumps(signer.jwks()).encode())
    scripted_jwks.answer = [_answer(first, "connection: close"), 0.3, second]
    await _accepts_a_token(start_receiver, target, signer, scripted_jwks.url)


async def test_a_gzip_key_set_is_read_whole(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    body = gzip.compress(json.dumps(signer.jwks()).encode())
    first, second = _halves(_answer(body, "content-encoding: gzip", f"content-length: {len(body)}"))
    scripted_jwks.answer = [first, 0.3, second]
    await _accepts_a_token(start_receiver, target, signer, scripted_jwks.url)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_a_key_set_cut_short_by_the_close_is_a_failed_refresh(
    framing: str,
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    """What arrived before the close may even be a whole key set: it is not the body."""
    body = json.dumps(signer.jwks()).encode()
    if framing == "content-length":
        answer = _answer(body, f"content-length: {len(body) + 100}")
    else:  # no last chunk
        answer = _answer(b"", "transfer-encoding: chunked") + b"%x\r\n%s\r\n" % (len(body), body)
    scripted_jwks.answer = [answer]
    config = _config(target, signer)
    config["dynamic"]["jwks_uri"] = scripted_jwks.url
    client = await start_receiver(config)
    status, answer_body = await _send(client, signer.token(claims_for(envelope(), "m")), "m", b"")
    assert (status, answer_body["error"]) == (503, "jwks_unavailable")
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="error") == 1


def _padded_jwks(signer: Signer, size: int) -> bytes:
    """A valid key set, made `size` bytes long by an extra member."""
    raw = json.dumps({**signer.jwks(), "padding": ""}).encode()
    return raw[:-2] + b" " * (size - len(raw)) + raw[-2:]


@pytest.mark.parametrize(
    "framing", ["content-length", "chunked", "close", "gzip, content-length", "gzip, chunked"]
)
async def test_a_key_set_over_jwks_max_bytes_is_a_failed_refresh(
    framing: str,
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    """The bound holds for the body as decoded, however it is framed: a gzip body far
    under it on the wire is over it once decompressed."""
    body = _padded_jwks(signer, 4096)
    headers = ["content-encoding: gzip"] if framing.startswith("gzip") else []
    if headers:
        body = gzip.compress(body)
        assert len(body) < 2048
    if framing.endswith("content-length"):
        scripted_jwks.answer = [_answer(body, *headers, f"content-length: {len(body)}")]
    elif framing.endswith("chunked"):
        head = _answer(b"", *headers, "transfer-encoding: chunked")
        scripted_jwks.answer = [head, *_chunked(*_halves(body))]
    else:
        scripted_jwks.answer = [_answer(body, *headers, "connection: close")]
    config = _config(target, signer)
    config["dynamic"].update(jwks_uri=scripted_jwks.url, jwks_max_bytes=2048)
    client = await start_receiver(config)
    status, answer = await _send(client, signer.token(claims_for(envelope(), "m")), "m", b"")
    assert (status, answer["error"]) == (503, "jwks_unavailable")
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="error") == 1
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="ok") == 0


async def test_a_key_set_just_under_jwks_max_bytes_is_taken(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    body = _padded_jwks(signer, 2048)
    scripted_jwks.answer = [_answer(body, "connection: close")]
    config = _config(target, signer)
    config["dynamic"].update(jwks_uri=scripted_jwks.url, jwks_max_bytes=2048)
    client = await start_receiver(config)
    assert (await _send(client, signer.token(claims_for(envelope(), "m")), "m", b""))[0] == 200


# ---- malformed key sets: a counted failed refresh, the last good key set kept --------

_WEAK_KEY = rsa.generate_private_key(public_exponent=65537, key_size=1024)
_EC_KEY = ec.generate_private_key(ec.SECP256R1())
_DEEP = b"[" * 100_000 + b"]" * 100_000


def _rsa_jwk(key: rsa.RSAPrivateKey, kid: str, *, private: bool = False) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key if private else key.public_key()))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def _ec_jwk(kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(_EC_KEY.public_key()))
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def _with(signer: Signer, *extra: Any) -> bytes:
    """The signer's key set with `extra` entries after its good key."""
    return json.dumps({"keys": [*signer.jwks()["keys"], *extra]}).encode()


MALFORMED_KEY_SETS: dict[str, Callable[[Signer], bytes]] = {
    "not JSON": lambda s: b'{"keys": [',
    "not UTF-8": lambda s: b"\xff\xfe{}",
    "null": lambda s: b"null",
    "an array": lambda s: b"[]",
    "a string": lambda s: b'"keys"',
    "no keys": lambda s: b"{}",
    "keys not a list": lambda s: b'{"keys": {}}',
    "keys null": lambda s: b'{"keys": null}',
    "arrays 100,000 deep": lambda s: _DEEP,
    "keys 100,000 deep": lambda s: b'{"keys": ' + _DEEP + b"}",
    "a key that is not an object": lambda s: _with(s, 1),
    "a key that is a list": lambda s: _with(s, []),
    "a key without kty": lambda s: _with(s, {"kid": "k", "n": "AQAB", "e": "AQAB"}),
    "a key whose kty is not a string": lambda s: _with(s, {"kty": ["RSA"], "kid": "k"}),
    "an RSA key of 1024 bits": lambda s: _with(s, _rsa_jwk(_WEAK_KEY, "weak")),
    "an RSA key with a bad modulus": lambda s: _with(s, {"kty": "RSA", "kid": "k", "n": 1}),
    "a private RSA key": lambda s: _with(s, _rsa_jwk(s.key, "private", private=True)),
    "no RSA key": lambda s: json.dumps({"keys": [_ec_jwk("ec")]}).encode(),
}


def _close_delimited(body: bytes) -> list[bytes | float]:
    return [_answer(body, "connection: close")]


@pytest.mark.parametrize("what", list(MALFORMED_KEY_SETS))
async def test_a_malformed_key_set_is_a_counted_failed_refresh_that_keeps_the_last_good_one(
    what: str,
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    scripted_jwks.answer = _close_delimited(json.dumps(signer.jwks()).encode())
    config = _config(target, signer)
    config["dynamic"].update(jwks_uri=scripted_jwks.url, jwks_min_refresh_seconds=0.05)
    client = await start_receiver(config)
    assert (await _send(client, signer.token(claims_for(envelope(), "a")), "a", b""))[0] == 200
    scripted_jwks.answer = _close_delimited(MALFORMED_KEY_SETS[what](signer))
    await asyncio.sleep(0.1)
    token = signer.token(claims_for(envelope(), "b"), kid="weak", key=_WEAK_KEY)
    status, answer = await _send(client, token, "b", b"")
    assert (status, answer["error"]) == (503, "jwks_unavailable")
    assert scripted_jwks.fetches == 2
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="error") == 1
    assert await client.metric("gemini_receiver_deliveries_total", outcome="failed") == 0
    # the last good key set is still in use
    assert (await _send(client, signer.token(claims_for(envelope(), "c")), "c", b""))[0] == 200


async def test_a_token_signed_by_a_1024_bit_key_of_the_key_set_is_never_accepted(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    weak_only = json.dumps({"keys": [_rsa_jwk(_WEAK_KEY, "weak")]}).encode()
    scripted_jwks.answer = _close_delimited(weak_only)
    config = _config(target, signer)
    config["dynamic"]["jwks_uri"] = scripted_jwks.url
    client = await start_receiver(config)
    token = signer.token(claims_for(envelope(), "m"), kid="weak", key=_WEAK_KEY)
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (503, "jwks_unavailable")
    assert target.requests == []


async def test_keys_of_other_types_are_not_used_and_are_no_error(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    scripted_jwks: ScriptedJwks,
) -> None:
    other = {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}
    scripted_jwks.answer = _close_delimited(_with(signer, _ec_jwk("ec"), other))
    config = _config(target, signer)
    config["dynamic"].update(jwks_uri=scripted_jwks.url, jwks_min_refresh_seconds=0.05)
    client = await start_receiver(config)
    assert (await _send(client, signer.token(claims_for(envelope(), "a")), "a", b""))[0] == 200
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="ok") == 1
    assert await client.metric("gemini_receiver_jwks_refreshes_total", outcome="error") == 0
    await asyncio.sleep(0.1)
    es256 = jwt.encode(claims_for(envelope(), "b"), _EC_KEY, "ES256", headers={"kid": "ec"})
    assert (await _send(client, es256, "b", b""))[1]["error"] == "unsupported_algorithm"
    rs256_naming_ec = signer.token(claims_for(envelope(), "c"), kid="ec")
    assert (await _send(client, rs256_naming_ec, "c", b""))[1]["error"] == "unknown_kid"


async def test_the_receiver_process_logs_only_json_lines_when_the_key_set_has_a_weak_key(
    target: RecordingTarget, signer: Signer, scripted_jwks: ScriptedJwks, tmp_path: Path
) -> None:
    """Nothing (PyJWT's InsecureKeyLengthWarning among others) reaches stderr as text."""
    scripted_jwks.answer = _close_delimited(_with(signer, _rsa_jwk(_WEAK_KEY, "weak")))
    config = _config(target, signer)
    config["dynamic"].update(jwks_uri=scripted_jwks.url, jwks_min_refresh_seconds=0.05)
    config["logging"] = {"level": "DEBUG", "format": "json"}
    config_file = tmp_path / "receiver.json"
    config_file.write_text(json.dumps(config))
    receiver = ReceiverProcess(config_file, tmp_path / "receiver.log")
    try:
        await receiver.wait_listening()
        url = f"http://127.0.0.1:{receiver.port}/"
        async with aiohttp.ClientSession() as session:
            for kid, key in (("weak", _WEAK_KEY), (signer.kid, signer.key)):
                await asyncio.sleep(0.1)  # past jwks_min_refresh_seconds: each one refreshes
                token = signer.token(claims_for(envelope(), kid), kid=kid, key=key)
                headers = {
                    "webhook-id": kid,
                    "webhook-timestamp": str(int(time.time())),
                    "webhook-signature": token,
                }
                async with session.post(url, headers=headers) as response:
                    assert response.status == 503
                    assert (await response.json())["error"] == "jwks_unavailable"
        receiver.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(receiver.process.wait, 10) == 0
    finally:
        receiver.kill()
    lines = receiver.log_file.read_text().splitlines()
    assert any("jwks refresh failed" in line for line in lines)
    assert all(isinstance(json.loads(line), dict) for line in lines)


# ---- deep JSON and NumericDate types: 4xx with a reason, never a 503 -----------------


def _b64(raw: bytes) -> str:
    return jwt.utils.base64url_encode(raw).decode()


async def _no_failure_and_no_critical_line(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    assert await client.metric("gemini_receiver_deliveries_total", outcome="failed") == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.CRITICAL] == []


async def test_a_body_nested_100_000_deep_under_a_valid_token_is_body_mismatch(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The body is not signed: it is compared with the claims, after parsing."""
    client = await start_receiver(_config(target, signer))
    token = signer.token(claims_for(envelope(), "m"))
    status, answer = await _send(client, token, "m", _DEEP)
    assert (status, answer["error"]) == (401, "body_mismatch")
    await _no_failure_and_no_critical_line(client, caplog)


async def test_a_body_nested_deeply_in_utf_16_is_body_mismatch(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The standard library's decoder takes UTF-16; escaped quotes there must not hide
    brackets from the depth check."""
    client = await start_receiver(_config(target, signer))
    token = signer.token(claims_for(envelope(), "m"))
    body = ('["\\"", ' + "[" * 20_000 + '"\\""' + "]" * 20_001).encode("utf-16-le")
    status, answer = await _send(client, token, "m", body)
    assert (status, answer["error"]) == (401, "body_mismatch")
    await _no_failure_and_no_critical_line(client, caplog)


async def test_a_token_whose_header_is_nested_10_000_deep_is_invalid_token(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """10,000 levels: as deep as a request head's 32 KiB allows, ten times the
    interpreter's recursion limit."""
    client = await start_receiver(_config(target, signer))
    header = b'{"alg": "RS256", "kid": "test-key-1", "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    claims = json.dumps(claims_for(envelope(), "m")).encode()
    token = f"{_b64(header)}.{_b64(claims)}.{_b64(b'signature')}"
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "invalid_token")
    await _no_failure_and_no_critical_line(client, caplog)


async def test_a_signed_token_whose_claims_are_nested_10_000_deep_is_invalid_token(
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = await start_receiver(_config(target, signer))
    claims = json.dumps(claims_for(envelope(), "m")).encode()
    deep = claims[:-1] + b', "x": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    token = jwt.api_jws.encode(deep, signer.key, "RS256", headers={"kid": signer.kid})
    status, answer = await _send(client, token, "m", b"")
    assert (status, answer["error"]) == (401, "invalid_token")
    await _no_failure_and_no_critical_line(client, caplog)


async def test_claims_nested_256_deep_are_accepted(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    """The depth limit is far above any real envelope: a user_metadata value 250 deep."""
    client = await start_receiver(_config(target, signer))
    event = envelope(user_metadata={"deep": json.loads("[" * 250 + "]" * 250)})
    token = signer.token(claims_for(event, "m"))
    assert (await _send(client, token, "m", json.dumps(event).encode()))[0] == 200


def _signed_with(signer: Signer, msg_id: str, **claims: Any) -> str:
    """Signed as raw JWS bytes: PyJWT's own encode() may convert or refuse claims."""
    payload = json.dumps(claims_for(envelope(), msg_id, **claims)).encode()
    return jwt.api_jws.encode(payload, signer.key, "RS256", headers={"kid": signer.kid})


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("kind", ["numeric string", "boolean"])
async def test_a_numeric_date_that_is_not_a_json_number_is_invalid_token(
    claim: str,
    kind: str,
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
) -> None:
    """RFC 7519 §2: a NumericDate is a JSON number. A valid time as a string, or true
    (which int() makes 1), is refused — even an expired `exp` is not token_expired."""
    client = await start_receiver(_config(target, signer))
    now = int(time.time())
    valid = {"exp": now + 300, "nbf": now - 10, "iat": now}[claim]
    value: Any = str(valid) if kind == "numeric string" else True
    status, answer = await _send(client, _signed_with(signer, "m", **{claim: value}), "m", b"")
    assert (status, answer["error"]) == (401, "invalid_token")
    assert target.requests == []


async def test_numeric_dates_may_be_fractional(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    client = await start_receiver(_config(target, signer))
    now = time.time()
    token = _signed_with(signer, "m", iat=now, nbf=now - 1.5, exp=now + 300.25)
    assert (await _send(client, token, "m", b""))[0] == 200


def _with_raw_claim(signer: Signer, msg_id: str, literal: str) -> str:
    """A token whose claims carry `"n": <literal>`, written as is."""
    claims = json.dumps(claims_for(envelope(), msg_id))[:-1] + f', "n": {literal}}}'
    return jwt.api_jws.encode(claims.encode(), signer.key, "RS256", headers={"kid": signer.kid})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "1" + "0" * 400])
async def test_a_claim_number_that_is_not_finite_or_beyond_a_double_is_invalid_token(
    literal: str,
    start_receiver: StartReceiver,
    target: RecordingTarget,
    signer: Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 8259 §6. Before: NaN and 1e400 were forwarded as null (not what was signed), and
    the long integer, sent to a CloudEvents target, was 503 unavailable with a CRITICAL line
    (orjson cannot read it back), every retry for 24 hours."""
    config = _config(target, signer)
    config["default_route"] = {"targets": [{"url": target.url, "format": "cloudevents"}]}
    client = await start_receiver(config)
    status, answer = await _send(client, _with_raw_claim(signer, "m", literal), "m", b"")
    assert (status, answer["error"]) == (401, "invalid_token")
    await _no_failure_and_no_critical_line(client, caplog)
    assert target.requests == []


async def test_an_integer_beyond_64_bits_goes_to_a_cloudevents_target(
    start_receiver: StartReceiver, target: RecordingTarget, signer: Signer
) -> None:
    config = _config(target, signer)
    config["default_route"] = {"targets": [{"url": target.url, "format": "cloudevents"}]}
    client = await start_receiver(config)
    status, _ = await _send(client, _with_raw_claim(signer, "m", str(2**70)), "m", b"")
    assert status == 200
    assert [r.headers["ce-id"] for r in target.requests] == ["m"]
