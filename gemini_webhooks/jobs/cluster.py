"""The I/O edge of the client helper: read a GeminiWebhook and its job key with a
kubeconfig (the operator's small Kubernetes client), return its `webhook_config`.

    from gemini_webhooks.jobs.cluster import webhook_config_from_cluster
    config = webhook_config_from_cluster("batch-results", "team-a", {"team": "finance"})

Needs `get` on the GeminiWebhook and on the Secret `<name>-dynamic-job-key`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gemini_webhook_operator.kube import Kube
from gemini_webhooks.jobs.webhook_config import from_cluster
from gemini_webhooks.kube_access import ClusterAccess


async def read_webhook_config(
    name: str,
    namespace: str,
    user_metadata: Mapping[str, str],
    *,
    uri: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """Raises WebhookConfigError, or the client's KubeError / KubeConfigError / OSError."""
    kube = Kube(ClusterAccess.load(kubeconfig, context), timeout=15.0)
    try:
        return await from_cluster(kube.get, name, namespace, user_metadata, uri=uri)
    finally:
        await kube.close()


def webhook_config_from_cluster(
    name: str,
    namespace: str,
    user_metadata: Mapping[str, str],
    *,
    uri: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """`read_webhook_config` for code without an event loop of its own."""
    return asyncio.run(
        read_webhook_config(
            name, namespace, user_metadata, uri=uri, kubeconfig=kubeconfig, context=context
        )
    )
