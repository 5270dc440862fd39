"""Read your own writes (`own_writes.OwnWrites`): a copy of a resource older than the
operator's own last write is never what a reconciliation decides on."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_webhook_operator.kube import Kube, KubeError
from gemini_webhook_operator.own_writes import OwnWrites
from gemini_webhook_operator.reconcile_report import Outcome
from gemini_webhook_operator.write_back import write_back
from tests.operator.harness import (
    Cluster,
    is_ready,
    operator_running,
    resource,
)
from tests.operator.watch_relay import Relay, relay_fixture  # noqa: F401 (a fixture)

LAG = 2.0  # seconds kopf's watch is held behind the writes


def copy_at(version: str, uid: str = "u1", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": uid,
            "resourceVersion": version,
            "annotations": {},
            "managedFields": [{"manager": "x"}],
        },
        "status": status,
    }


def test_a_copy_older_than_our_write_gives_way_to_what_the_write_stored() -> None:
    """The failure this prevents: a drift check handed kopf's copy from before the
    rotation's own writes, its rotate annotation still there, rotated again."""
    writes = OwnWrites()
    stale = copy_at("9")
    stale["metadata"]["annotations"]["gemini.webhooks.dev/rotate"] = "1"
    writes.wrote(copy_at("11", lastRotationTime="2026-12-07T18:00:00Z"))
    chosen = writes.newest(stale)
    assert chosen["metadata"]["resourceVersion"] == "11"
    assert chosen["status"] == {"lastRotationTime": "2026-12-07T18:00:00Z"}
    assert "gemini.webhooks.dev/rotate" not in chosen["metadata"]["annotations"]
    assert "managedFields" not in chosen["metadata"]  # kept compact


def test_a_copy_as_new_as_our_write_is_used_and_the_write_is_let_go() -> None:
    writes = OwnWrites()
    writes.wrote(copy_at("11"))
    newer = copy_at("12", webhookId="w1")
    assert writes.newest(newer) is newer
    writes.seen(copy_at("10"))  # an older copy delivered: still kept
    assert len(writes) == 1
    writes.seen(copy_at("11"))  # our write delivered
    assert len(writes) == 0
    assert writes.newest(copy_at("9"))["metadata"]["resourceVersion"] == "9"


def test_only_the_newest_of_our_writes_is_kept_whichever_writer_made_it() -> None:
    """The reconciler's write and the health check's, answered out of order."""
    writes = OwnWrites()
    writes.wrote(copy_at("12", webhookId="reconciled"))
    writes.wrote(copy_at("11", webhookId="health"))  # an older answer arriving late
    assert writes.newest(copy_at("10"))["status"] == {"webhookId": "reconciled"}


def test_resources_are_kept_apart_and_forgotten_at_deletion() -> None:
    writes = OwnWrites()
    writes.wrote(copy_at("11", uid="a"))
    assert writes.newest(copy_at("5", uid="b"))["metadata"]["uid"] == "b"
    writes.forget("a")
    assert writes.newest(copy_at("5", uid="a"))["metadata"]["resourceVersion"] == "5"


def test_nothing_written_and_versions_that_are_not_integers_change_nothing() -> None:
    writes = OwnWrites()
    writes.wrote(None)
    writes.wrote({"metadata": {}})
    assert len(writes) == 0
    writes.wrote(copy_at("opaque-2"))
    handed = copy_at("opaque-1")
    assert writes.newest(handed) is handed  # not comparable: the copy handed over
    writes.seen(handed)
    assert len(writes) == 0


@given(
    st.lists(
        st.tuples(st.sampled_from(["wrote", "seen"]), st.integers(min_value=1, max_value=40)),
        max_size=30,
    ),
    st.integers(min_value=1, max_value=40),
)
def test_the_copy_decided_on_is_never_older_than_our_newest_write(
    steps: list[tuple[str, int]], handed: int
) -> None:
    writes = OwnWrites()
    newest_written = 0
    for step, version in steps:
        if step == "wrote":
            writes.wrote(copy_at(str(version)))
            newest_written = max(newest_written, version)
        else:
            writes.seen(copy_at(str(version)))
            if version >= newest_written:
                newest_written = 0  # delivered: the watch's copies are at least this new
    chosen = int(writes.newest(copy_at(str(handed)))["metadata"]["resourceVersion"])
    assert chosen >= max(handed, newest_written)
    assert len(writes) <= 1


async def test_drift_checks_behind_a_lagging_watch_rotate_once_per_request(
    gemini: Cluster, emulator: Any, kube: Any, relay: Relay
) -> None:
    """kopf's watch held LAG seconds behind the writes, drift checks every ~0.3 s: the
    rotate annotation reaches the operator with the copy the drift index keeps, the
    rotation removes it, and until the watch delivers that write every drift check is
    handed the copy that still asks for a rotation. It rotates once. (Deciding on the
    handed copy, this run counted several rotations for the one request.)"""
    endpoint = emulator.endpoint()
    async with operator_running(kube, drift_interval=0.3, access=relay.access()) as running:
        await gemini.apply(resource("lag", endpoint.url, emulator.base_url))
        await gemini.wait_for("lag", is_ready)
        watches = len(relay.watches())
        relay.watch_delay = LAG
        relay.cut()  # kopf watches again, through the lag
        await relay.until("kopf watching again", lambda: len(relay.watches()) > watches)
        await gemini.patch(
            "lag", {"metadata": {"annotations": {"gemini.webhooks.dev/rotate": "once"}}}
        )
        await gemini.wait_for(
            "lag",
            lambda o: (
                o["status"].get("lastRotationReason") == "RequestedByAnnotation"
                and "gemini.webhooks.dev/rotate" not in (o["metadata"].get("annotations") or {})
            ),
            timeout=LAG * 5,
        )
        await asyncio.sleep(LAG * 2)  # drift checks while, and after, the watch catches up
        rotations = running.metrics.rotations.labels("RequestedByAnnotation")._value.get()
        assert rotations == 1
        held = await gemini.signing_secrets("lag")
        assert held is not None and len(held.secrets) == 2  # the new one and the previous
        assert len(running.operator.own_writes) == 0  # let go once the watch delivered


class _RefusesStatus:
    """A test double of `Kube`: the annotation patch succeeds, the status apply fails."""

    async def merge_patch(self, *_: Any) -> dict[str, Any]:
        return copy_at("11")

    async def apply_status(self, *_: Any, **__: Any) -> dict[str, Any]:
        raise KubeError(500, "status refused")


async def test_a_write_made_before_a_later_one_fails_is_still_read_back() -> None:
    """The rotate annotation removed, then the status apply refused (retried later): until
    the watch delivers the removal, the copy still asking for a rotation is not used."""
    writes = OwnWrites()
    stale = copy_at("9")
    stale["metadata"]["annotations"]["gemini.webhooks.dev/rotate"] = "1"
    stale["metadata"] |= {"name": "r", "namespace": "default"}
    outcome = Outcome(status={"webhookId": "w1"}, remove_annotations=["gemini.webhooks.dev/rotate"])
    body = kopf.Body(cast(kopf.RawBody, stale))
    with pytest.raises(KubeError):
        await write_back(cast(Kube, _RefusesStatus()), body, outcome, writes)
    assert writes.newest(stale)["metadata"]["resourceVersion"] == "11"
