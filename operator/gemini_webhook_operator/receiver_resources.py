"""The receiver deployed for one GeminiWebhook, rendered as Kubernetes objects — pure.

`render(resource, spec, settings)` returns every object the receiver needs: ConfigMap (the
receiver's config, built with the `contracts.receiver_config` models), ServiceAccount,
Role + RoleBinding (get/list/watch on its own signing Secret only), the Deployment (from
`receiver_deployment`), the public
Service, an internal Service (health and ping status, for the operator), with more
than one replica a PodDisruptionBudget, with `expose` an Ingress or HTTPRoute, and (unless
turned off) a NetworkPolicy — those two from `receiver_exposure`. All are owned by the
GeminiWebhook (garbage collected with it) and labelled so that the operator can find and
prune them; their names are `receiver_names`'.

With dynamic webhooks the pods mount the job-key Secret (`contracts.dynamic_jobs`). It is
not rendered here: a rendering is applied on every change, and the key must be generated
once and never again (`job_key.ensure` creates it before the Deployment is applied).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gemini_webhook_operator import receiver_exposure
from gemini_webhook_operator.receiver_deployment import deployment
from gemini_webhook_operator.receiver_exposure import NetworkPolicySettings
from gemini_webhook_operator.receiver_names import (
    CONFIG_KEY,
    HTTP_PORT,
    INTERNAL_PORT,
    JOB_KEY_PATH,
    STATIC_SOURCE,
    internal_service_name,
    label_value,
    receiver_name,
    selector_labels,
    signing_secret_name,
)
from gemini_webhooks.contracts import receiver_config as rc
from gemini_webhooks.contracts.crd import API_VERSION, KIND
from gemini_webhooks.contracts.crd_receiver import (
    CrdReceiverError,
    ReceiverSpec,
    RedisSpec,
    TargetSpec,
    parse_duration,
)
from gemini_webhooks.contracts.egress_proxy import DIRECT, ProxySettings
from gemini_webhooks.contracts.service_endpoints import service_url
from gemini_webhooks.contracts.signing_secret import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_WEBHOOK,
    MANAGED_BY,
)

JSON = dict[str, Any]

COMPONENT_RECEIVER = "receiver"

SECRET_VERBS = ("get", "list", "watch")

# (apiVersion, kind) of what render() may produce, for pruning what an earlier rendering
# left behind; in pruning order: the route before what it routes to, a binding before its
# role, the ServiceAccount last.
OWNED_KINDS: tuple[tuple[str, str], ...] = (
    (receiver_exposure.INGRESS_API_VERSION, "Ingress"),
    (receiver_exposure.HTTPROUTE_API_VERSION, "HTTPRoute"),
    (receiver_exposure.NETWORK_POLICY_API_VERSION, "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("v1", "ServiceAccount"),
)


class ReceiverRenderError(ValueError):
    """The resource's receiver cannot be rendered; the message names the field."""


def _default_resources() -> JSON:
    # The limit holds the in-memory dedup at its default bound: a million ids are ~105 MiB
    # (tests/receiver/test_dedup.py) on top of ~120 MiB under full load (bench/receiver).
    return {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "320Mi"}}


@dataclass(frozen=True)
class ReceiverSettings:
    """Operator-wide defaults for the receivers it deploys."""

    image: str = "ghcr.io/gemini-webhook-operator/gemini-webhook-operator:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    resources: JSON = field(default_factory=_default_resources)
    run_as_user: int = 65532  # the image's numeric USER
    cluster_domain: str = "cluster.local"
    image_pull_secrets: tuple[str, ...] = ()
    network_policy: NetworkPolicySettings = field(default_factory=NetworkPolicySettings)
    # The cluster's HTTP proxy, for the receivers' targets and the JWKS: rendered into
    # every receiver's environment as the standard variables (none while unset).
    proxy: ProxySettings = DIRECT


def labels(webhook_name: str) -> dict[str, str]:
    return {
        **selector_labels(webhook_name),
        "app.kubernetes.io/component": COMPONENT_RECEIVER,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_WEBHOOK: label_value(webhook_name),
        LABEL_COMPONENT: COMPONENT_RECEIVER,
    }


def owner_reference(resource: Mapping[str, Any]) -> JSON:
    metadata = resource["metadata"]
    return {
        "apiVersion": resource.get("apiVersion", API_VERSION),
        "kind": resource.get("kind", KIND),
        "name": metadata["name"],
        "uid": metadata["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def public_url(
    resource: Mapping[str, Any], spec: ReceiverSpec, *, cluster_domain: str = "cluster.local"
) -> str:
    """Where deliveries reach the receiver's public Service (the webhook's default `url`)."""
    metadata = resource["metadata"]
    return service_url(
        receiver_name(metadata["name"]),
        metadata["namespace"],
        spec.service.port,
        "/",
        cluster_domain=cluster_domain,
    )


# --- The receiver's config -------------------------------------------------------------


def _target(target: TargetSpec, namespace: str) -> rc.TargetConfig:
    if target.service is not None:
        service = rc.ServiceTarget(
            name=target.service.name,
            namespace=target.service.namespace or namespace,
            port=target.service.port,
            path=target.service.path,
        )
        return rc.TargetConfig(service=service, format=target.format)
    return rc.TargetConfig(url=target.url, format=target.format)


def _redis(redis: RedisSpec) -> rc.RedisConfig:
    sentinel = redis.sentinel
    return rc.RedisConfig(
        url=redis.url,
        sentinel=(
            rc.SentinelConfig(
                addresses=list(sentinel.addresses), master_name=sentinel.master_name, db=sentinel.db
            )
            if sentinel is not None
            else None
        ),
        accept_data_loss_risk=redis.accept_data_loss_risk,
        wait_replicas=redis.wait_replicas,
        wait_timeout_seconds=parse_duration(redis.wait_timeout).total_seconds(),
    )


def receiver_config(
    resource: Mapping[str, Any], spec: ReceiverSpec, settings: ReceiverSettings
) -> rc.ReceiverConfig:
    """The receiver's configuration for this resource (`spec`: its typed spec.receiver), as
    the contract's models."""
    metadata = resource["metadata"]
    namespace: str = metadata["namespace"]
    if spec.redis is None and spec.default_route is None and spec.dead_letter is None:
        raise ReceiverRenderError(
            "spec.receiver: without `redis`, set `defaultRoute` or `deadLetter` so that an "
            "unroutable event is never dropped"
        )
    try:
        return rc.ReceiverConfig(
            listen=rc.ListenConfig(
                port=HTTP_PORT, path=spec.expose.path if spec.expose is not None else "/"
            ),
            internal=rc.InternalConfig(port=INTERNAL_PORT),
            replay=rc.ReplayConfig(
                tolerance_seconds=int(parse_duration(spec.replay_tolerance).total_seconds())
            ),
            dedup=rc.DedupConfig(
                backend="redis" if spec.redis is not None else "memory",
                ttl_seconds=int(parse_duration(spec.dedup.ttl).total_seconds()),
                max_entries=spec.dedup.max_entries,
            ),
            static_webhooks=[
                # No `webhook_id` (informational only): taking it from the status would
                # make the remote ID's arrival roll the Deployment; the config follows
                # the spec alone.
                rc.StaticWebhookConfig(
                    name=STATIC_SOURCE,
                    secrets=rc.SecretsSource(
                        kubernetes=rc.KubernetesSecretRef(
                            namespace=namespace, name=signing_secret_name(resource)
                        )
                    ),
                )
            ],
            dynamic=rc.DynamicConfig(
                enabled=spec.dynamic.enabled,
                audiences=list(spec.dynamic.audiences),
                issuer=spec.dynamic.issuer,
                jwks_uri=spec.dynamic.jwks_uri,
                job_key_file=JOB_KEY_PATH if spec.dynamic.enabled else None,
                accept_jobs_from_any_project=spec.dynamic.accept_jobs_from_any_project,
            ),
            routes=[
                rc.RouteConfig(
                    name=route.name,
                    match=rc.MatchConfig(
                        types=list(route.match.types),
                        sources=list(route.match.sources),
                        user_metadata=dict(route.match.user_metadata),
                    ),
                    targets=[_target(t, namespace) for t in route.targets],
                )
                for route in spec.routes
            ],
            default_route=(
                rc.DefaultRouteConfig(
                    targets=[_target(t, namespace) for t in spec.default_route.targets]
                )
                if spec.default_route is not None
                else None
            ),
            dead_letter=rc.DeadLetterConfig(
                target=_target(spec.dead_letter.target, namespace) if spec.dead_letter else None
            ),
            redis=_redis(spec.redis) if spec.redis is not None else None,
            logging=rc.LoggingConfig(level=spec.log_level),
            cluster_domain=settings.cluster_domain,
        )
    except ValidationError as error:
        messages = "; ".join(
            e["msg"].removeprefix("Value error, ")
            for e in error.errors(include_url=False, include_input=False)
        )
        raise ReceiverRenderError(f"spec.receiver: {messages}") from None


def config_hash(config_text: str) -> str:
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


# --- The objects -----------------------------------------------------------------------


def _metadata(resource: Mapping[str, Any], name: str) -> JSON:
    return {
        "name": name,
        "namespace": resource["metadata"]["namespace"],
        "labels": labels(resource["metadata"]["name"]),
        "ownerReferences": [owner_reference(resource)],
    }


def render(
    resource: Mapping[str, Any], spec: ReceiverSpec, settings: ReceiverSettings
) -> list[JSON]:
    """Every object of the resource's receiver (`spec`: its typed spec.receiver); [] when
    `spec.receiver.enabled` is false.

    Raises ReceiverRenderError (naming the field) when the receiver section is invalid.
    """
    for key in ("name", "namespace", "uid"):
        if not (resource.get("metadata") or {}).get(key):
            raise ReceiverRenderError(f"metadata.{key} is required to render a receiver")
    try:
        if not spec.enabled:
            return []
        config = receiver_config(resource, spec, settings)
    except CrdReceiverError as error:
        raise ReceiverRenderError(str(error)) from None
    config_text = rc.dump(config)
    webhook = resource["metadata"]["name"]
    name = receiver_name(webhook)
    secret_name = signing_secret_name(resource)
    selector = selector_labels(webhook)

    objects: list[JSON] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(resource, name),
            "data": {CONFIG_KEY: config_text},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(resource, name),
            "automountServiceAccountToken": False,  # mounted by the one pod spec that needs it
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": _metadata(resource, name),
            # Its own Secret and nothing else. The receiver lists-then-watches with a
            # `metadata.name` field selector (the list gives the resourceVersion the watch
            # resumes from); RBAC authorizes list/watch by resourceNames only for requests
            # carrying that selector, so `list` reveals no other Secret than `get` does.
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [secret_name],
                    "verbs": list(SECRET_VERBS),
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(resource, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [
                {
                    "kind": "ServiceAccount",
                    "name": name,
                    "namespace": resource["metadata"]["namespace"],
                }
            ],
        },
        deployment(
            resource,
            spec,
            settings,
            config_hash(config_text),
            metadata=_metadata(resource, name),
            pod_labels=labels(webhook),
        ),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(resource, name),
            "spec": {
                "type": spec.service.type,
                "selector": selector,
                "ports": [
                    {
                        "name": "http",
                        "port": spec.service.port,
                        "targetPort": "http",
                        "protocol": "TCP",
                    }
                ],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(resource, internal_service_name(webhook)),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {
                        "name": "internal",
                        "port": INTERNAL_PORT,
                        "targetPort": "internal",
                        "protocol": "TCP",
                    }
                ],
            },
        },
    ]
    if spec.expose is not None:
        objects.append(
            receiver_exposure.route(
                spec.expose,
                _metadata(resource, name),
                service=name,
                service_port=spec.service.port,
            )
        )
    policy = receiver_exposure.network_policy(
        spec,
        _metadata(resource, name),
        selector=selector,
        settings=settings.network_policy,
        public_port="http",
        internal_port="internal",
        proxy=settings.proxy,
    )
    if policy is not None:
        objects.append(policy)
    if spec.replicas > 1:
        objects.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _metadata(resource, name),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
            }
        )
    return objects


def fingerprint(objects: list[JSON]) -> str:
    """A short digest of rendered objects (to skip applying what has not changed)."""
    return hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()[:16]
