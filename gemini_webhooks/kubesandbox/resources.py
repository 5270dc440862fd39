"""Resource types the sandbox serves: the built-in ones, and those CRDs register.

A `ResourceType` is everything discovery, OpenAPI, Tables and validation need to know
about one served group/version/plural. Pure data; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    # The openAPIV3Schema of a CRD version; None for built-ins (stored as given).
    schema: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    printer_columns: tuple[Mapping[str, Any], ...] = field(default=(), compare=False, hash=False)
    # The `scale` subresource's paths (specReplicasPath, statusReplicasPath, labelSelectorPath).
    scale: Mapping[str, str] | None = field(default=None, compare=False, hash=False)
    # A CRD version's `selectableFields`, as field-selector labels (`spec.color`).
    selectable_fields: frozenset[str] = field(default=frozenset(), compare=False, hash=False)
    verbs: tuple[str, ...] = ALL_VERBS
    custom: bool = False  # defined by a CustomResourceDefinition
    storage_version: str = ""  # the CRD's storage version; objects are shared across versions

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def store_key(self) -> tuple[str, str]:
        """Objects live per group+plural: every version of a CRD sees the same objects."""
        return (self.group, self.plural)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"


def _rt(
    group: str,
    version: str,
    plural: str,
    kind: str,
    *,
    namespaced: bool,
    short: Iterable[str] = (),
    categories: Iterable[str] = (),
    status: bool = False,
    scale: Mapping[str, str] | None = None,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        short_names=tuple(short),
        categories=tuple(categories),
        subresources=frozenset(({"status"} if status else set()) | ({"scale"} if scale else set())),
        storage_version=version,
        scale=scale,
    )


BUILTIN_TYPES: tuple[ResourceType, ...] = (
    _rt("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"], status=True),
    _rt("", "v1", "secrets", "Secret", namespaced=True),
    _rt("", "v1", "configmaps", "ConfigMap", namespaced=True, short=["cm"]),
    _rt(
        "",
        "v1",
        "services",
        "Service",
        namespaced=True,
        short=["svc"],
        categories=["all"],
        status=True,
    ),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True, short=["sa"]),
    _rt("", "v1", "events", "Event", namespaced=True, short=["ev"]),
    _rt("", "v1", "pods", "Pod", namespaced=True, short=["po"], categories=["all"], status=True),
    _rt(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        namespaced=True,
        short=["deploy"],
        categories=["all"],
        status=True,
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".spec.selector",
        },
    ),
    _rt("events.k8s.io", "v1", "events", "Event", namespaced=True, short=["ev"]),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role", namespaced=True),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", namespaced=True),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _rt(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        namespaced=False,
    ),
    _rt(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        namespaced=True,
        short=["pdb"],
        status=True,
    ),
    _rt("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    _rt(
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        namespaced=True,
        short=["ing"],
        status=True,
    ),
    _rt(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        namespaced=True,
        short=["netpol"],
    ),
    _rt(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        short=["crd", "crds"],
        categories=["api-extensions"],
        status=True,
    ),
)

# Access reviews: created, answered, never stored. The sandbox enforces no RBAC, so the
# answer is always "allowed" — which is the truth about this server.
REVIEW_TYPES: tuple[ResourceType, ...] = tuple(
    ResourceType(
        group="authorization.k8s.io",
        version="v1",
        plural=plural,
        kind=kind,
        namespaced=namespaced,
        singular=kind.lower(),
        verbs=("create",),
        storage_version="v1",
    )
    for plural, kind, namespaced in (
        ("selfsubjectaccessreviews", "SelfSubjectAccessReview", False),
        ("subjectaccessreviews", "SubjectAccessReview", False),
        ("localsubjectaccessreviews", "LocalSubjectAccessReview", True),
    )
)

# Namespaces every cluster starts with.
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def types_from_crd(crd: Mapping[str, Any]) -> list[ResourceType]:
    """The resource types one (already validated) CRD serves: one per served version."""
    spec = crd["spec"]
    names = spec["names"]
    storage = next((v["name"] for v in spec["versions"] if v.get("storage")), "")
    result = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        subresources = frozenset((version.get("subresources") or {}).keys())
        scale = (version.get("subresources") or {}).get("scale")
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular") or names["kind"].lower(),
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=subresources,
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns") or ()),
                scale=scale if isinstance(scale, dict) else None,
                selectable_fields=frozenset(
                    str(f.get("jsonPath", "")).lstrip(".")
                    for f in version.get("selectableFields") or ()
                    if isinstance(f, dict)
                ),
                custom=True,
                storage_version=storage,
            )
        )
    return result
