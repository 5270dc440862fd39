"""Do the receiver's replicas share what must be shared? — decided purely.

Deduplication and the health check's ping records live in Redis when
`spec.receiver.redis` is set; without it each pod keeps both in memory, so with more than
one replica a retried event may be delivered once per pod and a ping is known only to the
pod that took it (so the health check asks every ready pod). `shared_state` says so as
the `ReceiverStateShared` condition (only for more than one replica; one pod has nothing
to share).
"""

from __future__ import annotations

from dataclasses import dataclass

from gemini_webhooks.contracts.crd_receiver import ReceiverSpec

REASON_SHARED = "SharedThroughRedis"
REASON_PER_POD = "PerPodMemory"


@dataclass(frozen=True)
class SharedState:
    status: bool
    reason: str
    message: str


def shared_state(receiver: ReceiverSpec) -> SharedState | None:
    """The condition for a deployed receiver of several replicas, or None (no condition)."""
    if not receiver.enabled or receiver.replicas <= 1:
        return None
    if receiver.redis is not None:
        return SharedState(
            True,
            REASON_SHARED,
            f"the {receiver.replicas} replicas deduplicate and record health pings in Redis",
        )
    return SharedState(
        False,
        REASON_PER_POD,
        f"the {receiver.replicas} replicas each deduplicate alone (a retry that reaches "
        "another pod is delivered again) and know only their own health pings (the health "
        "check asks every ready pod); set spec.receiver.redis to share both",
    )
