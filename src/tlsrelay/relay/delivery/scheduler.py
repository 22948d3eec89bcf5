"""The delivery scheduler: from spool entries to per-recipient results.

How it works. `start_due()` starts one attempt task per due message (not
held, next_attempt reached, not already running), found in an in-memory
index of queue ids and due times (index.py) rather than by reading every
envelope and state: a full rescan only lists the directory. An
attempt groups the message's open recipients by domain and hands each group
to that domain's queue as a job. A domain has up to
concurrency_per_destination workers (max_concurrency over all domains);
a worker resolves the domain (route or MX), connects to the first hop that
answers, and sends job after job over the same session while its queue has
work (connection reuse). A site failure (nothing answers, TLS fails) gives
every job waiting for that domain the same deferral without reconnecting.

When all of a message's jobs are back, `_finish` applies the outcomes under
spool.locked(qid) to a freshly read state: 2xx delivered, 4xx deferred with
exponential backoff, 5xx failed; mail older than the queue lifetime fails;
failed recipients get one RFC 3464 DSN to the sender (unless NOTIFY says
no, or the message is itself a bounce or notice: those are logged and
dropped, case 24). The entry is removed once every recipient is final,
else its state file is replaced atomically. A crash before that write
repeats the attempt: a duplicate, never a loss.

The process is woken by a datagram on spool/notify.sock (spool.notify)
carrying one queue id or several separated by spaces (spool.notify_many),
each (re)read into the index at once; the directory is listed again every
`rescan_s` to catch lost datagrams.
Clock, resolver and TLS context are injected so tests run without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from tlsrelay import config
from tlsrelay.relay import spool as spool_mod
from tlsrelay.relay.delivery import dsn, maillog, policy
from tlsrelay.relay.delivery.content import SpooledContent
from tlsrelay.relay.delivery.guard import DsnRateGuard
from tlsrelay.relay.delivery.index import QueueIndex
from tlsrelay.relay.delivery.resolve import Resolver
from tlsrelay.relay.delivery.session import (
    Session,
    SessionError,
    Timeouts,
    opportunistic_context,
)
from tlsrelay.smtp import client

log = logging.getLogger(__name__)

RESCAN_S = 30.0
# Outcome for a job lost to a bug of ours; the message simply waits.
INTERNAL_ERROR = client.local_reply(451, "4.3.0 Internal error; will retry")
EXPIRED_REPLY = "4.4.7 Message expired in the queue"
HELD_BY_GUARD = "451 4.7.1 Held by the DSN rate guard for this recipient"


@dataclass
class _Job:
    queue_id: str
    message: client.OutboundMessage
    content: SpooledContent
    indexes: list[int]
    future: asyncio.Future[dict[int, policy.Outcome]]


@dataclass
class _Domain:
    name: str
    queue: asyncio.Queue[_Job] = field(default_factory=asyncio.Queue)
    workers: int = 0


def outbound_message(
    envelope: spool_mod.Envelope,
    content: bytes | client.ContentFacts,
    indexes: list[int],
) -> client.OutboundMessage:
    recipients = tuple(
        client.OutboundRecipient(r.address, r.notify, r.orcpt)
        for r in (envelope.recipients[i] for i in indexes)
    )
    return client.OutboundMessage(
        sender=envelope.sender,
        recipients=recipients,
        content=content,
        body=envelope.body,
        smtputf8=envelope.smtputf8,
        ret=envelope.ret,
        envid=envelope.envid,
    )


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def reply_from_text(text: str) -> client.Reply:
    """Parse "550 5.1.1 text" as stored in a state file back into a Reply."""
    code, _, rest = text.partition(" ")
    if code.isdigit() and len(code) == 3:
        return client.Reply(int(code), (rest,))
    return client.Reply(451, (text,))


class Scheduler:
    def __init__(
        self,
        settings: config.Settings,
        spool: spool_mod.Spool,
        resolver: Resolver,
        clock: Callable[[], float] = time.time,
        tls_context: ssl.SSLContext | None = None,
        tls_policy: Callable[[str, bool], policy.TlsDecision] = policy.tls_level_for,
    ) -> None:
        self.settings = settings
        self.tls_policy = tls_policy
        self.delivery = settings.delivery
        self.spool = spool
        self.resolver = resolver
        self.clock = clock
        # One context for every session: building one costs about 0.2 ms.
        self.tls_context = tls_context or opportunistic_context()
        self.helo_name = self.delivery.helo_name or settings.node.hostname
        self.postmaster = self.delivery.postmaster or (
            f"MAILER-DAEMON@{settings.node.hostname}"
        )
        self.timeouts = Timeouts(
            self.delivery.connect_timeout_s, self.delivery.command_timeout_s
        )
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.index = QueueIndex(spool)
        self._notified: set[str] = set()
        # Due times to use instead of the state file's after an attempt that
        # could not run (unreadable entry): no busy loop over it.
        self._retry_at: dict[str, float] = {}
        self.dsn_guard = DsnRateGuard(self.delivery.dsn_rate_per_minute)
        self._domains: dict[str, _Domain] = {}
        self._slots = asyncio.Semaphore(max(1, self.delivery.max_concurrency))
        self._wake = asyncio.Event()
        self._stopping = False

    # -- the main loop -------------------------------------------------------

    async def run(self, rescan_s: float = RESCAN_S) -> None:
        """Deliver until stop(); listens on the spool's notify socket."""
        sock = self._bind_notify()
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._on_notify, sock)
        next_listing = self.clock()
        try:
            while not self._stopping:
                full = self.clock() >= next_listing
                if full:
                    next_listing = self.clock() + rescan_s
                earliest = self.start_due(full)
                delay = min(rescan_s, max(0.05, earliest - self.clock()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()
        finally:
            loop.remove_reader(sock.fileno())
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.spool.notify_path)
            await self._drain_in_flight()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run_once(self) -> None:
        """Start every due attempt and wait for all of them (tests, tools)."""
        self.start_due()
        while self.in_flight:
            await asyncio.gather(*self.in_flight.values(), return_exceptions=True)

    def _bind_notify(self) -> socket.socket:
        path = str(self.spool.notify_path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        return sock

    def _on_notify(self, sock: socket.socket) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            # One datagram carries one queue id or a batch separated by spaces.
            while data := sock.recv(4096):
                for queue_id in data.decode("ascii", "replace").split():
                    if queue_id.isalnum():
                        self._notified.add(queue_id)
        self._wake.set()

    async def _drain_in_flight(self, grace_s: float = 10.0) -> None:
        tasks = list(self.in_flight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()

    # -- picking work --------------------------------------------------------

    def start_due(self, full: bool = True) -> float:
        """Start attempts for due messages; return when the next one is due.

        FULL lists the queue directory for ids not yet known; without it
        only the ids notified since the last call are read.
        """
        now = self.clock()
        if full:
            self.index.refresh()
        notified, self._notified = self._notified, set()
        for queue_id in sorted(notified):
            if queue_id not in self.in_flight:
                self.index.reread(queue_id)
        for queue_id in self.index.pop_due(now):
            if queue_id not in self.in_flight:
                self._start(queue_id)
        earliest = self.index.earliest()
        return now + RESCAN_S if earliest is None else min(now + RESCAN_S, earliest)

    def _start(self, queue_id: str) -> None:
        self.in_flight[queue_id] = asyncio.create_task(self._attempt(queue_id))

    async def _attempt(self, queue_id: str) -> None:
        try:
            await self._deliver(queue_id)
        finally:
            # Back into the index with what the attempt left on disk.
            self.in_flight.pop(queue_id, None)
            retry_at = self._retry_at.pop(queue_id, None)
            if retry_at is None:
                self.index.reread(queue_id)
            elif queue_id in self.index:
                self.index.set(queue_id, retry_at)

    async def _deliver(self, queue_id: str) -> None:
        try:
            envelope, offset, size = self.spool.read_envelope(queue_id)
            state = self.spool.read_state(queue_id, envelope)
            content = SpooledContent(self.spool.msg_path(queue_id), offset, size)
            # One chunked pass over the file, off the event loop.
            facts = await asyncio.to_thread(content.scan)
        except spool_mod.NoSuchMessage:
            return
        except (OSError, ValueError) as exc:
            log.error("%s: cannot read spool entry: %s", queue_id, exc)
            self._retry_at[queue_id] = self.clock() + self.delivery.minimal_backoff_s
            return
        entry = spool_mod.Entry(queue_id, envelope, state, size)
        open_ = [
            i
            for i, rs in enumerate(entry.state.recipients)
            if rs.status not in spool_mod.FINAL
        ]
        if open_ and envelope.origin == "dsn" and not self._dsn_admitted(entry):
            return
        by_domain: dict[str, list[int]] = defaultdict(list)
        for i in open_:
            by_domain[domain_of(entry.envelope.recipients[i].address)].append(i)
        futures = [
            self._submit(queue_id, domain, envelope, facts, content, indexes)
            for domain, indexes in by_domain.items()
        ]
        outcomes: dict[int, policy.Outcome] = {}
        for found in await asyncio.gather(*futures):
            outcomes.update(found)
        try:
            self._finish(queue_id, outcomes, content, facts)
        except spool_mod.NoSuchMessage:
            log.info("%s: deleted while being delivered", queue_id)
        except (OSError, spool_mod.SpoolFull) as exc:
            # The state stays as it was: the attempt repeats (duplicates at
            # worst, never a loss).
            log.error("%s: cannot record delivery results: %s", queue_id, exc)
            self._retry_at[queue_id] = self.clock() + self.delivery.minimal_backoff_s

    def _dsn_admitted(self, entry: spool_mod.Entry) -> bool:
        """Case 24: count this DSN, or hold it in the queue (never drop it)."""
        now = self.clock()
        self.dsn_guard.prune(now)
        address = entry.envelope.recipients[0].address
        release = self.dsn_guard.admit(address, now)
        if release is None:
            return True
        if self.dsn_guard.alert_due(address, now):
            log.warning(
                "DSN rate guard: <%s> would get more than %d DSNs within 60 s "
                "(a loop or backscatter?); holding further DSNs to it in the queue",
                address,
                self.dsn_guard.per_minute,
            )
        try:
            with self.spool.locked(entry.queue_id):
                state = self.spool.read_state(entry.queue_id, entry.envelope)
                state.next_attempt = release
                state.last_error = HELD_BY_GUARD
                self.spool.write_state(entry.queue_id, state)
        except spool_mod.NoSuchMessage:
            return False
        except (OSError, ValueError) as exc:
            log.error("%s: cannot record the hold: %s", entry.queue_id, exc)
            self._retry_at[entry.queue_id] = release
        maillog.recipient(
            entry.queue_id,
            address,
            "",
            now - entry.envelope.arrived,
            "",
            "4.7.1",
            "deferred",
            f"{HELD_BY_GUARD}; next try in {release - now:.0f}s",
        )
        return False

    def _submit(
        self,
        queue_id: str,
        domain: str,
        envelope: spool_mod.Envelope,
        facts: client.ContentFacts,
        content: SpooledContent,
        indexes: list[int],
    ) -> asyncio.Future[dict[int, policy.Outcome]]:
        future: asyncio.Future[dict[int, policy.Outcome]]
        future = asyncio.get_running_loop().create_future()
        # Facts instead of bytes: the session streams CONTENT itself.
        outbound = outbound_message(envelope, facts, indexes)
        job = _Job(queue_id, outbound, content, indexes, future)
        dom = self._domains.setdefault(domain, _Domain(domain))
        dom.queue.put_nowait(job)
        limit = max(1, self.delivery.concurrency_per_destination)
        crowded = dom.queue.qsize() > dom.workers and dom.workers < limit
        if dom.workers == 0 or crowded:
            dom.workers += 1
            asyncio.create_task(self._worker(dom))
        return future

    # -- sessions ------------------------------------------------------------

    async def _worker(self, dom: _Domain) -> None:
        session: Session | None = None
        async with self._slots:
            try:
                while not dom.queue.empty():
                    job = dom.queue.get_nowait()
                    try:
                        session = await self._serve(dom, job, session)
                    except Exception:
                        # Our bug: the job waits for its next attempt instead
                        # of hanging its message forever.
                        log.exception(
                            "%s: delivery to %s failed", job.queue_id, dom.name
                        )
                        failure = policy.outcome(
                            INTERNAL_ERROR, False, policy.Scope.SITE
                        )
                        self._settle(job, failure)
            finally:
                # Count down before any await, so a job queued now gets a
                # new worker instead of waiting for one that is leaving.
                dom.workers -= 1
                if session is not None:
                    await session.close()

    async def _serve(
        self, dom: _Domain, job: _Job, session: Session | None
    ) -> Session | None:
        """Send JOB, over SESSION if still usable; return the session to reuse."""
        if session is None or not session.alive:
            if session is not None:
                await session.close()
            session = await self._connect(dom, job)
            if session is None:
                return None
        await self._run_job(session, job)
        return session

    async def _run_job(self, session: Session, job: _Job) -> None:
        results = await session.send(job.message, job.content.chunks)
        scope = policy.Scope.MESSAGE
        if len({r.reply for r in results}) > 1:
            scope = policy.Scope.RECIPIENT
        outcomes = {
            index: policy.outcome(
                r.reply, r.remote, scope, session.relay if r.remote else "", session.tls
            )
            for index, r in zip(job.indexes, results, strict=True)
        }
        if not job.future.done():
            job.future.set_result(outcomes)

    async def _connect(self, dom: _Domain, job: _Job) -> Session | None:
        """A ready session to the domain, or None after failing every job."""
        failure: policy.Outcome
        try:
            destination = await self.resolver.destination(dom.name)
        except Exception:
            log.exception("resolving %s failed", dom.name)
            destination = None
        if destination is None or destination.error is not None:
            reply = destination.error if destination else INTERNAL_ERROR
            failure = policy.outcome(reply, False, policy.Scope.SITE)
            self._fail_waiting(dom, job, failure)
            return None
        level = self.tls_policy(dom.name, destination.routed).level
        cfg = client.ClientConfig(self.helo_name, level)
        failure = policy.outcome(INTERNAL_ERROR, False, policy.Scope.SITE)
        for hop in destination.hops:
            session = Session(
                hop.host, hop.ip, hop.port, cfg, self.timeouts, self.tls_context
            )
            try:
                await session.open()
                return session
            except SessionError as exc:
                log.info("%s: %s", exc.relay, exc.reply)
                failure = policy.outcome(
                    exc.reply,
                    exc.remote,
                    policy.Scope.SITE,
                    exc.relay if exc.remote else "",
                )
        self._fail_waiting(dom, job, failure)
        return None

    def _fail_waiting(self, dom: _Domain, job: _Job, failure: policy.Outcome) -> None:
        """Site failure: this job and every job queued behind it get FAILURE."""
        self._settle(job, failure)
        while not dom.queue.empty():
            self._settle(dom.queue.get_nowait(), failure)

    @staticmethod
    def _settle(job: _Job, outcome: policy.Outcome) -> None:
        if not job.future.done():
            job.future.set_result({i: outcome for i in job.indexes})

    # -- results -------------------------------------------------------------

    def _finish(
        self,
        queue_id: str,
        outcomes: dict[int, policy.Outcome],
        content: SpooledContent,
        facts: client.ContentFacts,
    ) -> None:
        with self.spool.locked(queue_id):
            entry = self.spool.entry(queue_id)
            now = self.clock()
            self._apply(entry, outcomes, now)
            if policy.expired(
                entry.envelope.arrived, now, self.delivery.queue_lifetime_s
            ):
                self._expire(entry, now)
            self._notify_sender(entry, content, facts, now)
            self._warn_delayed(entry, content, facts, now)
            state = entry.state
            if all(rs.status in spool_mod.FINAL for rs in state.recipients):
                # No directory fsync: a lost unlink is a duplicate, never a loss.
                self.spool.remove(queue_id, durable=False)
                maillog.removed(queue_id)
                return
            if outcomes:
                state.next_attempt = now + policy.backoff_s(
                    state.attempts,
                    self.delivery.minimal_backoff_s,
                    self.delivery.maximal_backoff_s,
                )
            self.spool.write_state(queue_id, state)

    def _apply(
        self, entry: spool_mod.Entry, outcomes: dict[int, policy.Outcome], now: float
    ) -> None:
        state = entry.state
        if outcomes:
            state.attempts += 1
        delay_s = now - entry.envelope.arrived
        for index, oc in sorted(outcomes.items()):
            rs = state.recipients[index]
            if rs.status in spool_mod.FINAL:
                continue  # an operator bounced it meanwhile
            rs.status = oc.status
            rs.relay = oc.relay
            rs.last_error = "" if oc.status == spool_mod.DELIVERED else str(oc.reply)
            if oc.status == spool_mod.DELIVERED:
                rs.delivered_at = now
            else:
                state.last_error = str(oc.reply)
            maillog.recipient(
                entry.queue_id,
                entry.envelope.recipients[index].address,
                oc.relay,
                delay_s,
                oc.tls,
                oc.reply.enhanced,
                maillog.STATUS_WORDS[oc.status],
                str(oc.reply),
            )

    def _expire(self, entry: spool_mod.Entry, now: float) -> None:
        for index, rs in enumerate(entry.state.recipients):
            if rs.status in spool_mod.FINAL:
                continue
            rs.status = spool_mod.FAILED
            reason = rs.last_error or f"451 {EXPIRED_REPLY}"
            rs.last_error = reason
            maillog.recipient(
                entry.queue_id,
                entry.envelope.recipients[index].address,
                rs.relay,
                now - entry.envelope.arrived,
                "",
                _expired_status(reason),
                "expired",
                reason,
            )

    def _notify_sender(
        self,
        entry: spool_mod.Entry,
        content: SpooledContent,
        facts: client.ContentFacts,
        now: float,
    ) -> None:
        """One DSN for every failed recipient that has not had one yet."""
        due = [
            (i, rs)
            for i, rs in enumerate(entry.state.recipients)
            if rs.status == spool_mod.FAILED and not rs.dsn_sent
        ]
        if not due:
            return
        envelope = entry.envelope
        wanted = [
            (i, rs)
            for i, rs in due
            if policy.dsn_wanted(envelope.recipients[i].notify, rs.status)
        ]
        if not policy.bounces_allowed(envelope):
            maillog.no_notification(entry.queue_id, "message is a bounce or notice")
        elif wanted:
            items = [_report_item(envelope.recipients[i], rs) for i, rs in wanted]
            dsn_id = self._send_report(entry, items, content, facts, now)
            maillog.notification(entry.queue_id, dsn_id, envelope.sender)
        for _, rs in due:
            rs.dsn_sent = True

    def _warn_delayed(
        self,
        entry: spool_mod.Entry,
        content: SpooledContent,
        facts: client.ContentFacts,
        now: float,
    ) -> None:
        """One delay DSN per deferred recipient past delay_warning_s (off by
        default), for senders that may get reports at all."""
        envelope = entry.envelope
        age_s = now - envelope.arrived
        due = [
            (i, rs)
            for i, rs in enumerate(entry.state.recipients)
            if not rs.delay_dsn_sent
            and policy.delay_dsn_wanted(
                envelope.recipients[i].notify,
                rs.status,
                age_s,
                self.delivery.delay_warning_s,
            )
        ]
        if not due or not policy.bounces_allowed(envelope):
            return
        items = [_report_item(envelope.recipients[i], rs, "delayed") for i, rs in due]
        dsn_id = self._send_report(entry, items, content, facts, now)
        maillog.delay_notification(entry.queue_id, dsn_id, envelope.sender)
        for _, rs in due:
            rs.delay_dsn_sent = True

    def _send_report(
        self,
        entry: spool_mod.Entry,
        items: list[dsn.ReportItem],
        content: SpooledContent,
        facts: client.ContentFacts,
        now: float,
    ) -> str:
        """Compose a DSN about ITEMS of ENTRY and queue it; its queue id."""
        report = dsn.report(
            queue_id=entry.queue_id,
            envelope=entry.envelope,
            facts=facts,
            items=items,
            reporting_mta=self.settings.node.hostname,
            postmaster=self.postmaster,
            now=now,
        )
        return self._enqueue_report(report, content)

    def _enqueue_report(self, report: dsn.Report, content: SpooledContent) -> str:
        """Write a DSN, copying the returned original from the spool in chunks."""
        writer = self.spool.writer(report.envelope)
        try:
            writer.write(report.head)
            for chunk in content.chunks(report.returned):
                writer.write(chunk)
            writer.write(report.tail)
        except OSError:
            writer.abort()
            raise
        queue_id = writer.commit()
        self.spool.notify(queue_id)
        return queue_id


def _expired_status(reason: str) -> str:
    enhanced = reply_from_text(reason).enhanced
    return enhanced if not enhanced.endswith(".0.0") else "4.4.7"


def _report_item(
    recipient: spool_mod.Recipient,
    rs: spool_mod.RecipientState,
    action: str = "failed",
) -> dsn.ReportItem:
    reply = reply_from_text(rs.last_error)
    status = reply.enhanced
    if reply.transient and action == "failed":
        status = _expired_status(rs.last_error)
    return dsn.ReportItem(
        address=recipient.address,
        orcpt=recipient.orcpt,
        action=action,
        status=status,
        diagnostic=rs.last_error,
        remote_mta=rs.relay.partition("[")[0],
        remote=bool(rs.relay),
    )
