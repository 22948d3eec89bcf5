"""`tlsrelay probe` and the online part of `client check`: ask an SMTP server.

One session: greeting (its final `220 ` line), EHLO, STARTTLS (or TLS from
the first byte with --smtps), the handshake report from tlsinfo.py, EHLO
again inside TLS, and optionally the access probe of DESIGN.md:
`MAIL FROM:<postmaster@HOST>` answered 250 (listed), 450 (pending) or 554
(unknown), then RSET and QUIT. Case 20: a server that does not offer
STARTTLS, or offers it and answers 454, is reported as an error, never
talked to in plaintext beyond EHLO.

It never sends RCPT, DATA or any message, and sends MAIL only when asked to.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from tlsrelay.client import findings as F
from tlsrelay.client import tlsinfo
from tlsrelay.client.dialogue import Dialogue, DialogueError, Reply
from tlsrelay.client.findings import Finding

# DESIGN.md's reply table, read from the customer's side.
ACCESS_BY_CODE = {250: "listed", 450: "pending", 554: "unknown", 451: "no-snapshot"}
EXPIRY_WARNING_DAYS = 14


@dataclass
class ProbeResult:
    host: str
    port: int
    address: str
    smtps: bool = False
    banner: str = ""
    extensions: list[str] = field(default_factory=list)
    starttls_offered: bool = False
    starttls_reply: str = ""
    tls: tlsinfo.TlsReport | None = None
    extensions_tls: list[str] = field(default_factory=list)
    discarded_plaintext: int = 0
    access: str = ""
    access_reply: str = ""
    error: str = ""
    error_code: str = ""

    def fail(self, code: str, message: str) -> None:
        self.error_code, self.error = code, message

    def as_dict(self) -> dict[str, object]:
        document = dict(self.__dict__)
        document["tls"] = self.tls.as_dict() if self.tls else None
        return document


@dataclass(frozen=True)
class ProbeOptions:
    smtps: bool = False
    cafile: Path | None = None
    helo: str = ""
    timeout_s: float = 30.0
    source_ip: str | None = None
    # Set to run the access probe: MAIL FROM:<postmaster@access_host>.
    access_host: str = ""
    now: dt.datetime | None = None


def probe(host: str, address: str, port: int, options: ProbeOptions) -> ProbeResult:
    """Talk to ADDRESS:PORT as to HOST; every failure lands in result.error.

    With a CA bundle the first session verifies the chain; if OpenSSL refuses
    it, a second session without verification gathers the details to show.
    """
    cafile = options.cafile if options.cafile and options.cafile.exists() else None
    if cafile is None:
        trust = (None, f"not verified: no CA bundle ({options.cafile or 'none'})")
        return _attempt(host, address, port, options, None, trust)
    result = _attempt(host, address, port, options, cafile, (True, ""))
    if result.error_code != "cert-verify-failed":
        return result
    refused = (False, f"not trusted by {cafile}: {result.error}")
    return _attempt(host, address, port, options, None, refused)


def _attempt(host, address, port, options, cafile, trust) -> ProbeResult:
    if trust[0] and not trust[1]:
        trust = (True, f"trusted by {cafile}")
    result = ProbeResult(host, port, address, options.smtps)
    try:
        dialogue = Dialogue.connect(address, port, options.timeout_s, options.source_ip)
    except DialogueError as exc:
        result.fail(exc.code, str(exc))
        return result
    try:
        _session(dialogue, result, options, cafile, trust)
    except DialogueError as exc:
        result.fail(exc.code, str(exc))
    finally:
        dialogue.quit()
    return result


def _greeting(dialogue, options: ProbeOptions, context, host: str):
    """TLS first with --smtps, then the 220; a wrong port type is named."""
    if options.smtps:
        try:
            dialogue.start_tls(context, host)
        except DialogueError as exc:
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError) and "WRONG_VERSION" in str(cause):
                raise DialogueError(
                    f"{exc}; the server spoke plaintext: a STARTTLS port "
                    "(587) takes no --smtps",
                    exc.code,
                ) from exc
            raise
        return dialogue.read_reply()
    try:
        return dialogue.read_reply()
    except DialogueError as exc:
        if not isinstance(exc.__cause__, TimeoutError):
            raise
        raise DialogueError(
            f"no greeting within {options.timeout_s:g} s; an implicit-TLS "
            "(smtps, 465) port waits for the client's TLS hello: use --smtps",
            exc.code,
        ) from exc


def _session(dialogue, result: ProbeResult, options: ProbeOptions, cafile, trust):
    helo = options.helo or socket.getfqdn()
    context, capture = tlsinfo.client_context(cafile)
    greeting = _greeting(dialogue, options, context, result.host)
    result.banner = str(greeting)
    if greeting.code != 220:
        result.fail("greeting-refused", f"greeting is not 220: {greeting}")
        return
    ehlo = _ehlo(dialogue, helo)
    if options.smtps:
        result.extensions_tls = ehlo
    else:
        result.extensions = ehlo
        result.starttls_offered = "STARTTLS" in (e.split()[0] for e in ehlo if e)
        if not result.starttls_offered:
            result.fail("starttls-missing", "EHLO does not list STARTTLS")
            return
        reply = dialogue.starttls(context, result.host)
        result.starttls_reply = str(reply)
        result.discarded_plaintext = len(dialogue.discarded_after_starttls)
        if reply.code != 220:
            result.fail("starttls-refused", f"STARTTLS refused: {reply}")
            return
        result.extensions_tls = _ehlo(dialogue, helo)
    result.tls = tlsinfo.report(dialogue.sock, capture, result.host, trust, options.now)
    if options.access_host:
        _access(dialogue, result, options.access_host)


def _ehlo(dialogue: Dialogue, helo: str) -> list[str]:
    reply = dialogue.command(f"EHLO {helo}")
    if reply.code != 250:
        raise DialogueError(f"EHLO refused: {reply}")
    return list(reply.lines[1:])


def _access(dialogue: Dialogue, result: ProbeResult, access_host: str) -> None:
    reply: Reply = dialogue.command(f"MAIL FROM:<postmaster@{access_host}>")
    result.access = ACCESS_BY_CODE.get(reply.code, "other")
    result.access_reply = str(reply)
    dialogue.command("RSET")


def findings(result: ProbeResult, tls_required_trust: bool = False) -> list[Finding]:
    """What the session says about the server, worst first within each step."""
    where = f"{result.host}:{result.port}"
    if result.error and result.tls is None:
        code = result.error_code
        return [F.error(code, f"{where}: {result.error}", _ERROR_FIXES.get(code, ""))]
    found = [F.ok("starttls", f"{where}: {_tls_line(result)}")]
    if result.discarded_plaintext:
        found.append(
            F.warning(
                "plaintext-after-starttls",
                f"{where}: {result.discarded_plaintext} bytes followed the 220 to "
                f"STARTTLS in plaintext (discarded); something on the path may "
                f"be injecting replies",
            )
        )
    if any(e.split()[:1] == ["STARTTLS"] for e in result.extensions_tls):
        found.append(
            F.warning("starttls-after-tls", f"{where}: EHLO inside TLS lists STARTTLS")
        )
    found += _certificate(result, where, tls_required_trust)
    if result.access:
        found.append(_access_finding(result, where))
    if result.error:
        found.append(F.error(result.error_code, f"{where}: {result.error}"))
    return found


_ERROR_FIXES = {
    "starttls-missing": "the relay has lost TLS: contact the provider; with "
    "smtp_tls_security_level = encrypt your mail waits in the queue meanwhile",
    "starttls-refused": "the relay cannot do TLS now (454): contact the provider",
}


def _tls_line(result: ProbeResult) -> str:
    tls = result.tls
    assert tls is not None
    return f"{tls.version} {tls.cipher} ({tls.bits} bits)"


def _certificate(result: ProbeResult, where: str, need_trust: bool) -> list[Finding]:
    tls = result.tls
    assert tls is not None
    found = []
    leaf = tls.chain[0] if tls.chain else None
    names = ", ".join(leaf.names) if leaf else "none"
    if tls.name_match:
        found.append(F.ok("cert-name", f"{where}: certificate names {names}"))
    else:
        found.append(
            F.error(
                "cert-name-mismatch",
                f"{where}: certificate names {names}, not {result.host}",
            )
        )
    if tls.days_left < 0:
        found.append(F.error("cert-expired", f"{where}: certificate has expired"))
    elif tls.days_left < EXPIRY_WARNING_DAYS:
        found.append(
            F.warning(
                "cert-expiring", f"{where}: certificate expires in {tls.days_left} days"
            )
        )
    if tls.trusted is False:
        make = F.error if need_trust else F.warning
        found.append(make("cert-untrusted", f"{where}: {tls.trust_detail}"))
    elif tls.trusted:
        found.append(F.ok("cert-trusted", f"{where}: {tls.trust_detail}"))
    return found


def _access_finding(result: ProbeResult, where: str) -> Finding:
    reply = result.access_reply
    if result.access == "listed":
        return F.ok("access-listed", f"{where}: this server is enabled ({reply})")
    if result.access == "pending":
        return F.warning(
            "access-pending",
            f"{where}: the enablement request is pending ({reply}); the relay "
            f"answers 450 and Postfix keeps the mail queued until it is approved",
        )
    if result.access == "unknown":
        return F.error(
            "access-unknown",
            f"{where}: this server's IP is not enabled ({reply})",
            "tlsrelay client request --location LOC --server-ip IP ...",
        )
    return F.error("access-other", f"{where}: unexpected answer to MAIL: {reply}")


def render(result: ProbeResult) -> str:
    """The probe report for people."""
    lines = [f"server     {result.host} [{result.address}]:{result.port}"]
    if result.banner:
        lines.append(f"banner     {result.banner}")
    for name, extensions in (
        ("ehlo", result.extensions),
        ("ehlo tls", result.extensions_tls),
    ):
        if extensions:
            lines.append(f"{name:<10} {', '.join(extensions)}")
    if not result.smtps and result.banner:
        offered = "offered" if result.starttls_offered else "NOT offered"
        lines.append(f"starttls   {offered} {result.starttls_reply}".rstrip())
    if result.tls:
        lines += _render_tls(result.tls)
    if result.access:
        lines.append(f"access     {result.access} ({result.access_reply})")
    if result.error:
        lines.append(f"error      {result.error}")
    return "\n".join(lines)


def _render_tls(tls: tlsinfo.TlsReport) -> list[str]:
    lines = [f"tls        {tls.version} {tls.cipher} ({tls.bits} bits)"]
    for depth, cert in enumerate(tls.chain):
        lines.append(f"cert {depth}     subject {cert.subject}")
        lines.append(f"           issuer  {cert.issuer}")
        lines.append(f"           names   {', '.join(cert.names) or '-'}")
        lines.append(f"           expires {cert.not_after}")
    lines.append(f"name match {'yes' if tls.name_match else 'NO'}")
    lines.append(f"expiry     {tls.days_left} days")
    lines.append(f"trust      {tls.trust_detail}")
    return lines
