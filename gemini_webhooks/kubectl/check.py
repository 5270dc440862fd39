"""`kubectl gemini check` (as `cmctl check api`): is the cluster ready for GeminiWebhooks?

The CRD installed, established and served; the operator's Deployment running; with leader
election, one replica holding the leader Lease and renewing it (the replica that acts);
and its ServiceAccount holding every rule the operator needs, asked of the API server itself
(SubjectAccessReview), so whatever grants them — the chart's ClusterRole, a Role per
watched namespace, an aggregated role — counts. An operator run outside a Deployment (a
process with its own kubeconfig, as in the local sandbox) counts as running when it holds
and renews its leader Lease; its RBAC is then its credentials', which the check cannot
name. Prints what is missing.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from gemini_webhook_operator.kube import KubeError
from gemini_webhook_operator.leader import DEFAULT_LEASE_NAME, LeaseRecord
from gemini_webhooks.contracts import crd
from gemini_webhooks.contracts.signing_secret import MANAGED_BY
from gemini_webhooks.contracts.times import parse_rfc3339
from gemini_webhooks.kubectl.cluster import JSON, PluginError, Session, readable

# The chart's operator Deployment (charts/.../_helpers.tpl `gwo.labels`).
OPERATOR_SELECTOR = f"app.kubernetes.io/component=operator,app.kubernetes.io/part-of={MANAGED_BY}"


@dataclass(frozen=True)
class Rule:
    group: str
    resource: str
    verbs: tuple[str, ...]
    namespaced: bool = True
    subresource: str = ""


# Every rule the operator needs: the chart's (`templates/_rbac.tpl`; tests/kubectl checks
# that the two agree), without the leader-election Lease (only with leader election).
OPERATOR_RULES: tuple[Rule, ...] = (
    Rule(crd.API_GROUP, crd.PLURAL, ("list", "watch", "patch")),
    Rule(crd.API_GROUP, crd.PLURAL, ("patch",), subresource="status"),
    Rule("", "secrets", ("get", "list", "watch", "create", "patch", "delete")),
    *(
        Rule(group, resource, ("list", "watch", "create", "patch", "delete"))
        for group, resource in (
            ("", "configmaps"),
            ("", "services"),
            ("", "serviceaccounts"),
            ("apps", "deployments"),
            ("policy", "poddisruptionbudgets"),
            ("rbac.authorization.k8s.io", "roles"),
            ("rbac.authorization.k8s.io", "rolebindings"),
            ("networking.k8s.io", "ingresses"),
            ("networking.k8s.io", "networkpolicies"),
            ("gateway.networking.k8s.io", "httproutes"),
        )
    ),
    Rule("", "pods", ("list",)),
    Rule("", "events", ("create",)),
    Rule("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch"), namespaced=False),
)


def lease_state(lease: JSON, now: datetime) -> tuple[bool, str]:
    """Whether a leader Lease has a live holder at `now` (the reader's clock), and what to
    say: a holder that renewed it within its lease duration acts; an empty holder is a
    released Lease; an older renewal is a holder that stopped (or a clock far off ours)."""
    record = LeaseRecord.from_object(lease)
    renewed = parse_rfc3339(record.renew_time)
    if not record.holder:
        return False, "no replica holds it (released, or never taken)"
    if renewed is None or not record.lease_duration:
        return False, f"held by {record.holder}, without a renewTime and leaseDurationSeconds"
    age = (now - renewed).total_seconds()
    if age > record.lease_duration:
        return False, (
            f"held by {record.holder}, not renewed for {age:.0f} s "
            f"(lease {record.lease_duration:g} s): the holder stopped acting, or this "
            "machine's clock is off"
        )
    return True, f"held by {record.holder}, renewed {max(age, 0.0):.0f} s ago"


def leader_lease(deployment: JSON) -> tuple[str, str] | None:
    """(namespace, name) of the Lease a Deployment's operator elects its leader by, read from
    its arguments (`--leader-elect`, `--leader-election-id`, `--leader-election-namespace`),
    or None without leader election."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or []:
        argv = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        if "--leader-elect" not in argv:
            continue
        options: dict[str, str] = {}
        for i, arg in enumerate(argv):
            key, sep, value = arg.partition("=")
            if not sep and i + 1 < len(argv):
                value = argv[i + 1]
            options.setdefault(key, value)
        return (
            options.get("--leader-election-namespace") or deployment["metadata"]["namespace"],
            options.get("--leader-election-id") or DEFAULT_LEASE_NAME,
        )
    return None


def _item(name: str, ok: bool, detail: str) -> JSON:
    return {"check": name, "ok": ok, "detail": detail}


async def _crd(session: Session) -> list[JSON]:
    found, problem = await readable(
        session.kube.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd.CRD_NAME}"
        )
    )
    what = f"CRD {crd.CRD_NAME}"
    if problem:
        return [_item(what, False, f"cannot read it: {problem}")]
    if found is None:
        return [_item(what, False, "not installed: kubectl apply -f crds/ (or the chart)")]
    conditions = {c.get("type"): c for c in (found.get("status") or {}).get("conditions") or []}
    established = (conditions.get("Established") or {}).get("status") == "True"
    served = any(
        v.get("name") == crd.VERSION and v.get("served")
        for v in (found.get("spec") or {}).get("versions") or []
    )
    discovery, _ = await readable(session.kube.request("GET", f"/apis/{crd.API_VERSION}"))
    listed = any(r.get("name") == crd.PLURAL for r in (discovery or {}).get("resources") or [])
    return [
        _item(what, True, "installed"),
        _item(
            f"{what} established",
            established,
            "Established=True"
            if established
            else f"not established: {(conditions.get('Established') or {}).get('message', '')}",
        ),
        _item(
            f"{crd.API_VERSION} {crd.PLURAL} served",
            served and listed,
            "served" if served and listed else f"{crd.VERSION} is not served by the API server",
        ),
    ]


async def _operators(session: Session, namespace: str | None) -> tuple[list[JSON], str | None]:
    prefix = f"/apis/apps/v1/namespaces/{namespace}" if namespace else "/apis/apps/v1"
    found, problem = await readable(
        session.kube.request(
            "GET", f"{prefix}/deployments", params={"labelSelector": OPERATOR_SELECTOR}
        )
    )
    return list((found or {}).get("items") or []), problem


async def _lease(session: Session, namespace: str, name: str) -> JSON:
    what = f"leader Lease {namespace}/{name}"
    found, problem = await readable(
        session.kube.request(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        )
    )
    if problem:
        return _item(what, False, f"cannot read it: {problem}")
    if found is None:
        return _item(what, False, "absent: no replica has taken it (see the operator's logs)")
    ok, detail = lease_state(found, datetime.now(UTC))
    return _item(what, ok, detail)


async def _leases_outside(session: Session, namespace: str | None) -> list[JSON]:
    """Leader Leases of the default name: an operator run outside a Deployment holds one."""
    prefix = f"/namespaces/{namespace}" if namespace else ""
    found, _ = await readable(
        session.kube.request(
            "GET",
            f"/apis/coordination.k8s.io/v1{prefix}/leases",
            params={"fieldSelector": f"metadata.name={DEFAULT_LEASE_NAME}"},
        )
    )
    return list((found or {}).get("items") or [])


def _service_account(deployment: JSON) -> tuple[str, str]:
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    return deployment["metadata"]["namespace"], pod.get("serviceAccountName") or "default"


async def _allowed(session: Session, account: tuple[str, str], rule: Rule, verb: str) -> bool:
    namespace, name = account
    attributes: JSON = {"verb": verb, "group": rule.group, "resource": rule.resource}
    if rule.subresource:
        attributes["subresource"] = rule.subresource
    if rule.namespaced:
        attributes["namespace"] = session.namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{name}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = await session.kube.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
    )
    return bool(((answer or {}).get("status") or {}).get("allowed"))


def _rule_text(rule: Rule, verb: str, namespace: str) -> str:
    resource = rule.resource + (f"/{rule.subresource}" if rule.subresource else "")
    group = rule.group or "core"
    where = f"in namespace {namespace}" if rule.namespaced else "cluster-wide"
    return f"{verb} {resource} ({group}) {where}"


async def _rbac(session: Session, account: tuple[str, str]) -> JSON:
    asks = [(rule, verb) for rule in OPERATOR_RULES for verb in rule.verbs]
    try:
        answers = await asyncio.gather(*(_allowed(session, account, r, v) for r, v in asks))
    except KubeError as error:  # reported, not raised: the other checks still print
        return _item(
            f"RBAC of {account[0]}/{account[1]}", False, f"cannot ask the API server: {error}"
        )
    missing = [
        _rule_text(rule, verb, session.namespace)
        for (rule, verb), ok in zip(asks, answers, strict=True)
        if not ok
    ]
    name = f"RBAC of ServiceAccount {account[0]}/{account[1]}"
    if missing:
        return {
            **_item(name, False, f"{len(missing)} of {len(asks)} permissions missing"),
            "missing": missing,
        }
    return _item(name, True, f"all {len(asks)} permissions the operator needs")


async def run(
    session: Session, operator_namespace: str | None, service_account: str | None
) -> JSON:
    checks = await _crd(session)
    accounts: list[tuple[str, str]] = []
    deployments, problem = await _operators(session, operator_namespace)
    if problem:
        checks.append(_item("operator Deployment", False, f"cannot list them: {problem}"))
    elif not deployments:
        outside = [
            (lease, lease_state(lease, datetime.now(UTC)))
            for lease in await _leases_outside(session, operator_namespace)
        ]
        live = [(lease, detail) for lease, (ok, detail) in outside if ok]
        for lease, detail in live:
            meta = lease["metadata"]
            checks.append(
                _item(
                    f"operator (no Deployment; leader Lease {meta['namespace']}/{meta['name']})",
                    True,
                    f"{detail}; it runs with its own credentials, whose RBAC this check "
                    "cannot name (--service-account NAMESPACE:NAME checks an account)",
                )
            )
        if not live:
            where = f"namespace {operator_namespace}" if operator_namespace else "any namespace"
            checks.append(
                _item(
                    "operator Deployment",
                    False,
                    f"none labelled {OPERATOR_SELECTOR} in {where}, and no live leader Lease "
                    f"{DEFAULT_LEASE_NAME}: install the chart",
                )
            )
    for deployment in deployments:
        meta, status = deployment["metadata"], deployment.get("status") or {}
        available = int(status.get("availableReplicas") or 0)
        wanted = int((deployment.get("spec") or {}).get("replicas") or 0)
        checks.append(
            _item(
                f"operator Deployment {meta['namespace']}/{meta['name']}",
                available > 0,
                f"{available}/{wanted} replicas available"
                + ("" if available else ": kubectl describe deployment/" + meta["name"]),
            )
        )
        accounts.append(_service_account(deployment))
        elected_by = leader_lease(deployment)
        if elected_by is not None:
            checks.append(await _lease(session, *elected_by))
    if service_account:
        namespace, sep, name = service_account.partition(":")
        if not sep or not namespace or not name:
            raise PluginError("--service-account must be NAMESPACE:NAME")
        accounts = [(namespace, name)]
    for account in dict.fromkeys(accounts):
        checks.append(await _rbac(session, account))
    return {
        "namespace": session.namespace,
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
    }


def text(report: JSON) -> str:
    lines = []
    for c in report["checks"]:
        lines.append(f"{'✓' if c['ok'] else '✗'} {c['check']}: {c['detail']}")
        lines.extend(f"    missing: {m}" for m in c.get("missing", []))
    lines.append(
        "everything is in place"
        if report["ok"]
        else "something is missing (✗ above): fix it and run `kubectl gemini check` again"
    )
    return "\n".join(lines)
