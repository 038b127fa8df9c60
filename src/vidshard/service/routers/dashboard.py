"""The dashboard page at ``/``: one static HTML page, its script and its style sheet.

The page holds no data, so it needs no key; its script calls the JSON API with the key the
user gives it. Only the files named in ``STATIC_FILES`` are served: a request names a file,
never a path, so nothing else on disk can be reached.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
INDEX_FILE = "index.html"
STATIC_FILES: dict[str, str] = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page loads nothing but its own files and talks only to this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
# Revalidate each time, so a new vidshard's page is seen at once (ETag makes it cheap).
NO_CACHE = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard: devices, jobs and a submit form, refreshed every second."""
    return FileResponse(
        STATIC_DIR / INDEX_FILE,
        media_type="text/html; charset=utf-8",
        headers={**NO_CACHE, "Content-Security-Policy": CONTENT_SECURITY_POLICY},
    )


@router.get("/static/{name}")
def static_file(name: str) -> FileResponse:
    """One of the dashboard's own files, by name; 404 for any other name."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no dashboard file named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=NO_CACHE)
