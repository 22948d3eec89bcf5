"""`tlsrelay init [DIR]`: everything a one-machine relay needs to start.

Writes DIR/tlsrelay.toml (every section, defaults spelled out; mode 0600,
since it holds the portal's session secret), a self-signed ECDSA P-256
certificate for the node's host name with its key (mode 0600), the spool
directory and the control store (an SQLite file is made 0600: it holds
password and token hashes). It never overwrites an existing
config: running it twice is an error, not a reset.

The certificate is for trying the relay out. Customers' MTAs that verify the
relay's certificate need one from a CA; put its paths in [tls] and send the
relay SIGHUP.
"""

from __future__ import annotations

import argparse
import datetime
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tlsrelay import config
from tlsrelay.cli.main import CommandError
from tlsrelay.cli.serve import upgrade_store
from tlsrelay.relay.spool import Spool

CONFIG_NAME = "tlsrelay.toml"
CERT_DAYS = 397

TEMPLATE = """\
# tlsrelay configuration, written by `tlsrelay init`.
# Relative paths are relative to this file. Unknown keys are an error.

[node]
name = "{name}"
location = "{location}"
# The relay host customers put in relayhost; the certificate names it.
hostname = "{hostname}"
state_dir = "state"

[listen]
submission = ["127.0.0.1:2587"]   # STARTTLS required before MAIL
smtps = ["127.0.0.1:2465"]        # implicit TLS
workers = 0                       # listener processes; 0 = one per CPU core
proxy_from = []                   # networks allowed to send a PROXY header

[tls]
cert = "cert.pem"
key = "key.pem"

[store]
url = "sqlite:///control.db"      # or postgresql+psycopg://...

[spool]
path = "spool"
min_free_bytes = {min_free_bytes}

[limits]
max_message_size = {max_message_size}
max_recipients = {max_recipients}
max_errors = {max_errors}
command_timeout_s = {command_timeout_s}
data_timeout_s = {data_timeout_s}

[delivery]
routes = {{}}                       # e.g. {{ "example.net" = "127.0.0.1:2525" }}
dns = "system"                    # or "127.0.0.1:5353"

[portal]
listen = "127.0.0.1:8080"
secret = "{secret}"
url = "http://127.0.0.1:8080/"

[control]
provider_domain = "{provider_domain}"
# true lets filtering lists hold private and loopback addresses, so that a
# one-machine trial can relay from 127.0.0.1. Set it to false on a relay
# that faces the internet.
allow_private_ips = true
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "init", help="write a config, a self-signed certificate and the store"
    )
    parser.add_argument("dir", nargs="?", default=".", metavar="DIR")
    parser.add_argument(
        "--location", default="LON", help="location code of this node (default LON)"
    )
    parser.add_argument(
        "--provider-domain",
        default=config.ControlSettings().provider_domain,
        help="domain under which relay hosts are named",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    base = Path(args.dir).absolute()
    path = base / CONFIG_NAME
    if path.exists():
        raise CommandError(f"{path} exists; not overwriting it")
    location = args.location.upper()
    if location not in config.DEFAULT_LOCATIONS:
        raise CommandError(
            f"unknown location {location}; one of {', '.join(config.DEFAULT_LOCATIONS)}"
        )
    for name in ("cert.pem", "key.pem"):
        if (base / name).exists():
            raise CommandError(f"{base / name} exists; not overwriting it")
    base.mkdir(parents=True, exist_ok=True)
    hostname = f"{location.lower()}-tls.{args.provider_domain}"

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render(location, hostname, args.provider_domain))
    settings = config.load(path)
    write_certificate(settings.tls.cert, settings.tls.key, hostname)
    Spool(settings.spool.path).create()
    settings.node.state_dir.mkdir(parents=True, exist_ok=True)
    upgrade_store(settings)
    _private_store(settings)

    print(f"wrote {path}")
    print(f"self-signed certificate for {hostname}: {settings.tls.cert}")
    print(f"start the relay: tlsrelay -c {path} serve")
    return 0


def render(location: str, hostname: str, provider_domain: str) -> str:
    limits = config.LimitSettings()
    return TEMPLATE.format(
        name=f"{location.lower()}-1",
        location=location,
        hostname=hostname,
        provider_domain=provider_domain,
        secret=secrets.token_urlsafe(32),
        min_free_bytes=config.SpoolSettings().min_free_bytes,
        max_message_size=limits.max_message_size,
        max_recipients=limits.max_recipients,
        max_errors=limits.max_errors,
        command_timeout_s=limits.command_timeout_s,
        data_timeout_s=limits.data_timeout_s,
    )


def _private_store(settings: config.Settings) -> None:
    """Make an SQLite store file (and its WAL files) readable by its owner only."""
    url = config.store_url(settings)
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return
    db_path = Path(url[len(prefix) :])
    for suffix in ("", "-wal", "-shm"):
        candidate = db_path.with_name(db_path.name + suffix)
        if candidate.exists():
            candidate.chmod(0o600)


def write_certificate(cert_path: Path, key_path: Path, hostname: str) -> None:
    """A self-signed ECDSA P-256 server certificate for HOSTNAME."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
