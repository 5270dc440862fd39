"""The WebhookService's failures, typed: each SDK or transport exception becomes one error
whose `reason` is the condition reason and whose message is safe to show (the remote's own
message, never a secret or an API key); `retryable` says whether a retry can help."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from google.genai import _interactions_errors as sdk_errors

from gemini_webhook_operator.metrics import CODE_TIMEOUT, CODE_TRANSPORT_ERROR

# Condition reasons for WebhookService failures.
REASON_INVALID_API_KEY = "InvalidAPIKey"
REASON_PERMISSION_DENIED = "PermissionDenied"
REASON_QUOTA = "QuotaExceeded"
REASON_REMOTE_VALIDATION = "RemoteValidationError"
REASON_NOT_FOUND = "RemoteNotFound"
REASON_UNAVAILABLE = "RemoteUnavailable"


class WebhookServiceError(Exception):
    """A WebhookService call failed. `reason` is a condition reason; the message is safe to
    show (the remote's error message, never a secret or an API key)."""

    reason = REASON_UNAVAILABLE
    retryable = True

    def __init__(self, message: str, *, code: int | str | None = None) -> None:
        super().__init__(message)
        self.code = code


class AuthError(WebhookServiceError):
    reason = REASON_INVALID_API_KEY
    retryable = False


class PermissionDenied(AuthError):
    reason = REASON_PERMISSION_DENIED


class QuotaExceeded(WebhookServiceError):
    reason = REASON_QUOTA

    def __init__(self, message: str, *, retry_after: float, code: int | str | None = 429) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class RemoteValidationError(WebhookServiceError):
    reason = REASON_REMOTE_VALIDATION
    retryable = False


class NotFound(WebhookServiceError):
    reason = REASON_NOT_FOUND
    retryable = False


class Unavailable(WebhookServiceError):
    reason = REASON_UNAVAILABLE


def _retry_after_seconds(response: Any, default: float) -> float:
    if response is None:
        return default
    header = response.headers.get("retry-after")
    if not header:
        return default
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    return max(0.0, moment.timestamp() - time.time())


def _remote_message(error: sdk_errors.APIStatusError) -> str:
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return f"HTTP {error.status_code}"


def classify(error: BaseException, *, quota_default: float = 5.0) -> WebhookServiceError:
    """Map an SDK or transport exception to our typed errors."""
    if isinstance(error, WebhookServiceError):
        return error
    if isinstance(error, sdk_errors.APIStatusError):
        status = error.status_code
        message = _remote_message(error)
        if status == 401:
            return AuthError(f"the API key was rejected: {message}", code=status)
        if status == 403:
            return PermissionDenied(f"the API key may not do this: {message}", code=status)
        if status == 429:
            retry = _retry_after_seconds(error.response, quota_default)
            return QuotaExceeded(f"quota exceeded: {message}", retry_after=retry, code=status)
        if status == 404:
            return NotFound(message, code=status)
        if status in (400, 409, 422):
            return RemoteValidationError(message, code=status)
        return Unavailable(f"the WebhookService answered {status}: {message}", code=status)
    if isinstance(error, sdk_errors.APITimeoutError | httpx.TimeoutException | TimeoutError):
        return Unavailable("the WebhookService did not answer in time", code=CODE_TIMEOUT)
    if isinstance(error, sdk_errors.APIConnectionError | httpx.TransportError | OSError):
        return Unavailable("the WebhookService could not be reached", code=CODE_TRANSPORT_ERROR)
    return Unavailable(f"unexpected WebhookService failure ({type(error).__name__})")
