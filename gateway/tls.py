"""TLS contexts of the gateway's listeners (the officers' and partners', the metrics')."""

from __future__ import annotations

import ssl
from pathlib import Path


def server_tls(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    """A server's TLS context, TLS 1.2 at least, from a PEM chain and key (None: none)."""
    if cert is None or key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
