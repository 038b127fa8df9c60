"""What every router needs: the job service, the key check and what its principal sees."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ..auth import ANONYMOUS, KeyRing, Principal
from ..jobs import JobService
from ..middleware import key_in_headers
from ..redact import PathRedactor, Viewer

API_KEY_HEADER = "X-API-Key"
DOCS_COOKIE = "vidshard_docs"

# Declared as security schemes, so that /docs has an Authorize button for them.
_header_key = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="an API key of the server"
)
_bearer_key = HTTPBearer(auto_error=False, description="the same key as a bearer token")


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def keyring(request: Request) -> KeyRing:
    ring: KeyRing = request.app.state.keys
    return ring


def given_key(request: Request) -> str | None:
    """The key a request sends, as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``
    (the rule the key gate in front of the app applies too)."""
    return key_in_headers(request.headers.raw)


def require_key(
    request: Request,
    _header: Annotated[str | None, Security(_header_key)] = None,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer_key)] = None,
) -> Principal:
    """The principal of the request's key; 401 without a key the server knows (every
    request is the anonymous admin on a server without keys)."""
    principal = keyring(request).identify(given_key(request))
    if principal is None:
        raise HTTPException(
            status_code=401,
            detail=f"missing or wrong API key (send it in the {API_KEY_HEADER} header)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal  # read by the error handler
    return principal


def get_viewer(request: Request, principal: Annotated[Principal, Depends(require_key)]) -> Viewer:
    redactor: PathRedactor = request.app.state.redactor
    return Viewer(principal, redactor)


def request_viewer(request: Request) -> Viewer:
    """What the error answer of any request may show: a request whose key was not (yet)
    checked is shown no server path, unless the server has no keys."""
    principal = getattr(request.state, "principal", None)
    if principal is None:
        principal = ANONYMOUS if not keyring(request).enabled else Principal(None, admin=False)
    redactor: PathRedactor = request.app.state.redactor
    return Viewer(principal, redactor)


def may_read_docs(request: Request) -> bool:
    """Anyone may read the docs when there are no keys or ``public_docs`` is on; else the
    holder of a key, sent as a header or as the docs cookie (``POST /docs/login``)."""
    ring = keyring(request)
    if not ring.enabled or request.app.state.settings.public_docs:
        return True
    principal = ring.identify(given_key(request)) or ring.docs_principal(
        request.cookies.get(DOCS_COOKIE)
    )
    return principal is not None


Service = Annotated[JobService, Depends(get_service)]
Viewing = Annotated[Viewer, Depends(get_viewer)]
