"""The end-to-end scenario, step by step: what `--demo` shows and `tests/e2e` asserts.

Each step is a coroutine that either returns a one-line account of what held or raises
`StepFailed` saying what did not. The steps talk to the system the way a user does:
`kubectl` (the real binary) against the Kubernetes API, the `google-genai` SDK against
the Gemini API, the emulator's control API to make Gemini send events, `/metrics` of the
receiver and the operator, and what the sample consumer received.
"""

from __future__ import annotations

import asyncio
import string
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from google import genai
from google.genai import types

from gemini_webhook_operator.receiver_names import INTERNAL_PORT
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.events import ALL_EVENT_TYPES, SUBSCRIBABLE_EVENT_TYPES
from gemini_webhooks.contracts.service_endpoints import service_url
from gemini_webhooks.contracts.signing_secret import SigningSecrets, decode, matches_truncated
from gemini_webhooks.emulator.control import ControlClient
from gemini_webhooks.jobs.webhook_config import WebhookConfigError, from_cluster
from gemini_webhooks.sandbox.consumer import Arrival, SampleConsumer
from gemini_webhooks.sandbox.kubeapi import ReadApi
from gemini_webhooks.sandbox.metric_samples import Samples, moved, scrape, total
from gemini_webhooks.sandbox.pod_inputs import decode_secret_data
from gemini_webhooks.sandbox.proxy import service_key
from gemini_webhooks.sandbox.steps import Kubectl, StepFailed, poll

GWH = f"{crd.PLURAL}.{crd.API_VERSION}"
RECEIVER_SUFFIX = "-receiver"
PUBLIC_PORT = 80
DYNAMIC_METADATA = {"tour": "dynamic", "team": "sandbox"}


def all_webhooks(client: genai.Client) -> list[Any]:
    """Every remote webhook, page by page (`webhooks.list` returns one page per call)."""
    found: list[Any] = []
    token: str | None = None
    for _ in range(10_000):
        page = (
            client.webhooks.list(page_size=100, page_token=token)
            if token
            else (client.webhooks.list(page_size=100))
        )
        found.extend(page.webhooks or [])
        token = page.next_page_token
        if not token:
            return found
    raise StepFailed("webhooks.list never ended")


@dataclass
class Scenario:
    """The tour, against one running system (the sandbox; see tests/e2e for a real one)."""

    api: ReadApi
    kubectl: Kubectl
    namespace: str
    gemini_base_url: str
    api_key: str
    example_path: Path
    consumer: SampleConsumer | None = None
    control: ControlClient | None = None
    endpoints: Callable[[], Mapping[str, str]] = dict
    operator_metrics_url: str = ""
    say: Callable[[str], None] = lambda _line: None
    name: str = ""
    webhook_id: str = ""
    fired: dict[str, str] = field(default_factory=dict)  # webhook-id -> event type
    before: dict[str, Samples] = field(default_factory=dict)
    _client: genai.Client | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.name:
            import yaml

            document = yaml.safe_load(self.example_path.read_text())
            self.name = document["metadata"]["name"]

    # -- helpers ----------------------------------------------------------------------------

    @property
    def receiver(self) -> str:
        return self.name + RECEIVER_SUFFIX

    def gemini(self) -> genai.Client:
        # Kept: a genai.Client closes its transport when garbage collected, even while one
        # of its sub-clients (`client.webhooks`) is still in use.
        if self._client is None:
            self._client = genai.Client(
                api_key=self.api_key,
                http_options=types.HttpOptions(base_url=self.gemini_base_url),
            )
        return self._client

    def receiver_url(self) -> str:
        """The receiver's public URL, as Gemini is told it (cluster DNS name)."""
        return service_url(self.receiver, self.namespace, PUBLIC_PORT, "/")

    def receiver_metrics_url(self) -> str:
        key = service_key(self.receiver + "-internal", self.namespace, INTERNAL_PORT)
        address = self.endpoints().get(key)
        if address is None:
            raise StepFailed(f"the receiver's internal Service {key} has no loopback address")
        return f"http://{address}/metrics"

    async def resource(self) -> dict[str, Any] | None:
        return await self.api.get(GWH, self.namespace, self.name)

    async def condition(self, type_: str) -> dict[str, Any] | None:
        resource = await self.resource()
        for item in ((resource or {}).get("status") or {}).get("conditions") or []:
            if item.get("type") == type_:
                return dict(item)
        return None

    async def _held_secrets(self) -> tuple[dict[str, Any], SigningSecrets | None]:
        """The resource's status, and the signing secrets its Secret holds (None: no Secret)."""
        resource = await self.resource()
        status = (resource or {}).get("status") or {}
        name = status.get("signingSecretName") or self.name + crd.DEFAULT_SIGNING_SECRET_SUFFIX
        secret = await self.api.get("secrets", self.namespace, name)
        return status, None if secret is None else decode(decode_secret_data(secret))

    async def signing_secrets(self) -> int:
        _, held = await self._held_secrets()
        return 0 if held is None else len(held.secrets)

    async def _scrape_all(self) -> dict[str, Samples]:
        found = {"receiver": await scrape(self.receiver_metrics_url())}
        if self.operator_metrics_url:
            found["operator"] = await scrape(self.operator_metrics_url)
        return found

    async def _scraped(self) -> bool:
        try:
            self.before = await self._scrape_all()
        except (StepFailed, aiohttp.ClientError, OSError):
            return False
        return True

    def _need_events(self) -> tuple[ControlClient, SampleConsumer]:
        if self.control is None or self.consumer is None:
            raise StepFailed("this step needs the emulator's control API and the consumer")
        return self.control, self.consumer

    async def _fire(self, event_type: str, **kwargs: Any) -> list[str]:
        control, _ = self._need_events()
        result = await asyncio.to_thread(control.fire, event_type, **kwargs)
        ids: list[str] = list(result["deliveries"])
        for delivery_id in ids:
            self.fired[delivery_id] = event_type
        return ids

    async def _arrivals(self, ids: list[str], within: float, what: str) -> list[Arrival]:
        _, consumer = self._need_events()
        wanted = set(ids)

        def have(arrivals: list[Arrival]) -> bool:
            return wanted <= {a.webhook_id for a in arrivals}

        try:
            arrivals = await consumer.wait_for(have, within=within)
        except TimeoutError:
            got = {a.webhook_id for a in consumer.arrivals}
            missing = sorted(wanted - got)
            raise StepFailed(f"{what}: {len(missing)} of {len(wanted)} never arrived") from None
        return [a for a in arrivals if a.webhook_id in wanted]

    # -- the steps --------------------------------------------------------------------------

    async def apply(self) -> str:
        await self.kubectl("apply", "-f", str(self.example_path))
        return f"kubectl apply -f {self.example_path.name}: geminiwebhook/{self.name} created"

    async def wait_ready(self, within: float = 90.0) -> str:
        await self.kubectl(
            "wait",
            f"--for=condition={crd.CONDITION_READY}",
            f"geminiwebhook/{self.name}",
            "-n",
            self.namespace,
            f"--timeout={int(within)}s",
        )

        async def receiver_ready() -> bool:
            deployment = await self.api.get("deployments.apps/v1", self.namespace, self.receiver)
            return bool(deployment and (deployment.get("status") or {}).get("readyReplicas"))

        await poll(receiver_ready, within=within, what=f"Deployment {self.receiver} ready")
        resource = await self.resource() or {}
        self.webhook_id = (resource.get("status") or {}).get("webhookId", "")
        if not self.webhook_id:
            raise StepFailed("Ready, but status.webhookId is empty")
        remote = await asyncio.to_thread(self.gemini().webhooks.get, id=self.webhook_id)
        if self.control is not None:  # loopback /metrics exist only in the sandbox
            # Ready is not yet reachable: on a real node kube-proxy programs the Service's
            # new endpoints a moment later (and the sandbox learns its ClusterIP).
            await poll(self._scraped, within=within, what="the receiver's /metrics")
        return (
            f"Ready; webhook {self.webhook_id} registered at {remote.uri}; "
            f"receiver {self.receiver} running"
        )

    async def static_events(self, within: float = 30.0) -> str:
        ids: dict[str, list[str]] = {}
        for event_type in SUBSCRIBABLE_EVENT_TYPES:
            ids[event_type] = await self._fire(event_type)
            if not ids[event_type]:
                raise StepFailed(f"the emulator sent {event_type} to no webhook")
        flat = [i for group in ids.values() for i in group]
        arrivals = await self._arrivals(flat, within, "static events")
        again = sorted(str(i) for i, n in Counter(a.webhook_id for a in arrivals).items() if n > 1)
        if again:
            raise StepFailed(f"{len(again)} events reached the consumer more than once: {again}")
        for arrival in arrivals:
            expected = "/batches" if (arrival.event_type or "").startswith("batch.") else "/events"
            if arrival.path != expected:
                raise StepFailed(f"{arrival.event_type} was routed to {arrival.path}")
            self.say(f"  {arrival.event_type:<28} -> consumer {arrival.path}")
        return (
            f"all {len(ids)} subscribable types arrived, each exactly once, verified (HMAC) "
            "and routed"
        )

    async def _get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        return await self.api.get(GWH if kind == crd.KIND else "secrets", namespace, name)

    async def dynamic_events(self, within: float = 30.0) -> str:
        # As a user builds it: the receiver's URI, the metadata signed with its job key.
        try:
            config = await from_cluster(self._get, self.name, self.namespace, DYNAMIC_METADATA)
        except WebhookConfigError as error:
            raise StepFailed(f"webhook-config: {error}") from None
        if config["uris"] != [self.receiver_url()]:
            raise StepFailed(f"webhook-config names {config['uris']}, not the receiver")
        signed = config["user_metadata"]
        flat: list[str] = []
        for event_type in ALL_EVENT_TYPES:
            flat += await self._fire(event_type, webhook_config=config)
        arrivals = await self._arrivals(flat, within, "dynamic events")
        for arrival in arrivals:
            body = arrival.body if isinstance(arrival.body, dict) else {}
            if arrival.path != "/dynamic" or body.get("user_metadata") != signed:
                raise StepFailed(
                    f"dynamic {arrival.event_type} arrived at {arrival.path} with "
                    f"user_metadata {body.get('user_metadata')}"
                )
            self.say(f"  {arrival.event_type:<28} -> consumer {arrival.path} (JWT)")
        return (
            f"all {len(ALL_EVENT_TYPES)} types arrived as dynamic deliveries (RS256 JWT, "
            "the job's user_metadata signed with the receiver's job key)"
        )

    async def rotate_under_traffic(self, within: float = 60.0, rate: float = 10.0) -> str:
        control, _ = self._need_events()
        before = await self._scrape_all()
        rejected_before = total(
            before["receiver"], "gemini_receiver_deliveries_total", outcome="rejected"
        )
        resource = await self.resource() or {}
        last_rotation = (resource.get("status") or {}).get("lastRotationTime")
        stop = asyncio.Event()
        sent: list[str] = []

        async def traffic() -> None:
            while not stop.is_set():
                sent.extend(await self._fire("interaction.completed"))
                await asyncio.sleep(1 / rate)

        _, consumer = self._need_events()
        echo, consumer.echo = consumer.echo, None  # one summary line instead of hundreds
        pump = asyncio.create_task(traffic())
        try:
            await asyncio.sleep(1.0)
            await self.request_rotation()

            async def rotated() -> bool:
                status = ((await self.resource()) or {}).get("status") or {}
                return status.get("lastRotationTime") not in (None, last_rotation)

            await poll(rotated, within=within, what="status.lastRotationTime to move")
            secrets_held = await self.signing_secrets()
            await asyncio.sleep(2.0)  # traffic signed with both secrets, then the new one
        finally:
            stop.set()
            await pump
            consumer.echo = echo
        await self._arrivals(sent, within, "events sent during the rotation")
        deliveries = await asyncio.to_thread(control.deliveries, webhook_id=self.webhook_id)
        failed_attempts = [
            a
            for d in deliveries
            if d["id"] in set(sent)
            for a in d["attempts"]
            if not 200 <= (a.get("status_code") or 0) < 300
        ]
        after = await self._scrape_all()
        rejected = (
            total(after["receiver"], "gemini_receiver_deliveries_total", outcome="rejected")
            - rejected_before
        )
        if rejected or failed_attempts:
            raise StepFailed(
                f"{int(rejected)} deliveries rejected by the receiver and "
                f"{len(failed_attempts)} failed attempts during the rotation"
            )
        if secrets_held < 2:
            raise StepFailed(f"the Secret holds {secrets_held} secret(s) after a Grace rotation")
        return (
            f"{len(sent)} events during the rotation, all delivered; 0 verification failures; "
            f"the Secret holds {secrets_held} secrets (new + previous in grace)"
        )

    async def rotate(self, within: float = 60.0) -> str:
        """A requested rotation (no traffic): the Secret gains the new secret, keeps the old."""
        resource = await self.resource() or {}
        last_rotation = (resource.get("status") or {}).get("lastRotationTime")
        await self.request_rotation()

        async def rotated() -> bool:
            status = ((await self.resource()) or {}).get("status") or {}
            moved_on = status.get("lastRotationTime") not in (None, last_rotation)
            return moved_on and await self.signing_secrets() >= 2

        await poll(rotated, within=within, what="a rotation with the previous secret kept")
        return "rotated; the previous secret is kept for its grace period"

    async def request_rotation(self) -> None:
        await self.kubectl(
            "annotate",
            "--overwrite",
            f"geminiwebhook/{self.name}",
            "-n",
            self.namespace,
            f"{crd.ANNOTATION_ROTATE}=requested-{time.time_ns()}",
        )

    async def secret_matches_remote(self) -> bool:
        """Does the Secret's current secret match one the remote webhook reports valid?"""
        status, held = await self._held_secrets()
        if held is None or not status.get("webhookId"):
            return False
        current = held.current
        remote = await asyncio.to_thread(self.gemini().webhooks.get, id=status["webhookId"])
        truncated = [s.truncated_secret or "" for s in remote.signing_secrets or []]
        return current is not None and any(matches_truncated(current.secret, t) for t in truncated)

    async def current_secret_matches(self, truncated: str) -> bool:
        """Is the Secret's current secret the one Gemini shows as `truncated`?"""
        _, held = await self._held_secrets()
        current = held.current if held is not None else None
        return current is not None and matches_truncated(current.secret, truncated)

    async def remote_webhooks_of_resource(self) -> int:
        """How many remote webhooks carry this resource's UID marker (should be one)."""
        client = self.gemini()
        resource = await self.resource() or {}
        uid = resource.get("metadata", {}).get("uid")
        if not uid:
            raise StepFailed(f"geminiwebhook/{self.name} has no uid")

        def count() -> int:
            return sum(1 for w in all_webhooks(client) if uid in (w.name or ""))

        return await asyncio.to_thread(count)

    async def metrics_moved(self) -> str:
        after = await self._scrape_all()
        lines = []
        for component, samples in after.items():
            prefix = "gemini_receiver_" if component == "receiver" else "gemini_webhook_operator_"
            grown = moved(self.before.get(component, {}), samples, prefix)
            for name, delta in grown[:8]:
                lines.append(f"  {component:<9} {name:<90} +{delta:g}")
        if not lines:
            raise StepFailed("no counter moved")
        for line in lines:
            self.say(line)
        verified = total(after["receiver"], "gemini_receiver_deliveries_total", outcome="accepted")
        if verified < len(self.fired):
            raise StepFailed(
                f"the receiver counts {verified:g} accepted deliveries; {len(self.fired)} fired"
            )
        return f"{len(lines)} counters moved; receiver accepted {verified:g} deliveries"

    async def delete(self, within: float = 60.0) -> str:
        client = self.gemini()

        def remote_ids() -> set[str]:
            return {str(w.id) for w in all_webhooks(client)}

        if not self.webhook_id or self.webhook_id not in await asyncio.to_thread(remote_ids):
            raise StepFailed(
                f"webhook {self.webhook_id or '(none)'} is not registered to begin with"
            )
        await self.kubectl(
            "delete",
            f"geminiwebhook/{self.name}",
            "-n",
            self.namespace,
            "--wait=true",
            f"--timeout={int(within)}s",
        )

        async def remote_gone() -> bool:
            return self.webhook_id not in await asyncio.to_thread(remote_ids)

        await poll(remote_gone, within=within, what=f"webhook {self.webhook_id} to be deleted")

        async def receiver_gone() -> bool:
            return await self.api.get("deployments.apps/v1", self.namespace, self.receiver) is None

        await poll(receiver_gone, within=within, what="the receiver Deployment to be collected")
        return f"resource deleted; webhook {self.webhook_id} gone from the Gemini API"


EXAMPLE_TEMPLATE = Path(__file__).parent / "examples" / "sandbox-demo.yaml"


def real_cluster_example(name: str, namespace: str, receiver_url: str) -> str:
    """The sandbox's demo resource for a real cluster and the real Gemini API.

    The same events, receiver and routes, but the default API base URL (Gemini's), the
    receiver's public `receiver_url` as the webhook URL, and dynamic webhooks verified
    against Google's JWKS with that URL as the audience."""
    import yaml

    document = yaml.safe_load(
        string.Template(EXAMPLE_TEMPLATE.read_text()).substitute(
            NAME=name, NAMESPACE=namespace, EMULATOR_URL="https://unused.invalid"
        )
    )
    spec = document["spec"]
    spec.pop("apiBaseUrl")
    spec["url"] = receiver_url
    spec["receiver"]["dynamic"] = {"enabled": True, "audiences": [receiver_url]}
    return str(yaml.safe_dump(document, sort_keys=False))
