from __future__ import annotations

import pytest

from gemini_webhooks.contracts.egress_proxy import ProxySettings, ProxySettingsError

SERVICE = "http://orders.shop.svc.cluster.local:8080/in"


def test_no_proxy_variables_mean_direct_connections() -> None:
    assert ProxySettings.from_environ({}).proxy_for(SERVICE) is None


def test_http_and_https_urls_take_their_own_proxy() -> None:
    settings = ProxySettings.from_environ(
        {"HTTP_PROXY": "http://proxy:3128", "HTTPS_PROXY": "proxy-tls:3129"}
    )
    assert settings.proxy_for(SERVICE) == "http://proxy:3128"
    # Without a scheme, as curl reads it: an http proxy.
    assert settings.proxy_for("https://jwks.example/keys") == "http://proxy-tls:3129"


def test_lower_case_wins_over_upper_case() -> None:
    settings = ProxySettings.from_environ(
        {"http_proxy": "http://lower:1", "HTTP_PROXY": "http://upper:1"}
    )
    assert settings.proxy_for(SERVICE) == "http://lower:1"


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        (".svc.cluster.local", SERVICE, True),
        ("cluster.local", SERVICE, True),
        ("127.0.0.1,localhost", "http://127.0.0.1:9000/", True),
        ("127.0.0.1,localhost", SERVICE, False),
        ("*", SERVICE, True),
        ("orders.shop.svc.cluster.local:8080", SERVICE, True),
        ("10.0.0.1", "http://10.0.0.1:9090/p", True),
        ("10.0.0.1", "http://10.0.0.2:9090/p", False),
    ],
)
def test_no_proxy_names_hosts_domains_and_addresses(no_proxy: str, url: str, direct: bool) -> None:
    settings = ProxySettings.from_environ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy})
    assert (settings.proxy_for(url) is None) is direct


@pytest.mark.parametrize(
    "value", ["ftp://proxy:21", "http://:3128", "http://proxy:port", "http://proxy:3128/some/path"]
)
def test_a_proxy_variable_that_is_not_a_proxy_url_is_a_clear_error(value: str) -> None:
    with pytest.raises(ProxySettingsError, match="HTTP_PROXY") as raised:
        ProxySettings.from_environ({"HTTP_PROXY": value})
    assert value not in str(raised.value)  # it may hold credentials: never repeated


def test_credentials_in_a_proxy_url_never_appear_in_the_error() -> None:
    with pytest.raises(ProxySettingsError) as raised:
        ProxySettings.from_environ({"HTTPS_PROXY": "http://user:s3cret@proxy:bad"})
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("svc.cluster.local:8080", SERVICE, True),
        ("svc.cluster.local:9090", SERVICE, False),
        ("[fd00::7]", "http://[fd00::7]:9090/", True),
        ("[fd00::7]:9090", "http://[fd00::7]:9090/", True),
        ("ders.shop.svc.cluster.local", SERVICE, False),  # a suffix, not a parent domain
        (" , .LOCAL ", SERVICE, True),
        ("example.com", "https://example.com/keys", True),
        ("example.com:443", "https://example.com/keys", True),
    ],
)
def test_no_proxy_ports_ipv6_and_parent_domains(no_proxy: str, url: str, direct: bool) -> None:
    settings = ProxySettings(http="http://proxy:3128", https="http://proxy:3128", no_proxy=no_proxy)
    assert (settings.proxy_for(url) is None) is direct
