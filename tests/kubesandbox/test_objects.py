"""Fidelity points 1-3 and 7: object metadata, concurrency, errors, patches, core types."""

from __future__ import annotations

import base64

import pytest

from tests.kubesandbox.conftest import WIDGETS, Api, Reply, unique, widget

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def test_created_object_gets_uid_timestamp_resource_version_and_generation(widgets: Api) -> None:
    reply = widgets.post(WIDGETS, widget(unique("w")))
    assert reply.status == 201
    meta = reply.body["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1


def test_resource_versions_increase_across_resources(api: Api) -> None:
    first = api.post(CONFIGMAPS, {"metadata": {"name": unique("cm")}}).body
    second = api.post(SECRETS, {"metadata": {"name": unique("s")}}).body
    third = api.post(CONFIGMAPS, {"metadata": {"name": unique("cm")}}).body
    versions = [int(o["metadata"]["resourceVersion"]) for o in (first, second, third)]
    assert versions == sorted(versions) and len(set(versions)) == 3


def test_generation_moves_on_spec_changes_only(widgets: Api) -> None:
    name = unique("w")
    widgets.post(WIDGETS, widget(name))
    labelled = widgets.patch(f"{WIDGETS}/{name}", {"metadata": {"labels": {"a": "b"}}}).body
    assert labelled["metadata"]["generation"] == 1
    status = widgets.patch(f"{WIDGETS}/{name}/status", {"status": {"phase": "x"}}).body
    assert status["metadata"]["generation"] == 1
    changed = widgets.patch(f"{WIDGETS}/{name}", {"spec": {"size": 4}}).body
    assert changed["metadata"]["generation"] == 2


def test_noop_update_keeps_the_resource_version(api: Api) -> None:
    name = unique("cm")
    created = api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"a": "1"}}).body
    again = api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "1"}}).body
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


def test_update_with_a_stale_resource_version_is_a_409_conflict(api: Api) -> None:
    name = unique("cm")
    stale = api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"a": "1"}}).body
    api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "2"}})
    stale["data"] = {"a": "3"}
    reply = api.put(f"{CONFIGMAPS}/{name}", stale)
    assert reply.status == 409
    assert reply.body["kind"] == "Status" and reply.body["reason"] == "Conflict"
    assert reply.body["details"]["name"] == name


def test_json_patch_testing_a_stale_resource_version_is_refused(api: Api) -> None:
    # A real API server answers a failed `test` op with 422; kopf relies on exactly that.
    name = unique("cm")
    stale = api.post(CONFIGMAPS, {"metadata": {"name": name}}).body["metadata"]["resourceVersion"]
    api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "2"}})
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/data/b", "value": "3"},
    ]
    reply = api.patch(f"{CONFIGMAPS}/{name}", ops, content_type="application/json-patch+json")
    assert reply.status == 422 and reply.body["kind"] == "Status"
    assert "b" not in api.get(f"{CONFIGMAPS}/{name}").body["data"]


def test_json_patch_replacing_the_resource_version_with_a_stale_one_is_a_409(api: Api) -> None:
    name = unique("cm")
    stale = api.post(CONFIGMAPS, {"metadata": {"name": name}}).body["metadata"]["resourceVersion"]
    api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "2"}})
    ops = [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/data/b", "value": "3"},
    ]
    reply = api.patch(f"{CONFIGMAPS}/{name}", ops, content_type="application/json-patch+json")
    assert reply.status == 409 and reply.body["reason"] == "Conflict"


def test_json_patch_with_a_fresh_test_applies(api: Api) -> None:
    name = unique("cm")
    rv = api.post(CONFIGMAPS, {"metadata": {"name": name}}).body["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/data", "value": {"k": "v"}},
    ]
    reply = api.patch(f"{CONFIGMAPS}/{name}", ops, content_type="application/json-patch+json")
    assert reply.status == 200 and reply.body["data"] == {"k": "v"}


def test_creating_an_existing_object_is_a_409_already_exists(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}})
    reply = api.post(CONFIGMAPS, {"metadata": {"name": name}})
    assert reply.status == 409 and reply.body["reason"] == "AlreadyExists"


def test_a_missing_object_is_a_404_not_found(api: Api) -> None:
    reply = api.get(f"{CONFIGMAPS}/{unique('absent')}")
    assert reply.status == 404
    assert reply.body["kind"] == "Status" and reply.body["reason"] == "NotFound"


def test_an_invalid_name_is_a_422_naming_the_field(api: Api) -> None:
    reply = api.post(CONFIGMAPS, {"metadata": {"name": "Not_Valid"}})
    assert reply.status == 422 and reply.body["reason"] == "Invalid"
    assert [c["field"] for c in reply.body["details"]["causes"]] == ["metadata.name"]


def test_an_invalid_custom_resource_is_a_422_with_one_cause_per_field(widgets: Api) -> None:
    reply = widgets.post(WIDGETS, widget(unique("w"), size=30, color="pink", tag="UPPER"))
    assert reply.status == 422 and reply.body["reason"] == "Invalid"
    causes = {c["field"]: c for c in reply.body["details"]["causes"]}
    assert set(causes) == {"spec.size", "spec.color", "spec.tag"}
    assert causes["spec.color"]["reason"] == "FieldValueNotSupported"


def test_a_missing_required_field_is_a_422(widgets: Api) -> None:
    body = widget(unique("w"))
    del body["spec"]["size"]
    reply = widgets.post(WIDGETS, body)
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "spec.size"
    assert reply.body["details"]["causes"][0]["reason"] == "FieldValueRequired"


def test_a_wrongly_typed_field_is_a_422(widgets: Api) -> None:
    reply = widgets.post(WIDGETS, widget(unique("w"), size="three"))  # type: ignore[arg-type]
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["reason"] == "FieldValueTypeInvalid"


def test_a_body_that_is_not_json_is_a_400(api: Api) -> None:
    reply = api.post(CONFIGMAPS, "{not json")
    assert reply.status == 400 and reply.body["kind"] == "Status"


def test_creating_in_a_missing_namespace_is_a_404(api: Api) -> None:
    reply = api.post(
        f"/api/v1/namespaces/{unique('nowhere')}/configmaps", {"metadata": {"name": "x"}}
    )
    assert reply.status == 404


def test_merge_patch_sets_and_removes_keys(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"a": "1", "b": "2"}})
    reply = api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": None, "c": "3"}})
    assert reply.body["data"] == {"b": "2", "c": "3"}


def _deployment(name: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "main:1", "env": [{"name": "A", "value": "1"}]},
                        {"name": "side", "image": "side:1"},
                    ]
                },
            },
        },
    }


def test_strategic_merge_patch_merges_containers_by_name(api: Api) -> None:
    name = unique("d")
    api.post(DEPLOYMENTS, _deployment(name))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "main", "image": "main:2", "env": [{"name": "B", "value": "2"}]},
                    ]
                }
            }
        }
    }
    reply = api.patch(
        f"{DEPLOYMENTS}/{name}", patch, content_type="application/strategic-merge-patch+json"
    )
    assert reply.status == 200
    containers = reply.body["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("main", "main:2"), ("side", "side:1")]
    # kube-apiserver puts a new item before the items only the server had (mergeSortedSlice).
    assert [e["name"] for e in containers[0]["env"]] == ["B", "A"]


def test_strategic_merge_patch_deletes_list_items_by_directive(api: Api) -> None:
    name = unique("d")
    api.post(DEPLOYMENTS, _deployment(name))
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}
    reply = api.patch(
        f"{DEPLOYMENTS}/{name}", patch, content_type="application/strategic-merge-patch+json"
    )
    assert [c["name"] for c in reply.body["spec"]["template"]["spec"]["containers"]] == ["main"]


def test_strategic_merge_patch_is_refused_for_custom_resources(widgets: Api) -> None:
    name = unique("w")
    widgets.post(WIDGETS, widget(name))
    reply = widgets.patch(
        f"{WIDGETS}/{name}",
        {"spec": {"size": 2}},
        content_type="application/strategic-merge-patch+json",
    )
    assert reply.status == 415


def test_deployment_status_is_written_only_through_its_status_subresource(api: Api) -> None:
    name = unique("d")
    api.post(DEPLOYMENTS, _deployment(name))
    ignored = api.patch(f"{DEPLOYMENTS}/{name}", {"status": {"readyReplicas": 1}})
    assert ignored.status == 200, ignored.body
    assert "readyReplicas" not in (ignored.body.get("status") or {})
    # kube-apiserver validates status too: readyReplicas may not exceed replicas.
    status = {"replicas": 1, "readyReplicas": 1}
    written = api.patch(f"{DEPLOYMENTS}/{name}/status", {"status": status})
    assert written.status == 200, written.body
    assert written.body["status"]["readyReplicas"] == 1


def test_secret_string_data_is_folded_into_base64_data(api: Api) -> None:
    name = unique("s")
    body = {
        "metadata": {"name": name},
        "data": {"a": base64.b64encode(b"x").decode()},
        "stringData": {"b": "plain"},
    }
    secret = api.post(SECRETS, body).body
    assert "stringData" not in secret
    assert base64.b64decode(secret["data"]["b"]) == b"plain"
    assert secret["type"] == "Opaque"


def test_secret_data_that_is_not_base64_is_a_400(api: Api) -> None:
    reply = api.post(SECRETS, {"metadata": {"name": unique("s")}, "data": {"a": "!!!"}})
    assert reply.status == 400
    assert "base64" in reply.body["message"]


def test_service_gets_a_cluster_ip_and_port_defaults(api: Api) -> None:
    body = {"metadata": {"name": unique("svc")}, "spec": {"ports": [{"port": 80}]}}
    service = api.post("/api/v1/namespaces/default/services", body).body
    assert service["spec"]["clusterIP"]
    assert service["spec"]["ports"][0]["protocol"] == "TCP"


def test_cluster_scoped_objects_have_no_namespace(api: Api) -> None:
    name = unique("cr")
    body = {"metadata": {"name": name, "namespace": "default"}, "rules": []}
    role = api.post("/apis/rbac.authorization.k8s.io/v1/clusterroles", body).body
    assert "namespace" not in role["metadata"]
    assert api.get(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}").status == 200
    api.delete(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")


@pytest.mark.parametrize(
    ("collection", "body"),
    [
        ("/api/v1/namespaces/default/serviceaccounts", {}),
        (
            "/api/v1/namespaces/default/events",
            {
                "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
                "reason": "Tested",
                "message": "m",
                "type": "Normal",
            },
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            {
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "reportingController": "t",
                "reportingInstance": "t",
                "action": "Test",
                "reason": "Tested",
                "type": "Normal",
                "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default"},
            },
        ),
        ("/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles", {"rules": []}),
        (
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            {
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "default"}],
            },
        ),
        (
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            {"spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}},
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            {"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}},
        ),
    ],
)
def test_core_types_are_stored_and_served(api: Api, collection: str, body: dict) -> None:
    name = unique("obj")
    created = api.post(collection, {"metadata": {"name": name}, **body})
    assert created.status == 201, created.body
    fetched = api.get(f"{collection}/{name}")
    assert (
        fetched.status == 200 and fetched.body["metadata"]["uid"] == created.body["metadata"]["uid"]
    )
    listed = api.get(collection).body
    assert name in [i["metadata"]["name"] for i in listed["items"]]
    assert api.delete(f"{collection}/{name}").status == 200


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"labels": {"bad key!": "v"}}, "metadata.labels"),
        ({"labels": {"k": "-starts-with-dash"}}, "metadata.labels"),
        ({"labels": {"k": "x" * 64}}, "metadata.labels"),
        ({"annotations": {"bad key!": "v"}}, "metadata.annotations"),
        ({"finalizers": ["no-domain"]}, "metadata.finalizers[0]"),
    ],
)
def test_malformed_labels_annotations_and_finalizers_are_a_422(
    api: Api, meta: dict, field: str
) -> None:
    reply = api.post(CONFIGMAPS, {"metadata": {"name": unique("cm"), **meta}})
    assert reply.status == 422
    assert [c["field"] for c in reply.body["details"]["causes"]] == [field]


def test_annotation_keys_are_checked_lower_cased(api: Api) -> None:
    reply = api.post(
        CONFIGMAPS, {"metadata": {"name": unique("cm"), "annotations": {"Example.COM/X": "v"}}}
    )
    assert reply.status == 201, reply.body


def test_an_immutable_config_map_refuses_data_changes(api: Api) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"a": "1"}, "immutable": True})
    reply = api.patch(f"{CONFIGMAPS}/{name}", {"data": {"a": "2"}})
    assert reply.status == 422 and reply.body["details"]["causes"][0]["field"] == "data"
    assert api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"labels": {"ok": "yes"}}}).status == 200


def test_a_secret_type_cannot_change(api: Api) -> None:
    name = unique("s")
    api.post(SECRETS, {"metadata": {"name": name}, "type": "example.com/one"})
    reply = api.patch(f"{SECRETS}/{name}", {"type": "example.com/two"})
    assert reply.status == 422 and reply.body["details"]["causes"][0]["field"] == "type"


def test_a_deployment_selector_cannot_change(api: Api) -> None:
    name = unique("d")
    api.post(DEPLOYMENTS, _deployment(name))
    patch = {"spec": {"selector": {"matchLabels": {"app": "other"}}}}
    reply = api.patch(f"{DEPLOYMENTS}/{name}", patch)
    assert reply.status == 422
    assert "spec.selector" in [c["field"] for c in reply.body["details"]["causes"]]


def test_a_deployment_whose_selector_misses_its_template_labels_is_a_422(api: Api) -> None:
    body = _deployment(unique("d"))
    body["spec"]["template"]["metadata"]["labels"] = {"app": "something-else"}
    reply = api.post(DEPLOYMENTS, body)
    assert reply.status == 422
    assert "spec.template.metadata.labels" in [c["field"] for c in reply.body["details"]["causes"]]


def test_a_deployment_whose_selector_expressions_miss_its_template_labels_is_a_422(
    api: Api,
) -> None:
    body = _deployment(unique("d"))
    body["spec"]["selector"]["matchExpressions"] = [
        {"key": "tier", "operator": "In", "values": ["web"]}
    ]
    reply = api.post(DEPLOYMENTS, body)
    assert reply.status == 422
    assert "spec.template.metadata.labels" in [c["field"] for c in reply.body["details"]["causes"]]


def test_a_deployment_selector_with_an_unknown_operator_is_a_422(api: Api) -> None:
    body = _deployment(unique("d"))
    body["spec"]["selector"]["matchExpressions"] = [
        {"key": "app", "operator": "Equals", "values": ["x"]}
    ]
    reply = api.post(DEPLOYMENTS, body)
    assert reply.status == 422
    fields = [c["field"] for c in reply.body["details"]["causes"]]
    assert any(f.startswith("spec.selector") for f in fields), fields


def test_strict_validation_of_a_built_in_rejects_a_mistyped_field(api: Api) -> None:
    body = {"metadata": {"name": unique("cm")}, "data": {"a": 1}}
    reply = api.post(CONFIGMAPS, body, query={"fieldValidation": "Strict"})
    assert reply.status == 400 and reply.body["reason"] == "BadRequest"


def _apply(
    api: Api, name: str, body: dict, manager: str | None = "tester", *, force: bool = False
) -> Reply:
    query = {"fieldManager": manager} if manager else {}
    if force:  # taking over fields another manager set (kube-apiserver: else 409)
        query["force"] = "true"
    return api.patch(
        f"{CONFIGMAPS}/{name}",
        {"apiVersion": "v1", "kind": "ConfigMap", **body},
        content_type="application/apply-patch+yaml",
        query=query,
    )


def test_server_side_apply_creates_then_removes_what_is_no_longer_applied(api: Api) -> None:
    name = unique("cm")
    created = _apply(
        api, name, {"metadata": {"name": name, "labels": {"a": "1", "b": "2"}}, "data": {"x": "1"}}
    )
    assert created.status == 201
    api.patch(f"{CONFIGMAPS}/{name}", {"metadata": {"labels": {"theirs": "3"}}})
    again = _apply(
        api, name, {"metadata": {"name": name, "labels": {"a": "1"}}, "data": {"x": "2"}}
    )
    assert again.status == 200
    assert again.body["metadata"]["labels"] == {"a": "1", "theirs": "3"}
    assert again.body["data"] == {"x": "2"}


def test_server_side_apply_with_a_resource_version_is_conditional(api: Api) -> None:
    name = unique("cm")
    created = _apply(api, name, {"metadata": {"name": name}, "data": {"x": "1"}}).body
    version = created["metadata"]["resourceVersion"]
    api.patch(f"{CONFIGMAPS}/{name}", {"data": {"x": "theirs"}})
    stale = _apply(
        api, name, {"metadata": {"name": name, "resourceVersion": version}, "data": {"x": "2"}}
    )
    assert stale.status == 409 and stale.body["reason"] == "Conflict"
    assert api.get(f"{CONFIGMAPS}/{name}").body["data"] == {"x": "theirs"}
    current = api.get(f"{CONFIGMAPS}/{name}").body["metadata"]["resourceVersion"]
    fresh = _apply(
        api,
        name,
        {"metadata": {"name": name, "resourceVersion": current}, "data": {"x": "3"}},
        force=True,
    )
    assert fresh.status == 200 and fresh.body["data"] == {"x": "3"}


def test_server_side_apply_creating_an_object_ignores_its_resource_version(api: Api) -> None:
    name = unique("cm")
    created = _apply(api, name, {"metadata": {"name": name, "resourceVersion": "12"}})
    assert created.status == 201 and created.body["metadata"]["resourceVersion"] != "12"


def test_server_side_apply_leaves_what_a_create_wrote_and_it_no_longer_applies(
    api: Api,
) -> None:
    """Fields written by a create or an update are not the apply's to remove, even under
    the manager's name: only what it applied itself goes when it stops applying it."""
    name = unique("cm")
    query = {"fieldManager": "tester"}
    api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"x": "1", "y": "1"}}, query=query)
    applied = _apply(api, name, {"metadata": {"name": name}, "data": {"x": "2"}}, force=True)
    assert applied.status == 200 and applied.body["data"] == {"x": "2", "y": "1"}


def test_server_side_apply_needs_a_field_manager(api: Api) -> None:
    name = unique("cm")
    reply = _apply(api, name, {"metadata": {"name": name}}, manager=None)
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "fieldManager"


def test_unknown_fields_of_a_built_in_are_dropped_with_a_warning(api: Api) -> None:
    body = {"metadata": {"name": unique("cm")}, "data": {"a": "1"}, "dta": {"typo": "x"}}
    reply = api.post(CONFIGMAPS, body)
    assert reply.status == 201 and "dta" not in reply.body
    assert reply.headers["Warning"] == '299 - "unknown field \\"dta\\""'
