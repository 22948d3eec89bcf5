"""Refused API input: the product's own messages, every fault, no echo.

QA: `POST /api/requests` with "server_ip": "198.51.100.0/24" answered
pydantic's "String should match pattern" and left the other faults of the
body (an unknown location) unreported; a 422 for an over-long note echoed
the whole 1 MB input back.  The schema now checks only types and sizes,
enablement.validate words the rest, and no message repeats more than a
short prefix of the input.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support.store import seed_accounts
from tlsrelay.control.web import create_app


@pytest.fixture
def post(settings):
    tokens = seed_accounts(settings)
    client = TestClient(create_app(settings))
    auth = {"Authorization": f"Bearer {tokens['alice']}"}

    def post(body):
        return client.post("/api/requests", json=body, headers=auth)

    return post


def messages(response) -> list[str]:
    assert response.status_code == 422, response.text
    return [d["msg"] for d in response.json()["detail"]]


def test_network_as_server_ip_and_unknown_location_are_both_named(post):
    got = messages(post({"location": "XYZ", "server_ip": "198.51.100.0/24"}))
    assert got[0].startswith("unknown location 'XYZ'; choose one of:")
    assert got[1] == "server IP '198.51.100.0/24' must be one address, not a network"
    assert got[2].startswith("server IP 198.51.100.0 is a documentation range")
    assert len(got) == 3


def test_over_long_note_is_refused_without_echo_and_with_the_other_faults(post):
    body = {"location": "XYZ", "server_ip": "8.8.8.8", "note": "n" * 1_000_000}
    response = post(body)
    got = messages(response)
    assert got[0] == "note is longer than 4000 characters"
    assert got[1].startswith("unknown location 'XYZ'")
    assert len(got) == 2
    assert len(response.content) < 2000
    assert "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn" not in response.text


def test_wrong_type_is_named_without_the_value(post):
    response = post({"location": "LON", "server_ip": 8 * "x" + "y" * 100})
    got = messages(response)
    assert got == ["server_ip is longer than 64 characters"]
    assert "yyyyyyyyyy" not in response.text
    got = messages(post({"location": ["LON"] * 500, "server_ip": "8.8.8.8"}))
    assert got == ["location: Input should be a valid string"]
    assert messages(post({"server_ip": "8.8.8.8"})) == ["location is required"]


def test_control_characters_in_the_note_are_named(post):
    got = messages(post({"location": "LON", "server_ip": "8.8.8.8", "note": "a\x07"}))
    assert got == ["note may not hold control characters other than TAB, CR, LF"]
