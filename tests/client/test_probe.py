"""`tlsrelay probe` and the SMTP side of `client check`, against a test MX.

The MX (tests/support/mx.py) listens on loopback with a trustme certificate
for mx.example.org; a loopback DNS server maps that name to 127.0.0.1.
Case 20 (STARTTLS missing or refused) and case 07 (plaintext after the 220
to STARTTLS) are here from the customer tool's side.
"""

from __future__ import annotations

import json
import socket
import ssl
import threading

import pytest
import trustme

from support.dns import DnsServer
from support.mx import MxOptions, TestMx
from tlsrelay.cli.main import main
from tlsrelay.client import probe as probing
from tlsrelay.client import tlsinfo

MX = "mx.example.org"


@pytest.fixture
def ca_file(tmp_path):
    def write(mx: TestMx):
        path = tmp_path / "ca.pem"
        mx.ca.cert_pem.write_to_path(path)
        return path

    return write


def run_probe(mx: TestMx, cafile=None, name=MX, **options) -> probing.ProbeResult:
    opts = probing.ProbeOptions(cafile=cafile, helo="client.example", **options)
    return probing.probe(name, "127.0.0.1", mx.port, opts)


def codes(found) -> list[tuple[str, str]]:
    return [(f.severity, f.code) for f in found]


def test_probe_reports_banner_extensions_tls_and_certificate(ca_file):
    greeting = ("220-mx.example.org ESMTP", "220-second line", "220 last line")
    with TestMx(MxOptions(greeting=greeting)) as mx:
        result = run_probe(mx, ca_file(mx))
    assert result.error == ""
    assert result.banner == "220 mx.example.org ESMTP second line last line"
    assert "STARTTLS" in result.extensions and "PIPELINING" in result.extensions
    assert result.starttls_offered and result.starttls_reply.startswith("220")
    assert "STARTTLS" not in result.extensions_tls
    tls = result.tls
    assert tls.version in ("TLSv1.2", "TLSv1.3") and tls.cipher and tls.bits >= 128
    assert [c.names for c in tls.chain] == [(MX,)]
    assert tls.name_match and tls.trusted is True
    assert tls.days_left > 300
    assert codes(probing.findings(result)) == [
        ("ok", "starttls"),
        ("ok", "cert-name"),
        ("ok", "cert-trusted"),
    ]
    assert "name match yes" in probing.render(result)


def test_case20_starttls_not_offered_is_an_error():
    with TestMx(MxOptions(starttls=False)) as mx:
        result = run_probe(mx)
        assert [s.received for s in mx.sessions][0].count(b"STARTTLS") == 0
    assert not result.starttls_offered and result.tls is None
    found = probing.findings(result)
    assert codes(found) == [("error", "starttls-missing")]
    assert "encrypt" in found[0].fix


def test_case20_starttls_refused_with_454_is_an_error():
    reply = "454 4.7.0 TLS not available due to local problem"
    with TestMx(MxOptions(starttls_reply=reply)) as mx:
        result = run_probe(mx)
    assert codes(probing.findings(result)) == [("error", "starttls-refused")]
    assert result.starttls_reply == reply


def test_case07_plaintext_after_starttls_220_is_discarded_and_reported(ca_file):
    injected = b"250-mx.example.org\r\n250 AUTH PLAIN\r\n"
    with TestMx(MxOptions(inject_after_starttls=injected)) as mx:
        result = run_probe(mx, ca_file(mx))
    assert result.discarded_plaintext == len(injected)
    # The extensions come from the EHLO sent inside TLS, not the injection.
    assert "AUTH PLAIN" not in result.extensions_tls
    assert "PIPELINING" in result.extensions_tls
    assert ("warning", "plaintext-after-starttls") in codes(probing.findings(result))


def test_name_mismatch_and_untrusted_certificate(tmp_path):
    other_ca = trustme.CA()
    other_ca.cert_pem.write_to_path(tmp_path / "other.pem")
    with TestMx() as mx:
        result = run_probe(mx, tmp_path / "other.pem", name="relay.example.net")
    assert not result.tls.name_match and result.tls.trusted is False
    found = codes(probing.findings(result))
    assert ("error", "cert-name-mismatch") in found
    assert ("warning", "cert-untrusted") in found
    assert ("error", "cert-untrusted") in codes(
        probing.findings(result, tls_required_trust=True)
    )


@pytest.mark.parametrize(
    "mail_reply, access, finding",
    [
        ("250 2.1.0 Ok", "listed", ("ok", "access-listed")),
        ("450 4.7.1 enablement pending", "pending", ("warning", "access-pending")),
        ("554 5.7.1 not enabled, see portal", "unknown", ("error", "access-unknown")),
        ("451 4.3.0 try later", "no-snapshot", ("error", "access-other")),
    ],
)
def test_access_probe(mail_reply, access, finding):
    with TestMx(MxOptions(mail_reply=mail_reply)) as mx:
        result = run_probe(mx, access_host="mail.example.com")
        received = mx.sessions[0].received
    assert result.access == access and result.access_reply == mail_reply
    assert codes(probing.findings(result))[-1] == finding
    tail = received.split(b"MAIL FROM:", 1)[1]
    assert tail.startswith(b"<postmaster@mail.example.com>\r\n")
    assert b"RCPT" not in received and b"DATA" not in received
    assert tail.endswith(b"RSET\r\nQUIT\r\n")


def test_smtps_probe(ca_file):
    # Implicit TLS: a bare TLS listener in front of a one-reply SMTP server.
    ca = trustme.CA()
    cert = ca.issue_cert(MX)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"220 mx.example.org ESMTP\r\n")
            tls.recv(100)
            tls.sendall(b"250-mx.example.org\r\n250 SIZE 1000\r\n")
            tls.recv(100)
            tls.sendall(b"221 bye\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    opts = probing.ProbeOptions(smtps=True, helo="client.example")
    result = probing.probe(MX, "127.0.0.1", listener.getsockname()[1], opts)
    thread.join(5)
    listener.close()
    assert result.error == "" and result.tls.name_match
    assert result.extensions_tls == ["SIZE 1000"]


def test_probe_command_json(ca_file, capsys):
    with DnsServer() as dns, TestMx() as mx:
        dns.add(MX, "A", "127.0.0.1")
        argv = ["probe", f"{MX}:{mx.port}", "--dns", dns.nameserver, "--json"]
        status = main([*argv, "--cafile", str(ca_file(mx)), "--helo", "c.example"])
    document = json.loads(capsys.readouterr().out)
    assert status == 0
    assert document["address"] == "127.0.0.1"
    assert document["tls"]["chain"][0]["names"] == [MX]
    assert document["tls"]["trusted"] is True


def test_probe_command_fails_without_starttls(capsys):
    with DnsServer() as dns, TestMx(MxOptions(starttls=False)) as mx:
        dns.add(MX, "A", "127.0.0.1")
        status = main(["probe", f"{MX}:{mx.port}", "--dns", dns.nameserver])
    out = capsys.readouterr().out
    assert status == 1
    assert "starttls   NOT offered" in out and "[starttls-missing]" in out


# -- the chain as the server sent it ------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_chain_with_intermediate_is_read_from_the_handshake(tmp_path, version):
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    cert = intermediate.issue_cert(MX)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.maximum_version = version
    cert.configure_cert(server)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        with server.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    # OpenSSL verifies the chain during the handshake: the intermediate
    # must come from the server.
    context, capture = tlsinfo.client_context(tmp_path / "ca.pem")
    with socket.create_connection(listener.getsockname()) as raw:
        with context.wrap_socket(raw, server_hostname=MX) as tls:
            report = tlsinfo.report(tls, capture, MX, (True, "ok"))
    thread.join(5)
    listener.close()
    assert report.version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2"}.get(version, "TLSv1.3")
    assert len(report.chain) == 2
    assert report.chain[0].issuer == report.chain[1].subject
    assert report.trusted is True


def test_name_matching_rules():
    assert tlsinfo.name_matches("a.example.org", ["*.example.org"])
    assert not tlsinfo.name_matches("b.a.example.org", ["*.example.org"])
    assert not tlsinfo.name_matches("example.org", ["*.example.org"])
    assert not tlsinfo.name_matches("a.org", ["*.org"])
    assert tlsinfo.name_matches("MX.Example.org.", ["mx.example.org"])
