"""The garbage collector and the namespace controller: dependents whose owners are gone,
foreground and orphan deletion, and the finalizers that wait for a Namespace's or a CRD's
content to go. Runs synchronously after each write, until nothing moves."""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any

from gemini_webhooks.kubesandbox import crds, owners
from gemini_webhooks.kubesandbox.object_meta import CRD_CLEANUP, FOREGROUND, ORPHAN
from gemini_webhooks.kubesandbox.resources import ResourceType

if TYPE_CHECKING:
    from gemini_webhooks.kubesandbox.store import Cluster

Obj = dict[str, Any]


def dependents(cluster: Cluster, uid: str) -> list[tuple[ResourceType, Obj]]:
    found = []
    for key, items in cluster.objects.items():
        for obj in items.values():
            refs = obj["metadata"].get("ownerReferences") or []
            if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                found.append((cluster.type_for(key), obj))
    return found


def namespace_content(cluster: Cluster, namespace: str) -> list[tuple[ResourceType, Obj]]:
    found = []
    for key, items in cluster.objects.items():
        rtype = cluster.type_for(key)
        if not rtype.namespaced:
            continue
        for (ns, _), obj in items.items():
            if ns == namespace:
                found.append((rtype, obj))
    return found


def collect(cluster: Cluster) -> None:
    """Run the garbage collector and the namespace controller until nothing moves."""
    for _ in range(100):
        if not _collect_once(cluster):
            return


def _find_owner(
    cluster: Cluster, group: str, kind: str, name: str, namespace: str
) -> tuple[bool, Obj | None]:
    rtype = next((t for t in cluster.types.values() if (t.group, t.kind) == (group, kind)), None)
    if rtype is None:
        return False, None
    return True, cluster.objects[rtype.store_key].get((namespace if rtype.namespaced else "", name))


def _collect_once(cluster: Cluster) -> bool:
    find_owner = functools.partial(_find_owner, cluster)
    for key, items in list(cluster.objects.items()):
        rtype = cluster.type_for(key)
        for obj in list(items.values()):
            meta = obj["metadata"]
            refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
            if (
                refs
                and not meta.get("deletionTimestamp")
                and not any(
                    owners.owner_present(r, meta.get("namespace") or "", find_owner) for r in refs
                )
            ):
                cluster.delete(rtype, meta.get("namespace"), meta["name"])
                return True
            if not meta.get("deletionTimestamp"):
                continue
            finalizers = meta.get("finalizers") or []
            if FOREGROUND in finalizers and not dependents(cluster, meta["uid"]):
                cluster.drop_finalizer(rtype, obj, FOREGROUND)
                return True
            if FOREGROUND in finalizers:
                for dtype, dependent in dependents(cluster, meta["uid"]):
                    if not dependent["metadata"].get("deletionTimestamp"):
                        cluster.delete(
                            dtype,
                            dependent["metadata"].get("namespace"),
                            dependent["metadata"]["name"],
                            propagation="Foreground",
                        )
                        return True
            if ORPHAN in finalizers:
                for dtype, dependent in dependents(cluster, meta["uid"]):
                    orphaned = copy.deepcopy(dependent)
                    orphaned["metadata"]["ownerReferences"] = [
                        r
                        for r in dependent["metadata"]["ownerReferences"]
                        if r.get("uid") != meta["uid"]
                    ] or None
                    if orphaned["metadata"]["ownerReferences"] is None:
                        del orphaned["metadata"]["ownerReferences"]
                    cluster.store_modified(dtype, orphaned, dependent)
                cluster.drop_finalizer(rtype, obj, ORPHAN)
                return True
            if rtype.group_resource == crds.CRDS and CRD_CLEANUP in finalizers:
                if not cluster.crd_content(obj):
                    cluster.drop_finalizer(rtype, obj, CRD_CLEANUP)
                    return True
            if (rtype.group, rtype.plural) == ("", "namespaces") and "kubernetes" in finalizers:
                if not namespace_content(cluster, meta["name"]):
                    cluster.drop_finalizer(rtype, obj, "kubernetes")
                    return True
    return False
