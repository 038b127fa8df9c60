"""Settings of ``vidshard serve``, read once at start and passed down.

Precedence, highest first: explicit overrides (command-line flags), ``VIDSHARD_*``
environment variables, a TOML file (``--config`` or ``VIDSHARD_CONFIG``), defaults. Every
problem, wherever the value came from, is a one-line :class:`~vidshard.errors.ConfigError`.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    SettingsConfigDict,
    SettingsError,
)

from vidshard.errors import ConfigError
from vidshard.pathnames import expand_user

from .security import HostRules

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

ENV_PREFIX = "VIDSHARD_"
CONFIG_ENV = "VIDSHARD_CONFIG"
"""Names the TOML file when :func:`load_settings` is given none."""

GIB = 1 << 30
MIB = 1 << 20

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]

# Settings whose value is never echoed back in an error message.
_HIDDEN_VALUES = frozenset({"api_key", "api_keys", "database_url"})
# Path settings that a TOML file gives relative to its own directory.
_PATH_SETTINGS = ("data_dir", "output_root")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LEGACY_KEY_NAME = "api_key"
"""The name jobs submitted with ``api_key`` (an admin key) are owned by."""
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
"""The default ``stream_url_schemes``."""


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "vidshard"


def _default_input_roots() -> list[Path]:
    return [Path.cwd()]


def _split_list(value: Any) -> Any:
    """A list given as one string: JSON (``'["/a","/b"]'``) or comma-separated (``/a,/b``)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"expected a JSON list or comma-separated values ({exc})") from None
    return [item.strip() for item in text.split(",") if item.strip()]


class ApiKey(BaseModel):
    """One named key of ``api_keys``: the secret, and whether it is an admin key (sees
    and cancels every job, and is shown server paths)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: SecretStr
    admin: bool = False


class ServiceSettings(BaseSettings):
    """Everything ``vidshard serve`` can be told; build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8000, ge=1, le=65535)
    devices: str = Field("all", min_length=1)
    workers_per_device: int = Field(1, ge=1)
    executor: Literal["local", "ray"] = "local"
    """Where the pool's workers run: processes here, or Ray actors (docs/cluster.md)."""
    ray_address: str | None = Field(None, min_length=1)
    """With executor "ray": auto, host:port, or none to start a Ray here."""
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = Field(None, min_length=1)
    input_roots: Annotated[list[Path], NoDecode] = Field(default_factory=_default_input_roots)
    """Directories that path inputs may come from; empty: uploads and URLs only."""
    output_root: Path | None = None
    model_dirs: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Directories that model files (weights, or ``file.py:Class``) may come from; empty:
    built-in and plug-in models only (a model file can run code, so it must be trusted)."""
    api_key: SecretStr | None = None
    """One admin key, named ``api_key`` (kept from before ``api_keys``)."""
    api_keys: dict[str, ApiKey] = Field(default_factory=dict)
    """Named keys, ``name -> {key, admin}`` (or ``name -> key``, not an admin)."""
    public_docs: bool = False
    """With keys set, let /docs, /redoc and /openapi.json be read without a key."""
    max_upload_bytes: int = Field(2 * GIB, ge=1)
    max_request_bytes: int = Field(1 * MIB, ge=1)
    """Largest JSON request body."""
    allowed_url_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http", "https"]
    )
    url_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host names, addresses and CIDR ranges URL inputs may reach although they are
    internal (loopback, private, link-local, ..., the server's own); empty: none."""
    download_timeout_s: float = Field(600.0, gt=0)
    """A URL input's whole download, redirects included, must end within this."""
    download_min_bytes_per_s: int = Field(16384, ge=0)
    """Slowest average over any ``download_rate_window_s`` of a download; 0: no minimum."""
    download_rate_window_s: float = Field(30.0, gt=0)
    download_connect_timeout_s: float = Field(10.0, gt=0)
    download_read_timeout_s: float = Field(30.0, gt=0)
    """Longest wait for the next byte of a download."""
    job_ttl_s: int = Field(86400, ge=1)
    """How long a finished job and its output are kept."""
    max_running_jobs: int = Field(2, ge=1)
    default_model: str = Field("lanczos", min_length=1)
    default_generate_model: str | None = Field(None, min_length=1)
    """The model folder (in ``model_dirs``) a ``generate`` job uses when it names none:
    seed 002's requests name none."""
    log_level: LogLevel = "info"
    stream_url_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(STREAM_SCHEMES)
    )
    """Schemes a live stream's URL may use (a file inside input_roots needs none)."""
    stream_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Host names, addresses and CIDR ranges live streams may come from, internal or not;
    empty: every host (cameras sit on private networks)."""
    stream_allow_devices: bool = False
    """Let requests name a capture device of the server (``/dev/video0``) as a stream."""
    max_streams: int = Field(32, ge=1)
    """Live streams at once, every key's together."""
    streams_per_slot: int = Field(8, ge=1)
    """Live streams one slot hosts at most."""
    stream_events_queue: int = Field(256, ge=1)
    """Records an event subscriber may fall behind by; older ones are dropped."""
    webhook_queue: int = Field(1000, ge=1)
    """Records a stream's webhook holds while its receiver is slow or down."""
    max_recording_s: float = Field(3600.0, gt=0)
    """Longest window of a live stream ``/process_video`` records."""

    @field_validator(
        "input_roots",
        "model_dirs",
        "allowed_url_schemes",
        "url_allowed_hosts",
        "stream_url_schemes",
        "stream_allowed_hosts",
        mode="before",
    )
    @classmethod
    def _list_from_string(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("data_dir", "output_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else expand_user(value).resolve()

    @field_validator("input_roots", "model_dirs")
    @classmethod
    def _existing_dirs(cls, roots: list[Path]) -> list[Path]:
        resolved = [expand_user(root).resolve() for root in roots]
        for root in resolved:
            if not root.is_dir():
                raise ValueError(f"{root} is not a directory")
        return resolved

    @field_validator("allowed_url_schemes", "stream_url_schemes")
    @classmethod
    def _schemes(cls, schemes: list[str]) -> list[str]:
        lowered = [scheme.strip().lower() for scheme in schemes]
        bad = [scheme for scheme in lowered if not _SCHEME.fullmatch(scheme)]
        if bad:
            raise ValueError(f"not URL schemes: {', '.join(map(repr, bad))}")
        return lowered

    @field_validator("url_allowed_hosts", "stream_allowed_hosts")
    @classmethod
    def _host_rules(cls, entries: list[str], info: ValidationInfo) -> list[str]:
        name = str(info.field_name)
        try:
            HostRules.deny_internal(entries, name)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix(f"{name}: ")) from None
        return entries

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _non_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty (leave it unset to turn authentication off)")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _key_shorthand(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {n: {"key": v} if isinstance(v, str) else v for n, v in value.items()}
        return value

    @field_validator("api_keys")
    @classmethod
    def _named_keys(cls, keys: dict[str, ApiKey], info: ValidationInfo) -> dict[str, ApiKey]:
        """Names that can be shown and stored; secrets never empty, never shared."""
        seen: dict[str, str] = {}
        legacy = info.data.get("api_key")
        if legacy is not None:
            if LEGACY_KEY_NAME in keys:
                raise ValueError(f"{LEGACY_KEY_NAME!r} is the name of the api_key setting")
            seen[legacy.get_secret_value()] = "api_key"
        for name, spec in keys.items():
            if not KEY_NAME.fullmatch(name):
                raise ValueError(
                    f"key name {name[:80]!r}: expected 1 to 64 of A-Z a-z 0-9 . _ -, "
                    "starting with a letter or a digit"
                )
            secret = spec.key.get_secret_value()
            if not secret:
                raise ValueError(f"{name}: the key must not be empty")
            if secret in seen:
                raise ValueError(f"{name} and {seen[secret]} have the same key")
            seen[secret] = name
        return keys

    @property
    def db_url(self) -> str:
        """The SQLAlchemy URL of the job store: ``database_url`` or ``data_dir/jobs.db``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'jobs.db'}"

    @property
    def outputs_dir(self) -> Path:
        """Where job outputs go: ``output_root`` or ``data_dir/outputs``."""
        return self.output_root or self.data_dir / "outputs"

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded inputs are kept until their job is removed."""
        return self.data_dir / "uploads"


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServiceSettings:
    """Settings from ``overrides`` (None values ignored), then the environment, then the TOML
    file (``config_file``, else ``$VIDSHARD_CONFIG``, else none), then defaults.

    Raises :class:`ConfigError` for an unreadable file, an unknown key or a bad value.
    """
    if config_file is None and os.environ.get(CONFIG_ENV):
        config_file = Path(os.environ[CONFIG_ENV])
    values = read_config_file(config_file) if config_file is not None else {}
    try:
        # Init values beat the environment, so it is merged here, between file and flags.
        values.update(EnvSettingsSource(ServiceSettings)())
        values.update({name: value for name, value in overrides.items() if value is not None})
        return ServiceSettings(**values)
    except SettingsError as exc:
        raise ConfigError(f"invalid service settings: {exc}") from None
    except ValidationError as exc:
        raise _config_error(exc) from None


def read_config_file(path: Path) -> dict[str, Any]:
    """The service settings in a TOML file, at its top level or in a ``[serve]`` table.

    Relative paths in it are taken from the file's directory, not the working directory.
    """
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None

    serve = data.pop("serve", {})
    if not isinstance(serve, dict):
        raise ConfigError(f"config file {path}: 'serve' must be a table ([serve])")
    twice = sorted(data.keys() & serve.keys())
    if twice:
        raise ConfigError(
            f"config file {path}: {', '.join(twice)} set both at the top level and in [serve]"
        )
    values = {**data, **serve}
    unknown = sorted(values.keys() - ServiceSettings.model_fields.keys())
    if unknown:
        raise ConfigError(f"config file {path}: {_unknown_names(unknown)}")
    return _anchor_paths(values, path.parent)


def _anchor_paths(values: dict[str, Any], base: Path) -> dict[str, Any]:
    def anchored(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        given = expand_user(value)
        return given if given.is_absolute() else base / given

    for name in _PATH_SETTINGS:
        if name in values:
            values[name] = anchored(values[name])
    for name in ("input_roots", "model_dirs"):
        if name in values:
            roots = _split_list(values[name])
            if isinstance(roots, list):
                values[name] = [anchored(root) for root in roots]
    return values


def _unknown_names(names: list[str]) -> str:
    known = list(ServiceSettings.model_fields)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        parts.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return f"unknown setting{'s' if len(names) > 1 else ''} {', '.join(parts)}"


def _config_error(exc: ValidationError) -> ConfigError:
    """One line naming each bad setting and what was wrong with it."""

    def top_level_extra(err: ErrorDetails) -> bool:  # not a wrong key inside api_keys
        return err["type"] == "extra_forbidden" and len(err["loc"]) == 1

    unknown = [str(err["loc"][0]) for err in exc.errors() if top_level_extra(err)]
    problems = [_unknown_names(unknown)] if unknown else []
    problems += [_problem(err) for err in exc.errors() if not top_level_extra(err)]
    return ConfigError(f"invalid service settings: {'; '.join(problems)}")


def _problem(err: ErrorDetails) -> str:
    loc = err["loc"]
    name = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)[1:]
    message = err["msg"].removeprefix("Value error, ")
    shown = repr(err["input"])
    if err["type"] == "value_error" or not loc or loc[0] in _HIDDEN_VALUES or len(shown) > 80:
        return f"{name}: {message}"
    return f"{name}: {message} (got {shown})"
