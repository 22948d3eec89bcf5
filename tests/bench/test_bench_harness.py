"""The benchmark harness's own logic (bench/), without running a benchmark.

`make bench` itself is never part of the suite; these check the parts that
would silently corrupt its numbers: the Postfix config it writes, the sink
counter it parses, the CPU split, the medians and the doc block it rewrites.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import measure  # noqa: E402
import report  # noqa: E402
import servers  # noqa: E402


def test_postfix_config_substitutes_tlsdir_before_dir(tmp_path):
    cert = servers.Certificate(tmp_path / "tls/ec-chain.pem", tmp_path / "tls/k.pem")
    pf = servers.Postfix(tmp_path / "pf", cert, sink_port=40025, process_limit=2100)
    (tmp_path / "pf" / "etc").mkdir(parents=True)
    pf._write_config()

    main = (tmp_path / "pf/etc/main.cf").read_text()
    master = (tmp_path / "pf/etc/master.cf").read_text()
    assert f"smtpd_tls_cert_file = {cert.chain}\n" in main
    assert f"smtpd_tls_key_file = {cert.key}\n" in main
    assert f"queue_directory = {tmp_path / 'pf'}/queue\n" in main
    assert "relayhost = [127.0.0.1]:40025\n" in main
    assert "in_flow_delay = 0\n" in main
    assert "default_process_limit = 2100\n" in main
    assert f"\n127.0.0.1:{pf.port} inet" in master
    assert "10587" not in master and "TLSDIR" not in main


def test_sink_count_is_the_last_counter_printed(tmp_path):
    sink = servers.Sink(tmp_path)
    sink.counter_file.write_bytes(
        b"sess=1 quit=0 mesg=1\rsess=2 quit=1 mesg=9\rsess=2 quit=2 mesg=10\r"
    )
    assert sink.delivered() == 10


def test_sink_count_is_zero_before_any_output(tmp_path):
    assert servers.Sink(tmp_path).delivered() == 0


def test_cpu_split_counts_new_and_reaped_processes():
    before = {1: ("master", 1.0, 0.5), 2: ("smtpd", 0.2, 0.0)}
    after = {1: ("master", 1.5, 2.5), 2: ("smtpd", 0.7, 0.0), 3: ("smtpd", 0.3, 0.0)}

    split = measure.cpu_by_role(before, after)

    assert split == {"(reaped)": 2.0, "smtpd": 0.8, "master": 0.5}


def test_medians_skip_failed_runs_and_missing_values():
    runs = [
        {"msgs_per_s": 100.0, "load": {"errors": 0}},
        {"failed": "postfix start failed"},
        {"msgs_per_s": 300.0, "load": {"errors": 2}},
        {"msgs_per_s": 200.0, "p99_ms": None, "load": {"errors": 1}},
    ]

    med = report.medians(runs, "mail")

    assert med["msgs_per_s"] == 200.0
    assert med["errors"] == 1
    assert med["p99_ms"] is None
    assert med["failed_runs"] == 1


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [(600.0, 300.0, 2.0), (None, 300.0, None), (5.0, 0, None), (1.0, 3.0, 0.33)],
)
def test_ratio(mine, theirs, expected):
    assert report.ratio(mine, theirs) == expected


def test_update_doc_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "performance.md"
    begin, end = report.markers("bench")
    other_begin, other_end = report.markers("loops")
    doc.write_text(
        f"# Title\n\nintro\n\n{begin}\nold numbers\n{end}\n\n"
        f"{other_begin}\nloop numbers\n{other_end}\n\n## Analysis\nkept\n"
    )

    report.update_doc(doc, f"{begin}\nnew numbers\n{end}", "bench")

    text = doc.read_text()
    assert "new numbers" in text and "old numbers" not in text
    assert "loop numbers" in text
    assert text.startswith("# Title\n\nintro\n") and text.endswith(
        "## Analysis\nkept\n"
    )


def test_update_doc_appends_a_missing_block(tmp_path):
    doc = tmp_path / "performance.md"
    doc.write_text("# Title\n")
    begin, end = report.markers("loops")

    report.update_doc(doc, f"{begin}\nx\n{end}", "loops")

    assert doc.read_text() == f"# Title\n\n{begin}\nx\n{end}\n"
