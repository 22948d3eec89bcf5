"""Delivery: the one process that empties the spool towards the MX hosts.

    scheduler.py  picks due messages, groups recipients by domain, runs
                  sessions with reuse and limits, applies results to the spool
    resolve.py    routes and MX/A/AAAA lookups (RFC 5321 5.1, RFC 7505)
    session.py    asyncio adapter around the sans-IO client (smtp/client.py)
    policy.py     pure decisions: reply -> status, backoff, TLS level, DSN due
    dsn.py        RFC 3464 delivery status notifications
    maillog.py    the mail log lines, Postfix-style

Started by the supervisor as `python -m tlsrelay.relay.delivery -c CONFIG`
(exactly one per node). It never accepts mail from the network and never
removes a message while any recipient is still open.
"""
