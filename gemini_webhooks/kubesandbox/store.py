"""The in-memory cluster state and the API server's object semantics.

Everything here is synchronous and runs on the event loop's thread, so each operation is
atomic without locks. Stored objects are never mutated in place: every write stores a
new dict, so a watch event's snapshot stays what it was.
"""

from __future__ import annotations

import base64
import binascii
import collections
import copy
import json
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gemini_webhooks.contracts import label_selector
from gemini_webhooks.contracts.times import now_rfc3339
from gemini_webhooks.kubesandbox import builtin_validation, errors, owners, patching, schema
from gemini_webhooks.kubesandbox.errors import ApiError, cause
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

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Types whose `metadata.generation` tracks spec changes (the others have none).
_GENERATION_TYPES = {
    ("apps", "deployments"),
    ("policy", "poddisruptionbudgets"),
    ("networking.k8s.io", "ingresses"),
    ("networking.k8s.io", "networkpolicies"),
    ("apiextensions.k8s.io", "customresourcedefinitions"),
}
_LABEL_NAMED = {("", "namespaces"), ("", "services")}
FOREGROUND = "foregroundDeletion"
CRDS = "customresourcedefinitions.apiextensions.k8s.io"
CRD_CLEANUP = "customresourcecleanup.apiextensions.k8s.io"
ORPHAN = "orphan"


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

    def find_by_uid(self, uid: str) -> tuple[ResourceType, Obj] | None:
        for key, items in self.objects.items():
            for obj in items.values():
                if obj["metadata"].get("uid") == uid:
                    return self._type_for(key), obj
        return None

    def _type_for(self, key: StoreKey) -> ResourceType:
        candidates = [t for t in self.types.values() if t.store_key == key]
        storage = [t for t in candidates if t.version == t.storage_version]
        return (storage or candidates)[0]

    # --- admission ------------------------------------------------------------------------

    def _check_namespace(
        self, rtype: ResourceType, namespace: str | None, *, creating: bool
    ) -> None:
        if not rtype.namespaced:
            return
        if not namespace:
            raise errors.bad_request(
                "the namespace of the object must be given for a namespaced resource"
            )
        ns = self.objects[("", "namespaces")].get(("", namespace))
        if ns is None:
            raise errors.not_found("namespaces", "", namespace)
        if creating and ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f'{rtype.plural} "" is forbidden: unable to create new content in namespace '
                f"{namespace} because it is being terminated",
            )

    def _check_body(self, rtype: ResourceType, body: Any) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON object")
        api_version = body.get("apiVersion")
        kind = body.get("kind")
        if api_version is not None and api_version != rtype.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rtype.api_version})"
            )
        if kind is not None and kind != rtype.kind:
            raise errors.bad_request(f"the kind in the data ({kind}) does not match {rtype.kind}")
        if not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("metadata must be an object")
        return body

    def _validate_meta(self, rtype: ResourceType, obj: Obj) -> list[dict[str, str]]:
        causes = []
        meta = obj["metadata"]
        name = meta.get("name")
        pattern, limit, what, chars = (
            (_DNS_LABEL, 63, "RFC 1123 label", "alphanumeric characters or '-'")
            if (rtype.group, rtype.plural) in _LABEL_NAMED
            else (_DNS_SUBDOMAIN, 253, "RFC 1123 subdomain", "alphanumeric characters, '-' or '.'")
        )
        if not name:
            causes.append(
                cause(
                    "metadata.name",
                    "FieldValueRequired",
                    "Required value: name or generateName is required",
                )
            )
        elif not isinstance(name, str) or len(name) > limit or not pattern.match(name):
            causes.append(
                cause(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                    f"{chars}, and must start and end with an alphanumeric character",
                )
            )
        for field in ("labels", "annotations"):
            values = meta.get(field)
            if values is not None and (
                not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values())
            ):
                causes.append(
                    cause(
                        f"metadata.{field}",
                        "FieldValueTypeInvalid",
                        "Invalid value: must be a map of strings",
                    )
                )
        finalizers = meta.get("finalizers")
        if finalizers is not None and (
            not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
        ):
            causes.append(
                cause(
                    "metadata.finalizers",
                    "FieldValueTypeInvalid",
                    "Invalid value: must be a list of strings",
                )
            )
        causes += _validate_keys_and_values(meta)
        causes += owners.reference_causes(meta.get("ownerReferences"))
        return causes

    def _admit(
        self, rtype: ResourceType, obj: Obj, old: Obj | None, field_validation: str
    ) -> list[str]:
        """Type-specific normalisation, schema, validation. Returns warnings."""
        warnings: list[str] = []
        if not rtype.custom:
            unknown = builtin_validation.prune_unknown(obj, rtype.group, rtype.version, rtype.kind)
            if unknown and field_validation == "Strict":
                quoted = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise errors.bad_request(
                    f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                    f"{rtype.kind}: strict decoding error: {quoted}"
                )
            if unknown and field_validation == "Warn":
                warnings += [f'unknown field "{u}"' for u in unknown]
            if field_validation == "Strict":
                builtin_validation.check_strict(obj, rtype.kind, rtype.group)
        causes = self._validate_meta(rtype, obj)
        kind_key = (rtype.group, rtype.plural)
        if old is not None:
            causes += _immutable_fields(kind_key, obj, old)
        if kind_key == ("", "secrets"):
            causes += _fold_secret(obj)
        elif kind_key == ("", "services"):
            self._default_service(obj, old)
        elif kind_key == ("apps", "deployments"):
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("replicas", 1)
                causes += _deployment_selector(spec)
        elif kind_key == ("", "namespaces"):
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif kind_key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            causes += self._admit_crd(obj, old)
        if not rtype.custom:
            builtin_validation.apply_defaults(rtype.group, rtype.plural, obj)
            causes += builtin_validation.causes(rtype.group, rtype.plural, obj)
        if rtype.custom and rtype.schema is not None:
            unknown, schema_causes = schema.admit(obj, rtype.schema)
            if unknown and field_validation == "Strict":
                quoted = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise errors.bad_request(
                    f'{rtype.kind} in version "{rtype.version}" cannot be handled as a '
                    f"{rtype.kind}: strict decoding error: {quoted}"
                )
            if unknown and field_validation == "Warn":
                warnings += [f'unknown field "{u}"' for u in unknown]
            causes += schema_causes
        if causes:
            raise errors.invalid(rtype.kind, rtype.group, obj["metadata"].get("name", ""), causes)
        return warnings

    def _default_service(self, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        spec.setdefault("type", "ClusterIP")
        if old is not None and old.get("spec", {}).get("clusterIP"):
            spec["clusterIP"] = old["spec"]["clusterIP"]
        elif spec.get("clusterIP") is None:
            self._next_ip += 1
            spec["clusterIP"] = f"10.96.{self._next_ip // 250}.{self._next_ip % 250 + 1}"
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
        spec.setdefault("sessionAffinity", "None")

    def _admit_crd(self, obj: Obj, old: Obj | None) -> list[dict[str, str]]:
        causes = []
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return [cause("spec", "FieldValueRequired", "Required value")]
        names: dict[str, Any] = spec["names"] if isinstance(spec.get("names"), dict) else {}
        group = spec.get("group")
        if not group:
            causes.append(cause("spec.group", "FieldValueRequired", "Required value"))
        for field in ("plural", "kind"):
            if not names.get(field):
                causes.append(cause(f"spec.names.{field}", "FieldValueRequired", "Required value"))
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            causes.append(
                cause(
                    "spec.scope",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{spec.get("scope")}": supported values: '
                    '"Cluster", "Namespaced"',
                )
            )
        versions = spec.get("versions")
        if not isinstance(versions, list) or not versions:
            causes.append(cause("spec.versions", "FieldValueRequired", "Required value"))
            versions = []
        storage = [v for v in versions if isinstance(v, dict) and v.get("storage")]
        if versions and len(storage) != 1:
            causes.append(
                cause(
                    "spec.versions",
                    "FieldValueInvalid",
                    "Invalid value: must have exactly one version marked as storage version",
                )
            )
        for index, version in enumerate(versions):
            if not isinstance(version, dict) or not version.get("name"):
                causes.append(
                    cause(f"spec.versions[{index}].name", "FieldValueRequired", "Required value")
                )
                continue
            version.setdefault("served", True)
            openapi = (version.get("schema") or {}).get("openAPIV3Schema")
            if not isinstance(openapi, dict):
                causes.append(
                    cause(
                        f"spec.versions[{index}].schema.openAPIV3Schema",
                        "FieldValueRequired",
                        "Required value: schemas are required",
                    )
                )
            elif openapi.get("type") != "object":
                causes.append(
                    cause(
                        f"spec.versions[{index}].schema.openAPIV3Schema.type",
                        "FieldValueRequired",
                        "Required value: must be object at the root",
                    )
                )
        name = obj["metadata"].get("name")
        if group and names.get("plural") and name != f"{names['plural']}.{group}":
            causes.append(
                cause(
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                )
            )
        if old is not None and old.get("spec", {}).get("group") != group:
            causes.append(
                cause("spec.group", "FieldValueInvalid", "Invalid value: field is immutable")
            )
        if causes:
            return causes
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", f"{names['kind']}List")
        spec.setdefault("conversion", {"strategy": "None"})
        for (g, _, plural), rtype in list(self.types.items()):
            if g == group and plural == names["plural"] and not rtype.custom:
                return [
                    cause(
                        "spec.names.plural",
                        "FieldValueInvalid",
                        "Invalid value: conflicts with a built-in type",
                    )
                ]
        return []

    # --- writes ---------------------------------------------------------------------------

    def create(
        self,
        rtype: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        field_validation: str = "Warn",
        dry_run: bool = False,
    ) -> tuple[Obj, list[str]]:
        obj = copy.deepcopy(self._check_body(rtype, body))
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
            self._check_namespace(rtype, namespace, creating=True)
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
        warnings = self._admit(rtype, obj, None, field_validation)
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
            self._establish(obj)
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return obj, warnings
        meta["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][key] = obj
        self._emit(rtype.store_key, "ADDED", obj, None)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(obj)
        if meta.get("ownerReferences"):
            self._collect()  # a dependent created without its owner is collected
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
        new = copy.deepcopy(self._check_body(rtype, body))
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
        warnings = self._admit(rtype, new, old, field_validation)
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if _same(new, old):
            return old, warnings
        if "generation" in old["metadata"] and _spec_changed(new, old):
            new["metadata"]["generation"] = old["metadata"]["generation"] + 1
        if dry_run:
            return new, warnings
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._establish(new)
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][(namespace or "", name)] = new
        self._emit(rtype.store_key, "MODIFIED", new, old)
        if (rtype.group, rtype.plural) == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._register_crd(new)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(rtype, new)
        self._collect()
        return new, warnings

    def patch(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        patch_body: Any,
        *,
        subresource: str | None = None,
        field_validation: str = "Warn",
        dry_run: bool = False,
        field_manager: str | None = None,
    ) -> tuple[Obj, list[str]]:
        content_type = content_type.split(";")[0].strip()
        if content_type == patching.APPLY_PATCH:
            return self.apply(
                rtype,
                namespace,
                name,
                patch_body,
                field_validation=field_validation,
                dry_run=dry_run,
                subresource=subresource,
                field_manager=field_manager,
            )
        old = self.get(rtype, namespace, name)
        patched, _ = self.patch_document(old, content_type, patch_body, custom=rtype.custom)
        if not isinstance(patched, dict):
            raise errors.bad_request("the patch must leave a JSON object")
        meta = patched.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        # An unconditional patch: only a resourceVersion the patch itself changes is checked.
        if meta.get("resourceVersion") in (None, ""):
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        return self.update(
            rtype,
            namespace,
            name,
            patched,
            subresource=subresource,
            field_validation=field_validation,
            dry_run=dry_run,
            require_rv=False,
        )

    def patch_document(
        self, document: Obj, content_type: str, patch_body: Any, *, custom: bool
    ) -> tuple[Any, str]:
        """Apply a patch of the given media type to a copy of `document`."""
        content_type = content_type.split(";")[0].strip()
        current = copy.deepcopy(document)
        try:
            if content_type == patching.JSON_PATCH:
                return patching.json_patch(current, patch_body), content_type
            if content_type == patching.MERGE_PATCH:
                if not isinstance(patch_body, dict):
                    raise patching.PatchError("a merge patch must be a JSON object")
                return patching.merge_patch(current, patch_body), content_type
            if content_type == patching.STRATEGIC_MERGE_PATCH:
                if custom:
                    raise ApiError(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media "
                        "types include: application/json-patch+json, "
                        "application/merge-patch+json, application/apply-patch+yaml",
                    )
                if not isinstance(patch_body, dict):
                    raise patching.PatchError("a strategic merge patch must be a JSON object")
                return patching.strategic_merge_patch(current, patch_body), content_type
        except patching.PatchError as e:
            raise errors.bad_request(str(e)) from None
        except patching.PatchConflict as e:
            raise ApiError(422, "Invalid", str(e)) from None
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the media type {content_type!r} is not a supported patch type",
        )

    def apply(
        self,
        rtype: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        field_validation: str,
        dry_run: bool,
        subresource: str | None,
        field_manager: str | None = None,
    ) -> tuple[Obj, list[str]]:
        """Server-side apply, simplified: create, or merge the applied fields; what the same
        field manager applied before and no longer applies is removed. There is no shared
        ownership, hence no conflicts (see the docs)."""
        if not field_manager:
            raise errors.invalid(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [
                    cause(
                        "fieldManager",
                        "FieldValueRequired",
                        "Required value: is required for apply patch",
                    )
                ],
            )
        if not isinstance(body, dict):
            raise errors.bad_request("an apply patch must be an object")
        key = (namespace or "", name)
        applied_key = (field_manager, subresource or "")
        if key not in self.objects[rtype.store_key]:
            if subresource:
                raise errors.not_found(rtype.plural, rtype.group, name)
            body = dict(body)
            body.setdefault("metadata", {})["name"] = name
            created = self.create(
                rtype, namespace, body, field_validation=field_validation, dry_run=dry_run
            )
            if not dry_run:
                self.applied[(*rtype.store_key, *key)] = {applied_key: copy.deepcopy(body)}
            return created
        old = self.objects[rtype.store_key][key]
        merged = patching.strategic_merge_patch(copy.deepcopy(old), body)
        previous = self.applied.get((*rtype.store_key, *key), {}).get(applied_key)
        if previous is not None:
            patching.remove_unapplied(merged, previous, body)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        result = self.update(
            rtype,
            namespace,
            name,
            merged,
            subresource=subresource,
            field_validation=field_validation,
            dry_run=dry_run,
            require_rv=False,
        )
        if not dry_run:
            self.applied.setdefault((*rtype.store_key, *key), {})[applied_key] = copy.deepcopy(body)
        return result

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
            and self._dependents(meta["uid"])
            and FOREGROUND not in finalizers
        ):
            finalizers.append(FOREGROUND)
        elif propagation == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if (rtype.group, rtype.plural) == ("", "namespaces") and self._namespace_content(name):
            finalizers = finalizers or ["kubernetes"]
        if rtype.group_resource == CRDS and self._crd_content(obj):
            finalizers = [*finalizers, CRD_CLEANUP] if CRD_CLEANUP not in finalizers else finalizers
        if not finalizers:
            self._remove(rtype, obj)
            self._collect()
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
            for ctype, child in self._namespace_content(name):
                if not child["metadata"].get("deletionTimestamp"):
                    self.delete(ctype, name, child["metadata"]["name"])
        if rtype.group_resource == CRDS:
            ctype = self._type_for((obj["spec"]["group"], obj["spec"]["names"]["plural"]))
            for child in self._crd_content(obj):
                if not child["metadata"].get("deletionTimestamp"):
                    self.delete(
                        ctype, child["metadata"].get("namespace"), child["metadata"]["name"]
                    )
        self._collect()
        return new, False

    def _crd_terminating(self, rtype: ResourceType) -> bool:
        crd = self.objects[("apiextensions.k8s.io", "customresourcedefinitions")].get(
            ("", rtype.group_resource)
        )
        return bool(crd and crd["metadata"].get("deletionTimestamp"))

    def _crd_content(self, crd: Obj) -> list[Obj]:
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

    # --- garbage collection & namespaces --------------------------------------------------

    def _dependents(self, uid: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for key, items in self.objects.items():
            for obj in items.values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(isinstance(r, dict) and r.get("uid") == uid for r in refs):
                    found.append((self._type_for(key), obj))
        return found

    def _namespace_content(self, namespace: str) -> list[tuple[ResourceType, Obj]]:
        found = []
        for key, items in self.objects.items():
            rtype = self._type_for(key)
            if not rtype.namespaced:
                continue
            for (ns, _), obj in items.items():
                if ns == namespace:
                    found.append((rtype, obj))
        return found

    def _collect(self) -> None:
        """Run the garbage collector and the namespace controller until nothing moves."""
        for _ in range(100):
            if not self._collect_once():
                return

    def _find_owner(
        self, group: str, kind: str, name: str, namespace: str
    ) -> tuple[bool, Obj | None]:
        rtype = next((t for t in self.types.values() if (t.group, t.kind) == (group, kind)), None)
        if rtype is None:
            return False, None
        return True, self.objects[rtype.store_key].get(
            (namespace if rtype.namespaced else "", name)
        )

    def _collect_once(self) -> bool:
        for key, items in list(self.objects.items()):
            rtype = self._type_for(key)
            for obj in list(items.values()):
                meta = obj["metadata"]
                refs = [r for r in meta.get("ownerReferences") or [] if isinstance(r, dict)]
                if (
                    refs
                    and not meta.get("deletionTimestamp")
                    and not any(
                        owners.owner_present(r, meta.get("namespace") or "", self._find_owner)
                        for r in refs
                    )
                ):
                    self.delete(rtype, meta.get("namespace"), meta["name"])
                    return True
                if not meta.get("deletionTimestamp"):
                    continue
                finalizers = meta.get("finalizers") or []
                if FOREGROUND in finalizers and not self._dependents(meta["uid"]):
                    self._drop_finalizer(rtype, obj, FOREGROUND)
                    return True
                if FOREGROUND in finalizers:
                    for dtype, dependent in self._dependents(meta["uid"]):
                        if not dependent["metadata"].get("deletionTimestamp"):
                            self.delete(
                                dtype,
                                dependent["metadata"].get("namespace"),
                                dependent["metadata"]["name"],
                                propagation="Foreground",
                            )
                            return True
                if ORPHAN in finalizers:
                    for dtype, dependent in self._dependents(meta["uid"]):
                        orphaned = copy.deepcopy(dependent)
                        orphaned["metadata"]["ownerReferences"] = [
                            r
                            for r in dependent["metadata"]["ownerReferences"]
                            if r.get("uid") != meta["uid"]
                        ] or None
                        if orphaned["metadata"]["ownerReferences"] is None:
                            del orphaned["metadata"]["ownerReferences"]
                        self._store(dtype, orphaned, dependent)
                    self._drop_finalizer(rtype, obj, ORPHAN)
                    return True
                if rtype.group_resource == CRDS and CRD_CLEANUP in finalizers:
                    if not self._crd_content(obj):
                        self._drop_finalizer(rtype, obj, CRD_CLEANUP)
                        return True
                if (rtype.group, rtype.plural) == ("", "namespaces") and "kubernetes" in finalizers:
                    if not self._namespace_content(meta["name"]):
                        self._drop_finalizer(rtype, obj, "kubernetes")
                        return True
        return False

    def _store(self, rtype: ResourceType, new: Obj, old: Obj) -> None:
        new["metadata"]["resourceVersion"] = str(self._next_rv())
        self.objects[rtype.store_key][
            (new["metadata"].get("namespace") or "", new["metadata"]["name"])
        ] = new
        self._emit(rtype.store_key, "MODIFIED", new, old)

    def _drop_finalizer(self, rtype: ResourceType, obj: Obj, finalizer: str) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"]["finalizers"] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            self._remove(rtype, obj)
        else:
            self._store(rtype, new, obj)

    # --- CRDs -----------------------------------------------------------------------------

    def _establish(self, crd: Obj) -> None:
        names = dict(crd["spec"]["names"])
        stamp = now_rfc3339()
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": stamp,
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": stamp,
                },
            ],
        }

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


_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_STANDARD_FINALIZERS = {"kubernetes", ORPHAN, FOREGROUND, CRD_CLEANUP}
_NAME_RULE = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character"
)


def _qualified_name_problem(key: str) -> str | None:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return _NAME_RULE + " (and be at most 63 characters)"
    return None


def _validate_keys_and_values(meta: Obj) -> list[dict[str, str]]:
    """Label/annotation keys, label values and finalizer names, as the API server checks them."""
    causes = []
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            # kube-apiserver checks annotation keys lower-cased (`Example.COM/x` is fine).
            problem = _qualified_name_problem(key.lower() if field == "annotations" else key)
            if problem:
                causes.append(
                    cause(
                        f"metadata.{field}",
                        "FieldValueInvalid",
                        f'Invalid value: "{key}": {problem}',
                    )
                )
            if (
                field == "labels"
                and isinstance(value, str)
                and value
                and (len(value) > 63 or not _QUALIFIED_NAME.match(value))
            ):
                causes.append(
                    cause(
                        "metadata.labels",
                        "FieldValueInvalid",
                        f'Invalid value: "{value}": a valid label must be an empty '
                        "string or consist of alphanumeric characters, '-', '_' or "
                        "'.', and must start and end with an alphanumeric character "
                        "(at most 63 characters)",
                    )
                )
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        size = sum(len(k) + len(v) for k, v in annotations.items() if isinstance(v, str))
        if size > 256 * 1024:
            causes.append(
                cause(
                    "metadata.annotations",
                    "FieldValueTooLong",
                    "Too long: must have at most 262144 bytes",
                )
            )
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        if not isinstance(finalizer, str):
            continue
        problem = _qualified_name_problem(finalizer)
        if problem is None and "/" not in finalizer and finalizer not in _STANDARD_FINALIZERS:
            problem = "name is neither a standard finalizer name nor is it fully qualified"
        if problem:
            causes.append(
                cause(
                    f"metadata.finalizers[{index}]",
                    "FieldValueInvalid",
                    f'Invalid value: "{finalizer}": {problem}',
                )
            )
    return causes


def _deployment_selector(spec: Obj) -> list[dict[str, str]]:
    selector = spec.get("selector")
    if not isinstance(selector, dict) or not (
        selector.get("matchLabels") or selector.get("matchExpressions")
    ):
        return [cause("spec.selector", "FieldValueRequired", "Required value")]
    try:
        selects = label_selector.from_object(selector)
    except label_selector.SelectorError as error:
        return [cause("spec.selector", "FieldValueInvalid", f"Invalid value: {error}")]
    template: Obj = spec["template"] if isinstance(spec.get("template"), dict) else {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selects.matches(labels):
        return [
            cause(
                "spec.template.metadata.labels",
                "FieldValueInvalid",
                f"Invalid value: {labels!r}: `selector` does not match template `labels`",
            )
        ]
    return []


def _immutable_fields(kind_key: tuple[str, str], new: Obj, old: Obj) -> list[dict[str, str]]:
    def changed(*path: str) -> bool:
        a: Any = new
        b: Any = old
        for part in path:
            a = a.get(part) if isinstance(a, dict) else None
            b = b.get(part) if isinstance(b, dict) else None
        return bool(a != b)

    immutable = "Invalid value: field is immutable"
    causes = []
    if kind_key in (("", "secrets"), ("", "configmaps")) and old.get("immutable") is True:
        if new.get("immutable") is not True:
            causes.append(
                cause(
                    "immutable",
                    "FieldValueForbidden",
                    "Forbidden: field is immutable when `immutable` is set",
                )
            )
        for field in ("data", "binaryData", "stringData"):
            if new.get(field) is not None and changed(field):
                causes.append(
                    cause(
                        field,
                        "FieldValueForbidden",
                        "Forbidden: field is immutable when `immutable` is set",
                    )
                )
    if kind_key == ("", "secrets") and new.get("type", "Opaque") != old.get("type", "Opaque"):
        causes.append(cause("type", "FieldValueInvalid", immutable))
    if kind_key == ("apps", "deployments") and changed("spec", "selector"):
        causes.append(cause("spec.selector", "FieldValueInvalid", immutable))
    return causes


def _as_if_applied(manifest: Obj) -> Obj:
    """The manifest with kubectl's last-applied annotation, as `kubectl apply` would leave it
    (so a later `kubectl apply -f crds/` of the same file does not warn about it)."""
    applied = copy.deepcopy(manifest)
    applied["metadata"].setdefault("annotations", {})
    last = json.dumps(applied, separators=(",", ":"), sort_keys=True)
    applied["metadata"]["annotations"][LAST_APPLIED] = last + "\n"
    return applied


def _fold_secret(obj: Obj) -> list[dict[str, str]]:
    causes = []
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        return [cause("data", "FieldValueTypeInvalid", "Invalid value: must be a map of strings")]
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            # The API server fails to decode such a body at all: 400, not 422.
            raise errors.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"in data[{key}]"
            ) from None
    string_data = obj.pop("stringData", None) or {}
    if not isinstance(string_data, dict):
        return [
            cause("stringData", "FieldValueTypeInvalid", "Invalid value: must be a map of strings")
        ]
    for key, value in string_data.items():
        if not isinstance(value, str):
            causes.append(
                cause(
                    f"stringData[{key}]", "FieldValueTypeInvalid", "Invalid value: must be a string"
                )
            )
            continue
        data[key] = base64.b64encode(value.encode()).decode()
    if data:
        obj["data"] = data
    obj.setdefault("type", "Opaque")
    return causes


def _same(new: Obj, old: Obj) -> bool:
    return new == old


def _spec_changed(new: Obj, old: Obj) -> bool:
    ignored = ("metadata", "status")
    return {k: v for k, v in new.items() if k not in ignored} != {
        k: v for k, v in old.items() if k not in ignored
    }
