"""The status a node reports for a Pod it runs: phase, conditions (keeping each one's
transition time while it holds), the container's state and restarts; and the
restartPolicy's verdict on a container that exited."""

from __future__ import annotations

import json

from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.sandbox.kubeapi import JSON


def pod_status(pod: JSON, state: JSON, *, ready: bool, restarts: int, address: str) -> JSON:
    """`status` of `pod`, whose container is in `state` (`running`/`waiting`/`terminated`)."""
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    container = containers[0]
    is_running = "running" in state
    ready = is_running and ready
    now = now_rfc3339()
    phase = "Running" if is_running else "Pending"
    if "terminated" in state:
        phase = "Succeeded" if state["terminated"]["exitCode"] == 0 else "Failed"
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}

    def condition(kind: str, status: bool) -> JSON:
        value = "True" if status else "False"
        before = previous.get(kind)
        since = before["lastTransitionTime"] if before and before.get("status") == value else now
        return {
            "type": kind,
            "status": value,
            "lastProbeTime": None,
            "lastTransitionTime": since,
        }

    return {
        "phase": phase,
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": address,
        "podIPs": [{"ip": address}],
        "startTime": (pod.get("status") or {}).get("startTime") or now,
        "conditions": [
            condition("PodReadyToStartContainers", True),
            condition("Initialized", True),
            condition("Ready", ready),
            condition("ContainersReady", ready),
            previous.get("PodScheduled") or condition("PodScheduled", True),
        ],
        "containerStatuses": [
            {
                "name": container.get("name", "main"),
                "image": container.get("image", ""),
                "imageID": "",
                "ready": ready,
                "started": is_running,
                "restartCount": restarts,
                "state": state,
            }
        ],
    }


def comparable(status: JSON) -> str:
    """`status` without its transition times: equal when nothing worth a write changed."""
    return json.dumps(
        {
            **status,
            "conditions": [
                {k: v for k, v in c.items() if k != "lastTransitionTime"}
                for c in status["conditions"]
            ],
        },
        sort_keys=True,
    )


def restarts_after(pod: JSON, exit_code: int | None) -> bool:
    """The Pod's restartPolicy: `Always` (the default), `OnFailure` or `Never`."""
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def terminated_state(exit_code: int | None, started_at: str) -> JSON:
    """A container's `terminated` state; a process killed by signal N exits 128 + N."""
    code = exit_code if exit_code is None or exit_code >= 0 else 128 - exit_code
    return {
        "exitCode": 137 if code is None else code,
        "reason": "Completed" if code == 0 else "Error",
        "startedAt": started_at or now_rfc3339(),
        "finishedAt": now_rfc3339(),
    }
