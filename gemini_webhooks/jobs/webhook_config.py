"""The `webhook_config` of a job whose events a GeminiWebhook's receiver will accept — pure.

    config={"webhook_config": webhook_config(resource, key, {"team": "finance"})}

in `client.batches.create(...)`: the URI is the receiver's (one of the audiences it
accepts), and `user_metadata` carries the MAC under the receiver's job key
(`contracts.dynamic_jobs`) that tells the receiver the job is ours.
`from_cluster` is the I/O edge that reads the resource and the key Secret.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gemini_webhooks.contracts import crd, dynamic_jobs
from gemini_webhooks.contracts.crd_receiver import CrdReceiverError, receiver_spec

JSON = dict[str, Any]
# (apiVersion, kind, namespace, name) -> the object, or None when it does not exist; the
# kind is `crd.KIND` or "Secret".
Get = Callable[[str, str, str, str], Awaitable[JSON | None]]


class WebhookConfigError(ValueError):
    """No `webhook_config` can be built; the message says what to do. Never key material."""


def receiver_uri(resource: Mapping[str, Any], uri: str | None = None) -> str:
    """Where Gemini is to send the job's events: `uri` if the receiver accepts it as an
    audience, else `status.url` if it does, else the first accepted audience."""
    name = (resource.get("metadata") or {}).get("name", "?")
    try:
        dynamic = receiver_spec(resource.get("spec") or {}).dynamic
    except CrdReceiverError as error:
        raise WebhookConfigError(str(error)) from None
    receiver = (resource.get("spec") or {}).get("receiver") or {}
    if not receiver.get("enabled") or not dynamic.enabled:
        raise WebhookConfigError(
            f"GeminiWebhook {name} does not accept dynamic webhooks: set "
            "spec.receiver.enabled and spec.receiver.dynamic.enabled"
        )
    audiences = list(dynamic.audiences)
    if uri is not None:
        if uri not in audiences:
            raise WebhookConfigError(
                f"{uri} is not in spec.receiver.dynamic.audiences of GeminiWebhook {name}; "
                "the receiver would refuse its events (wrong_audience)"
            )
        return uri
    status_url = (resource.get("status") or {}).get("url")
    if status_url in audiences:
        return str(status_url)
    return audiences[0]


def webhook_config(
    resource: Mapping[str, Any],
    key: bytes,
    user_metadata: Mapping[str, str],
    *,
    uri: str | None = None,
) -> JSON:
    """`{"uris": [...], "user_metadata": {...}}` for `config={"webhook_config": ...}`,
    the metadata signed with the receiver's job key `key`."""
    target = receiver_uri(resource, uri)
    try:
        signed = dynamic_jobs.sign(user_metadata, key)
    except dynamic_jobs.MetadataError as error:
        raise WebhookConfigError(str(error)) from None
    return {"uris": [target], "user_metadata": signed}


def key_from_secret(secret: Mapping[str, Any] | None, secret_name: str) -> bytes:
    """The job key held by the Secret (its `data`, base64 as the API returns it)."""
    if secret is None:
        raise WebhookConfigError(
            f"the Secret {secret_name} does not exist yet: the operator creates it once the "
            "GeminiWebhook with a dynamic receiver is reconciled"
        )
    raw = (secret.get("data") or {}).get(dynamic_jobs.SECRET_KEY)
    try:
        text = base64.b64decode(raw or "", validate=True).decode()
        return dynamic_jobs.decode_key(text)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise WebhookConfigError(
            f"the Secret {secret_name} holds no valid {dynamic_jobs.SECRET_KEY!r}"
        ) from None


async def from_cluster(
    get: Get,
    name: str,
    namespace: str,
    user_metadata: Mapping[str, str],
    *,
    uri: str | None = None,
) -> JSON:
    """Read the GeminiWebhook and its job-key Secret through `get`; the `webhook_config`."""
    resource = await get(crd.API_VERSION, crd.KIND, namespace, name)
    if resource is None:
        raise WebhookConfigError(f"GeminiWebhook {namespace}/{name} not found")
    receiver_uri(resource, uri)  # a resource without dynamic webhooks fails before the read
    secret_name = dynamic_jobs.job_key_secret_name(name)
    key = key_from_secret(await get("v1", "Secret", namespace, secret_name), secret_name)
    return webhook_config(resource, key, user_metadata, uri=uri)
