"""`spec.receiver` / `spec.healthCheck`: a structural, documented schema in step with the
typed view the operator reads (`spec.receiver`'s generated from it), and served as such by
the API server."""

from __future__ import annotations

import inspect
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from gemini_webhooks.contracts import crd, crd_receiver
from gemini_webhooks.contracts.crd_receiver import (
    CrdReceiverError,
    HealthCheckSpec,
    ReceiverSpec,
    health_check_spec,
    parse_duration,
    receiver_spec,
)
from gemini_webhooks.contracts.crd_spec_schema import HEALTH_CHECK_SCHEMA, RECEIVER_SCHEMA
from tests.operator.harness import Cluster, kubectl

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        found += walk(sub, f"{path}.{name}")
    if schema.get("items", {}).get("type") == "object":
        found += walk(schema["items"], f"{path}[]")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and "description" in extra:
        found += walk(extra, f"{path}{{}}")
    return found


@pytest.mark.parametrize("schema", [RECEIVER_SCHEMA, HEALTH_CHECK_SCHEMA])
def test_every_field_has_a_description(schema: dict[str, Any]) -> None:
    undocumented = [path for path, node in walk(schema) if not node.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("schema", [RECEIVER_SCHEMA, HEALTH_CHECK_SCHEMA])
def test_schema_is_structural(schema: dict[str, Any]) -> None:
    # Structural: every node names its type (or is int-or-string); oneOf/anyOf below a
    # node carry no types or descriptions of their own, except the int-or-string pattern.
    for path, node in walk(schema):
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        for branch in node.get("oneOf", []):
            assert set(branch) <= {"required"}, path


def schema_fields(schema: dict[str, Any]) -> dict[str, Any]:
    return schema.get("properties", {})


def model_fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or n): f for n, f in model.model_fields.items()}


def compare(schema: dict[str, Any], model: type[BaseModel], path: str) -> list[str]:
    problems = []
    in_schema, in_model = set(schema_fields(schema)), set(model_fields(model))
    if in_schema != in_model:
        problems.append(f"{path}: schema {sorted(in_schema)} != model {sorted(in_model)}")
    for name, field in model_fields(model).items():
        sub = schema_fields(schema).get(name)
        if sub is None:
            continue
        if "default" in sub:
            got = field.get_default(call_default_factory=True)
            assert got == sub["default"], f"{path}.{name}: default {got!r} != {sub['default']!r}"
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                node = sub["items"] if sub.get("type") == "array" else sub
                problems += compare(node, candidate, f"{path}.{name}")
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    problems += compare(sub["items"], inner, f"{path}.{name}[]")
    return problems


def test_schema_and_typed_view_name_the_same_fields_with_the_same_defaults() -> None:
    assert compare(RECEIVER_SCHEMA, ReceiverSpec, "receiver") == []
    assert compare(HEALTH_CHECK_SCHEMA, HealthCheckSpec, "healthCheck") == []


def test_the_crd_embeds_these_generated_schemas() -> None:
    assert crd.spec_schema()["properties"]["receiver"] == RECEIVER_SCHEMA
    assert crd.spec_schema()["properties"]["healthCheck"] == HEALTH_CHECK_SCHEMA


def sections(
    model: type[BaseModel], path: str, described: str | None = None
) -> list[tuple[str, type[BaseModel], str]]:
    """Every section model reachable from `model`, with its path in the schema and the
    description its node should carry (its field's, for a single object, or its docstring)."""
    docstring = " ".join((inspect.getdoc(model) or "").split())
    found = [(path, model, described or docstring)]
    for name, field in model.model_fields.items():
        candidates = [field.annotation]
        while candidates:
            candidate = candidates.pop()
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                is_list = schema_node(path)["properties"][field.alias or name]["type"] == "array"
                own = None if is_list else field.description
                found += sections(candidate, f"{path}.{field.alias or name}", own)
            candidates += getattr(candidate, "__args__", ())
    return found


def schema_node(path: str) -> dict[str, Any]:
    """The CRD's schema of the object at `path` below `spec` (an array's items for a list)."""
    node = crd.spec_schema()
    for part in path.split("."):
        node = node["properties"][part]
        if node["type"] == "array":
            node = node["items"]
    return node


@pytest.mark.parametrize(
    ("model", "section"), [(ReceiverSpec, "receiver"), (HealthCheckSpec, "healthCheck")]
)
def test_every_field_of_the_typed_view_states_its_description_once_on_the_model(
    model: type[BaseModel], section: str
) -> None:
    # A field is described by its own `description` or, for a section, its class docstring:
    # the schema can only say what the model says.
    undocumented = []
    for path, part, description in sections(model, section):
        node = schema_node(path)
        assert node["description"] == description, path
        for name, field in part.model_fields.items():
            alias = field.alias or name
            if field.description is not None:
                assert node["properties"][alias]["description"] == field.description, alias
            elif not any(
                isinstance(arg, type) and issubclass(arg, BaseModel)
                for arg in (field.annotation, *getattr(field.annotation, "__args__", ()))
            ):
                undocumented.append(f"{path}.{alias}")
    assert undocumented == []


@pytest.mark.parametrize("schema", [RECEIVER_SCHEMA, HEALTH_CHECK_SCHEMA])
def test_the_generated_schema_keeps_no_json_schema_leftovers(schema: dict[str, Any]) -> None:
    leftovers = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$ref", "$defs", "title") or value == {"type": "null"}:
                    leftovers.append(f"{path}/{key}")
                if key == "additionalProperties" and value is False:
                    leftovers.append(f"{path}/{key}")
                visit(value, f"{path}/{key}")
        elif isinstance(node, list):
            for index, item in enumerate(node):
                visit(item, f"{path}/{index}")

    visit(schema, "")
    assert leftovers == []


def test_the_typed_view_enforces_what_the_schema_states() -> None:
    # What the schema says about an item or an int-or-string, pydantic checks too.
    with pytest.raises(CrdReceiverError, match=r"spec\.receiver\.resources\.requests\.cpu"):
        receiver_spec({"receiver": {"resources": {"requests": {"cpu": "lots"}}}})
    assert receiver_spec(
        {"receiver": {"resources": {"requests": {"cpu": "50m", "memory": 64}}}}
    ).resources == crd_receiver.ResourcesSpec(requests={"cpu": "50m", "memory": 64})
    with pytest.raises(CrdReceiverError, match=r"routes\[0\]\.match\.types\[0\]"):
        receiver_spec(
            {"receiver": {"routes": [{"name": "r", "match": {"types": [""]}, "targets": []}]}}
        )


def test_the_api_server_serves_the_generated_receiver_schema(cluster: Cluster, kube: Any) -> None:
    # `kubectl explain` shows a field's description (kube-apiserver publishes a new CRD's
    # OpenAPI a moment after it is Established).
    deadline = time.monotonic() + 60
    field = "geminiwebhook.spec.receiver.redis.waitTimeout"
    while "waitReplicas" not in (explained := kubectl(kube, "explain", field, check=False)):
        assert time.monotonic() < deadline, explained
        time.sleep(0.5)
    assert "How long one `WAIT` for `waitReplicas` may take." in explained
    # What the generated schema forbids, the API server rejects, naming the field.
    body = yaml.safe_load((EXAMPLES / "basic.yaml").read_text())
    body["metadata"]["name"] = "invalid-receiver"
    body["spec"]["receiver"] = {
        "resources": {"requests": {"cpu": "lots"}},
        "defaultRoute": {"targets": [{"url": "http://a/", "service": {"name": "b", "port": 1}}]},
    }
    output = kubectl(kube, "apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert "spec.receiver.resources.requests.cpu" in output, output
    assert "spec.receiver.defaultRoute.targets[0]" in output, output
    assert "created" not in output


def test_absent_sections_mean_defaults() -> None:
    assert receiver_spec({}).enabled is False
    assert receiver_spec({}).replicas == 1
    assert health_check_spec({}).enabled is False


def test_full_receiver_section_is_read_with_camel_case_names() -> None:
    spec = receiver_spec(
        {
            "receiver": {
                "enabled": True,
                "replicas": 3,
                "routes": [
                    {
                        "name": "batches",
                        "match": {"types": ["batch.*"], "userMetadata": {"team": "a*"}},
                        "targets": [{"service": {"name": "h", "port": 8080}}],
                    }
                ],
                "defaultRoute": {"targets": [{"url": "http://x.example/"}]},
                "dynamic": {"enabled": True, "audiences": ["https://hooks.example/"]},
                "redis": {"url": "redis://redis:6379/0"},
                "replayTolerance": "2m",
                "service": {"type": "LoadBalancer", "port": 8443},
            }
        }
    )
    assert spec.routes[0].match.user_metadata == {"team": "a*"}
    assert spec.default_route is not None
    assert spec.dynamic.audiences == ["https://hooks.example/"]
    assert spec.service.type == "LoadBalancer"


def test_dynamic_jobs_of_other_projects_are_refused_unless_the_opt_out_says_so() -> None:
    field = RECEIVER_SCHEMA["properties"]["dynamic"]["properties"]["acceptJobsFromAnyProject"]
    assert (field["type"], field["default"]) == ("boolean", False)
    assert "anyone with a Gemini API key" in field["description"]
    dynamic = {"enabled": True, "audiences": ["https://h/"]}
    assert not receiver_spec(
        {"receiver": {"dynamic": dynamic}}
    ).dynamic.accept_jobs_from_any_project
    opted_out = {**dynamic, "acceptJobsFromAnyProject": True}
    assert receiver_spec({"receiver": {"dynamic": opted_out}}).dynamic.accept_jobs_from_any_project
    with pytest.raises(CrdReceiverError, match=r"dynamic\.acceptJobsFromAnyProjects: unknown"):
        receiver_spec({"receiver": {"dynamic": {**dynamic, "acceptJobsFromAnyProjects": True}}})


def test_unknown_field_is_rejected_by_its_path() -> None:
    with pytest.raises(CrdReceiverError, match=r"spec\.receiver\.routes\[0\]\.matches: unknown"):
        receiver_spec({"receiver": {"routes": [{"name": "r", "matches": {}, "targets": []}]}})


def test_target_needs_exactly_one_destination() -> None:
    with pytest.raises(CrdReceiverError, match=r"defaultRoute\.targets\[0\].*exactly one"):
        receiver_spec(
            {
                "receiver": {
                    "defaultRoute": {
                        "targets": [{"url": "http://a/", "service": {"name": "b", "port": 1}}]
                    }
                }
            }
        )


def test_a_malformed_duration_or_section_is_told_what_it_should_be() -> None:
    # In words, not as the regular expression or the model's class name.
    with pytest.raises(CrdReceiverError) as raised:
        receiver_spec({"receiver": {"replayTolerance": "5 minutes", "dynamic": "on"}})
    assert str(raised.value) == (
        "spec.receiver.dynamic: expected an object; spec.receiver.replayTolerance: must be a "
        "duration in hours/minutes/seconds, like '720h' or '1h30m'"
    )


def test_too_many_replicas_is_rejected() -> None:
    with pytest.raises(CrdReceiverError, match=r"spec\.receiver\.replicas"):
        receiver_spec({"receiver": {"replicas": crd_receiver.MAX_REPLICAS + 1}})


def test_health_check_interval_below_a_minute_is_rejected() -> None:
    with pytest.raises(CrdReceiverError, match=r"spec\.healthCheck\.interval: must be at least 1m"):
        health_check_spec({"healthCheck": {"enabled": True, "interval": "30s"}})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1h1s", timedelta(seconds=3601)),
        ("25h", timedelta(hours=25)),
    ],
)
def test_durations_are_read_like_kubernetes_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "-1s", "1d", "1.5h", "30s1m"])
def test_malformed_durations_are_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_a_duration_too_long_to_hold_is_rejected_as_malformed() -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration("9" * 20 + "h")
    with pytest.raises(CrdReceiverError, match=r"spec\.healthCheck\.interval.*too long"):
        health_check_spec({"healthCheck": {"interval": "9" * 20 + "s"}})
