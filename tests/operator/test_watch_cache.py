"""The operator's watch cache (issue 25): listed once, then watched — an external change and
a deletion seen without a request, 410 Gone relisted, a dropped connection resumed from
where it was, a malformed event refused; reads go to the API while the cache is not known
good; closing leaves no task. On the sandbox and on the real control plane alike, through a
relay that can cut, expire and corrupt the watch (`watch_relay`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gemini_webhook_operator.kube import JSON, Kube, label_selector
from gemini_webhook_operator.receiver_apply import RECEIVERS
from gemini_webhook_operator.receiver_resources import OWNED_KINDS
from gemini_webhook_operator.watch_cache import Informer, WatchClient, WatchSettings, compact
from gemini_webhooks.kube_access import ClusterAccess
from gemini_webhooks.watch_events import Event
from tests.operator.watch_relay import Relay, relay_fixture  # noqa: F401 (a fixture)


def test_a_kept_object_has_no_managed_fields_and_shares_its_keys_with_the_others() -> None:
    text = json.dumps(
        {
            "metadata": {"name": "a", "managedFields": [{"manager": "x"}], "labels": {"k": "v"}},
            "data": {"secrets": "c2VjcmV0"},
            "items": [{"nested": 1}],
        }
    )
    first, second = compact(json.loads(text)), compact(json.loads(text))
    expected = json.loads(text)
    del expected["metadata"]["managedFields"]
    assert first == second == expected
    # Decoded apart, the same keys are one string each.
    for a, b in [
        (first, second),
        (first["metadata"], second["metadata"]),
        (first["metadata"]["labels"], second["metadata"]["labels"]),
        (first["items"][0], second["items"][0]),
    ]:
        assert all(x is y for x, y in zip(a, b, strict=True))
    source = json.loads(text)
    compact(source)
    assert "managedFields" in source["metadata"]  # the decoded object is not changed


NAMESPACE = "default"
FAST = WatchSettings(stale_after=1.0, backoff_initial=0.05, backoff_max=0.2, first_sync_wait=5.0)


@pytest.fixture
async def writer(kube: Any) -> AsyncIterator[Kube]:
    """Someone else: writes straight to the API, never through the relay."""
    async with contextlib.AsyncExitStack() as stack:
        client = Kube(ClusterAccess.load(str(kube.kubeconfig)))
        stack.push_async_callback(client.close)
        yield client


@pytest.fixture
async def reader(relay: Relay) -> AsyncIterator[Kube]:
    """The operator's client, through the relay."""
    async with contextlib.AsyncExitStack() as stack:
        client = Kube(relay.access(), watch_settings=FAST)
        stack.push_async_callback(client.close)
        yield client


@pytest.fixture
def labels() -> dict[str, str]:
    """This test's own label: other tests' objects on a shared API server are not selected."""
    return {"watch-cache-test": uuid.uuid4().hex[:12]}


def config_map(name: str, labels: dict[str, str], value: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
        "data": {"value": value},
    }


def secret(name: str, value: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"key": base64.b64encode(value.encode()).decode()},
    }


async def values(reader: Kube, labels: dict[str, str]) -> dict[str, str]:
    found = await reader.watched("v1", "ConfigMap", NAMESPACE, label_selector(labels))
    return {o["metadata"]["name"]: (o.get("data") or {}).get("value", "") for o in found}


async def eventually(
    what: str, check: Callable[[], Any], expected: Any, timeout: float = 15.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (seen := await check()) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: {seen!r}, expected {expected!r}")
        await asyncio.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def listed(reader: Kube, writer: Kube, labels: dict[str, str], *held: str) -> list[str]:
    """ConfigMaps of this test's holding `held`, written, then read through `reader`'s cache."""
    names = [unique("cm") for _ in held]
    for name, value in zip(names, held, strict=True):
        await writer.apply(config_map(name, labels, value))
    assert await values(reader, labels) == dict(zip(names, held, strict=True))
    return names


async def watching(reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]) -> str:
    """One ConfigMap of this test's, read through `reader`'s cache, its watch open."""
    (name,) = await listed(reader, writer, labels, "1")
    await relay.until("the watch", lambda: relay.open_watches == 1)
    return name


async def test_the_first_read_lists_once_and_later_reads_ask_nothing(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    a, b = await listed(reader, writer, labels, "1", "2")
    await relay.until("the watch", lambda: relay.verbs() == ["list", "watch"])
    for _ in range(5):
        assert await values(reader, labels) == {a: "1", b: "2"}
    assert relay.verbs() == ["list", "watch"]
    assert relay.watches()[0]["allowWatchBookmarks"] == "true"


async def test_an_external_change_and_a_deletion_are_seen_without_a_request(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    a, b = await listed(reader, writer, labels, "1", "1")
    await writer.apply(config_map(a, labels, "changed"))
    await eventually("the change", lambda: values(reader, labels), {a: "changed", b: "1"})
    await writer.delete("v1", "ConfigMap", NAMESPACE, b)
    await eventually("the deletion", lambda: values(reader, labels), {a: "changed"})
    assert relay.verbs() == ["list", "watch"]


@pytest.mark.parametrize("fault", ["gone_next", "malformed_next"], ids=["410", "malformed"])
async def test_410_gone_or_a_malformed_event_relists_and_follows_on(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str], fault: str
) -> None:
    """The next watch answers 410 Gone, or starts with an event whose object has no usable
    name: refused, nothing of it kept, listed afresh, and the watch followed again."""
    a = await watching(reader, writer, relay, labels)
    setattr(relay, fault, True)
    relay.cut()
    await relay.until("the relist", lambda: relay.verbs().count("list") == 2)
    assert await values(reader, labels) == {a: "1"}
    await writer.apply(config_map(a, labels, "after"))
    await eventually("the change after", lambda: values(reader, labels), {a: "after"})
    assert "direct" not in relay.verbs()


async def test_a_dropped_connection_resumes_from_the_last_version_seen(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    (a,) = await listed(reader, writer, labels, "1")
    changed = await writer.apply(config_map(a, labels, "2"))
    assert changed is not None
    await eventually("the change", lambda: values(reader, labels), {a: "2"})
    relay.cut()
    await writer.apply(config_map(a, labels, "while cut"))
    await relay.until("a second watch", lambda: len(relay.watches()) == 2)
    resumed_at = int(relay.watches()[1]["resourceVersion"])
    assert resumed_at >= int(changed["metadata"]["resourceVersion"])  # not from the start
    await eventually("the change made while cut", lambda: values(reader, labels), {a: "while cut"})
    assert relay.verbs().count("list") == 1  # resumed, not relisted


async def test_reads_go_to_the_api_while_the_watch_is_refused(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    name, a = unique("api-key"), unique("cm")
    await writer.apply(secret(name, "k1"))
    await writer.apply(config_map(a, labels, "1"))
    relay.refuse = 403
    assert await reader.secret_value(NAMESPACE, name, "key") == "k1"
    assert await values(reader, labels) == {a: "1"}
    await writer.apply(secret(name, "k2"))
    assert await reader.secret_value(NAMESPACE, name, "key") == "k2"  # not a stale copy
    assert relay.verbs().count("direct") == 3


async def test_a_cache_cut_off_longer_than_its_bound_is_not_read(
    reader: Kube, writer: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    a = await watching(reader, writer, relay, labels)
    relay.refuse = 500
    relay.cut()
    await writer.apply(config_map(a, labels, "2"))
    await asyncio.sleep(FAST.stale_after + 0.2)
    assert await values(reader, labels) == {a: "2"}
    assert "direct" in relay.verbs()


async def test_secrets_are_kept_whole_only_once_read_by_name(
    reader: Kube, writer: Kube, relay: Relay
) -> None:
    read, other, later = unique("read"), unique("other"), unique("later")
    await writer.apply(secret(read, "r1"))
    await writer.apply(secret(other, "o1"))
    assert await reader.secret_value(NAMESPACE, read, "key") == "r1"  # listed: no GET
    assert await reader.secret_value(NAMESPACE, later, "key") is None  # absent: no GET
    assert "direct" not in relay.verbs()
    # Kept by name only until read: one GET, then its changes come with the watch.
    assert await reader.secret_value(NAMESPACE, other, "key") == "o1"
    assert relay.verbs().count("direct") == 1
    await writer.apply(secret(other, "o2"))
    await writer.apply(secret(later, "l1"))
    await eventually("o2", lambda: reader.secret_value(NAMESPACE, other, "key"), "o2")
    await eventually("l1", lambda: reader.secret_value(NAMESPACE, later, "key"), "l1")
    assert relay.verbs().count("direct") == 1


async def test_the_operator_may_list_and_watch_every_kind_it_reads(
    reader: Kube, relay: Relay
) -> None:
    """Under the chart's RBAC (on the real control plane): a refused list or watch would
    not fail a reconciliation, only send it to the API every time."""
    await reader.read_secret(NAMESPACE, unique("absent"))
    served = [
        (api_version, kind)
        for api_version, kind in OWNED_KINDS
        if await reader.path(api_version, kind, NAMESPACE) is not None
    ]
    for api_version, kind in OWNED_KINDS:
        await reader.watched(api_version, kind, NAMESPACE, RECEIVERS)
    # Secrets and every receiver kind the API serves (HTTPRoutes where the Gateway API is).
    assert len(served) >= len(OWNED_KINDS) - 1
    assert relay.verbs().count("list") == len(served) + 1
    await relay.until("the watches", lambda: relay.open_watches >= len(served))
    assert "direct" not in relay.verbs()


async def test_own_writes_are_read_back_at_once(
    reader: Kube, relay: Relay, labels: dict[str, str]
) -> None:
    a = unique("cm")
    assert await values(reader, labels) == {}
    relay.refuse = 500
    relay.cut()  # no event can bring the write: only the write itself
    await reader.apply(config_map(a, labels, "mine"))
    assert await values(reader, labels) == {a: "mine"}
    await reader.delete("v1", "ConfigMap", NAMESPACE, a)
    assert await values(reader, labels) == {}
    assert "direct" not in relay.verbs()


async def test_close_ends_every_watch_and_leaves_no_task(
    kube: Any, relay: Relay, labels: dict[str, str]
) -> None:
    client = Kube(relay.access(), watch_settings=FAST)
    await values(client, labels)
    await client.read_secret(NAMESPACE, unique("absent"))
    await relay.until("two watches", lambda: relay.open_watches == 2)
    await client.close()
    tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("watch ")]
    assert tasks == []
    await relay.until("no open watch", lambda: relay.open_watches == 0)


def test_an_event_older_than_what_is_held_does_not_replace_it() -> None:
    """Our write (version 7) is in the cache before the watch delivers an earlier change
    (version 5): the older one is ignored; a later deletion is not."""
    informer = Informer(WatchClient(ClusterAccess(server="http://unused"), FAST), "/x", "")
    informer._synced = True  # as after its first listing
    ours = {"metadata": {"name": "a", "resourceVersion": "7"}, "data": {"v": "ours"}}
    older = {"metadata": {"name": "a", "resourceVersion": "5"}, "data": {"v": "older"}}
    informer.remember("a", ours)
    informer._apply(Event("MODIFIED", older, "5"))
    assert informer.cached("a") == (True, ours)
    informer._apply(Event("DELETED", {**ours, "metadata": {"name": "a"}}, "8"))
    assert informer.cached("a") == (True, None)
