"""`kubectl gemini replay`'s decisions, without a cluster: what `--since` means, the command
run in the receiver Pod and what it printed, which Pod it runs in, what the exec stream's
outcome says, and each refusal in one clear line."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts import replay as contract
from gemini_webhooks.kubectl.cluster import ExecResult, PluginError, exec_outcome, exec_refused
from gemini_webhooks.kubectl.replay import choose_pod, outcome, require_redis_mode, text

NOW = datetime(2026, 12, 6, 19, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("given", "seconds_back"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 7 * 86400), ("1.5h", 5400), (" 30s ", 30)],
)
def test_since_a_duration_counts_back_from_now(given: str, seconds_back: float) -> None:
    assert contract.parse_since(given, NOW) == NOW - seconds_back


def test_since_a_time_is_that_time_in_any_zone() -> None:
    assert contract.parse_since("2026-12-06T18:00:00Z", NOW) == NOW - 3600
    assert contract.parse_since("2026-12-06T19:30:00+01:00", NOW) == NOW - 1800
    assert contract.since_text(NOW - 0.25) == "2026-12-06T18:59:59.750Z"


@pytest.mark.parametrize("given", ["yesterday", "2026-12-06T18:00:00", "2026-12-06", "-5m", "5"])
def test_since_that_names_no_time_is_refused_saying_what_is_accepted(given: str) -> None:
    with pytest.raises(contract.SinceError, match="RFC 3339 time with its zone"):
        contract.parse_since(given, NOW)


def test_the_command_is_the_receivers_replay_with_the_pods_config_printing_json() -> None:
    assert contract.command("/etc/r/config.yaml", None, []) == [
        *("gemini-webhooks", "receiver", "replay", "--config", "/etc/r/config.yaml"),
        *("--output", "json"),
    ]
    assert contract.command("/c", NOW, ["a", "b"])[-6:] == [
        *("--since", "2026-12-06T19:00:00.000Z", "--id", "a", "--id", "b"),
    ]


def test_the_count_is_read_from_the_commands_last_line() -> None:
    assert contract.replayed_count(contract.output(3)) == 3
    assert contract.replayed_count('{"log": 1}\n{"replayed": 0}\n') == 0
    for printed in ("", "replayed 3 dead letter(s)", '{"replayed": -1}', '{"replayed": true}'):
        with pytest.raises(ValueError, match="the replay printed no count"):
            contract.replayed_count(printed)


def _webhook(receiver: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "orders", "namespace": "team-a"}, "spec": {"receiver": receiver}}


def test_only_a_receiver_in_redis_mode_has_dead_letters_to_replay() -> None:
    require_redis_mode(_webhook({"enabled": True, "redis": {"url": "redis://r:6379/0"}}))
    with pytest.raises(PluginError, match=r"not in Redis mode \(spec.receiver.redis is not set\)"):
        require_redis_mode(_webhook({"enabled": True}))
    with pytest.raises(PluginError, match="has no receiver"):
        require_redis_mode(_webhook({"enabled": False, "redis": {"url": "redis://r:6379/0"}}))


def _pod(name: str, ready: bool, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-06T18:00:00Z"
    condition = {"type": "Ready", "status": "True" if ready else "False"}
    return {"metadata": metadata, "status": {"phase": "Running", "conditions": [condition]}}


def test_the_replay_runs_in_a_ready_pod_that_is_not_being_deleted() -> None:
    pods = [_pod("r-c", True), _pod("r-a", True, deleting=True), _pod("r-b", False)]
    assert choose_pod("orders", pods) == "r-c"
    assert choose_pod("orders", [*pods, _pod("r-0", True)]) == "r-0"


def test_no_ready_pod_is_refused_naming_the_pods_seen() -> None:
    with pytest.raises(PluginError) as refused:
        choose_pod("orders", [_pod("r-b", False), _pod("r-a", True, deleting=True)])
    assert str(refused.value) == (
        f'no receiver Pod of {crd.SINGULAR} "orders" is Ready '
        "(r-b (Running, not ready)); the replay runs in one"
    )
    with pytest.raises(PluginError, match=r"is Ready \(none found\)"):
        choose_pod("orders", [])


def test_the_exec_streams_outcome_is_the_commands_exit_code() -> None:
    assert exec_outcome({"metadata": {}, "status": "Success"}) == (0, "")
    failed = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "message": "command terminated with non-zero exit code: exit status 2",
        "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
    }
    assert exec_outcome(failed) == (2, failed["message"])
    not_found = {"status": "Failure", "message": 'exec: "gemini-webhooks": not found'}
    assert exec_outcome(not_found) == (None, 'exec: "gemini-webhooks": not found')
    assert exec_outcome(None)[0] is None


def test_a_refused_exec_says_why_in_one_line() -> None:
    assert "needs `create` on `pods/exec`" in exec_refused(403, "Forbidden", "team-a", "r-0")
    assert "kubectl auth can-i create pods/exec -n team-a" in exec_refused(403, "", "team-a", "p")
    assert "does not accept your credentials" in exec_refused(401, "Unauthorized", "n", "p")
    refused = exec_refused(404, 'nodes "n-1" not found', "team-a", "r-0")
    assert refused == 'the cluster cannot exec into Pod team-a/r-0: HTTP 404: nodes "n-1" not found'
    assert exec_refused(502, "", "team-a", "r-0").endswith("r-0: HTTP 502")


def test_the_commands_outcome_is_the_count_or_its_own_words() -> None:
    assert outcome("r-0", ExecResult(0, '{"replayed": 4}\n', "")) == 4
    with pytest.raises(PluginError, match=r"failed \(exit 2\): gemini-webhooks receiver replay: x"):
        outcome("r-0", ExecResult(2, "", "log line\ngemini-webhooks receiver replay: x\n"))
    with pytest.raises(PluginError, match="did not run in Pod r-0: executable not found"):
        outcome("r-0", ExecResult(None, "", "", "executable not found"))
    with pytest.raises(PluginError, match="the replay printed no count"):
        outcome("r-0", ExecResult(0, "replayed 4 dead letter(s)\n", ""))


def test_the_text_names_what_was_replayed_and_where() -> None:
    report = {
        "webhook": "orders",
        "namespace": "team-a",
        "pod": "r-0",
        "since": "2026-12-06T18:00:00.000Z",
        "ids": ["msg_1"],
        "replayed": 1,
    }
    assert text(report) == (
        "replayed 1 dead letter(s) (with id msg_1; dead-lettered since "
        f"2026-12-06T18:00:00.000Z) of {crd.SINGULAR} team-a/orders through Pod r-0; "
        "its receivers deliver them again"
    )
