from __future__ import annotations

import pytest

from gemini_webhooks.contracts import service_endpoints as se


def test_service_resolves_through_cluster_dns_by_default() -> None:
    url = se.service_url("orders", "shop", 8080, "/hooks")
    assert url == "http://orders.shop.svc.cluster.local:8080/hooks"


def test_sandbox_override_maps_a_service_port_to_loopback() -> None:
    overrides = se.overrides_from_env({se.ENV_VAR: '{"shop/orders:8080": "127.0.0.1:4123"}'})
    assert se.service_url("orders", "shop", 8080, "x", overrides=overrides) == (
        "http://127.0.0.1:4123/x"
    )


@pytest.mark.parametrize("raw", ["not json", "[1]", '{"a": 1}'])
def test_malformed_override_variable_is_a_clear_error(raw: str) -> None:
    with pytest.raises(se.ServiceEndpointsError, match=se.ENV_VAR):
        se.overrides_from_env({se.ENV_VAR: raw})


def test_a_pod_is_reached_at_its_address_by_default() -> None:
    assert se.pod_url("orders-abc", "shop", "10.1.2.3", 9090, "/internal/pings") == (
        "http://10.1.2.3:9090/internal/pings"
    )
    assert se.pod_url("orders-abc", "shop", "fd00::7", 9090, "x") == "http://[fd00::7]:9090/x"


def test_local_node_override_maps_a_pod_port_to_loopback() -> None:
    overrides = {se.pod_key("orders-abc", "shop", 9090): "127.0.0.1:4321"}
    assert se.pod_url("orders-abc", "shop", "127.0.0.1", 9090, "/p", overrides=overrides) == (
        "http://127.0.0.1:4321/p"
    )
    # A Service of the same name is another key.
    assert se.service_key("orders-abc", "shop", 9090) not in overrides
