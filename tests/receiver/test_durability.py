"""The durability decision: which Redis persistence settings let the receiver acknowledge,
and the Redis section's connection settings (no server needed)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gemini_webhook_receiver import durability as d
from gemini_webhooks.contracts import receiver_config as rc

DURABLE_SETTINGS = {"appendonly": "yes", "appendfsync": "everysec"}


def _gauge(state: str) -> float | None:
    return REGISTRY.get_sample_value("gemini_receiver_redis_durability", {"state": state})


@pytest.mark.parametrize("fsync", ["everysec", "always", "EverySec"])
def test_aof_with_fsync_every_second_or_always_is_durable(fsync: str) -> None:
    verdict = d.persistence_verdict({"appendonly": "yes", "appendfsync": fsync})
    assert verdict.durable
    assert verdict.message == f"appendonly yes, appendfsync {fsync.lower()}"


def test_aof_off_is_not_durable_and_says_what_to_set() -> None:
    verdict = d.persistence_verdict({"appendonly": "no", "appendfsync": "everysec"})
    assert verdict.reason == d.AOF_OFF
    assert "appendonly yes" in verdict.message
    assert "redis.accept_data_loss_risk" in verdict.message


def test_aof_without_regular_fsync_is_not_durable() -> None:
    verdict = d.persistence_verdict({"appendonly": "yes", "appendfsync": "no"})
    assert verdict.reason == d.FSYNC_NEVER
    assert "appendfsync no" in verdict.message


def test_missing_settings_are_not_durable() -> None:
    assert d.persistence_verdict({}).reason == d.AOF_OFF
    assert d.persistence_verdict({"appendonly": "yes"}).reason == d.FSYNC_NEVER


def test_settings_the_server_refused_to_show_are_not_durable() -> None:
    verdict = d.persistence_verdict(None)
    assert verdict.reason == d.SETTINGS_UNREADABLE
    assert "CONFIG GET" in verdict.message


def test_the_first_check_that_fires_names_the_reason() -> None:
    assert d.persistence_verdict({"appendonly": "no", "appendfsync": "no"}).reason == d.AOF_OFF


def test_not_durable_is_refused_unless_the_risk_is_accepted() -> None:
    off = d.persistence_verdict({"appendonly": "no"})
    assert d.decide(off, risk_accepted=False) == "refused"
    assert d.decide(off, risk_accepted=True) == "at_risk"
    durable = d.persistence_verdict(DURABLE_SETTINGS)
    assert d.decide(durable, risk_accepted=False) == "durable"
    assert d.decide(durable, risk_accepted=True) == "durable"


def test_config_get_replies_in_resp2_and_resp3_shapes() -> None:
    resp2 = [b"appendonly", b"yes", b"appendfsync", b"always", b"appendfilename", b"a.aof"]
    assert d.settings_from_reply(resp2)["appendfsync"] == "always"
    assert d.settings_from_reply({b"appendonly": b"no"}) == {"appendonly": "no"}
    with pytest.raises(ValueError, match="unexpected CONFIG GET reply"):
        d.settings_from_reply(b"OK")
    with pytest.raises(ValueError):
        d.settings_from_reply([b"appendonly"])  # a key without its value


def test_gate_refuses_until_a_connection_is_checked() -> None:
    gate = d.DurabilityGate(risk_accepted=False)
    assert (gate.state, gate.verdict.reason) == ("refused", d.UNVERIFIED)
    assert not gate.allows_acknowledging
    gate.observe(DURABLE_SETTINGS)
    assert gate.allows_acknowledging
    assert (_gauge("durable"), _gauge("refused"), _gauge("at_risk")) == (1, 0, 0)


def test_gate_follows_the_latest_connection() -> None:
    gate = d.DurabilityGate(risk_accepted=False)
    gate.observe(DURABLE_SETTINGS)
    gate.observe({"appendonly": "no"})  # e.g. a failover to a primary without AOF
    assert not gate.allows_acknowledging
    assert gate.as_json() == {
        "state": "refused",
        "reason": d.AOF_OFF,
        "message": gate.verdict.message,
        "risk_accepted": False,
    }
    assert _gauge("refused") == 1
    gate.observe(DURABLE_SETTINGS)
    assert gate.allows_acknowledging


def test_gate_with_the_risk_accepted_acknowledges_and_says_so() -> None:
    gate = d.DurabilityGate(risk_accepted=True)
    gate.observe({"appendonly": "no"})
    assert gate.allows_acknowledging
    assert gate.as_json()["state"] == "at_risk"
    assert (_gauge("at_risk"), _gauge("durable")) == (1, 0)


# ---- the config contract ----------------------------------------------------------------

BASE = """
static_webhooks: [{name: orders, secrets: {file: {path: /etc/secrets}}}]
"""


def test_sentinel_connection_parses() -> None:
    config = rc.parse(
        BASE + "redis: {sentinel: {addresses: ['10.0.0.1:26379', 'sentinel-b:26379'],"
        " master_name: mymaster, db: 2}, wait_replicas: 1}\n"
    )
    assert config.redis is not None and config.redis.sentinel is not None
    assert config.redis.sentinel.addresses == ["10.0.0.1:26379", "sentinel-b:26379"]
    assert (config.redis.url, config.redis.wait_replicas) == (None, 1)
    assert config.redis.accept_data_loss_risk is False


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ("{}", "set exactly one of 'url' or 'sentinel'"),
        (
            "{url: 'redis://r:6379/0', sentinel: {addresses: ['s:26379'], master_name: m}}",
            "set exactly one of 'url' or 'sentinel'",
        ),
        ("{sentinel: {addresses: [], master_name: m}}", "redis.sentinel.addresses"),
        ("{sentinel: {addresses: ['no-port'], master_name: m}}", "redis.sentinel.addresses[0]"),
        ("{sentinel: {addresses: ['s:26379']}}", "redis.sentinel.master_name"),
        ("{url: 'redis://r/0', wait_replicas: -1}", "redis.wait_replicas"),
        ("{url: 'redis://r/0', wait_timeout_seconds: 0}", "redis.wait_timeout_seconds"),
        ("{url: 'redis://r/0', accept_data_loss_risk: maybe}", "redis.accept_data_loss_risk"),
    ],
)
def test_bad_redis_connection_settings_are_named(redis: str, message: str) -> None:
    with pytest.raises(rc.ReceiverConfigError) as error:
        rc.parse(BASE + f"redis: {redis}\n")
    assert message in str(error.value)
