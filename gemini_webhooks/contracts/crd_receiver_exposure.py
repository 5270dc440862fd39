"""The GeminiWebhook's `spec.receiver.expose` and `spec.receiver.networkPolicy`: how the
receiver is reached from outside (an Ingress or a Gateway API HTTPRoute) and who may reach
it. Part of `contracts.crd_receiver`'s `ReceiverSpec`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from gemini_webhooks.contracts.spec_section import SpecSection

HOST_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$"
# An HTTP path the receiver serves: no query, no fragment, no spaces.
PATH_PATTERN = r"^/[^\s?#]*$"
Host = Annotated[str, Field(pattern=HOST_PATTERN, max_length=253)]
HttpPath = Annotated[
    str,
    Field(
        pattern=PATH_PATTERN,
        max_length=1024,
        description="Path Gemini delivers to (matched exactly).",
    ),
]


class IssuerSpec(SpecSection):
    """A cert-manager issuer (set as the Ingress annotation `cert-manager.io/issuer` or
    `cert-manager.io/cluster-issuer`)."""

    name: str = Field(min_length=1, max_length=253, description="Issuer name.")
    kind: Literal["Issuer", "ClusterIssuer"] = Field("ClusterIssuer", description="Issuer kind.")


class IngressTLSSpec(SpecSection):
    """The certificate for `host`: exactly one of `secretName` (a TLS Secret you provide) or
    `issuer` (cert-manager issues it into `<name>-receiver-tls`)."""

    exactly_one = ("secretName", "issuer")
    secret_name: str | None = Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        max_length=253,
        description="Existing `kubernetes.io/tls` Secret in this namespace.",
    )
    issuer: IssuerSpec | None = None


class IngressExposeSpec(SpecSection):
    """An Ingress (networking.k8s.io/v1) in front of the receiver's Service."""

    ingress_class_name: str | None = Field(
        None, description="IngressClass of the ingress controller to use."
    )
    host: Host = Field(description="Public DNS name, e.g. `hooks.example.com`.")
    path: HttpPath = "/"
    tls: IngressTLSSpec
    annotations: dict[str, str] = Field(
        default_factory=dict,
        description="Extra annotations on the Ingress (ingress controller settings).",
    )


class ParentRefSpec(SpecSection):
    """A Gateway."""

    name: str = Field(min_length=1, max_length=253, description="Gateway name.")
    namespace: str | None = Field(
        None,
        min_length=1,
        max_length=63,
        description="Gateway namespace; defaults to this namespace.",
    )
    section_name: str | None = Field(
        None, min_length=1, max_length=253, description="Listener name on the Gateway."
    )


class HTTPRouteExposeSpec(SpecSection):
    """A Gateway API HTTPRoute (gateway.networking.k8s.io/v1) attached to your Gateway; TLS is
    the Gateway listener's."""

    parent_refs: list[ParentRefSpec] = Field(
        min_length=1, max_length=32, description="Gateways (listeners) the route attaches to."
    )
    hostnames: list[Host] = Field(
        min_length=1,
        max_length=16,
        description="Public DNS names; the webhook's URL uses the first.",
    )
    path: HttpPath = "/"


class ExposeSpec(SpecSection):
    """Make the receiver reachable from the internet: the operator creates and owns an Ingress
    or a Gateway API HTTPRoute, derives the webhook's URL as `https://<host><path>` and
    registers it with Gemini once the route is admitted. Exactly one of `ingress` or
    `httpRoute`."""

    exactly_one = ("ingress", "httpRoute")
    ingress: IngressExposeSpec | None = None
    http_route: HTTPRouteExposeSpec | None = None

    @property
    def host(self) -> str:
        if self.ingress is not None:
            return self.ingress.host
        assert self.http_route is not None
        return self.http_route.hostnames[0]

    @property
    def path(self) -> str:
        if self.ingress is not None:
            return self.ingress.path
        assert self.http_route is not None
        return self.http_route.path

    @property
    def url(self) -> str:
        """The webhook's URL behind this route."""
        return f"https://{self.host}{self.path}"


class LabelSelectorSpec(SpecSection):
    """A label selector (matchLabels)."""

    match_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels the selected objects carry (all of them)."
    )


class IPBlockSpec(SpecSection):
    """An IP range."""

    cidr: str = Field(min_length=1, description="CIDR, e.g. `10.0.0.0/8`.")
    except_: list[str] = Field(default_factory=list, alias="except", description="CIDRs left out.")


class PeerSpec(SpecSection):
    """A NetworkPolicy peer."""

    namespace_selector: LabelSelectorSpec | None = None
    pod_selector: LabelSelectorSpec | None = None
    ip_block: IPBlockSpec | None = None


class NetworkPolicySpec(SpecSection):
    """A NetworkPolicy for the receiver's pods (on by default): the public port only from
    `publicFrom`, the internal port only from the operator and Prometheus, egress only to the
    route targets, Redis, DNS, the Kubernetes API, the JWKS host and the OTLP endpoint."""

    enabled: bool = Field(True, description="Render the NetworkPolicy.")
    public_from: list[PeerSpec] | None = Field(
        None,
        max_length=32,
        description="Who may reach the public port. Default: the ingress controller's "
        "namespace (an operator setting); with a NodePort or LoadBalancer Service and no "
        "`expose`: anyone.",
    )
