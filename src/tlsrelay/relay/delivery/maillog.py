"""The mail log of delivery: one line per event, queue id first.

Postfix's fields and words, in a fixed order, with the `QUEUEID: ` prefix the
listener's lines use too, through these functions only:

    QUEUEID: to=<rcpt> relay=host[ip]:port delay=1.2 tls=TLSv1.3/CIPHER \
        dsn=2.0.0 status=sent (250 2.0.0 Ok)
    QUEUEID: sender non-delivery notification: DSNQUEUEID
    QUEUEID: sender delay notification: DSNQUEUEID
    QUEUEID: removed

Status words: sent, deferred, bounced, expired. Message content is never
logged; replies are logged as the server sent them.
"""

from __future__ import annotations

import logging

from tlsrelay.relay import spool

mail = logging.getLogger("tlsrelay.mail")

STATUS_WORDS = {
    spool.DELIVERED: "sent",
    spool.DEFERRED: "deferred",
    spool.FAILED: "bounced",
}


def recipient(
    queue_id: str,
    to: str,
    relay: str,
    delay_s: float,
    tls: str,
    dsn: str,
    status: str,
    reply: str,
) -> None:
    mail.info(
        "%s: to=<%s> relay=%s delay=%.2f tls=%s dsn=%s status=%s (%s)",
        queue_id,
        to,
        relay or "none",
        delay_s,
        tls or "none",
        dsn,
        status,
        reply,
    )


def notification(queue_id: str, dsn_queue_id: str, to: str) -> None:
    mail.info(
        "%s: sender non-delivery notification: %s to=<%s>", queue_id, dsn_queue_id, to
    )


def delay_notification(queue_id: str, dsn_queue_id: str, to: str) -> None:
    mail.info("%s: sender delay notification: %s to=<%s>", queue_id, dsn_queue_id, to)


def no_notification(queue_id: str, reason: str) -> None:
    mail.info("%s: no non-delivery notification: %s", queue_id, reason)


def removed(queue_id: str) -> None:
    mail.info("%s: removed", queue_id)
