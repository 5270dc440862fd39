"""What kopf keeps of a GeminiWebhook: its diff base in the operator's memory, its handlers'
progress (only while a handler retries) in annotations under kopf's own prefix.

kopf decides create / update / no-op by comparing a resource with the essence it stored after
the last change it handled. Its stock storages keep that essence on the object (an
annotation, or the status), one more write of the resource after every change, on top of
the one status write a reconciliation makes. Our reconciliation does not need it: it is
level-triggered (create, update and resume run the same reconcile, which observes the world
and converges, and never reads kopf's `old` or `diff`), as controller-runtime's
reconcilers are, which keep no last-handled state at all. So the essence stays here, in
memory, keyed by the resource's UID:

- a change seen while the operator runs is compared with the essence it last handled, as
  before: a spec edit, a label or one of our request annotations is an update, our own
  status write or kopf's is not;
- a resource this process has not handled yet (a start, a new leader) has no essence: kopf
  takes it as created and it is reconciled once, which is what a resume did;
- a resource being deleted drops its essence (kopf needs none to finalize).

kopf's state of earlier versions, kept on the object, is removed by the first
reconciliation (`LEGACY_KOPF_ANNOTATIONS`, in the patch of the annotations it answered).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import kopf

from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import API_GROUP

# The ids of the handlers that keep progress (kopf's changing handlers).
HANDLER_RECONCILE = "reconcile"
HANDLER_FINALIZE = "finalize"

# What kopf kept on the object before its diff base moved to memory: under our prefix (up to
# 2026-12-07) its last-handled configuration, the brand that made it drop every annotation
# under our prefix from its compared essence, its dummy touch and its handlers' progress;
# then, under its own prefix, its last-handled configuration.
LEGACY_KOPF_ANNOTATIONS = frozenset(
    {
        *(
            f"{API_GROUP}/{key}"
            for key in (
                crd.KOPF_DIFFBASE_KEY,
                "kopf-managed",
                "touch-dummy",
                HANDLER_RECONCILE,
                HANDLER_FINALIZE,
            )
        ),
        f"{crd.KOPF_STATE_PREFIX}/{crd.KOPF_DIFFBASE_KEY}",
    }
)


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """kopf's last handled essence of each resource, in this process only (see the module)."""

    def __init__(self, ignored_fields: Iterable[kopf.FieldSpec] | None = None) -> None:
        super().__init__(ignored_fields=ignored_fields)
        self._by_uid: dict[str, kopf.BodyEssence] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        uid = str(body.metadata.uid)
        if body.metadata.deletion_timestamp:
            self._by_uid.pop(uid, None)  # deleting: kopf finalizes without it
            return None
        essence = self._by_uid.get(uid)
        return copy.deepcopy(essence) if essence is not None else None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        if not body.metadata.deletion_timestamp:
            self._by_uid[str(body.metadata.uid)] = copy.deepcopy(essence)

    def __len__(self) -> int:
        return len(self._by_uid)


def configure_storages(settings: kopf.OperatorSettings, *, ignored: Iterable[str]) -> None:
    """kopf's diff base in memory (the annotations in `ignored` left out of it), its
    handlers' progress in annotations under its own prefix (the CRD's structural schema
    prunes unknown status fields)."""
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix=crd.KOPF_STATE_PREFIX
    )
    settings.persistence.diffbase_storage = MemoryDiffBaseStorage(
        ignored_fields=[("metadata", "annotations", key) for key in ignored]
    )
