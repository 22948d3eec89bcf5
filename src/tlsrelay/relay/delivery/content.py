"""A queued message's content, read from its spool file in chunks.

Delivery never holds a message whole: the checks before MAIL (size, 8-bit
octets, bare CR or LF, UTF-8 headers) come from one chunked scan, the SMTP
session streams the same octets with chunked dot-stuffing, and a DSN copies
the returned part in chunks. Memory per message in flight is one chunk plus
the transport's write buffer, whatever the message's size.

Spool files are immutable once queued (relay/spool.py), so the scan and the
sending read the same octets; the client core checks that anyway and never
ends a transaction whose content differs from what it checked.

It never writes to the spool and never logs content.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tlsrelay.smtp import client

CHUNK_SIZE = 64 * 1024


@dataclass(frozen=True)
class SpooledContent:
    """SIZE octets at OFFSET of a spool file."""

    path: Path
    offset: int
    size: int

    def chunks(self, limit: int | None = None) -> Iterator[bytes]:
        """The content (its first LIMIT octets) in chunks; OSError if short."""
        left = self.size if limit is None else min(limit, self.size)
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while left > 0:
                chunk = f.read(min(CHUNK_SIZE, left))
                if not chunk:
                    raise OSError(f"{self.path.name}: shorter than its envelope says")
                left -= len(chunk)
                yield chunk

    def scan(self) -> client.ContentFacts:
        """The facts the client core checks before MAIL (blocking I/O)."""
        scanner = client.ContentScanner()
        for chunk in self.chunks():
            scanner.feed(chunk)
        return scanner.facts()
