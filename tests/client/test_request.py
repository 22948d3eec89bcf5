"""`client request` against the control plane's real API (H3's app)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from support.store import fresh_store, seed_accounts, write_config
from tlsrelay import config
from tlsrelay.cli.main import main
from tlsrelay.client import request as enable
from tlsrelay.control import db
from tlsrelay.control.web import create_app


@pytest.fixture
def api(tmp_path):
    with fresh_store("sqlite", tmp_path) as url:
        settings = config.load(write_config(tmp_path, url))
        db.upgrade(settings)
        tokens = seed_accounts(settings)
        with TestClient(create_app(settings)) as client:
            yield client, tokens


def test_request_is_filed_through_the_api(api):
    client, tokens = api
    item = enable.Enablement("LON", "8.8.4.4", ("8.8.4.5", "9.9.9.0/28"), "new box")
    outcome = enable.submit(item, "http://testserver", tokens["alice"], client)
    doc = outcome.document
    assert outcome.status == 201
    assert (doc["status"], doc["location"], doc["customer"]) == (
        "pending",
        "LON",
        "acme",
    )
    assert doc["relay_host"] == "lon-tls.relay.example:587"
    assert doc["server_ip"] == "8.8.4.4"
    assert set(doc["ips"]) >= {"8.8.4.4/32", "8.8.4.5/32", "9.9.9.0/28"}


def test_refusals_carry_the_api_reason(api):
    client, tokens = api
    item = enable.Enablement("LON", "10.0.0.1")
    with pytest.raises(enable.RequestError, match="422"):
        enable.submit(item, "http://testserver/api", tokens["alice"], client)
    with pytest.raises(enable.RequestError, match="401"):
        enable.submit(
            enable.Enablement("LON", "8.8.4.4"), "http://testserver", "x", client
        )


def test_without_token_the_ticket_text_is_printed(capsys):
    argv = ["client", "request", "--location", "fra", "--server-ip", "203.0.113.5"]
    assert main([*argv, "--ip", "203.0.113.6", "--note", "web01"]) == 0
    out = capsys.readouterr().out
    assert "Request to enable TLS for my server/IPs" in out
    assert "Relay host:  fra-tls.relay.example:587" in out
    assert "Location:    FRA" in out
    assert "Server IP:   203.0.113.5" in out
    assert "Further mailing IPs: 203.0.113.6" in out


def test_a_mistyped_ip_is_refused_before_sending(capsys):
    argv = ["client", "request", "--location", "LON", "--server-ip", "203.0.113.500"]
    assert main(argv) == 2
    assert "not an IP address" in capsys.readouterr().err
