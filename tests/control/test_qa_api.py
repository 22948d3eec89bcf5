"""Faults found by QA (H9) in the HTTP API, each pinned by a test.

- `POST /api/requests` with a misspelt key, e.g. {"ip": [...]} for "ips",
  answered 201 and filed a request without those IPs: unknown keys were
  dropped silently.  Now 422 names the key, and nothing is stored.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from support.store import seed_accounts
from tlsrelay.control.web import create_app


def test_unknown_key_in_a_request_is_refused_and_nothing_stored(settings):
    tokens = seed_accounts(settings)
    client = TestClient(create_app(settings))
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    body = {"location": "LON", "server_ip": "8.8.8.8", "ip": ["8.8.4.4"]}
    response = client.post("/api/requests", json=body, headers=auth)
    assert response.status_code == 422, response.text
    [fault] = response.json()["detail"]
    assert fault["loc"] == ["body", "ip"]
    assert client.get("/api/requests", headers=auth).json() == []


def test_unknown_key_in_a_decision_is_refused(settings):
    tokens = seed_accounts(settings)
    client = TestClient(create_app(settings))
    alice = {"Authorization": f"Bearer {tokens['alice']}"}
    carol = {"Authorization": f"Bearer {tokens['carol']}"}
    body = {"location": "LON", "server_ip": "8.8.8.8"}
    rid = client.post("/api/requests", json=body, headers=alice).json()["id"]
    response = client.post(
        f"/api/requests/{rid}/reject", json={"reasn": "typo"}, headers=carol
    )
    assert response.status_code == 422, response.text
    assert client.get(f"/api/requests/{rid}", headers=carol).json()["status"] == (
        "pending"
    )
