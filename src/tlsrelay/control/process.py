"""The control process: `python -m tlsrelay.control.process -c CONFIG`.

Started once per node by the supervisor (`tlsrelay serve`). It

- migrates the store (retrying while it is unreachable),
- publishes this node's location snapshot (relay/access.py) at start and
  whenever the store's change counter moves, polled every `poll_interval_s`
  (a change reaches the listeners within a second),
- serves the HTTP API and the web portal with uvicorn when [portal] listen
  is set.

When the store is unreachable the last snapshot stays in force: listeners
keep serving and the publisher logs one warning per outage and retries.
This process never logs the store password, tokens or passwords.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from tlsrelay import config
from tlsrelay.control import db, lists
from tlsrelay.control.errors import StoreUnavailable

log = logging.getLogger(__name__)

_VERSION = select(db.StoreState.version)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


class Publisher:
    """Keeps the local snapshot in step with the store."""

    def __init__(self, settings: config.Settings, poll_interval_s: float = 0.25):
        self.settings = settings
        self.poll_interval_s = poll_interval_s
        self.published_version: int | None = None
        # What the file looked like after our write; another writer (the CLI)
        # changing it makes us publish again, so an older write cannot stick.
        self.published_stamp: tuple[int, int] | None = None
        self.ready = False
        self.outage = False
        self.stop_event = threading.Event()
        self.path = settings.snapshot_path(settings.node.location)
        self._engine: Engine | None = None

    def poll_once(self) -> bool:
        """Publish if the store changed; True when a new snapshot was written.

        Each poll reads only the change counter, on a pooled connection and
        without an ORM session; the lists are read only when it moved (or
        the file was changed by someone else).
        """
        try:
            if not self.ready:
                db.upgrade(self.settings)
                self.ready = True
            version = self._store_version()
            if version == self.published_version and _stamp(self.path) == (
                self.published_stamp
            ):
                self._recovered()
                return False
            with db.transaction(self.settings) as session:
                data = lists.snapshot(session, self.settings.node.location)
        except StoreUnavailable as exc:
            if not self.outage:
                log.warning("%s; keeping the last snapshot, retrying", exc)
            self.outage = True
            return False
        self._recovered()
        try:
            path = lists.publish(self.settings, data)
        except OSError as exc:
            log.error("cannot write the snapshot: %s", exc)
            return False
        self.published_version = data.version
        self.published_stamp = _stamp(path)
        return True

    def _store_version(self) -> int:
        if self._engine is None:
            self._engine = db.engine(self.settings)
        try:
            with self._engine.connect() as conn:
                return conn.execute(_VERSION).scalar_one()
        except (OperationalError, InterfaceError) as exc:
            # The same StoreUnavailable (no password, driver message) as db.py.
            raise db._unavailable(self.settings, exc) from None

    def _recovered(self) -> None:
        if self.outage:
            log.warning("store reachable again")
            self.outage = False

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.poll_once()
            self.stop_event.wait(self.poll_interval_s)

    def stop(self) -> None:
        self.stop_event.set()


def serve_portal(settings: config.Settings, publisher: Publisher) -> None:
    """Run uvicorn in this thread until SIGTERM or SIGINT."""
    import uvicorn

    from tlsrelay.control.web import create_app

    host, port = config.parse_hostport(settings.portal.listen)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
    )
    server.run()
    publisher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tlsrelay.control.process")
    parser.add_argument("-c", "--config", default="tlsrelay.toml")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=max(logging.INFO - 10 * args.verbose, logging.DEBUG),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"tlsrelay.control.process: {exc}", file=sys.stderr)
        return 2

    publisher = Publisher(settings)
    if not settings.portal.listen:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: publisher.stop())
        publisher.run()
        return 0
    thread = threading.Thread(target=publisher.run, name="publisher", daemon=True)
    thread.start()
    serve_portal(settings, publisher)
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
