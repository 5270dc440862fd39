"""Strict field validation for built-in types, from the `kubernetes-validate` schemas.

A real API server decodes built-in objects into Go structs, so with `fieldValidation=Strict`
(what `kubectl apply` sends) an unknown field such as `spec.spce` is refused with a 400.
The sandbox has no Go structs; when `kubernetes-validate` is installed (a dev dependency)
it checks the body against that release's JSON schemas instead. Only the first problem is
reported (the library stops there); without the library, built-ins are not checked.
"""

from __future__ import annotations

import re
from typing import Any

from gemini_webhooks.kubesandbox import errors

KUBERNETES_VERSION = "1.34"
_UNEXPECTED = re.compile(r"'([^']+)'")

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the runtime install has no dev dependencies
    kubernetes_validate = None


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def check_strict(obj: dict[str, Any], kind: str, group: str) -> None:
    """Raise the API server's error for the first unknown or mistyped field, if any."""
    if kubernetes_validate is None:
        return
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return
    except kubernetes_validate.ValidationError as e:
        where = _path(e.absolute_path)
        name = str((obj.get("metadata") or {}).get("name", ""))
        prefix = f'{kind} in version "v1" cannot be handled as a {kind}: '
        if e.validator == "additionalProperties":
            fields = [f"{where}.{n}" if where else n for n in _UNEXPECTED.findall(e.message)]
            unknown = ", ".join(f'unknown field "{f}"' for f in fields)
            raise errors.bad_request(f"{prefix}strict decoding error: {unknown}") from None
        if e.validator == "type":
            raise errors.bad_request(
                f"{prefix}json: cannot unmarshal {e.instance!r} into field {where} of type "
                f"{e.validator_value}"
            ) from None
        if e.validator == "required":
            missing = _UNEXPECTED.findall(e.message)[:1] or ["?"]
            field = f"{where}.{missing[0]}" if where else missing[0]
            raise errors.invalid(
                kind, group, name, [errors.cause(field, "FieldValueRequired", "Required value")]
            ) from None
