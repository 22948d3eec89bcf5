"""`tlsrelay client test`: send one message through Postfix and follow it.

The message goes in with Postfix's own sendmail (`-C DIR` for a config
directory other than /etc/postfix) and carries a unique Message-ID. The mail
log is then read from where it stood before sending (maillog_file, or the
OS's log, or --maillog) and each hop is reported as Postfix logs it:

    cleanup[..]: QID: message-id=<...>                  accepted locally
    smtp[PID]: Verified TLS connection established to HOST[IP]:PORT: TLSv1.3 ...
    smtp[PID]: QID: to=<..>, relay=HOST[IP]:PORT, ..., status=sent
                    (250 2.0.0 Ok: queued as RELAYQID)  accepted by the relay

A deferral or bounce ends the wait with the reason and what `postqueue -p`
shows. Waiting polls with a deadline; nothing sleeps longer than a poll.

It sends exactly one message, to the address given, and changes no setting.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tlsrelay.client.tools import DEFAULT_CONFIG_DIR, Postfix, find_program

POLL_S = 0.1
_TLS = re.compile(
    r"postfix[^\[]*/smtp\[(?P<pid>\d+)\]: (?P<text>\w+ TLS connection established "
    r"to .*)$"
)
_STATUS = re.compile(
    r"postfix[^\[]*/(?:smtp|lmtp|local|virtual|error)\[(?P<pid>\d+)\]: "
    r"(?P<qid>\w+): to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>\S+), "
    r".*status=(?P<status>\w+) \((?P<reply>.*)\)$"
)
_QUEUED_AS = re.compile(r"queued as (\S+)")


class SendTestError(Exception):
    """The test message could not be sent or followed; the text says why."""


@dataclass
class Hop:
    step: str
    detail: str


@dataclass
class SendResult:
    message_id: str
    status: str = "timeout"  # sent, deferred, bounced, timeout
    queue_id: str = ""
    relay_queue_id: str = ""
    hops: list[Hop] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "sent" and bool(self.relay_queue_id)

    def as_dict(self) -> dict[str, object]:
        document = dict(self.__dict__)
        document["hops"] = [h.__dict__ for h in self.hops]
        document["ok"] = self.ok
        return document


def message(sender: str, to: str, message_id: str, hostname: str) -> bytes:
    lines = [
        f"From: <{sender}>",
        f"To: <{to}>",
        "Subject: tlsrelay client test",
        f"Date: {email.utils.format_datetime(dt.datetime.now(dt.UTC))}",
        f"Message-ID: {message_id}",
        "",
        f"Test message from {hostname} through the TLS relay.",
        "It can be deleted.",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def maillog_path(postfix: Postfix, default: Path, given: Path | None) -> Path:
    if given is not None:
        return given
    configured = postfix.effective("maillog_file").get("maillog_file", "")
    return Path(configured) if configured else default


def send(postfix: Postfix, sender: str, to: str, content: bytes) -> None:
    command = [find_program("sendmail")]
    if postfix.config_dir != DEFAULT_CONFIG_DIR:
        command += ["-C", str(postfix.config_dir)]
    command += ["-i", "-f", sender, "--", to]
    try:
        done = subprocess.run(command, input=content, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SendTestError(f"sendmail failed: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()
        raise SendTestError(f"sendmail failed ({done.returncode}): {detail}")


def run(
    postfix: Postfix,
    maillog: Path,
    sender: str,
    to: str,
    hostname: str,
    timeout_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
) -> SendResult:
    message_id = f"<tlsrelay-test.{secrets.token_hex(8)}@{hostname}>"
    result = SendResult(message_id)
    try:
        offset = maillog.stat().st_size
    except OSError as exc:
        raise SendTestError(
            f"cannot read the mail log {maillog}: {exc.strerror}; pass --maillog"
        ) from None
    send(postfix, sender, to, message(sender, to, message_id, hostname))
    result.hops.append(Hop("submitted", f"sendmail -f {sender} {to}"))
    follower = LogFollower(maillog, offset, message_id)
    deadline = clock() + timeout_s
    while clock() < deadline:
        if follower.advance(result):
            return result
        time.sleep(POLL_S)
    result.hops.append(Hop("timeout", _queue_line(postfix, result.queue_id)))
    return result


class LogFollower:
    """Reads new log lines and moves the result along the hops."""

    def __init__(self, path: Path, offset: int, message_id: str) -> None:
        self.path = path
        self.offset = offset
        self.message_id = message_id
        self._tls_by_pid: dict[str, str] = {}
        self._partial = b""

    def new_lines(self) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = self._partial + log.read()
        self.offset += len(data) - len(self._partial)
        *lines, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in lines]

    def advance(self, result: SendResult) -> bool:
        """Process new lines; True once the message reached a final status."""
        for line in self.new_lines():
            if not result.queue_id:
                match = re.search(r": (\w+): message-id=(<[^>]*>)", line)
                if match and match[2] == self.message_id:
                    result.queue_id = match[1]
                    result.hops.append(Hop("queued", f"local queue id {match[1]}"))
                continue
            tls = _TLS.search(line)
            if tls:
                self._tls_by_pid[tls["pid"]] = tls["text"]
                continue
            status = _STATUS.search(line)
            if status and status["qid"] == result.queue_id:
                self._final(status, result)
                return True
        return False

    def _final(self, status: re.Match, result: SendResult) -> None:
        result.hops.append(Hop("connected", f"relay={status['relay']}"))
        if status["pid"] in self._tls_by_pid:
            result.hops.append(Hop("tls", self._tls_by_pid[status["pid"]]))
        result.status = status["status"]
        queued = _QUEUED_AS.search(status["reply"])
        if status["status"] == "sent" and queued:
            result.relay_queue_id = queued[1]
            result.hops.append(
                Hop("accepted", f"relay queue id {queued[1]} ({status['reply']})")
            )
        else:
            result.hops.append(Hop(status["status"], status["reply"]))


def _queue_line(postfix: Postfix, queue_id: str) -> str:
    """What `postqueue -p` says about QUEUE_ID, for a report that timed out."""
    if not queue_id:
        return "the message never showed up in the mail log"
    try:
        listing = postfix.run("postqueue", "-c", str(postfix.config_dir), "-p")
    except Exception as exc:  # noqa: BLE001 - only adds detail to a report
        return f"no final status in the log; postqueue -p failed: {exc}"
    block = [b for b in listing.split("\n\n") if b.startswith(queue_id)]
    if block:
        return "still queued: " + " ".join(block[0].split())
    return "no final status in the log, and no longer in the queue"
