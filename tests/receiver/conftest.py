"""Helpers for receiver tests: a target that records what it gets, signing, secrets files,
an in-process receiver, and a JWKS server with our own RSA keys."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets as pysecrets
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from standardwebhooks.webhooks import Webhook

from gemini_webhook_receiver.app import Running, serve
from gemini_webhooks.contracts import receiver_config as rc
from gemini_webhooks.contracts import signing_secret as fmt


def new_secret() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode()


def envelope(event_type: str = "batch.succeeded", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": event_type,
        "version": "v1",
        "timestamp": "2026-11-25T12:00:00Z",
        "data": {"id": "batches/" + pysecrets.token_hex(4), "output_file_uri": "gs://b/o.jsonl"},
    }
    body.update(extra)
    return body


def signed_headers(
    secrets: list[str], body: bytes, msg_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    msg_id = msg_id or "msg_" + pysecrets.token_hex(8)
    ts = int(time.time()) if timestamp is None else timestamp
    at = datetime.fromtimestamp(ts, tz=UTC)
    signature = " ".join(Webhook(s).sign(msg_id, at, body.decode()) for s in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def write_secrets(path: Path, current: str, *older: tuple[str, datetime | None]) -> None:
    now = datetime.now(UTC)
    items = [fmt.SigningSecret(current, created_at=now)]
    items += [
        fmt.SigningSecret(s, created_at=now - timedelta(days=1), expire_time=e) for s, e in older
    ]
    data = fmt.encode(fmt.SigningSecrets(webhook_id="wh_test", secrets=tuple(items)))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(data[fmt.KEY_SECRETS])
    tmp.replace(path)


@dataclass
class Received:
    headers: Mapping[str, str]
    body: bytes
    path: str = ""


@dataclass
class RecordingTarget:
    """A test double for a forwarding target: records requests, can fail on demand."""

    url: str = ""
    requests: list[Received] = field(default_factory=list)
    fail_next: int = 0
    fail_always: bool = False
    delay: float = 0.0

    def ids(self) -> list[str]:
        return [r.headers["webhook-id"] for r in self.requests]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail_always or self.fail_next > 0:
            self.fail_next = max(self.fail_next - 1, 0)
            return web.Response(status=500)
        self.requests.append(Received(request.headers.copy(), body, request.path))
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} requests, got {len(self.requests)}")
            await asyncio.sleep(0.02)


async def start_app(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def start_target(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """An HTTP server answering every POST with `handle`; its runner and an URL of it."""
    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner, port = await start_app(app)
    return runner, f"http://127.0.0.1:{port}/events"


async def listening(process: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The `receiver listening` log line (JSON) of a receiver process logging to `log` at
    INFO, once it is written (bounded wait; fails if the process exits first)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        for line in log.read_text().splitlines():
            if '"receiver listening"' in line:
                record: dict[str, Any] = json.loads(line)
                return record
        await asyncio.sleep(0.05)
    raise AssertionError("receiver did not start: " + log.read_text())


@pytest.fixture
async def target() -> AsyncIterator[RecordingTarget]:
    recorder = RecordingTarget()
    runner, recorder.url = await start_target(recorder.handle)
    yield recorder
    await runner.cleanup()


@pytest.fixture
def secrets_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "signing-secrets.json"
    secret = new_secret()
    write_secrets(path, secret)
    return path, secret


def base_config(target_url: str, secrets_path: Path | None, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "listen": {"host": "127.0.0.1", "port": 0},
        "internal": {"host": "127.0.0.1", "port": 0},
        "default_route": {"targets": [{"url": target_url}]},
        "forwarding": {"timeout_seconds": 2, "inline_attempts": 1, "backoff_initial_seconds": 0.05},
        "logging": {"level": "WARNING"},
    }
    if secrets_path is not None:
        config["static_webhooks"] = [
            {"name": "orders", "secrets": {"file": {"path": str(secrets_path)}}}
        ]
    for key, value in overrides.items():
        config[key] = value
    return config


@dataclass
class Client:
    running: Running
    session: aiohttp.ClientSession
    baseline: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.public_port}/"

    @property
    def internal(self) -> str:
        return f"http://127.0.0.1:{self.running.internal_port}"

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        async with self.session.post(self.url, data=body, headers=headers) as response:
            raw = await response.read()
            return response.status, json.loads(raw) if raw else {}

    async def deliver(
        self, secrets: list[str], event: dict[str, Any] | None = None, **kw: Any
    ) -> tuple[int, dict[str, Any], str]:
        body = json.dumps(event or envelope()).encode()
        headers = signed_headers(secrets, body, **kw)
        status, answer = await self.post(body, headers)
        return status, answer, headers["webhook-id"]

    async def get_json(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.internal + path) as response:
            return response.status, await response.json()

    async def scrape(self) -> dict[tuple[str, str], float]:
        async with self.session.get(self.internal + "/metrics") as response:
            text = await response.text()
        values = {}
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            metric, _, value = line.rpartition(" ")
            name, _, rest = metric.partition("{")
            labels = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            values[(name, labels)] = float(value)
        return values

    async def metric(self, name: str, **labels: str) -> float:
        """A gauge's value, or how much a counter grew since this receiver started
        (metrics are process-wide, and other tests' receivers count too)."""
        key = (name, ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())))
        value = (await self.scrape()).get(key, 0.0)
        if name.endswith("_total"):
            value -= self.baseline.get(key, 0.0)
        return value


StartReceiver = Callable[[dict[str, Any]], Awaitable[Client]]


@pytest.fixture
async def start_receiver() -> AsyncIterator[StartReceiver]:
    started: list[Client] = []

    async def start(config: dict[str, Any]) -> Client:
        running = await serve(rc.from_dict(config), drain_seconds=2)
        client = Client(running, aiohttp.ClientSession())
        started.append(client)
        client.baseline = await client.scrape()
        return client

    yield start
    for client in started:
        await client.session.close()
        await client.running.stop(2)


# ---- JWKS and tokens -----------------------------------------------------------------


@dataclass
class Signer:
    """Our own stand-in for Google's key pair: signs tokens, serves the JWKS."""

    key: rsa.RSAPrivateKey
    kid: str
    jwks_url: str = ""
    fetches: int = 0
    delay: float = 0.0  # before the key set is served
    broken: bool = False  # the key set's URL answers 500
    extra_keys: list[tuple[str, rsa.RSAPrivateKey]] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in [(self.kid, self.key), *self.extra_keys]:
            jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
            jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
            keys.append(jwk)
        return {"keys": keys}

    def token(
        self,
        claims: dict[str, Any],
        *,
        kid: str | None = None,
        key: Any = None,
        algorithm: str = "RS256",
    ) -> str:
        return jwt.encode(
            claims, key or self.key, algorithm=algorithm, headers={"kid": kid or self.kid}
        )


AUDIENCE = "https://receiver.example.test/"
ISSUER = "https://generativelanguage.googleapis.com"


def claims_for(event: dict[str, Any], msg_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {**event, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": msg_id}
    claims.update(overrides)
    return claims


_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def signer() -> AsyncIterator[Signer]:
    signer = Signer(key=_KEY, kid="test-key-1")

    async def jwks(request: web.Request) -> web.Response:
        signer.fetches += 1
        await asyncio.sleep(signer.delay)
        if signer.broken:
            return web.Response(status=500)
        return web.json_response(signer.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    runner, port = await start_app(app)
    signer.jwks_url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
    yield signer
    await runner.cleanup()
