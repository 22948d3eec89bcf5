"""Line rules for SMTP input, done with bytes methods (no per-octet loops).

RFC 5321 2.3.8 (lines end only in CRLF; a bare CR or LF is refused here,
never normalised, against SMTP smuggling: cases 01, 04, 08), 4.5.2 (the
receiver removes the first dot of a line that starts with one), 4.5.3.1.4
(512-octet command lines, extended for MAIL/RCPT parameters) and 4.5.3.1.6
(1000-octet text lines, CRLF included).

This module must never keep more than one partial line (at most
MAX_TEXT_LINE octets) between calls, and never treat ``\\n.\\r\\n`` or
``.\\r`` as the end of data.
"""

from __future__ import annotations

MAX_COMMAND_LINE = 512  # RFC 5321 4.5.3.1.4, CRLF included
# MAIL and RCPT may carry parameters of advertised extensions (SIZE, BODY,
# SMTPUTF8, RET, ENVID, NOTIFY, ORCPT up to 500), so they get a larger cap.
MAX_ENVELOPE_LINE = 2048
# Hard cap: a longer line is never buffered whole, only skipped to its CRLF.
MAX_ANY_LINE = 4096
MAX_TEXT_LINE = 1000  # RFC 5321 4.5.3.1.6, CRLF included

END_OF_DATA = b"\r\n.\r\n"

# Outcomes of a content check.
BARE_NEWLINE = "bare-newline"
LINE_TOO_LONG = "line-too-long"


def has_bare_newline(data: bytes) -> bool:
    """True when ``data`` holds a CR not followed by LF or an LF without CR."""
    crlf = data.count(b"\r\n")
    return data.count(b"\r") != crlf or data.count(b"\n") != crlf


def check_lines(block: bytes) -> str | None:
    """Check complete CRLF-terminated lines; None when they are all fine."""
    if has_bare_newline(block):
        return BARE_NEWLINE
    if _has_long_line(block):
        return LINE_TOO_LONG
    return None


def _has_long_line(block: bytes) -> bool:
    """True when a CRLF-separated line holds more than MAX_TEXT_LINE - 2 octets.

    Jumps to the last CRLF inside each window of MAX_TEXT_LINE octets, so
    one step covers many short lines: every line that starts in the window
    before that CRLF also ends there.
    """
    start, size = 0, len(block)
    while size - start > MAX_TEXT_LINE - 2:
        crlf = block.rfind(b"\r\n", start, start + MAX_TEXT_LINE)
        if crlf < 0:
            return True
        start = crlf + 2
    return False


def unstuff(block: bytes) -> bytes:
    """Remove the first dot of every line of a block that starts at a line."""
    if block[:1] == b".":
        block = block[1:]
    return block.replace(b"\r\n.", b"\r\n")


def find_end_of_data(buf: bytearray, at_line_start: bool) -> int:
    """Offset where the terminating ``.\\r\\n`` line starts, or -1.

    ``buf`` starts at a line start when ``at_line_start`` is true.  The
    content before the returned offset ends in CRLF (or is empty).
    """
    if at_line_start and buf.startswith(b".\r\n"):
        return 0
    index = buf.find(END_OF_DATA)
    return index + 2 if index >= 0 else -1


def may_start_end_of_data(buf: bytearray) -> bool:
    """True when ``buf`` (at a line start) could still grow into ``.\\r\\n``."""
    return len(buf) < 3 and b".\r\n".startswith(buf)


class ChunkChecker:
    """Line rules across arbitrarily split BDAT chunks (RFC 3030 content).

    Keeps only the current partial line between calls, never more than
    MAX_TEXT_LINE octets of it.
    """

    def __init__(self) -> None:
        self._carry = b""
        self.problem: str | None = None

    def feed(self, data: bytes) -> None:
        if self.problem is not None:
            return
        block = self._carry + data if self._carry else data
        cut = block.rfind(b"\r\n") + 2
        if cut < 2:
            cut = 0
        self.problem = check_lines(block[:cut]) if cut else None
        rest = block[cut:]
        if self.problem is None:
            self.problem = _check_partial(rest)
        self._carry = rest if self.problem is None else b""

    def finish(self) -> None:
        """The content ended: a last line without CRLF is allowed if clean."""
        if self.problem is None and self._carry.endswith(b"\r"):
            self.problem = BARE_NEWLINE
        self._carry = b""


def _check_partial(rest: bytes) -> str | None:
    # After the last CRLF any LF is bare, and so is any CR but a final one.
    if b"\n" in rest or b"\r" in rest[:-1]:
        return BARE_NEWLINE
    if len(rest) >= MAX_TEXT_LINE:
        return LINE_TOO_LONG
    return None
