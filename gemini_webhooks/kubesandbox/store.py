"""The in-memory cluster state and the API server's object semantics: create, update,
delete, events. What a write must pass is `admission`; what follows a write or a delete
(owners, finalizers) is `collector`; a PATCH request becomes an update in `patch_requests`.

Everything here is synchronous and runs on the event loop's thread, so each operation is
atomic without locks. Stored objects are never mutated in place: every write stores a
new dict, so a watch event's snapshot stays what it was.
"""

from __future__ import annotations

import collections
import copy
import json
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.kubesandbox import admission, collector, crds, errors
from gemini_webhooks.kubesandbox.errors import ApiError, cause
from gemini_webhooks.kubesandbox.object_meta import CRD_CLEANUP, FOREGROUND, ORPHAN
from gemini_webhooks.kubesandbox.resources import (
    BUILTIN_TYPES,
    INITIAL_NAMESPACES,
    REVIEW_TYPES,
    ResourceType,
    types_from_crd,
)

KOPF_PEERING_CRDS = Path(__file__).with_name("kopf-peering.yaml")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
Obj = dict[str, Any]
StoreKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace or "", name)

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Types whose `metadata.generation` tracks spec changes (the others have none).
_GENERATION_TYPES = {
    ("apps", "deployments"),
    ("policy", "poddisruptionbudgets"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}


@dataclass(frozen=True)
class Event:
    rv: int
    key: StoreKey
    type: str  # ADDED / MODIFIED / DELETED
    obj: Obj
    old: Obj | None


class Cluster:
    def __init__(self, *, history_size: int = 10_000) -> None:
        self.rv = 1000
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[StoreKey, dict[ObjKey, Obj]] = collections.defaultdict(dict)
        self.history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self.compacted_rv = self.rv  # watches from an older resourceVersion get 410 Gone
        self.listeners: list[Callable[[Event], None]] = []
        # What each field manager last server-side-applied, per object and subresource.
        self.applied: dict[tuple[str, str, str, str], dict[tuple[str, str], Obj]] = {}
        self._next_ip = 1
        for rtype in BUILTIN_TYPES + REVIEW_TYPES:
            self.types[(rtype.group, rtype.version, rtype.plural)] = rtype
        for name in INITIAL_NAMESPACES:
            self.create(self.types[("", "v1", "namespaces")], None, {"metadata": {"name": name}})
        crds = self.types[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
        for crd in yaml.safe_load_all(KOPF_PEERING_CRDS.read_text()):
            self.create(crds, None, _as_if_applied(crd))

    # --- types ----------------------------------------------------------------------------

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.types.get((group, version, plural))

    def served_types(self) -> list[ResourceType]:
        return list(self.types.values())

    # --- events ---------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _emit(self, key: StoreKey, type_: str, obj: Obj, old: Obj | None) -> None:
        event = Event(int(obj["metadata"]["resourceVersion"]), key, type_, obj, old)
        if len(self.history) == self.history.maxlen and self.history:
            self.compacted_rv = max(self.compacted_rv, self.history[0].rv)
        self.history.append(event)
        for listener in list(self.listeners):
            listener(event)

    def events_since(self, rv: int, key: StoreKey) -> Iterator[Event]:
        for event in self.history:
            if event.rv > rv and event.key == key:
                yield event

    def expire(self) -> None:
        """Forget the history: every resourceVersion issued so far is too old to watch from."""
        self.history.clear()
        self.compacted_rv = self._next_rv()  # what lists return from now on is watchable

    # --- reads ----------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self.objects[rtype.store_key].get((namespace or "", name))
        if obj is None:
            raise errors.not_found(rtype.plural, rtype.group, name)
        return obj

    def list_objects(self, rtype: ResourceType, namespace: str | None) -> list[Obj]:
        items = self.objects[rtype.store_key]
        if namespace:
            return [o for (ns, _), o in items.items() if ns == namespace]
        return list(items.values())

    def type_for(self, key: StoreKey) -> ResourceType:
        candidates = [t for t in self.types.values() if t.store_key == key]
        storage = [t for t in candidates if t.version == t.storage_version]
        return (storage or candidates)[0]

    # --- writes ---------------------------------------------------------------------------

    def _allocate_cluster_ip(self) -> str:
        self._next_ip += 1
        return f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"

    def create(
        self,
        rtype: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        field_validation: str = "Warn",
        dry_run: bool = False,
    ) -> tuple[Obj, list[str]]:
        obj = copy.deepcopy(admission.check_body(rtype, body))
        meta = obj.setdefault("metadata", {})
        if rtype.custom and self._crd_terminating(rtype):
            raise ApiError(
                403,
                "Forbidden",
                f'{rtype.group_resource} "{meta.get("name", "")}" is forbidden: create not '
                "allowed while custom resource definition is terminating",
                {"name": meta.get("name", ""), "group": rtype.group, "kind": rtype.plural},
            )
        if rtype.namespaced:
            body_ns = meta.get("namespace")
            if namespace and body_ns and body_ns != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            namespace = namespace or body_ns
            admission.check_namespace(
                rtype, namespace, self.objects[("", "namespaces")], creating=True
            )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
            namespace = None
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                secrets.choice(_GENERATE_ALPHABET) for _ in range(5)
            )
        obj["apiVersion"] = rtype.api_version
        obj["kind"] = rtype.kind
        sent_rv = meta.get("resourceVersion") not in (None, "", "0")
        for field in (
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
            "selfLink",
        ):
            meta.pop(field, None)
        if "status" in rtype.subresources and (
            rtype.custom or rtype.group in ("apps", "networking.k8s.io")
        ):
            obj.pop("status", None)
        warnings = admission.admit(
            rtype,
            obj,
            None,
            field_validation,
            served=self.types.values(),
            allocate_cluster_ip=self._allocate_cluster_ip,
        )
        if sent_rv and not dry_run:
            # kube-apiserver's storage refuses it after validation, as a plain error (500).
            raise errors.internal("resourceVersion should not be set on objects to be created")
        key = (namespace or "", meta["name"])
        if key in self.objects[rtype.store_key]:
            raise errors.already_exists(rtype.plural, rtype.group, meta["name"])
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rtype.custom or (rtype.group, rtype.plural) in _GENERATION_TYPES:
            meta["generation"] = 1
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            crds.establish(obj)
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return obj, warnings
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][key] = obj
        self._emit(rtype.store_key, "ADDED", obj, None)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(obj)
        if meta.get("ownerReferences"):
            collector.collect(self)  # a dependent created without its owner is collected
        return obj, warnings

    def update(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        field_validation: str = "Warn",
        dry_run: bool = False,
        require_rv: bool | None = None,
    ) -> tuple[Obj, list[str]]:
        new = copy.deepcopy(admission.check_body(rtype, body))
        old = self.get(rtype, namespace, name)
        meta = new.setdefault("metadata", {})
        if meta.get("name") not in (None, name):
            raise errors.bad_request("the name of the object does not match the name on the URL")
        if rtype.namespaced and meta.get("namespace") not in (None, namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent "
                "on the request"
            )
        given_rv = meta.get("resourceVersion")
        if given_rv in (None, ""):
            if require_rv if require_rv is not None else rtype.custom:
                raise errors.invalid(
                    rtype.kind,
                    rtype.group,
                    name,
                    [
                        cause(
                            "metadata.resourceVersion",
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
        elif str(given_rv) != old["metadata"]["resourceVersion"]:
            raise errors.conflict(rtype.plural, rtype.group, name)
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if "status" in rtype.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = new["metadata"]
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "generation",
                "deletionGracePeriodSeconds",
            ):
                if field in old["metadata"]:
                    meta[field] = old["metadata"][field]
                else:
                    meta.pop(field, None)
            meta["name"] = name
            if rtype.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if old["metadata"].get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(
                    old["metadata"].get("finalizers") or []
                )
                if added:
                    raise errors.invalid(
                        rtype.kind,
                        rtype.group,
                        name,
                        [
                            cause(
                                "metadata.finalizers",
                                "FieldValueForbidden",
                                "Forbidden: no new finalizers can be added if the object "
                                "is being deleted",
                            )
                        ],
                    )
        new["apiVersion"] = rtype.api_version
        new["kind"] = rtype.kind
        new["metadata"].pop("managedFields", None)
        warnings = admission.admit(
            rtype,
            new,
            old,
            field_validation,
            served=self.types.values(),
            allocate_cluster_ip=self._allocate_cluster_ip,
        )
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _same(new, old):
            return old, warnings
        if "generation" in old["metadata"] and _spec_changed(new, old):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if dry_run:
            return new, warnings
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            crds.establish(new)
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][(namespace or "", name)] = new
        self._emit(rtype.store_key, "MODIFIED", new, old)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(rtype, new)
        collector.collect(self)
        return new, warnings

    def delete(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: dict[str, Any] | None = None,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion. Returns (object, removed-now)."""
        obj = self.get(rtype, namespace, name)
        meta = obj["metadata"]
        preconditions = preconditions or {}
        if preconditions.get("uid") and preconditions["uid"] != meta["uid"]:
            raise ApiError(
                409,
                "Conflict",
                f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                f"UID in object meta: {meta['uid']}",
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != meta["resourceVersion"]
        ):
            raise errors.conflict(rtype.plural, rtype.group, name)
        if dry_run:
            return obj, False
        finalizers = list(meta.get("finalizers") or [])
        if (
            propagation == "Foreground"
            and collector.dependents(self, meta["uid"])
            and FOREGROUND not in finalizers
        ):
            finalizers.append(FOREGROUND)
        elif propagation == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if (rtype.group, rtype.plural) == ("", "namespaces") and collector.namespace_content(
            self, name
        ):
            finalizers = finalizers or ["kubernetes"]
        if rtype.group_resource == crds.CRDS and self.crd_content(obj):
            finalizers = [*finalizers, CRD_CLEANUP] if CRD_CLEANUP not in finalizers else finalizers
        if not finalizers:
            self._remove(rtype, obj)
            collector.collect(self)
            return obj, True
        if meta.get("deletionTimestamp"):
            return obj, False
        new = copy.deepcopy(obj)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        new["metadata"]["finalizers"] = finalizers
        if "generation" in meta:
            new["metadata"]["generation"] = meta["generation"] + 1
        if (rtype.group, rtype.plural) == ("", "namespaces"):
            new.setdefault("status", {})["phase"] = "Terminating"
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][(namespace or "", name)] = new
        self._emit(rtype.store_key, "MODIFIED", new, obj)
        if (rtype.group, rtype.plural) == ("", "namespaces"):
            for ctype, child in collector.namespace_content(self, name):
                if not child["metadata"].get("deletionTimestamp"):
                    self.delete(ctype, name, child["metadata"]["name"])
        if rtype.group_resource == crds.CRDS:
            ctype = self.type_for((obj["spec"]["group"], obj["spec"]["names"]["plural"]))
            for child in self.crd_content(obj):
                if not child["metadata"].get("deletionTimestamp"):
                    self.delete(
                        ctype, child["metadata"].get("namespace"), child["metadata"]["name"]
                    )
        collector.collect(self)
        return new, False

    def _crd_terminating(self, rtype: ResourceType) -> bool:
        crd = self.objects[("apiextensions.k8s.io", "customresourcedefinitions")].get(
            ("", rtype.group_resource)
        )
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    def crd_content(self, crd: Obj) -> list[Obj]:
        return list(
            self.objects.get((crd["spec"]["group"], crd["spec"]["names"]["plural"]), {}).values()
        )

    def _remove(self, rtype: ResourceType, obj: Obj) -> None:
        meta = obj["metadata"]
        key = (meta.get("namespace") or "", meta["name"])
        if self.objects[rtype.store_key].pop(key, None) is None:
            return
        self.applied.pop((*rtype.store_key, *key), None)
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit(rtype.store_key, "DELETED", gone, obj)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._unregister_crd(obj)

    def store_modified(self, rtype: ResourceType, new: Obj, old: Obj) -> None:
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][
            (new["metadata"].get("namespace") or "", new["metadata"]["name"])
        ] = new
        self._emit(rtype.store_key, "MODIFIED", new, old)

    def drop_finalizer(self, rtype: ResourceType, obj: Obj, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            self._remove(rtype, obj)
        else:
            self.store_modified(rtype, new, obj)

    # --- CRDs -----------------------------------------------------------------------------
    def _register_crd(self, crd: Obj) -> None:
        self._unregister_crd(crd, keep_objects=True)
        for rtype in types_from_crd(crd):
            self.types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def _unregister_crd(self, crd: Obj, *, keep_objects: bool = False) -> None:
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        for key in [
            k for k, t in self.types.items() if t.custom and t.group == group and t.plural == plural
        ]:
            del self.types[key]
        if not keep_objects:
            self.objects.pop((group, plural), None)


def _as_if_applied(manifest: Obj) -> Obj:
    """The manifest with kubectl's last-applied annotation, as `kubectl apply` would leave it
    (so a later `kubectl apply -f crds/` of the same file does not warn about it)."""
    applied = copy.deepcopy(manifest)
    applied["metadata"].setdefault("annotations", {})
    last = json.dumps(applied, separators=(",", ":"), sort_keys=True)
    applied["metadata"]["annotations"][LAST_APPLIED] = last + "\n"
    return applied


def _same(new: Obj, old: Obj) -> bool:
    return new == old


def _spec_changed(new: Obj, old: Obj) -> bool:
    ignored = ("metadata", "status")
    return {k: v for k, v in new.items() if k not in ignored} != {
        k: v for k, v in old.items() if k not in ignored
    }
