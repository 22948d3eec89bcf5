"""`tlsrelay init DIR`: a config, a certificate and a spool for one machine."""

from __future__ import annotations

import stat
import subprocess
import sys

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from tlsrelay import config
from tlsrelay.relay.tlsio import server_context


def init(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tlsrelay.cli.main", "init", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def var(tmp_path_factory):
    path = tmp_path_factory.mktemp("init") / "var"
    result = init(str(path))
    assert result.returncode == 0, result.stderr
    return path


def test_init_writes_a_config_that_loads_with_its_certificate(var):
    settings = config.load(var / "tlsrelay.toml")

    assert settings.node.location == "LON"
    assert settings.node.hostname == "lon-tls.relay.example"
    assert settings.listen.submission == ("127.0.0.1:2587",)
    assert settings.listen.smtps == ("127.0.0.1:2465",)
    assert settings.portal.listen == "127.0.0.1:8080"
    assert len(settings.portal.secret) >= 32
    assert settings.control.provider_domain == "relay.example"
    assert settings.control.allow_private_ips is True
    assert settings.spool.path.is_dir()
    assert (var / "control.db").is_file()

    cert = x509.load_pem_x509_certificate(settings.tls.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert names.value.get_values_for_type(x509.DNSName) == ["lon-tls.relay.example"]
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert stat.S_IMODE(settings.tls.key.stat().st_mode) == 0o600
    server_context(settings.tls.cert, settings.tls.key)


def test_init_never_overwrites(var):
    before = (var / "tlsrelay.toml").read_bytes()
    key_before = (var / "key.pem").read_bytes()
    result = init(str(var))
    assert result.returncode != 0
    assert "exists; not overwriting it" in result.stderr
    assert (var / "tlsrelay.toml").read_bytes() == before
    assert (var / "key.pem").read_bytes() == key_before


def test_location_names_the_host_and_secrets_differ(tmp_path, var):
    assert init(str(tmp_path), "--location", "fra").returncode == 0
    settings = config.load(tmp_path / "tlsrelay.toml")
    assert (settings.node.location, settings.node.name) == ("FRA", "fra-1")
    assert settings.node.hostname == "fra-tls.relay.example"
    first = config.load(var / "tlsrelay.toml")
    assert settings.portal.secret != first.portal.secret
