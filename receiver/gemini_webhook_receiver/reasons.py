"""Why a delivery was rejected: each reason is a metric label value and the text of the 4xx.

Decision chains return the first reason that fires (cert-manager style); the HTTP status
belongs to the reason, so a caller cannot answer 5xx for bad input by accident.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rejection:
    reason: str
    status: int
    message: str


def _r(reason: str, status: int, message: str) -> Rejection:
    return Rejection(reason, status, message)


MALFORMED_REQUEST = _r("malformed_request", 400, "not a valid HTTP/1.1 request")
BAD_HOST = _r(
    "bad_host", 400, "an HTTP/1.1 request needs exactly one Host header, a valid host[:port]"
)
HEAD_TOO_LARGE = _r("head_too_large", 431, "request line and headers exceed the limit")
MISSING_HEADERS = _r(
    "missing_headers", 400, "webhook-id, webhook-timestamp and webhook-signature are required"
)
MALFORMED_ID = _r("malformed_id", 400, "webhook-id is malformed")
MALFORMED_TIMESTAMP = _r(
    "malformed_timestamp", 400, "webhook-timestamp must be unix seconds before the year 10000"
)
MALFORMED_SIGNATURE = _r(
    "malformed_signature", 400, "webhook-signature is neither v1 signatures nor a JWT"
)
WRONG_CONTENT_TYPE = _r("wrong_content_type", 415, "content-type must be application/json")
BODY_TOO_LARGE = _r("body_too_large", 413, "body exceeds the configured limit")
READ_TIMEOUT = _r("read_timeout", 408, "body not received in time")
MALFORMED_BODY = _r("malformed_body", 400, "body is not a JSON event envelope")
BAD_SIGNATURE = _r("bad_signature", 401, "no signature matches a current secret")
REVOKED_SECRET = _r("revoked_secret", 401, "signature matched a revoked or expired secret")
SECRET_RELOAD_PENDING = _r(
    "secret_reload_pending",
    503,
    "no signature matches a loaded secret, and a rotated secret may not have reached this"
    " replica yet; retry",
)
TOO_MANY_CONNECTIONS = _r(
    "too_many_connections", 503, "the receiver's connection limit is reached; retry later"
)
NO_SECRETS = _r("no_secrets_loaded", 503, "no signing secrets loaded yet")
TIMESTAMP_EXPIRED = _r(
    "timestamp_expired", 400, "webhook-timestamp is older than the replay window"
)
CLOCK_SKEW = _r("clock_skew", 400, "webhook-timestamp is too far in the future")
DYNAMIC_DISABLED = _r("dynamic_disabled", 401, "JWT-signed deliveries are not accepted here")
UNSUPPORTED_ALGORITHM = _r("unsupported_algorithm", 401, "only RS256 tokens are accepted")
UNKNOWN_KID = _r("unknown_kid", 401, "token key id not in the JWKS")
JWKS_UNAVAILABLE = _r("jwks_unavailable", 503, "JWKS could not be fetched")
JWKS_RATE_LIMITED = _r(
    "jwks_rate_limited", 503, "token key id not in the JWKS, which was fetched moments ago; retry"
)
INVALID_TOKEN = _r("invalid_token", 401, "token signature or claims invalid")
TOKEN_EXPIRED = _r("token_expired", 401, "token expired")
WRONG_AUDIENCE = _r("wrong_audience", 401, "token audience not accepted")
WRONG_ISSUER = _r("wrong_issuer", 401, "token issuer not accepted")
ID_MISMATCH = _r("id_mismatch", 401, "token jti does not match webhook-id")
BODY_MISMATCH = _r("body_mismatch", 401, "body does not match the token's claims")
FOREIGN_JOB = _r(
    "foreign_job", 403, "the job's user_metadata carries no valid MAC under this receiver's key"
)
