"""The dashboard: one page at `/` and its files under `/assets/`, served from inside the package.

The page is plain HTML, CSS and JavaScript (assets/), with Leaflet vendored from the npm registry by
`scripts/vendor-assets`: nothing is built and nothing is loaded from another host except the map tiles
(`TRACKER_MAP_TILES`). It talks only to the same API as everyone else, with the token it keeps in the
tab's session storage. Every answer here carries a strict Content-Security-Policy: no inline script or
style, no other origin but the tile server's, no framing.
"""

from __future__ import annotations

import html
import re
from functools import cache
from pathlib import Path

from aiohttp import web

from tracker_jobs.api.keys import SETTINGS
from tracker_jobs.api.openapi import STRING, Operation, Reply, describe
from tracker_jobs.api.routes import Route
from tracker_jobs.core.errors import not_found

ASSETS = Path(__file__).parent / "assets"
INDEX = ASSETS / "index.html"


def tile_source(tiles: str | None) -> str:
    """The CSP host source of the tile URL (`{s}` subdomains as a wildcard), or nothing."""
    if tiles is None:
        return ""
    scheme, _, rest = tiles.partition("://")
    return f" {scheme}://{rest.split('/', 1)[0].replace('{s}', '*')}"


@cache
def security_headers(tiles: str | None) -> dict[str, str]:
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src 'self' data: blob:{tile_source(tiles)}; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",  # revalidated (ETag) each load: an upgrade shows at once
    }


@cache
def page(tiles: str | None) -> str:
    """index.html with the settings the script reads from <body data-*> (no inline script)."""
    return INDEX.read_text().replace("{{TILES}}", html.escape(tiles or "", quote=True))


async def index(request: web.Request) -> web.Response:
    tiles = request.app[SETTINGS].map_tiles
    return web.Response(text=page(tiles), content_type="text/html", headers=security_headers(tiles))


# What an asset's name may be: folders and a file name of plain characters, no `..` (checked before the
# file system is asked anything, so a NUL or a 2 KiB name is a 404 like any other unknown file).
ASSET_NAME = re.compile(r"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}/){0,3}[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = ASSETS / name
    # Only files inside assets/, and never the page template itself.
    if not ASSET_NAME.fullmatch(name) or ".." in name or not path.is_file() or path == INDEX:
        raise not_found(f"asset {name[:80]!r}")
    return web.FileResponse(path, headers=security_headers(request.app[SETTINGS].map_tiles))


describe(
    index,
    Operation(
        "The dashboard: sign in, then watch and steer the engine",
        {200: Reply("the page", STRING, media_type="text/html")},
        auth="none",
        tag="dashboard",
    ),
)
describe(
    asset,
    Operation(
        "A file of the dashboard (script, style, image, vendored library)",
        {200: Reply("the file", STRING, media_type="application/octet-stream")},
        auth="none",
        path={"name": STRING},
        tag="dashboard",
    ),
)

ROUTES = [Route("GET", "/", index), Route("GET", "/assets/{name:.+}", asset)]
