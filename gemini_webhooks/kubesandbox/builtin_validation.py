"""Field handling for built-in types, from the `kubernetes-validate` schemas.

A real API server decodes built-in objects into Go structs: unknown fields are dropped
(and reported in a warning, or refused with `fieldValidation=Strict`, what `kubectl apply`
sends), mistyped ones refused. The sandbox has no Go structs; when `kubernetes-validate`
is installed (a dev dependency) it uses that release's schemas instead: `prune_unknown`
drops and reports every unknown field, `check_strict` refuses the first mistyped or
missing required one (the library stops there). Without the library, built-ins are
stored as sent.
"""

from __future__ import annotations

import re
from typing import Any

from gemini_webhooks.kubesandbox import errors, openapi

KUBERNETES_VERSION = "1.34"
_UNEXPECTED = re.compile(r"'([^']+)'")

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - the runtime install has no dev dependencies
    kubernetes_validate = None


def prune_unknown(obj: dict[str, Any], group: str, version: str, kind: str) -> list[str]:
    """Drop the fields the type does not have (in place); return their paths."""
    components, kinds = openapi.builtin_definitions()
    name = kinds.get((group, version, kind))
    if name is None:
        return []
    return _prune(obj, components[name], components, "")


def _resolve(schema: Any, components: dict[str, Any]) -> dict[str, Any]:
    for _ in range(32):
        if not isinstance(schema, dict):
            return {}
        if "$ref" in schema:
            schema = components.get(str(schema["$ref"]).rsplit("/", 1)[-1], {})
        elif isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema
    return {}


def _prune(value: Any, schema: Any, components: dict[str, Any], path: str) -> list[str]:
    schema = _resolve(schema, components)
    unknown: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        if schema.get("x-kubernetes-preserve-unknown-fields") or (
            properties is None and additional in (None, True)
        ):
            return unknown
        for key in list(value):
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                unknown += _prune(value[key], properties[key], components, where)
            elif isinstance(additional, dict):
                unknown += _prune(value[key], additional, components, where)
            elif additional is True:
                continue
            else:
                unknown.append(where)
                del value[key]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            unknown += _prune(item, schema["items"], components, f"{path}[{index}]")
    return unknown


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


# --- defaulting and validation of the built-in types our components write ---------------
#
# What kube-apiserver's defaulters (`SetObjectDefaults_*`) and validators
# (`ValidateDeployment`, `ValidateService`, `ValidatePodSpec`) do for the fields the
# operator and the chart set; the rest of a real server's validation is not reproduced.

_SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")


def _pull_policy(image: Any) -> str:
    if not isinstance(image, str):
        return "IfNotPresent"
    name = image.split("@", 1)[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    return "Always" if "@" not in image and tag in ("", "latest") else "IfNotPresent"


def _default_pod_spec(spec: Any) -> None:
    if not isinstance(spec, dict):
        return
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("resources", {})
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            container.setdefault("imagePullPolicy", _pull_policy(container.get("image")))
            for port in container.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")


def apply_defaults(group: str, plural: str, obj: dict[str, Any]) -> None:
    """Fill in what kube-apiserver defaults on a Deployment, Pod or Service (in place)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if (group, plural) == ("apps", "deployments"):
        spec.setdefault("replicas", 1)
        strategy = spec.setdefault("strategy", {})
        if isinstance(strategy, dict):
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                if isinstance(rolling, dict):
                    rolling.setdefault("maxUnavailable", "25%")
                    rolling.setdefault("maxSurge", "25%")
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        template = spec.get("template")
        if isinstance(template, dict):
            _default_pod_spec(template.get("spec"))
    elif (group, plural) == ("", "pods"):
        _default_pod_spec(spec)
    elif (group, plural) == ("", "services") and spec.get("type") != "ExternalName":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")


def _required(field: str) -> dict[str, str]:
    return errors.cause(field, "FieldValueRequired", "Required value")


def _pod_spec_causes(spec: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(spec, dict):
        return []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        return [_required(f"{where}.containers")]
    causes = []
    for index, container in enumerate(containers):
        if not isinstance(container, dict):
            continue
        for key in ("name", "image"):
            if not container.get(key):
                causes.append(_required(f"{where}.containers[{index}].{key}"))
    return causes


def _port_range(field: str, value: Any) -> list[dict[str, str]]:
    if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
        return [
            errors.cause(
                field,
                "FieldValueInvalid",
                f"Invalid value: {value}: must be between 1 and 65535, inclusive",
            )
        ]
    return []


def causes(group: str, plural: str, obj: dict[str, Any]) -> list[dict[str, str]]:
    """kube-apiserver's 422 causes for a Deployment, Pod or Service, in its order."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    found: list[dict[str, str]] = []
    if (group, plural) == ("apps", "deployments"):
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and not isinstance(replicas, bool) and replicas < 0:
            found.append(
                errors.cause(
                    "spec.replicas",
                    "FieldValueInvalid",
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                )
            )
        template = spec.get("template")
        if isinstance(template, dict):
            found += _pod_spec_causes(template.get("spec"), "spec.template.spec")
        found += _deployment_status_causes(obj.get("status"))
    elif (group, plural) == ("", "pods"):
        found += _pod_spec_causes(spec, "spec")
    elif (group, plural) == ("", "services"):
        kind = spec.get("type", "ClusterIP")
        if kind not in _SERVICE_TYPES:
            supported = ", ".join(f'"{t}"' for t in _SERVICE_TYPES)
            found.append(
                errors.cause(
                    "spec.type",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{kind}": supported values: {supported}',
                )
            )
        ports = spec.get("ports")
        headless = spec.get("clusterIP") == "None"
        if not ports and kind != "ExternalName" and not headless:
            found.append(_required("spec.ports"))
        names: list[Any] = []
        ports = ports if isinstance(ports, list) else []
        for index, port in enumerate(ports):
            if not isinstance(port, dict):
                continue
            where = f"spec.ports[{index}]"
            name = port.get("name")
            if len(ports) > 1 and not name:
                found.append(_required(f"{where}.name"))
            elif name and name in names:
                found.append(
                    errors.cause(
                        f"{where}.name", "FieldValueDuplicate", f'Duplicate value: "{name}"'
                    )
                )
            names.append(name)
            found += _port_range(f"{where}.port", port.get("port"))
            found += _port_range(f"{where}.targetPort", port.get("targetPort"))
    return found


def _deployment_status_causes(status: Any) -> list[dict[str, str]]:
    """`ValidateDeploymentStatus`: no count above `replicas`, `available` above `ready`."""
    if not isinstance(status, dict):
        return []

    def count(key: str) -> int:
        value = status.get(key, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    found = []
    for key in ("updatedReplicas", "readyReplicas", "availableReplicas"):
        if count(key) > count("replicas"):
            found.append(
                errors.cause(
                    f"status.{key}",
                    "FieldValueInvalid",
                    f"Invalid value: {count(key)}: cannot be greater than status.replicas",
                )
            )
    if count("availableReplicas") > count("readyReplicas"):
        found.append(
            errors.cause(
                "status.availableReplicas",
                "FieldValueInvalid",
                f"Invalid value: {count('availableReplicas')}: cannot be greater than "
                "readyReplicas",
            )
        )
    return found
