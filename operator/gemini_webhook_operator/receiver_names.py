"""Where a GeminiWebhook's receiver is named and reached — pure: the names of its objects,
the Deployment's selector, where its config, job key and ports are, and the URLs of its
ping status (through its internal Service, or on each ready Pod). The operator renders
with these (`receiver_resources`), and asks by them (`health_checker`); `kubectl gemini`
finds a receiver by them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from gemini_webhooks.contracts import dynamic_jobs, label_selector
from gemini_webhooks.contracts.crd import DEFAULT_SIGNING_SECRET_SUFFIX
from gemini_webhooks.contracts.receiver_config import PING_STATUS_PATH
from gemini_webhooks.contracts.service_endpoints import pod_url, service_url

APP_NAME = "gemini-webhook-receiver"
CONTAINER = "receiver"  # the receiver Pod's container (`kubectl gemini replay` execs in it)

CONFIG_KEY = "config.yaml"
CONFIG_DIR = "/etc/gemini-webhook-receiver"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
# The job-key Secret (dynamic webhooks), mounted: read once at start, no API access needed.
JOB_KEY_DIR = "/etc/gemini-webhook-job-key"
JOB_KEY_PATH = f"{JOB_KEY_DIR}/{dynamic_jobs.SECRET_KEY}"
HTTP_PORT = 8080
INTERNAL_PORT = 9090
HEALTHZ_PATH = "/healthz"
READYZ_PATH = "/readyz"
# The routing `source` name of this webhook's own (static) deliveries; the CRD's route
# `sources: [static]` maps onto it one to one.
STATIC_SOURCE = "static"

# Kubernetes names: a Service name is a DNS label (63), and so is a label value.
_MAX_LABEL = 63
_INTERNAL_SUFFIX = "-internal"
_RECEIVER_SUFFIX = "-receiver"


def _short(name: str, budget: int) -> str:
    """`name` if it fits `budget`, else a prefix plus a stable hash (still unique)."""
    if len(name) <= budget:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: budget - 9].rstrip('-.')}-{digest}"


def receiver_name(webhook_name: str) -> str:
    """Name of the receiver's objects; short enough for `<name>-internal` to be a DNS label."""
    budget = _MAX_LABEL - len(_INTERNAL_SUFFIX)
    return _short(webhook_name, budget - len(_RECEIVER_SUFFIX)) + _RECEIVER_SUFFIX


def internal_service_name(webhook_name: str) -> str:
    return receiver_name(webhook_name) + _INTERNAL_SUFFIX


def signing_secret_name(resource: Mapping[str, Any]) -> str:
    spec = resource.get("spec") or {}
    name: str = spec.get("signingSecretName") or (
        resource["metadata"]["name"] + DEFAULT_SIGNING_SECRET_SUFFIX
    )
    return name


def label_value(webhook_name: str) -> str:
    """The resource's name as a label value (63 characters at most, still unique)."""
    return _short(webhook_name, _MAX_LABEL)


def selector_labels(webhook_name: str) -> dict[str, str]:
    """The Deployment's (immutable) selector: stable for the life of the resource."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": label_value(webhook_name),
    }


def ping_status_url(resource: Mapping[str, Any], *, cluster_domain: str = "cluster.local") -> str:
    """The receiver's ping-status endpoint, through its internal Service."""
    metadata = resource["metadata"]
    return service_url(
        internal_service_name(metadata["name"]),
        metadata["namespace"],
        INTERNAL_PORT,
        PING_STATUS_PATH,
        cluster_domain=cluster_domain,
    )


def ping_status_pod_urls(
    resource: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> dict[str, str]:
    """Each ready receiver Pod's ping-status endpoint (Pod name -> URL)."""
    return ready_pod_urls(resource, pods, PING_STATUS_PATH)


def ready_pod_urls(
    resource: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], path: str
) -> dict[str, str]:
    """`path` on the internal port of each ready receiver Pod (Pod name -> URL): the Pods the
    internal Service sends requests to — selected by the Deployment's labels, `Ready`, not
    terminating, with an IP — read at their IP and internal container port.
    """
    metadata = resource["metadata"]
    selected = label_selector.from_labels(selector_labels(metadata["name"]))
    urls: dict[str, str] = {}
    for pod in pods:
        pod_meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )
        address = status.get("podIP")
        if (
            not ready
            or not address
            or pod_meta.get("deletionTimestamp")
            or not selected.selects(pod)
        ):
            continue
        name = pod_meta.get("name") or address
        urls[name] = pod_url(address, INTERNAL_PORT, path)
    return dict(sorted(urls.items()))
