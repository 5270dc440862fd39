"""`kubectl gemini sync`, `ping` and `rotate --immediate`: requests by annotation that the
operator acts on once per value, and that the plugin waits for — on the Kubernetes API
sandbox and (GWO_KUBE=real) the real control plane, through the installed executable."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from gemini_webhook_operator.receiver_names import internal_service_name
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import truncate_secret
from tests.fixtures.cluster_proxy import ClusterProxy
from tests.kubectl.plugin import run
from tests.operator.harness import Cluster, is_ready, operator_running, resource
from tests.operator.local_receiver import local_receiver

pytestmark = pytest.mark.real_component


async def test_sync_reconciles_at_once_and_prints_the_outcome(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    """With no drift check for an hour, only the sync request can put back a remote
    webhook someone changed — and it has, by the time the plugin returns."""
    client, endpoint = emulator.client(), emulator.endpoint()
    async with operator_running(kube, drift_interval=3600.0):
        await gemini.apply(resource("plugin-sync", endpoint.url, emulator.base_url))
        ready = await gemini.wait_for("plugin-sync", is_ready, timeout=60)
        webhook_id = ready["status"]["webhookId"]
        client.webhooks.update(
            id=webhook_id, uri="https://elsewhere.example.com/", update_mask="uri"
        )
        result = await run(kube, "sync", "plugin-sync", "--timeout", "60s", "-o", "json")
        remote = client.webhooks.get(id=webhook_id)
        stored = await gemini.get("plugin-sync")
        text = await run(kube, "sync", "plugin-sync", "--timeout", "60s")
    assert result.code == 0, result.all
    assert stored is not None and remote.uri == endpoint.url
    report = json.loads(result.out)
    assert report["requested"] == stored["status"]["lastSyncRequest"]
    assert {c["type"]: (c["status"], c["reason"]) for c in report["conditions"]}["Synced"] == (
        "True",
        "ReconcileSuccess",
    )
    assert text.code == 0, text.all
    assert text.out.startswith("reconciled default/plugin-sync (generation 1)")
    assert "  Synced: True (ReconcileSuccess)" in text.out


async def test_sync_of_a_resource_that_fails_prints_why_and_exits_1(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = resource("plugin-sync-keyless", emulator.endpoint().url, emulator.base_url)
    body["spec"]["apiKeySecretRef"] = {"name": "no-such-secret"}
    async with operator_running(kube, drift_interval=3600.0):
        await gemini.apply(body)
        result = await run(kube, "sync", "plugin-sync-keyless", "--timeout", "60s")
    assert result.code == 1, result.all
    assert "  Synced: False (APIKeySecretMissing)" in result.out
    assert "Traceback" not in result.all


async def test_sync_without_an_operator_times_out_with_a_clear_message(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    await gemini.apply(resource("plugin-sync-idle", emulator.endpoint().url, emulator.base_url))
    result = await run(kube, "sync", "plugin-sync-idle", "--timeout", "2")
    assert result.code == 1
    assert result.err.startswith(
        "kubectl gemini: error: the operator did not reconcile plugin-sync-idle within 2 s "
        "(is it running? `kubectl gemini check`)"
    )
    assert result.out == "" and "Traceback" not in result.all


async def test_sync_and_ping_of_an_unknown_resource_are_not_found(
    cluster: Cluster, kube: Any
) -> None:
    for command in ("sync", "ping"):
        result = await run(kube, command, "nope", "--timeout", "1")
        assert result.code == 1
        assert result.err.strip() == (
            'kubectl gemini: error: geminiwebhook "nope" not found in namespace "default"'
        )


async def test_ping_has_gemini_send_one_and_names_who_verified_it_with_which_secret(
    cluster_proxy: ClusterProxy,
    gemini: Cluster,
    emulator: Any,
    kube: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No spec.healthCheck: the ping is sent because it was asked for."""
    name = "plugin-ping"
    receiver = {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
    }
    async with (
        local_receiver(kube, name, monkeypatch, cluster_proxy) as local,
        operator_running(kube, drift_interval=3600.0),
    ):
        url = f"http://127.0.0.1:{local.public_port}/"
        await gemini.apply(resource(name, url, emulator.base_url, receiver=receiver))
        await gemini.wait_for(name, is_ready, timeout=60)
        held = await gemini.signing_secrets(name)
        assert held is not None and held.current is not None
        fingerprint = truncate_secret(held.current.secret)
        await _until_loaded(local, fingerprint)
        result = await run(kube, "ping", name, "--timeout", "90s", "-o", "json")
        text = await run(kube, "ping", name, "--timeout", "90s")
        stored = await gemini.get(name)
        shown = await run(kube, "status", name)
    assert result.code == 0, result.all
    report = json.loads(result.out)
    assert (report["status"], report["reason"]) == ("True", "PingVerified")
    (verifier,) = report["verifiedBy"]
    assert verifier["name"] == f"service/{internal_service_name(name)}"
    assert verifier["secretFingerprint"] == fingerprint
    assert stored is not None
    assert "DeliveryVerified" not in {c["type"] for c in stored["status"]["conditions"]}
    assert text.code == 0, text.all
    assert text.out.startswith(f"ping of default/{name}: True (PingVerified) a ping sent at ")
    assert f"  service/{internal_service_name(name)}: verified at " in text.out
    assert text.out.rstrip().endswith(f"with {fingerprint}")
    assert "├─ Last requested ping: True (PingVerified), sent " in shown.out
    assert f"verified by service/{internal_service_name(name)} at " in shown.out
    for output in (result, text, shown):
        assert held.current.secret not in output.all and "Traceback" not in output.all


async def _until_loaded(local: Any, fingerprint: str) -> None:
    """Bounded: the receiver has loaded the secret from its watch of the Secret."""
    (secret_set,) = local.receiver.secret_sets
    for _ in range(200):
        if fingerprint in {s.fingerprint for s in secret_set.secrets}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the receiver did not load the signing secret within 20 s")


async def test_ping_without_a_receiver_says_why_none_was_sent_and_exits_1(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    async with operator_running(kube, drift_interval=3600.0):
        await gemini.apply(resource("plugin-ping-bare", emulator.endpoint().url, emulator.base_url))
        await gemini.wait_for("plugin-ping-bare", is_ready, timeout=60)
        result = await run(kube, "ping", "plugin-ping-bare", "--timeout", "60s", "-o", "json")
    assert result.code == 1, result.all
    report = json.loads(result.out)
    assert (report["status"], report["reason"]) == ("Unknown", "ReceiverNotDeployed")
    assert report["sentAt"] is None and report["verifiedBy"] == []


async def test_rotate_immediate_leaves_only_the_new_secret_here_and_at_gemini(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    """The resource's revocation is Grace; `--immediate` overrides it for this rotation
    only, and both request annotations are gone afterwards."""
    async with operator_running(kube):
        await gemini.apply(resource("plugin-immediate", emulator.endpoint().url, emulator.base_url))
        ready = await gemini.wait_for("plugin-immediate", is_ready, timeout=60)
        result = await run(
            kube, "rotate", "plugin-immediate", "--immediate", "--timeout", "90s", "-o", "json"
        )
        after = await gemini.signing_secrets("plugin-immediate")
        stored = await gemini.get("plugin-immediate")
        remote = emulator.client().webhooks.get(id=ready["status"]["webhookId"])
        later = await run(kube, "rotate", "plugin-immediate", "--timeout", "90s", "-o", "json")
    assert result.code == 0, result.all
    assert after is not None and after.current is not None
    report = json.loads(result.out)
    assert report["revocation"] == "Immediate"
    assert [s["fingerprint"] for s in report["secrets"]] == [truncate_secret(after.current.secret)]
    assert [s.secret for s in after.secrets] == [after.current.secret]
    assert [s.truncated_secret for s in remote.signing_secrets or []] == [
        truncate_secret(after.current.secret)
    ]
    assert stored is not None
    annotations = stored["metadata"].get("annotations") or {}
    assert crd.ANNOTATION_ROTATE not in annotations
    assert crd.ANNOTATION_ROTATE_REVOCATION not in annotations
    # The next plain rotation is the resource's own Grace again.
    assert later.code == 0, later.all
    assert json.loads(later.out)["revocation"] == "Grace"
    assert len(json.loads(later.out)["secrets"]) == 2
    for output in (result, later):
        assert after.current.secret not in output.all and "Traceback" not in output.all


@pytest.mark.real_cluster_only
async def test_sync_and_rotate_refused_by_rbac_say_so_in_one_line(
    cluster: Cluster, emulator: Any, kube: Any, tmp_path: Path
) -> None:
    """A user who may read GeminiWebhooks but not patch them: the request is refused by the
    API server, and the plugin says so without waiting out its timeout."""
    from tests.fixtures.control_plane import operator_identity
    from tests.operator.test_rbac_enforced import _server_and_ca

    await cluster.apply(resource("plugin-readonly", emulator.endpoint().url, emulator.base_url))
    account = f"plugin-reader-{uuid.uuid4().hex[:5]}"
    rule = {
        "apiGroups": [crd.API_GROUP],
        "resources": [crd.PLURAL],
        "verbs": ["get", "list", "watch"],
    }
    meta = {"name": account, "namespace": "default"}
    rbac: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta,
            "rules": [rule],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": "default"}],
        },
    ]
    server, ca = _server_and_ca(kube.kubeconfig)
    config = operator_identity(kube.kubeconfig, server, ca, tmp_path / "reader.kubeconfig", rbac)
    for command in ("sync", "rotate"):
        result = await run(
            kube, "--kubeconfig", str(config), command, "plugin-readonly", "--timeout", "60s"
        )
        assert result.code == 1, (command, result.all)
        (line,) = result.err.splitlines()
        assert line.startswith("kubectl gemini: error:") and "forbidden" in line.lower(), line
        assert f"system:serviceaccount:default:{account}" in line and "patch" in line, line
        assert result.out == ""
