"""Keeps tenant-supplied webhook URLs from reaching the service's own network.

A webhook URL is chosen by a tenant, so without a check it is a way to make this service send
requests to its loopback, its private network or the cloud metadata endpoint. The guard resolves
the host once, refuses the target if any address is not public, and hands back the checked
addresses so the caller connects to exactly those (a second lookup at connect time could answer
differently: DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Resolves (host, port) to IP address strings, in the order they should be tried.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

# Instance metadata services hand out cloud credentials. Refused even when private targets are
# allowed: no webhook receiver lives there, and reaching it is the classic SSRF payoff.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class SsrfRefused(Exception):
    """The target resolves to an address this service must not send to."""


class HostUnresolvable(Exception):
    """The host name did not resolve; possibly a passing DNS failure."""


async def system_resolver(host: str, port: int) -> Sequence[str]:
    """The operating system's resolver, run off the event loop by asyncio."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # dict.fromkeys keeps the resolver's preference order while dropping duplicates.
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class SsrfGuard:
    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver) -> None:
        # allow_private exists for local development and tests, whose receivers are on loopback.
        self._allow_private = allow_private
        self._resolver = resolver
        # A verdict depends on the URL alone, and a bulk send asks about one URL a thousand
        # times: parsing it each time was 6% of a BulkSend's CPU.
        self._url_verdicts: dict[str, str | None] = {}

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` must not be contacted, as a sentence naming it; None when it may be."""
        embedded = _embedded_ipv4(address)
        label = self._forbidden_kind(address if embedded is None else embedded)
        if label is None:
            return None
        if embedded is not None:
            return f"{address} leads to {embedded}, {label}"
        return f"{address} is {label}"

    def url_refusal(self, url: str) -> str | None:
        """What can be told from the URL alone, before any DNS lookup: an IP literal or a
        loopback name this guard would refuse. Lets a send be refused when it is accepted;
        names that resolve to forbidden addresses are still refused when sent."""
        if url in self._url_verdicts:
            return self._url_verdicts[url]
        if len(self._url_verdicts) >= _MAX_URL_VERDICTS:
            self._url_verdicts.clear()
        verdict = self._url_verdicts[url] = self._judge_url(url)
        return verdict

    def _judge_url(self, url: str) -> str | None:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
        literal = _ip_literal(host)
        if literal is not None:
            return self.refusal(literal)
        if not self._allow_private and (host == "localhost" or host.endswith(".localhost")):
            return f"{host} is a loopback name"
        return None

    def _forbidden_kind(self, address: IPAddress) -> str | None:
        if address in METADATA_ADDRESSES:
            return "a cloud metadata endpoint"
        if self._allow_private:
            return None
        for flag, label in (
            (address.is_loopback, "a loopback address"),
            (address.is_unspecified, "an unspecified address"),
            (address.is_link_local, "a link-local address"),
            (address.is_multicast, "a multicast address"),
            (address.is_private, "a private address"),
            (address.is_reserved, "a reserved address"),
            # is_global also catches special ranges the flags above miss, e.g. 100.64.0.0/10.
            (not address.is_global, "a non-public address"),
        ):
            if flag:
                return label
        return None

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of ``host``, each checked; raises unless all of them may be contacted.

        Refusing when any address is bad (not only the first) matters because the connection
        may fall back to a later address, and a name can mix public and private records.
        """
        literal = _ip_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self._resolver(host, port)
            except OSError as exc:
                raise HostUnresolvable(f"cannot resolve {host!r}: {exc}") from exc
            if not found:
                raise HostUnresolvable(f"{host!r} resolved to no addresses")
            addresses = [ipaddress.ip_address(a) for a in found]
        for address in addresses:
            reason = self.refusal(address)
            if reason is not None:
                via = "" if literal is not None else f"{host!r} resolves to {address}; "
                raise SsrfRefused(f"refused by the SSRF guard: {via}{reason}")
        return addresses


_MAX_URL_VERDICTS = 10_000


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries and is routed towards, if any.

    ``::ffff:127.0.0.1`` reaches loopback on a dual-stack socket; 6to4 and NAT64 addresses are
    forwarded to the IPv4 address inside them.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
