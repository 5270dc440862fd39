"""The receiver's Secret watch against an API server that misbehaves on purpose: 410 Gone,
a malformed event, an oversized event, a watch the server ends. Each is survived: the
source lists again (an error counted, where it is one) and keeps following the Secret."""

from __future__ import annotations

import asyncio
import json
import secrets as pysecrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import REGISTRY

from gemini_webhook_receiver.secret_sources import KubernetesSecretSource
from gemini_webhook_receiver.watch_stream import (
    MAX_EVENT_BYTES,
    LineSplitter,
    MalformedEvent,
    OversizedEvent,
    ResourceVersionGone,
    WatchEvent,
    parse_event,
)
from gemini_webhooks.contracts import signing_secret as fmt
from gemini_webhooks.contracts.receiver_config import KubernetesSecretRef

from .conftest import new_secret, start_app

Watch = Callable[[web.StreamResponse], Awaitable[None]]


def _data(secret: str) -> dict[str, str]:
    now = datetime.now(UTC)
    signing = fmt.SigningSecrets(webhook_id="wh_w", secrets=(fmt.SigningSecret(secret, now),))
    return fmt.encode_data(signing)


def _event(kind: str, version: int, secret: str | None = None) -> bytes:
    obj: dict[str, Any] = {"kind": "Secret", "metadata": {"resourceVersion": str(version)}}
    if secret is not None:
        obj["data"] = _data(secret)
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


@dataclass
class FakeApi:
    """Answers lists with `secret` at `version`; each watch with the next of `watches`
    (then holds it open). Records every request as (verb, resourceVersion)."""

    secret: str
    version: int = 1
    watches: list[Watch] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # ends the held watches

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            self.requests.append(("list", None))
            return web.json_response(
                {
                    "kind": "SecretList",
                    "metadata": {"resourceVersion": str(self.version)},
                    "items": [{"metadata": {"name": "s"}, "data": _data(self.secret)}],
                }
            )
        self.requests.append(("watch", request.query.get("resourceVersion")))
        if self.watches:
            script = self.watches.pop(0)
            if isinstance(script, int):
                return web.Response(status=script)
        else:
            script = self._hold
        response = web.StreamResponse()
        await response.prepare(request)
        await script(response)
        return response

    async def _hold(self, response: web.StreamResponse) -> None:
        await self.closing.wait()

    def verbs(self) -> list[str]:
        return [verb for verb, _ in self.requests]


def _sends(*chunks: bytes) -> Watch:
    async def send(response: web.StreamResponse) -> None:
        for chunk in chunks:
            await response.write(chunk)

    return send


@dataclass
class Watched:
    api: FakeApi
    webhook: str
    updates: list[str | None]

    def errors(self) -> float:
        labels = {"webhook": self.webhook, "outcome": "error"}
        return REGISTRY.get_sample_value("gemini_receiver_secret_reloads_total", labels) or 0.0

    async def until(self, what: str, condition: Callable[[], bool], seconds: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not condition():
            assert asyncio.get_running_loop().time() < deadline, f"never {what}: {self.api}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def watch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[FakeApi], Awaitable[Watched]]]:
    sources: list[KubernetesSecretSource] = []
    runners: list[web.AppRunner] = []
    apis: list[FakeApi] = []

    async def start(api: FakeApi) -> Watched:
        apis.append(api)
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/default/secrets", api.handle)
        runner, port = await start_app(app)
        runners.append(runner)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        webhook = "w-" + pysecrets.token_hex(4)
        updates: list[str | None] = []
        source = KubernetesSecretSource(
            webhook,
            KubernetesSecretRef(namespace="default", name="s"),
            lambda got: updates.append(got.secrets[0].secret if got else None),
        )
        sources.append(source)
        await source.start()
        return Watched(api, webhook, updates)

    yield start
    for source in sources:
        await source.stop()
    for api in apis:
        api.closing.set()
    for runner in runners:
        await runner.cleanup()


async def test_gone_after_the_watch_moved_on_relists_at_once_without_an_error(
    watch: Callable[[FakeApi], Awaitable[Watched]],
) -> None:
    old, new = new_secret(), new_secret()
    api = FakeApi(old, watches=[_sends(_event("MODIFIED", 5, new), _gone_event())])
    watched = await watch(api)
    await watched.until("re-listed", lambda: api.verbs() == ["list", "watch", "list", "watch"])
    assert watched.updates == [old, new, old]  # the list's data is current again
    assert watched.errors() == 0


def _gone_event() -> bytes:
    status = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
    return json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"


async def test_gone_answered_to_a_watch_relists(
    watch: Callable[[FakeApi], Awaitable[Watched]],
) -> None:
    api = FakeApi(new_secret(), watches=[410])  # type: ignore[list-item]
    watched = await watch(api)
    await watched.until("re-listed", lambda: api.verbs()[:3] == ["list", "watch", "list"])
    assert watched.errors() == 0


async def test_a_malformed_event_is_counted_and_the_secret_listed_again(
    watch: Callable[[FakeApi], Awaitable[Watched]],
) -> None:
    old, new = new_secret(), new_secret()
    api = FakeApi(old, watches=[_sends(b'{"type": "MODIFIED", "object": \n')])
    watched = await watch(api)
    await watched.until("counted", lambda: watched.errors() == 1)
    api.secret, api.version = new, 9  # changed while the source was not watching
    await watched.until("re-listed", lambda: watched.updates == [old, new])
    await watched.until("watching", lambda: len(api.requests) == 4)
    assert api.requests[1:] == [("watch", "1"), ("list", None), ("watch", "9")]


async def test_an_oversized_event_is_counted_without_holding_it(
    watch: Callable[[FakeApi], Awaitable[Watched]],
) -> None:
    chunk = b"x" * 65536
    endless = _sends(*[chunk] * (MAX_EVENT_BYTES // len(chunk) + 2))
    api = FakeApi(new_secret(), watches=[endless])
    watched = await watch(api)
    await watched.until("counted", lambda: watched.errors() == 1)
    await watched.until("re-listed", lambda: api.verbs()[:3] == ["list", "watch", "list"])


async def test_a_watch_the_server_ends_is_resumed_from_the_last_version_seen(
    watch: Callable[[FakeApi], Awaitable[Watched]],
) -> None:
    old, new = new_secret(), new_secret()
    api = FakeApi(
        old, version=3, watches=[_sends(_event("MODIFIED", 7, new)), _sends(_event("BOOKMARK", 8))]
    )
    watched = await watch(api)
    await watched.until("resumed twice", lambda: len(api.requests) == 4)
    assert api.requests == [("list", None), ("watch", "3"), ("watch", "7"), ("watch", "8")]
    assert watched.updates == [old, new]
    assert watched.errors() == 0


# ---- the pure parts ----------------------------------------------------------------------


def test_lines_split_across_chunks_are_joined() -> None:
    lines = LineSplitter(limit=16)
    assert lines.feed(b'{"a"') == []
    assert lines.feed(b": 1}\n\n{}\n{") == [b'{"a": 1}', b"{}"]


def test_a_line_over_the_limit_is_refused_before_its_end_arrives() -> None:
    lines = LineSplitter(limit=16)
    lines.feed(b"x" * 16)
    with pytest.raises(OversizedEvent):
        lines.feed(b"x")
    with pytest.raises(OversizedEvent):
        LineSplitter(limit=16).feed(b"x" * 17 + b"\n")


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[]",
        b'{"type": "ADDED"}',
        b'{"type": "WHAT", "object": {}}',
        b'{"type": "ADDED", "object": {"data": {"k": 1}}}',
        b'{"type": "ADDED", "object": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
)
def test_malformed_events_are_refused(line: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(line)


def test_events_give_data_version_and_gone() -> None:
    assert parse_event(_event("DELETED", 4, new_secret())) == WatchEvent("DELETED", None, "4")
    assert parse_event(_event("BOOKMARK", 5)) == WatchEvent("BOOKMARK", None, "5")
    with pytest.raises(ResourceVersionGone):
        parse_event(_gone_event())
