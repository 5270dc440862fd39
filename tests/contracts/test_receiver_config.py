from __future__ import annotations

from pathlib import Path

import pytest

from gemini_webhooks.contracts import receiver_config as rc

MINIMAL = """
static_webhooks:
  - name: orders
    secrets: {file: {path: /etc/secrets}}
routes:
  - name: batches
    match: {types: ["batch.*"], user_metadata: {team: "a*"}}
    targets:
      - service: {name: handler, namespace: team-a, port: 8080, path: /events}
      - url: http://example.test/hook
        format: cloudevents
default_route:
  targets: [{url: "http://catch-all.test/"}]
"""


def test_minimal_config_parses_with_documented_defaults() -> None:
    config = rc.parse(MINIMAL)
    assert config.listen.port == 8080
    assert config.replay.tolerance_seconds == 300
    assert config.dedup.ttl_seconds >= 24 * 3600
    assert config.routes[0].targets[1].format == "cloudevents"


def test_dump_round_trips() -> None:
    config = rc.parse(MINIMAL)
    assert rc.parse(rc.dump(config)) == config


def test_json_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(
        '{"dynamic": {"enabled": true, "audiences": ["https://x"], "job_key_file": "/k"},'
        ' "dead_letter": {"target": {"url": "http://dl.test/"}}}'
    )
    assert rc.load(path).dynamic.enabled


def test_unknown_key_is_named_in_the_error() -> None:
    with pytest.raises(
        rc.ReceiverConfigError, match=r"routes\[0\]\.targets\[0\]\.servce: unknown key"
    ):
        rc.parse(MINIMAL.replace("- service:", "- servce:"))


def test_bad_value_is_named_in_the_error() -> None:
    with pytest.raises(rc.ReceiverConfigError, match=r"targets\[0\]\.service\.port"):
        rc.parse(MINIMAL.replace("port: 8080", "port: 0"))


def test_target_needs_exactly_one_of_service_or_url() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="exactly one of 'service' or 'url'"):
        rc.parse(MINIMAL.replace("- url: http://example.test/hook", "- format: envelope"))


def test_unroutable_events_need_a_destination_without_redis() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="never dropped"):
        rc.parse(MINIMAL.split("default_route:")[0])


def test_redis_dedup_needs_redis_section() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="needs the 'redis' section"):
        rc.parse(MINIMAL + "dedup: {backend: redis}\n")


def test_dynamic_needs_audiences() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="audiences"):
        rc.parse(MINIMAL + "dynamic: {enabled: true}\n")


def test_dynamic_needs_a_job_key_or_the_explicit_opt_out() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="'job_key_file' is required"):
        rc.parse(MINIMAL + "dynamic: {enabled: true, audiences: [https://x]}\n")
    keyed = rc.parse(MINIMAL + "dynamic: {enabled: true, audiences: [x], job_key_file: /k}\n")
    assert not keyed.dynamic.accept_jobs_from_any_project
    opted_out = rc.parse(
        MINIMAL + "dynamic: {enabled: true, audiences: [x], accept_jobs_from_any_project: true}\n"
    )
    assert opted_out.dynamic.job_key_file is None


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(rc.ReceiverConfigError, match="cannot read receiver config"):
        rc.load(tmp_path / "nope.yaml")


def test_not_yaml_is_a_clear_error() -> None:
    with pytest.raises(rc.ReceiverConfigError, match="not valid YAML"):
        rc.parse("a: [")
