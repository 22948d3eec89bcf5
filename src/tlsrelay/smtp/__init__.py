"""SMTP protocol, sans-IO: bytes in, events and replies out.

server.py is the server core (its docstring documents the API), replies.py
the reply catalogue, events.py the events and envelope, address.py paths and
ESMTP parameters, lines.py the CRLF and line-length rules.  This package
imports nothing else of tlsrelay and no asyncio, ssl, socket or logging.
"""
