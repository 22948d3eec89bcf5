"""`python -m tlsrelay.relay.delivery -c CONFIG`: the delivery process.

Runs the scheduler until SIGTERM or SIGINT, then lets running attempts
finish for a few seconds; anything cut short is retried after a restart.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from tlsrelay import config
from tlsrelay.relay.delivery.resolve import Resolver, make_resolver
from tlsrelay.relay.delivery.scheduler import Scheduler
from tlsrelay.relay.spool import Spool

log = logging.getLogger("tlsrelay.relay.delivery")


async def serve(settings: config.Settings) -> None:
    spool = Spool(settings.spool.path, settings.spool.min_free_bytes).create()
    d = settings.delivery
    resolver = Resolver(make_resolver(d.dns), d.routes, d.smtp_port)
    scheduler = Scheduler(settings, spool, resolver)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, scheduler.stop)
    log.info("delivery started: spool %s, dns %s", spool.path, d.dns)
    await scheduler.run()
    log.info("delivery stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tlsrelay.relay.delivery")
    parser.add_argument("-c", "--config", default="tlsrelay.toml", metavar="FILE")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        settings = config.load(args.config)
    except config.ConfigError as exc:
        print(f"tlsrelay delivery: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
