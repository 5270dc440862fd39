"""`gemini-webhooks operator`: discovered by the dispatcher; bad options are clear errors."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import partial
from unittest.mock import patch

import pytest

from gemini_webhook_operator import cli
from gemini_webhook_operator.leader import LeaseTiming
from gemini_webhook_operator.runtime import LeaderElection, operator_identity
from gemini_webhooks.cli import build_parser


def test_operator_subcommand_is_discovered_with_its_options() -> None:
    args = build_parser().parse_args(
        ["operator", "-n", "a", "-n", "b", "--drift-interval", "60", "--leader-elect"]
    )
    with patch.dict(os.environ, {"POD_NAMESPACE": "gwo-system"}):
        config = cli.config_from_args(args)
    assert tuple(config.namespaces) == ("a", "b")
    assert config.drift_interval == 60
    assert config.leader_election == LeaderElection("gwo-system", "gemini-webhook-operator")


def test_defaults_are_cluster_wide_without_leader_election() -> None:
    config = cli.config_from_args(build_parser().parse_args(["operator"]))
    assert tuple(config.namespaces) == () and config.leader_election is None


def test_leader_election_takes_its_lease_and_timing_from_flags() -> None:
    args = build_parser().parse_args(
        [
            "operator",
            "--leader-elect",
            "--leader-election-namespace=ops",
            "--leader-election-id=gwo",
            "--lease-duration=30",
            "--renew-deadline=20",
            "--retry-period=4",
        ]
    )
    election = cli.config_from_args(args).leader_election
    assert election == LeaderElection("ops", "gwo", LeaseTiming(30, 20, 4))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--lease-duration=10"], "greater than the renew deadline"),
        (["--retry-period=9"], "greater than 1.2 x the retry period"),
    ],
)
def test_inconsistent_lease_timing_is_refused(flags: list[str], message: str) -> None:
    args = build_parser().parse_args(
        ["operator", "--leader-elect", "--leader-election-namespace=ops", *flags]
    )
    with pytest.raises(SystemExit, match=message):
        cli.config_from_args(args)


def test_leader_election_needs_a_namespace() -> None:
    args = build_parser().parse_args(["operator", "--leader-elect"])
    with patch.dict(os.environ, clear=True), pytest.raises(SystemExit, match="POD_NAMESPACE"):
        cli.config_from_args(args)


def test_heals_are_limited_to_one_an_hour_unless_told_otherwise() -> None:
    assert cli.config_from_args(build_parser().parse_args(["operator"])).heal_interval == 3600
    args = build_parser().parse_args(["operator", "--heal-interval", "600"])
    assert cli.config_from_args(args).heal_interval == 600


def test_reconciliations_run_two_hundred_at_once_unless_told_otherwise() -> None:
    config = cli.config_from_args(build_parser().parse_args(["operator"]))
    assert config.max_concurrent_reconciles == 200
    args = build_parser().parse_args(["operator", "--max-concurrent-reconciles", "16"])
    assert cli.config_from_args(args).max_concurrent_reconciles == 16


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--drift-interval", "0"], "--drift-interval must be positive"),
        (["--drift-jitter", "1.5"], "--drift-jitter"),
        (["--heal-interval", "-1"], "--heal-interval must be zero or more"),
        (["--heal-interval", "nan"], "--heal-interval must be zero or more"),
        (["--max-concurrent-reconciles", "0"], "--max-concurrent-reconciles must be at least 1"),
    ],
)
def test_bad_options_are_rejected_with_a_message(option: list[str], message: str) -> None:
    args = build_parser().parse_args(["operator", *option])
    with pytest.raises(SystemExit, match=message):
        cli.config_from_args(args)


def test_the_receivers_have_no_proxy_unless_told() -> None:
    args = build_parser().parse_args(["operator"])
    assert cli.config_from_args(args).receiver.proxy.environment() == {}


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--receiver-http-proxy", "ftp://user:s3cret@proxy:21"),
        ("--receiver-https-proxy", "http://user:s3cret@proxy:port"),
        ("--receiver-https-proxy", "http://user:s3cret@proxy:3128/path"),
        ("--receiver-no-proxy", ".svc,10.0.0.0/s3cret"),
    ],
)
def test_a_malformed_receiver_proxy_stops_the_start_naming_the_flag(flag: str, value: str) -> None:
    args = build_parser().parse_args(["operator", f"{flag}={value}"])
    with pytest.raises(SystemExit) as stopped:
        cli.config_from_args(args)
    message = str(stopped.value.code)
    assert message.startswith(flag)
    if "@" in value:  # a proxy URL's credentials are never in the message
        assert "s3cret" not in message


def test_the_identity_is_the_pod_name_or_the_uid_never_a_user_name() -> None:
    started = datetime(2026, 12, 6, 9, 30, tzinfo=UTC)
    identity = partial(operator_identity, uid=65532, host="h", started=started, suffix="ab")
    assert identity({"POD_NAME": "gwo-7f9c-x2"}) == "gwo-7f9c-x2"
    assert identity({"POD_ID": "kopf-id", "POD_NAME": "pod"}) == "kopf-id"
    assert identity({}) == "uid-65532@h/20261206093000/ab"
    assert identity({"POD_NAME": ""}) == "uid-65532@h/20261206093000/ab"
