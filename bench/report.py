"""Medians over runs, ratios against Postfix, the JSON file and the Markdown.

The Markdown goes between two marker lines in docs/performance.md, so the
hand-written analysis around it (hot spots, what bounds each scenario) stays
as it is when the numbers are regenerated.

This module only formats; it measures nothing and starts nothing.
"""

from __future__ import annotations

import json
import os
import platform
import re
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path


def markers(block: str) -> tuple[str, str]:
    """The lines that fence generated block BLOCK in the doc."""
    return (
        f"<!-- {block}:begin (written by bench/run.py; edit outside the markers) -->",
        f"<!-- {block}:end -->",
    )


# Rows per kind of scenario: metric key, label, which way is better.
ROWS = {
    "mail": [
        ("msgs_per_s", "messages/s", "higher"),
        ("mb_per_s", "MB/s", "higher"),
        ("p50_ms", "latency p50 ms (MAIL to 250)", "lower"),
        ("p99_ms", "latency p99 ms", "lower"),
        ("greet_p99_ms", "greeting wait p99 ms", "lower"),
        ("greet_max_ms", "greeting wait max ms", "lower"),
        ("conn_p99_ms", "session setup p99 ms (TCP, TLS, EHLO)", "lower"),
        ("cpu_ms_per_msg", "server CPU ms/message (machine less client)", "lower"),
        ("tree_cpu_ms_per_msg", "server CPU ms/message (server process tree)", "lower"),
        ("peak_rss_mib", "peak memory MiB (RSS summed)", "lower"),
        ("peak_pss_mib", "peak memory MiB (PSS)", "lower"),
        ("drain_s", "queue drained after load, s", "lower"),
        ("errors", "transport errors", "lower"),
        ("rejected", "rejected messages", "lower"),
    ],
    "idle": [
        ("sessions_open", "sessions open", "higher"),
        ("pss_kib_per_session", "memory KiB/session (PSS)", "lower"),
        ("rss_kib_per_session", "memory KiB/session (RSS summed)", "lower"),
        ("peak_pss_mib", "peak memory MiB (PSS)", "lower"),
        ("cpu_ms_per_session", "server CPU ms/session (machine less client)", "lower"),
        ("greet_p99_ms", "greeting wait p99 ms", "lower"),
        ("greet_max_ms", "greeting wait max ms", "lower"),
        ("conn_p99_ms", "session setup p99 ms", "lower"),
    ],
}
ROWS["sustained"] = [
    ("msgs_per_s", "accepted messages/s", "higher"),
    ("delivered_per_s", "messages/s leaving to the sink", "higher"),
    ("max_queue", "queue length, max", "lower"),
    ("end_queue", "queue length when the load stopped", "lower"),
    ("pss_first_mib", "memory MiB (PSS) in the first second of load", "lower"),
    ("pss_last_mib", "memory MiB (PSS) in the last second of load", "lower"),
    *[row for row in ROWS["mail"] if row[0] not in ("msgs_per_s", "mb_per_s")],
]

# The headline number of each scenario and the target for the ratio.
HEADLINE = {
    "1": ("msgs_per_s", ">= 1.7x"),
    "2": ("msgs_per_s", ">= 2x"),
    "3": ("msgs_per_s", ">= 2x"),
    "4": ("pss_kib_per_session", "<= 48 KiB/session"),
    "5a": ("mb_per_s", "> 1x"),
    "5b": ("mb_per_s", "> 1x"),
    "6": ("delivered_per_s", "> 1x"),
}


def value(metrics: dict, key: str):
    found = metrics.get(key)
    return metrics.get("load", {}).get(key) if found is None else found


def medians(runs: list[dict], kind: str) -> dict:
    """Median of every row's metric over RUNS (None where no run has it)."""
    out: dict = {"failed_runs": sum(1 for r in runs if "failed" in r)}
    for key, _, _ in ROWS[kind]:
        values = [v for v in (value(r, key) for r in runs) if v is not None]
        out[key] = statistics.median(values) if values else None
    return out


def ratio(mine, theirs) -> float | None:
    if mine is None or not theirs:
        return None
    return round(mine / theirs, 2)


def machine() -> dict:
    model = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
    }


def versions(postfix_version: str) -> dict:
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.strip()

    try:
        import uvloop

        uvloop_version = uvloop.__version__
    except ImportError:
        uvloop_version = "not installed"
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "src") else ""
    return {
        "postfix": postfix_version,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "uvloop": uvloop_version,
        "tlsrelay": git("rev-parse", "--short", "HEAD") + dirty,
    }


def write_json(directory: Path, document: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / time.strftime("bench-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps(document, indent=1))
    return path


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return (
            f"{v:.3g}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}"
        )
    return f"{v:,}" if isinstance(v, int) else str(v)


def _ratio_cell(r: float | None) -> str:
    return "—" if r is None else f"{r:.2f}x"


def markdown(document: dict, block: str = "bench") -> str:
    begin, end = markers(block)
    servers = document["servers"]
    base = "postfix" if "postfix" in servers else servers[0]
    others = [s for s in servers if s != base]
    lines = [begin, "", *_preamble(document), "", *_summary(document, base, others)]
    for key, scn in document["scenarios"].items():
        lines += ["", f"### Scenario {key}: {scn['title']}", ""]
        head = ["metric", *servers, *(f"{s}/{base}" for s in others)]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for metric, label, _ in ROWS[scn["kind"]]:
            cells = [scn["median"].get(s, {}).get(metric) for s in servers]
            ref = scn["median"].get(base, {}).get(metric)
            ratios = [ratio(scn["median"].get(s, {}).get(metric), ref) for s in others]
            row = [label, *map(_fmt, cells), *map(_ratio_cell, ratios)]
            lines.append("| " + " | ".join(row) + " |")
        failed = [scn["median"].get(s, {}).get("failed_runs", 0) for s in servers]
        if any(failed):
            lines.append("| runs that failed | " + " | ".join(map(str, failed)) + " |")
        lines += _cpu_lines(scn, servers)
        lines += _queue_lines(scn, servers)
    return "\n".join([*lines, "", end])


def _preamble(doc: dict) -> list[str]:
    m, v = doc["machine"], doc["versions"]
    return [
        f"Run {doc['started']}, {doc['pairs']} alternating run(s) per server and "
        "scenario, medians shown.",
        "",
        f"- Command: `{doc['command']}`",
        f"- Machine: {m['nproc']} cores, {m['cpu']}, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}; load average at start {doc['loadavg_start']}",
        f"- Versions: Postfix {v['postfix']}, Python {v['python']}, {v['openssl']}, "
        f"uvloop {v['uvloop']}, tlsrelay {v['tlsrelay']}",
        *([f"- Note: {doc['note']}"] if doc.get("note") else []),
    ]


def _summary(doc: dict, base: str, others: list[str]) -> list[str]:
    head = ["scenario", "metric", *doc["servers"], *(f"{s}/{base}" for s in others)]
    lines = ["| " + " | ".join(head) + " | target |", "|" + " --- |" * (len(head) + 1)]
    for key, scn in doc["scenarios"].items():
        metric, target = HEADLINE[key]
        label = next(lab for k, lab, _ in ROWS[scn["kind"]] if k == metric)
        med = scn["median"]
        cells = [_fmt(med.get(s, {}).get(metric)) for s in doc["servers"]]
        ref = med.get(base, {}).get(metric)
        ratios = [_ratio_cell(ratio(med.get(s, {}).get(metric), ref)) for s in others]
        lines.append(
            f"| {key} | {label} | " + " | ".join([*cells, *ratios, target]) + " |"
        )
    return lines


def _cpu_lines(scn: dict, servers: list[str]) -> list[str]:
    """Median CPU per message (or session) of each kind of server process."""
    out = ["", "Server CPU ms per message by process (median of runs):", ""]
    if scn["kind"] == "idle":
        out[1] = "Server CPU ms per session by process (median of runs):"
    for server in servers:
        per_role: dict[str, list[float]] = {}
        for run in scn["runs"].get(server) or []:
            n = value(run, "accepted") or value(run, "sessions_open") or 0
            for role, cpu_s in run.get("cpu_s_by_process", {}).items():
                if n:
                    per_role.setdefault(role, []).append(cpu_s * 1000 / n)
        cells = sorted(
            ((statistics.median(v), role) for role, v in per_role.items()),
            reverse=True,
        )
        shown = ", ".join(f"{role} {ms:.2f}" for ms, role in cells if ms >= 0.01)
        out.append(f"- {server}: {shown or '—'}")
    return out


def _queue_lines(scn: dict, servers: list[str]) -> list[str]:
    if scn["kind"] != "sustained":
        return []
    out = ["", "Queue length every 5 s during the load (first run of each server):", ""]
    for server in servers:
        runs = scn["runs"].get(server) or []
        runs = [r for r in runs if "series" in r]
        if runs:
            series = runs[0]["series"]
            points = [p["queue"] for p in series[:: max(1, round(5 / 0.5))]]
            out.append(f"- {server}: " + " ".join(map(str, points)))
    return out


def update_doc(path: Path, text_block: str, block: str = "bench") -> None:
    """Replace generated block BLOCK in PATH (or append it), keeping the rest."""
    begin, end = markers(block)
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: text_block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + text_block + "\n"
    path.write_text(text)


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
