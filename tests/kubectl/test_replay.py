"""`kubectl gemini replay`, the installed executable, refusing what it cannot do in one
clear line (exit 1) — on the Kubernetes API sandbox and (GWO_KUBE=real) the real control
plane: a webhook not in Redis mode, no Ready receiver Pod, and a cluster that cannot exec
into the Pod. The replay itself needs a node that execs: tests/chart/test_real_replay.py."""

from __future__ import annotations

from typing import Any

import pytest

from gemini_webhook_operator import receiver_names, receiver_resources
from gemini_webhooks.contracts import crd
from tests.kubectl.plugin import run
from tests.operator.harness import Cluster, resource

pytestmark = pytest.mark.real_component

REDIS = {"url": "redis://redis.default.svc:6379/0"}
TARGETS = {"targets": [{"url": "http://consumer.default.svc/events"}]}


def _webhook(name: str, **receiver: Any) -> dict[str, Any]:
    body = resource(name, "unused", "http://127.0.0.1:9", receiver={"enabled": True, **receiver})
    del body["spec"]["url"]
    return body


async def _ready_pod(cluster: Cluster, webhook: str, pod: str) -> None:
    """A receiver Pod of `webhook` that the API says is Ready, bound to a node that does
    not exist (nothing runs it; the API server has nowhere to exec)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod,
            "namespace": "default",
            "labels": receiver_resources.labels(webhook),
        },
        "spec": {
            "nodeName": "replay-test-no-such-node",
            "containers": [{"name": receiver_names.CONTAINER, "image": "unused"}],
        },
    }
    assert await cluster.client.request("POST", "/api/v1/namespaces/default/pods", body)
    status = {
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    }
    patched = await cluster.client.request(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{pod}/status",
        status,
        content_type="application/merge-patch+json",
    )
    assert patched is not None


async def test_replay_refuses_in_one_line_what_it_cannot_do(cluster: Cluster, kube: Any) -> None:
    prefix = "kubectl gemini: error: "
    missing = await run(kube, "replay", "replay-nope")
    assert missing.err.strip() == (
        f'{prefix}{crd.SINGULAR} "replay-nope" not found in namespace "default"'
    )
    await cluster.apply(_webhook("replay-memory", defaultRoute=TARGETS))
    memory = await run(kube, "replay", "replay-memory")
    assert memory.err.startswith(
        f'{prefix}{crd.SINGULAR} "replay-memory" in namespace "default" is not in Redis mode'
    )
    await cluster.apply(_webhook("replay-redis", defaultRoute=TARGETS, redis=REDIS))
    no_pod = await run(kube, "replay", "replay-redis", "--since", "1h")
    assert no_pod.err.strip() == (
        f'{prefix}no receiver Pod of {crd.SINGULAR} "replay-redis" is Ready (none found); '
        "the replay runs in one"
    )
    bad_since = await run(kube, "replay", "replay-redis", "--since", "yesterday")
    assert bad_since.err.startswith(f"{prefix}--since 'yesterday': expected an RFC 3339 time")
    pod = "replay-redis-receiver-0"
    await _ready_pod(cluster, "replay-redis", pod)
    try:
        no_exec = await run(kube, "replay", "replay-redis", "--id", "msg_1", "--timeout", "30s")
    finally:
        await cluster.client.request("DELETE", f"/api/v1/namespaces/default/pods/{pod}")
    assert no_exec.err.startswith(f"{prefix}the cluster cannot exec into Pod default/{pod}")
    for result in (missing, memory, no_pod, bad_since, no_exec):
        assert result.code == 1, result.all
        assert result.out == "" and "Traceback" not in result.all
        assert len(result.err.strip().splitlines()) == 1
