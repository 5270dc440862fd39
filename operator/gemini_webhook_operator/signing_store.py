"""The signing Secret in Kubernetes: read it, and write it only over the version read.

A write of a Secret that exists is one server-side apply of the whole Secret under the
operator's field manager, carrying the `resourceVersion` read (the API answers 409 when it
changed since). The first write is a create under the same manager: an apply has no
"must not exist" precondition, and a create answers 409 to the second of two writers
creating it at once, so neither overwrites the other's secrets. On a conflict the Secret
is read again and our set merged into what is there (`signing.merged`: a secret Gemini
showed once to either writer is never dropped), then applied again over that version; a
few attempts, then a KubeError. A key the apply stops naming goes with it; a key it never
owned (another writer's, or one an operator before server-side apply wrote by create and
merge patch) is removed by a merge patch over the applied version, so the Secret holds
exactly what we wrote. The format is `gemini_webhooks.contracts.signing_secret`; secret
material never reaches an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gemini_webhook_operator import signing
from gemini_webhook_operator.kube import (
    FIELD_MANAGER,
    JSON,
    SECRET,
    Kube,
    KubeError,
    owner_reference,
)
from gemini_webhooks.contracts import signing_secret as contract
from gemini_webhooks.contracts.signing_secret import (
    SecretFormatError,
    SigningSecrets,
    truncate_secret,
)

# Writes of one set before giving up on a Secret that keeps changing under us.
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class HeldSecrets:
    """What the signing Secret holds, as far as the operator can tell."""

    exists: bool
    owned: bool  # created by this resource (owner reference with its UID)
    secrets: SigningSecrets | None
    problem: str | None  # why `secrets` is None (never secret material)
    resource_version: str = ""  # the version read: a write is made over it


def signing_secret_labels(webhook_name: str) -> dict[str, str]:
    return {
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_WEBHOOK: webhook_name[:63].rstrip("-."),
        contract.LABEL_COMPONENT: contract.COMPONENT_SIGNING_SECRET,
    }


def held(secret: JSON | None, name: str, uid: str) -> HeldSecrets:
    """What a Secret as read (None: absent) holds for the resource with `uid`."""
    if secret is None:
        return HeldSecrets(False, False, None, f"the signing Secret {name!r} does not exist")
    metadata = secret.get("metadata") or {}
    owned = any(o.get("uid") == uid for o in metadata.get("ownerReferences") or [])
    data = secret.get("data") or {}
    version = str(metadata.get("resourceVersion") or "")
    try:
        secrets = contract.decode_data(data)
    except SecretFormatError as error:
        problem = f"the signing Secret is unreadable: {error}"
        return HeldSecrets(True, owned, None, problem, version)
    return HeldSecrets(True, owned, secrets, None, version)


async def read_signing_secret(kube: Kube, namespace: str, name: str, uid: str) -> HeldSecrets:
    return held(await kube.read_secret(namespace, name), name, uid)


async def current_fingerprint(kube: Kube, namespace: str, name: str, uid: str) -> str | None:
    """The fingerprint (`truncate_secret`) of the current secret the Secret holds, or None."""
    found = await read_signing_secret(kube, namespace, name, uid)
    current = found.secrets.current if found.secrets else None
    return truncate_secret(current.secret) if current else None


async def write_signing_secret(
    kube: Kube,
    resource: Mapping[str, Any],
    name: str,
    secrets: SigningSecrets,
    base: HeldSecrets,
) -> HeldSecrets:
    """Write `secrets`, derived from `base` (the Secret as read), over `base`'s version; on a
    conflict, merged into the Secret as it is now. Returns the Secret as written (its set may
    hold a concurrent writer's secrets too)."""
    metadata = resource["metadata"]
    namespace, uid = metadata["namespace"], metadata["uid"]
    meta: JSON = {
        "name": name,
        "namespace": namespace,
        "labels": signing_secret_labels(metadata["name"]),
        "ownerReferences": [owner_reference(resource)],
    }
    current, wanted = base, secrets
    for _ in range(MAX_ATTEMPTS):
        data = contract.encode_data(wanted)
        try:
            if current.exists:
                # Over the version read: 409 if it changed since. No `type`: it defaults to
                # Opaque, and is immutable on a Secret that exists.
                version = {"resourceVersion": current.resource_version}
                body = {"apiVersion": "v1", "kind": "Secret", "metadata": {**meta, **version}}
                stored = await kube.apply({**body, "data": data})
                if stored is not None:
                    stored = await _without_other_keys(kube, stored, data)
            else:
                # A create, not an apply: an apply has no "must not exist" precondition, so
                # of two writers creating it at once the second would overwrite the first's
                # secrets; a create answers it 409, and it merges below.
                body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": meta}
                stored = await kube.create({**body, "data": data}, field_manager=FIELD_MANAGER)
            if stored is not None:
                return held(stored, name, uid)
        except KubeError as error:
            if error.status != 409:
                raise
        # Changed (or gone) since it was read: read it again and merge ours into it.
        current = held(await kube.get(*SECRET, namespace, name), name, uid)
        wanted = signing.merged(base.secrets, secrets, current.secrets)
    raise KubeError(409, f"the signing Secret {name!r} kept changing concurrently")


async def _without_other_keys(kube: Kube, stored: JSON, data: Mapping[str, str]) -> JSON | None:
    """`stored` without the data keys we did not write (apply leaves the keys it never
    owned), by a merge patch over its version (409 if it changed since)."""
    metadata = stored["metadata"]
    others = {key: None for key in stored.get("data") or {} if key not in data}
    if not others:
        return stored
    patch = {"metadata": {"resourceVersion": metadata["resourceVersion"]}, "data": others}
    return await kube.merge_patch(*SECRET, metadata["namespace"], metadata["name"], patch)


async def release_signing_secret(kube: Kube, namespace: str, name: str, uid: str) -> None:
    """Drop the resource's owner reference so the Secret outlives it (deletion policy Orphan)."""
    secret = await kube.get(*SECRET, namespace, name)
    if secret is None:
        return
    owners = (secret.get("metadata") or {}).get("ownerReferences") or []
    kept = [o for o in owners if o.get("uid") != uid]
    if len(kept) != len(owners):
        await kube.merge_patch(*SECRET, namespace, name, {"metadata": {"ownerReferences": kept}})
