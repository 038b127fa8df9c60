"""URL inputs: host rules, every redirect hop checked, size, deadline, rate and cancel.

The downloads run against a scripted HTTP server on loopback (tests/download_servers.py),
which the rules here allow by address (``127.0.0.1`` only) where a test needs it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.download_servers import ScriptedServer, body, drip, hang, make_tls, redirect

from vidshard.errors import Cancelled, ConfigError, InputError
from vidshard.service.download import MAX_REDIRECTS, DownloadPolicy, Pace, download
from vidshard.service.inputs import TooLarge
from vidshard.service.security import AccessDenied, HostRules, check_url, own_addresses
from vidshard.service.settings import load_settings

CLIP = os.urandom(20_000)


def policy(allowed: tuple[str, ...] = ("127.0.0.1",), **overrides: Any) -> DownloadPolicy:
    values: dict[str, Any] = {
        "schemes": ("http", "https"),
        "hosts": HostRules.deny_internal(list(allowed), "url_allowed_hosts"),
        "max_bytes": 1_000_000,
        "timeout_s": 60.0,
        "min_bytes_per_s": 0,
        "rate_window_s": 30.0,
        "connect_timeout_s": 10.0,
        "read_timeout_s": 30.0,
        **overrides,
    }
    return DownloadPolicy(**values)


@pytest.fixture
def server():
    with ScriptedServer() as running:
        yield running


def no_files_left(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# --- host rules --------------------------------------------------------------------------

DENY = HostRules.deny_internal([], "url_allowed_hosts")
SPECIAL = "private|reserved|not a public"  # how Python names the special ranges varies


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),  # all of 127/8
        ("::1", "loopback"),
        ("10.1.2.3", "private"),  # RFC 1918
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),  # ULA fc00::/7
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # reaches this machine on Linux
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "carrier-grade NAT"),  # 100.64/10
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),  # broadcast
        ("192.0.2.10", SPECIAL),  # documentation range: not public
        ("198.18.0.1", SPECIAL),  # benchmarking range
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
        ("64:ff9b::a00:1", SPECIAL),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
    ],
)
def test_internal_addresses_are_refused(address, kind):
    with pytest.raises(AccessDenied, match=kind) as refused:
        DENY.check("example.com", [ipaddress.ip_address(address)], own=frozenset())
    assert "url_allowed_hosts" in str(refused.value)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_pass(address):
    DENY.check("example.com", [ipaddress.ip_address(address)], own=frozenset())


def test_the_servers_own_addresses_are_refused():
    public = ipaddress.ip_address("93.184.216.34")  # as if it were this machine's
    with pytest.raises(AccessDenied, match="the server's own"):
        DENY.check("me.example", [public], own=frozenset({public}))
    # the real interfaces are read (loopback is always one of them)
    assert ipaddress.ip_address("127.0.0.1") in own_addresses()


def test_one_internal_address_among_public_ones_refuses_the_host():
    addresses = [ipaddress.ip_address(a) for a in ("93.184.216.34", "10.0.0.7")]
    with pytest.raises(AccessDenied, match=r"10\.0\.0\.7"):
        DENY.check("split.example", addresses, own=frozenset())


@pytest.mark.parametrize(
    ("allowed", "host", "address", "passes"),
    [
        (["media.internal"], "media.internal", "10.0.0.5", True),  # a named host
        (["Media.Internal."], "MEDIA.internal", "10.0.0.5", True),  # any case, final dot
        (["media.internal"], "cdn.media.internal", "10.0.0.5", False),  # names are exact
        (["media.internal"], "10.0.0.5", "10.0.0.5", False),  # the name, not its address
        (["10.0.0.0/8"], "anything", "10.200.0.1", True),  # a range
        (["10.0.0.0/8"], "anything", "192.168.0.1", False),  # outside it
        (["10.0.0.0/8"], "mapped", "::ffff:10.0.0.1", True),  # the same address, mapped
        (["127.0.0.1"], "localhost", "127.0.0.1", True),  # one address
        (["127.0.0.1"], "localhost", "127.0.0.2", False),  # not its neighbour
        (["[::1]"], "ip6-localhost", "::1", True),  # brackets are fine
        (["fd00::/8"], "ula", "fd12::1", True),
    ],
)
def test_allow_rules(allowed, host, address, passes):
    rules = HostRules.deny_internal(allowed, "url_allowed_hosts")
    check = lambda: rules.check(host, [ipaddress.ip_address(address)], own=frozenset())  # noqa: E731
    if passes:
        check()
    else:
        with pytest.raises(AccessDenied):
            check()


def test_open_rules_allow_every_host():
    # the policy a live camera source gets: private networks are where cameras are
    HostRules.open_to_all().check("cam", [ipaddress.ip_address("192.168.1.64")])
    HostRules.open_to_all().check("me", [ipaddress.ip_address("127.0.0.1")])


@pytest.mark.parametrize(
    "entry",
    [
        "*.internal",  # no wildcards
        "media.internal:8080",  # no ports
        "http://media.internal",  # not a URL
        "10.0.0.0/33",  # not a range
        "a b",
        "",
    ],
)
def test_bad_allow_entries(entry):
    with pytest.raises(ConfigError, match="url_allowed_hosts: expected host names"):
        HostRules.deny_internal([entry], "url_allowed_hosts")


def test_allowed_hosts_setting(monkeypatch):
    monkeypatch.setenv("VIDSHARD_URL_ALLOWED_HOSTS", "127.0.0.1, 10.0.0.0/8,media.internal")
    assert load_settings().url_allowed_hosts == ["127.0.0.1", "10.0.0.0/8", "media.internal"]
    monkeypatch.delenv("VIDSHARD_URL_ALLOWED_HOSTS")
    assert load_settings().url_allowed_hosts == []  # default: nothing internal
    with pytest.raises(ConfigError, match=r"url_allowed_hosts\[?.*'\*\.lan'"):
        load_settings(url_allowed_hosts=["*.lan"])
    with pytest.raises(ConfigError, match="download_timeout_s"):
        load_settings(download_timeout_s=0)


# --- at submit: the URL's host, as the resolver reads it -------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/v.mp4",
        "http://2130706433/v.mp4",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/v.mp4",  # hex and a short form
        "http://0x7f000001/v.mp4",
        "http://017700000001/v.mp4",  # octal
        "http://127.1/v.mp4",
        "http://0/v.mp4",  # 0.0.0.0
        "http://[::1]/v.mp4",
        "http://[::ffff:127.0.0.1]/v.mp4",  # IPv4-mapped
        "http://[::ffff:7f00:1]/v.mp4",  # the same, in hex
        "http://[0:0:0:0:0:ffff:127.0.0.1]:8080/v.mp4",
        "http://localhost/v.mp4",  # a name for loopback
        "http://LocalHost/v.mp4",  # any case
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/v.mp4",
        "http://[fd00::1]/v.mp4",
        "http://user@127.0.0.1:80/v.mp4",  # userinfo does not hide the host
        "https://127.0.0.1#@example.com/",  # nor a fragment that looks like one
    ],
)
def test_submit_refuses_internal_hosts_in_any_spelling(url):
    with pytest.raises(AccessDenied, match="internal addresses"):
        policy(allowed=()).check(url)


def test_submit_refuses_a_host_with_any_internal_address(monkeypatch):
    def two(host, port, *args, **kwargs):
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", port)),
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two)
    with pytest.raises(AccessDenied, match=r"10\.0\.0\.9, a private address"):
        policy(allowed=()).check("https://split.example/v.mp4")


def test_submit_refuses_an_unresolvable_host(monkeypatch):
    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(InputError, match=r"'nope\.example' cannot be resolved") as refused:
        policy().check("https://nope.example/v.mp4")
    assert not isinstance(refused.value, AccessDenied)


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        ("ftp://127.0.0.1/a.mp4", AccessDenied, "'ftp' is not allowed"),
        ("file:///etc/passwd", AccessDenied, "'file' is not allowed"),
        ("s3://bucket/key.mp4", InputError, "'s3' is allowed but cannot be downloaded"),
    ],
)
def test_submit_scheme(url, error, match):
    with pytest.raises(error, match=match):
        policy(schemes=("http", "https", "s3")).check(url)


def test_check_url_without_host_rules_does_not_resolve(monkeypatch):
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: pytest.fail("resolved"))
    assert check_url("http://127.0.0.1/v.mp4", ["http"]) == "http://127.0.0.1/v.mp4"


# --- deadline and rate, as data ------------------------------------------------------------


@pytest.mark.parametrize(
    ("marks", "expected"),
    [
        ([(10, 0), (29, 0)], None),  # nothing yet, but the first window is not over
        ([(10, 0), (20, 0), (31, 100)], "slower than 1000 bytes/s for 30 s"),  # a drip
        ([(10, 20_000), (20, 30_000), (31, 40_000)], None),  # fast enough
        ([(5, 500_000), (10, 500_000), (36, 500_010)], "slower than"),  # fast, then stalled
        ([(50, 100_000), (101, 10_000_000)], "not finished within 100 s"),  # the deadline
    ],
)
def test_pace(marks, expected):
    pace = Pace(timeout_s=100, min_bytes_per_s=1000, window_s=30, started_s=0)
    verdicts = [pace.verdict(now_s, done) for now_s, done in marks]
    assert all(v is None for v in verdicts[:-1])
    if expected is None:
        assert verdicts[-1] is None
    else:
        assert verdicts[-1] is not None and expected in verdicts[-1]


def test_pace_without_a_minimum_only_has_the_deadline():
    pace = Pace(timeout_s=100, min_bytes_per_s=0, window_s=30, started_s=0)
    assert [pace.verdict(t, 0) for t in (31, 62, 99)] == [None, None, None]


# --- downloads ---------------------------------------------------------------------------


def test_downloads_and_keeps_the_file_for_a_rerun(server, tmp_path):
    server.routes["/clip.mp4"] = body(CLIP)
    got = download(server.url("/clip.mp4?sig=1"), tmp_path, policy(), threading.Event())
    assert got == tmp_path / "input-clip.mp4" and got.read_bytes() == CLIP
    request = server.requests[0]
    assert request.target == "/clip.mp4?sig=1"
    assert request.headers["host"] == f"127.0.0.1:{server.port}"
    server.routes.clear()  # a rerun does not download again
    assert download(server.url("/clip.mp4"), tmp_path, policy(), threading.Event()) == got
    assert len(server.requests) == 1


def test_the_default_rules_refuse_loopback_before_connecting(server, tmp_path):
    server.routes["/clip.mp4"] = body(CLIP)
    with pytest.raises(AccessDenied, match=r"127\.0\.0\.1, a loopback address"):
        download(server.url("/clip.mp4"), tmp_path, policy(allowed=()), threading.Event())
    assert server.requests == [] and no_files_left(tmp_path)


@pytest.mark.parametrize("status", ["301 Moved", "302 Found", "303 See Other", "307 T", "308 P"])
def test_redirects_are_followed(server, tmp_path, status):
    server.routes["/a"] = redirect("b/c?x=1", status)  # relative to /a
    server.routes["/b/c"] = redirect(server.url("/final.mp4"), status)  # absolute
    server.routes["/final.mp4"] = body(CLIP)
    got = download(server.url("/a"), tmp_path, policy(), threading.Event())
    assert got.read_bytes() == CLIP
    assert [r.target for r in server.requests] == ["/a", "/b/c?x=1", "/final.mp4"]


@pytest.mark.parametrize(
    ("location", "match"),
    [
        ("ftp://127.0.0.1/a.mp4", "'ftp' is not allowed"),  # a scheme outside the list
        ("file:///etc/passwd", "'file' is not allowed"),
        ("http://127.0.0.2:{port}/a.mp4", "127.0.0.2, a loopback address"),  # not allowed
        ("http://2130706434:{port}/a.mp4", "127.0.0.2, a loopback address"),  # the same
        ("http://[::ffff:127.0.0.2]:{port}/a.mp4", "a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "a link-local address"),
        ("http://0:{port}/a.mp4", "an unspecified address"),
    ],
)
def test_every_redirect_hop_is_checked(server, tmp_path, location, match):
    with ScriptedServer("127.0.0.2") as refused:
        refused.routes["/a.mp4"] = body(CLIP)
        server.routes["/start"] = redirect("/next")
        server.routes["/next"] = redirect(location.format(port=refused.port))
        with pytest.raises(AccessDenied, match=match) as caught:
            download(server.url("/start"), tmp_path, policy(), threading.Event())
        assert refused.requests == []  # never connected to
    assert f"redirect 2 from {server.url('/next')}" in str(caught.value)
    assert no_files_left(tmp_path)


def test_too_many_redirects(server, tmp_path):
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(InputError, match=f"more than {MAX_REDIRECTS} redirects"):
        download(server.url("/loop"), tmp_path, policy(), threading.Event())
    assert len(server.requests) == MAX_REDIRECTS + 1


def test_a_redirect_without_location(server, tmp_path):
    server.routes["/r"] = body(b"", status="302 Found")
    with pytest.raises(InputError, match="302 with no Location"):
        download(server.url("/r"), tmp_path, policy(), threading.Event())


def test_http_errors_name_the_status(server, tmp_path):
    with pytest.raises(InputError, match="answered HTTP 404"):
        download(server.url("/gone.mp4"), tmp_path, policy(), threading.Event())
    assert no_files_left(tmp_path)


def test_a_refused_connection(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/a.mp4"
    with pytest.raises(InputError, match=r"cannot download .* cannot connect"):
        download(url, tmp_path, policy(), threading.Event())


# --- sizes -------------------------------------------------------------------------------


def test_a_declared_length_over_the_limit_is_refused_before_reading(server, tmp_path):
    server.routes["/big.mp4"] = body(b"x" * 100, length=10**12)
    with pytest.raises(TooLarge, match=r"declares 1000000000000 bytes, over the limit of 5000"):
        download(server.url("/big.mp4"), tmp_path, policy(max_bytes=5000), threading.Event())
    assert no_files_left(tmp_path)


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_the_limit_without_a_length(server, tmp_path, chunked):
    server.routes["/big.mp4"] = body(b"x" * 200_000, length=None, chunked=chunked)
    with pytest.raises(TooLarge, match="sends more than 5000 bytes"):
        download(server.url("/big.mp4"), tmp_path, policy(max_bytes=5000), threading.Event())
    assert no_files_left(tmp_path)


def test_a_body_bigger_than_it_declared_is_cut_at_the_declared_length(server, tmp_path):
    server.routes["/liar.mp4"] = body(b"y" * 200_000, length=1000)
    got = download(server.url("/liar.mp4"), tmp_path, policy(max_bytes=5000), threading.Event())
    assert got.stat().st_size == 1000  # never more than declared, nor than the limit


def test_a_body_shorter_than_it_declared_fails(server, tmp_path):
    server.routes["/short.mp4"] = body(b"z" * 10, length=1000)
    with pytest.raises(InputError, match="ended after 10 of the 1000 bytes it declared"):
        download(server.url("/short.mp4"), tmp_path, policy(), threading.Event())
    assert no_files_left(tmp_path)


def test_a_chunked_body_cut_short_fails(server, tmp_path):
    def cut(sock, stopping):
        sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nabc")

    server.routes["/cut.mp4"] = cut
    with pytest.raises(InputError, match="cannot download"):
        download(server.url("/cut.mp4"), tmp_path, policy(), threading.Event())
    assert no_files_left(tmp_path)


# --- slow servers, deadline, cancel ------------------------------------------------------


def test_a_slow_drip_fails_on_the_minimum_rate(server, tmp_path):
    server.routes["/drip.mp4"] = drip(10_000, 0.2)
    slow = policy(min_bytes_per_s=1000, rate_window_s=1.0)
    with pytest.raises(InputError, match=r"slower than 1000 bytes/s for 1 s") as failed:
        download(server.url("/drip.mp4"), tmp_path, slow, threading.Event())
    assert server.url("/drip.mp4") in str(failed.value)
    assert no_files_left(tmp_path)
    assert server.requests[0].ended.wait(10)  # its connection was closed


def test_a_download_past_its_deadline_fails(server, tmp_path):
    server.routes["/drip.mp4"] = drip(10_000, 0.1, chunk_bytes=100)  # fast enough, too long
    short = policy(timeout_s=1.5, min_bytes_per_s=10, rate_window_s=1.0)
    with pytest.raises(InputError, match=r"not finished within 1.5 s"):
        download(server.url("/drip.mp4"), tmp_path, short, threading.Event())
    assert no_files_left(tmp_path)


def test_a_server_that_never_answers_fails_on_the_deadline(server, tmp_path):
    server.routes["/hang.mp4"] = hang()
    with pytest.raises(InputError, match="not finished within 1 s"):
        download(server.url("/hang.mp4"), tmp_path, policy(timeout_s=1.0), threading.Event())


def test_a_silent_server_fails_on_the_read_timeout(server, tmp_path):
    server.routes["/hang.mp4"] = hang()
    with pytest.raises(InputError, match="no data for 1 s"):
        download(server.url("/hang.mp4"), tmp_path, policy(read_timeout_s=1.0), threading.Event())


def run_in_thread(*args: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            download(*args)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


@pytest.mark.parametrize("route", [drip(10**6, 0.5), hang()], ids=["dripping", "no-headers"])
def test_cancel_stops_a_download(server, tmp_path, route):
    server.routes["/slow.mp4"] = route
    cancel = threading.Event()
    patient = policy(timeout_s=600.0, read_timeout_s=600.0)  # only the cancel can end it soon
    thread, errors = run_in_thread(server.url("/slow.mp4"), tmp_path, patient, cancel)
    request = server.wait_for_request("/slow.mp4")
    cancel.set()
    thread.join(10)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors
    assert no_files_left(tmp_path)
    assert request.ended.wait(10)  # the server saw its client go


def test_cancel_stops_a_slow_lookup(monkeypatch, tmp_path):
    looking = threading.Event()
    never = threading.Event()

    def slow(*args, **kwargs):
        looking.set()
        never.wait(30)
        raise socket.gaierror(socket.EAI_AGAIN, "timed out")

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    cancel = threading.Event()
    thread, errors = run_in_thread("http://slow-dns.example/a.mp4", tmp_path, policy(), cancel)
    assert looking.wait(10)
    cancel.set()
    thread.join(10)
    never.set()
    assert len(errors) == 1 and isinstance(errors[0], Cancelled), errors


# --- where the connection goes -----------------------------------------------------------


def test_connects_to_the_checked_address_with_the_urls_host(server, tmp_path, monkeypatch):
    """One look-up per hop: a name that would resolve elsewhere the second time (DNS
    rebinding) is still reached at the address that was checked."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def rebinding(host, port, *args, **kwargs):
        lookups.append(host)
        if host == "media.test" and len(lookups) == 1:
            return real("127.0.0.1", port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.9.9", port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    server.routes["/clip.mp4"] = body(CLIP)
    got = download(
        server.url("/clip.mp4", host="media.test"), tmp_path, policy(), threading.Event()
    )
    assert got.read_bytes() == CLIP
    assert lookups == ["media.test"]
    assert server.requests[0].headers["host"] == f"media.test:{server.port}"


def test_a_non_ascii_path_is_sent_percent_encoded(server, tmp_path):
    server.routes["/vid%C3%A9o.mp4"] = body(CLIP)
    got = download(server.url("/vidéo.mp4"), tmp_path, policy(), threading.Event())
    assert got.read_bytes() == CLIP


@pytest.fixture
def tls(tmp_path):
    pytest.importorskip("cryptography")
    return make_tls(tmp_path, ["localhost"])


def test_https_checks_the_certificate_against_the_host_name(tmp_path, tls):
    server_tls, client_tls = tls
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)
    allowed = policy(allowed=("localhost", "127.0.0.1"), tls=client_tls)
    with ScriptedServer(tls=server_tls) as server:
        server.routes["/clip.mp4"] = body(CLIP)
        got = download(server.url("/clip.mp4", "localhost"), tmp_path, allowed, threading.Event())
        assert got.read_bytes() == CLIP and names == ["localhost"]
        other = tmp_path / "other"
        with pytest.raises(InputError, match="certificate"):  # the name is not 127.0.0.1's
            download(server.url("/clip.mp4", "127.0.0.1"), other, allowed, threading.Event())
        assert no_files_left(other)


def test_the_docs_example_loads(tmp_path):
    docs = Path(__file__).parents[3] / "docs" / "service.md"
    block = docs.read_text().split("```toml\n[serve]\nurl_allowed_hosts", 1)[1].split("```")[0]
    config = tmp_path / "vidshard.toml"
    config.write_text("[serve]\nurl_allowed_hosts" + block)
    settings = load_settings(config)
    assert settings.url_allowed_hosts == ["media.internal", "10.20.0.0/16"]
    rules = DownloadPolicy.of(settings).hosts
    rules.check("media.internal", [ipaddress.ip_address("10.1.1.1")], own=frozenset())
    rules.check("cam", [ipaddress.ip_address("10.20.3.4")], own=frozenset())


def test_a_slow_resolver_does_not_hold_a_submit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The submit-time look-up is waited for a bounded time, then refused (422)."""
    from vidshard.service import security

    released = threading.Event()

    def stuck(host: str, port: int) -> list[Any]:
        released.wait(30)
        return []

    monkeypatch.setattr(security, "resolve", stuck)
    monkeypatch.setattr(security, "SUBMIT_RESOLVE_TIMEOUT_S", 0.2)
    try:
        with pytest.raises(InputError, match=r"did not resolve within 0\.2 s"):
            check_url("https://slow.example/clip.mp4", ["https"], DENY)
    finally:
        released.set()
