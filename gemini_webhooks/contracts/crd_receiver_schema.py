"""The OpenAPI v3 *structural* schema of a GeminiWebhook's `spec.receiver`: every field
described, so `kubectl explain geminiwebhook.spec.receiver` reads as documentation. The CRD
(`contracts.crd`) embeds it; `spec.healthCheck`'s schema is defined in `contracts.crd`
itself. The typed view of the same fields, with the limits, defaults and patterns used
here, is `contracts.crd_receiver`."""

from __future__ import annotations

import copy
from typing import Any

from gemini_webhooks.contracts.crd import DURATION_PATTERN
from gemini_webhooks.contracts.crd_receiver import (
    DEFAULT_REPLICAS,
    DEFAULT_SERVICE_PORT,
    DEFAULT_TRACES_SAMPLER,
    DEFAULT_WAIT_TIMEOUT,
    HOST_PATTERN,
    MAX_REPLICAS,
    OTLP_ENDPOINT_PATTERN,
    PATH_PATTERN,
    SAMPLER_ARG_PATTERN,
    TRACES_SAMPLERS,
)
from gemini_webhooks.contracts.delivery import (
    DEFAULT_TOLERANCE_SECONDS,
    GOOGLE_ISSUER,
    GOOGLE_JWKS_URI,
)
from gemini_webhooks.contracts.openapi_schema import array, boolean, integer, obj, string
from gemini_webhooks.contracts.receiver_config import SENTINEL_ADDRESS_PATTERN

_QUANTITY = {
    "anyOf": [{"type": "integer"}, {"type": "string"}],
    "x-kubernetes-int-or-string": True,
    # The pattern controller-gen emits for resource.Quantity (applies to strings only).
    "pattern": (
        r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
        r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
    ),
}

_TARGET = obj(
    "Where an event goes: exactly one of `service` or `url`.",
    {
        "service": obj(
            "A Service in the cluster.",
            {
                "name": string("Service name.", minLength=1),
                "namespace": string(
                    "Service namespace; defaults to the GeminiWebhook's namespace.", minLength=1
                ),
                "port": integer("Service port.", minimum=1, maximum=65535),
                "path": string("Path on the Service.", default="/", pattern="^/"),
            },
            required=["name", "port"],
        ),
        "url": string("An http(s) URL.", pattern="^https?://"),
        "format": string(
            "`envelope`: the envelope JSON as received; `cloudevents`: a CloudEvent in binary "
            "mode (ce-* headers, data as body).",
            enum=["envelope", "cloudevents"],
            default="envelope",
        ),
    },
    oneOf=[{"required": ["service"]}, {"required": ["url"]}],
)

_TARGETS = array("Every target receives the event.", _TARGET, minItems=1)

_MATCH_LABELS = {
    "type": "object",
    "description": "Labels the selected objects carry (all of them).",
    "additionalProperties": {"type": "string"},
}
_LABEL_SELECTOR = obj("A label selector (matchLabels).", {"matchLabels": _MATCH_LABELS})

_EXPOSE_SCHEMA = obj(
    "Make the receiver reachable from the internet: the operator creates and owns an Ingress "
    "or a Gateway API HTTPRoute, derives the webhook's URL as `https://<host><path>` and "
    "registers it with Gemini once the route is admitted. Exactly one of `ingress` or "
    "`httpRoute`.",
    {
        "ingress": obj(
            "An Ingress (networking.k8s.io/v1) in front of the receiver's Service.",
            {
                "ingressClassName": string("IngressClass of the ingress controller to use."),
                "host": string(
                    "Public DNS name, e.g. `hooks.example.com`.",
                    pattern=HOST_PATTERN,
                    maxLength=253,
                ),
                "path": string(
                    "Path Gemini delivers to (matched exactly).",
                    default="/",
                    pattern=PATH_PATTERN,
                    maxLength=1024,
                ),
                "tls": obj(
                    "The certificate for `host`: exactly one of `secretName` (a TLS Secret "
                    "you provide) or `issuer` (cert-manager issues it into "
                    "`<name>-receiver-tls`).",
                    {
                        "secretName": string(
                            "Existing `kubernetes.io/tls` Secret in this namespace.",
                            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                            maxLength=253,
                        ),
                        "issuer": obj(
                            "A cert-manager issuer (set as the Ingress annotation "
                            "`cert-manager.io/issuer` or `cert-manager.io/cluster-issuer`).",
                            {
                                "name": string("Issuer name.", minLength=1, maxLength=253),
                                "kind": string(
                                    "Issuer kind.",
                                    enum=["Issuer", "ClusterIssuer"],
                                    default="ClusterIssuer",
                                ),
                            },
                            required=["name"],
                        ),
                    },
                    oneOf=[{"required": ["secretName"]}, {"required": ["issuer"]}],
                ),
                "annotations": {
                    "type": "object",
                    "description": "Extra annotations on the Ingress (ingress controller "
                    "settings).",
                    "additionalProperties": {"type": "string"},
                },
            },
            required=["host", "tls"],
        ),
        "httpRoute": obj(
            "A Gateway API HTTPRoute (gateway.networking.k8s.io/v1) attached to your Gateway; "
            "TLS is the Gateway listener's.",
            {
                "parentRefs": array(
                    "Gateways (listeners) the route attaches to.",
                    obj(
                        "A Gateway.",
                        {
                            "name": string("Gateway name.", minLength=1, maxLength=253),
                            "namespace": string(
                                "Gateway namespace; defaults to this namespace.",
                                minLength=1,
                                maxLength=63,
                            ),
                            "sectionName": string(
                                "Listener name on the Gateway.", minLength=1, maxLength=253
                            ),
                        },
                        required=["name"],
                    ),
                    minItems=1,
                    maxItems=32,
                ),
                "hostnames": array(
                    "Public DNS names; the webhook's URL uses the first.",
                    {"type": "string", "pattern": HOST_PATTERN, "maxLength": 253},
                    minItems=1,
                    maxItems=16,
                ),
                "path": string(
                    "Path Gemini delivers to (matched exactly).",
                    default="/",
                    pattern=PATH_PATTERN,
                    maxLength=1024,
                ),
            },
            required=["parentRefs", "hostnames"],
        ),
    },
    oneOf=[{"required": ["ingress"]}, {"required": ["httpRoute"]}],
)

_NETWORK_POLICY_SCHEMA = obj(
    "A NetworkPolicy for the receiver's pods (on by default): the public port only from "
    "`publicFrom`, the internal port only from the operator and Prometheus, egress only to "
    "the route targets, Redis, DNS, the Kubernetes API, the JWKS host and the OTLP endpoint.",
    {
        "enabled": boolean("Render the NetworkPolicy.", default=True),
        "publicFrom": array(
            "Who may reach the public port. Default: the ingress controller's namespace (an "
            "operator setting); with a NodePort or LoadBalancer Service and no `expose`: "
            "anyone.",
            obj(
                "A NetworkPolicy peer.",
                {
                    "namespaceSelector": _LABEL_SELECTOR,
                    "podSelector": _LABEL_SELECTOR,
                    "ipBlock": obj(
                        "An IP range.",
                        {
                            "cidr": string("CIDR, e.g. `10.0.0.0/8`.", minLength=1),
                            "except": array("CIDRs left out.", {"type": "string"}),
                        },
                        required=["cidr"],
                    ),
                },
            ),
            maxItems=32,
        ),
    },
)


_TRACING_SCHEMA = obj(
    "OpenTelemetry traces of every delivery (a span per delivery, a child span per forward "
    "attempt, W3C `traceparent` sent to every target), exported over OTLP/HTTP; off when "
    "absent. Sets the receiver's standard `OTEL_*` environment.",
    {
        "otlpEndpoint": string(
            "OTLP/HTTP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`), e.g. "
            "`http://otel-collector.observability.svc:4318`: spans go to its `/v1/traces`. "
            "The receiver's NetworkPolicy lets it reach that host's port.",
            pattern=OTLP_ENDPOINT_PATTERN,
            maxLength=2048,
        ),
        "serviceName": string(
            "The spans' `service.name` (`OTEL_SERVICE_NAME`); default: the receiver's "
            "Deployment name.",
            minLength=1,
            maxLength=253,
        ),
        "sampler": string(
            "Which traces are kept (`OTEL_TRACES_SAMPLER`); the `parentbased_` ones follow "
            "an incoming `traceparent`'s decision.",
            enum=list(TRACES_SAMPLERS),
            default=DEFAULT_TRACES_SAMPLER,
        ),
        "samplerArg": string(
            "The ratio kept by the `traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG`), "
            "from 0 to 1.",
            pattern=SAMPLER_ARG_PATTERN,
        ),
    },
    required=["otlpEndpoint"],
)

RECEIVER_SCHEMA: dict[str, Any] = obj(
    "A receiver deployed for this webhook: verifies every delivery's signature, drops "
    "replays and duplicates, and forwards events to the routes' targets.",
    {
        "enabled": boolean("Deploy the receiver.", default=False),
        "replicas": integer(
            "Receiver pods; more than one also gets a PodDisruptionBudget (use `redis` to "
            "share deduplication between replicas).",
            minimum=1,
            maximum=MAX_REPLICAS,
            default=DEFAULT_REPLICAS,
        ),
        "image": string("Receiver image; defaults to the operator's configured receiver image."),
        "imagePullPolicy": string(
            "Image pull policy of the receiver container.",
            enum=["Always", "IfNotPresent", "Never"],
        ),
        "resources": obj(
            "Compute resources of the receiver container; defaults to the operator's.",
            {
                "requests": {
                    "type": "object",
                    "description": "Minimum resources, e.g. `cpu: 50m`, `memory: 64Mi`.",
                    "additionalProperties": _QUANTITY,
                },
                "limits": {
                    "type": "object",
                    "description": "Maximum resources, e.g. `memory: 256Mi`.",
                    "additionalProperties": _QUANTITY,
                },
            },
        ),
        "routes": array(
            "Ordered routing rules; the first rule that matches an event decides its targets.",
            obj(
                "One routing rule.",
                {
                    "name": string("Rule name (logs and metrics).", minLength=1),
                    "match": obj(
                        "When the rule applies; every given condition must hold, an absent "
                        "one matches everything.",
                        {
                            "types": array(
                                "Event type globs, e.g. `batch.*`, `video.generated`.",
                                {"type": "string", "minLength": 1},
                            ),
                            "sources": array(
                                "Delivery sources: `static` (this webhook) and/or `dynamic` "
                                "(request-level webhooks).",
                                {"type": "string", "enum": ["static", "dynamic"]},
                            ),
                            "userMetadata": {
                                "type": "object",
                                "description": "`user_metadata` key to value glob; each key "
                                "must be present and match.",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    ),
                    "targets": _TARGETS,
                },
                required=["name", "targets"],
            ),
        ),
        "defaultRoute": obj(
            "Targets for events no rule matches. Without `redis`, set this or "
            "`deadLetter` so that an unroutable event is never dropped.",
            {"targets": _TARGETS},
            required=["targets"],
        ),
        "deadLetter": obj(
            "Where unroutable events go when `redis` is not set (with Redis: a stream).",
            {"target": _TARGET},
            required=["target"],
        ),
        "dynamic": obj(
            "Also accept dynamic (request-level) webhooks, signed with RS256 JWTs.",
            {
                "enabled": boolean("Accept JWT-signed deliveries.", default=False),
                "audiences": array(
                    "Accepted `aud` values, usually the public URI of this receiver.",
                    {"type": "string", "minLength": 1},
                ),
                "issuer": string("Required `iss` claim.", default=GOOGLE_ISSUER),
                "jwksUri": string(
                    "JWKS URI pinned for verification.",
                    default=GOOGLE_JWKS_URI,
                    pattern="^https?://",
                ),
                "acceptJobsFromAnyProject": boolean(
                    "Accept dynamic deliveries of any Gemini project's jobs. By default only "
                    "jobs whose `user_metadata` carries a MAC under this receiver's job key "
                    "(the Secret `<name>-dynamic-job-key`, which the operator creates; "
                    "`gemini-webhooks webhook-config` signs it) are accepted: Google signs "
                    "every project's deliveries alike, so with this set anyone with a Gemini "
                    "API key can send events here and choose their routes through "
                    "`user_metadata`.",
                    default=False,
                ),
            },
        ),
        "redis": obj(
            "Durable mode: accept deliveries into a Redis Stream and share deduplication "
            "between replicas; exactly one of `url` or `sentinel`. The receiver refuses a "
            "server without `appendonly yes` and `appendfsync everysec` (or `always`).",
            {
                "url": string(
                    "Redis URL, e.g. `redis://redis.team-a.svc:6379/0`; it is written to the "
                    "receiver's ConfigMap, so it must not carry a password.",
                    pattern="^(redis|rediss|unix)://",
                ),
                "sentinel": obj(
                    "Find the primary through Redis Sentinel and follow it across failovers.",
                    {
                        "addresses": array(
                            "Sentinels as `host:port`, e.g. `redis-sentinel.team-a.svc:26379`.",
                            {"type": "string", "pattern": SENTINEL_ADDRESS_PATTERN},
                            minItems=1,
                        ),
                        "masterName": string("The monitored primary's name.", minLength=1),
                        "db": integer("Database number on the primary.", minimum=0, default=0),
                    },
                    required=["addresses", "masterName"],
                ),
                "acceptDataLossRisk": boolean(
                    "Run even when the server's persistence does not make an acknowledged "
                    "event survive a Redis crash; the receiver's /readyz and the "
                    "`gemini_receiver_redis_durability` metric then say `at_risk`.",
                    default=False,
                ),
                "waitReplicas": integer(
                    "Acknowledge an event only once this many replicas hold it (`WAIT`); "
                    "fewer within `waitTimeout` answer 503 so that Gemini retries.",
                    minimum=0,
                    default=0,
                ),
                "waitTimeout": string(
                    "How long one `WAIT` for `waitReplicas` may take.",
                    default=DEFAULT_WAIT_TIMEOUT,
                    pattern=DURATION_PATTERN,
                    minLength=2,
                ),
            },
            oneOf=[{"required": ["url"]}, {"required": ["sentinel"]}],
        ),
        "dedup": obj(
            "Deduplication on `webhook-id` (Gemini retries for 24 h).",
            {
                "ttl": string(
                    "How long a `webhook-id` is remembered.",
                    default="25h",
                    pattern=DURATION_PATTERN,
                    minLength=2,
                ),
                "maxEntries": integer(
                    "Without Redis: the oldest ids are forgotten beyond this count.",
                    minimum=1,
                    default=1_000_000,
                ),
            },
        ),
        "replayTolerance": string(
            "Reject deliveries whose `webhook-timestamp` is older (or further in the future) "
            "than this.",
            default=f"{DEFAULT_TOLERANCE_SECONDS // 60}m",
            pattern=DURATION_PATTERN,
            minLength=2,
        ),
        "service": obj(
            "The Service in front of the receiver; the webhook's `url` should reach it.",
            {
                "type": string(
                    "Service type.",
                    enum=["ClusterIP", "NodePort", "LoadBalancer"],
                    default="ClusterIP",
                ),
                "port": integer(
                    "Service port for deliveries.",
                    minimum=1,
                    maximum=65535,
                    default=DEFAULT_SERVICE_PORT,
                ),
            },
        ),
        "logLevel": string(
            "Receiver log level.", enum=["DEBUG", "INFO", "WARNING", "ERROR"], default="INFO"
        ),
        "expose": _EXPOSE_SCHEMA,
        "networkPolicy": _NETWORK_POLICY_SCHEMA,
        "tracing": _TRACING_SCHEMA,
    },
)


def receiver_schema() -> dict[str, Any]:
    """`spec.receiver` for the CRD (`contracts.crd` embeds it)."""
    return copy.deepcopy(RECEIVER_SCHEMA)
