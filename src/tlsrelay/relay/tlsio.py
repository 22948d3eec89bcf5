"""TLS for the listeners: server contexts and a memory-BIO session adapter.

How this works. asyncio's own SSL transport keeps a large receive buffer
(about 256 KiB) for every connection, which makes thousands of idle sessions
expensive. Instead, each connection's protocol owns a `TlsSession`: an
`ssl.SSLObject` between two `ssl.MemoryBIO`s. Ciphertext read from the socket
is fed in with `feed()`, handshake progress and plaintext come out of
`handshake()` and `read()`, plaintext to send goes in with `write()`, and
`take_output()` hands back the ciphertext for the socket. The session never
touches a socket, so the caller decides when bytes go out.

That last point fixes a stall measured with TLS 1.3 (docs/decisions.md,
"TLS 1.3 session tickets and the 40 ms stall"): OpenSSL writes its
NewSessionTicket records in the same step that completes the handshake, and a
caller that sends them as one small segment and the first reply as another
meets Nagle's algorithm on the server and delayed ACK on the client. The
listener therefore turns off Nagle (TCP_NODELAY) and collects everything a
turn produced (tickets and replies) into one write.

Policy: TLS 1.2 or newer; for TLS 1.2 only ECDHE key exchange with AEAD
ciphers (AES-GCM, ChaCha20-Poly1305); the server's cipher order wins; no
compression and no renegotiation. TLS 1.3 suites are OpenSSL's defaults, all
AEAD.

`CertificateStore` holds the context used for new handshakes and swaps it on
reload (SIGHUP); sessions already running keep the context they started with.

This module never reads from or writes to a socket and never logs key
material.
"""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path

from cryptography import x509

log = logging.getLogger(__name__)

# TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
# Renew before customers' verifying MTAs start to defer (case 20).
EXPIRY_WARNING_DAYS = 14
# One read of plaintext; a TLS record carries at most 16 KiB.
READ_CHUNK = 16 * 1024


class TlsConfigError(Exception):
    """The certificate or key cannot be used; the message says which file."""


class TlsError(Exception):
    """The peer's TLS failed (bad handshake, protocol error); close quietly."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context with our policy and the certificate chain CERT / KEY."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_NO_COMPRESSION
        | ssl.OP_NO_RENEGOTIATION
        | ssl.OP_SINGLE_ECDH_USE
    )
    for path, what in ((cert, "certificate"), (key, "private key")):
        if not path.is_file():
            raise TlsConfigError(f"{what} {path} does not exist or is not a file")
    try:
        ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except PermissionError as exc:
        raise TlsConfigError(f"cannot read {exc.filename}: permission denied") from None
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"certificate {cert} with key {key} is unusable: {_reason(exc)}"
        ) from None
    return ctx


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc)


def days_left(cert: Path, now: datetime.datetime | None = None) -> float:
    """Days until the first certificate in CERT expires (negative: expired)."""
    first = x509.load_pem_x509_certificate(cert.read_bytes())
    now = now or datetime.datetime.now(datetime.UTC)
    return (first.not_valid_after_utc - now).total_seconds() / 86400


def warn_if_expiring(cert: Path) -> None:
    try:
        left = days_left(cert)
    except (OSError, ValueError):
        return
    if left < 0:
        log.error("certificate %s expired %.0f days ago", cert, -left)
    elif left < EXPIRY_WARNING_DAYS:
        log.warning("certificate %s expires in %.1f days", cert, left)


class CertificateStore:
    """The context for new handshakes, reloadable from the configured files."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self.context = server_context(cert, key)
        warn_if_expiring(cert)

    def reload(self) -> bool:
        """Load the files again; on failure keep the current context."""
        try:
            self.context = server_context(self.cert, self.key)
        except TlsConfigError as exc:
            log.error("certificate reload failed, keeping the old one: %s", exc)
            return False
        log.info("certificate reloaded from %s", self.cert)
        warn_if_expiring(self.cert)
        return True

    def session(self) -> TlsSession:
        return TlsSession(self.context)


class TlsSession:
    """One server-side TLS connection over memory buffers."""

    __slots__ = ("_in", "_out", "_obj", "established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._obj = context.wrap_bio(self._in, self._out, server_side=True)
        self.established = False

    def feed(self, data: bytes) -> None:
        """Ciphertext from the peer; b"" means the peer closed the socket."""
        if data:
            self._in.write(data)
        else:
            self._in.write_eof()

    def handshake(self) -> bool:
        """Advance the handshake with what was fed; True once it is complete."""
        if self.established:
            return True
        try:
            self._obj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except (ssl.SSLError, ValueError) as exc:
            raise TlsError(_reason(exc)) from None
        self.established = True
        return True

    def read(self) -> bytes:
        """All plaintext that the fed ciphertext decrypts to (maybe b"")."""
        chunks = []
        while True:
            try:
                chunk = self._obj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                break
            except ssl.SSLError as exc:
                raise TlsError(_reason(exc)) from None
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        """Encrypt DATA; the records wait in the output buffer."""
        view = memoryview(data)
        try:
            while view:
                view = view[self._obj.write(view) :]
        except ssl.SSLError as exc:
            raise TlsError(_reason(exc)) from None

    def close(self) -> None:
        """Queue a close_notify alert (best effort)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass

    def take_output(self) -> bytes:
        """Ciphertext waiting to be sent, all of it."""
        return self._out.read() if self._out.pending else b""

    @property
    def version(self) -> str:
        return self._obj.version() or ""

    @property
    def cipher(self) -> tuple[str, int]:
        """(cipher suite name, secret bits), or ("", 0) before the handshake."""
        found = self._obj.cipher()
        return (found[0], found[2]) if found else ("", 0)

    def describe(self) -> str:
        """E.g. "TLSv1.3 TLS_AES_256_GCM_SHA384", as the spool envelope keeps it."""
        return f"{self.version} {self.cipher[0]}".strip()
