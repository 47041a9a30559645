"""Who is on the other end: client IP and geo, trusting proxy headers only when configured."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

import iptocc

from vgen_app.config import get_settings
from vgen_app.services.accounts import ClientInfo


def _header(headers: Mapping[str, str], name: str) -> str | None:
    name = name.lower()
    for key, value in headers.items():
        if key.lower().replace("_", "-") == name:
            return value
    return None


def client_ip(headers: Mapping[str, str], peer_ip: str | None) -> str | None:
    """The socket peer, or the address the N-th trusted proxy saw (X-Forwarded-For from the right)."""
    hops = get_settings().trusted_proxy_hops
    if hops > 0:
        forwarded = _header(headers, "x-forwarded-for")
        if forwarded:
            chain = [part.strip() for part in forwarded.split(",") if part.strip()]
            if chain:
                return chain[-hops] if len(chain) >= hops else chain[0]
    return peer_ip or None


def geo(headers: Mapping[str, str], ip: str | None = None) -> str | None:
    """Where the client is: Cloudflare's country (and city, if sent) from a trusted proxy, else an
    offline IP→country lookup (the `iptocc` package ships its data), else None."""
    if get_settings().trusted_proxy_hops > 0:
        country = _header(headers, "cf-ipcountry")
        if country and country.upper() not in {"XX", "T1"}:
            city = _header(headers, "cf-ipcity")
            country = country.upper()[:8]
            return f"{country}/{city[:64]}" if city else country
    return lookup_country(ip)


def lookup_country(ip: str | None) -> str | None:
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if address.is_private or address.is_loopback or address.is_reserved or address.is_link_local:
        return None
    try:
        return iptocc.country_code(str(address))
    except Exception:  # noqa: BLE001 - a lookup failure is simply "unknown"
        return None


def from_request(headers: Mapping[str, str], peer_ip: str | None) -> ClientInfo:
    ua = _header(headers, "user-agent")
    ip = client_ip(headers, peer_ip)
    return ClientInfo(ip=ip, user_agent=ua[:512] if ua else None, geo=geo(headers, ip))
