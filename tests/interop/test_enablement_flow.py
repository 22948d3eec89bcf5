"""Issue 3 end to end: enablement in the browser, mail from a real Postfix.

One tlsrelay node runs `serve` with its control process serving the portal
([portal] set), on SQLite and on PostgreSQL. Its delivery routes the
recipients' domain (dest.example) and the customer contact's domain
(acme.test) to Postfix's smtp-sink. The customer's MTA is a real Debian
Postfix relaying everything to the node over mandatory TLS from its own
loopback address, which starts unknown to the relay (554 5.7.1).

The flow: the customer submits the "enable TLS" form in Chromium, the relay
answers the pending IP 450 4.7.1 and Postfix keeps its mail queued; staff
approve in Chromium; within a second the relay accepts MAIL from that IP;
`postqueue -f` sends the held mail, which reaches the sink unchanged but for
the relay's one Received: header; and the submit and approval notices reach
the sink for the customer's contact address.

When a step fails, the assertion names the node's log (serve, workers,
delivery and control process) and the customer Postfix's mail log.
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from support import postfix
from support.node import HOSTNAME, Node, wait_for
from support.store import fresh_store, seed_accounts
from support.tools import need
from tlsrelay import config
from tlsrelay.control import db

pytestmark = pytest.mark.interop

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# A source address of its own per backend, on no list of the node at start.
CUSTOMER_IP = {"sqlite": "127.0.0.71", "postgresql": "127.0.0.72"}
CONTACT = "ops@acme.test"  # customer acme's contact (support.store.seed_accounts)
NOTICE_FROM = f"postmaster@{HOSTNAME}"
APPROVE_WITHIN_S = 1.0


@dataclass
class Site:
    backend: str
    node: Node
    sink: postfix.SmtpSink
    portal: str  # base URL

    @property
    def ca_file(self) -> Path:
        path = self.node.dir / "ca.pem"
        if not path.exists():
            self.node.ca.cert_pem.write_to_path(str(path))
        return path

    def evidence(self) -> str:
        return f"{self.node.describe()}; sink dumps in {self.sink.dumps}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _portal_up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def site(request, tmp_path) -> Iterator[Site]:
    """A node with the portal and a sink, its store seeded with customer acme
    (user alice) and staff user carol, both with portal passwords."""
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_store(request.param, tmp_path))
        sink = stack.enter_context(postfix.SmtpSink(tmp_path / "sink"))
        port = _free_port()
        node = Node.create(
            tmp_path,
            routes={"dest.example": sink.address, "acme.test": sink.address},
            control=True,
            overrides={
                "store": {"url": url},
                "portal": {"listen": f"127.0.0.1:{port}", "secret": "p" * 32},
            },
        )
        settings = config.load(node.config_path)
        db.upgrade(settings)
        seed_accounts(settings, passwords=("alice", "carol"))
        stack.callback(node.stop)
        node.start()
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _portal_up(base + "/login"), 20, f"the portal at {base}")
        yield Site(request.param, node, sink, base)


def access_reply(node: Node, ip: str) -> tuple[int, str]:
    """The relay's answer to MAIL from IP (the access probe), then RSET, QUIT."""
    with node.open_session(source=ip, helo="probe.acme.test") as wire:
        code, lines = wire.command("MAIL FROM:<postmaster@acme.test>")
        wire.command("RSET")
        wire.command("QUIT")
    return code, " ".join(lines)


def log_in(page, base: str, name: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(f"{name}-password")
    page.get_by_role("button", name="Log in").click()


def queued_content(mta: postfix.PostfixInstance, queue_id: str) -> bytes:
    """Header and body of a queued message as Postfix will send it."""
    argv = [need("postcat"), "-c", str(mta.etc), "-bh", "-q", queue_id]
    return subprocess.run(argv, capture_output=True, check=True, timeout=30).stdout


def split_top_header(content: bytes) -> tuple[bytes, bytes]:
    """(first header field with its continuation lines, the rest)."""
    first, _, rest = content.partition(b"\n")
    while rest[:1] in (b" ", b"\t"):
        line, _, rest = rest.partition(b"\n")
        first += b"\n" + line
    return first + b"\n", rest


def test_browser_enablement_releases_held_postfix_mail(site, tmp_path):
    node, sink = site.node, site.sink
    ip = CUSTOMER_IP[site.backend]
    # The control process publishes at start; until then the node says 451.
    code, text = wait_for(
        lambda: (r := access_reply(node, ip))[0] != 451 and r,
        10,
        f"a first snapshot; {site.evidence()}",
    )
    assert code == 554 and text.startswith("5.7.1"), (code, text)

    mta = postfix.customer(
        tmp_path / "customer", node.submission_port, site.ca_file, ip
    )
    with mta, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=need("chromium"), args=CHROMIUM_ARGS
        )
        try:
            # The customer asks for its server's IP in the portal.
            customer = browser.new_context().new_page()
            log_in(customer, site.portal, "alice")
            customer.get_by_role("link", name="Enable TLS relaying").first.click()
            customer.get_by_label("Server location").select_option("LON")
            customer.get_by_label("Server IP").fill(ip)
            customer.get_by_label("Note to staff").fill("our Postfix, end to end")
            customer.get_by_role("button", name="Submit request").click()
            assert "Your request was received" in customer.inner_text("main")
            assert "pending" in customer.inner_text("main")
            request_id = int(re.search(r"/requests/(\d+)", customer.url).group(1))

            # Pending: 450 4.7.1, and Postfix keeps the mail it sends now.
            code, text = wait_for(
                lambda: (r := access_reply(node, ip))[0] == 450 and r,
                5,
                f"450 for the pending {ip}; {site.evidence()}",
            )
            assert text.startswith("4.7.1"), text
            mta.sendmail(
                f"alice@{mta.domain}",
                ["held-bob@dest.example"],
                b"From: Alice <alice@customer.test>\n"
                b"To: Bob <held-bob@dest.example>\n"
                b"Subject: held while pending\n"
                b"Message-ID: <held-" + site.backend.encode() + b"@customer.test>\n"
                b"\n"
                b"Sent before approval.\n"
                b".a line that starts with a dot\n",
            )
            deferred = mta.wait_for_log(
                r"(?P<qid>[0-9A-F]+): to=<held-bob@dest\.example>, "
                r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, .*status=deferred "
                r"\(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 450 4\.7\.1 ",
                timeout_s=30,
            )
            queue_id = deferred.group("qid")
            [held] = mta.queue()
            assert held["queue_id"] == queue_id
            assert held["queue_name"] == "deferred"
            [reason] = [r["delay_reason"] for r in held["recipients"]]
            assert "said: 450 4.7.1 " in reason, reason
            sent_content = queued_content(mta, queue_id)
            assert b"\n\nSent before approval.\n" in sent_content, sent_content
            assert not [
                p for p in sink.dumps.glob("msg.*") if b"held-bob" in p.read_bytes()
            ], f"the relay passed on mail from a pending IP; {site.evidence()}"

            # Staff approve; the relay accepts that IP within a second.
            staff = browser.new_context().new_page()
            log_in(staff, site.portal, "carol")
            approve = staff.get_by_role("button", name=f"Approve request {request_id}")
            clicked = time.monotonic()
            approve.click()
            assert "approved" in staff.get_by_role("status").inner_text()
            code, text = wait_for(
                lambda: (r := access_reply(node, ip))[0] == 250 and r,
                APPROVE_WITHIN_S,
                f"250 for the approved {ip}; {site.evidence()}",
            )
            took = time.monotonic() - clicked
            assert took < APPROVE_WITHIN_S, f"accepted {took:.2f} s after approval"
        finally:
            browser.close()

        # The next retry (now, by postqueue -f) delivers the held mail.
        mta.flush()
        mta.wait_for_log(
            rf"{queue_id}: to=<held-bob@dest\.example>, .*status=sent "
            r"\(250 2\.0\.0 ",
            timeout_s=30,
        )
        [got] = sink.wait_for(1, where=postfix.to_prefix("held-"))
        assert mta.queue() == []

    assert got.sender == f"alice@{mta.domain}"
    assert got.recipients == ["held-bob@dest.example"]
    relay_received, rest = split_top_header(got.content)
    assert relay_received.startswith(b"Received: from "), got.content
    assert b"(tlsrelay)" in relay_received and f"[{ip}]".encode() in relay_received
    assert rest == sent_content, f"content changed in transit; {site.evidence()}"

    # The contact got the submit notice and the approval notice, via the relay.
    notices = sink.wait_for(2, where=lambda m: m.recipients == [CONTACT])
    assert len(notices) == 2, [m.path for m in notices]
    by_subject = {m.message()["Subject"]: m for m in notices}
    prefix = f"[tlsrelay] request {request_id} for LON"
    assert set(by_subject) == {
        f"{prefix} received",
        f"{prefix} approved: you can relay now",
    }, sorted(by_subject)
    for m in notices:
        assert m.sender == NOTICE_FROM
        assert m.message()["To"] == CONTACT
    approval = by_subject[f"{prefix} approved: you can relay now"].message()
    body = approval.get_payload(decode=True).decode()
    assert ip in body and "postqueue -f" in body, body
