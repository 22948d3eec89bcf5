"""Every SMTP reply the relay's server side sends, in one catalogue.

Each reply is a named constant with its RFC 5321 code and its RFC 3463
enhanced status code; the listener, the server core and the tests import the
same constants, so a reply's wording lives in exactly one place.  Texts that
carry a value (the queue id, a size, the host name) hold a ``{name}``
placeholder filled with :meth:`Reply.format`.

RFC 2034 section 3 says enhanced codes are not used in the greeting or in
the reply to EHLO/HELO; those replies have an empty ``status``.  Every other
reply has one.

This module must never build a reply from exception text or from anything
the peer sent except the host name it gave in EHLO.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: code, enhanced status ("" where RFC 2034 omits it), text.

    A text with newlines becomes a multi-line reply (``250-...`` lines, the
    last one ``250 ...``).
    """

    code: int
    status: str
    text: str

    def format(self, **values: object) -> Reply:
        """This reply with the ``{name}`` placeholders of its text filled in."""
        return replace(self, text=self.text.format(**values))

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    @property
    def closes(self) -> bool:
        """True for the replies after which the server closes (221, 421)."""
        return self.code in (221, 421)

    def to_bytes(self) -> bytes:
        lines = self.text.split("\n")
        prefix = f"{self.status} " if self.status else ""
        out = []
        for index, line in enumerate(lines):
            sep = " " if index == len(lines) - 1 else "-"
            out.append(f"{self.code}{sep}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return self.to_bytes().decode("utf-8").rstrip("\r\n")


# Session.
GREETING = Reply(220, "", "{hostname} ESMTP tlsrelay")
EARLY_TALKER = Reply(554, "5.5.1", "Protocol error: client spoke before the greeting")
BYE = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "Ok")
HELO_OK = Reply(250, "", "{hostname}")
# The EHLO text is the host name then one keyword per line (RFC 5321 4.1.1.1).
EHLO_OK = Reply(250, "", "{hostname}\n{keywords}")
HELP = Reply(
    214,
    "2.0.0",
    "Commands: EHLO HELO STARTTLS MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP",
)
CANNOT_VRFY = Reply(
    252, "2.0.0", "Cannot VRFY user, but will accept a message and attempt delivery"
)
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, closing connection")
INTERNAL_ERROR = Reply(421, "4.3.0", "Internal error, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_COMMANDS = Reply(421, "4.7.0", "Too many commands, closing connection")

# STARTTLS (RFC 3207).
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
TLS_UNAVAILABLE = Reply(454, "4.7.0", "TLS not available")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")
NOT_TLS = Reply(530, "5.7.0", "Must issue a STARTTLS command first")

# Command syntax and sequence.
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_NEWLINE_COMMAND = Reply(501, "5.5.2", "Bare CR or LF not allowed in a command")
NO_ARGUMENTS = Reply(501, "5.5.4", "This command takes no arguments")
HELO_SYNTAX = Reply(501, "5.5.4", "Syntax: {verb} hostname")
HELO_BAD_NAME = Reply(
    501, "5.5.2", "Invalid {verb} argument: need an ASCII host name or address literal"
)
MAIL_SYNTAX = Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>")
RCPT_SYNTAX = Reply(501, "5.5.4", "Syntax: RCPT TO:<address>")
VRFY_SYNTAX = Reply(501, "5.5.4", "Syntax: VRFY address")
BDAT_SYNTAX = Reply(501, "5.5.4", "Syntax: BDAT count [LAST]")
# After a BDAT whose chunk size cannot be trusted the octets that follow
# cannot be told from commands, so the server closes, and a server that
# closes says 421 (RFC 5321 3.8); X.5.0: a protocol error.
BDAT_UNSYNCED = Reply(421, "4.5.0", "Lost track of the BDAT chunk, closing connection")
NEED_HELO = Reply(503, "5.5.1", "Send HELO or EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL command")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT command")
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT")
BAD_PARAMETER = Reply(501, "5.5.4", "Invalid parameter: {name}")
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Unsupported parameter: {name}")

# Envelope.
SENDER_OK = Reply(250, "2.1.0", "Sender ok")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient ok")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
SENDER_PATH_TOO_LONG = Reply(501, "5.1.7", "Path too long")
PATH_TOO_LONG = Reply(501, "5.1.3", "Path too long")
UNQUALIFIED_RECIPIENT = Reply(501, "5.1.3", "Recipient address must include a domain")
LITERAL_RECIPIENT = Reply(
    550, "5.1.2", "Address literals are not relayed: use a domain name"
)
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")

# Access and resources (decided by the listener, see DESIGN.md).
ACCESS_DENIED = Reply(
    554,
    "5.7.1",
    "Relay access denied: request TLS relay access for this IP from your provider",
)
ACCESS_PENDING = Reply(
    450, "4.7.1", "Relay access for this IP is pending approval, try again later"
)
NO_SNAPSHOT = Reply(451, "4.3.0", "Relay access list not available, try again later")
SPOOL_FULL = Reply(452, "4.3.1", "Insufficient system storage")

# Content.
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
CHUNK_OK = Reply(250, "2.0.0", "{octets} octets received")
QUEUED = Reply(250, "2.0.0", "Ok: queued as {queue_id}")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
BARE_NEWLINE_DATA = Reply(500, "5.5.2", "Bare CR or LF not allowed in message")
