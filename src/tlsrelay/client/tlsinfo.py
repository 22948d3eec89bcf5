"""What a TLS handshake showed: version, cipher, certificate chain, trust.

Trust is judged as Postfix judges it, by OpenSSL during the handshake
against a CA bundle; a chain it refuses fails that handshake, so probe.py
then reconnects without verification to still report the certificate in
full. The name match (RFC 6125) and the expiry are computed here. TLS 1.2
is the minimum we offer.

Python 3.11 gives only the leaf certificate of a connection. The chain the
server sent is read from the decrypted Certificate handshake message through
the context's message callback (RFC 8446 section 4.4.2, RFC 5246 section
7.4.2); where that hook is missing the chain is the leaf alone.

This module never sends anything the server did not ask for and never
trusts a certificate because the handshake succeeded.
"""

from __future__ import annotations

import datetime as dt
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

_CERTIFICATE = 11  # handshake message type


@dataclass
class Capture:
    """Certificate messages seen during one handshake, raw."""

    messages: list[tuple[int, bytes]] = field(default_factory=list)

    def __call__(self, conn, direction, version, content_type, msg_type, data):
        if direction == "read" and msg_type == _CERTIFICATE and content_type == 22:
            self.messages.append((int(version), bytes(data)))


def client_context(cafile: Path | None = None) -> tuple[ssl.SSLContext, Capture]:
    """A client context; with CAFILE, OpenSSL verifies the chain (not the name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if cafile is None:
        context.verify_mode = ssl.CERT_NONE
    else:
        context.load_verify_locations(cafile=str(cafile))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    capture = Capture()
    if hasattr(context, "_msg_callback"):
        context._msg_callback = capture
    return context, capture


def parse_certificate_message(version: int, data: bytes) -> list[bytes]:
    """DER certificates of a Certificate handshake message, leaf first."""
    body = data[4 : 4 + int.from_bytes(data[1:4], "big")]
    pos = 0
    tls13 = version == ssl.TLSVersion.TLSv1_3
    if tls13:
        pos = 1 + body[0]  # certificate_request_context
    end = pos + 3 + int.from_bytes(body[pos : pos + 3], "big")
    pos += 3
    certs = []
    while pos + 3 <= end:
        size = int.from_bytes(body[pos : pos + 3], "big")
        certs.append(body[pos + 3 : pos + 3 + size])
        pos += 3 + size
        if tls13:
            pos += 2 + int.from_bytes(body[pos : pos + 2], "big")
    return certs


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_after: str

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertInfo:
        return cls(
            cert.subject.rfc4514_string(),
            cert.issuer.rfc4514_string(),
            tuple(dns_names(cert)),
            cert.not_valid_after_utc.isoformat(),
        )


def dns_names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_oid(
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME
        ).value
    except x509.ExtensionNotFound:
        return [
            a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        ]
    names = san.get_values_for_type(x509.DNSName)
    names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return names


def name_matches(name: str, patterns: list[str]) -> bool:
    """RFC 6125 section 6.4: exact, or `*` as the whole left-most label."""
    name = name.lower().rstrip(".")
    for pattern in (p.lower().rstrip(".") for p in patterns):
        if pattern == name:
            return True
        if pattern.startswith("*.") and "." in name:
            if name.split(".", 1)[1] == pattern[2:] and pattern.count(".") >= 2:
                return True
    return False


@dataclass
class TlsReport:
    version: str
    cipher: str
    bits: int
    chain: list[CertInfo]
    name_match: bool
    days_left: int
    trusted: bool | None  # None: no CA bundle to judge by
    trust_detail: str

    def as_dict(self) -> dict[str, object]:
        document = dict(self.__dict__)
        document["chain"] = [c.__dict__ for c in self.chain]
        return document


def report(
    sock: ssl.SSLSocket,
    capture: Capture,
    server_name: str,
    trust: tuple[bool | None, str],
    now: dt.datetime | None = None,
) -> TlsReport:
    """The report of an established connection; TRUST is (trusted, detail)."""
    now = now or dt.datetime.now(dt.UTC)
    ders = [c for v, m in capture.messages for c in parse_certificate_message(v, m)]
    if not ders:
        leaf_der = sock.getpeercert(binary_form=True)
        ders = [leaf_der] if leaf_der else []
    certs = [x509.load_der_x509_certificate(d) for d in ders]
    cipher, _, bits = sock.cipher() or ("", "", 0)
    if not certs:
        return TlsReport(
            sock.version() or "",
            cipher,
            bits,
            [],
            False,
            0,
            False,
            "the server sent no certificate",
        )
    leaf = certs[0]
    trusted, detail = trust
    return TlsReport(
        version=sock.version() or "",
        cipher=cipher,
        bits=bits or 0,
        chain=[CertInfo.of(c) for c in certs],
        name_match=name_matches(server_name, dns_names(leaf)),
        days_left=(leaf.not_valid_after_utc - now).days,
        trusted=trusted,
        trust_detail=detail,
    )
