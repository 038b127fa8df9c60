"""What every router needs: the job service, and the API key check."""

from __future__ import annotations

from fastapi import HTTPException, Request

from ..jobs import JobService
from ..security import api_key_matches
from ..settings import ServiceSettings

API_KEY_HEADER = "X-API-Key"


def get_service(request: Request) -> JobService:
    service: JobService = request.app.state.service
    return service


def require_key(request: Request) -> None:
    """The API key, as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``, when one is set."""
    settings: ServiceSettings = request.app.state.settings
    if settings.api_key is None:
        return
    given = request.headers.get(API_KEY_HEADER)
    auth = request.headers.get("Authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not api_key_matches(given, settings.api_key.get_secret_value()):
        raise HTTPException(
            status_code=401,
            detail=f"missing or wrong API key (send it in the {API_KEY_HEADER} header)",
            headers={"WWW-Authenticate": "Bearer"},
        )
