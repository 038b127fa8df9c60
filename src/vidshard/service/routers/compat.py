"""The endpoints of the seed services, mapped onto vidshard jobs (filled in below)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
