"""Routing is a pure function: ordered rules, globs, sources, user_metadata, default."""

from __future__ import annotations

from typing import Any

from gemini_webhook_receiver.routing import Router
from gemini_webhooks.contracts import receiver_config as rc


def _router(**extra: Any) -> Router:
    document: dict[str, Any] = {
        "static_webhooks": [{"name": "orders", "secrets": {"file": {"path": "/x"}}}],
        "routes": [
            {
                "name": "team-a-videos",
                "match": {"types": ["video.*"], "user_metadata": {"team": "a*"}},
                "targets": [{"url": "http://a.test/"}],
            },
            {
                "name": "batches",
                "match": {"types": ["batch.*"], "sources": ["orders"]},
                "targets": [{"url": "http://b.test/"}, {"url": "http://c.test/"}],
            },
            {
                "name": "dynamic-only",
                "match": {"sources": ["dynamic"]},
                "targets": [{"url": "http://d.test/"}],
            },
        ],
        "dead_letter": {"target": {"url": "http://dl.test/"}},
    }
    document.update(extra)
    return Router(rc.from_dict(document))


def test_first_matching_rule_wins() -> None:
    decision = _router().route("batch.failed", "orders", None)
    assert decision.rule == "batches"
    assert [t.url for t in decision.targets] == ["http://b.test/", "http://c.test/"]


def test_type_glob_does_not_match_other_families() -> None:
    assert _router().route("interaction.completed", "orders", None).rule is None


def test_source_condition_separates_static_from_dynamic() -> None:
    assert _router().route("batch.failed", "dynamic", None).rule == "dynamic-only"


def test_user_metadata_value_glob_must_match() -> None:
    router = _router()
    assert router.route("video.generated", "dynamic", {"team": "alpha"}).rule == "team-a-videos"
    assert router.route("video.generated", "dynamic", {"team": "beta"}).rule == "dynamic-only"


def test_missing_user_metadata_key_does_not_match() -> None:
    assert _router().route("video.generated", "orders", {}).rule is None


def test_non_string_metadata_value_does_not_match() -> None:
    assert _router().route("video.generated", "orders", {"team": 7}).rule is None


def test_unmatched_event_goes_to_the_default_route() -> None:
    router = _router(default_route={"targets": [{"url": "http://default.test/"}]})
    decision = router.route("interaction.failed", "orders", None)
    assert decision.rule == "default"


def test_unmatched_event_without_default_is_unroutable() -> None:
    decision = _router().route("interaction.failed", "orders", None)
    assert not decision.routable
