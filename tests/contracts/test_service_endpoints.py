from __future__ import annotations

from gemini_webhooks.contracts import service_endpoints as se


def test_a_service_is_reached_by_its_cluster_dns_name() -> None:
    url = se.service_url("orders", "shop", 8080, "/hooks")
    assert url == "http://orders.shop.svc.cluster.local:8080/hooks"
    assert se.service_url("orders", "shop", 80, "x", cluster_domain="corp.internal") == (
        "http://orders.shop.svc.corp.internal:80/x"
    )


def test_a_pod_is_reached_at_its_address() -> None:
    assert se.pod_url("10.1.2.3", 9090, "/internal/pings") == "http://10.1.2.3:9090/internal/pings"
    assert se.pod_url("fd00::7", 9090, "x") == "http://[fd00::7]:9090/x"
