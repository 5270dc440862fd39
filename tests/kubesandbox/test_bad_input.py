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
        ("GET", "/api/v1/namespaces/default/configmaps/a/b/c/d", {}, 404),
        ("GET", CONFIGMAPS, {"limit": "many"}, 400),
        ("GET", CONFIGMAPS, {"continue": "%%%"}, 400),
        ("GET", CONFIGMAPS, {"watch": "1", "timeoutSeconds": "soon"}, 400),
        # kube-apiserver's own answers: a 500 (a plain error), and 422s for the options.
        ("GET", CONFIGMAPS, {"watch": "1", "resourceVersion": "abc"}, 500),
        ("POST", CONFIGMAPS, {"fieldValidation": "Loose"}, 422),
        ("DELETE", f"{CONFIGMAPS}/x", {"propagationPolicy": "Sideways"}, 422),
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


def test_options_out_of_their_enum_are_a_422_naming_the_options_kind(api: Api) -> None:
    reply = api.post(
        CONFIGMAPS, {"metadata": {"name": unique("cm")}}, query={"fieldValidation": "Loose"}
    )
    assert (reply.status, reply.body["reason"]) == (422, "Invalid")
    assert reply.body["message"] == (
        'CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loose": '
        'supported values: "", "Ignore", "Strict", "Warn"'
    )
    reply = api.delete(f"{CONFIGMAPS}/x", query={"propagationPolicy": "Sideways"})
    assert reply.body["details"]["causes"] == [
        {
            "reason": "FieldValueNotSupported",
            "message": 'Unsupported value: "Sideways": supported values: "Foreground", '
            '"Background", "Orphan", "nil"',
            "field": "propagationPolicy",
        }
    ]


def test_a_watch_from_an_unparseable_resource_version_is_a_500_without_a_reason(api: Api) -> None:
    reply = api.get(CONFIGMAPS, query={"watch": "1", "resourceVersion": "abc"})
    assert reply.status == 500 and "reason" not in reply.body
    assert reply.body["message"] == (
        'resourceVersion: Invalid value: "abc": strconv.ParseUint: parsing "abc": invalid syntax'
    )


def test_an_unknown_group_is_a_plain_text_404(api: Api) -> None:
    # No handler for the group at all: kube-apiserver's mux answers, not a Status.
    reply = api.get("/apis/no.such.group/v1/things")
    assert reply.status == 404 and reply.body == b"404 page not found\n"
    assert reply.headers["Content-Type"].startswith("text/plain")


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


def test_a_null_in_a_field_that_is_not_nullable_is_dropped(widgets: Api) -> None:
    # kube-apiserver drops it before defaulting and validation (a default then fills it).
    body = widget(unique("w"), color=None)
    body["spec"]["tag"] = None
    reply = widgets.post(WIDGETS, body)
    assert reply.status == 201, reply.body
    assert reply.body["spec"] == {"size": 3, "color": "red"}
    body = widget(unique("w"))
    body["spec"] = None
    reply = widgets.post(WIDGETS, body)
    assert reply.status == 201 and "spec" not in reply.body


def test_unknown_field_names_cannot_inject_headers(api: Api) -> None:
    body = {"metadata": {"name": unique("cm")}, "data": {}, "evil\r\nX-Injected: 1": "v"}
    reply = api.post(CONFIGMAPS, body)
    assert reply.status == 201
    assert "X-Injected" not in reply.headers
    assert "evil" in reply.headers["Warning"]
