"""The portal over HTTP: CSRF, session fixation, access to pages, the form."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from support.store import seed_accounts
from tlsrelay.control import accounts, db, enablement
from tlsrelay.control.portal import COOKIE
from tlsrelay.control.web import create_app


@pytest.fixture
def portal(settings):
    seed_accounts(settings, passwords=("alice", "carol"))
    return settings, TestClient(create_app(settings))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def login(client, name):
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"username": name, "password": f"{name}-password", "csrf_token": token},
        follow_redirects=False,
    )


def test_session_fixation_rotates_the_id_at_login(portal):
    _, client = portal
    client.get("/login")
    planted = client.cookies[COOKIE]
    response = login(client, "alice")
    assert response.status_code == 303 and response.headers["location"] == "/requests"
    fresh = client.cookies[COOKIE]
    assert fresh != planted
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie

    # The id the visitor had (or an attacker planted) is not a login.
    client.cookies.clear()
    client.cookies.set(COOKIE, planted)
    assert client.get("/requests", follow_redirects=False).status_code == 303
    client.cookies.clear()
    client.cookies.set(COOKIE, fresh)
    assert client.get("/requests").status_code == 200


def test_login_refuses_wrong_password_and_missing_csrf(portal):
    _, client = portal
    token = csrf_of(client.get("/login").text)
    wrong = client.post(
        "/login",
        data={"username": "alice", "password": "nope", "csrf_token": token},
    )
    assert wrong.status_code == 401
    assert "Wrong user name or password." in wrong.text
    no_csrf = client.post(
        "/login", data={"username": "alice", "password": "alice-password"}
    )
    assert no_csrf.status_code == 403
    assert "The form has expired" in no_csrf.text


def test_csrf_token_is_bound_to_the_session(portal):
    settings, client = portal
    login(client, "alice")
    form = {"location": "LON", "server_ip": "8.8.8.8"}
    other = TestClient(client.app)
    foreign = csrf_of(other.get("/login").text)
    for token in ("", foreign, "0" * 64):
        response = client.post("/requests", data={**form, "csrf_token": token})
        assert response.status_code == 403
    with db.transaction(settings) as session:
        assert enablement.visible(session, accounts.operator("t")) == []
    ok = client.post(
        "/requests",
        data={**form, "csrf_token": csrf_of(client.get("/requests/new").text)},
        follow_redirects=False,
    )
    assert ok.status_code == 303


def test_form_shows_every_problem_and_keeps_input(portal):
    _, client = portal
    login(client, "alice")
    page = client.get("/requests/new")
    for label in ("Server location", "Relay host", "Server IP", "Further mailing IPs"):
        assert label in page.text
    response = client.post(
        "/requests",
        data={
            "csrf_token": csrf_of(page.text),
            "location": "LON",
            "relay_host": "fra-tls.relay.example:587",
            "server_ip": "10.0.0.1",
            "ips": "",
        },
    )
    assert response.status_code == 422
    assert (
        "use the relay of your server&#39;s location: lon-tls.relay.example:587"
        in response.text
    )
    assert "server IP 10.0.0.1 is a private range" in response.text
    assert 'value="10.0.0.1"' in response.text


def test_customer_cannot_reach_staff_pages(portal):
    _, client = portal
    login(client, "alice")
    for path in ("/staff/pending", "/staff/lists", "/staff/audit"):
        assert client.get(path).status_code == 403
    token = csrf_of(client.get("/requests/new").text)
    response = client.post("/staff/requests/1/approve", data={"csrf_token": token})
    assert response.status_code == 403


def test_anonymous_is_sent_to_login(portal):
    _, client = portal
    for path in ("/requests", "/requests/new", "/postfix", "/staff/pending"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=")


def test_staff_decide_in_the_portal(portal):
    settings, client = portal
    sub = enablement.Submission(location="LON", server_ip="8.8.8.8", customer="acme")
    rid = enablement.submit_and_notify(settings, accounts.operator("t"), sub)["id"]
    login(client, "carol")
    queue = client.get("/staff/pending")
    assert f"Request {rid}" in queue.text
    token = csrf_of(queue.text)
    empty = client.post(
        f"/staff/requests/{rid}/reject", data={"csrf_token": token, "reason": " "}
    )
    assert empty.status_code == 422
    done = client.post(
        f"/staff/requests/{rid}/approve",
        data={"csrf_token": token},
        follow_redirects=False,
    )
    assert done.headers["location"] == f"/staff/pending?done=approved&id={rid}"
    assert "8.8.8.8/32" in client.get("/staff/lists").text
    assert "request.approve" in client.get("/staff/audit").text


def test_login_redirect_stays_on_site(portal):
    _, client = portal
    token = csrf_of(client.get("/login").text)
    response = client.post(
        "/login",
        data={
            "username": "alice",
            "password": "alice-password",
            "csrf_token": token,
            "next": "//evil.example/",
        },
        follow_redirects=False,
    )
    assert response.headers["location"] == "/requests"
