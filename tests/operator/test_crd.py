"""The GeminiWebhook CRD: generated files in sync, documented, validating as intended."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gemini_webhooks import generate
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.events import SUBSCRIBABLE_EVENT_TYPES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path or "<root>", schema)]
    for name, child in schema.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    items = schema.get("items", {})
    if items and items.get("type", "object") == "object":  # scalar items: see their list
        found += _walk(items, f"{path}[]")
    return found


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(_root_schema())


def _valid_resource(**spec: Any) -> dict[str, Any]:
    base = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "w"},
        "spec": {
            "url": "https://hooks.example.com/x",
            "events": ["batch.succeeded"],
            "apiKeySecretRef": {"name": "gemini-api-key"},
        },
    }
    base["spec"].update(spec)
    return base


def test_generated_files_are_up_to_date() -> None:
    assert generate.main(["--check"]) == 0


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    assert generate.main(["--root", str(tmp_path)]) == 0
    (tmp_path / generate.CRD_PATH).write_text("stale\n")
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_field_has_a_description() -> None:
    """Except the root `metadata`: kube-apiserver refuses a CRD that says anything about it
    but `type` (a description included)."""
    undocumented = [path for path, schema in _walk(_root_schema()) if not schema.get("description")]
    assert undocumented == [".metadata"]
    assert _root_schema()["properties"]["metadata"] == {"type": "object"}


def test_event_enum_is_the_subscribable_catalogue() -> None:
    events = _root_schema()["properties"]["spec"]["properties"]["events"]
    assert events["items"]["enum"] == list(SUBSCRIBABLE_EVENT_TYPES)


def test_names_columns_and_status_subresource() -> None:
    spec = crd.crd()["spec"]
    assert spec["group"] == "gemini.webhooks.dev"
    assert spec["names"]["shortNames"] and spec["names"]["categories"] == ["gemini"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Webhook ID", "State", "Ready", "URL", "Last Rotation", "Age"]


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_against_the_schema(example: Path) -> None:
    for document in yaml.safe_load_all(example.read_text()):
        if document and document.get("kind") == crd.KIND:
            _validator().validate(document)


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"events": ["batch.completed"]}, "events"),
        ({"events": []}, "events"),
        ({"url": "ftp://x"}, "url"),
        ({"state": "On"}, "state"),
        ({"rotation": {"interval": "30d"}}, "interval"),
        ({"rotation": {"interval": "720h", "schedule": "0 3 1 * *"}}, "rotation"),
        ({"rotation": {"revocation": "Later"}}, "revocation"),
        ({"deletionPolicy": "Keep"}, "deletionPolicy"),
        ({"apiKeySecretRef": {}}, "apiKeySecretRef"),
    ],
)
def test_invalid_specs_are_rejected_naming_the_field(spec: dict[str, Any], field: str) -> None:
    errors = list(_validator().iter_errors(_valid_resource(**spec)))
    assert errors
    assert any(
        field in "/".join(str(p) for p in e.absolute_path) or field in e.message for e in errors
    )
