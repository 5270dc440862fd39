"""What our node knows of a Pod it runs: its address and ports, its process and plan,
readiness, restarts, tokens, and the last status it reported."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gemini_webhooks.sandbox.kubeapi import JSON
from gemini_webhooks.sandbox.kubelet import PodPorts
from gemini_webhooks.sandbox.pod_process import PodProcess


@dataclass
class RunningPod(PodProcess):
    uid: str
    address: str = ""  # its Pod IP, from POD_NETWORK
    ports: PodPorts = field(default_factory=PodPorts)
    labels: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    last_status: JSON | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    tokens_at: float = 0.0
    terminated: JSON | None = None  # the last state of a container that is not restarted


def pods_of(pods: Iterable[RunningPod], namespace: str, name: str) -> list[RunningPod]:
    """The pod called `name`, or the pods of Deployment `name` (`<name>-<hash>-<id>`)."""

    def owned(pod_name: str) -> bool:
        rest = pod_name.removeprefix(f"{name}-")
        return rest != pod_name and rest.count("-") == 1

    return [p for p in pods if p.namespace == namespace and (p.name == name or owned(p.name))]
