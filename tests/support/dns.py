"""A small authoritative DNS server on loopback, for tests that resolve MX.

    with DnsServer() as dns:
        dns.add("example.org", "MX", "10 mx.example.org.")
        dns.add("mx.example.org", "A", "127.0.0.1")
        dns.add("nomail.example", "MX", "0 .")       # RFC 7505 null MX
        dns.servfail("broken.example")
        settings: [delivery] dns = dns.nameserver   # "127.0.0.1:PORT"

It answers UDP and TCP on the same free port of 127.0.0.1 (port 0 is tried
until both bind). Names are absolute and case-insensitive. A name with
records but none of the asked type answers NOERROR with no answer (NODATA);
a name without any record answers NXDOMAIN; `servfail` names answer
SERVFAIL. Every question is kept in `queries` as (name, type) for checks.
Records can be added while it runs. It never forwards or recurses, and
binds nothing but loopback.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 60


class DnsServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self._records: dict[dns.name.Name, dict[int, list[str]]] = {}
        self._servfail: set[dns.name.Name] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None

    # -- zone data -----------------------------------------------------------

    def add(self, name: str, rdtype: str, *rdata: str) -> DnsServer:
        """Add records, e.g. add("example.org", "MX", "10 mx.example.org.")."""
        key = dns.name.from_text(name)
        kind = dns.rdatatype.from_text(rdtype)
        for text in rdata:
            # Parse now so a typo fails the test that wrote it, not a query.
            dns.rdata.from_text(dns.rdataclass.IN, kind, text)
        with self._lock:
            self._records.setdefault(key, {}).setdefault(kind, []).extend(rdata)
        return self

    def servfail(self, name: str) -> DnsServer:
        with self._lock:
            self._servfail.add(dns.name.from_text(name))
        return self

    @property
    def nameserver(self) -> str:
        """The value for [delivery] dns."""
        return f"{self.host}:{self.port}"

    # -- running -------------------------------------------------------------

    def start(self) -> DnsServer:
        self._bind()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in (self._udp, self._tcp):
            if sock is not None:
                sock.close()

    def __enter__(self) -> DnsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _bind(self) -> None:
        for _ in range(50):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(16)
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise RuntimeError("no free port for both UDP and TCP")

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._udp, selectors.EVENT_READ, self._on_udp)
            sel.register(self._tcp, selectors.EVENT_READ, self._on_tcp)
            while not self._stop.is_set():
                for key, _ in sel.select(timeout=0.1):
                    with contextlib.suppress(OSError):
                        key.data()

    def _on_udp(self) -> None:
        assert self._udp is not None
        wire, peer = self._udp.recvfrom(65535)
        answer = self._answer(wire)
        if answer is not None:
            self._udp.sendto(answer, peer)

    def _on_tcp(self) -> None:
        assert self._tcp is not None
        conn, _ = self._tcp.accept()
        with conn:
            conn.settimeout(2)
            while True:
                head = _recv_exactly(conn, 2)
                if head is None:
                    return
                wire = _recv_exactly(conn, struct.unpack("!H", head)[0])
                if wire is None:
                    return
                answer = self._answer(wire)
                if answer is None:
                    return
                conn.sendall(struct.pack("!H", len(answer)) + answer)

    # -- answering -----------------------------------------------------------

    def _answer(self, wire: bytes) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except Exception:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if not query.question:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        self.queries.append(
            (question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        )
        with self._lock:
            if question.name in self._servfail:
                response.set_rcode(dns.rcode.SERVFAIL)
                return response.to_wire()
            records = self._records.get(question.name)
            if records is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                return response.to_wire()
            texts = list(records.get(question.rdtype, []))
        if texts:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, TTL, dns.rdataclass.IN, question.rdtype, texts
                )
            )
        return response.to_wire()


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
