"""The rules tests/chart/test_real_rollout.py judges the real node's audit log and the
emulator's calls by, on made-up histories: each catches what it is there to catch."""

from __future__ import annotations

import pytest

from tests.chart.test_real_rollout import (
    DEPLOYMENT,
    OPERATOR_USER,
    POD_NAME,
    LeaseWrite,
    Write,
    double_rotations,
    operator_writes,
    takeovers,
    turns,
    unfenced,
)


def _event(at: str, pod: str | None, resource: str, **more: object) -> dict[str, object]:
    extra = {POD_NAME: [pod]} if pod else {}
    return {
        "stage": "ResponseComplete",
        "user": {"username": OPERATOR_USER, "extra": extra},
        "requestReceivedTimestamp": at,
        "verb": "update",
        "objectRef": {"resource": resource, "namespace": "ns", "name": DEPLOYMENT},
        "responseStatus": {"code": 200},
        **more,
    }


def test_the_audit_log_names_each_writes_pod_and_the_holder_each_lease_write_left() -> None:
    events = [
        _event("2026-12-06T19:00:01.5Z", "a", "leases", requestObject={"spec": {}}),
        _event(
            "2026-12-06T19:00:00Z", "a", "leases", requestObject={"spec": {"holderIdentity": "a"}}
        ),
        _event("2026-12-06T19:00:01Z", "a", "secrets"),
        {**_event("2026-12-06T19:00:02Z", "b", "secrets"), "user": {"username": "someone"}},
    ]
    writes, leases = operator_writes(events)
    assert [(w.pod, w.what) for w in writes] == [("a", f"secrets ns/{DEPLOYMENT}")]
    assert [(w.pod, w.holder) for w in leases] == [("a", "a"), ("a", "")]
    with pytest.raises(AssertionError, match="without its Pod"):
        operator_writes([_event("2026-12-06T19:00:00Z", None, "secrets")])


def test_a_write_is_fenced_only_by_its_own_lease_renewed_within_the_deadline() -> None:
    leases = [LeaseWrite(0, "a", "a"), LeaseWrite(5, "a", ""), LeaseWrite(6, "b", "b")]
    ok = [Write(1, "a", "patch", "x", 200), Write(7, "b", "patch", "x", 200)]
    assert unfenced(ok, leases, deadline=10) == []
    late = Write(5.5, "a", "patch", "x", 200)  # after it released
    other = Write(2, "b", "patch", "x", 200)  # while a held it
    stale = Write(17, "b", "patch", "x", 200)  # 11 s after b's last renewal
    assert len(unfenced([late, other, stale], leases, deadline=10)) == 3


def test_a_lease_changes_hands_only_released_or_expired() -> None:
    released = [LeaseWrite(0, "a", "a"), LeaseWrite(3, "a", ""), LeaseWrite(4, "b", "b")]
    changes, wrong = takeovers(released, duration=15)
    assert wrong == [] and [(c["to"], c["released"], c["after"]) for c in changes] == [
        ("b", True, 1)
    ]
    stolen = [LeaseWrite(0, "a", "a"), LeaseWrite(10, "b", "b")]
    assert takeovers(stolen, duration=15)[1]
    expired = [LeaseWrite(0, "a", "a"), LeaseWrite(16, "b", "b")]
    assert takeovers(expired, duration=15)[1] == []


def test_writers_in_turn_and_rotations_done_twice() -> None:
    assert turns([(1, "a"), (2, "a"), (3, "b")]) == ["a", "b"]
    assert turns([(1, "a"), (2, "b"), (3, "a")]) == ["a", "b", "a"]
    assert double_rotations({"w": [0, 30]}, set(), {}) == []
    assert double_rotations({"w": [0, 1]}, set(), {})
    assert double_rotations({"r": [0]}, {"r"}, {"r": 1}) == []
    assert double_rotations({"r": [0, 40]}, {"r"}, {"r": 1})
    assert double_rotations({}, {"r"}, {"r": 1})
