"""The client helper: a `webhook_config` the receiver accepts, built from the resource."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from gemini_webhooks.contracts import dynamic_jobs
from gemini_webhooks.jobs.webhook_config import (
    WebhookConfigError,
    from_cluster,
    key_from_secret,
    webhook_config,
)

KEY_TEXT = dynamic_jobs.generate_key()
KEY = dynamic_jobs.decode_key(KEY_TEXT)
URL = "http://orders-receiver.team-a.svc.cluster.local:80/"


def resource(audiences: list[str] | None = None, status_url: str | None = URL) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders", "namespace": "team-a"},
        "spec": {
            "receiver": {
                "enabled": True,
                "dynamic": {"enabled": True, "audiences": audiences or [URL]},
            }
        },
        "status": {"url": status_url} if status_url else {},
    }


def test_the_config_names_the_receiver_and_signs_the_metadata() -> None:
    config = webhook_config(resource(), KEY, {"team": "finance"})
    assert config["uris"] == [URL]
    assert config["user_metadata"]["team"] == "finance"
    assert dynamic_jobs.verify(config["user_metadata"], KEY)


def test_the_receiver_url_is_preferred_when_it_is_an_audience() -> None:
    public = "https://hooks.example.com/gemini"
    assert webhook_config(resource([public, URL]), KEY, {})["uris"] == [URL]
    assert webhook_config(resource([public]), KEY, {})["uris"] == [public]
    assert webhook_config(resource([URL, public]), KEY, {}, uri=public)["uris"] == [public]


def test_a_uri_the_receiver_would_refuse_is_an_error() -> None:
    with pytest.raises(WebhookConfigError, match="wrong_audience"):
        webhook_config(resource(), KEY, {}, uri="https://elsewhere.example/")


def test_a_resource_without_dynamic_webhooks_is_an_error() -> None:
    body = resource()
    body["spec"]["receiver"]["dynamic"]["enabled"] = False
    with pytest.raises(WebhookConfigError, match="does not accept dynamic webhooks"):
        webhook_config(body, KEY, {})


def test_metadata_that_cannot_be_signed_is_an_error() -> None:
    with pytest.raises(WebhookConfigError, match="strings"):
        webhook_config(resource(), KEY, {"n": 1})  # type: ignore[dict-item]
    with pytest.raises(WebhookConfigError, match="reserved"):
        webhook_config(resource(), KEY, {dynamic_jobs.JOB_MAC_KEY: "x"})


def test_the_key_comes_from_the_secrets_data_and_is_never_echoed() -> None:
    secret = {"data": {"job-key": base64.b64encode(KEY_TEXT.encode()).decode()}}
    assert key_from_secret(secret, "s") == KEY
    with pytest.raises(WebhookConfigError, match="does not exist yet"):
        key_from_secret(None, "s")
    bad = {"data": {"job-key": base64.b64encode(b"short-key").decode()}}
    with pytest.raises(WebhookConfigError, match="no valid") as caught:
        key_from_secret(bad, "s")
    assert "short-key" not in str(caught.value)


async def test_from_cluster_reads_the_resource_and_its_key_secret() -> None:
    objects = {
        ("GeminiWebhook", "orders"): resource(),
        ("Secret", "orders-dynamic-job-key"): {
            "data": {"job-key": base64.b64encode(KEY_TEXT.encode()).decode()}
        },
    }
    asked: list[tuple[str, str, str]] = []

    async def get(api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        asked.append((f"{api_version} {kind}", namespace, name))
        return objects.get((kind, name))

    config = await from_cluster(get, "orders", "team-a", {"team": "finance"})
    assert dynamic_jobs.verify(config["user_metadata"], KEY)
    assert asked == [
        ("gemini.webhooks.dev/v1alpha1 GeminiWebhook", "team-a", "orders"),
        ("v1 Secret", "team-a", "orders-dynamic-job-key"),
    ]
    with pytest.raises(WebhookConfigError, match="not found"):
        await from_cluster(get, "absent", "team-a", {})
