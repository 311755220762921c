"""Which addresses are private: the one definition the whole kit uses.

Python's :attr:`ipaddress.IPv4Address.is_private` follows the IANA special-purpose registry,
which also lists the RFC 5737 documentation ranges (192.0.2.0/24, 198.51.100.0/24,
203.0.113.0/24) — the very ranges the labs use as their "public Internet".  A NAT lesson
needs the narrower notion a home router has: RFC 1918's three private blocks.  RFC 6598's
shared address space (100.64.0.0/10, carrier-grade NAT) is private to an ISP, not to a
home: it is not counted.
"""
from __future__ import annotations

import ipaddress

#: RFC 1918 §3: the address blocks reserved for private internets.
RFC1918 = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def parse_ipv4(text: object) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``text`` holds, or None (a host name, an empty cell, garbage)."""
    try:
        return ipaddress.IPv4Address(str(text).strip())
    except ValueError:
        return None


def is_rfc1918(address: object) -> bool:
    """True for an address of RFC 1918's private blocks (what a box's LAN uses)."""
    parsed = parse_ipv4(address)
    return parsed is not None and any(parsed in block for block in RFC1918)


def is_host_name(text: str | None) -> bool:
    """True when ``text`` is a name to resolve rather than an IPv4 address."""
    return bool(text) and parse_ipv4(text) is None
