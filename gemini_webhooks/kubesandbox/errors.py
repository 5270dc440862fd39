"""API errors in the `meta/v1 Status` shape that Kubernetes clients parse."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ApiError(Exception):
    code: int
    reason: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.reason}: {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if not self.reason:  # StatusReasonUnknown: an error the API server did not classify
            del body["reason"]
        if self.details:
            body["details"] = self.details
        return body


def _details(kind: str, name: str, group: str) -> dict[str, Any]:
    details: dict[str, Any] = {"kind": kind}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    return details


def not_found(plural: str, group: str, name: str) -> ApiError:
    gr = f"{plural}.{group}" if group else plural
    return ApiError(404, "NotFound", f'{gr} "{name}" not found', _details(plural, name, group))


def already_exists(plural: str, group: str, name: str) -> ApiError:
    gr = f"{plural}.{group}" if group else plural
    return ApiError(
        409, "AlreadyExists", f'{gr} "{name}" already exists', _details(plural, name, group)
    )


def conflict(plural: str, group: str, name: str) -> ApiError:
    gr = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {gr} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(plural, name, group),
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid, with one cause per offending field (`field`, `reason`, `message`)."""
    summary = ", ".join(f"{c['field']}: {c['message']}" for c in causes)
    if len(causes) != 1:
        summary = f"[{summary}]"
    details = _details(kind, name, group)
    details["causes"] = causes
    qualified = f"{kind}.{group}" if group else kind
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {summary}', details)


def internal(message: str) -> ApiError:
    """A 500 without a reason, as kube-apiserver answers a plain storage error."""
    return ApiError(500, "", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def cause(field_path: str, reason: str, message: str) -> dict[str, str]:
    return {"reason": reason, "message": message, "field": field_path}
