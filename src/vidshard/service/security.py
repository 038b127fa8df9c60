"""Checks on what a client sends: input paths, file names, URLs and the API key.

Each check raises a typed error that the HTTP layer maps to a status:
:class:`AccessDenied` (403) for something not allowed, :class:`~vidshard.errors.InputError`
(422) for something malformed.
"""

from __future__ import annotations

import contextlib
import errno
import hmac
import ipaddress
import os
import re
import socket
import stat
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import urlsplit

import psutil

from vidshard.errors import ConfigError, InputError
from vidshard.media.source import FileIdentity, identified_source

_JOB_ID = re.compile(r"[0-9a-f]{32}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_MAX_FILENAME = 120
_MAX_SUFFIX = 16


class AccessDenied(InputError):
    """The request is well formed but asks for something this service does not allow."""


def is_within(path: Path, root: Path) -> bool:
    """Whether ``path`` is ``root`` or below it, by name only: resolve both first."""
    return path == root or root in path.parents


def resolve_input_path(raw: str, roots: Sequence[Path]) -> Path:
    """The real path of an input file a client named, which must lie inside one of
    ``roots`` once symlinks are followed. A relative path is taken from the first root.

    Whether a path outside the roots exists is never revealed.
    """
    if not raw:
        raise InputError("input path is empty")
    if "\0" in raw:
        raise InputError("input path contains a NUL byte")
    if not roots:
        raise AccessDenied("path inputs are disabled; upload the file instead")
    given = Path(raw)
    if ".." in given.parts:
        raise AccessDenied(f"input path must not contain '..': {raw}")
    real = Path(os.path.realpath(roots[0] / given))  # an absolute ``given`` replaces the root
    if not any(is_within(real, Path(os.path.realpath(root))) for root in roots):
        raise AccessDenied(f"input path is outside the allowed input directories: {raw}")
    found = stat_path(real, "input path", raw)
    if found is None:
        raise InputError(f"input file not found: {raw}")
    if not stat.S_ISREG(found.st_mode):
        raise InputError(f"input path is not a regular file: {raw}")
    return real


def check_input_file(raw: str, roots: Sequence[Path]) -> tuple[Path, FileIdentity]:
    """:func:`resolve_input_path`, and the identity of the file found there.

    The file is opened and the open file's own path checked against ``roots`` again, so
    a link swapped in between the two checks is caught; later opens of the job compare
    the identity (:mod:`vidshard.media.source`) and never follow a swapped path.
    """
    real = resolve_input_path(raw, roots)
    with identified_source(real) as (name, identity):
        opened = Path(os.path.realpath(name))
        if not any(is_within(opened, Path(os.path.realpath(root))) for root in roots):
            raise AccessDenied(f"input path is outside the allowed input directories: {raw}")
    return real, identity


def stat_path(path: Path, field: str, raw: str) -> os.stat_result | None:
    """``os.stat(path)``, or None when nothing is there. A name the system refuses (a
    component over 255 bytes, a path over 4096, no permission) is the client's mistake:
    :class:`InputError` naming ``field``, never an OSError."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            reason = "too long (a name over 255 bytes or a path over 4096)"
        else:
            reason = f"not usable ({exc.strerror or type(exc).__name__})"
        raise InputError(f"{field} is {reason}: {_shown(raw)}") from None


def _shown(raw: str, limit: int = 80) -> str:
    """``raw`` for a message, cut to ``limit`` characters with its length."""
    if len(raw) <= limit:
        return repr(raw)
    return f"{raw[:limit]!r}... ({len(raw)} characters)"


def output_dir_for(job_id: str, output_root: Path) -> Path:
    """The directory of one job's outputs: ``output_root/job_id``."""
    if not _JOB_ID.fullmatch(job_id):
        raise InputError(f"invalid job id {job_id!r}: expected 32 lowercase hex digits")
    return output_root / job_id


def safe_filename(name: str, default: str) -> str:
    """A client's file name made safe to store: its last component, only ``[A-Za-z0-9._-]``,
    no leading dot, at most 120 characters (keeping a short extension); else ``default``."""
    base = PurePath(name.replace("\\", "/")).name
    cleaned = _UNSAFE_FILENAME_CHARS.sub("", base).lstrip(".")
    if cleaned and "." not in cleaned and PurePath(base).suffix:  # only the extension is left
        cleaned = f"{PurePath(default).stem}.{cleaned}"
    if len(cleaned) > _MAX_FILENAME:
        suffix = PurePath(cleaned).suffix
        if len(suffix) > _MAX_SUFFIX:
            suffix = ""
        cleaned = cleaned[: _MAX_FILENAME - len(suffix)] + suffix
    return cleaned or default


def check_output_name(name: str, suffixes: Sequence[str]) -> str:
    """A client's ``output_name`` as the file name it will have, refused now (422) rather
    than at run time: a plain name (no folder, not hidden), with a stem and one of
    ``suffixes``, and still that after :func:`safe_filename` has cleaned it."""
    shown = _shown(name)
    if "\0" in name or "/" in name or "\\" in name:
        raise InputError(f"output_name: expected a plain file name, got {shown}")
    if name.startswith("."):
        raise InputError(f"output_name: expected a name that does not start with '.', got {shown}")
    suffix = PurePath(name).suffix.lower()
    if suffix not in suffixes:
        raise InputError(f"output_name: expected a {', '.join(suffixes)} file name, got {shown}")
    cleaned = safe_filename(name, "")
    if not _UNSAFE_FILENAME_CHARS.sub("", PurePath(name).stem).strip("."):
        raise InputError(
            f"output_name: expected ASCII letters or digits before {suffix}, got {shown}"
        )
    return cleaned


def check_url(url: str, allowed_schemes: Sequence[str], hosts: HostRules | None = None) -> str:
    """``url`` itself, once it is an absolute URL with a host and an allowed scheme; with
    ``hosts``, once every address its host resolves to now passes those rules."""
    if not url:
        raise InputError("URL is empty")
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        raise InputError(f"URL contains whitespace or control characters: {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # parsed lazily: raises for a bad port
    except ValueError as exc:
        raise InputError(f"malformed URL {url!r}: {exc}") from None
    if not parts.scheme:
        raise InputError(f"URL has no scheme (expected e.g. https://): {url!r}")
    scheme = parts.scheme.lower()
    allowed = [allowed_scheme.lower() for allowed_scheme in allowed_schemes]
    if scheme not in allowed:
        allowed_text = ", ".join(allowed) if allowed else "none (URL inputs are disabled)"
        raise AccessDenied(f"URL scheme {scheme!r} is not allowed; allowed: {allowed_text}")
    if not parts.hostname:
        raise InputError(f"URL has no host: {url!r}")
    if hosts is not None:
        host = url_host(url)
        endpoints = resolve_within(host, port or 0, SUBMIT_RESOLVE_TIMEOUT_S)
        hosts.check(host, [endpoint.address for endpoint in endpoints])
    return url


SUBMIT_RESOLVE_TIMEOUT_S = 10.0
"""How long a submit waits for the URL's host to resolve: a slow resolver must not hold
a request thread (the download looks the host up again, with its own deadline)."""


def resolve_within(host: str, port: int, timeout_s: float) -> list[Endpoint]:
    """:func:`resolve`, waited for at most ``timeout_s`` (the look-up itself cannot be
    interrupted: it ends in its own daemon thread)."""
    outcome: list[list[Endpoint] | BaseException] = []

    def look_up() -> None:
        try:
            outcome.append(resolve(host, port))
        except BaseException as exc:  # handed to the waiting thread
            outcome.append(exc)

    worker = threading.Thread(target=look_up, name=f"resolve-{host[:32]}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not outcome:
        raise InputError(f"URL host {host!r} did not resolve within {timeout_s:g} s")
    found = outcome[0]
    if isinstance(found, BaseException):
        raise found
    return found


# --- host rules: where the server itself may connect -------------------------------------

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT (RFC 6598)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # an IPv4 address behind a NAT64 gateway
_HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?")


@dataclass(frozen=True)
class Endpoint:
    """One address a host resolved to, as ``socket.connect`` takes it."""

    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]
    address: IPAddress


def url_host(url: str) -> str:
    """The host of a URL as the resolver and the Host header take it: lower case, IDNA."""
    host = urlsplit(url).hostname or ""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InputError(f"URL host is not a valid host name: {host!r}") from None


def resolve(host: str, port: int) -> list[Endpoint]:
    """Every address ``host`` resolves to. The C resolver reads a literal address in all
    its spellings (``2130706433``, ``0x7f.1``, ``127.1``, ``::ffff:127.0.0.1``), so what
    comes back is the address a connection would reach, whatever the URL wrote."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"URL host {host!r} cannot be resolved: {reason}") from None
    endpoints: list[Endpoint] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        endpoint = Endpoint(family, tuple(sockaddr), address)
        if endpoint not in endpoints:
            endpoints.append(endpoint)
    if not endpoints:
        raise InputError(f"URL host {host!r} has no IP address")
    return endpoints


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped ``::ffff:a.b.c.d``, compatible
    ``::a.b.c.d``, 6to4, NAT64), else ``address`` itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    value = int(address)
    if address in _NAT64 or 1 < value < 1 << 32:  # not "::" or "::1"
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return address


def internal_kind(address: IPAddress) -> str | None:
    """What makes ``address`` internal (loopback, private, ...), or None for a public one."""
    ip = unwrap(address)
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _SHARED, "a shared (carrier-grade NAT) address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    return next((kind for hit, kind in checks if hit), None)


def own_addresses() -> frozenset[IPAddress]:
    """The addresses of this machine's interfaces: a URL to one of them reaches the
    server's own services, whatever kind of address it is."""
    found: set[IPAddress] = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(ValueError):
                    found.add(unwrap(ipaddress.ip_address(entry.address.split("%", 1)[0])))
    return frozenset(found)


@dataclass(frozen=True)
class HostRules:
    """Which hosts a connection that the server makes may reach.

    With ``refuse_internal`` (URL inputs), a host is refused when any address it resolves
    to is internal (:func:`internal_kind`) or one of the server's own, unless its name is
    in ``names`` or that address lies in one of ``networks``. Without it every host is
    open (live camera sources, which sit on private networks by nature), unless
    ``only_listed``: then only the hosts ``names`` and ``networks`` give (:meth:`only`).
    """

    refuse_internal: bool = True
    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    setting: str = "url_allowed_hosts"
    """The operator setting that allows more, named when a host is refused."""
    only_listed: bool = False

    @classmethod
    def deny_internal(cls, allowed: Sequence[str], setting: str) -> HostRules:
        """Internal addresses refused but for ``allowed``: host names (exact, any case),
        addresses and CIDR ranges, e.g. ``["media.internal", "127.0.0.1", "10.0.0.0/8"]``.
        :class:`~vidshard.errors.ConfigError` for an entry that is none of those."""
        names, networks = _host_entries(allowed, setting)
        return cls(True, names, networks, setting)

    @classmethod
    def only(cls, allowed: Sequence[str], setting: str) -> HostRules:
        """Only the hosts ``allowed`` names (host names, addresses, CIDR ranges, as in
        :meth:`deny_internal`), internal or not; every host when it is empty."""
        if not allowed:
            return cls.open_to_all()
        names, networks = _host_entries(allowed, setting)
        return cls(False, names, networks, setting, only_listed=True)

    @classmethod
    def open_to_all(cls) -> HostRules:
        """Every host allowed."""
        return cls(refuse_internal=False, setting="")

    @property
    def is_open(self) -> bool:
        """Whether every host passes (nothing to resolve to find out)."""
        return not self.refuse_internal and not self.only_listed

    def check(
        self,
        host: str,
        addresses: Sequence[IPAddress],
        own: Collection[IPAddress] | None = None,
    ) -> None:
        """AccessDenied naming the first address of ``host`` these rules refuse;
        ``own``: the server's addresses (default :func:`own_addresses`)."""
        if host.lower().rstrip(".") in self.names:
            return
        if self.only_listed:
            self._check_listed(host, addresses)
            return
        if not self.refuse_internal:
            return
        mine = own_addresses() if own is None else own
        for address in addresses:
            ip = unwrap(address)
            if any(address in net or ip in net for net in self.networks):
                continue
            kind = internal_kind(address)
            if kind is None and ip in mine:
                kind = "one of the server's own addresses"
            if kind is not None:
                raise AccessDenied(
                    f"URL host {host!r} is {address}, {kind}; the server does not connect "
                    f"to internal addresses unless its {self.setting} setting allows them"
                )

    def _check_listed(self, host: str, addresses: Sequence[IPAddress]) -> None:
        for address in addresses:
            ip = unwrap(address)
            if not any(address in net or ip in net for net in self.networks):
                raise AccessDenied(
                    f"URL host {host!r} ({address}) is not one of the hosts the server's "
                    f"{self.setting} setting allows"
                )


def _host_entries(
    allowed: Sequence[str], setting: str
) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """The host names and the networks of a host setting's entries; ConfigError naming
    ``setting`` for an entry that is neither a host name, an address nor a CIDR range."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allowed:
        text = entry.strip().lower()
        try:
            networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = text.rstrip(".")
        if not _HOST_NAME.fullmatch(name):
            raise ConfigError(
                f"{setting}: expected host names, addresses or CIDR ranges, got {entry!r}"
            )
        names.add(name)
    return frozenset(names), tuple(networks)


def api_key_matches(given: str | None, expected: str | None) -> bool:
    """Whether ``given`` is the API key, in constant time; any key when none is set."""
    if expected is None:
        return True
    if given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())
