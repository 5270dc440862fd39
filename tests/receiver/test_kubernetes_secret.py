"""Signing secrets from a Kubernetes Secret watched through the API (the kube sandbox)."""

from __future__ import annotations

import asyncio
import functools
import secrets as pysecrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from gemini_webhook_receiver import receiver as receiver_module
from gemini_webhook_receiver import secret_sources
from gemini_webhooks.contracts import signing_secret as fmt

from .conftest import Client, RecordingTarget, StartReceiver, base_config, new_secret
from .test_lean_process import NOT_THE_RECEIVER, _imported, _under, importtime_receiver

NAMESPACE = "default"
NAME = "orders-signing-secret"


def _secret_body(current: str, *older: str) -> k8s.V1Secret:
    now = datetime.now(UTC)
    items = [fmt.SigningSecret(current, created_at=now)]
    items += [
        fmt.SigningSecret(s, created_at=now, expire_time=now + timedelta(hours=24)) for s in older
    ]
    data = fmt.encode_data(fmt.SigningSecrets(webhook_id="wh_k", secrets=tuple(items)))
    return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=NAME, namespace=NAMESPACE), data=data)


def _delete_secret(core: k8s.CoreV1Api) -> None:
    try:
        core.delete_namespaced_secret(NAME, NAMESPACE)
    except k8s.ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture
def core(kube: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[k8s.CoreV1Api]:
    """A client of the API the receiver watches; the test's Secret is gone before and after
    (a real control plane is shared by the tests of a run)."""
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    api_client = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))
    core = k8s.CoreV1Api(api_client)
    _delete_secret(core)
    yield core
    _delete_secret(core)


def _config(target: RecordingTarget, webhook: str = "orders") -> dict[str, Any]:
    config = base_config(target.url, None)
    config["static_webhooks"] = [
        {"name": webhook, "secrets": {"kubernetes": {"namespace": NAMESPACE, "name": NAME}}}
    ]
    return config


async def test_secret_from_the_api_verifies_deliveries(
    core: k8s.CoreV1Api, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    secret = new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(secret))
    client = await start_receiver(_config(target))
    assert (await client.get_json("/readyz"))[0] == 200
    assert (await client.deliver([secret]))[0] == 200


async def test_rotation_in_the_secret_is_picked_up_within_a_second_without_failures(
    core: k8s.CoreV1Api, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    old, new = new_secret(), new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(old))
    client = await start_receiver(_config(target))
    statuses = []
    for i in range(20):
        signing = [old] if i < 10 else [new, old]
        if i == 10:
            await asyncio.to_thread(
                core.replace_namespaced_secret, NAME, NAMESPACE, _secret_body(new, old)
            )
        statuses.append((await client.deliver(signing))[0])
    assert statuses == [200] * 20

    # Revoke the old secret; a delivery signed only with the new one must pass within 1 s.
    await asyncio.to_thread(core.replace_namespaced_secret, NAME, NAMESPACE, _secret_body(new))
    changed_at = time.monotonic()
    while True:
        status, answer, _ = await client.deliver([old])
        if status == 401:
            break
        assert time.monotonic() - changed_at < 1.0, "revocation not seen within 1 s"
        await asyncio.sleep(0.02)
    assert answer["error"] == "revoked_secret"
    assert time.monotonic() - changed_at < 1.0
    assert (await client.deliver([new]))[0] == 200


async def test_missing_secret_is_not_ready_until_it_is_created(
    core: k8s.CoreV1Api, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    client = await start_receiver(_config(target))
    assert (await client.get_json("/readyz"))[0] == 503
    secret = new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(secret))
    deadline = time.monotonic() + 1.0
    while (await client.get_json("/readyz"))[0] != 200:
        assert time.monotonic() < deadline, "new Secret not seen within 1 s"
        await asyncio.sleep(0.02)
    assert (await client.deliver([secret]))[0] == 200


async def test_deleted_secret_makes_the_receiver_unready_and_deliveries_retryable(
    core: k8s.CoreV1Api, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    secret = new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(secret))
    client = await start_receiver(_config(target))
    assert (await client.deliver([secret]))[0] == 200
    await asyncio.to_thread(core.delete_namespaced_secret, NAME, NAMESPACE)
    deadline = time.monotonic() + 1.0
    while (await client.get_json("/readyz"))[0] != 503:
        assert time.monotonic() < deadline, "deletion not seen within 1 s"
        await asyncio.sleep(0.02)
    status, answer, _ = await client.deliver([secret])
    assert (status, answer["error"]) == (503, "no_secrets_loaded")  # Gemini retries
    assert await client.metric("gemini_receiver_loaded_secrets", webhook="orders") == 0


@pytest.mark.sandbox_only
async def test_watch_cut_with_expired_history_and_a_failed_list_still_sees_the_rotation(
    core: k8s.CoreV1Api, kube_sandbox: Any, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    """The API server ends the watch, has forgotten our resourceVersion (410 Gone) and
    fails the next list once: the source re-lists and keeps following the Secret."""
    old, new = new_secret(), new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(old))
    client = await start_receiver(_config(target))
    assert (await client.deliver([old]))[0] == 200
    faults = kube_sandbox.faults
    faults.fail(500, verb="list", resource="secrets", count=1)
    await asyncio.to_thread(faults.expire_resource_versions)
    await asyncio.to_thread(faults.cut_watches, "secrets")
    await asyncio.to_thread(core.replace_namespaced_secret, NAME, NAMESPACE, _secret_body(new))
    deadline = time.monotonic() + 5.0
    while (await client.deliver([new]))[0] != 200:
        assert time.monotonic() < deadline, "rotation not seen after the watch was cut"
        await asyncio.sleep(0.05)
    status, answer, _ = await client.deliver([old])
    assert (status, answer["error"]) == (401, "revoked_secret")
    failed_lists = await client.metric(
        "gemini_receiver_secret_reloads_total", webhook="orders", outcome="error"
    )
    assert failed_lists >= 1  # the failed list was counted, then retried


# ---- resuming the watch instead of re-listing ------------------------------------------


@pytest.fixture
def short_watches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver's Secret watches end after 1 s (the server's `timeoutSeconds`)."""
    monkeypatch.setattr(
        receiver_module,
        "KubernetesSecretSource",
        functools.partial(secret_sources.KubernetesSecretSource, watch_timeout_seconds=1),
    )


def _requests(kube: Any, verb: str) -> int:
    return sum(1 for e in list(kube.audit) if (e.verb, e.resource) == (verb, "secrets"))


async def _reloads(client: Client, webhook: str, outcome: str = "ok") -> float:
    """Absolute count: `webhook` is unique to the test, so nobody else counted it."""
    key = ("gemini_receiver_secret_reloads_total", f'outcome="{outcome}",webhook="{webhook}"')
    return (await client.scrape()).get(key, 0.0)


async def _rotation_seen_within_a_second(client: Client, old: str, new: str) -> None:
    changed_at = time.monotonic()
    while (await client.deliver([new]))[0] != 200:
        assert time.monotonic() - changed_at < 1.0, "data change not seen within 1 s"
        await asyncio.sleep(0.02)
    status, answer, _ = await client.deliver([old])
    assert (status, answer["error"]) == (401, "revoked_secret")


@pytest.mark.sandbox_only
@pytest.mark.usefixtures("short_watches")
async def test_ended_watches_resume_without_relisting_or_reloading(
    core: k8s.CoreV1Api, kube_sandbox: Any, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    webhook = "orders-" + pysecrets.token_hex(4)
    old, new = new_secret(), new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(old))
    client = await start_receiver(_config(target, webhook))
    assert (await client.deliver([old]))[0] == 200
    await asyncio.sleep(4.2)  # the server ends a watch every second
    assert _requests(kube_sandbox, "watch") >= 3
    assert _requests(kube_sandbox, "list") == 1
    assert await _reloads(client, webhook) == 1
    assert await _reloads(client, webhook, "error") == 0

    await asyncio.to_thread(core.replace_namespaced_secret, NAME, NAMESPACE, _secret_body(new))
    await _rotation_seen_within_a_second(client, old, new)
    assert await _reloads(client, webhook) == 2
    assert _requests(kube_sandbox, "list") == 1


async def _cut_open_watch(faults: Any) -> None:
    """Cut the receiver's Secret watch, waiting for it to be open: the receiver opens it
    just after its first list, which the test's first delivery does not wait for. (A watch
    that opens after the expiry meets 410 Gone itself and re-lists just the same.)"""
    deadline = time.monotonic() + 3.0
    while await asyncio.to_thread(faults.cut_watches, "secrets") < 1:
        assert time.monotonic() < deadline, "the receiver never opened its Secret watch"
        await asyncio.sleep(0.02)


async def _until_relisted(kube: Any, lists: int) -> None:
    deadline = time.monotonic() + 3.0
    while _requests(kube, "list") < lists:
        assert time.monotonic() < deadline, "no re-list after 410 Gone"
        await asyncio.sleep(0.02)


@pytest.mark.sandbox_only
async def test_gone_relists_without_reloading_unchanged_data(
    core: k8s.CoreV1Api, kube_sandbox: Any, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    webhook = "orders-" + pysecrets.token_hex(4)
    secret = new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(secret))
    client = await start_receiver(_config(target, webhook))
    assert (await client.deliver([secret]))[0] == 200
    assert _requests(kube_sandbox, "list") == 1
    faults = kube_sandbox.faults
    await asyncio.to_thread(faults.expire_resource_versions)
    await _cut_open_watch(faults)
    await _until_relisted(kube_sandbox, 2)
    await asyncio.sleep(0.3)  # a reload would be on the loop by now
    assert _requests(kube_sandbox, "list") == 2
    assert await _reloads(client, webhook) == 1
    assert await _reloads(client, webhook, "error") == 0
    assert (await client.deliver([secret]))[0] == 200


@pytest.mark.sandbox_only
async def test_data_change_after_gone_is_picked_up(
    core: k8s.CoreV1Api, kube_sandbox: Any, start_receiver: StartReceiver, target: RecordingTarget
) -> None:
    webhook = "orders-" + pysecrets.token_hex(4)
    old, new = new_secret(), new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(old))
    client = await start_receiver(_config(target, webhook))
    faults = kube_sandbox.faults
    await asyncio.to_thread(faults.expire_resource_versions)
    await _cut_open_watch(faults)
    await _until_relisted(kube_sandbox, 2)
    await asyncio.sleep(0.1)  # the watch from the re-list's version is open

    await asyncio.to_thread(core.replace_namespaced_secret, NAME, NAMESPACE, _secret_body(new))
    await _rotation_seen_within_a_second(client, old, new)
    assert await _reloads(client, webhook) == 2
    assert _requests(kube_sandbox, "list") == 2


# ---- what the process holds ------------------------------------------------------------


async def test_a_receiver_watching_its_secret_imports_neither_the_kubernetes_client_nor_aiohttp(
    core: k8s.CoreV1Api, kube: Any, target: RecordingTarget, tmp_path: Path
) -> None:
    """The Secret's list and watch run on the receiver's own loop with its own HTTP framing:
    the `kubernetes` package (17.8 MiB) and aiohttp's client (9.4 MiB) stay out."""
    secret = new_secret()
    await asyncio.to_thread(core.create_namespaced_secret, NAMESPACE, _secret_body(secret))
    config = {**_config(target), "logging": {"level": "INFO"}}
    env = {"KUBECONFIG": str(kube.kubeconfig)}  # KUBERNETES_SERVICE_HOST is unset (`core`)
    async with importtime_receiver(config, tmp_path, **env) as (ports, log):
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{ports['internal_port']}/readyz"
            deadline = time.monotonic() + 10
            while True:  # ready once the Secret's list was read
                async with session.get(url) as ready:
                    if ready.status == 200:
                        break
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                await asyncio.sleep(0.05)
    imported = _imported(log.read_text())
    assert "gemini_webhook_receiver.kube_get" in imported  # the report is read right
    assert _under(("kubernetes", "aiohttp", *NOT_THE_RECEIVER), imported) == []
