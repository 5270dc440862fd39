"""Fidelity point 4: CustomResourceDefinitions."""

from __future__ import annotations

import copy
from typing import Any

from tests.kubesandbox.conftest import GROUP, WIDGET_CRD, WIDGETS, Api, unique, widget

CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def test_a_created_crd_is_established(widgets: Api) -> None:
    crd = widgets.get(f"{CRDS}/widgets.{GROUP}").body
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    assert crd["status"]["acceptedNames"]["kind"] == "Widget"


def test_a_created_crd_is_discoverable_with_short_names_and_categories(widgets: Api) -> None:
    groups = [g["name"] for g in widgets.get("/apis").body["groups"]]
    assert GROUP in groups
    resources = {r["name"]: r for r in widgets.get(f"/apis/{GROUP}/v1").body["resources"]}
    assert resources["widgets"]["shortNames"] == ["wg"]
    assert resources["widgets"]["categories"] == ["gadgets"]
    assert resources["widgets"]["namespaced"] is True
    assert "widgets/status" in resources


def test_defaults_are_applied(widgets: Api) -> None:
    created = widgets.post(WIDGETS, widget(unique("w"))).body
    assert created["spec"]["color"] == "red"


def test_unknown_fields_are_pruned(widgets: Api) -> None:
    created = widgets.post(WIDGETS, widget(unique("w"), bogus=1)).body
    assert "bogus" not in created["spec"]


def test_unknown_fields_are_kept_where_the_schema_preserves_them(widgets: Api) -> None:
    created = widgets.post(WIDGETS, widget(unique("w"), extra={"anything": [1, 2]})).body
    assert created["spec"]["extra"] == {"anything": [1, 2]}


def test_strict_field_validation_rejects_unknown_fields(widgets: Api) -> None:
    reply = widgets.post(WIDGETS, widget(unique("w"), bogus=1), query={"fieldValidation": "Strict"})
    assert reply.status == 400 and reply.body["reason"] == "BadRequest"
    assert 'unknown field "spec.bogus"' in reply.body["message"]


def test_warn_field_validation_reports_unknown_fields_in_a_warning(widgets: Api) -> None:
    reply = widgets.post(WIDGETS, widget(unique("w"), bogus=1), query={"fieldValidation": "Warn"})
    assert reply.status == 201
    assert "spec.bogus" in reply.headers.get("Warning", "")


def test_the_main_endpoint_ignores_status(widgets: Api) -> None:
    name = unique("w")
    body = widget(name)
    body["status"] = {"phase": "made-up"}
    created = widgets.post(WIDGETS, body).body
    assert "status" not in created
    patched = widgets.patch(
        f"{WIDGETS}/{name}", {"status": {"phase": "x"}, "spec": {"size": 2}}
    ).body
    assert "status" not in patched and patched["spec"]["size"] == 2


def test_the_status_endpoint_ignores_everything_but_status(widgets: Api) -> None:
    name = unique("w")
    widgets.post(WIDGETS, widget(name))
    patch = {"status": {"phase": "done"}, "spec": {"size": 9}, "metadata": {"labels": {"a": "b"}}}
    patched = widgets.patch(f"{WIDGETS}/{name}/status", patch).body
    assert patched["status"] == {"phase": "done"}
    assert patched["spec"]["size"] == 3
    assert "labels" not in patched["metadata"]


def test_a_table_response_has_the_printer_columns(widgets: Api) -> None:
    name = unique("w")
    widgets.post(WIDGETS, widget(name, size=7))
    widgets.patch(
        f"{WIDGETS}/{name}/status",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
    )
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    table = widgets.get(WIDGETS, headers={"Accept": accept}).body
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == name)
    assert row["cells"][1:3] == [7, "True"]


def test_an_update_without_resource_version_is_refused_for_custom_resources(widgets: Api) -> None:
    name = unique("w")
    widgets.post(WIDGETS, widget(name))
    reply = widgets.put(f"{WIDGETS}/{name}", widget(name, size=5))
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "metadata.resourceVersion"


def test_a_crd_without_a_schema_is_invalid(api: Api) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = f"gizmos.{GROUP}"
    crd["spec"]["names"] = {"plural": "gizmos", "kind": "Gizmo"}
    del crd["spec"]["versions"][0]["schema"]
    reply = api.post(CRDS, crd)
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "spec.versions[0].schema.openAPIV3Schema"


def test_a_crd_named_unlike_its_plural_and_group_is_invalid(api: Api) -> None:
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"] = "wrong.example.com"
    reply = api.post(CRDS, crd)
    assert reply.status == 422
    assert reply.body["details"]["causes"][0]["field"] == "metadata.name"


def test_deleting_a_crd_stops_serving_its_resource(widgets: Api) -> None:
    widgets.post(WIDGETS, widget(unique("w")))
    widgets.delete(f"{CRDS}/widgets.{GROUP}")
    widgets.wait_gone(f"{CRDS}/widgets.{GROUP}", timeout=60)
    assert widgets.get(WIDGETS).status == 404


def test_kopf_peering_resources_are_served(api: Api) -> None:
    api.install_kopf_peering()
    resources = {r["name"] for r in api.get("/apis/kopf.dev/v1").body["resources"]}
    assert {"clusterkopfpeerings", "kopfpeerings"} <= resources


def test_deleting_a_crd_deletes_its_objects_and_waits_for_their_finalizers(widgets: Api) -> None:
    held, free = unique("held"), unique("free")
    widgets.post(
        WIDGETS, {**widget(held), "metadata": {"name": held, "finalizers": ["example.com/hold"]}}
    )
    rv = widgets.post(WIDGETS, widget(free)).body["metadata"]["resourceVersion"]
    widgets.delete(f"{CRDS}/widgets.{GROUP}")
    try:
        widgets.wait_gone(f"{WIDGETS}/{free}", timeout=60)
        crd = widgets.get(f"{CRDS}/widgets.{GROUP}").body
        assert crd["metadata"]["deletionTimestamp"]
        assert widgets.get(f"{WIDGETS}/{held}").body["metadata"]["deletionTimestamp"]
        late = unique("late")
        refused = widgets.post(WIDGETS, widget(late))
        assert (refused.status, refused.body["reason"]) == (403, "Forbidden")
        assert refused.body["message"] == (
            f'widgets.{GROUP} "{late}" is forbidden: create not allowed while custom resource '
            "definition is terminating"
        )
        events = widgets.watch(WIDGETS, {"resourceVersion": rv, "timeoutSeconds": "1"})
        assert ("DELETED", free) in [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    finally:
        widgets.patch(f"{WIDGETS}/{held}", {"metadata": {"finalizers": None}})
    widgets.wait_gone(f"{CRDS}/widgets.{GROUP}", timeout=60)


AGGREGATED = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def _aggregated(api: Api, root: str) -> dict[str, dict[str, Any]]:
    """An aggregated discovery root as {group/version: {plural: resource}}."""
    reply = api.get(root, headers={"Accept": f"{AGGREGATED},application/json"})
    assert reply.status == 200
    assert "g=apidiscovery.k8s.io" in reply.headers["Content-Type"]
    assert reply.body["kind"] == "APIGroupDiscoveryList"
    return {
        f"{item['metadata'].get('name', '')}/{version['version']}".lstrip("/"): {
            r["resource"]: r for r in version["resources"]
        }
        for item in reply.body["items"]
        for version in item["versions"]
    }


def test_a_created_crd_is_in_aggregated_discovery(widgets: Api) -> None:
    widget_type = _aggregated(widgets, "/apis")[f"{GROUP}/v1"]["widgets"]
    assert widget_type["responseKind"] == {"group": GROUP, "version": "v1", "kind": "Widget"}
    assert widget_type["scope"] == "Namespaced"
    assert widget_type["singularResource"] == "widget"
    assert widget_type["shortNames"] == ["wg"]
    assert widget_type["categories"] == ["gadgets"]
    assert [s["subresource"] for s in widget_type["subresources"]] == ["status"]


def test_aggregated_discovery_holds_what_the_unaggregated_lists(api: Api) -> None:
    aggregated = {**_aggregated(api, "/api"), **_aggregated(api, "/apis")}
    assert {"v1", "apps/v1", "rbac.authorization.k8s.io/v1"} <= set(aggregated)
    for group_version, prefix in [("v1", "/api/v1"), ("apps/v1", "/apis/apps/v1")]:
        listed = api.get(prefix).body["resources"]
        unaggregated = {
            r["name"]: (r["kind"], r["namespaced"]) for r in listed if "/" not in r["name"]
        }
        assert {
            plural: (r["responseKind"]["kind"], r["scope"] == "Namespaced")
            for plural, r in aggregated[group_version].items()
        } == unaggregated
    deployments = aggregated["apps/v1"]["deployments"]["subresources"]
    scale = next(s for s in deployments if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}


def test_discovery_without_the_aggregated_media_type_is_unaggregated(api: Api) -> None:
    assert api.get("/apis").body["kind"] == "APIGroupList"
    assert api.get("/api").body["kind"] == "APIVersions"
