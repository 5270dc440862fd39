"""The real receiver in the test's process, standing in for a GeminiWebhook's one receiver
Pod: it reads the resource's signing Secret through the Kubernetes API (as its Deployment
would), and its internal Service is served by it through the test's cluster proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gemini_webhook_operator.receiver_names import (
    INTERNAL_PORT,
    STATIC_SOURCE,
    internal_service_name,
)
from gemini_webhook_receiver import app as receiver_app
from gemini_webhooks.contracts import receiver_config as rc
from tests.fixtures.cluster_proxy import ClusterProxy


@asynccontextmanager
async def local_receiver(
    kube: Any,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    cluster: ClusterProxy,
    namespace: str = "default",
) -> AsyncIterator[Any]:
    """The running receiver of GeminiWebhook `name` (its `public_port` takes deliveries)."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    config = rc.ReceiverConfig(
        listen=rc.ListenConfig(host="127.0.0.1", port=0),
        internal=rc.InternalConfig(host="127.0.0.1", port=0),
        static_webhooks=[
            rc.StaticWebhookConfig(
                name=STATIC_SOURCE,
                secrets=rc.SecretsSource(
                    kubernetes=rc.KubernetesSecretRef(
                        namespace=namespace, name=f"{name}-signing-secret"
                    )
                ),
            )
        ],
        dead_letter=rc.DeadLetterConfig(target=rc.TargetConfig(url="http://127.0.0.1:9/")),
    )
    running = await receiver_app.serve(config, drain_seconds=0.1)
    address = f"127.0.0.1:{running.internal_port}"
    cluster.serve_service(internal_service_name(name), namespace, INTERNAL_PORT, address)
    try:
        yield running
    finally:
        await running.stop(0.1)
