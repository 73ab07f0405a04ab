"""``memstore serve``: a JSON API and a web page over one memory (FastAPI; the page ships here, no CDN).

>>> from memstore.server import create_app, is_loopback
>>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
(True, True, False)
"""

from __future__ import annotations

import ipaddress

from .app import create_app


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["create_app", "is_loopback"]
