"""The web channel: the officers' web client (web/, built into gateway/web/static/) at
``/app/``, on the same origin as the officers' API it speaks to.

Only the files the build wrote are served, by name from a fixed list read once at start
(``manifest.json``): no path from a request ever reaches the file system. Every answer
carries the page's security headers: a Content-Security-Policy that allows scripts,
styles, catalogs and API calls from this origin only, no inline script, no frames
(``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), ``nosniff`` and no referrer.
``'wasm-unsafe-eval'`` is the one relaxation: libsodium's WebAssembly module is compiled
from bytes inside its script, which browsers allow only with it (it permits compiling
WebAssembly, not ``eval`` of JavaScript). The page itself is never cached (it names the
hashed assets and their subresource-integrity digests); the assets, whose names carry
their digest, are cached for a year as immutable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from gateway.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
MANIFEST = "manifest.json"
INDEX = "index.html"
MAX_ASSET_NAME = 128
_ASSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self' 'wasm-unsafe-eval'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    "font-src 'self'",
    "connect-src 'self'",
    "manifest-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
NO_CACHE = "no-cache, no-store, must-revalidate"
IMMUTABLE = "public, max-age=31536000, immutable"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

WEB_ASSETS: web.AppKey[WebAssets] = web.AppKey("web_assets")


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    cache: str


@dataclass(frozen=True)
class WebAssets:
    """The built web client, read into memory once (a few hundred KiB)."""

    assets: dict[str, Asset]

    @classmethod
    def load(cls, directory: Path = STATIC_DIR) -> WebAssets:
        """The files the manifest names; none (every request answered ``not_found``
        with a hint to build) when the client was not built."""
        try:
            manifest = json.loads((directory / MANIFEST).read_bytes())
        except (OSError, ValueError):
            return cls({})
        assets: dict[str, Asset] = {}
        for name, immutable in dict(manifest.get("files", {})).items():
            suffix = Path(name).suffix
            if not _ASSET_NAME.fullmatch(name) or suffix not in MEDIA_TYPES:
                continue
            assets[name] = Asset((directory / name).read_bytes(), MEDIA_TYPES[suffix],
                                 IMMUTABLE if immutable else NO_CACHE)
        return cls(assets)


def _answer(asset: Asset) -> web.Response:
    response = web.Response(body=asset.body, headers=SECURITY_HEADERS)
    response.headers["Content-Type"] = asset.media_type
    response.headers["Cache-Control"] = asset.cache
    return response


def _assets(request: web.Request) -> WebAssets:
    return request.app[WEB_ASSETS]


async def get_index(request: web.Request) -> web.Response:
    asset = _assets(request).assets.get(INDEX)
    if asset is None:
        raise NotFoundError("the web client is not built here (run make)")
    return _answer(asset)


async def get_asset(request: web.Request) -> web.Response:
    name = request.match_info["asset"]
    asset = None
    if len(name) <= MAX_ASSET_NAME and _ASSET_NAME.fullmatch(name) and name != INDEX:
        asset = _assets(request).assets.get(name)
    if asset is None:
        raise NotFoundError("no such file of the web client")
    return _answer(asset)


def add_routes(app: web.Application, assets: WebAssets | None = None) -> None:
    app[WEB_ASSETS] = assets if assets is not None else WebAssets.load()
    app.router.add_get("/app/", get_index)
    app.router.add_get("/app/{asset}", get_asset)
