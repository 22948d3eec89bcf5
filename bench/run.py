"""`make bench`: tlsrelay side by side with Postfix on this machine (issue 5).

For each scenario (bench/scenarios.py), runs alternate between the servers,
`--pairs` times each, every run on a freshly started server and sink. The
load generator is ../shared/bench/smtpload.py; Postfix is a private instance
of Debian's package relaying to smtp-sink, tlsrelay is `tlsrelay -c CONFIG
serve` relaying to the same kind of sink; both use one ECDSA P-256
certificate. Medians go to docs/performance.md (between marker lines) and
every run's numbers to bench/results/*.json.

    .venv/bin/python bench/run.py                 # full run, 3 pairs
    .venv/bin/python bench/run.py --quick         # smoke run, 1 pair, small loads
    .venv/bin/python bench/run.py --scenarios 1,2 --servers postfix

Traffic goes to 127.0.0.1 only; every process started here is stopped by pid
and every Postfix instance with `postfix -c DIR stop`, also on Ctrl-C or
SIGTERM. Never part of `make test`: speed is not asserted anywhere.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report
import scenarios
from servers import Certificate, Postfix, Sink, Tlsrelay, make_certificate

REPO = Path(__file__).resolve().parent.parent


def _tlsrelay(loop: str | None):
    """A tlsrelay node; LOOP "asyncio" sets TLSRELAY_LOOP, which makes the
    listener workers run asyncio's own loop instead of uvloop."""
    env = {"TLSRELAY_LOOP": loop} if loop else {}

    def make(root: Path, cert: Certificate, sink_port: int, scn) -> Tlsrelay:
        return Tlsrelay(root, cert, sink_port, env=env)

    return make


# Postfix's default_process_limit by kind of scenario: its default (100) for
# mail, which is faster at 200 clients than 200 processes on 2 cores; above
# the 2,000 sessions of the idle scenario, which otherwise cannot be held.
POSTFIX_LIMITS = {"mail": 100, "sustained": 100, "idle": 2100}

# Server variants by name; "postfix" is the base of every ratio.
SERVERS = {
    "postfix": lambda root, cert, sink_port, scn: Postfix(
        root, cert, sink_port, process_limit=POSTFIX_LIMITS[scn.kind]
    ),
    "tlsrelay": _tlsrelay(None),
    "tlsrelay-asyncio": _tlsrelay("asyncio"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=3, help="runs per server and scenario")
    p.add_argument("--quick", action="store_true", help="1 pair, a tenth of the load")
    keys = ",".join(s.key for s in scenarios.SCENARIOS)
    p.add_argument("--scenarios", default=keys, help=f"comma list of {keys}")
    p.add_argument(
        "--servers",
        default="postfix,tlsrelay",
        help=f"comma list of {','.join(SERVERS)}, run in this order",
    )
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "performance.md")
    p.add_argument("--no-doc", action="store_true", help="do not touch the doc")
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--note", default="", help="a line for the doc (e.g. noise)")
    p.add_argument(
        "--block",
        default="bench",
        help="name of the generated block in the doc (e.g. loops for a comparison)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the tlsrelay runs (stacks in --results; doc left alone)",
    )
    args = p.parse_args(argv)
    args.scenario_list = _pick(args.scenarios, scenarios.SCENARIOS, args.quick)
    args.server_list = args.servers.split(",")
    unknown = set(args.server_list) - set(SERVERS)
    if unknown or args.pairs < 1:
        p.error(f"unknown server(s) {sorted(unknown)} or --pairs < 1")
    if args.quick:
        args.pairs = 1
    if args.profile:
        args.no_doc = True  # sampling slows the node: these numbers do not count
    return args


def _pick(text: str, table, quick: bool) -> list[scenarios.Scenario]:
    wanted = text.split(",")
    chosen = [s for s in table if s.key in wanted or s.key.rstrip("ab") in wanted]
    if not chosen:
        sys.exit(f"bench: no scenario among {text!r}")
    return [s.quick() if quick else s for s in chosen]


def _headline(key: str, metrics: dict) -> str:
    metric = report.HEADLINE[key][0]
    load = metrics["load"]
    return (
        f"{metric}={metrics.get(metric)} errors={load.get('errors')} "
        f"cpu/msg={metrics.get('cpu_ms_per_msg')} "
        f"peak_pss={metrics['peak_pss_mib']}MiB drain={metrics['drain_s']}s"
    )


def run_scenario(args, scn, cert: Certificate, work: Path) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in args.server_list}
    for pair in range(args.pairs):
        for name in args.server_list:
            root = work / f"s{scn.key}-{name}-{pair}"

            def make_server(directory, sink_port, scn, name=name):
                return SERVERS[name](directory, cert, sink_port, scn)

            loadavg = os.getloadavg()[0]
            spy = args.profile and name != "postfix"
            spy_dir = args.results / f"profile-{scn.key}-{name}-{pair}" if spy else None
            try:
                metrics = scenarios.run_once(scn, make_server, Sink, root, spy_dir)
            except (
                RuntimeError,
                OSError,
                ValueError,
                subprocess.SubprocessError,
            ) as exc:
                # One failed run is reported and left out of the medians.
                print(f"  {scn.key} {name} #{pair + 1}: FAILED: {exc}", file=sys.stderr)
                runs[name].append({"failed": str(exc)[-2000:]})
                continue
            metrics["loadavg_before"] = round(loadavg, 2)
            runs[name].append(metrics)
            if "profile" in metrics:
                _print_profile(metrics["profile"])
            print(f"  {scn.key} {name} #{pair + 1}: {_headline(scn.key, metrics)}",
                  file=sys.stderr, flush=True)  # fmt: skip
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
    return {
        "title": scn.title,
        "kind": scn.kind,
        "parameters": scn.__dict__,
        "median": {n: report.medians(r, scn.kind) for n, r in runs.items()},
        "runs": runs,
    }


def _print_profile(roles: dict) -> None:
    for role, found in sorted(roles.items()):
        if role == "perf":
            for sort, rows in found.items():
                print(f"    perf by {sort}:", file=sys.stderr)
                print("      " + "\n      ".join(rows), file=sys.stderr)
            continue
        busy = f"{found['samples']} samples, {found['busy_thread_s']} s busy threads"
        print(f"    {role}: {busy}", file=sys.stderr)
        for kind in ("own", "inclusive"):
            top = ", ".join(f"{f} {p}%" for f, p in found[kind][:12])
            print(f"      {kind}: {top}", file=sys.stderr)


def _stop_on_sigterm() -> None:
    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    work = Path(tempfile.mkdtemp(prefix="tlsrelay-bench-"))
    work.chmod(0o755)  # Postfix's daemons must reach the instance dirs
    document = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": report.command_line(),
        "pairs": args.pairs,
        "servers": args.server_list,
        "machine": report.machine(),
        "versions": report.versions(Postfix.version()),
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "note": args.note,
        "scenarios": {},
    }
    try:
        cert = make_certificate(work / "tls")
        for scn in args.scenario_list:
            print(f"scenario {scn.key}: {scn.title}", file=sys.stderr, flush=True)
            document["scenarios"][scn.key] = run_scenario(args, scn, cert, work)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    path = report.write_json(args.results, document)
    print(f"results: {path}", file=sys.stderr)
    block = report.markdown(document, args.block)
    if not args.no_doc:
        report.update_doc(args.doc, block, args.block)
        print(f"table: {args.doc}", file=sys.stderr)
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
