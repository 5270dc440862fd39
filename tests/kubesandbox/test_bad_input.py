"""Bad input is a clear 4xx in the Status shape — never a 500, never a crash."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.kube import Kube
from tests.kubesandbox.conftest import WIDGETS, Api, unique, widget

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
PATCH_TYPES = [
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
]


def _is_client_error(reply_status: int, body: object) -> bool:
    return 400 <= reply_status < 500 and isinstance(body, dict) and body.get("kind") == "Status"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=JSON_VALUES)
def test_any_json_body_on_create_is_accepted_or_a_4xx(widgets: Api, body: object) -> None:
    reply = widgets.post(WIDGETS, body)
    assert reply.status == 201 or _is_client_error(reply.status, reply.body), reply.body
    if reply.status == 201:
        widgets.delete(f"{WIDGETS}/{reply.body['metadata']['name']}")


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(patch=JSON_VALUES, content_type=st.sampled_from(PATCH_TYPES))
def test_any_patch_is_applied_or_a_4xx(api: Api, patch: object, content_type: str) -> None:
    name = unique("cm")
    api.post(CONFIGMAPS, {"metadata": {"name": name}, "data": {"a": "1"}})
    reply = api.patch(f"{CONFIGMAPS}/{name}", patch, content_type=content_type)
    assert reply.status in (200, 201) or _is_client_error(reply.status, reply.body), reply.body
    api.delete(f"{CONFIGMAPS}/{name}")


@pytest.mark.parametrize(
    ("method", "path", "query", "status"),
    [
        ("PATCH", CONFIGMAPS, {}, 405),
        ("POST", f"{CONFIGMAPS}/x", {}, 405),
        ("PUT", CONFIGMAPS, {}, 405),
        ("GET", f"{CONFIGMAPS}/x/nosuchsub", {}, 404),
        ("GET", "/apis/no.such.group/v1/things", {}, 404),
        ("GET", "/api/v1/namespaces/default/configmaps/a/b/c/d", {}, 404),
        ("GET", CONFIGMAPS, {"limit": "many"}, 400),
        ("GET", CONFIGMAPS, {"continue": "%%%"}, 400),
        ("GET", CONFIGMAPS, {"watch": "1", "timeoutSeconds": "soon"}, 400),
        ("GET", CONFIGMAPS, {"watch": "1", "resourceVersion": "abc"}, 400),
        ("POST", CONFIGMAPS, {"fieldValidation": "Loose"}, 400),
        ("DELETE", f"{CONFIGMAPS}/x", {"propagationPolicy": "Sideways"}, 400),
    ],
)
def test_malformed_requests_are_clear_errors(
    api: Api, method: str, path: str, query: dict, status: int
) -> None:
    body = {"metadata": {"name": unique("cm")}} if method in ("POST", "PUT", "PATCH") else None
    reply = api.request(
        method,
        path,
        body,
        query=query,
        content_type="application/merge-patch+json" if method == "PATCH" else "application/json",
    )
    assert reply.status == status, reply.body
    assert reply.body["kind"] == "Status"


def test_an_unparseable_yaml_body_is_a_400(api: Api) -> None:
    reply = api.post(CONFIGMAPS, "a: [unclosed", content_type="application/yaml")
    assert reply.status == 400 and reply.body["kind"] == "Status"


def test_a_yaml_body_is_accepted(api: Api) -> None:
    name = unique("cm")
    reply = api.post(
        CONFIGMAPS, f"metadata:\n  name: {name}\ndata:\n  a: b\n", content_type="application/yaml"
    )
    assert reply.status == 201 and reply.body["data"] == {"a": "b"}


@pytest.mark.sandbox_only
def test_an_oversized_body_is_a_413(kube_sandbox: Kube) -> None:
    body = json.dumps(
        {"metadata": {"name": "big"}, "data": {"a": "x" * (2 * 1024 * 1024)}}
    ).encode()
    request = urllib.request.Request(
        f"{kube_sandbox.base_url}{CONFIGMAPS}",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 413
    assert json.loads(info.value.read())["kind"] == "Status"


def test_a_widget_with_a_null_spec_is_invalid(widgets: Api) -> None:
    body = widget(unique("w"))
    body["spec"] = None
    reply = widgets.post(WIDGETS, body)
    assert reply.status == 422


def test_unknown_field_names_cannot_inject_headers(api: Api) -> None:
    body = {"metadata": {"name": unique("cm")}, "data": {}, "evil\r\nX-Injected: 1": "v"}
    reply = api.post(CONFIGMAPS, body)
    assert reply.status == 201
    assert "X-Injected" not in reply.headers
    assert "evil" in reply.headers["Warning"]
