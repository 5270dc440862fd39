"""The receiver's Deployment, rendered — pure: its pod (non-root, read-only, no
capabilities), probes, config and job-key volumes, tracing and proxy environment, and
rolling rules.

The pod template carries the hash of the rendered config, so a config change rolls the
Deployment; the signing secrets are not in it (the receiver watches its Secret through the
API), so a rotation rolls nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gemini_webhook_operator.receiver_names import (
    CONFIG_DIR,
    CONFIG_PATH,
    CONTAINER,
    HEALTHZ_PATH,
    HTTP_PORT,
    INTERNAL_PORT,
    JOB_KEY_DIR,
    READYZ_PATH,
    receiver_name,
    selector_labels,
)
from gemini_webhooks.contracts import dynamic_jobs
from gemini_webhooks.contracts.crd_receiver import ReceiverSpec
from gemini_webhooks.contracts.signing_secret import API_GROUP

if TYPE_CHECKING:
    from gemini_webhook_operator.receiver_resources import ReceiverSettings
    from gemini_webhooks.contracts.egress_proxy import ProxySettings

JSON = dict[str, Any]

ANNOTATION_CONFIG_HASH = f"{API_GROUP}/config-hash"


def _container_security_context(settings: ReceiverSettings) -> JSON:
    return {
        "runAsNonRoot": True,
        "runAsUser": settings.run_as_user,
        "runAsGroup": settings.run_as_user,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tracing_env(spec: ReceiverSpec, deployment: str, namespace: str) -> list[JSON]:
    """The standard `OTEL_*` environment that turns the receiver's tracing on
    (`gemini_webhooks.tracing`) as `spec.receiver.tracing` asks; none without it. The pod's
    name comes from `POD_NAME`, which Kubernetes expands as it is defined before."""
    tracing = spec.tracing
    if tracing is None:
        return []
    env = [
        {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": tracing.otlp_endpoint},
        {"name": "OTEL_EXPORTER_OTLP_PROTOCOL", "value": "http/protobuf"},
        {"name": "OTEL_SERVICE_NAME", "value": tracing.service_name or deployment},
        {
            "name": "OTEL_RESOURCE_ATTRIBUTES",
            "value": f"k8s.namespace.name={namespace},k8s.deployment.name={deployment},"
            "k8s.pod.name=$(POD_NAME)",
        },
        {"name": "OTEL_TRACES_SAMPLER", "value": tracing.sampler},
    ]
    if tracing.sampler_arg is not None:
        env.append({"name": "OTEL_TRACES_SAMPLER_ARG", "value": tracing.sampler_arg})
    return env


def proxy_env(proxy: ProxySettings) -> list[JSON]:
    """`HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as the operator was told them (the OLM
    convention: an operator passes the cluster's proxy on to its operands); nothing when
    unset, so that a receiver rendered without a proxy is exactly what it was before."""
    return [{"name": name, "value": value} for name, value in proxy.environment().items()]


def deployment(
    resource: Mapping[str, Any],
    spec: ReceiverSpec,
    settings: ReceiverSettings,
    digest: str,
    *,
    metadata: JSON,
    pod_labels: dict[str, str],
) -> JSON:
    """The Deployment: `metadata` its own (labels, owner), `pod_labels` its pods', `digest`
    the rendered config's hash."""
    webhook = resource["metadata"]["name"]
    name = receiver_name(webhook)
    container: JSON = {
        "name": CONTAINER,
        "image": spec.image or settings.image,
        "imagePullPolicy": spec.image_pull_policy or settings.image_pull_policy,
        "args": ["receiver", "--config", CONFIG_PATH],
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "internal", "containerPort": INTERNAL_PORT, "protocol": "TCP"},
        ],
        "env": [
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *tracing_env(spec, name, resource["metadata"]["namespace"]),
            *proxy_env(settings.proxy),
        ],
        "resources": (
            spec.resources.model_dump(exclude_defaults=True)
            if spec.resources is not None
            else settings.resources
        ),
        "securityContext": _container_security_context(settings),
        "readinessProbe": {
            "httpGet": {"path": READYZ_PATH, "port": "internal"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTHZ_PATH, "port": "internal"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir, not the host's
        ],
    }
    pod_spec: JSON = {
        "serviceAccountName": name,
        "automountServiceAccountToken": True,  # the receiver watches its Secret via the API
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": settings.run_as_user,
            "runAsGroup": settings.run_as_user,
            "fsGroup": settings.run_as_user,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "config", "configMap": {"name": name}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
        ],
        "terminationGracePeriodSeconds": 30,
    }
    if spec.dynamic.enabled:
        container["volumeMounts"].append(
            {"name": "job-key", "mountPath": JOB_KEY_DIR, "readOnly": True}
        )
        pod_spec["volumes"].append(
            {
                "name": "job-key",
                "secret": {
                    "secretName": dynamic_jobs.job_key_secret_name(webhook),
                    "items": [{"key": dynamic_jobs.SECRET_KEY, "path": dynamic_jobs.SECRET_KEY}],
                    "defaultMode": 0o440,  # owner root, group fsGroup: the receiver's group
                },
            }
        )
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    if spec.replicas > 1:
        pod_spec["topologySpreadConstraints"] = [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector_labels(webhook)},
            }
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector_labels(webhook)},
            # Never fewer verifying pods than asked for during a rollout.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    "annotations": {ANNOTATION_CONFIG_HASH: digest},
                },
                "spec": pod_spec,
            },
        },
    }
