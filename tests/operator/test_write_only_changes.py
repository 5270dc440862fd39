"""The pure comparisons that keep the steady state quiet: which status fields to write, and
whether a live receiver object already holds what the operator applies."""

from __future__ import annotations

from gemini_webhook_operator.conditions import status_changes
from gemini_webhook_operator.receiver_apply import holds


def test_an_unchanged_status_writes_nothing() -> None:
    status = {"webhookId": "w1", "conditions": [{"type": "Ready", "status": "True"}]}
    assert status_changes(status, dict(status)) == {}


def test_only_the_changed_fields_are_written() -> None:
    status = {"webhookId": "w1", "url": "https://a.example.com/"}
    wanted = {"webhookId": "w1", "url": "https://b.example.com/"}
    assert status_changes(status, wanted) == {"url": "https://b.example.com/"}


def test_clearing_an_absent_field_writes_nothing_and_clearing_a_present_one_deletes_it() -> None:
    assert status_changes({}, {"nextRotationTime": None}) == {}
    assert status_changes({"nextRotationTime": "x"}, {"nextRotationTime": None}) == {
        "nextRotationTime": None
    }


def test_a_live_object_with_server_defaults_holds_what_was_applied() -> None:
    applied = {"spec": {"replicas": 2, "ports": [{"port": 80}]}}
    live = {"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]}, "status": {}}
    assert holds(live, applied)


def test_a_changed_value_a_missing_field_or_an_extra_list_item_is_not_held() -> None:
    applied = {"spec": {"replicas": 2, "ports": [{"port": 80}]}}
    assert not holds({"spec": {"replicas": 5, "ports": [{"port": 80}]}}, applied)
    assert not holds({"spec": {"ports": [{"port": 80}]}}, applied)
    assert not holds({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}}, applied)
    assert not holds({"spec": "not an object"}, applied)
