"""The node's pure rules: which exits it restarts and what a finished container reports."""

from __future__ import annotations

import pytest

from gemini_webhooks.controlplane.pod_status import restarts_after, terminated_state


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        (None, 0, True),  # Always is the default
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("OnFailure", -9, True),  # killed by a signal
        ("Never", 0, False),
        ("Never", 1, False),
    ],
)
def test_the_restart_policy_decides_whether_an_exit_is_restarted(
    policy: str | None, code: int, restarts: bool
) -> None:
    spec = {} if policy is None else {"restartPolicy": policy}
    assert restarts_after({"spec": spec}, code) is restarts


def test_a_clean_exit_is_completed_and_a_failure_or_a_signal_is_an_error() -> None:
    done = terminated_state(0, "2026-01-01T00:00:00Z")
    assert (done["exitCode"], done["reason"], done["startedAt"]) == (
        0,
        "Completed",
        "2026-01-01T00:00:00Z",
    )
    assert done["finishedAt"]
    assert (terminated_state(3, "")["exitCode"], terminated_state(3, "")["reason"]) == (3, "Error")
    assert terminated_state(-15, "")["exitCode"] == 143  # 128 + SIGTERM, as a kubelet reports
    assert terminated_state(None, "")["exitCode"] == 137
