"""Running the real operator (kopf and our handlers) in-process against the `kube` fixture
and the emulator, plus helpers to read what it did. Works against a real cluster too
(`KUBECONFIG` set): everything goes through the Kubernetes API and kubectl."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode, Tracer

from gemini_webhook_operator import runtime
from gemini_webhook_operator.kube import Kube, KubeError
from gemini_webhook_operator.metrics import OperatorMetrics
from gemini_webhook_operator.reconcile_context import Operator
from gemini_webhook_operator.webhookservice import ServiceSettings
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import (
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SigningSecrets,
    decode_data,
)
from gemini_webhooks.kube_access import ClusterAccess
from tests.fixtures.kube import KUBECTL

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / f"{crd.CRD_NAME}.yaml"
API_KEY_SECRET = "gemini-api-key"


def operator_kubeconfig(kube: Any) -> str:
    """The operator's identity: on the real control plane, the chart's ServiceAccount."""
    return os.environ.get("GWO_OPERATOR_KUBECONFIG") or str(kube.kubeconfig)


class FakeClock:
    """Test double for the operator's wall clock: moves only when told."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime.now(UTC).replace(microsecond=0)

    def now(self) -> datetime:
        return self.current

    def advance(self, delta: timedelta) -> None:
        self.current += delta


def kubectl(kube: Any, *args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kube.kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout + result.stderr


def install_crd(kube: Any) -> None:
    kubectl(kube, "apply", "-f", str(CRD_FILE))


def resource(
    name: str,
    url: str,
    base_url: str,
    *,
    namespace: str = "default",
    events: tuple[str, ...] = ("batch.succeeded",),
    **spec: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "url": url,
        "events": list(events),
        "apiKeySecretRef": {"name": API_KEY_SECRET},
        "apiBaseUrl": base_url,
    }
    body.update(spec)
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


@dataclass
class Cluster:
    """The Kubernetes API as the tests see it (our small async client)."""

    kube: Any
    client: Kube

    def path(self, name: str, namespace: str = "default") -> str:
        return f"/apis/{crd.API_GROUP}/{crd.VERSION}/namespaces/{namespace}/{crd.PLURAL}/{name}"

    async def wait_for_crd(self, timeout: float = 15.0) -> None:
        """Until the API serves GeminiWebhooks (a real cluster needs the CRD established)."""
        deadline = time.monotonic() + timeout
        path = self.path("").rstrip("/")
        while True:
            try:
                if await self.client.request("GET", path) is not None:
                    return
            except KubeError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the GeminiWebhook CRD is not served")
            await asyncio.sleep(0.2)

    async def remove_everything(self, namespace: str = "default") -> None:
        """Delete every GeminiWebhook (finalizers dropped) and the Secrets the tests made."""
        listed = await self.client.request("GET", self.path("", namespace).rstrip("/"))
        for item in (listed or {}).get("items") or []:
            name = item["metadata"]["name"]
            await self.patch(name, {"metadata": {"finalizers": None}}, namespace)
            await self.delete(name, namespace)
        selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
        for secret in await self.client.list("v1", "Secret", namespace, selector):
            await self.client.delete("v1", "Secret", namespace, secret["metadata"]["name"])
        await self.client.delete("v1", "Secret", namespace, API_KEY_SECRET)

    async def create_api_key(self, value: str, namespace: str = "default") -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": API_KEY_SECRET, "namespace": namespace},
            "data": {"api-key": base64.b64encode(value.encode()).decode()},
        }
        await self.client.apply(body)

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        ns = obj["metadata"].get("namespace", "default")
        name = obj["metadata"]["name"]
        existing = await self.client.request("GET", self.path(name, ns))
        if existing is None:
            created = await self.client.request("POST", self.path("", ns).rstrip("/"), obj)
            assert created is not None
            return created
        patched = await self.client.request(
            "PATCH", self.path(name, ns), obj, content_type="application/merge-patch+json"
        )
        assert patched is not None
        return patched

    async def patch(self, name: str, patch: dict[str, Any], namespace: str = "default") -> None:
        await self.client.request(
            "PATCH", self.path(name, namespace), patch, content_type="application/merge-patch+json"
        )

    async def get(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return await self.client.request("GET", self.path(name, namespace))

    async def delete(self, name: str, namespace: str = "default") -> None:
        await self.client.request("DELETE", self.path(name, namespace))

    async def signing_secrets(
        self, name: str = "", namespace: str = "default", *, secret_name: str | None = None
    ) -> SigningSecrets | None:
        secret = await self.client.get(
            "v1", "Secret", namespace, secret_name or f"{name}{crd.DEFAULT_SIGNING_SECRET_SUFFIX}"
        )
        if secret is None:
            return None
        return decode_data(secret.get("data") or {})

    async def events(
        self, namespace: str = "default", *, about: str | None = None
    ) -> list[dict[str, Any]]:
        """Events of the namespace; with `about`, only those of that GeminiWebhook as it is
        now (by UID: a real cluster keeps Events of earlier tests' namesakes for an hour)."""
        found = await self.client.request("GET", f"/api/v1/namespaces/{namespace}/events")
        items = list((found or {}).get("items") or [])
        if about is None:
            return items
        current = await self.get(about, namespace)
        uid = (current or {}).get("metadata", {}).get("uid")
        return [e for e in items if uid and (e.get("involvedObject") or {}).get("uid") == uid]

    async def wait_event(
        self, about: str, reasons: set[str], *, timeout: float = 10.0
    ) -> dict[str, Any]:
        """The latest Event of GeminiWebhook `about` with one of `reasons` (kopf posts
        Events from a background queue, a moment after the status write)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in await self.events(about=about) if e.get("reason") in reasons]
            if found:
                return found[-1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {sorted(reasons)} Event for {about}")
            await asyncio.sleep(0.1)

    async def wait_for(
        self,
        name: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 15.0,
        namespace: str = "default",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            last = await self.get(name, namespace)
            if last is not None and predicate(last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} never matched; last seen: {json.dumps(last)[:2000]}")

    async def wait_gone(self, name: str, *, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.get(name) is None:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{name} was not deleted")


async def bound_beside_listed(gemini: Cluster, bound: int) -> int:
    """A kopf worker bound for a test: `bound` more than the GeminiWebhooks the operator's
    first listing holds (on a shared API server, earlier tests' resources in other
    namespaces). Fewer deadlocks kopf 1.45's start (nolar/kopf#1243,
    tests/operator/test_worker_bound.py)."""
    found = await gemini.client.request("GET", f"/apis/{crd.API_GROUP}/{crd.VERSION}/{crd.PLURAL}")
    return bound + len((found or {}).get("items") or [])


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return {}


def is_ready(obj: dict[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def synced_reason(obj: dict[str, Any]) -> str | None:
    return condition(obj, "Synced").get("reason")


@dataclass
class RunningOperator:
    task: asyncio.Task[None]
    operator: Operator
    stop: asyncio.Event
    metrics: OperatorMetrics
    logs: list[str] = field(default_factory=list)

    async def shutdown(self) -> None:
        self.stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout=5)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """Cancel the operator's task. Not a crash (its `finally` blocks and kopf's shutdown
        run): `test_crash_injection.py` SIGKILLs an operator process for that."""
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


class Reconciliations:
    """A tracer for `operator_running(tracer=...)` whose finished `reconcile` spans tell, per
    resource, how many reconciliations of a change (create, update, resume) it finished
    without failing, its writes made: what kopf's last-handled annotation told before kopf's
    diff base moved to the operator's memory. Per resource: on a shared API server other
    tests' leftovers are reconciled too."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = provider.get_tracer("test-reconciliations")

    def of(self, name: str, namespace: str = "default") -> int:
        return sum(
            1
            for span in self.exporter.get_finished_spans()
            if span.name == "reconcile"
            and (span.attributes or {}).get("gemini.webhook.resource") == name
            and (span.attributes or {}).get("k8s.namespace.name") == namespace
            and (span.attributes or {}).get("gemini.reconcile.trigger") == "change"
            and span.status.status_code != StatusCode.ERROR
        )

    async def past(self, name: str, count: int, *, timeout: float = 15.0) -> int:
        """Wait until `name` has more than `count` such reconciliations; the number then."""
        deadline = time.monotonic() + timeout
        while (now := self.of(name)) <= count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: no more than {count} changes reconciled")
            await asyncio.sleep(0.05)
        return now


async def patch_reconciled(
    gemini: Cluster,
    reconciled: Reconciliations,
    name: str,
    patch: dict[str, Any],
    *,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Patch `name`, wait until the operator has reconciled a change of it since, and return
    the resource as it is then. Only while no other change of it is being reconciled (after
    its creation was counted, say), or that one could be taken for this one."""
    before = reconciled.of(name)
    await gemini.patch(name, patch)
    await reconciled.past(name, before, timeout=timeout)
    obj = await gemini.get(name)
    assert obj is not None, f"{name} is gone"
    return obj


@contextlib.asynccontextmanager
async def operator_running(
    kube: Any,
    *,
    drift_interval: float = 2.0,
    clock: Any = None,
    namespaces: tuple[str, ...] = (),
    metrics: OperatorMetrics | None = None,
    api_timeout: float = 10.0,
    auth_retry: float = 2.0,
    health_tick: float = 30.0,
    health_retry: float = 60.0,
    heal_interval: float = 3600.0,
    max_concurrent_reconciles: int = runtime.RunConfig.max_concurrent_reconciles,
    tracer: Tracer | None = None,
    access: ClusterAccess | None = None,  # where it reaches the API (default: `kube`'s)
) -> AsyncIterator[RunningOperator]:
    access = access or ClusterAccess.load(operator_kubeconfig(kube))
    config = runtime.RunConfig(
        namespaces=namespaces,
        drift_interval=drift_interval,
        drift_jitter=0.2,
        health_tick=health_tick,
        health_retry=health_retry,
        api_key_retry=1.0,
        auth_retry=auth_retry,
        error_backoff=0.5,
        heal_interval=heal_interval,
        max_concurrent_reconciles=max_concurrent_reconciles,
        watch_timeout=5.0,
        exit_timeout=0.2,
        service=ServiceSettings(timeout_seconds=api_timeout, auth_backoff_seconds=auth_retry),
    )
    metrics = metrics or OperatorMetrics()
    op = runtime.build_operator(access, config, metrics=metrics, clock=clock, tracer=tracer)
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        runtime.run(access, config, operator=op, stop_flag=stop, ready_flag=ready),
        name=f"operator-{uuid.uuid4().hex[:6]}",
    )
    waiter = asyncio.create_task(ready.wait())
    done, _ = await asyncio.wait({task, waiter}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        raise AssertionError("the operator stopped before it was ready")
    if waiter not in done:
        waiter.cancel()
        task.cancel()
        raise AssertionError("the operator was not ready in 20 s")
    running = RunningOperator(task, op, stop, metrics)
    try:
        yield running
    finally:
        if not task.done():
            await running.shutdown()
