"""The decisions behind the request annotations (rotate-revocation, sync-requested-at,
ping-requested-at): pure, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from gemini_webhook_operator import health, model, rotation
from gemini_webhook_operator.handlers import configure
from gemini_webhook_operator.reconciler import sync_request
from gemini_webhook_operator.rotation import ANNOTATION_LAST_HEAL
from gemini_webhooks.contracts import crd

GRACE = model.RotationPolicy(revocation="Grace")
IMMEDIATE = model.RotationPolicy(revocation="Immediate")


def _body(annotations: dict[str, str], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "w", "namespace": "team-a", "uid": "u", "annotations": annotations},
        "spec": {
            "url": "https://h.example.com/",
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "k"},
        },
        "status": status or {},
    }


def test_a_requested_rotation_takes_its_own_revocation_over_the_policys() -> None:
    assert rotation.immediate_revocation(GRACE, "now", "Immediate") is True
    assert rotation.immediate_revocation(IMMEDIATE, "now", "Grace") is False


def test_without_a_request_or_its_revocation_the_policy_decides() -> None:
    assert rotation.immediate_revocation(IMMEDIATE, "now", None) is True
    assert rotation.immediate_revocation(GRACE, "now", None) is False
    # A revocation left without a rotate request changes no scheduled rotation.
    assert rotation.immediate_revocation(GRACE, None, "Immediate") is False


def test_a_misspelt_revocation_annotation_is_an_invalid_spec_naming_it() -> None:
    body = _body({crd.ANNOTATION_ROTATE: "now", crd.ANNOTATION_ROTATE_REVOCATION: "immediate"})
    with pytest.raises(model.InvalidSpecError, match="rotate-revocation: must be one of"):
        model.parse(body)
    parsed = model.parse(_body({crd.ANNOTATION_ROTATE_REVOCATION: "Immediate"}))
    assert parsed.rotate_revocation == "Immediate"


def test_a_sync_request_is_the_annotations_value() -> None:
    assert sync_request(_body({crd.ANNOTATION_SYNC_REQUESTED: "t1"})) == "t1"
    assert sync_request(_body({})) is None


def test_a_ping_request_is_answered_once_per_value() -> None:
    asked = {crd.ANNOTATION_PING_REQUESTED: "t1"}
    assert health.ping_request(_body(asked)) == "t1"
    assert health.ping_request(_body(asked, {"lastPing": {"request": "t1"}})) is None
    assert health.ping_request(_body(asked, {"lastPing": {"request": "t0"}})) == "t1"
    assert health.ping_request(_body({})) is None


def test_a_ping_answer_names_each_verifier_by_fingerprint_only() -> None:
    sent = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    seen = health.PingObservation(sent, "whsec_abcd...wxyz", "msg_1")
    verdict = health.Verdict(True, health.REASON_VERIFIED, "verified")
    answer = health.ping_answer("t1", verdict, sent, {"pod-b": seen, "pod-a": seen})
    assert answer == {
        "request": "t1",
        "sentAt": "2026-12-06T12:00:00Z",
        "status": "True",
        "reason": "PingVerified",
        "message": "verified",
        "verifiedBy": [
            {
                "name": n,
                "receivedAt": "2026-12-06T12:00:00Z",
                "secretFingerprint": "whsec_abcd...wxyz",
            }
            for n in ("pod-a", "pod-b")
        ],
    }
    unsent = health.ping_answer("t2", health.Verdict(None, "ReceiverNotDeployed", "m"), None, {})
    assert (unsent["status"], unsent["sentAt"], unsent["verifiedBy"]) == ("Unknown", None, [])


def test_our_request_annotations_are_in_kopfs_compared_essence_and_its_state_is_not() -> None:
    """kopf leaves every annotation under its storage prefix out of the essence it compares:
    under a prefix of its own, ours are changes (setting one runs the update handler at
    once), the operator's own bookkeeping (the last heal's time) and kopf's state are not.
    The essence stays in memory: storing it adds nothing to kopf's patch of the object."""
    import kopf

    settings = kopf.OperatorSettings()
    configure(settings)
    requested = {a: "v" for a in crd.REQUEST_ANNOTATIONS} | {f"{crd.API_GROUP}/other": "x"}
    kopfs = {
        f"{crd.KOPF_STATE_PREFIX}/{crd.KOPF_DIFFBASE_KEY}": "{}",
        f"{crd.KOPF_STATE_PREFIX}/reconcile": '{"retries":1}',
    }
    body = kopf.Body(_body(requested | kopfs | {ANNOTATION_LAST_HEAL: "t"}))  # type: ignore[arg-type]
    storage = settings.persistence.diffbase_storage
    essence = storage.build(body=body)
    cleared = settings.persistence.progress_storage.clear(essence=essence)
    assert cleared["metadata"]["annotations"] == requested
    assert storage.fetch(body=body) is None  # never handled by this process: a creation
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=cleared)
    assert not patch  # no write of kopf's own
    assert storage.fetch(body=body) == cleared
    cleared["metadata"]["annotations"].clear()  # what kopf does with it later changes nothing
    assert storage.fetch(body=body)["metadata"]["annotations"] == requested  # type: ignore[index]


def test_kopfs_essence_of_a_resource_being_deleted_is_dropped() -> None:
    """A resource being deleted needs no diff base (kopf finalizes it by its deletion
    timestamp): its essence is dropped, so deleted resources leave nothing in memory."""
    import kopf

    settings = kopf.OperatorSettings()
    configure(settings)
    storage = settings.persistence.diffbase_storage
    live = _body({})
    body = kopf.Body(live)  # type: ignore[arg-type]
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    assert len(storage) == 1  # type: ignore[arg-type]
    deleting = kopf.Body(  # type: ignore[arg-type]
        {**live, "metadata": {**live["metadata"], "deletionTimestamp": "2026-12-07T00:00:00Z"}}
    )
    assert storage.fetch(body=deleting) is None
    storage.store(body=deleting, patch=kopf.Patch(), essence=storage.build(body=deleting))
    assert len(storage) == 0  # type: ignore[arg-type]
