"""Google JSON errors: `{"error": {"code", "message", "status"}}`, as the SDK expects them.

Messages name what was wrong with a request; they never echo secrets or API keys.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request the emulator refuses, answered as a Google JSON error."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, "INVALID_ARGUMENT", message)


def failed_precondition(message: str) -> ApiError:
    return ApiError(400, "FAILED_PRECONDITION", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "NOT_FOUND", message)


def unauthenticated() -> ApiError:
    return ApiError(
        401,
        "UNAUTHENTICATED",
        "Request is missing a valid API key (header x-goog-api-key).",
    )


def permission_denied() -> ApiError:
    return ApiError(403, "PERMISSION_DENIED", "The API key is not valid for this emulator.")
