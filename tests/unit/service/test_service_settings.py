import os
from pathlib import Path

import pytest

from vidshard.errors import ConfigError
from vidshard.service.settings import GIB, MIB, ServiceSettings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No VIDSHARD_* from the machine running the tests; cwd and home in tmp_path."""
    for name in list(os.environ):
        if name.upper().startswith("VIDSHARD_"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults(tmp_path):
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.devices == "all"
    assert settings.workers_per_device == 1
    data_dir = (tmp_path / "home" / ".local" / "share" / "vidshard").resolve()
    assert settings.data_dir == data_dir
    assert settings.database_url is None
    assert settings.db_url == f"sqlite:///{data_dir / 'jobs.db'}"
    assert settings.input_roots == [(tmp_path / "work").resolve()]
    assert settings.output_root is None
    assert settings.outputs_dir == data_dir / "outputs"
    assert settings.uploads_dir == data_dir / "uploads"
    assert settings.api_key is None
    assert settings.max_upload_bytes == 2 * GIB
    assert settings.max_request_bytes == MIB
    assert settings.allowed_url_schemes == ["http", "https"]
    assert settings.job_ttl_s == 86400
    assert settings.max_running_jobs == 2
    assert settings.default_model == "lanczos"
    assert settings.log_level == "info"


def test_settings_are_frozen():
    settings = load_settings()
    with pytest.raises(ValueError):
        settings.port = 1


def test_environment_overrides_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDSHARD_PORT", "9000")
    monkeypatch.setenv("VIDSHARD_HOST", "0.0.0.0")
    monkeypatch.setenv("VIDSHARD_API_KEY", "s3cret")
    monkeypatch.setenv("VIDSHARD_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("VIDSHARD_OUTPUT_ROOT", str(tmp_path / "out"))
    monkeypatch.setenv("VIDSHARD_DATABASE_URL", "postgresql://u:p@db/jobs")
    settings = load_settings()
    assert settings.port == 9000
    assert settings.host == "0.0.0.0"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert settings.log_level == "debug"
    assert settings.outputs_dir == (tmp_path / "out").resolve()
    assert settings.db_url == "postgresql://u:p@db/jobs"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["{a}", "{b}"]', ["a", "b"]),  # JSON list
        ("{a},{b}", ["a", "b"]),  # comma-separated
        (" {a} , {b} ,", ["a", "b"]),  # spaces and a trailing comma
        ("[]", []),  # no roots: path inputs disabled
    ],
)
def test_input_roots_from_environment(monkeypatch, tmp_path, raw, expected):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("VIDSHARD_INPUT_ROOTS", raw.format(a=tmp_path / "a", b=tmp_path / "b"))
    settings = load_settings()
    assert settings.input_roots == [(tmp_path / name).resolve() for name in expected]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('["HTTPS"]', ["https"]),  # JSON, lowered
        ("http, https, s3", ["http", "https", "s3"]),  # comma-separated
    ],
)
def test_url_schemes_from_environment(monkeypatch, raw, expected):
    monkeypatch.setenv("VIDSHARD_ALLOWED_URL_SCHEMES", raw)
    assert load_settings().allowed_url_schemes == expected


def test_empty_environment_variable_is_ignored(monkeypatch):
    monkeypatch.setenv("VIDSHARD_API_KEY", "")  # as docker-compose passes an unset variable
    monkeypatch.setenv("VIDSHARD_PORT", "")
    settings = load_settings()
    assert settings.api_key is None
    assert settings.port == 8000


def test_toml_top_level(tmp_path):
    config = write_toml(tmp_path / "vidshard.toml", 'port = 9100\nhost = "::1"\n')
    settings = load_settings(config)
    assert (settings.port, settings.host) == (9100, "::1")


def test_toml_serve_table(tmp_path):
    config = write_toml(
        tmp_path / "vidshard.toml",
        '[serve]\nport = 9200\nallowed_url_schemes = ["https"]\nmax_running_jobs = 4\n',
    )
    settings = load_settings(config)
    assert settings.port == 9200
    assert settings.allowed_url_schemes == ["https"]
    assert settings.max_running_jobs == 4


def test_toml_relative_paths_are_taken_from_the_file(tmp_path):
    conf_dir = tmp_path / "conf"
    (conf_dir / "videos").mkdir(parents=True)
    config = write_toml(
        conf_dir / "vidshard.toml", 'data_dir = "state"\ninput_roots = ["videos", "/"]\n'
    )
    settings = load_settings(config)
    assert settings.data_dir == (conf_dir / "state").resolve()
    assert settings.input_roots == [(conf_dir / "videos").resolve(), Path("/")]


def test_config_file_from_environment(monkeypatch, tmp_path):
    config = write_toml(tmp_path / "vidshard.toml", "port = 9300\n")
    monkeypatch.setenv("VIDSHARD_CONFIG", str(config))
    assert load_settings().port == 9300


def test_flags_beat_environment_beat_file_beat_defaults(monkeypatch, tmp_path):
    config = write_toml(
        tmp_path / "vidshard.toml",
        "port = 9001\nworkers_per_device = 3\nmax_running_jobs = 5\n",
    )
    monkeypatch.setenv("VIDSHARD_PORT", "9002")
    monkeypatch.setenv("VIDSHARD_WORKERS_PER_DEVICE", "4")
    settings = load_settings(config, port=9003, workers_per_device=None, host=None)
    assert settings.port == 9003  # flag over environment over file
    assert settings.workers_per_device == 4  # environment over file (the flag was None)
    assert settings.max_running_jobs == 5  # file over default
    assert settings.host == "127.0.0.1"  # default (the flag was None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("prot = 1\n", r"unknown setting 'prot' \(did you mean 'port'\?\)"),  # typo
        ("[serve]\nport = 1\nzzz = 2\n", r"unknown setting 'zzz'"),  # inside [serve]
        ("[other]\nx = 1\n", r"unknown setting 'other'"),  # a table we do not know
        ("port = 1\n[serve]\nport = 2\n", r"port set both at the top level and in \[serve\]"),
        ("serve = 3\n", r"'serve' must be a table"),
        ("port = \n", r"not valid TOML"),
    ],
)
def test_bad_config_file(tmp_path, text, match):
    config = write_toml(tmp_path / "vidshard.toml", text)
    with pytest.raises(ConfigError, match=match):
        load_settings(config)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"config file not found: .*nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_config_file_that_is_a_directory(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"port": 0}, r"port: .*greater than or equal to 1 \(got 0\)"),
        ({"port": 70000}, r"port: .*less than or equal to 65535 \(got 70000\)"),
        ({"port": "eighty"}, r"port: .*valid integer"),
        ({"workers_per_device": 0}, r"workers_per_device: "),
        ({"job_ttl_s": 0}, r"job_ttl_s: "),
        ({"max_running_jobs": -1}, r"max_running_jobs: "),
        ({"max_upload_bytes": 0}, r"max_upload_bytes: "),
        ({"log_level": "loud"}, r"log_level: .*'info'"),
        ({"allowed_url_schemes": ["http", "no scheme"]}, r"allowed_url_schemes: .*'no scheme'"),
        ({"input_roots": ["/definitely/not/here"]}, r"input_roots: .* is not a directory"),
        ({"default_model": ""}, r"default_model: "),
        ({"bogus": 1}, r"unknown setting 'bogus'"),
    ],
)
def test_bad_values_name_the_setting(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_settings(**overrides)


def test_bad_environment_value_names_the_setting(monkeypatch):
    monkeypatch.setenv("VIDSHARD_PORT", "99999")
    with pytest.raises(ConfigError, match=r"port: .*65535"):
        load_settings()


def test_bad_file_value_names_the_setting(tmp_path):
    config = write_toml(tmp_path / "vidshard.toml", '[serve]\nmax_running_jobs = "many"\n')
    with pytest.raises(ConfigError, match=r"max_running_jobs: "):
        load_settings(config)


def test_errors_are_one_line_and_hide_secrets(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(api_key="", database_url="", port=0)
    message = str(caught.value)
    assert "\n" not in message
    assert "api_key: must not be empty" in message
    assert "port: " in message
    assert caught.value.__cause__ is None  # no pydantic traceback chained for the user


def test_secret_value_is_not_echoed(tmp_path):
    config = write_toml(tmp_path / "vidshard.toml", 'database_url = ["postgresql://u:pw@h/db"]\n')
    with pytest.raises(ConfigError, match="database_url") as caught:
        load_settings(config)
    assert "pw" not in str(caught.value)


def test_api_key_is_not_shown_in_repr(monkeypatch):
    monkeypatch.setenv("VIDSHARD_API_KEY", "s3cret")
    assert "s3cret" not in repr(load_settings())


def test_constructing_directly_reads_the_environment(monkeypatch):
    monkeypatch.setenv("VIDSHARD_PORT", "9400")
    assert ServiceSettings().port == 9400
