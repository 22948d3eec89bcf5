"""`customer`, `user` and `request` commands: output, secrets, refusals."""

from __future__ import annotations

import io
import json

from sqlalchemy import select

from tlsrelay import config
from tlsrelay.cli.main import main
from tlsrelay.control import accounts, db


def run(capsys, config_path, *argv, stdin=None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    status = main(["-c", str(config_path), *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_accounts_and_a_request_from_the_cli(capsys, config_path, monkeypatch):
    status, out, _ = run(
        capsys, config_path, "customer", "add", "acme", "--email", "ops@acme.test"
    )
    assert (status, out) == (0, "added customer acme <ops@acme.test>\n")
    status, out, _ = run(
        capsys,
        config_path,
        "user",
        "add",
        "alice",
        "--role",
        "customer",
        "--customer",
        "acme",
    )
    token = json.loads(out)["token"]
    assert status == 0 and token.startswith("tlsr_")

    settings = config.load(config_path)
    with db.transaction(settings) as session:
        stored = session.scalars(select(db.ApiToken.token_hash)).all()
        assert token not in stored and len(stored) == 1
        assert accounts.authenticate_token(session, token).name == "alice"

    status, out, _ = run(
        capsys,
        config_path,
        "user",
        "passwd",
        "alice",
        stdin="correct horse battery\n",
        monkeypatch=monkeypatch,
    )
    assert (status, out) == (0, "password of alice set\n")
    with db.transaction(settings) as session:
        user = accounts.user_by_name(session, "alice")
        assert user.password_hash.startswith("$argon2id$")
        assert accounts.authenticate_password(session, "alice", "correct horse battery")

    status, out, _ = run(
        capsys,
        config_path,
        "request",
        "submit",
        "--customer",
        "acme",
        "--location",
        "LON",
        "--server-ip",
        "8.8.8.8",
        "--ip",
        "8.8.4.4",
        "--note",
        "new MX",
    )
    doc = json.loads(out)
    assert status == 0
    assert (doc["status"], doc["ips"], doc["note"]) == (
        "pending",
        ["8.8.8.8/32", "8.8.4.4/32"],
        "new MX",
    )
    status, out, _ = run(capsys, config_path, "request", "approve", str(doc["id"]))
    assert (status, out) == (0, f"request {doc['id']} approved\n")
    status, out, _ = run(capsys, config_path, "request", "list", "--json")
    assert [r["status"] for r in json.loads(out)] == ["approved"]
    status, out, _ = run(capsys, config_path, "allow", "list", "LON", "--json")
    assert {e["request_id"] for e in json.loads(out)} == {doc["id"]}


def test_cli_refusals(capsys, config_path, monkeypatch):
    run(capsys, config_path, "customer", "add", "acme", "--email", "ops@acme.test")
    cases = [
        (
            ("customer", "add", "acme", "--email", "x@acme.test"),
            "tlsrelay: customer 'acme' exists already\n",
        ),
        (
            ("customer", "add", "b", "--email", "nope"),
            "tlsrelay: contact e-mail 'nope' is not an address like ops@example.com\n",
        ),
        (
            ("user", "add", "u", "--role", "customer"),
            "tlsrelay: a customer user needs --customer NAME\n",
        ),
        (
            ("user", "add", "u", "--role", "customer", "--customer", "zzz"),
            "tlsrelay: no customer named 'zzz'\n",
        ),
        (("request", "show", "99"), "tlsrelay: no request 99\n"),
        (
            (
                "request",
                "submit",
                "--customer",
                "acme",
                "--location",
                "LON",
                "--server-ip",
                "10.0.0.1",
                "--relay-host",
                "fra-tls.relay.example:587",
            ),
            "tlsrelay: refused:\n"
            "  relay host 'fra-tls.relay.example:587' is not the relay of location "
            "LON; use the relay of your server's location: lon-tls.relay.example:587\n"
            "  server IP 10.0.0.1 is a private range; only public addresses "
            "can relay\n",
        ),
    ]
    for argv, message in cases:
        status, out, err = run(capsys, config_path, *argv)
        assert (status, out, err) == (1, "", message)
    status, _, err = run(
        capsys,
        config_path,
        "user",
        "passwd",
        "nobody",
        stdin="long enough pw\n",
        monkeypatch=monkeypatch,
    )
    assert (status, err) == (1, "tlsrelay: no user named 'nobody'\n")
