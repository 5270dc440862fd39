"""The receiver's Kubernetes objects, rendered from a GeminiWebhook — pure rendering."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import kubernetes_validate
import pytest

from gemini_webhook_operator.receiver_deployment import ANNOTATION_CONFIG_HASH
from gemini_webhook_operator.receiver_names import (
    CONFIG_KEY,
    CONFIG_PATH,
    JOB_KEY_DIR,
    internal_service_name,
    ping_status_pod_urls,
    ping_status_url,
    receiver_name,
    selector_labels,
)
from gemini_webhook_operator.receiver_resources import ReceiverRenderError, ReceiverSettings
from gemini_webhooks.contracts import receiver_config
from gemini_webhooks.contracts.crd import API_VERSION, KIND
from gemini_webhooks.contracts.egress_proxy import ProxySettings
from gemini_webhooks.tracing import check as check_tracing
from gemini_webhooks.tracing import configured as tracing_configured
from tests.operator.receiver_rendering import public_url, render

SETTINGS = ReceiverSettings(image="registry.example/gwo:1.0")
K8S_VERSION = "1.33.0"


def webhook(**receiver: Any) -> dict[str, Any]:
    section = {
        "enabled": True,
        "routes": [
            {
                "name": "batches",
                "match": {"types": ["batch.*"], "sources": ["static"]},
                "targets": [{"service": {"name": "batch-handler", "port": 8080, "path": "/e"}}],
            }
        ],
        "defaultRoute": {"targets": [{"url": "http://catch-all.team-a.svc:8080/"}]},
    }
    section.update(receiver)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "orders", "namespace": "team-a", "uid": "uid-1", "generation": 1},
        "spec": {
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
            "receiver": section,
        },
    }


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"] if o["kind"] != "Service" else o["metadata"]["name"]: o for o in objects}


def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")


def test_one_replica_renders_config_rbac_deployment_and_services_without_pdb() -> None:
    kinds = sorted(o["kind"] for o in render(webhook(), SETTINGS))
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "Service",
        "Service",
        "ServiceAccount",
    ]


def test_more_than_one_replica_adds_a_pod_disruption_budget() -> None:
    objects = render(webhook(replicas=3), SETTINGS)
    pdb = next(o for o in objects if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment(objects)["spec"]["selector"]
    assert deployment(objects)["spec"]["replicas"] == 3


@pytest.mark.parametrize("replicas", [1, 2])
def test_every_object_validates_strictly_against_the_kubernetes_schema(replicas: int) -> None:
    for obj in render(webhook(replicas=replicas), SETTINGS):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_every_object_is_owned_by_the_geminiwebhook_and_labelled() -> None:
    for obj in render(webhook(replicas=2), SETTINGS):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": "orders",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == (
            "gemini-webhook-operator"
        )
        assert obj["metadata"]["labels"]["gemini.webhooks.dev/webhook"] == "orders"


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    pod = deployment(render(webhook(), SETTINGS))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert isinstance(context["runAsUser"], int) and context["runAsUser"] > 0
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert "add" not in context["capabilities"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not any(key in pod for key in ("hostNetwork", "hostPID", "hostIPC", "hostAliases"))
    assert all("hostPath" not in v for v in pod["volumes"])


def test_role_allows_only_reading_and_watching_its_own_secret() -> None:
    role = by_kind(render(webhook(), SETTINGS))["Role"]
    assert role["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["orders-signing-secret"],
            "verbs": ["get", "list", "watch"],
        }
    ]


def test_role_follows_a_custom_signing_secret_name() -> None:
    resource = webhook()
    resource["spec"]["signingSecretName"] = "custom"
    role = by_kind(render(resource, SETTINGS))["Role"]
    assert role["rules"][0]["resourceNames"] == ["custom"]


def test_role_binding_binds_the_receivers_service_account_to_its_role() -> None:
    objects = by_kind(render(webhook(), SETTINGS))
    binding, account = objects["RoleBinding"], objects["ServiceAccount"]
    assert binding["roleRef"]["name"] == objects["Role"]["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": "team-a"}
    ]
    pod = deployment(list(objects.values()))["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]


def test_config_map_holds_a_valid_receiver_config_mapped_from_the_spec() -> None:
    objects = by_kind(
        render(
            webhook(
                dynamic={"enabled": True, "audiences": ["https://hooks.example/"]},
                replayTolerance="2m",
                dedup={"ttl": "30h"},
            ),
            SETTINGS,
        )
    )
    config = receiver_config.parse(objects["ConfigMap"]["data"][CONFIG_KEY])
    (static,) = config.static_webhooks
    assert static.secrets.kubernetes is not None
    assert (static.secrets.kubernetes.namespace, static.secrets.kubernetes.name) == (
        "team-a",
        "orders-signing-secret",
    )
    assert config.routes[0].match.sources == ["static"]
    target = config.routes[0].targets[0].service
    assert target is not None
    assert (target.name, target.namespace, target.port, target.path) == (
        "batch-handler",
        "team-a",
        8080,
        "/e",
    )
    assert config.default_route is not None
    assert config.dynamic.enabled and config.dynamic.audiences == ["https://hooks.example/"]
    assert config.replay.tolerance_seconds == 120
    assert config.dedup.ttl_seconds == 30 * 3600
    assert config.dedup.backend == "memory"


def test_redis_makes_deduplication_shared() -> None:
    objects = by_kind(render(webhook(redis={"url": "redis://redis.team-a.svc:6379/0"}), SETTINGS))
    config = receiver_config.parse(objects["ConfigMap"]["data"][CONFIG_KEY])
    assert config.redis is not None and config.dedup.backend == "redis"


def test_redis_durability_settings_are_rendered() -> None:
    redis = {
        "sentinel": {"addresses": ["sentinel.data.svc:26379"], "masterName": "primary", "db": 3},
        "acceptDataLossRisk": True,
        "waitReplicas": 1,
        "waitTimeout": "2s",
    }
    objects = by_kind(render(webhook(redis=redis), SETTINGS))
    config = receiver_config.parse(objects["ConfigMap"]["data"][CONFIG_KEY])
    assert config.redis is not None and config.redis.sentinel is not None
    assert config.redis.url is None
    assert config.redis.sentinel.addresses == ["sentinel.data.svc:26379"]
    assert (config.redis.sentinel.master_name, config.redis.sentinel.db) == ("primary", 3)
    assert config.redis.accept_data_loss_risk is True
    assert (config.redis.wait_replicas, config.redis.wait_timeout_seconds) == (1, 2.0)


def test_redis_defaults_require_persistence_and_do_not_wait() -> None:
    objects = by_kind(render(webhook(redis={"url": "redis://redis:6379/0"}), SETTINGS))
    config = receiver_config.parse(objects["ConfigMap"]["data"][CONFIG_KEY])
    assert config.redis is not None
    assert (config.redis.accept_data_loss_risk, config.redis.wait_replicas) == (False, 0)


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({}, "exactly one of 'url' or 'sentinel'"),
        (
            {"url": "redis://r:6379/0", "sentinel": {"addresses": ["s:1"], "masterName": "m"}},
            "exactly one of 'url' or 'sentinel'",
        ),
        ({"sentinel": {"addresses": ["no-port"], "masterName": "m"}}, r"sentinel\.addresses"),
        (
            {"url": "redis://r:6379/0", "waitTimeout": "0s"},
            r"redis\.waitTimeout: must be at least 1s",
        ),
        ({"url": "redis://r:6379/0", "waitReplicas": -1}, r"redis\.waitReplicas"),
    ],
)
def test_bad_redis_settings_are_refused_by_name(redis: dict[str, Any], message: str) -> None:
    with pytest.raises(ReceiverRenderError, match=message):
        render(webhook(redis=redis), SETTINGS)


def test_container_runs_the_receiver_on_the_mounted_config() -> None:
    objects = render(webhook(), SETTINGS)
    pod = deployment(objects)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["receiver", "--config", CONFIG_PATH]
    assert container["image"] == "registry.example/gwo:1.0"
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert CONFIG_PATH.startswith(mount["mountPath"] + "/")
    volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert volume["configMap"]["name"] == by_kind(objects)["ConfigMap"]["metadata"]["name"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_image_and_resources_in_the_spec_override_the_operator_defaults() -> None:
    objects = render(webhook(image="mine:2", resources={"limits": {"memory": "512Mi"}}), SETTINGS)
    (container,) = deployment(objects)["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "mine:2"
    assert container["resources"] == {"limits": {"memory": "512Mi"}}


def test_a_config_change_changes_the_pod_template_hash() -> None:
    before = deployment(render(webhook(), SETTINGS))
    after = deployment(render(webhook(replayTolerance="1m"), SETTINGS))
    annotation = before["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    assert (
        annotation != after["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_HASH]
    )


def test_a_secret_rotation_leaves_every_object_unchanged() -> None:
    before = webhook()
    after = copy.deepcopy(before)
    after["status"] = {
        "webhookId": "wh_1",
        "lastRotationTime": "2026-11-25T10:00:00Z",
        "lastRotationReason": "DueByPolicy",
    }
    assert render(before, SETTINGS) == render(after, SETTINGS)


def test_a_replica_change_does_not_roll_the_pods() -> None:
    one = deployment(render(webhook(), SETTINGS))["spec"]["template"]
    three = deployment(render(webhook(replicas=3), SETTINGS))["spec"]["template"]
    assert one["metadata"] == three["metadata"]


PROXY = ProxySettings.parse("http://proxy.corp.example:3128", "", ".svc,10.244.0.0/16")


def _env_list(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = deployment(objects)["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    return env


def test_the_operators_proxy_is_every_receivers_standard_proxy_environment() -> None:
    with_proxy = dataclasses.replace(SETTINGS, proxy=PROXY)
    env = _env_list(render(webhook(), with_proxy))
    assert env[-2:] == [
        {"name": "HTTP_PROXY", "value": "http://proxy.corp.example:3128"},
        {"name": "NO_PROXY", "value": ".svc,10.244.0.0/16"},
    ]
    assert ProxySettings.from_environ({e["name"]: e.get("value", "") for e in env}) == PROXY


def test_without_a_proxy_the_deployment_is_as_before_it_existed() -> None:
    """Unset, nothing is rendered: an upgrade leaves existing receivers' pods alone."""
    without = render(webhook(), SETTINGS)
    assert [e["name"] for e in _env_list(without)] == ["PYTHONDONTWRITEBYTECODE", "POD_NAME"]
    with_proxy = deployment(render(webhook(), dataclasses.replace(SETTINGS, proxy=PROXY)))
    del with_proxy["spec"]["template"]["spec"]["containers"][0]["env"][-2:]
    assert with_proxy == deployment(without)


def test_a_proxy_change_rolls_the_receivers() -> None:
    before = deployment(render(webhook(), dataclasses.replace(SETTINGS, proxy=PROXY)))
    moved = dataclasses.replace(PROXY, http="http://proxy2.corp.example:3128")
    after = deployment(render(webhook(), dataclasses.replace(SETTINGS, proxy=moved)))
    assert before["spec"]["template"] != after["spec"]["template"]
    assert {"name": "HTTP_PROXY", "value": "http://proxy2.corp.example:3128"} in _env_list([after])


def test_disabled_receiver_renders_nothing() -> None:
    assert render(webhook(enabled=False), SETTINGS) == []
    resource = webhook()
    del resource["spec"]["receiver"]
    assert render(resource, SETTINGS) == []


def test_receiver_without_a_place_for_unroutable_events_is_rejected() -> None:
    resource = webhook()
    del resource["spec"]["receiver"]["defaultRoute"]
    with pytest.raises(ReceiverRenderError, match="set `defaultRoute` or `deadLetter`"):
        render(resource, SETTINGS)


def test_invalid_receiver_section_is_rejected_naming_the_field() -> None:
    with pytest.raises(ReceiverRenderError, match=r"spec\.receiver\.service\.port"):
        render(webhook(service={"port": 0}), SETTINGS)


def test_a_dynamic_receiver_mounts_its_job_key_and_reads_it_from_the_config() -> None:
    objects = render(webhook(dynamic={"enabled": True, "audiences": ["https://h/"]}), SETTINGS)
    config = receiver_config.parse(by_kind(objects)["ConfigMap"]["data"][CONFIG_KEY])
    assert config.dynamic.job_key_file == f"{JOB_KEY_DIR}/job-key"
    assert not config.dynamic.accept_jobs_from_any_project
    pod = deployment(objects)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == "orders-dynamic-job-key"
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts[volume["name"]] == {
        "name": volume["name"],
        "mountPath": JOB_KEY_DIR,
        "readOnly": True,
    }
    # The key is never rendered (a rendering is re-applied; the key must never change).
    assert not [o for o in objects if o["kind"] == "Secret"]


def test_a_receiver_without_dynamic_webhooks_mounts_no_job_key() -> None:
    pod = deployment(render(webhook(), SETTINGS))["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v]


def test_dynamic_without_audience_is_rejected() -> None:
    with pytest.raises(ReceiverRenderError, match="audiences"):
        render(webhook(dynamic={"enabled": True}), SETTINGS)


def test_resource_without_uid_cannot_be_owned_and_is_rejected() -> None:
    resource = webhook()
    del resource["metadata"]["uid"]
    with pytest.raises(ReceiverRenderError, match=r"metadata\.uid"):
        render(resource, SETTINGS)


def test_long_resource_names_still_give_valid_service_names() -> None:
    resource = webhook()
    resource["metadata"]["name"] = "a" * 200
    objects = render(resource, SETTINGS)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        if obj["kind"] == "Service":
            assert len(obj["metadata"]["name"]) <= 63
    assert receiver_name("a" * 200) != receiver_name("a" * 199)


def test_urls_are_the_services_cluster_dns_names() -> None:
    resource = webhook(service={"port": 8443})
    name = receiver_name("orders")
    internal = internal_service_name("orders")
    assert public_url(resource) == f"http://{name}.team-a.svc.cluster.local:8443/"
    assert ping_status_url(resource, cluster_domain="corp.internal") == (
        f"http://{internal}.team-a.svc.corp.internal:9090/internal/pings"
    )


def receiver_pod(
    name: str, ip: str | None = "10.0.0.1", *, ready: bool = True, **metadata: Any
) -> dict[str, Any]:
    """A receiver Pod as the API serves it (labels from the Deployment's selector)."""
    return {
        "metadata": {"name": name, "labels": dict(selector_labels("orders")), **metadata},
        "status": {
            **({"podIP": ip} if ip else {}),
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_each_ready_receiver_pod_is_asked_for_its_pings_at_its_ip() -> None:
    pods = [
        receiver_pod("orders-a", "10.0.0.1"),
        receiver_pod("orders-b", "fd00::2"),
        receiver_pod("orders-c", "10.0.0.3", ready=False),  # takes no deliveries
        receiver_pod("orders-d", "10.0.0.4", deletionTimestamp="2026-12-05T10:00:00Z"),
        receiver_pod("orders-e", None),  # not scheduled yet
    ]
    assert ping_status_pod_urls(webhook(), pods) == {
        "orders-a": "http://10.0.0.1:9090/internal/pings",
        "orders-b": "http://[fd00::2]:9090/internal/pings",
    }


def test_only_this_receivers_pods_are_asked() -> None:
    other = receiver_pod("other-a", "10.0.0.9")
    other["metadata"]["labels"] = selector_labels("other")
    assert list(ping_status_pod_urls(webhook(), [other, receiver_pod("orders-a")])) == ["orders-a"]


# --- tracing -------------------------------------------------------------------------


def _env(objects: list[dict[str, Any]]) -> dict[str, Any]:
    [container] = deployment(objects)["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_without_tracing_the_receiver_gets_no_otel_environment() -> None:
    assert not [name for name in _env(render(webhook(), SETTINGS)) if name.startswith("OTEL_")]


def test_tracing_sets_the_receivers_standard_otel_environment() -> None:
    tracing = {
        "otlpEndpoint": "http://otel-collector.observability.svc:4318",
        "sampler": "parentbased_traceidratio",
        "samplerArg": "0.25",
    }
    objects = render(webhook(tracing=tracing), SETTINGS)
    env = _env(objects)
    otel = {name: value for name, value in env.items() if name.startswith("OTEL_")}
    assert otel == {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability.svc:4318",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": receiver_name("orders"),
        "OTEL_RESOURCE_ATTRIBUTES": "k8s.namespace.name=team-a,"
        f"k8s.deployment.name={receiver_name('orders')},k8s.pod.name=$(POD_NAME)",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    names = list(env)
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")  # expanded
    # the environment the receiver reads turns tracing on and asks for nothing unshipped
    assert tracing_configured(otel)
    check_tracing(otel)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    named = render(webhook(tracing={**tracing, "serviceName": "orders-in"}), SETTINGS)
    assert _env(named)["OTEL_SERVICE_NAME"] == "orders-in"


@pytest.mark.parametrize(
    ("tracing", "field"),
    [
        ({}, "otlpEndpoint"),
        ({"otlpEndpoint": "otel-collector:4318"}, "otlpEndpoint"),
        ({"otlpEndpoint": "http://user:pw@collector:4318"}, "otlpEndpoint"),
        ({"otlpEndpoint": "http://c:4318", "sampler": "sometimes"}, "sampler"),
        ({"otlpEndpoint": "http://c:4318", "samplerArg": "1.5"}, "samplerArg"),
        ({"otlpEndpoint": "http://c:4318", "headers": "x"}, "headers"),
    ],
)
def test_an_invalid_tracing_section_is_refused_by_name(tracing: dict[str, Any], field: str) -> None:
    with pytest.raises(ReceiverRenderError, match=rf"spec\.receiver\.tracing\.{field}"):
        render(webhook(tracing=tracing), SETTINGS)
