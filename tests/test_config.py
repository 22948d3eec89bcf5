"""The config file: defaults, relative paths, and precise errors."""

from pathlib import Path

import pytest

from tlsrelay import config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tlsrelay.toml"
    path.write_text(text)
    return path


def test_empty_file_gives_defaults(tmp_path):
    s = config.load(write(tmp_path, ""))
    assert s.node.location == "LON"
    assert s.listen.submission == ("127.0.0.1:2587",)
    assert s.limits.max_message_size == 50 * 1024 * 1024
    assert s.relay_host("LON") == "lon-tls.relay.example"


def test_relative_paths_follow_the_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir("/")
    s = config.load(write(tmp_path, '[spool]\npath = "q"\n[tls]\ncert = "c.pem"\n'))
    assert s.spool.path == tmp_path / "q"
    assert s.tls.cert == tmp_path / "c.pem"
    assert config.store_url(s) == f"sqlite:///{tmp_path / 'control.db'}"
    assert s.snapshot_path("lon") == tmp_path / "state" / "access-LON.json"


def test_absolute_sqlite_and_postgres_urls_are_kept(tmp_path):
    s = config.load(write(tmp_path, '[store]\nurl = "sqlite:////var/x.db"\n'))
    assert config.store_url(s) == "sqlite:////var/x.db"
    pg = "postgresql+psycopg://u@127.0.0.1/test"
    s = config.load(write(tmp_path, f'[store]\nurl = "{pg}"\n'))
    assert config.store_url(s) == pg


@pytest.mark.parametrize(
    "text, message",
    [
        ("[nodes]\n", "unknown section [nodes]"),
        ("[node]\nlocaton = 'LON'\n", "unknown key node.locaton"),
        ("[control]\nallow_private_ips = 'yes'\n", "must be true or false"),
        ("[limits]\nmax_recipients = -1\n", "a whole number >= 0"),
        ("[listen]\nsubmission = '127.0.0.1:2587'\n", "a list of strings"),
        ("[listen]\nsubmission = ['127.0.0.1']\n", "lacks a port"),
        ("[listen]\nsmtps = ['localhost:465']\n", "does not appear to be an IPv4"),
        ("[listen]\nsubmission = ['127.0.0.1:99999']\n", "bad port"),
        ("[node]\nlocation = 'XYZ'\n", "not one of control.locations"),
        ("[delivery]\ndns = 'google'\n", 'must be "system" or IP:PORT'),
        ("[delivery]\nroutes = { 'a.example' = 'h:x' }\n", "delivery.routes.a.example"),
        ("[store]\nurl = 'mysql://x'\n", "store.url must start with"),
        ("[node\n", "not valid TOML"),
        (
            "[delivery]\nminimal_backoff_s = 9000\n",
            "minimal_backoff_s exceeds",
        ),
    ],
)
def test_bad_files_are_refused_with_the_key_named(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.load(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(config.ConfigError, match="tlsrelay init"):
        config.load(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("relay.example:587", ("relay.example", 587)),
        ("[2001:db8::1]:25", ("2001:db8::1", 25)),
        ("2001:db8::1", ("2001:db8::1", 25)),
        ("mx.example", ("mx.example", 25)),
    ],
)
def test_parse_hostport(text, expected):
    assert config.parse_hostport(text, 25) == expected
