"""Where the API is reached, and the public URL its links and QR codes use when none is set.

``AGRITRACE_PUBLIC_URL`` names the address buyers reach (a domain behind a proxy, say). When the
environment leaves it unset, the commands that serve the API (``demo``, ``api``, ``serve``) use
the address they bind instead, so that the pages, QR codes and bundle URLs they hand out work at
the ``--port`` given rather than at the setting's default port.
"""

from __future__ import annotations

import ipaddress

from tracecore.settings import Settings

__all__ = ["local_url", "serving_settings"]


def local_url(host: str, port: int) -> str:
    """``http://host:port`` as a client on this machine reaches a server bound to ``host``.

    A wildcard bind address (``0.0.0.0``, ``::``) is no address to connect to: it becomes the
    loopback address of its family. An IPv6 literal goes in brackets (RFC 3986 §3.2.2).
    """
    name = host.strip("[]")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return f"http://{name or '127.0.0.1'}:{port}"  # a host name, or "" (every IPv4 address)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def serving_settings(settings: Settings, host: str, port: int) -> Settings:
    """``settings`` with ``public_url`` following the bound ``host:port`` unless configured.

    A ``public_url`` set in the environment (non-empty) is kept as it is: behind a proxy or a
    domain name, only the operator knows the address buyers reach.
    """
    if "public_url" in settings.model_fields_set and settings.public_url:
        return settings
    return settings.model_copy(update={"public_url": local_url(host, port)})
