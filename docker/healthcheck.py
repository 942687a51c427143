#!/usr/bin/env python3
"""Container health check: is the gateway answering ``GET /healthz`` as itself?

Reads the configuration named by the first argument or by ``FPG_CONFIG`` (the image's
HEALTHCHECK sets nothing else), asks ``/healthz`` on the configured host and port (the
port file when the port is 0), and exits 0 only if the answer is ``ok`` from the gateway
id of that configuration. curl is not in python:3.11-slim; this needs only the standard
library and the installed ``gateway`` package.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import urllib.request

from gateway.config import load_config
from gateway.errors import GatewayError

TIMEOUT_SECONDS = 4.0


def healthz_url(config_path: str) -> tuple[str, str, bool]:
    """The URL to ask, the gateway id to expect, and whether it is HTTPS."""
    config = load_config(config_path)
    server = config.server
    port = server.port
    if port == 0 and server.port_file is not None:
        port = int(server.port_file.read_text().strip())
    host = server.host if server.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    if ":" in host:
        host = f"[{host}]"
    tls = server.tls_cert_file is not None
    return f"{'https' if tls else 'http'}://{host}:{port}/healthz", config.gateway.id, tls


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else os.environ.get("FPG_CONFIG",
                                                         "/data/gateway/gateway.toml")
    try:
        url, gateway_id, tls = healthz_url(path)
    except (GatewayError, OSError, ValueError) as exc:
        print(f"unhealthy: {path}: {exc}")
        return 1
    context = None
    if tls:
        # Our own process, reached by its listening address: the certificate names the
        # public host instead, so only the answer is checked here, not the name.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS,  # noqa: S310 (http/https only)
                                    context=context) as response:
            answer = json.load(response)
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}")
        return 1
    if not isinstance(answer, dict) or answer.get("status") != "ok" or (
            answer.get("gateway") != gateway_id):
        print(f"unhealthy: {url} answered {answer!r}, not ok from {gateway_id}")
        return 1
    print(f"ok: {gateway_id} at {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
