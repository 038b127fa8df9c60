"""Who is asking: API keys, the principal a key stands for, and what that principal owns.

A server with no key at all has one anonymous admin principal (everyone may do
everything, as before keys existed). With keys, every request but ``/health`` names one;
a job or an upload belongs to the key name that made it, and a non-admin key sees only
what it owns. Secrets are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .settings import LEGACY_KEY_NAME, ServiceSettings

DOCS_SESSION_S = 12 * 3600
"""How long the docs cookie (set by ``POST /docs/login``) lets a browser read the docs."""
OWNER_FILE = ".owner"
"""In an upload's folder: the key name that uploaded it (none: an anonymous upload)."""


@dataclass(frozen=True)
class Principal:
    """The one a request speaks for: a key's name (None without keys), admin or not."""

    name: str | None
    admin: bool

    def owns(self, owner: str | None) -> bool:
        """Whether this principal may see and act on a thing ``owner`` made."""
        return self.admin or (owner is not None and owner == self.name)


ANONYMOUS = Principal(name=None, admin=True)
"""Everyone, on a server without keys."""


@dataclass(frozen=True)
class _Key:
    name: str
    secret: bytes
    digest: bytes
    admin: bool


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


class KeyRing:
    """The server's keys; :meth:`identify` finds the principal of a secret."""

    def __init__(self, keys: Sequence[tuple[str, str, bool]]) -> None:
        self._keys = tuple(
            _Key(name, secret.encode(), _digest(secret.encode()), admin)
            for name, secret, admin in keys
        )
        self._by_name = {key.name: key for key in self._keys}

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> KeyRing:
        keys = [(n, k.key.get_secret_value(), k.admin) for n, k in settings.api_keys.items()]
        if settings.api_key is not None:
            keys.append((LEGACY_KEY_NAME, settings.api_key.get_secret_value(), True))
        return cls(keys)

    @property
    def enabled(self) -> bool:
        """Whether any key is set (without one, everyone is :data:`ANONYMOUS`)."""
        return bool(self._keys)

    def identify(self, given: str | None) -> Principal | None:
        """The principal of ``given``; None for a missing or unknown key.

        Every key is compared, in constant time, whichever matches: the time taken says
        nothing about which key, or how much of one, was right.
        """
        if not self._keys:
            return ANONYMOUS
        if given is None:
            return None
        digest = _digest(given.encode())
        found: _Key | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return None if found is None else Principal(found.name, found.admin)

    # --- the docs cookie ---------------------------------------------------------------

    def docs_token(self, principal: Principal, now_s: float | None = None) -> str:
        """A cookie value that lets a browser read the docs for :data:`DOCS_SESSION_S`:
        ``name:expiry:mac``, the MAC keyed by the key itself, so it holds no secret and
        stops working when that key is removed or changed."""
        if principal.name is None:
            raise ValueError("the anonymous principal needs no docs token")
        expiry_s = int((time.time() if now_s is None else now_s) + DOCS_SESSION_S)
        return f"{principal.name}:{expiry_s}:{self._mac(principal.name, expiry_s)}"

    def docs_principal(self, token: str | None, now_s: float | None = None) -> Principal | None:
        """The principal of a docs cookie; None when it is malformed, forged or expired."""
        if not token or token.count(":") != 2:
            return None
        name, expiry_text, mac = token.split(":")
        key = self._by_name.get(name)
        if key is None or not expiry_text.isdigit():
            return None
        if not hmac.compare_digest(mac.encode(), self._mac(name, int(expiry_text)).encode()):
            return None
        if int(expiry_text) < (time.time() if now_s is None else now_s):
            return None
        return Principal(key.name, key.admin)

    def _mac(self, name: str, expiry_s: int) -> str:
        message = f"vidshard-docs\0{name}\0{expiry_s}".encode()
        return hmac.new(self._by_name[name].secret, message, hashlib.sha256).hexdigest()


# --- what a principal owns -------------------------------------------------------------


def job_owner(principal: Principal) -> str | None:
    """The owner recorded on what ``principal`` makes (None: anonymous)."""
    return principal.name


def list_owner(principal: Principal) -> str | None:
    """The owner a listing is limited to; None: every job (an admin)."""
    return None if principal.admin else principal.name


def scoped_idempotency_key(principal: Principal, key: str | None) -> str | None:
    """An ``Idempotency-Key`` in the principal's own space, so that one key's header never
    finds another key's job. Anonymous keys are stored as given (as before keys)."""
    if key is None or principal.name is None:
        return key
    scoped = hashlib.sha256(f"{principal.name}\0{key}".encode()).hexdigest()
    return f"owner-sha256:{scoped}"


def write_upload_owner(folder: Path, principal: Principal) -> None:
    """Record who uploaded into ``folder`` (nothing for the anonymous principal)."""
    if principal.name is not None:
        (folder / OWNER_FILE).write_text(principal.name, encoding="utf-8")


def upload_owner(folder: Path) -> str | None:
    """The key name that uploaded into ``folder``; None when none was recorded."""
    try:
        return (folder / OWNER_FILE).read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None
