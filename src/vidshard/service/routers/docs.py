"""The API reference: ``/openapi.json``, Swagger UI at ``/docs`` and ReDoc at ``/redoc``.

Their scripts and style sheets come from the installed ``fastapi-offline`` package (a
dependency of the ``serve`` extra), so the pages work with no network. With keys set
(and ``public_docs`` off) they need a key: sent as a header, or, for a browser that loads
the page itself, as the ``vidshard_docs`` cookie that ``POST /docs/login`` sets once it
was given a key (the form ``/docs`` shows, or the dashboard). The cookie holds no key,
only a MAC made with it, and opens the docs alone: the API never reads it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from ..auth import DOCS_SESSION_S
from .deps import API_KEY_HEADER, DOCS_COOKIE, given_key, keyring, may_read_docs

ASSET_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
}
PAGES = ("/docs", "/redoc")
# Swagger UI and ReDoc start from an inline script; all else is this server's own.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; font-src 'self' data:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
LOGIN_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": True}

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    if not may_read_docs(request):
        raise HTTPException(
            status_code=401,
            detail=f"missing or wrong API key (send it in the {API_KEY_HEADER} header)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    schema: dict[str, Any] = request.app.openapi()
    return JSONResponse(schema)


@router.get("/docs")
def swagger(request: Request) -> Response:
    """Swagger UI, or the key form when the docs need a key."""
    if not may_read_docs(request):
        return _login_page(request, "/docs")
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}/openapi.json",
        title="vidshard API",
        swagger_js_url=f"{root}/docs/assets/swagger-ui-bundle.js",
        swagger_css_url=f"{root}/docs/assets/swagger-ui.css",
        swagger_favicon_url=f"{root}/static/favicon.svg",
        swagger_ui_parameters=SWAGGER_PARAMETERS,
    )
    page.headers.update(_page_headers(DOCS_POLICY))
    return page


@router.get("/redoc")
def redoc(request: Request) -> Response:
    """ReDoc, or the key form when the docs need a key."""
    if not may_read_docs(request):
        return _login_page(request, "/redoc")
    root = _root(request)
    page = get_redoc_html(
        openapi_url=f"{root}/openapi.json",
        title="vidshard API",
        redoc_js_url=f"{root}/docs/assets/redoc.standalone.js",
        redoc_favicon_url=f"{root}/static/favicon.svg",
        with_google_fonts=False,
    )
    page.headers.update(_page_headers(DOCS_POLICY))
    return page


@router.get("/docs/assets/{name}")
def asset(name: str) -> FileResponse:
    """A script or style sheet of the docs pages (public: they hold no data)."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no docs asset named {name!r}")
    return FileResponse(
        ASSET_DIR / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.post("/docs/login")
async def login(request: Request) -> Response:
    """Take a key (the form's ``api_key`` field, or the key header) and set the docs
    cookie. A form is sent on to its page (303); a script's call gets 204."""
    async with request.form() as form:
        typed = form.get("api_key")
        target = form.get("next")
    from_form = isinstance(typed, str)
    page = target if isinstance(target, str) and target in PAGES else "/docs"
    ring = keyring(request)
    if not ring.enabled:  # nothing to log in to: the docs are open
        return RedirectResponse(f"{_root(request)}{page}", status_code=303)
    principal = ring.identify(typed.strip() if isinstance(typed, str) else given_key(request))
    if principal is None:
        if from_form:
            return _login_page(request, page, wrong=True)
        raise HTTPException(status_code=401, detail="missing or wrong API key")
    response: Response = (
        RedirectResponse(f"{_root(request)}{page}", status_code=303)
        if from_form
        else Response(status_code=204)
    )
    response.set_cookie(
        DOCS_COOKIE,
        ring.docs_token(principal),
        max_age=DOCS_SESSION_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/docs/logout", status_code=204)
def logout() -> Response:
    """Forget the docs cookie (the dashboard's "Forget key" calls it)."""
    response = Response(status_code=204)
    response.delete_cookie(DOCS_COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _root(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


def _page_headers(policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _login_page(request: Request, page: str, *, wrong: bool = False) -> HTMLResponse:
    """401 with a form that posts a key to /docs/login (no script, no key in a URL)."""
    root = html.escape(_root(request))
    message = (
        "The server did not accept that key. Enter the right one."
        if wrong
        else "The API reference of this server needs an API key."
    )
    body = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>vidshard API: key needed</title>
  <link rel="icon" href="{root}/static/favicon.svg" type="image/svg+xml">
  <link rel="stylesheet" href="{root}/static/dashboard.css">
</head>
<body>
  <main>
    <section class="panel auth">
      <form id="docs-login" method="post" action="{root}/docs/login" autocomplete="off">
        <p id="key-message">{html.escape(message)}</p>
        <input type="hidden" name="next" value="{html.escape(page)}">
        <label for="api-key">API key</label>
        <input id="api-key" name="api_key" type="password" required spellcheck="false">
        <button type="submit">Open the docs</button>
      </form>
    </section>
  </main>
</body>
</html>
"""
    return HTMLResponse(
        body,
        status_code=401,
        headers={**_page_headers(LOGIN_POLICY), "WWW-Authenticate": "Bearer"},
    )
