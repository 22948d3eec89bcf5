"""One listener worker: `python -m tlsrelay.relay.worker -c CONFIG`.

The supervisor starts one per core. Each runs one asyncio loop (uvloop when
installed) and binds every submission and smtps address itself with
SO_REUSEPORT, so the kernel spreads new connections over the workers. When
all addresses listen it writes "ready" to the file descriptor given with
--ready-fd, which is how the supervisor knows the relay is up.

TLSRELAY_LOOP=asyncio in the environment selects asyncio's own event loop
instead of uvloop (for benchmarks).

Signals: SIGHUP reloads the certificate for new handshakes (sessions keep
theirs); SIGTERM or SIGINT stop accepting, let running transactions finish
for up to `GRACE_S`, then close what is left with 421.

A worker holds no database credentials: it reads only the config, the
certificate, the filtering-list snapshot and writes only the spool.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys

from tlsrelay import config
from tlsrelay.relay.access import AccessList
from tlsrelay.relay.listener import SMTPS, SUBMISSION, Listener
from tlsrelay.relay.spool import Spool
from tlsrelay.relay.tlsio import CertificateStore, TlsConfigError

log = logging.getLogger("tlsrelay.relay.worker")

GRACE_S = 10.0
BACKLOG = 1024


def bind(address: str) -> socket.socket:
    """A listening socket on ADDRESS shared with the other workers."""
    host, port = config.parse_hostport(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve(settings: config.Settings, ready_fd: int | None) -> None:
    loop = asyncio.get_running_loop()
    certs = CertificateStore(settings.tls.cert, settings.tls.key)
    spool = Spool(settings.spool.path, settings.spool.min_free_bytes)
    access = AccessList(settings.snapshot_path(settings.node.location))
    listener = Listener(settings, certs, access, spool)

    servers = []
    for kind, addresses in (
        (SUBMISSION, settings.listen.submission),
        (SMTPS, settings.listen.smtps),
    ):
        for address in addresses:
            servers.append(
                await loop.create_server(listener.factory(kind), sock=bind(address))
            )
            log.info("listening on %s (%s)", address, kind)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
        os.close(ready_fd)

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, certs.reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()

    log.info("stopping: no new connections, %d sessions open", len(listener.sessions))
    for server in servers:
        server.close()
    await listener.shutdown(GRACE_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlsrelay.relay.worker")
    parser.add_argument("-c", "--config", required=True)
    parser.add_argument("--ready-fd", type=int)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",
    )
    try:
        settings = config.load(args.config)
        run(serve(settings, args.ready_fd))
    except (config.ConfigError, TlsConfigError) as exc:
        log.error("cannot start: %s", exc)
        return 2
    except OSError as exc:
        log.error("cannot listen: %s", exc)
        return 2
    return 0


def run(main_coro) -> None:
    """Run on uvloop when it is installed, else on asyncio's default loop.

    TLSRELAY_LOOP=asyncio in the environment forces asyncio's own loop, so a
    benchmark can compare the two.
    """
    try:
        import uvloop
    except ImportError:
        uvloop = None
    if uvloop is None or os.environ.get("TLSRELAY_LOOP") == "asyncio":
        asyncio.run(main_coro)
        return
    uvloop.run(main_coro)


if __name__ == "__main__":
    sys.exit(main())
