"""Fidelity point 9 (sandbox only): injected failures, cut streams, expired versions."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from tests.fixtures.kube import Kube
from tests.kubesandbox.conftest import Api, unique

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
pytestmark = pytest.mark.sandbox_only


@pytest.fixture()
def faults(kube_sandbox: Kube):  # type: ignore[no-untyped-def]
    assert kube_sandbox.faults is not None
    return kube_sandbox.faults


def test_the_next_requests_fail_with_the_given_status_then_recover(api: Api, faults) -> None:  # type: ignore[no-untyped-def]
    faults.fail(500, verb="list", resource="configmaps", count=2)
    assert api.get(CONFIGMAPS).status == 500
    assert api.get(CONFIGMAPS).status == 500
    assert api.get(CONFIGMAPS).status == 200


def test_a_429_fault_says_when_to_retry(api: Api, faults) -> None:  # type: ignore[no-untyped-def]
    faults.fail(429, verb="create", resource="configmaps", retry_after=2)
    reply = api.post(CONFIGMAPS, {"metadata": {"name": unique("cm")}})
    assert reply.status == 429 and reply.headers["Retry-After"] == "2"
    assert reply.body["reason"] == "TooManyRequests"
    assert reply.body["details"]["retryAfterSeconds"] == 2


def test_a_409_fault_hits_only_the_matching_resource_and_verb(api: Api, faults) -> None:  # type: ignore[no-untyped-def]
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    faults.fail(409, verb="patch", resource="configmaps", name=name)
    assert api.get(f"{CONFIGMAPS}/{name}").status == 200
    assert api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "1"}}).status == 409
    assert api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "1"}}).status == 200


def test_faults_can_be_injected_over_http(kube_sandbox: Kube, api: Api) -> None:
    request = urllib.request.Request(
        f"{kube_sandbox.base_url}/sandbox/v1/faults",
        method="POST",
        data=json.dumps({"code": 503, "verb": "get", "resource": "namespaces"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 201
    assert api.get("/api/v1/namespaces/default").status == 503
    assert api.get("/api/v1/namespaces/default").status == 200


def test_a_malformed_fault_is_a_400(kube_sandbox: Kube) -> None:
    request = urllib.request.Request(
        f"{kube_sandbox.base_url}/sandbox/v1/faults",
        method="POST",
        data=json.dumps({"code": 200, "verb": "fly"}).encode(),
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 400


def test_watch_streams_can_be_cut(api: Api, faults) -> None:  # type: ignore[no-untyped-def]
    done: list[float] = []

    def watch() -> None:
        api.watch(CONFIGMAPS, {"timeoutSeconds": "30", "resourceVersion": "0"})
        done.append(time.monotonic())

    thread = threading.Thread(target=watch)
    thread.start()
    deadline = time.monotonic() + 10
    cut = 0
    while not cut and time.monotonic() < deadline:
        time.sleep(0.05)
        cut = faults.cut_watches(resource="configmaps")
    thread.join(timeout=10)
    assert cut == 1 and done


def test_expired_resource_versions_answer_410_gone(api: Api, faults) -> None:  # type: ignore[no-untyped-def]
    rv = api.post(CONFIGMAPS, {"metadata": {"name": unique("cm")}}).body["metadata"][
        "resourceVersion"
    ]
    faults.expire_resource_versions()
    events = api.watch(CONFIGMAPS, {"resourceVersion": rv, "timeoutSeconds": "2"})
    assert [e["type"] for e in events] == ["ERROR"]
    assert events[0]["object"]["code"] == 410


def test_every_resource_request_is_audited(kube_sandbox: Kube, api: Api) -> None:
    api.get("/api/v1/namespaces/default/secrets")
    api.patch(f"{CONFIGMAPS}/absent", {"data": {}})
    assert ("list", "", "secrets", "", "default") in kube_sandbox.audit
    assert ("patch", "", "configmaps", "", "default") in kube_sandbox.audit


def test_an_abandoned_watch_is_released(kube_sandbox: Kube, api: Api) -> None:
    assert kube_sandbox.sandbox is not None and kube_sandbox.runner is not None
    sandbox, runner = kube_sandbox.sandbox, kube_sandbox.runner

    def open_watches() -> int:
        return runner.call(lambda: sum(len(w) for w in sandbox._watches.values()))

    events = api.watch(CONFIGMAPS, {"resourceVersion": "0", "timeoutSeconds": "30"}, until=0)
    assert events == []
    deadline = time.monotonic() + 10
    while open_watches() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_watches() == 0
