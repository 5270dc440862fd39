"""The Node object our node registers and the status it reports for itself: capacity,
addresses, the pressure and `Ready` conditions, what it runs (nodeInfo)."""

from __future__ import annotations

import platform

from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.controlplane.build import KUBERNETES_VERSION
from gemini_webhooks.sandbox.kubeapi import JSON

NODE_LABEL = "gwo.dev/node"
DEFAULT_CAPACITY = {"cpu": "2", "memory": "24Gi", "pods": "110", "ephemeral-storage": "50Gi"}


def node_object(name: str) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                NODE_LABEL: "true",
            },
        },
        "spec": {},
    }


def node_status(name: str) -> JSON:
    now = now_rfc3339()

    def condition(kind: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return {
        "capacity": DEFAULT_CAPACITY,
        "allocatable": DEFAULT_CAPACITY,
        "addresses": [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": name},
        ],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            condition(
                "Ready", "True", "KubeletReady", "gwo-node runs our image's Pods as processes"
            ),
        ],
        "nodeInfo": {
            "machineID": "gwo-node",
            "systemUUID": "gwo-node",
            "bootID": "gwo-node",
            "kernelVersion": platform.release(),
            "osImage": "gwo-node (processes on loopback)",
            "containerRuntimeVersion": "gwo-node://0.1.0",
            "kubeletVersion": KUBERNETES_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }
