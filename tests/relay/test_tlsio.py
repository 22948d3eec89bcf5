"""The memory-BIO TLS adapter and the server policy, without sockets."""

from __future__ import annotations

import datetime
import ssl

import pytest
import trustme

from tlsrelay.relay.tlsio import (
    CertificateStore,
    TlsConfigError,
    TlsError,
    TlsSession,
    server_context,
)

HOST = "lon-tls.relay.example"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def cert_files(tmp_path, ca):
    cert = ca.issue_cert(HOST)
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    cert.private_key_pem.write_to_path(tmp_path / "key.pem")
    return tmp_path / "cert.pem", tmp_path / "key.pem"


class Client:
    """A client SSLObject over memory BIOs, wired to a TlsSession by hand."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=HOST)

    def handshake(self, server: TlsSession, rounds: int = 6) -> None:
        for _ in range(rounds):
            try:
                self.obj.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            server.feed(self.outgoing.read())
            server.handshake()
            self.incoming.write(server.take_output())
            if done and server.established:
                return
        raise AssertionError("handshake did not finish")


def client_context(ca: trustme.CA, **settings) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(ctx)
    for name, value in settings.items():
        setattr(ctx, name, value)
    return ctx


def test_handshake_and_data_both_ways(cert_files, ca):
    server = TlsSession(server_context(*cert_files))
    client = Client(client_context(ca))
    client.handshake(server)

    client.obj.write(b"EHLO client.example\r\n")
    server.feed(client.outgoing.read())
    assert server.read() == b"EHLO client.example\r\n"

    server.write(b"250 ok\r\n")
    client.incoming.write(server.take_output())
    assert client.obj.read() == b"250 ok\r\n"
    assert server.version == "TLSv1.3"
    assert server.describe() == f"TLSv1.3 {server.cipher[0]}"


def test_tickets_come_out_with_the_step_that_completes_the_handshake(cert_files, ca):
    # The cause of the 40 ms stall: these bytes exist before any reply does,
    # so the listener must send them together with the reply, not alone.
    server = TlsSession(server_context(*cert_files))
    client = Client(client_context(ca))
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.do_handshake()
    server.feed(client.outgoing.read())
    assert not server.handshake()
    client.incoming.write(server.take_output())
    client.obj.do_handshake()
    server.feed(client.outgoing.read())
    assert server.handshake()
    tickets = server.take_output()
    assert tickets, "TLS 1.3 server sends NewSessionTicket after client Finished"


def test_tls_1_2_is_accepted_with_an_ecdhe_aead_cipher(cert_files, ca):
    server = TlsSession(server_context(*cert_files))
    ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    client = Client(ctx)
    client.handshake(server)
    assert server.version == "TLSv1.2"
    name = server.cipher[0]
    assert name.startswith("ECDHE-") and ("GCM" in name or "CHACHA20" in name)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused(cert_files, ca):
    server = TlsSession(server_context(*cert_files))
    ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    client = Client(ctx)
    with pytest.raises(TlsError):
        client.handshake(server)


def test_tls_1_2_cbc_cipher_is_refused(cert_files, ca):
    server = TlsSession(server_context(*cert_files))
    ctx = client_context(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA")
    client = Client(ctx)
    with pytest.raises(TlsError):
        client.handshake(server)


def test_server_cipher_order_wins(cert_files):
    ctx = server_context(*cert_files)
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    for cipher in ctx.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]


def test_missing_certificate_names_the_file(tmp_path):
    with pytest.raises(TlsConfigError, match=r"certificate .*cert\.pem does not exist"):
        server_context(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_key_not_matching_the_certificate_is_refused(tmp_path, ca, cert_files):
    other = ca.issue_cert("other.example")
    other.private_key_pem.write_to_path(tmp_path / "other-key.pem")
    with pytest.raises(TlsConfigError, match="unusable"):
        server_context(cert_files[0], tmp_path / "other-key.pem")


def test_reload_swaps_the_context_for_new_sessions_only(cert_files, tmp_path):
    store = CertificateStore(*cert_files)
    running = store.session()
    first = store.context

    new_ca = trustme.CA()
    issued = new_ca.issue_cert(HOST)
    issued.cert_chain_pems[0].write_to_path(cert_files[0])
    issued.private_key_pem.write_to_path(cert_files[1])
    assert store.reload()
    assert store.context is not first

    client = Client(client_context(new_ca))
    client.handshake(store.session())
    assert running._obj.context is first


def test_failed_reload_keeps_the_old_certificate(cert_files):
    store = CertificateStore(*cert_files)
    before = store.context
    cert_files[0].write_text("not a certificate")
    assert not store.reload()
    assert store.context is before


def test_a_certificate_close_to_expiry_is_reported(tmp_path, caplog):
    ca = trustme.CA()
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    issued = ca.issue_cert(HOST, not_after=soon)
    issued.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    issued.private_key_pem.write_to_path(tmp_path / "key.pem")
    CertificateStore(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert "expires in 2.9 days" in caplog.text or "expires in 3.0 days" in caplog.text
