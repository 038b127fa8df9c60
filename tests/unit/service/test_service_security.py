import os
from pathlib import Path

import pytest

from vidshard.errors import InputError
from vidshard.service.security import (
    AccessDenied,
    api_key_matches,
    check_url,
    is_within,
    output_dir_for,
    resolve_input_path,
    safe_filename,
)


@pytest.fixture
def roots(tmp_path):
    """Two input roots with a video each, a secret outside them, and links."""
    first, second, outside = tmp_path / "first", tmp_path / "second", tmp_path / "outside"
    for directory in (first, second, outside, first / "sub"):
        directory.mkdir()
    (first / "a.mp4").write_bytes(b"a")
    (first / "sub" / "b.mp4").write_bytes(b"b")
    (second / "c.mp4").write_bytes(b"c")
    (outside / "secret.mp4").write_bytes(b"s")
    (first / "escape.mp4").symlink_to(outside / "secret.mp4")
    (first / "escape_dir").symlink_to(outside)
    (first / "inside_link.mp4").symlink_to(second / "c.mp4")
    return [first, second]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a.mp4", "first/a.mp4"),  # relative: from the first root
        ("sub/b.mp4", "first/sub/b.mp4"),  # relative, nested
        ("./sub/b.mp4", "first/sub/b.mp4"),  # a harmless "."
        ("{tmp}/second/c.mp4", "second/c.mp4"),  # absolute, in the second root
        ("{tmp}/first//sub/./b.mp4", "first/sub/b.mp4"),  # absolute, untidy
        ("inside_link.mp4", "second/c.mp4"),  # a link from one root into another
    ],
)
def test_resolves_paths_inside_the_roots(roots, tmp_path, raw, expected):
    resolved = resolve_input_path(raw.format(tmp=tmp_path), roots)
    assert resolved == Path(os.path.realpath(tmp_path / expected))


@pytest.mark.parametrize(
    "raw",
    [
        "../outside/secret.mp4",  # climbs out
        "sub/../a.mp4",  # would stay inside, but ".." is refused before resolving
        "{tmp}/first/../outside/secret.mp4",  # absolute with ".."
        "{tmp}/outside/secret.mp4",  # absolute, outside every root
        "/etc/passwd",  # absolute, elsewhere
        "escape.mp4",  # a link inside a root to a file outside
        "escape_dir/secret.mp4",  # a linked directory leading outside
    ],
)
def test_refuses_paths_outside_the_roots(roots, tmp_path, raw):
    with pytest.raises(AccessDenied):
        resolve_input_path(raw.format(tmp=tmp_path), roots)


def test_outside_the_roots_hides_whether_the_file_exists(roots, tmp_path):
    messages = []
    for name in ("secret.mp4", "missing.mp4"):
        with pytest.raises(AccessDenied) as caught:
            resolve_input_path(str(tmp_path / "outside" / name), roots)
        messages.append(str(caught.value).replace(name, "X"))
    assert messages[0] == messages[1]


def test_missing_file_inside_a_root(roots):
    with pytest.raises(InputError, match=r"input file not found: nope\.mp4") as caught:
        resolve_input_path("nope.mp4", roots)
    assert not isinstance(caught.value, AccessDenied)


def test_directory_is_not_a_file(roots):
    with pytest.raises(InputError, match="not a regular file") as caught:
        resolve_input_path("sub", roots)
    assert not isinstance(caught.value, AccessDenied)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("", "empty"),  # nothing given
        ("a.mp4\0.txt", "NUL"),  # a NUL byte
    ],
)
def test_malformed_paths(roots, raw, match):
    with pytest.raises(InputError, match=match) as caught:
        resolve_input_path(raw, roots)
    assert not isinstance(caught.value, AccessDenied)


def test_no_roots_disables_path_inputs(roots):
    with pytest.raises(AccessDenied, match="upload the file instead"):
        resolve_input_path(str(roots[0] / "a.mp4"), [])


def test_is_within(tmp_path):
    assert is_within(tmp_path / "a" / "b", tmp_path)
    assert is_within(tmp_path, tmp_path)
    assert not is_within(tmp_path.parent, tmp_path)
    assert not is_within(Path(f"{tmp_path}-other/x"), tmp_path)  # a prefix is not a parent


def test_output_dir_for(tmp_path):
    job_id = "0123456789abcdef0123456789abcdef"
    assert output_dir_for(job_id, tmp_path) == tmp_path / job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "../" + "a" * 29,  # traversal
        "0123456789ABCDEF0123456789ABCDEF",  # upper case is not how ids are written
        "a" * 31,  # too short
        "g" * 32,  # not hex
    ],
)
def test_output_dir_for_refuses_bad_ids(tmp_path, job_id):
    with pytest.raises(InputError, match="invalid job id"):
        output_dir_for(job_id, tmp_path)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("clip.mp4", "clip.mp4"),  # already safe
        ("my clip (1).mp4", "myclip1.mp4"),  # spaces and brackets dropped
        ("../../etc/passwd", "passwd"),  # the last component only
        ("C:\\Users\\me\\clip.mov", "clip.mov"),  # a Windows client's path
        (".hidden.mp4", "hidden.mp4"),  # no leading dot
        ("...", "upload.bin"),  # nothing left
        ("", "upload.bin"),  # nothing given
        ("vidéo–ñ.mkv", "vido.mkv"),  # non-ASCII dropped
        ("a" * 200 + ".mp4", "a" * 116 + ".mp4"),  # shortened, extension kept
        ("a" * 200, "a" * 120),  # shortened, no extension
        ("x." + "b" * 200, ("x." + "b" * 200)[:120]),  # an "extension" too long to keep
    ],
)
def test_safe_filename(name, expected):
    assert safe_filename(name, "upload.bin") == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/video.mp4",
        "HTTP://Example.com:8080/v.mp4?x=1",  # scheme case does not matter
        "http://[::1]/v.mp4",  # IPv6 host
    ],
)
def test_check_url_accepts(url):
    assert check_url(url, ["http", "https"]) == url


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("file:///etc/passwd", "file"),  # local files
        ("ftp://example.com/v.mp4", "ftp"),  # not allowed here
        ("javascript:alert(1)", "javascript"),  # not a fetchable URL
        ("gopher://example.com/", "gopher"),
    ],
)
def test_check_url_refuses_schemes(url, scheme):
    with pytest.raises(AccessDenied, match=rf"'{scheme}' is not allowed; allowed: http, https"):
        check_url(url, ["http", "https"])


def test_check_url_with_no_allowed_schemes():
    with pytest.raises(AccessDenied, match="URL inputs are disabled"):
        check_url("https://example.com/v.mp4", [])


def test_check_url_allowed_schemes_are_case_insensitive():
    assert check_url("s3://bucket/key", ["S3"]) == "s3://bucket/key"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("", "empty"),  # nothing given
        ("https:///path/only", "no host"),  # no host
        ("http://:80/x", "no host"),  # a port but no host
        ("example.com/v.mp4", "no scheme"),  # not absolute
        ("http://[::1/v.mp4", "malformed"),  # broken IPv6 literal
        ("http://example.com:99999/", "malformed"),  # port out of range
        ("http://exa mple.com/", "whitespace"),  # a space
        ("http://example.com/\nx", "control"),  # a newline
    ],
)
def test_check_url_malformed(url, match):
    with pytest.raises(InputError, match=match) as caught:
        check_url(url, ["http", "https"])
    assert not isinstance(caught.value, AccessDenied)


@pytest.mark.parametrize(
    ("given", "expected", "matches"),
    [
        ("k3y", "k3y", True),  # the key
        ("k3y", "k3Y", False),  # case matters
        ("k3", "k3y", False),  # a prefix is not the key
        (None, "k3y", False),  # no key sent
        ("", "k3y", False),  # an empty key sent
        (None, None, True),  # no key configured: open
        ("anything", None, True),  # no key configured: any key is fine
        ("clé", "clé", True),  # non-ASCII keys compare too
    ],
)
def test_api_key_matches(given, expected, matches):
    assert api_key_matches(given, expected) is matches


def test_access_denied_is_an_input_error():
    assert issubclass(AccessDenied, InputError)
