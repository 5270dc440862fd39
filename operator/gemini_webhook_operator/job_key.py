"""The receiver's job key (dynamic webhooks for our own jobs): created once, never replaced.

Every job submitted for this receiver carries a MAC under the key (`contracts.dynamic_jobs`),
so a new key would make the receiver refuse every job in flight. The Secret is therefore
created only when absent — never applied, patched or regenerated — and kept when dynamic
webhooks are turned off again; it is owned by the GeminiWebhook and goes with it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gemini_webhook_operator.kube import SECRET, Kube, KubeError, owner_reference
from gemini_webhooks.contracts import dynamic_jobs

REASON_CONFLICT = "JobKeySecretConflict"
REASON_UNREADABLE = "JobKeySecretUnreadable"


@dataclass(frozen=True)
class Verdict:
    action: Literal["create", "keep", "refuse"]
    reason: str = ""
    message: str = ""  # never key material


def decide(existing: Mapping[str, Any] | None, uid: str, name: str) -> Verdict:
    """What to do about the job-key Secret as found (None: absent)."""
    if existing is None:
        return Verdict("create")
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    if not any(o.get("uid") == uid for o in owners):
        return Verdict(
            "refuse",
            REASON_CONFLICT,
            f"the Secret {name!r} exists and is not owned by this resource; delete or "
            "rename it so that the operator can create the receiver's job key",
        )
    raw = (existing.get("data") or {}).get(dynamic_jobs.SECRET_KEY)
    try:
        dynamic_jobs.decode_key(base64.b64decode(raw or "", validate=True).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return Verdict(
            "refuse",
            REASON_UNREADABLE,
            f"the Secret {name!r} holds no valid {dynamic_jobs.SECRET_KEY!r}; the operator does "
            "not replace a job key (jobs in flight carry MACs under it): delete the Secret "
            "to have a new one generated",
        )
    return Verdict("keep")


def secret_body(resource: Mapping[str, Any], key_text: str) -> dict[str, Any]:
    metadata = resource["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": dynamic_jobs.job_key_secret_name(metadata["name"]),
            "namespace": metadata["namespace"],
            "labels": dynamic_jobs.job_key_labels(metadata["name"]),
            "ownerReferences": [owner_reference(resource)],
        },
        "data": {dynamic_jobs.SECRET_KEY: base64.b64encode(key_text.encode()).decode()},
    }


async def ensure(kube: Kube, resource: Mapping[str, Any]) -> Verdict:
    """Create the job-key Secret if absent; `refuse` verdicts are for the caller to report."""
    metadata = resource["metadata"]
    namespace, uid = metadata["namespace"], metadata["uid"]
    name = dynamic_jobs.job_key_secret_name(metadata["name"])
    verdict = decide(await kube.read_secret(namespace, name), uid, name)
    if verdict.action != "create":
        return verdict
    try:
        await kube.create(secret_body(resource, dynamic_jobs.generate_key()))
    except KubeError as error:
        if error.status != 409:
            raise
        # Created meanwhile (another replica, an earlier attempt): that one is the key.
        return decide(await kube.get(*SECRET, namespace, name), uid, name)
    return verdict
