"""The real kopf running real handlers against the API (the sandbox, or a real cluster)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest
from kopf.testing import KopfRunner

from tests.fixtures.kube import Kube
from tests.kubesandbox.conftest import GROUP, WIDGETS, Api, unique, widget


def _eventually(check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {check}")
        time.sleep(0.1)


def _settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.posting.level = 100  # keep kopf's own Events out of the way
    settings.watching.server_timeout = 30
    settings.networking.request_timeout = 10
    return settings


@pytest.fixture()
def kopf_env(kube: Kube, widgets: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setenv("KUBECONFIG", str(kube.kubeconfig))
    yield widgets


def _registry(calls: list[tuple[str, str]], *, fail_once: bool = False) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create(GROUP, "v1", "widgets", id="created", registry=registry)
    def created(name: str, spec: Any, retry: int, patch: kopf.Patch, **_: Any) -> dict[str, Any]:
        if fail_once and retry == 0:
            calls.append(("create-retry", name))
            raise kopf.TemporaryError("not yet", delay=0.2)
        calls.append(("create", name))
        patch.status["seen"] = spec["size"]
        return {"size": spec["size"]}

    @kopf.on.update(GROUP, "v1", "widgets", id="updated", registry=registry)
    def updated(name: str, spec: Any, **_: Any) -> dict[str, Any]:
        calls.append(("update", name))
        return {"size": spec["size"]}

    @kopf.on.delete(GROUP, "v1", "widgets", id="deleted", registry=registry)
    def deleted(name: str, **_: Any) -> None:
        calls.append(("delete", name))

    return registry


def test_kopf_runs_create_update_and_delete_handlers(kopf_env: Api) -> None:
    api = kopf_env
    calls: list[tuple[str, str]] = []
    name = unique("w")
    path = f"{WIDGETS}/{name}"
    with KopfRunner(
        ["run", "-A", "--standalone"], registry=_registry(calls), settings=_settings(), timeout=30
    ):
        api.post(WIDGETS, widget(name, size=2))
        obj = _eventually(lambda: (o := api.get(path).body).get("status", {}).get("created") and o)
        assert obj["status"] == {"seen": 2, "created": {"size": 2}}
        assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]
        assert "kopf.zalando.org/last-handled-configuration" in obj["metadata"]["annotations"]
        api.patch(path, {"spec": {"size": 5}})
        _eventually(lambda: api.get(path).body.get("status", {}).get("updated") == {"size": 5})
        api.delete(path)
        api.wait_gone(path, timeout=20)
    assert calls == [("create", name), ("update", name), ("delete", name)]


@pytest.mark.parametrize("storage", ["annotations", "status"])
def test_kopf_keeps_handler_progress_across_retries(kopf_env: Api, storage: str) -> None:
    api = kopf_env
    calls: list[tuple[str, str]] = []
    name = unique("w")
    path = f"{WIDGETS}/{name}"
    settings = _settings()
    settings.persistence.progress_storage = (
        kopf.AnnotationsProgressStorage()
        if storage == "annotations"
        else kopf.StatusProgressStorage()
    )
    with KopfRunner(
        ["run", "-A", "--standalone"],
        registry=_registry(calls, fail_once=True),
        settings=settings,
        timeout=30,
    ):
        created = api.post(WIDGETS, widget(name, size=4)).body
        obj = _eventually(lambda: (o := api.get(path).body).get("status", {}).get("created") and o)
        assert obj["status"]["created"] == {"size": 4}
        # Between the failed and the successful attempt, kopf stored the handler's progress;
        # the object's history (a watch from its first version) shows it.
        history = api.watch(
            WIDGETS,
            {
                "fieldSelector": f"metadata.name={name}",
                "timeoutSeconds": "1",
                "resourceVersion": created["metadata"]["resourceVersion"],
            },
        )
        if storage == "annotations":
            records = [
                json.loads(a)
                for e in history
                if (
                    a := e["object"]["metadata"]
                    .get("annotations", {})
                    .get("kopf.zalando.org/created")
                )
            ]
        else:
            records = [
                p
                for e in history
                if (
                    p := e["object"]
                    .get("status", {})
                    .get("kopf", {})
                    .get("progress", {})
                    .get("created")
                )
            ]
        assert records and records[0]["retries"] == 1 and records[0]["success"] is False
        api.delete(path)
        api.wait_gone(path, timeout=20)
    assert calls[:2] == [("create-retry", name), ("create", name)]


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_kopf_peering_announces_the_operator(kopf_env: Api, scope: str) -> None:
    api = kopf_env
    api.install_kopf_peering()
    peering = unique("peering")
    if scope == "cluster":
        collection, kind, scope_args = (
            "/apis/kopf.dev/v1/clusterkopfpeerings",
            "ClusterKopfPeering",
            ["-A"],
        )
    else:
        collection = "/apis/kopf.dev/v1/namespaces/default/kopfpeerings"
        kind, scope_args = "KopfPeering", ["--namespace=default"]
    path = f"{collection}/{peering}"
    api.post(collection, {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": peering}})
    settings = _settings()
    settings.peering.name = peering
    settings.peering.mandatory = True
    settings.peering.lifetime = 10
    calls: list[tuple[str, str]] = []
    with KopfRunner(
        ["run", *scope_args, f"--peering={peering}"],
        registry=_registry(calls),
        settings=settings,
        timeout=30,
    ):
        status = _eventually(lambda: api.get(path).body.get("status"))
        (peer_id, record), *_ = status.items()
        assert record["priority"] == 0 and record["lifetime"] == 10
        name = unique("w")
        api.post(WIDGETS, widget(name))
        _eventually(lambda: ("create", name) in calls)
        api.delete(f"{WIDGETS}/{name}")
        api.wait_gone(f"{WIDGETS}/{name}", timeout=20)
    # On a clean exit, the operator withdraws itself from the peering object.
    _eventually(lambda: peer_id not in (api.get(path).body.get("status") or {}), timeout=10)
    api.delete(path)


@pytest.mark.sandbox_only
def test_kopf_gets_through_injected_faults(kube_sandbox: Kube, kopf_env: Api) -> None:
    api = kopf_env
    faults = kube_sandbox.faults
    assert faults is not None
    calls: list[tuple[str, str]] = []
    name = unique("w")
    path = f"{WIDGETS}/{name}"
    settings = _settings()
    settings.networking.error_backoffs = [0.1, 0.2, 0.3]
    with KopfRunner(
        ["run", "-A", "--standalone"],
        registry=_registry(calls),
        settings=settings,
        timeout=30,
        reraise=False,
    ):
        _eventually(
            lambda: any(a.verb == "watch" and a.resource == "widgets" for a in kube_sandbox.audit)
        )
        faults.fail(429, verb="patch", resource="widgets", retry_after=1)
        faults.fail(500, verb="patch", resource="widgets")
        api.post(WIDGETS, widget(name, size=3))
        _eventually(lambda: api.get(path).body.get("status", {}).get("created"))
        faults.cut_watches(resource="widgets")
        faults.expire_resource_versions()
        api.patch(path, {"spec": {"size": 6}})
        _eventually(lambda: api.get(path).body.get("status", {}).get("updated") == {"size": 6})
        api.delete(path)
        api.wait_gone(path, timeout=20)
    assert ("create", name) in calls and ("update", name) in calls and ("delete", name) in calls
    assert not faults.pending
