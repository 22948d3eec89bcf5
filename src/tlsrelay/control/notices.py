"""Notices to customers: a mail through the relay's own spool, and a webhook.

On submit, approval, rejection and revocation the customer's contact gets a
plain-text mail. It is written into this node's spool with origin "notice"
(relay/spool.py), so delivery sends it like any other message and it is
never bounced back. The approval notice says the relay accepts mail now and
that `postqueue -f` sends what the customer's Postfix held.

A customer with a webhook URL also gets an HTTP POST of JSON, signed with
HMAC-SHA256 over "<timestamp>.<body>" with the customer's webhook secret:

    X-Tlsrelay-Event: request.approved
    X-Tlsrelay-Timestamp: 1733312345
    X-Tlsrelay-Signature: sha256=<hex>

Notices are sent after the decision is committed. A failing notice is logged
as a warning and never undoes the decision. The webhook secret is never
logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

import httpx

from tlsrelay import config
from tlsrelay.control import db
from tlsrelay.relay.spool import Envelope, Recipient, Spool

log = logging.getLogger(__name__)
mail_log = logging.getLogger("tlsrelay.mail")

WEBHOOK_TIMEOUT_S = 5.0

SUBJECTS = {
    "submitted": "request {id} for {location} received",
    "approved": "request {id} for {location} approved: you can relay now",
    "rejected": "request {id} for {location} rejected",
    "revoked": "request {id} for {location} revoked",
}


def _body(event: str, request: dict, settings: config.Settings) -> str:
    ips = ", ".join(request["ips"])
    head = (
        f"Hello {request['customer']},\n\n"
        f"Enablement request {request['id']} asks that {ips} may relay "
        f"through {request['relay_host']} (location {request['location']}).\n\n"
    )
    text = {
        "submitted": (
            "We received it; staff will review it. Until then the relay answers "
            "these IPs with 450 4.7.1, so your mail server keeps the mail queued "
            "and sends it once the request is approved.\n"
        ),
        "approved": (
            "It is approved: the relay accepts mail from these IPs now.\n\n"
            "Mail your server held while the request was pending goes out at its "
            "next retry. With Postfix, run `postqueue -f` to send it at once.\n"
        ),
        "rejected": (
            f"It was rejected. The reason given:\n\n  {request['reason']}\n\n"
            "You can submit a corrected request.\n"
        ),
        "revoked": (
            "It was revoked: the relay no longer accepts mail from these IPs."
            + (
                f"\n\nThe reason given:\n\n  {request['reason']}"
                if request["reason"]
                else ""
            )
            + "\n"
        ),
    }[event]
    tail = f"\nPortal: {settings.portal.url}\n" if settings.portal.url else ""
    return head + text + tail


def sender(settings: config.Settings) -> str:
    return settings.control.notice_from or f"postmaster@{settings.node.hostname}"


def compose(settings: config.Settings, event: str, request: dict, to: str) -> bytes:
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender(settings)
    msg["To"] = to
    msg["Subject"] = "[tlsrelay] " + SUBJECTS[event].format(**request)
    msg["Date"] = format_datetime(db.utcnow())
    msg["Message-ID"] = make_msgid(domain=settings.node.hostname)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(_body(event, request, settings))
    return msg.as_bytes()


def send_mail(settings: config.Settings, event: str, request: dict, to: str) -> str:
    """Queue the notice in this node's spool; returns the queue id."""
    envelope = Envelope(
        sender=sender(settings),
        recipients=[Recipient(address=to)],
        location=settings.node.location,
        origin="notice",
    )
    spool = Spool(settings.spool.path).create()
    queue_id = spool.enqueue(envelope, compose(settings, event, request, to))
    mail_log.info("%s: notice request=%s event=%s", queue_id, request["id"], event)
    return queue_id


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def send_webhook(url: str, secret: str, event: str, request: dict) -> int:
    body = json.dumps(
        {"event": f"request.{event}", "request": request}, separators=(",", ":")
    ).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Tlsrelay-Event": f"request.{event}",
        "X-Tlsrelay-Timestamp": stamp,
        "X-Tlsrelay-Signature": sign(secret, stamp, body),
    }
    response = httpx.post(url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_S)
    return response.status_code


def notify(
    settings: config.Settings, event: str, request: dict, customer: dict
) -> None:
    """Mail and webhook for EVENT; failures are logged, never raised."""
    try:
        send_mail(settings, event, request, customer["email"])
    except Exception as exc:  # a notice must never undo a decision
        log.warning("notice mail for request %s not queued: %s", request["id"], exc)
    url, secret = customer.get("webhook_url"), customer.get("webhook_secret")
    if not (url and secret):
        return
    try:
        status = send_webhook(url, secret, event, request)
    except httpx.HTTPError as exc:
        log.warning("webhook for request %s failed: %s", request["id"], exc)
        return
    if status >= 300:
        log.warning("webhook for request %s answered HTTP %d", request["id"], status)
