"""What a stream request may ask for, checked before anything connects.

**Sources.** A network URL needs one of the ``stream_url_schemes`` and, when
``stream_allowed_hosts`` lists hosts, a host among them (every address it resolves to
now; empty: every host, since cameras sit on private networks). A file (a path, or
``file://``) must lie inside the input roots, as a path input does. A capture device of
the server (``/dev/video0``, ``v4l2://``) only with ``stream_allow_devices``. The host
rules are checked when a stream is added and again when the server places it after a
restart; FFmpeg looks the host up itself when it connects.

**Webhooks** are requests the server makes: ``http`` or ``https`` only, and the URL
inputs' host rules (internal addresses refused unless ``url_allowed_hosts`` allows them),
checked here and again before each POST.

**Shown URLs** never carry credentials: the user info (``user:password@``) and the values
of query parameters that look like secrets (``password=``, ``token=``, ...) are replaced
by ``***`` wherever a stream's URL or a reason is shown.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from vidshard.detection.pipeline import DetectRecipe
from vidshard.errors import InputError
from vidshard.streams.options import StreamOptions, stream_recipe
from vidshard.streams.sources import SourceKind, parse_source, redact_url
from vidshard.tasks.options import options_from_request

from .. import security
from ..inputs import ServedModels
from ..security import AccessDenied, HostRules
from ..settings import ServiceSettings

WEBHOOK_SCHEMES = ("http", "https")
HIDDEN = "***"
_SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|credential", re.IGNORECASE)
_MIN_SECRET = 3  # shorter secrets are not searched for in reasons (they would hit words)


@dataclass(frozen=True)
class CheckedSource:
    """A stream's source once it passed the checks."""

    url: str  # what the worker opens: a file's real path, or the URL as given
    kind: SourceKind
    shown: str  # without credentials


def hide_credentials(url: str) -> str:
    """``url`` with its user info and secret-looking query values replaced by ``***``."""
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("://", 1)[0] + "://" + HIDDEN
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{HIDDEN}@{netloc.rsplit('@', 1)[1]}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _value in pairs):
            hidden = [(n, HIDDEN if _SECRET_PARAM.search(n) else v) for n, v in pairs]
            query = urlencode(hidden, safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _secrets(url: str) -> list[str]:
    """The parts of ``url`` that must not be shown: its user info and secret values."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url.split("://", 1)[1]]
    found = []
    if "@" in parts.netloc:
        found.append(parts.netloc.rsplit("@", 1)[0])
    if parts.password:
        found.append(parts.password)
    if parts.username:
        found.append(parts.username)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(name):
            found.append(value)
    return [secret for secret in found if len(secret) >= _MIN_SECRET]


def scrub(text: str, url: str) -> str:
    """``text`` (a reason, a log line) with ``url``'s credentials hidden."""
    if not text:
        return text
    text = text.replace(url, hide_credentials(url))
    text = text.replace(redact_url(url), hide_credentials(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, HIDDEN)
    return text


class StreamChecks:
    """The checks of one service's settings."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.models = ServedModels(settings)
        self.hosts = HostRules.only(settings.stream_allowed_hosts, "stream_allowed_hosts")
        self.webhook_hosts = HostRules.deny_internal(
            settings.url_allowed_hosts, "url_allowed_hosts"
        )

    def source(self, url: str, field: str = "url") -> CheckedSource:
        """``url`` as a source this server may open; AccessDenied (403) for one it does
        not allow, InputError (422) for one that cannot work."""
        try:
            source = parse_source(url)
        except InputError as exc:
            raise InputError(f"{field}: {scrub(str(exc), url)}") from None
        shown = hide_credentials(url)
        if source.kind == "file":
            real, _identity = security.check_input_file(source.target, self.settings.input_roots)
            return CheckedSource(str(real), "file", str(real))
        if source.kind == "device":
            if not self.settings.stream_allow_devices:
                raise AccessDenied(
                    f"{field}: {shown!r} is a capture device of the server, which takes none "
                    "unless its stream_allow_devices setting is on"
                )
            return CheckedSource(url, "device", shown)
        allowed = self.settings.stream_url_schemes
        if source.scheme not in allowed:
            raise AccessDenied(
                f"{field}: URL scheme {source.scheme!r} is not allowed for streams; allowed: "
                f"{', '.join(allowed) or 'none'} (stream_url_schemes), or a file inside the "
                "input roots"
            )
        if not self.hosts.is_open:
            host = security.url_host(url)
            endpoints = security.resolve_within(
                host, urlsplit(url).port or 0, security.SUBMIT_RESOLVE_TIMEOUT_S
            )
            try:
                self.hosts.check(host, [endpoint.address for endpoint in endpoints])
            except AccessDenied as exc:
                raise AccessDenied(f"{field}: {exc}") from None
        return CheckedSource(url, "network", shown)

    def options(self, params: Mapping[str, Any], model: str | None = None) -> StreamOptions:
        """The stream's options from a request's ``params`` (and its top-level ``model``)."""
        values = dict(params)
        if model is not None:
            given = values.get("model")
            if given is not None and given != model:
                raise InputError(
                    f"model: given twice, {model!r} and params.model {given!r}; give it once"
                )
            values["model"] = model
        if values.get("model") is None:
            raise InputError(
                "model: required (a model in the server's model_dirs, such as yolo11n.pt or "
                "detector.py:Class, or a YOLO config such as yolo11n.yaml)"
            )
        options = options_from_request(StreamOptions, values, self.settings)
        if options.webhook_url is not None:
            self.webhook(options.webhook_url)
        return options

    def recipe(self, options: StreamOptions) -> DetectRecipe:
        """The detector a stream's worker builds, its files checked now."""
        try:
            return stream_recipe(options, self.models)
        except (OSError, ValueError) as exc:  # a name the file system refuses
            reason = getattr(exc, "strerror", None) or str(exc)
            raise InputError(
                f"params.model: not usable ({reason}): {options.model[:80]!r}"
            ) from None

    def webhook(self, url: str) -> str:
        """A webhook URL the server may POST to."""
        try:
            return security.check_url(url, WEBHOOK_SCHEMES, self.webhook_hosts)
        except InputError as exc:
            raise type(exc)(f"params.webhook_url: {scrub(str(exc), url)}") from None
