"""The portal end to end in Debian's chromium, driven by Playwright.

A real control process serves the portal (uvicorn) on a free loopback port.
A customer logs in, submits the "enable TLS" form and sees the request
pending; staff log in, approve it, and the node's snapshot lists the IP
within a second. Each page is saved as a screenshot: into docs/screenshots/
when TLSRELAY_SCREENSHOTS names that folder (to refresh the documentation),
else into the test's temporary directory, so a test run leaves the tree clean.
Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from support.store import fresh_store, seed_accounts, write_config
from support.tools import need
from tlsrelay import config
from tlsrelay.control import db

pytestmark = pytest.mark.interop

SCREENSHOTS = os.environ.get("TLSRELAY_SCREENSHOTS", "")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def reachable(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def portal(request, tmp_path):
    with fresh_store(request.param, tmp_path) as url:
        port = free_port()
        path = write_config(
            tmp_path,
            url,
            portal={"listen": f"127.0.0.1:{port}", "secret": "s" * 32},
        )
        settings = config.load(path)
        db.upgrade(settings)
        seed_accounts(settings, passwords=("alice", "carol"))
        log = open(tmp_path / "control.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "tlsrelay.control.process", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: reachable(base + "/login"), 20, "the portal")
            yield settings, base, request.param
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def screenshot_folder(backend: str, tmp_path: Path) -> Path:
    # One set is kept for the docs; SQLite's run writes it.
    if SCREENSHOTS and backend == "sqlite":
        return Path(SCREENSHOTS)
    return tmp_path / "screenshots"


def shot(page, name: str, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def log_in(page, base: str, name: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(f"{name}-password")
    page.get_by_role("button", name="Log in").click()


def test_customer_submits_and_staff_approve(portal, tmp_path):
    settings, base, backend = portal
    shots = screenshot_folder(backend, tmp_path)
    chromium = need("chromium")
    snapshot = settings.snapshot_path("LON")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            customer = browser.new_context().new_page()
            customer.goto(base + "/login")
            shot(customer, "01-login", shots)
            log_in(customer, base, "alice")
            customer.get_by_role("link", name="Enable TLS relaying").first.click()

            # A wrong relay host is refused with the precise message.
            customer.get_by_label("Server location").select_option("LON")
            customer.get_by_label("Relay host").fill("fra-tls.relay.example:587")
            customer.get_by_label("Server IP").fill("8.8.8.8")
            customer.get_by_label("Further mailing IPs").fill("8.8.4.4")
            customer.get_by_role("button", name="Submit request").click()
            alert = customer.get_by_role("alert")
            assert "use the relay of your server's location: " in alert.inner_text()
            shot(customer, "02-request-form-refused", shots)

            customer.get_by_label("Relay host").fill("lon-tls.relay.example:587")
            customer.get_by_role("button", name="Submit request").click()
            assert "Your request was received" in customer.inner_text("main")
            assert "pending" in customer.inner_text("main")
            shot(customer, "03-request-submitted", shots)
            request_url = customer.url
            wait_for(
                lambda: "8.8.8.8/32" in json.loads(snapshot.read_text())["pending"],
                1.0,
                "the pending IP in the snapshot",
            )
            customer.get_by_role("link", name="My requests").click()
            shot(customer, "04-my-requests", shots)
            customer.get_by_role("link", name="Postfix settings").click()
            assert "relayhost = [lon-tls.relay.example]:587" in customer.inner_text(
                "main"
            )
            shot(customer, "05-postfix-settings", shots)

            staff = browser.new_context().new_page()
            log_in(staff, base, "carol")
            assert "Pending requests" in staff.inner_text("h1")
            shot(staff, "06-staff-pending", shots)
            staff.get_by_role("button", name="Approve request").first.click()
            approved = time.monotonic()
            assert "approved" in staff.get_by_role("status").inner_text()
            wait_for(
                lambda: "8.8.8.8/32" in json.loads(snapshot.read_text())["allowed"],
                1.0,
                "the approved IP in the snapshot",
            )
            assert time.monotonic() - approved < 1.0
            shot(staff, "07-staff-approved", shots)
            staff.get_by_role("link", name="Filtering lists").click()
            assert "8.8.4.4/32" in staff.inner_text("main")
            shot(staff, "08-staff-lists", shots)
            staff.get_by_role("link", name="Audit log").click()
            assert "request.approve" in staff.inner_text("main")
            shot(staff, "09-staff-audit", shots)

            customer.goto(request_url)
            assert "approved" in customer.inner_text("main")
            assert "postqueue -f" in customer.inner_text("main")
            shot(customer, "10-request-approved", shots)
        finally:
            browser.close()
