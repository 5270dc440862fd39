"""Issue 11: behaviours where the sandbox used to differ from kube-apiserver 1.37.

Every test runs on both (`GWO_KUBE=real` runs them on the real control plane) and asserts
kube-apiserver's answer: status code, reason, and the message shape clients depend on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kubesandbox.conftest import Api, eventually, unique

GROUP = "fidelity.kubesandbox.dev"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
THINGS = f"/apis/{GROUP}/v1/namespaces/default/things"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"

_PAIR = {"a": {"type": "string"}, "b": {"type": "string"}}
THING_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"things.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "things", "kind": "Thing"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {
                                    # As our CRD's rotation: not both interval and schedule.
                                    "rotation": {
                                        "type": "object",
                                        "properties": {
                                            "interval": {"type": "string"},
                                            "schedule": {"type": "string"},
                                        },
                                        "not": {"required": ["interval", "schedule"]},
                                    },
                                    # As our CRD's targets: exactly one of url and service.
                                    "target": {
                                        "type": "object",
                                        "properties": {
                                            "url": {"type": "string"},
                                            "service": {"type": "string"},
                                        },
                                        "oneOf": [{"required": ["url"]}, {"required": ["service"]}],
                                    },
                                    "some": {
                                        "type": "object",
                                        "properties": _PAIR,
                                        "anyOf": [{"required": ["a"]}, {"required": ["b"]}],
                                    },
                                    "every": {
                                        "type": "object",
                                        "properties": _PAIR,
                                        "allOf": [{"required": ["a"]}, {"required": ["b"]}],
                                    },
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture()
def things(api: Api) -> Iterator[Api]:
    path = f"{CRDS}/things.{GROUP}"
    api.wait_gone(path, timeout=60)
    assert api.post(CRDS, THING_CRD).status == 201
    eventually(lambda: api.get(THINGS).status == 200)
    yield api
    api.delete(path)
    api.wait_gone(path, timeout=60)


def _thing(spec: dict[str, Any]) -> dict[str, Any]:
    name = unique("t")
    return {"apiVersion": f"{GROUP}/v1", "kind": "Thing", "metadata": {"name": name}, "spec": spec}


def _rule(path: str, words: str) -> dict[str, str]:
    return {
        "reason": "FieldValueInvalid",
        "message": f'Invalid value: "": "{path}" {words}',
        "field": "<nil>",
    }


REQUIRED = "FieldValueRequired"


@pytest.mark.parametrize(
    ("spec", "causes"),
    [
        (
            {"rotation": {"interval": "1h", "schedule": "0 * * * *"}},
            [_rule("spec.rotation", "must not validate the schema (not)")],
        ),
        (
            {"target": {"url": "http://x", "service": "s"}},
            [
                _rule(
                    "spec.target",
                    "must validate one and only one schema (oneOf). Found 2 valid alternatives",
                )
            ],
        ),
        (
            {"target": {}},
            [
                _rule(
                    "spec.target", "must validate one and only one schema (oneOf). Found none valid"
                ),
                {"reason": REQUIRED, "message": "Required value", "field": "spec.target.url"},
            ],
        ),
        (
            {"some": {}},
            [
                _rule("spec.some", "must validate at least one schema (anyOf)"),
                {"reason": REQUIRED, "message": "Required value", "field": "spec.some.a"},
            ],
        ),
        (
            {"every": {"a": "1"}},
            [
                {"reason": REQUIRED, "message": "Required value", "field": "spec.every.b"},
                _rule("spec.every", "must validate all the schemas (allOf)"),
            ],
        ),
        (
            {"every": {}},
            [
                {"reason": REQUIRED, "message": "Required value", "field": "spec.every.a"},
                {"reason": REQUIRED, "message": "Required value", "field": "spec.every.b"},
                _rule("spec.every", "must validate all the schemas (allOf). None validated"),
            ],
        ),
    ],
    ids=["not", "oneOf-two", "oneOf-none", "anyOf-none", "allOf-one", "allOf-none"],
)
def test_crd_composition_keywords_are_enforced(
    things: Api, spec: dict[str, Any], causes: list[dict[str, str]]
) -> None:
    body = _thing(spec)
    reply = things.post(THINGS, body)
    assert (reply.status, reply.body["reason"]) == (422, "Invalid"), reply.body
    assert reply.body["details"]["causes"] == causes
    assert reply.body["message"].startswith(
        f'Thing.{GROUP} "{body["metadata"]["name"]}" is invalid: '
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"rotation": {"interval": "1h"}},
        {"target": {"url": "http://x"}},
        {"target": {"service": "s"}},
        {"some": {"a": "1", "b": "2"}},
        {"every": {"a": "1", "b": "2"}},
    ],
)
def test_crd_composition_keywords_admit_what_they_allow(things: Api, spec: dict[str, Any]) -> None:
    reply = things.post(THINGS, _thing(spec))
    assert reply.status == 201, reply.body


def test_a_single_cause_message_has_no_brackets_and_core_kinds_no_group(api: Api) -> None:
    reply = api.post(CONFIGMAPS, {"metadata": {"name": "Not_Valid"}})
    assert reply.status == 422
    assert reply.body["message"].startswith('ConfigMap "Not_Valid" is invalid: metadata.name: ')


def test_a_create_carrying_a_resource_version_is_refused(api: Api) -> None:
    name = unique("cm")
    reply = api.post(CONFIGMAPS, {"metadata": {"name": name, "resourceVersion": "12"}})
    assert reply.status == 500 and "reason" not in reply.body, reply.body
    assert reply.body["message"] == "resourceVersion should not be set on objects to be created"
    assert api.get(f"{CONFIGMAPS}/{name}").status == 404
    # "0" means unset.
    assert api.post(CONFIGMAPS, {"metadata": {"name": name, "resourceVersion": "0"}}).status == 201


def _owned(*refs: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": unique("cm"), "ownerReferences": list(refs)}}


def test_owner_references_need_api_version_kind_name_and_uid(api: Api) -> None:
    reply = api.post(CONFIGMAPS, _owned({"apiVersion": "", "kind": "", "name": "", "uid": "u"}))
    assert (reply.status, reply.body["reason"]) == (422, "Invalid")
    assert reply.body["details"]["causes"] == [
        {
            "reason": REQUIRED,
            "message": "Required value: must not be empty",
            "field": f"metadata.ownerReferences[0].{key}",
        }
        for key in ("apiVersion", "kind", "name")
    ]
    reply = api.post(CONFIGMAPS, _owned({"apiVersion": "v1", "kind": "ConfigMap", "name": "x"}))
    assert reply.status == 422
    assert [c["field"] for c in reply.body["details"]["causes"]] == [
        "metadata.ownerReferences[0].uid"
    ]


def test_only_one_owner_reference_may_be_the_controller(api: Api) -> None:
    refs = (
        {"apiVersion": "v1", "kind": "Namespace", "name": "x", "uid": "u1", "controller": True},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "y", "uid": "u2", "controller": True},
    )
    reply = api.post(CONFIGMAPS, _owned(*refs))
    assert reply.status == 422
    (only,) = reply.body["details"]["causes"]
    assert only["field"] == "metadata.ownerReferences"
    assert only["message"].endswith(
        'Only one reference can have Controller set to true. Found "true" in references for '
        "Namespace/x and ConfigMap/y"
    )


def _gone(api: Api, path: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.get(path).status == 404:
            return True
        time.sleep(0.1)
    return False


def test_the_garbage_collector_matches_owners_by_kind_name_and_uid(api: Api) -> None:
    owner = api.post(CONFIGMAPS, {"metadata": {"name": unique("owner")}}).body["metadata"]
    other = api.post(CONFIGMAPS, {"metadata": {"name": unique("other")}}).body["metadata"]
    right = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["name"], "uid": owner["uid"]}
    # Another object's name with the owner's uid: no such owner, the dependent is collected.
    wrong_name = {**right, "name": other["name"]}
    kept = api.post(CONFIGMAPS, _owned(right)).body["metadata"]["name"]
    collected = api.post(CONFIGMAPS, _owned(wrong_name)).body["metadata"]["name"]
    assert _gone(api, f"{CONFIGMAPS}/{collected}")
    assert api.get(f"{CONFIGMAPS}/{kept}").status == 200


def test_deployment_scale_is_an_autoscaling_v1_scale(api: Api) -> None:
    name = unique("d")
    labels = {"app": name}
    api.post(
        DEPLOYMENTS,
        {
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]},
                },
            },
        },
    )
    scale = api.get(f"{DEPLOYMENTS}/{name}/scale").body
    assert (scale["apiVersion"], scale["kind"]) == ("autoscaling/v1", "Scale")
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"]["selector"] == f"app={name}"
    scaled = api.patch(f"{DEPLOYMENTS}/{name}/scale", {"spec": {"replicas": 3}}).body
    assert (scaled["kind"], scaled["spec"]) == ("Scale", {"replicas": 3})
    assert api.get(f"{DEPLOYMENTS}/{name}").body["spec"]["replicas"] == 3


def _deployment(name: str, **spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "c", "image": "example.com/c:1"}]},
            },
            **spec,
        },
    }


def _causes(reply: Any) -> list[tuple[str, str, str]]:
    assert (reply.status, reply.body["reason"]) == (422, "Invalid"), reply.body
    return [(c["field"], c["reason"], c["message"]) for c in reply.body["details"]["causes"]]


def test_a_deployment_is_validated(api: Api) -> None:
    assert _causes(api.post(DEPLOYMENTS, _deployment(unique("d"), replicas=-1))) == [
        (
            "spec.replicas",
            "FieldValueInvalid",
            "Invalid value: -1: must be greater than or equal to 0",
        )
    ]
    empty = _deployment(unique("d"))
    empty["spec"]["template"]["spec"]["containers"] = []
    assert _causes(api.post(DEPLOYMENTS, empty)) == [
        ("spec.template.spec.containers", "FieldValueRequired", "Required value")
    ]
    imageless = _deployment(unique("d"))
    del imageless["spec"]["template"]["spec"]["containers"][0]["image"]
    assert _causes(api.post(DEPLOYMENTS, imageless)) == [
        ("spec.template.spec.containers[0].image", "FieldValueRequired", "Required value")
    ]


def test_a_deployment_is_defaulted(api: Api) -> None:
    spec = api.post(DEPLOYMENTS, _deployment(unique("d"))).body["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert (spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (10, 600)
    pod = spec["template"]["spec"]
    assert {k: pod[k] for k in ("restartPolicy", "terminationGracePeriodSeconds", "dnsPolicy")} == {
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
    }
    (container,) = pod["containers"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePolicy"] == "File"


SERVICES = "/api/v1/namespaces/default/services"


def _service(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": unique("s")}, "spec": spec}


def test_a_service_is_validated(api: Api) -> None:
    assert _causes(api.post(SERVICES, _service())) == [
        ("spec.ports", "FieldValueRequired", "Required value")
    ]
    assert _causes(api.post(SERVICES, _service(ports=[{"port": 0}]))) == [
        (
            "spec.ports[0].port",
            "FieldValueInvalid",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            "spec.ports[0].targetPort",
            "FieldValueInvalid",
            "Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
    ]
    assert _causes(
        api.post(SERVICES, _service(ports=[{"port": 80, "name": "a"}, {"port": 81}]))
    ) == [("spec.ports[1].name", "FieldValueRequired", "Required value")]
    assert _causes(api.post(SERVICES, _service(type="Bogus", ports=[{"port": 80}]))) == [
        (
            "spec.type",
            "FieldValueNotSupported",
            'Unsupported value: "Bogus": supported values: "ClusterIP", "ExternalName", '
            '"LoadBalancer", "NodePort"',
        )
    ]


def test_a_service_is_defaulted(api: Api) -> None:
    spec = api.post(SERVICES, _service(ports=[{"port": 80}])).body["spec"]
    assert spec["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 80}]
    assert (spec["type"], spec["sessionAffinity"]) == ("ClusterIP", "None")
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")
    assert spec["internalTrafficPolicy"] == "Cluster"


def test_a_deployment_status_is_validated(api: Api) -> None:
    name = unique("d")
    api.post(DEPLOYMENTS, _deployment(name, replicas=0))
    status = f"{DEPLOYMENTS}/{name}/status"
    reply = api.patch(status, {"status": {"replicas": 0, "readyReplicas": 1}})
    assert _causes(reply) == [
        (
            "status.readyReplicas",
            "FieldValueInvalid",
            "Invalid value: 1: cannot be greater than status.replicas",
        )
    ]
    assert reply.body["message"] == (
        f'Deployment.apps "{name}" is invalid: status.readyReplicas: Invalid value: 1: cannot '
        "be greater than status.replicas"
    )
    reply = api.patch(
        status, {"status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": 2}}
    )
    assert [c[0] for c in _causes(reply)] == ["status.availableReplicas"]
