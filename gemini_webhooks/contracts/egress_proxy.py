"""Which HTTP proxy a request to a URL goes through: the standard proxy variables.

`HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` (lower case wins over upper case, as in curl
and Python's urllib) mean here what they mean to Go's net/http and every in-cluster
client: a request to an `http://` URL goes through `HTTP_PROXY`, one to an `https://`
URL through `HTTPS_PROXY` (tunnelled with CONNECT), unless its host matches `NO_PROXY`
(`*`, a host name, a domain suffix such as `.svc` or `.cluster.local`, an IP address,
each optionally with `:port`, or an address block such as `10.0.0.0/8` or `fd00::/8`, as
Go's net/http and curl ≥ 7.86 read it; `no_proxy_matches`).

The environment is read once (`ProxySettings.from_environ`), when a component loads its
configuration; deciding a URL's proxy is then a pure function of both, so a hot path
never re-reads the environment.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit


class ProxySettingsError(ValueError):
    """A proxy variable that is not a usable proxy URL."""


VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


def _network(
    entry: str, setting: str = "NO_PROXY"
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The address block an entry such as `10.0.0.0/8` names; None for any other entry."""
    if "/" not in entry:
        return None
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ProxySettingsError(
            f"{setting}: {entry!r} is not an address block (such as 10.0.0.0/8)"
        ) from None


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def no_proxy_matches(no_proxy: str, parts: SplitResult) -> bool:
    """Whether `NO_PROXY`'s list names the URL's host: `*`; a name or address, equal or
    a parent domain of the host (`cluster.local` and `.cluster.local` both match
    `a.svc.cluster.local`); with `:port`, only that port; an address block, any port of an
    address in it (a Pod's address in `10.244.0.0/16`; never a name). (Not urllib's
    function: importing urllib.request costs the receiver some 100 modules and 12 MiB, and
    it reads no ports, IPv6 or blocks.) ProxySettingsError for a block that is not one."""
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        if not entry:
            continue
        network = _network(entry)
        if network is not None:
            address = _address(host)
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        name, wanted_port = entry, None
        if entry.startswith("["):  # [IPv6]:port
            name, _, rest = entry[1:].partition("]")
            wanted_port = rest[1:] if rest.startswith(":") else None
        elif entry.count(":") == 1:
            name, wanted_port = entry.split(":")
        name = name.lstrip(".").rstrip(".")
        if wanted_port is not None and wanted_port != str(port):
            continue
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _variable(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name.lower())
    if value is None:
        value = environ.get(name.upper(), "")
    return value.strip()


def _proxy_url(name: str, raw: str) -> str | None:
    if not raw:
        return None
    url = raw if "://" in raw else f"http://{raw}"  # `host:port`, as curl reads it
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # a port that is not a number raises here
    except ValueError:
        # The message names the variable, never its value: it may hold credentials.
        raise ProxySettingsError(f"{name} is not a valid proxy URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProxySettingsError(f"{name} must be an http:// or https:// proxy URL with a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxySettingsError(f"{name} must name a proxy, not a path on it")
    return url


@dataclass(frozen=True)
class ProxySettings:
    """The proxy variables of one environment, validated. The proxy URLs stay out of the
    repr: they may hold credentials."""

    http: str | None = field(default=None, repr=False)
    https: str | None = field(default=None, repr=False)
    no_proxy: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxySettings:
        """Reads `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` (either case); ProxySettingsError
        when a proxy variable is set to something that is not a proxy URL, or `NO_PROXY`
        holds an address block that is not one."""
        return cls.parse(
            _variable(environ, "http_proxy"),
            _variable(environ, "https_proxy"),
            _variable(environ, "no_proxy"),
        )

    @classmethod
    def parse(
        cls,
        http: str,
        https: str,
        no_proxy: str,
        *,
        settings: tuple[str, str, str] = VARIABLES,
    ) -> ProxySettings:
        """The three values as the variables mean them ("" for unset); a ProxySettingsError
        names the one of `settings` (the variables, or the flags that carry them) that is
        malformed, never a proxy URL's value."""
        http_setting, https_setting, no_proxy_setting = settings
        no_proxy = no_proxy.strip()
        for entry in no_proxy.split(","):
            _network(entry.strip(), no_proxy_setting)  # a malformed block stops the start
        return cls(
            http=_proxy_url(http_setting, http.strip()),
            https=_proxy_url(https_setting, https.strip()),
            no_proxy=no_proxy,
        )

    def environment(self) -> dict[str, str]:
        """The variables that give a process these settings (`from_environ` reads them back
        equal); none for what is unset."""
        values = zip(VARIABLES, (self.http, self.https, self.no_proxy), strict=True)
        return {name: value for name, value in values if value}

    def proxy_for(self, url: str) -> str | None:
        """The proxy URL a request to `url` goes through, or None to connect directly."""
        parts = urlsplit(url)
        proxy = {"http": self.http, "https": self.https}.get(parts.scheme)
        if proxy is None or not parts.hostname:
            return None
        if self.no_proxy and no_proxy_matches(self.no_proxy, parts):
            return None
        return proxy


DIRECT = ProxySettings()
