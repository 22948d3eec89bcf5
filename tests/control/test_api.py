"""The HTTP API: authorisation matrix, status codes, OpenAPI conformance."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from support.store import seed_accounts
from tlsrelay.control import accounts, enablement
from tlsrelay.control.web import create_app

WHO = ("anonymous", "alice", "bob", "carol")  # alice: customer A, bob: B, carol: staff


@pytest.fixture
def api(settings):
    tokens = seed_accounts(settings)
    client = TestClient(create_app(settings))
    return settings, client, tokens


def headers(tokens, who):
    return {} if who == "anonymous" else {"Authorization": f"Bearer {tokens[who]}"}


def pending_of_alice(settings, server_ip="8.8.8.8"):
    sub = enablement.Submission(location="LON", server_ip=server_ip, customer="acme")
    return enablement.submit_and_notify(settings, accounts.operator("t"), sub)["id"]


# (method, path template, body, expected status for anonymous/alice/bob/carol).
# {rid} is a pending request of customer A, made fresh for each call.
MATRIX = [
    ("GET", "/api/requests", None, (401, 200, 200, 200)),
    ("GET", "/api/requests/{rid}", None, (401, 200, 404, 200)),
    (
        "POST",
        "/api/requests",
        {"location": "LON", "server_ip": "{ip}", "customer": "acme"},
        (401, 201, 404, 201),
    ),
    ("POST", "/api/requests/{rid}/approve", None, (401, 403, 403, 200)),
    ("POST", "/api/requests/{rid}/reject", {"reason": "no"}, (401, 403, 403, 200)),
    ("POST", "/api/requests/{rid}/revoke", {}, (401, 403, 403, 409)),
    ("GET", "/api/locations", None, (401, 200, 200, 200)),
    ("GET", "/api/locations/LON/list", None, (401, 403, 403, 200)),
]


def test_authorisation_matrix(api):
    settings, client, tokens = api
    results = {}
    for n, (method, template, body, _) in enumerate(MATRIX):
        for m, who in enumerate(WHO):
            rid = pending_of_alice(settings, f"9.{n}.{m}.1")
            path = template.format(rid=rid)
            payload = None
            if body is not None:
                payload = {
                    k: v.format(ip=f"8.{n}.{m}.1") if isinstance(v, str) else v
                    for k, v in body.items()
                }
            response = client.request(
                method, path, json=payload, headers=headers(tokens, who)
            )
            results[(method, template, who)] = response.status_code
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"] == "Bearer"
    expected = {
        (method, template, who): codes[i]
        for method, template, _, codes in MATRIX
        for i, who in enumerate(WHO)
    }
    assert results == expected


def test_unknown_token_and_wrong_scheme_are_401(api):
    _, client, tokens = api
    for value in ("Bearer nope", f"Basic {tokens['carol']}", tokens["carol"]):
        response = client.get("/api/requests", headers={"Authorization": value})
        assert response.status_code == 401


def test_lists_differ_by_customer(api):
    settings, client, tokens = api
    rid = pending_of_alice(settings)
    mine = client.get("/api/requests", headers=headers(tokens, "alice")).json()
    theirs = client.get("/api/requests", headers=headers(tokens, "bob")).json()
    assert [r["id"] for r in mine] == [rid] and theirs == []


def test_validation_is_422_with_every_message(api):
    _, client, tokens = api
    response = client.post(
        "/api/requests",
        headers=headers(tokens, "alice"),
        json={
            "location": "LON",
            "server_ip": "10.0.0.1",
            "relay_host": "fra-tls.relay.example:587",
        },
    )
    assert response.status_code == 422
    assert [d["msg"] for d in response.json()["detail"]] == [
        "relay host 'fra-tls.relay.example:587' is not the relay of location LON; "
        "use the relay of your server's location: lon-tls.relay.example:587",
        "server IP 10.0.0.1 is a private range; only public addresses can relay",
    ]


def test_customer_submits_and_staff_approve(api):
    _, client, tokens = api
    created = client.post(
        "/api/requests",
        headers=headers(tokens, "alice"),
        json={"location": "lon", "server_ip": "8.8.8.8", "ips": ["8.8.4.0/24"]},
    )
    assert created.status_code == 201
    doc = created.json()
    assert (doc["status"], doc["customer"], doc["ips"]) == (
        "pending",
        "acme",
        ["8.8.8.8/32", "8.8.4.0/24"],
    )
    approved = client.post(
        f"/api/requests/{doc['id']}/approve", headers=headers(tokens, "carol")
    )
    assert approved.json()["status"] == "approved"
    listed = client.get("/api/locations/LON/list", headers=headers(tokens, "carol"))
    assert sorted(e["network"] for e in listed.json()) == ["8.8.4.0/24", "8.8.8.8/32"]
    again = client.post(
        f"/api/requests/{doc['id']}/approve", headers=headers(tokens, "carol")
    )
    assert again.status_code == 409


def test_openapi_document(api):
    _, client, _ = api
    spec = client.get("/api/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/requests",
        "/api/requests/{request_id}",
        "/api/requests/{request_id}/approve",
        "/api/requests/{request_id}/reject",
        "/api/requests/{request_id}/revoke",
        "/api/locations",
        "/api/locations/{code}/list",
    }
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


@pytest.mark.parametrize("who", ["alice", "carol"])
def test_schemathesis_conformance(api, who):
    """Every operation, bounded examples: no 5xx, responses match the schema."""
    settings, _, tokens = api
    pending_of_alice(settings)
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @hsettings(
            max_examples=6,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=op.as_strategy())
        def check(case):
            # Schema-valid input may still be refused for what it means (an
            # unknown location, a private IP): that 422 is right, not a failure.
            case.call_and_validate(
                headers=headers(tokens, who),
                excluded_checks=[positive_data_acceptance],
            )

        try:
            check()
        except Exception as exc:  # collect all, report together
            failures.append(f"{op.method.upper()} {op.path}: {exc}")
    assert not failures, "\n\n".join(failures)
