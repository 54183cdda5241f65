"""The web page at `/` and its static assets, served from `service/static/` with a strict CSP."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Everything the page needs comes from this origin; images shown are the user's own (blob: URLs).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self' blob: data:; "
    "connect-src 'self'; "
    "font-src 'self'; "
    "base-uri 'none'; "
    "form-action 'self'; "
    "frame-ancestors 'none'"
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _asset(name: str) -> FileResponse:
    # Only plain file names of known types inside STATIC_DIR: no sub-paths, no traversal.
    path = STATIC_DIR / name
    media_type = MEDIA_TYPES.get(path.suffix)
    if "/" in name or "\\" in name or name.startswith(".") or media_type is None or not path.is_file():
        raise HTTPException(status_code=404, detail="No such file on this page.")
    return FileResponse(path, media_type=media_type, headers=SECURITY_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"])
def index() -> FileResponse:
    """The web page: classify an image, compare the models."""
    return _asset("index.html")


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
def static_asset(name: str) -> FileResponse:
    return _asset(name)
