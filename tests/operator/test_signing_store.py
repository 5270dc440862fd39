"""The signing Secret is written only over the version read (issue 24), by one server-side
apply (issue 25): a concurrent write between the read and the write (a second replica
rotating the same webhook) is merged with, never overwritten — neither writer's new
secret, shown by Gemini once, is lost; the Secret holds exactly the keys we wrote, also
one an operator before server-side apply wrote. On the sandbox and on the real control
plane (kube-apiserver's 409 on a stale resourceVersion, its field ownership)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import standardwebhooks

from gemini_webhook_operator import signing
from gemini_webhook_operator.kube import JSON, JSONPatch, Kube
from gemini_webhook_operator.signing_store import read_signing_secret, write_signing_secret
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import KEY_CURRENT, KEY_SECRETS, encode_data
from gemini_webhooks.kube_access import ClusterAccess
from tests.operator.harness import Cluster, is_ready, operator_running, resource

NOW = datetime.now(UTC).replace(microsecond=0)
FIRST = "whsec_" + "f" * 32
OURS = "whsec_" + "o" * 32
THEIRS = "whsec_" + "t" * 32
SECRET = "stored-signing-secret"


class Recording(Kube):
    """The operator's client, recording each request as (method, content type)."""

    def __init__(self, kube: Kube) -> None:
        super().__init__(kube.access)
        self.requests: list[tuple[str, str]] = []

    async def request(
        self, method: str, path: str, body: JSON | JSONPatch | None = None, **options: Any
    ) -> JSON | None:
        content_type = options.get("content_type", "application/json")
        self.requests.append((method, content_type if body is not None else ""))
        return await super().request(method, path, body, **options)


APPLY = ("PATCH", "application/apply-patch+yaml")
CREATE = ("POST", "application/json")


async def data_keys(client: Kube) -> set[str] | None:
    """The Secret's data keys (keys only: a failure message shows no secret material)."""
    stored = await client.get("v1", "Secret", "default", SECRET)
    return None if stored is None else set(stored.get("data") or {})


async def test_the_secret_holds_only_the_keys_written_also_after_an_older_operator(
    cluster: Cluster, emulator: Any
) -> None:
    """A Secret an operator before server-side apply created and patched (its fields owned
    by another manager, which an apply never removes) holds only our keys after our
    write; and a key our apply stops writing goes with it."""
    owner = await cluster.apply(
        resource("legacy", "https://hooks.example.com/l", emulator.base_url)
    )
    uid = owner["metadata"]["uid"]
    client = cluster.client
    data = {**encode_data(signing.fresh("wh1", FIRST, NOW)), "left-over": "eA=="}
    body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "data": data}
    try:
        # What the older operator did: create, then a merge patch over the version read.
        await client.create({**body, "metadata": {"name": SECRET, "namespace": "default"}})
        read = await client.get("v1", "Secret", "default", SECRET)
        assert read is not None
        rotated = encode_data(
            signing.rotated(
                signing.fresh("wh1", FIRST, NOW),
                "wh1",
                THEIRS,
                NOW,
                immediate=False,
                remote_truncated=(),
            )
        )
        version = read["metadata"]["resourceVersion"]
        await client.merge_patch(
            "v1",
            "Secret",
            "default",
            SECRET,
            {"metadata": {"resourceVersion": version}, "data": rotated},
        )

        base = await read_signing_secret(client, "default", SECRET, uid)
        assert base.secrets is not None and len(base.secrets.secrets) == 2
        only_ours = signing.SigningSecrets("wh1", base.secrets.secrets[:1])
        written = await write_signing_secret(client, owner, SECRET, only_ours, base)
        assert await data_keys(client) == {KEY_SECRETS, KEY_CURRENT}
        assert written.secrets == only_ours == await cluster.signing_secrets(secret_name=SECRET)
        assert written.owned

        # A set without a current secret has no `current` key: the apply drops it.
        none = signing.SigningSecrets("wh1", ())
        await write_signing_secret(client, owner, SECRET, none, written)
        assert await data_keys(client) == {KEY_SECRETS}
    finally:
        await client.delete("v1", "Secret", "default", SECRET)


async def test_a_second_writer_between_read_and_write_loses_neither_secret(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    owner = await cluster.apply(
        resource("stored", "https://hooks.example.com/s", emulator.base_url)
    )
    uid = owner["metadata"]["uid"]
    client = Recording(cluster.client)  # our writer, its requests recorded
    other = Kube(ClusterAccess.load(str(kube.kubeconfig)))  # the second writer: its own client
    try:
        absent = await read_signing_secret(client, "default", SECRET, uid)
        client.requests.clear()
        first = await write_signing_secret(
            client, owner, SECRET, signing.fresh("wh1", FIRST, NOW), absent
        )
        assert first.exists and first.owned and first.resource_version
        assert client.requests == [CREATE]  # the first write: a create

        # Both writers read the same version and rotate from it.
        base = await read_signing_secret(client, "default", SECRET, uid)
        assert base.secrets is not None
        theirs = await read_signing_secret(other, "default", SECRET, uid)
        rotated = signing.rotated(
            theirs.secrets,
            "wh1",
            THEIRS,
            NOW + timedelta(seconds=2),
            immediate=False,
            remote_truncated=(),
        )
        await write_signing_secret(other, owner, SECRET, rotated, theirs)
        ours = signing.rotated(
            base.secrets,
            "wh1",
            OURS,
            NOW + timedelta(seconds=1),
            immediate=False,
            remote_truncated=(),
        )
        client.requests.clear()
        written = await write_signing_secret(client, owner, SECRET, ours, base)
        # The apply over the version read refused (409), the Secret read again, ours merged
        # into the other writer's and applied over the version read then.
        assert client.requests == [APPLY, ("GET", ""), APPLY]

        stored = await cluster.signing_secrets(secret_name=SECRET)
        assert stored is not None and stored == written.secrets
        assert [s.secret for s in stored.secrets] == [THEIRS, OURS, FIRST]
        assert written.resource_version not in ("", base.resource_version)

        # A write over the version just written is plain (no conflict, nothing merged).
        pruned = signing.SigningSecrets("wh1", stored.secrets[:2])
        client.requests.clear()
        again = await write_signing_secret(client, owner, SECRET, pruned, written)
        assert client.requests == [APPLY]
        assert again.secrets == pruned
        assert await cluster.signing_secrets(secret_name=SECRET) == pruned
    finally:
        await other.close()
        await client.close()
        await cluster.client.delete("v1", "Secret", "default", SECRET)


async def test_two_writers_creating_the_secret_at_once_lose_neither_secret(
    cluster: Cluster, emulator: Any, kube: Any
) -> None:
    """Both read the Secret absent and create it, each with its own first secret: the second
    create is refused (409; an apply would have overwritten the first writer's data), the
    Secret read again and both sets merged into it."""
    owner = await cluster.apply(
        resource("created", "https://hooks.example.com/c", emulator.base_url)
    )
    uid = owner["metadata"]["uid"]
    client = Recording(cluster.client)
    other = Kube(ClusterAccess.load(str(kube.kubeconfig)))
    try:
        absent = await read_signing_secret(client, "default", SECRET, uid)
        theirs_absent = await read_signing_secret(other, "default", SECRET, uid)
        assert not absent.exists and not theirs_absent.exists
        await write_signing_secret(
            other, owner, SECRET, signing.fresh("wh1", THEIRS, NOW), theirs_absent
        )
        client.requests.clear()
        written = await write_signing_secret(
            client, owner, SECRET, signing.fresh("wh1", OURS, NOW + timedelta(seconds=1)), absent
        )
        assert client.requests == [CREATE, ("GET", ""), APPLY]
        stored = await cluster.signing_secrets(secret_name=SECRET)
        assert stored is not None and stored == written.secrets
        assert sorted(s.secret for s in stored.secrets) == sorted([OURS, THEIRS])
    finally:
        await other.close()
        await client.close()
        await cluster.client.delete("v1", "Secret", "default", SECRET)


async def test_a_rotation_racing_another_writer_keeps_both_secrets_and_verifies(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    """Between the operator's rotate call and its Secret write, another writer (as a second
    replica would) rotates the same webhook and stores its secret: the Secret ends with
    both, the newest (the one Gemini signs with) first, and a delivery verifies."""
    client = emulator.client()
    endpoint = emulator.endpoint()
    raced: list[str] = []
    async with operator_running(kube, drift_interval=1.0) as running:
        owner = await gemini.apply(resource("raced", endpoint.url, emulator.base_url))
        ready = await gemini.wait_for("raced", is_ready, timeout=30)
        webhook_id = ready["status"]["webhookId"]
        uid = owner["metadata"]["uid"]
        before = await gemini.signing_secrets("raced")
        assert before is not None and before.current is not None

        async def concurrent_rotation(step: str) -> None:
            if step != "rotate.called" or raced:
                return
            result = await asyncio.to_thread(
                client.webhooks.rotate_signing_secret,
                id=webhook_id,
                revocation_behavior=signing.REVOCATION_GRACE,  # type: ignore[arg-type]
            )
            raced.append(str(result.secret))
            name = f"raced{crd.DEFAULT_SIGNING_SECRET_SUFFIX}"
            held = await read_signing_secret(gemini.client, "default", name, uid)
            theirs = signing.rotated(
                held.secrets,
                webhook_id,
                raced[0],
                datetime.now(UTC) + timedelta(seconds=1),
                immediate=False,
                remote_truncated=(),
            )
            await write_signing_secret(gemini.client, owner, name, theirs, held)

        running.operator.step = concurrent_rotation
        await gemini.patch("raced", {"metadata": {"annotations": {crd.ANNOTATION_ROTATE: "now"}}})
        rotated = await gemini.wait_for(
            "raced",
            lambda o: (
                crd.ANNOTATION_ROTATE not in (o["metadata"].get("annotations") or {})
                and (o.get("status") or {}).get("lastRotationReason") == "RequestedByAnnotation"
            ),
            timeout=30,
        )
        assert raced, "the concurrent rotation never ran"
        held = await gemini.signing_secrets("raced")
        assert held is not None and held.current is not None
        kept = [s.secret for s in held.secrets]
        remote = client.webhooks.get(id=webhook_id)
        reported = [str(s.truncated_secret) for s in remote.signing_secrets or []]
        # Three secrets the remote signs with or still accepts: ours, the racer's, the first.
        assert len(reported) == 3, reported
        # Booleans, not secrets, in a failure message.
        racer_kept, first_kept = raced[0] in kept, before.current.secret in kept
        assert racer_kept and first_kept and len(kept) == 3, (
            f"{len(kept)} secrets kept; the racer's kept: {racer_kept}, the first's: {first_kept}"
        )
        newest_first = held.current.secret == raced[0]
        assert newest_first, "the Secret's current is not the secret Gemini signs with now"
        assert is_ready(rotated) and rotated["status"]["webhookId"] == webhook_id
        emulator.fire("batch.succeeded")
        (request,) = endpoint.wait_for(1)
        headers = {k.lower(): v for k, v in request.headers.items()}
        standardwebhooks.Webhook(held.current.secret).verify(request.body, headers)
