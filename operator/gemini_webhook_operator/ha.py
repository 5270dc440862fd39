"""High availability: several operator replicas, one active — kopf peering, oldest wins.

kopf peering pauses every operator that sees a live peer of *higher* priority, and pauses
*all* of them when two share the same priority. Replicas of one Deployment share their
arguments, so a fixed `--priority` would freeze them all. `seniority_priority` gives each
replica a priority that falls with its start time: the oldest live replica is the active
one, a replica that joins (a rolling update, a rescheduled pod) never preempts it, and
when the active replica stops, the next oldest resumes — at once on a graceful stop
(kopf withdraws its peer record), after the peer record's lifetime on a crash.

The peering object itself must exist: `peering_object` renders it (ClusterKopfPeering for
a cluster-wide operator, KopfPeering per watched namespace otherwise).
"""

from __future__ import annotations

import time
from typing import Any

PEERING_API_VERSION = "kopf.dev/v1"
DEFAULT_PEERING_NAME = "gemini-webhook-operator"


def seniority_priority(started_ns: int | None = None) -> int:
    """A kopf peering priority that is higher the earlier this replica started.

    Microsecond resolution makes equal priorities (which freeze kopf) practically
    impossible; the value stays within JSON's exact integer range.
    """
    started = time.time_ns() if started_ns is None else started_ns
    return -(started // 1_000)


def peering_object(
    name: str = DEFAULT_PEERING_NAME, namespace: str | None = None
) -> dict[str, Any]:
    """The peering object kopf needs before it runs with `--peering name`."""
    if namespace is None:
        return {
            "apiVersion": PEERING_API_VERSION,
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
    return {
        "apiVersion": PEERING_API_VERSION,
        "kind": "KopfPeering",
        "metadata": {"name": name, "namespace": namespace},
    }
