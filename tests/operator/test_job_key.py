"""The receiver's job key (dynamic webhooks for our own jobs): the operator creates its
Secret once, owned by the resource and mounted into the receiver, and never replaces it."""

from __future__ import annotations

import base64
from typing import Any

from gemini_webhook_operator import job_key, receiver_names, receiver_resources
from gemini_webhook_operator.kube import KubeError
from gemini_webhooks.contracts import dynamic_jobs, receiver_config
from gemini_webhooks.contracts.signing_secret import LABEL_COMPONENT, LABEL_WEBHOOK
from tests.operator import receiver_rendering
from tests.operator.harness import (
    Cluster,
    condition,
    is_ready,
    operator_running,
    resource,
    synced_reason,
)

SECRET = dynamic_jobs.job_key_secret_name("jobs")


def _stored(uid: str, key_text: str | None = None) -> dict[str, Any]:
    key_text = dynamic_jobs.generate_key() if key_text is None else key_text
    return {
        "metadata": {"ownerReferences": [{"uid": uid}]},
        "data": {dynamic_jobs.SECRET_KEY: base64.b64encode(key_text.encode()).decode()},
    }


def test_an_absent_secret_is_created() -> None:
    assert job_key.decide(None, "u1", SECRET).action == "create"


def test_an_owned_secret_with_a_key_is_kept() -> None:
    assert job_key.decide(_stored("u1"), "u1", SECRET).action == "keep"


def test_someone_elses_secret_is_refused_not_overwritten() -> None:
    verdict = job_key.decide(_stored("other"), "u1", SECRET)
    assert (verdict.action, verdict.reason) == ("refuse", job_key.REASON_CONFLICT)


def test_an_owned_secret_without_a_valid_key_is_refused_not_regenerated() -> None:
    verdict = job_key.decide(_stored("u1", "short"), "u1", SECRET)
    assert (verdict.action, verdict.reason) == ("refuse", job_key.REASON_UNREADABLE)
    assert "short" not in verdict.message


def _receiver(**dynamic: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "defaultRoute": {"targets": [{"url": "https://consumer.example.com/events"}]},
        "dynamic": {"enabled": True, "audiences": ["https://hooks.example.com/"], **dynamic},
    }


async def _key(gemini: Cluster) -> tuple[dict[str, Any], str]:
    secret = await gemini.client.get("v1", "Secret", "default", SECRET)
    assert secret is not None
    return secret, secret["data"][dynamic_jobs.SECRET_KEY]


async def test_the_job_key_is_created_once_owned_mounted_and_never_regenerated(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    body = resource("jobs", "unused", emulator.base_url, receiver=_receiver())
    del body["spec"]["url"]
    async with operator_running(kube):
        created = await gemini.apply(body)
        await gemini.wait_for("jobs", is_ready)
        secret, key = await _key(gemini)
        assert len(dynamic_jobs.decode_key(base64.b64decode(key).decode())) == 32
        (owner,) = secret["metadata"]["ownerReferences"]
        assert owner["uid"] == created["metadata"]["uid"]
        labels = secret["metadata"]["labels"]
        assert labels[LABEL_COMPONENT] == dynamic_jobs.COMPONENT_JOB_KEY
        assert labels[LABEL_WEBHOOK] == "jobs"

        name = receiver_names.receiver_name("jobs")
        deployment = await gemini.client.get("apps/v1", "Deployment", "default", name)
        assert deployment is not None
        pod = deployment["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "job-key")
        assert volume["secret"]["secretName"] == SECRET
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "job-key")
        assert mount["mountPath"] == receiver_names.JOB_KEY_DIR

        # A re-rendered receiver (new config, rolled Deployment) and re-reconciliations.
        fingerprint = (await gemini.get("jobs") or {})["status"]["receiverFingerprint"]
        await gemini.patch("jobs", {"spec": {"receiver": {"replicas": 2}}})
        await gemini.wait_for(
            "jobs", lambda o: o["status"].get("receiverFingerprint") not in (None, fingerprint)
        )
        await gemini.patch("jobs", {"spec": {"receiver": {"dynamic": {"enabled": False}}}})
        await gemini.wait_for("jobs", lambda o: o["metadata"]["generation"] == 3 and is_ready(o))
        await gemini.patch("jobs", {"spec": {"receiver": {"dynamic": {"enabled": True}}}})
        await gemini.wait_for("jobs", lambda o: o["metadata"]["generation"] == 4 and is_ready(o))
        assert (await _key(gemini))[1] == key


async def test_a_foreign_secret_of_that_name_stops_the_receiver_and_is_left_alone(
    gemini: Cluster, emulator: Any, kube: Any
) -> None:
    theirs = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": "default"},
        "data": {"other": base64.b64encode(b"theirs").decode()},
    }
    await gemini.client.create(theirs)
    try:
        body = resource("jobs", "unused", emulator.base_url, receiver=_receiver())
        del body["spec"]["url"]
        async with operator_running(kube):
            await gemini.apply(body)
            obj = await gemini.wait_for(
                "jobs", lambda o: synced_reason(o) == job_key.REASON_CONFLICT
            )
            assert SECRET in condition(obj, "Synced")["message"]
            name = receiver_names.receiver_name("jobs")
            assert await gemini.client.get("apps/v1", "Deployment", "default", name) is None
        secret = await gemini.client.get("v1", "Secret", "default", SECRET)
        assert secret is not None and set(secret["data"]) == {"other"}
    finally:
        await gemini.client.delete("v1", "Secret", "default", SECRET)


def test_the_opt_out_reaches_the_receiver_config() -> None:
    body = resource("jobs", "unused", "http://gemini.test")
    body["metadata"]["uid"] = "u1"
    body["spec"]["receiver"] = _receiver(acceptJobsFromAnyProject=True)
    objects = receiver_rendering.render(body, receiver_resources.ReceiverSettings())
    config_map = next(o for o in objects if o["kind"] == "ConfigMap")
    config = receiver_config.parse(config_map["data"][receiver_names.CONFIG_KEY])
    assert config.dynamic.accept_jobs_from_any_project
    assert config.dynamic.job_key_file == receiver_names.JOB_KEY_PATH


class _RacingKube:
    """Another replica creates the Secret between our read and our create."""

    def __init__(self, theirs: dict[str, Any]) -> None:
        self.theirs = theirs
        self.created: list[dict[str, Any]] = []

    async def read_secret(self, namespace: str, name: str) -> None:
        return None

    async def create(self, obj: dict[str, Any]) -> None:
        self.created.append(obj)
        raise KubeError(409, "already exists")

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.theirs


async def test_a_key_created_meanwhile_is_kept_not_replaced() -> None:
    body = {"metadata": {"name": "jobs", "namespace": "default", "uid": "u1"}}
    kube = _RacingKube(_stored("u1"))
    verdict = await job_key.ensure(kube, body)  # type: ignore[arg-type]
    assert verdict.action == "keep"
    assert len(kube.created) == 1  # one attempt, no overwrite afterwards
