from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize(
    ("no_proxy", "url", "direct"),
    [
        ("10.244.0.0/16", "http://10.244.3.7:8081/readyz", True),  # a Pod's address
        ("10.244.0.0/16", "http://10.245.0.1:8081/", False),
        ("10.244.7.9/16", "http://10.244.3.7:8081/", True),  # host bits ignored, as Go does
        ("10.0.0.0/8", SERVICE, False),  # a block never matches a name
        ("fd00::/8", "http://[fd00::7]:9090/", True),
        ("fd00::/8", "http://[fe80::1]:9090/", False),
        ("0.0.0.0/0", "http://[fd00::7]:9090/", False),  # an IPv4 block holds no IPv6 address
        ("localhost, 10.96.0.0/12 ,.svc", "http://10.96.0.10:53/", True),
    ],
)
def test_no_proxy_address_blocks(no_proxy: str, url: str, direct: bool) -> None:
    settings = ProxySettings.from_environ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": no_proxy})
    assert (settings.proxy_for(url) is None) is direct


@given(
    address=st.integers(min_value=0, max_value=2**32 - 1),
    network=st.integers(min_value=0, max_value=2**32 - 1),
    prefix=st.integers(min_value=0, max_value=32),
)
def test_an_ipv4_block_matches_exactly_the_addresses_sharing_its_prefix(
    address: int, network: int, prefix: int
) -> None:
    def dotted(n: int) -> str:
        return ".".join(str((n >> shift) & 255) for shift in (24, 16, 8, 0))

    settings = ProxySettings(http="http://proxy:3128", no_proxy=f"{dotted(network)}/{prefix}")
    shift = 32 - prefix
    inside = address >> shift == network >> shift
    assert (settings.proxy_for(f"http://{dotted(address)}:80/") is None) is inside


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "10.0.0.300/8", "example.com/8", "fd00::/129"])
def test_a_malformed_address_block_stops_the_start_naming_it(entry: str) -> None:
    with pytest.raises(ProxySettingsError, match=r"NO_PROXY: .* is not an address block"):
        ProxySettings.from_environ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": f"a,{entry}"})


def test_the_settings_environment_reads_back_equal() -> None:
    settings = ProxySettings.from_environ(
        {"HTTPS_PROXY": "proxy:3128", "no_proxy": ".svc,10.244.0.0/16"}
    )
    assert settings.environment() == {
        "HTTPS_PROXY": "http://proxy:3128",
        "NO_PROXY": ".svc,10.244.0.0/16",
    }
    assert ProxySettings.from_environ(settings.environment()) == settings
    assert ProxySettings().environment() == {}


def test_errors_name_the_setting_that_carried_the_value() -> None:
    flags = ("--http", "--https", "--no")
    with pytest.raises(ProxySettingsError, match=r"^--https is not") as error:
        ProxySettings.parse("", "http://user:s3cret@proxy:port", "", settings=flags)
    assert "s3cret" not in str(error.value)
    with pytest.raises(ProxySettingsError, match=r"^--no: '10\.0\.0\.0/99'"):
        ProxySettings.parse("", "", ".svc,10.0.0.0/99", settings=flags)


def test_the_repr_leaves_the_proxy_urls_and_their_credentials_out() -> None:
    settings = ProxySettings.from_environ({"HTTPS_PROXY": "http://user:s3cret@proxy:3128"})
    assert "s3cret" not in repr(settings)
