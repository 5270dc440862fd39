"""`kubectl gemini verify --headers FILE --body FILE NAME`: does a captured delivery verify
against the webhook's current signing secrets? With the receiver's own code
(`gemini_webhook_receiver.static`): the same secret set, comparison and reasons.

The headers file is what `curl -D FILE` or a proxy log writes (`Name: value` lines; a
request or status line and blank lines are skipped) or a JSON object of names to values.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from gemini_webhook_operator import receiver_names
from gemini_webhook_receiver import reasons, static
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.contracts.crd_receiver import parse_duration
from gemini_webhooks.contracts.delivery import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    signature_scheme,
)
from gemini_webhooks.contracts.receiver_config import DEFAULT_TOLERANCE_SECONDS
from gemini_webhooks.contracts.times import rfc3339
from gemini_webhooks.kubectl.cluster import JSON, PluginError, Session


class CaptureError(PluginError):
    """The captured headers or body cannot be read."""


def parse_headers(text: str) -> dict[str, str]:
    """Header names (lower-case) to values, from `Name: value` lines or a JSON object."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError as error:
            raise CaptureError(f"the headers file is not valid JSON: {error}") from None
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise CaptureError("the headers file's JSON must map header names to strings")
        return {str(k).lower(): v for k, v in document.items()}
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("HTTP/") or " HTTP/" in line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or " " in name.strip():
            raise CaptureError(f"the headers file, line {number}: expected `Name: value`")
        headers[name.strip().lower()] = value.strip()
    return headers


def read_capture(headers_file: str, body_file: str) -> tuple[dict[str, str], bytes]:
    try:
        headers_text = Path(headers_file).read_text(encoding="utf-8", errors="replace")
        body = Path(body_file).read_bytes()
    except OSError as error:
        raise CaptureError(f"cannot read {error.filename}: {error.strerror}") from None
    return parse_headers(headers_text), body


def _rejected(rejection: reasons.Rejection, **extra: object) -> JSON:
    return {"verified": False, "reason": rejection.reason, "why": rejection.message, **extra}


def check(
    held: contract.SigningSecrets,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> JSON:
    """The verdict on one captured delivery (pure). Never holds a secret: fingerprints."""
    msg_id = headers.get(HEADER_ID)
    raw_timestamp = headers.get(HEADER_TIMESTAMP)
    signature = headers.get(HEADER_SIGNATURE)
    if not msg_id or not raw_timestamp or not signature:
        return _rejected(reasons.MISSING_HEADERS)
    timestamp = static.parse_timestamp(raw_timestamp)
    if timestamp is None:
        return _rejected(reasons.MALFORMED_TIMESTAMP)
    scheme = signature_scheme(signature)
    if scheme is None:
        return _rejected(reasons.MALFORMED_SIGNATURE)
    if scheme == "jwt":
        return {
            "verified": False,
            "reason": "dynamic_delivery",
            "why": "a request-level (JWT-signed) delivery: it is verified against Google's "
            "JWKS, not the signing secrets; verify checks static deliveries",
        }
    try:
        body.decode()  # the receiver refuses a body that is not UTF-8 before verifying
    except UnicodeDecodeError:
        return _rejected(reasons.MALFORMED_BODY)
    secrets = static.SecretSet("static")
    secrets.replace(held)
    signed_at = rfc3339(datetime.fromtimestamp(timestamp, UTC), "auto")
    match = static.verify([secrets], msg_id, timestamp, signature, body, now)
    window = static.check_window(timestamp, now, tolerance)
    common: JSON = {
        "webhookId": msg_id,
        "signedAt": signed_at,
        "triedFingerprints": [s.fingerprint for s in secrets.secrets],
    }
    if isinstance(match, reasons.Rejection):
        return _rejected(match, **common)
    report: JSON = {
        "verified": True,
        "fingerprint": match.fingerprint,
        "secret": "current" if match.secret_index == 0 else "previous",
        **common,
    }
    if window is not None:
        report["note"] = (
            f"the signature is good, but a receiver would refuse it now as {window.reason} "
            f"({window.message}; window {tolerance} s)"
        )
    return report


def _tolerance(webhook: JSON) -> int:
    """The receiver's replay window for this webhook (`spec.receiver.replayTolerance`)."""
    value = ((webhook.get("spec") or {}).get("receiver") or {}).get("replayTolerance")
    try:
        return int(parse_duration(value).total_seconds()) if value else DEFAULT_TOLERANCE_SECONDS
    except ValueError:
        return DEFAULT_TOLERANCE_SECONDS


async def run(session: Session, name: str, headers: Mapping[str, str], body: bytes) -> JSON:
    webhook = await session.webhook(name)
    secret_name = receiver_names.signing_secret_name(webhook)
    secret = await session.get("v1", "Secret", secret_name)
    if secret is None:
        raise PluginError(f'the signing Secret "{secret_name}" of {name} does not exist')
    try:
        held = contract.decode_data(secret.get("data") or {})
    except contract.SecretFormatError as error:
        raise PluginError(f'the signing Secret "{secret_name}" is unreadable: {error}') from None
    report = check(held, headers, body, time.time(), _tolerance(webhook))
    return {"name": name, "namespace": session.namespace, **report}


def text(report: JSON) -> str:
    if report["verified"]:
        line = (
            f"verified: signed with the {report['secret']} secret {report['fingerprint']} "
            f"of {report['namespace']}/{report['name']} (webhook-id {report['webhookId']}, "
            f"signed at {report['signedAt']})"
        )
        return line + (f"\nnote: {report['note']}" if report.get("note") else "")
    tried = ", ".join(report.get("triedFingerprints") or []) or "none"
    return (
        f"not verified: {report['reason']} — {report['why']}\nsecrets tried (fingerprints): {tried}"
    )
