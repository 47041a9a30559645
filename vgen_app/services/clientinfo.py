"""Who is on the other end: client IP and geo, trusting proxy headers only when configured."""

from __future__ import annotations

from collections.abc import Mapping

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


def geo(headers: Mapping[str, str]) -> str | None:
    """The country Cloudflare saw, only when a trusted proxy stands in front (else forgeable)."""
    if get_settings().trusted_proxy_hops > 0:
        country = _header(headers, "cf-ipcountry")
        if country and country.upper() not in {"XX", "T1"}:
            return country.upper()[:8]
    return None


def from_request(headers: Mapping[str, str], peer_ip: str | None) -> ClientInfo:
    ua = _header(headers, "user-agent")
    return ClientInfo(
        ip=client_ip(headers, peer_ip), user_agent=ua[:512] if ua else None, geo=geo(headers)
    )
