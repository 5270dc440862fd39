"""Fidelity point 6: selectors, pagination, watches, resumption, 410 Gone, bookmarks."""

from __future__ import annotations

import threading
import time

import pytest

from tests.fixtures.kube import Kube
from tests.kubesandbox.conftest import Api, unique

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


def _names(reply_body: dict) -> set[str]:
    return {i["metadata"]["name"] for i in reply_body["items"]}


def test_label_selectors_filter_lists(api: Api) -> None:
    tag = unique("t")
    for name, tier in [("a", "web"), ("b", "db"), ("c", None)]:
        labels = {"run": tag, **({"tier": tier} if tier else {})}
        api.post(CONFIGMAPS, {"metadata": {"name": f"{tag}-{name}", "labels": labels}})
    assert _names(api.get(CONFIGMAPS, query={"labelSelector": f"run={tag},tier=web"}).body) == {
        f"{tag}-a"
    }
    assert _names(
        api.get(CONFIGMAPS, query={"labelSelector": f"run={tag},tier in (web,db)"}).body
    ) == {f"{tag}-a", f"{tag}-b"}
    assert _names(api.get(CONFIGMAPS, query={"labelSelector": f"run={tag},!tier"}).body) == {
        f"{tag}-c"
    }
    assert _names(api.get(CONFIGMAPS, query={"labelSelector": f"run={tag},tier!=web"}).body) == {
        f"{tag}-b",
        f"{tag}-c",
    }


def test_field_selectors_filter_by_name_and_namespace(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    by_name = api.get("/api/v1/configmaps", query={"fieldSelector": f"metadata.name={name}"}).body
    assert [i["metadata"]["namespace"] for i in by_name["items"]] == ["default"]
    other_ns = api.get(
        "/api/v1/configmaps",
        query={"fieldSelector": f"metadata.name={name},metadata.namespace!=default"},
    ).body
    assert other_ns["items"] == []


def test_a_malformed_label_selector_is_a_400(api: Api) -> None:
    reply = api.get(CONFIGMAPS, query={"labelSelector": "a in (b"})
    assert reply.status == 400


def test_lists_are_paginated_with_limit_and_continue(api: Api) -> None:
    tag = unique("p")
    for i in range(5):
        api.post(CONFIGMAPS, {"metadata": {"name": f"{tag}-{i}", "labels": {"page": tag}}})
    seen: list[str] = []
    query = {"labelSelector": f"page={tag}", "limit": "2"}
    while True:
        body = api.get(CONFIGMAPS, query=query).body
        seen += [i["metadata"]["name"] for i in body["items"]]
        token = body["metadata"].get("continue")
        if not token:
            break
        query = {**query, "continue": token}
    assert seen == [f"{tag}-{i}" for i in range(5)]


def test_a_watch_without_resource_version_starts_with_the_current_objects(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    events = api.watch(
        CONFIGMAPS, {"fieldSelector": f"metadata.name={name}", "timeoutSeconds": "1"}
    )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", name)]


def test_a_watch_resumes_after_the_given_resource_version(api: Api) -> None:
    name = unique("cm")
    created = api.post(CONFIGMAPS, {"metadata": {"name": name}}).body
    api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "1"}})
    api.delete(f"{CONFIGMAPS}/{name}")
    events = api.watch(
        CONFIGMAPS,
        {
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": created["metadata"]["resourceVersion"],
            "timeoutSeconds": "1",
        },
    )
    assert [e["type"] for e in events] == ["MODIFIED", "DELETED"]


def test_a_watch_streams_changes_as_they_happen(api: Api) -> None:
    name = unique("cm")
    rv = api.get(CONFIGMAPS).body["metadata"]["resourceVersion"]

    def change() -> None:
        time.sleep(0.3)
        api.post(CONFIGMAPS, {"metadata": {"name": name}})

    thread = threading.Thread(target=change)
    thread.start()
    events = api.watch(
        CONFIGMAPS,
        {"fieldSelector": f"metadata.name={name}", "resourceVersion": rv, "timeoutSeconds": "5"},
        until=1,
    )
    thread.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", name)]


def test_leaving_a_label_selector_is_seen_as_deleted(api: Api) -> None:
    name = unique("cm")
    created = api.post(CONFIGMAPS, {"metadata": {"name": name, "labels": {"keep": name}}}).body
    api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"labels": {"keep": None}}})
    events = api.watch(
        CONFIGMAPS,
        {
            "labelSelector": f"keep={name}",
            "resourceVersion": created["metadata"]["resourceVersion"],
            "timeoutSeconds": "1",
        },
    )
    assert [e["type"] for e in events] == ["DELETED"]


@pytest.mark.sandbox_only
def test_bookmarks_are_sent_when_asked(kube_sandbox: Kube, api: Api) -> None:
    rv = api.get(CONFIGMAPS).body["metadata"]["resourceVersion"]
    events = api.watch(
        CONFIGMAPS,
        {
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "sendInitialEvents": "false",
            "timeoutSeconds": "3",
        },
        until=1,
    )
    # A real API server sends bookmarks about once a minute; the sandbox every few seconds.
    assert events and events[0]["type"] == "BOOKMARK"
    assert int(events[0]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_initial_events_end_with_a_bookmark(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    events = api.watch(
        CONFIGMAPS,
        {
            "fieldSelector": f"metadata.name={name}",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "2",
        },
        until=2,
    )
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    annotations = events[1]["object"]["metadata"]["annotations"]
    assert annotations["k8s.io/initial-events-end"] == "true"


def test_an_unsupported_field_selector_is_a_400(api: Api) -> None:
    # kube-apiserver's words differ: the generic conversion (ConfigMaps) lists what is
    # selectable, a type's own (Secrets) says "not supported".
    reply = api.get(CONFIGMAPS, query={"fieldSelector": "data.a=1"})
    assert (reply.status, reply.body["reason"]) == (400, "BadRequest")
    assert reply.body["message"] == (
        '"data.a" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )
    reply = api.get("/api/v1/namespaces/default/secrets", query={"fieldSelector": "data.a=1"})
    assert (reply.status, reply.body["message"]) == (400, "field label not supported: data.a")


def test_type_specific_field_selectors_work(api: Api) -> None:
    name = unique("s")
    api.post(
        "/api/v1/namespaces/default/secrets",
        {"metadata": {"name": name}, "type": "example.com/kind"},
    )
    listed = api.get(
        "/api/v1/namespaces/default/secrets", query={"fieldSelector": "type=example.com/kind"}
    ).body
    assert [i["metadata"]["name"] for i in listed["items"]] == [name]


def test_deletecollection_deletes_what_the_selector_matches(api: Api) -> None:
    tag = unique("dc")
    for name in ("a", "b"):
        api.post(CONFIGMAPS, {"metadata": {"name": f"{tag}-{name}", "labels": {"batch": tag}}})
    api.post(CONFIGMAPS, {"metadata": {"name": f"{tag}-keep"}})
    api.delete(CONFIGMAPS, query={"labelSelector": f"batch={tag}"})
    names = {i["metadata"]["name"] for i in api.get(CONFIGMAPS).body["items"]}
    assert f"{tag}-keep" in names and not {f"{tag}-a", f"{tag}-b"} & names


def test_server_side_dry_run_stores_nothing(api: Api) -> None:
    name = unique("cm")
    reply = api.post(CONFIGMAPS, {"metadata": {"name": name}}, query={"dryRun": "All"})
    assert reply.status == 201 and reply.body["metadata"]["name"] == name
    assert api.get(f"{CONFIGMAPS}/{name}").status == 404


@pytest.mark.sandbox_only
def test_a_client_resuming_from_bookmarks_misses_no_event(kube_sandbox: Kube, api: Api) -> None:
    """A bookmark's resourceVersion never runs ahead of an event the watch has not sent.

    kopf (like client-go) resumes from the last bookmark. The sandbox used to bookmark the
    cluster's current resourceVersion when its wait for the next event timed out, even if
    that event had just been queued — and then end the watch at its deadline without
    sending it: the client resumed past the event and never saw it. Here watches end every
    few tens of milliseconds (fractional timeoutSeconds: a sandbox affordance) with a
    bookmark each, while another thread changes one object as fast as it can.
    """
    name = unique("cm")
    created = api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"n": "0"}}).body
    written: list[int] = []
    stop = threading.Event()

    def change() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            reply = api.patch(f"{CONFIGMAPS}/{name}", {"data": {"n": str(n)}})
            written.append(int(reply.body["metadata"]["resourceVersion"]))

    thread = threading.Thread(target=change)
    thread.start()
    seen: list[int] = []
    since = created["metadata"]["resourceVersion"]
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            for event in api.watch(
                CONFIGMAPS,
                {
                    "fieldSelector": f"metadata.name={name}",
                    "resourceVersion": since,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "0.03",
                },
            ):
                since = event["object"]["metadata"]["resourceVersion"]
                if event["type"] == "MODIFIED":
                    seen.append(int(since))
    finally:
        stop.set()
        thread.join()
    for event in api.watch(
        CONFIGMAPS,
        {"fieldSelector": f"metadata.name={name}", "resourceVersion": since, "timeoutSeconds": "1"},
    ):
        seen.append(int(event["object"]["metadata"]["resourceVersion"]))
    assert len(written) > 50
    assert sorted(set(written) - set(seen)) == []


def test_a_fractional_watch_timeout_is_a_400_as_kube_apiserver_parses_an_integer(
    api: Api,
) -> None:
    """kopf sends `timeoutSeconds` as given; our operator once gave it 300.0 and every
    watch failed on a real API server while the sandbox accepted it."""
    reply = api.get(CONFIGMAPS, query={"watch": "true", "timeoutSeconds": "5.0"})
    assert reply.status == 400
    assert "5.0" in reply.body["message"]
