"""bench/cc_fidelity.py: its pure figures (Jain's index, percentiles, tcp_probe lines, receiver
series, the result table) without a lab, and one short smoke run of the tool in a lab.

The smoke run checks that the tool measures and cleans up, not what it measures: no figure is
compared with a target here (bench/cc_fidelity.py itself reports PASS/FAIL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import cc_fidelity as ccf  # noqa: E402

# ------------------------------------------------------------------------------------- Jain


def test_jain_index_equal_shares_is_one():
    assert ccf.jain_index([25e6, 25e6]) == pytest.approx(1.0)
    assert ccf.jain_index([3.0, 3.0, 3.0, 3.0]) == pytest.approx(1.0)


def test_jain_index_one_flow_takes_all_is_one_over_n():
    assert ccf.jain_index([50e6, 0.0]) == pytest.approx(0.5)
    assert ccf.jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_jain_index_worked_example_and_scale_invariance():
    # (1 + 2 + 3)^2 / (3 * (1 + 4 + 9)) = 36 / 42
    assert ccf.jain_index([1, 2, 3]) == pytest.approx(36 / 42)
    assert ccf.jain_index([10e6, 20e6, 30e6]) == pytest.approx(36 / 42)


def test_jain_index_nothing_to_judge():
    assert ccf.jain_index([]) is None
    assert ccf.jain_index([0.0, 0.0]) is None


# ------------------------------------------------------------------------------- percentile


def test_percentile_linear_between_closest_ranks():
    xs = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert ccf.percentile(xs, 0) == 1.0
    assert ccf.percentile(xs, 100) == 4.0
    assert ccf.percentile(xs, 50) == pytest.approx(2.5)
    assert ccf.percentile(xs, 95) == pytest.approx(3.85)  # numpy.percentile's default
    assert ccf.percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert xs == [4.0, 1.0, 3.0, 2.0]  # not sorted in place


def test_percentile_edges():
    assert ccf.percentile([], 95) is None
    assert ccf.percentile([7.0], 95) == 7.0
    with pytest.raises(ValueError):
        ccf.percentile([1.0], 101)


def test_ratio_and_within():
    assert ccf.ratio(1.05, 1.0) == pytest.approx(1.05)
    assert ccf.ratio(1.0, 0) is None and ccf.ratio(None, 1.0) is None
    assert ccf.within(1.05, 0.05) and ccf.within(0.95, 0.05)
    assert not ccf.within(1.0501, 0.05) and not ccf.within(None, 0.05)


# -------------------------------------------------------------------------------- tcp_probe

# The format of this kernel's tcp:tcp_probe (see its tracefs format file), as the `trace` file
# prints it with the mono clock.
PROBE_LINE = (
    "          <idle>-0       [001] ..s2.  1234.567890: tcp_probe: family=AF_INET "
    "src=198.18.1.1:41001 dest=198.19.0.1:5301 mark=0x0 data_len=0 snd_nxt=0x2b9e1f00 "
    "snd_una=0x2b9d0000 snd_cwnd=42 ssthresh=2147483647 snd_wnd=3145728 srtt=40312 "
    "rcv_wnd=65160 sock_cookie=2003 skbaddr=000000009a8b7c6d skaddr=00000000e1f2a3b4"
)


def test_parse_tcp_probe_line():
    ev = ccf.parse_tcp_probe(PROBE_LINE)
    assert ev["t"] == pytest.approx(1234.567890)
    assert ev["src"] == "198.18.1.1:41001" and ev["sport"] == 41001 and ev["src_ip"] == "198.18.1.1"
    assert ev["dst"] == "198.19.0.1:5301" and ev["dport"] == 5301
    assert ev["snd_cwnd"] == 42
    assert ev["ssthresh"] == 2147483647
    assert ev["srtt"] == 40312  # microseconds, as the tracepoint stores it (srtt_us >> 3)
    assert ev["snd_una"] == 0x2B9D0000 and ev["snd_nxt"] == 0x2B9E1F00
    assert ev["snd_wnd"] == 3145728 and ev["data_len"] == 0


def test_parse_tcp_probe_older_format_without_family_and_addresses():
    line = ("  iperf3-812 [000] ....  17.000001: tcp_probe: src=10.0.0.1:5201 dest=10.0.0.2:4000 "
            "mark=0x0 data_len=1448 snd_nxt=0x10 snd_una=0x1 snd_cwnd=10 ssthresh=7 snd_wnd=100 "
            "srtt=100 rcv_wnd=200 sock_cookie=1")
    ev = ccf.parse_tcp_probe(line)
    assert ev["sport"] == 5201 and ev["snd_cwnd"] == 10 and ev["srtt"] == 100


def test_parse_tcp_probe_ignores_other_lines():
    assert ccf.parse_tcp_probe("# tracer: nop") is None
    assert ccf.parse_tcp_probe("#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION") is None
    assert ccf.parse_tcp_probe("  <idle>-0 [000] ..s2. 5.000001: tcp_retransmit_skb: skbaddr=0") is None
    assert ccf.parse_tcp_probe("") is None


def test_kernel_srtt_stops_at_the_acks_covering_the_measured_bytes_across_wraparound():
    base = 0xFFFF_F000  # snd_una wraps past 2^32 during the flow
    events = [{"snd_una": (base + off) & 0xFFFFFFFF, "srtt": srtt}
              for off, srtt in ((0, 0), (1000, 41000), (4096, 42000), (9000, 43000), (20000, 50000))]
    assert ccf.kernel_srtt_ms(events, None) == [41.0, 42.0, 43.0, 50.0]  # srtt 0: no sample yet
    assert ccf.kernel_srtt_ms(events, 9000) == [41.0, 42.0, 43.0]
    assert ccf.kernel_srtt_ms([], 10) == []


def test_own_events_keep_the_flows_socket_only():
    """Two labs, two sockets with source port 41001 at once: the cookie tells them apart."""
    mine = ccf.parse_tcp_probe(PROBE_LINE)  # sock_cookie=2003 (hex)
    other = ccf.parse_tcp_probe(PROBE_LINE.replace("sock_cookie=2003", "sock_cookie=77"))
    assert mine["sock_cookie"] == 0x2003 and other["sock_cookie"] == 0x77
    assert ccf.own_events([mine, other, mine], 0x2003) == ([mine, mine], 1)
    assert ccf.own_events([mine, other], None) == ([mine, other], 0)  # no cookie: keep all
    no_cookie = {k: v for k, v in mine.items() if k != "sock_cookie"}
    assert ccf.own_events([no_cookie], 0x2003) == ([no_cookie], 0)  # an older tracepoint


def test_usertcp_rtt_takes_ack_records_only():
    records = [{"event": "ack", "srtt": 0.040, "rtt": 0.041},
               {"event": "on_congestion_event", "srtt": 0.090, "rtt": 0.090},
               {"event": "ack", "srtt": None, "rtt": None},
               {"event": "ack", "srtt": 0.050, "rtt": 0.060}]
    assert ccf.usertcp_rtt_ms(records) == pytest.approx([40.0, 50.0])
    assert ccf.usertcp_rtt_ms(records, "rtt") == pytest.approx([41.0, 60.0])
    assert ccf.cc_event_counts(records) == {"on_congestion_event": 1}


# --------------------------------------------------------------------------- receiver series

SERIES = [[10.0, 1000], [11.0, 2000], [12.0, 4000], [13.0, 4000]]


def test_bytes_at_interpolates_and_clamps():
    assert ccf.bytes_at(SERIES, 9.0) == 0
    assert ccf.bytes_at(SERIES, 10.0) == 1000
    assert ccf.bytes_at(SERIES, 11.5) == pytest.approx(3000)
    assert ccf.bytes_at(SERIES, 99.0) == 4000
    assert ccf.bytes_at([], 1.0) == 0


def test_interval_goodput():
    assert ccf.interval_goodput(SERIES, 11.0, 12.0) == pytest.approx(2000 * 8)
    assert ccf.interval_goodput(SERIES, 12.0, 12.0) is None


def test_binned_rate():
    xs, ys = ccf.binned_rate(SERIES, 10.0, 1.0)
    assert xs == [0.5, 1.5, 2.5]
    assert ys == pytest.approx([8000, 16000, 0])


def test_overlap_of_flows():
    a = {"first": 1.0, "last": 61.0}
    b = {"first": 1.5, "last": 58.0}
    assert ccf.overlap([a, b]) == (1.5, 58.0)
    assert ccf.overlap([a, {"first": 70.0, "last": 80.0}]) is None
    assert ccf.overlap([a, {"first": None, "last": None}]) is None


def test_fairness_figures_over_the_overlap():
    def rx(first, rate, seconds):  # a flow delivering `rate` bytes/s from `first`
        return {"first": first, "last": first + seconds, "bytes": int(rate * seconds),
                "series": [[first + i, int(rate * i)] for i in range(int(seconds) + 1)]}

    results = [{"label": "a", "command": "", "sport": 1, "rx": rx(0.0, 3e6, 20), "cpu_cores": None,
                "exit": 0, "output": None, "path": None},
               {"label": "b", "command": "", "sport": 2, "rx": rx(2.0, 1e6, 30), "cpu_cores": None,
                "exit": 0, "output": None, "path": None}]
    fig = ccf.fairness_figures(results)
    assert fig["overlap"] == (2.0, 20.0) and fig["overlap_s"] == pytest.approx(18.0)
    assert [f["goodput_bps"] for f in fig["flows"]] == pytest.approx([24e6, 8e6])
    assert fig["jain"] == pytest.approx(32**2 / (2 * (24**2 + 8**2)))


# -------------------------------------------------------------------------------- counters


def test_parse_netstat_and_counters_delta():
    text = ("TcpExt: SyncookiesSent TCPDSACKOldSent TCPFullUndo\nTcpExt: 0 7 2\n"
            "IpExt: InNoRoutes\nIpExt: 1\n")
    c = ccf.parse_netstat(text)
    assert c == {"SyncookiesSent": 0, "TCPDSACKOldSent": 7, "TCPFullUndo": 2, "InNoRoutes": 1}
    a = {"tbf_drops": 3, "loss_dropped": None, "receiver": {"X": 1}, "senders": [{"Y": 2}]}
    b = {"tbf_drops": 10, "loss_dropped": None, "receiver": {"X": 5}, "senders": [{"Y": 2}]}
    assert ccf.counters_delta(a, b) == {"tbf_drops": 7, "loss_dropped": None, "receiver": {"X": 4},
                                         "senders": [{"Y": 0}]}


def test_leftover_helpers_are_recognised_by_prefix():
    ccf.set_prefix("ccf")
    script = str(REPO / "bench" / "cc_fidelity.py")
    assert ccf._is_ours(["python", script, "_sink", "--tag", "ccf", "--port", "5301"])
    assert not ccf._is_ours(["python", script, "_sink", "--tag", "other", "--port", "5301"])
    assert ccf._is_ours(["python", "-m", "usertcp", "send", "x:1", "--netns", "ccf2-snd2"])
    assert not ccf._is_ours(["python", "-m", "usertcp", "send", "x:1", "--netns", "ut-snd"])
    assert not ccf._is_ours(["python", "-m", "pytest"])
    with pytest.raises(ValueError):
        ccf.set_prefix("much-too-long")


# ----------------------------------------------------------------------------- the table


def _fidelity_fig(goodput_ratio, rtt_ratio):
    return {
        "algo": "cubic", "loss": 0.005, "bytes": 123_456,
        "goodput_ratio": goodput_ratio, "rtt_p95_ratio": rtt_ratio,
        "kernel": {"goodput_bps": 47e6, "srtt": {"p95_ms": 78.0}, "retrans_bytes": 100,
                   "tbf_drops": 31, "receiver_dsacks": 0, "kernel_recoveries": 4, "kernel_undos": 0,
                   "loss_dropped": 50, "probe_lost": 0},
        "usertcp": {"goodput_bps": 47e6 * (goodput_ratio or 0), "srtt": {"p95_ms": 79.0},
                    "rtt": {"p95_ms": 80.0}, "retrans_bytes": 200, "tbf_drops": 40,
                    "receiver_dsacks": 0, "cc_events": {"on_congestion_event": 5, "on_undo": 1},
                    "loss_dropped": 60, "cpu_cores": 0.3},
    }


def test_fidelity_rows_pass_and_fail_against_the_targets():
    rows = {r.figure: r for r in ccf.fidelity_rows("cubic, loss 0.5%", _fidelity_fig(1.049, 0.91))}
    assert rows["goodput usertcp/kernel"].ok is True
    assert rows["goodput usertcp/kernel"].target == "1 ± 5%"
    assert rows["p95 srtt usertcp/kernel"].ok is True
    assert rows["p95 srtt usertcp/kernel"].target == "1 ± 10%"
    assert rows["goodput kernel"].ok is None  # information, no target
    assert rows["congestion events / undos usertcp"].text() == "5 / 1"
    assert rows["random-loss drops kernel / usertcp"].text() == "50 / 60"
    rows = {r.figure: r for r in ccf.fidelity_rows("c", _fidelity_fig(1.132, 1.2))}
    assert rows["goodput usertcp/kernel"].ok is False and rows["p95 srtt usertcp/kernel"].ok is False
    rows = {r.figure: r for r in ccf.fidelity_rows("c", _fidelity_fig(None, None))}
    assert rows["goodput usertcp/kernel"].ok is False  # not measured: not a pass
    assert rows["goodput usertcp/kernel"].text() == "—"


def test_fairness_rows_target_and_reference():
    fig = {"jain": 0.96, "overlap_s": 59.0,
           "flows": [{"label": "usertcp cubic #1", "goodput_bps": 25e6, "summary": {"undos": 3, "retransmitted_bytes": 9}},
                     {"label": "kernel cubic", "goodput_bps": 20e6, "retrans_bytes": 5, "summary": {"tcp_info": {}}}]}
    rows = ccf.fairness_rows("usertcp cubic vs kernel cubic", fig)
    assert rows[0].figure == "Jain's index" and rows[0].ok is True and rows[0].target == "≥ 0.95"
    texts = {r.figure: r.text() for r in rows}
    assert texts["retransmitted bytes / undos usertcp cubic #1"] == "9 / 3"
    assert texts["retransmitted bytes kernel cubic"] == "5"
    assert ccf.fairness_rows("x", {**fig, "jain": 0.949})[0].ok is False
    ref = ccf.fairness_rows("kernel cubic × 2", {**fig, "jain": 0.5}, reference=True)
    assert ref[0].ok is None and "reference" in ref[0].figure


def test_result_table_renders_rows_verdicts_and_errors():
    rows = ccf.fidelity_rows("cubic, loss 0%", _fidelity_fig(1.0, 1.2))
    table = ccf.result_table(rows, {"fairness usertcp bbr × 2": "Traceback ...\nRuntimeError: no data"})
    assert table.row_count == len(rows) + 1
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "PASS" in text and "FAIL" in text and "RuntimeError: no data" in text
    assert "47 Mbit/s" in text and "78.000 ms" in text


def test_fairness_cases_give_bbr_flows_different_seeds():
    cases = {c: (flows, ref) for c, flows, ref in ccf.fairness_cases(["cubic", "bbr"], reference=True)}
    bbr, ref = cases["usertcp bbr × 2"]
    assert not ref and {f.params for f in bbr} == {("seed=1",), ("seed=2",)}
    assert {f.sender for f in bbr} == {0, 1}
    assert cases["kernel cubic × 2"][1] is True
    mixed = cases["usertcp cubic vs kernel cubic"][0]
    assert [(f.kind, f.algo) for f in mixed] == [("usertcp", "cubic"), ("kernel", "cubic")]
    assert "kernel bbr × 2" not in dict((c, 0) for c, _, _ in ccf.fairness_cases(["bbr"], reference=False))


# ------------------------------------------------------------- what is compared: --cc, --kernel-cc

EXAMPLE = "examples/cc/scalable.py:Scalable"


def test_default_pairs_are_the_issues_with_targets():
    args = ccf.parse_args([])
    assert [(p.spec, p.kernel, p.targets) for p in args.pairs] == [("cubic", "cubic", True), ("bbr", "bbr", True)]
    assert args.algos == ["cubic", "bbr"] and [p.label for p in args.pairs] == ["cubic", "bbr"]
    args = ccf.parse_args(["--algos", "bbr"])
    assert [p.label for p in args.pairs] == ["bbr"] and args.pairs[0].slug == ("bbr",)


def test_cc_spec_by_path_against_a_kernel_algorithm(monkeypatch):
    monkeypatch.chdir(REPO)
    args = ccf.parse_args(["--cc", EXAMPLE, "--cc-param", "ai_cnt=50", "--kernel-cc", "reno"])
    [pair] = args.pairs  # --cc alone replaces the default cubic,bbr
    assert pair.spec == EXAMPLE and pair.kernel == "reno" and pair.params == ("ai_cnt=50",)
    assert pair.arg == str(REPO / "examples/cc/scalable.py") + ":Scalable"  # senders run from REPO
    assert pair.name == "scalable" and not pair.targets
    assert pair.label == "scalable (ai_cnt=50) vs kernel reno"
    assert pair.title == f"usertcp {EXAMPLE} (ai_cnt=50) vs kernel reno"
    assert ccf._slug("fidelity", *pair.slug, "loss0.5") == "fidelity-scalable-aicnt50-vs-reno-loss0.5"
    # With an explicit --algos, its pairs first, then --cc's.
    args = ccf.parse_args(["--algos", "cubic", "--cc", EXAMPLE, "--kernel-cc", "reno"])
    assert [p.label for p in args.pairs] == ["cubic", "scalable vs kernel reno"]
    assert [p.targets for p in args.pairs] == [True, False]


def test_cc_builtin_defaults_to_its_kernel_counterpart():
    [pair] = ccf.parse_args(["--cc", "newreno"]).pairs
    assert (pair.kernel, pair.arg, pair.label, pair.targets) == ("reno", "newreno", "newreno vs kernel reno", False)
    [pair] = ccf.parse_args(["--cc", "cubic"]).pairs
    assert pair.kernel == "cubic" and pair.targets  # the issue's pair, by another spelling
    [pair] = ccf.parse_args(["--cc", "cubic", "--cc-param", "beta_cubic=0.8"]).pairs
    assert not pair.targets  # tuned: a comparison, not a fidelity figure


@pytest.mark.parametrize("argv, message", [
    (["--cc", "nosuch"], "unknown congestion control 'nosuch'"),
    (["--cc", "examples/cc/missing.py:X", "--kernel-cc", "reno"], "does not exist"),
    (["--cc", EXAMPLE, "--kernel-cc", "reno", "--cc-param", "ai_cnt=0"], "ai_cnt: 0 is below the minimum 1"),
    (["--cc", EXAMPLE, "--kernel-cc", "reno", "--cc-param", "ai_cnt"], "expected NAME=VALUE"),
    (["--cc", EXAMPLE, "--kernel-cc", "reno", "--cc-param", "beta=1"], "has no parameter 'beta'"),
    (["--cc", EXAMPLE], "name the kernel's algorithm with --kernel-cc"),
    (["--cc", EXAMPLE, "--kernel-cc", "Reno!"], "not a kernel congestion-control name"),
    (["--kernel-cc", "reno"], "go with --cc"),
    (["--cc-param", "ai_cnt=5"], "go with --cc"),
    (["--algos", "reno"], "is not one of cubic, bbr"),
])
def test_cc_options_are_checked_before_anything_runs(argv, message, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exc:
        ccf.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_kernel_cc_error_names_the_missing_and_the_available():
    assert ccf.kernel_cc_error(["reno", "cubic"], ["reno", "bbr", "cubic"]) is None
    msg = ccf.kernel_cc_error(["scalable", "reno"], ["reno", "bbr", "cubic"],
                              [{"module": "tcp_scalable", "exit": 1,
                                "stderr": "modprobe: FATAL: Module tcp_scalable not found in directory /lib/modules/6.18"}])
    assert "'scalable' not available" in msg and "this kernel has reno, bbr, cubic" in msg
    assert "tcp_available_congestion_control" in msg
    assert "modprobe tcp_scalable: exit 1 (modprobe: FATAL: Module tcp_scalable not found" in msg
    msg = ccf.kernel_cc_error(["htcp"], ["reno"], [{"module": "tcp_htcp", "exit": None,
                                                    "stderr": "No such file or directory: modprobe"}])
    assert "modprobe tcp_htcp did not run: No such file or directory" in msg


def test_spec_arg_makes_only_file_paths_absolute(tmp_path):
    assert ccf.usertcp_spec_arg("cubic", tmp_path) == "cubic"
    assert ccf.usertcp_spec_arg("mypkg.mycc:MyCC", tmp_path) == "mypkg.mycc:MyCC"
    assert ccf.usertcp_spec_arg("cc/x.py:X", tmp_path) == f"{tmp_path}/cc/x.py:X"
    assert ccf.usertcp_spec_arg("./x.py", tmp_path) == f"{tmp_path}/x.py"
    assert ccf.usertcp_spec_arg("/abs/x.py:X", tmp_path) == "/abs/x.py:X"


def test_rows_of_a_comparison_carry_no_target():
    fig = {**_fidelity_fig(1.6, 1.1), "targets": False}
    rows = {r.figure: r for r in ccf.fidelity_rows("scalable vs kernel reno, loss 0.5%", fig)}
    for figure in ("goodput usertcp/kernel", "p95 srtt usertcp/kernel"):
        assert rows[figure].ok is None and rows[figure].target == "(no target)"
    assert rows["goodput usertcp/kernel"].value == 1.6
    table = ccf.CcReport([ccf.Pair(EXAMPLE, "reno", (), "", "scalable")]).table()
    assert EXAMPLE in table.title and "kernel reno" in table.title


def test_fairness_cases_of_a_comparison():
    pair = ccf.Pair(EXAMPLE, "reno", ("ai_cnt=50",), "/abs/scalable.py:Scalable", "scalable")
    cases = {c: (flows, ref) for c, flows, ref in ccf.fairness_cases([pair], reference=True)}
    assert list(cases) == ["usertcp scalable (ai_cnt=50) × 2", "kernel reno × 2",
                           "usertcp scalable (ai_cnt=50) vs kernel reno"]
    assert all(ref for _, ref in cases.values())  # no Jain target for a pair outside the issue's
    mixed = cases["usertcp scalable (ai_cnt=50) vs kernel reno"][0]
    assert [(f.kind, f.algo, f.params) for f in mixed] == [
        ("usertcp", "/abs/scalable.py:Scalable", ("ai_cnt=50",)), ("kernel", "reno", ())]
    two = cases["usertcp scalable (ai_cnt=50) × 2"][0]
    assert [f.label for f in two] == ["usertcp scalable #1 (ai_cnt=50)", "usertcp scalable #2 (ai_cnt=50)"]


# ------------------------------------------------------------------------- the tool in a lab


@pytest.mark.root
def test_a_kernel_algorithm_the_kernel_lacks_stops_the_run_before_any_lab(tmp_path):
    have = ccf.kernel_available()
    missing = next(n for n in ("scalable", "htcp", "highspeed", "illinois", "westwood", "nosuchcc")
                   if n not in have)
    argv = [sys.executable, str(REPO / "bench" / "cc_fidelity.py"), "--cc", "examples/cc/scalable.py:Scalable",
            "--kernel-cc", missing, "--prefix", "ccfu", "--json", str(tmp_path / "x.json")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 2
    text = " ".join((done.stdout + done.stderr).split())
    assert f"kernel congestion control '{missing}' not available" in text
    assert f"this kernel has {', '.join(have)}" in text
    assert not (tmp_path / "x.json").exists()
    netns_dir = Path("/run/netns")
    assert not (netns_dir.is_dir() and [n for n in os.listdir(netns_dir) if n.startswith("ccfu")])


@pytest.mark.root
def test_smoke_run_measures_and_cleans_up(tmp_path):
    """A ~30 s run in one lab, 3 s flows, no loss: kernel CUBIC then usertcp CUBIC, then the
    README's example (examples/cc/scalable.py, by relative path, with a parameter) against
    kernel Reno. It must measure (exit 0, both ratios present, tcp_probe events seen, the
    example's own log) and leave nothing behind."""
    out = tmp_path / "ccf.json"
    argv = [sys.executable, str(REPO / "bench" / "cc_fidelity.py"), "--duration", "3", "--only", "fidelity",
            "--algos", "cubic", "--cc", "examples/cc/scalable.py:Scalable", "--cc-param", "ai_cnt=50",
            "--kernel-cc", "reno", "--losses", "0", "--prefix", "ccft", "--json", str(out),
            "--plots", str(tmp_path / "plots")]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == {} and not doc["interrupted"]
    rows = {r["figure"]: r for r in doc["rows"] if r["condition"] == "cubic, loss 0%"}
    assert rows["goodput usertcp/kernel"]["value"] is not None
    assert rows["p95 srtt usertcp/kernel"]["value"] is not None
    assert rows["goodput usertcp/kernel"]["target"] == "1 ± 5%"
    fig = doc["details"]["fidelity"]["cubic, loss 0%"]
    assert fig["kernel"]["cc"] == "cubic" and fig["kernel"]["probe_events"] > 0
    assert fig["kernel"]["sock_cookie"]  # its tcp_probe events are told apart by it
    assert fig["usertcp"]["cc_log_records"] > 0 and not fig["usertcp"]["incomplete"]
    assert any("usertcp send" in c["command"] for c in doc["commands"])
    # The example against kernel Reno: a comparison, named by both sides, without target.
    cond = "scalable (ai_cnt=50) vs kernel reno, loss 0%"
    rows = {r["figure"]: r for r in doc["rows"] if r["condition"] == cond}
    assert rows["goodput usertcp/kernel"]["value"] is not None and rows["goodput usertcp/kernel"]["ok"] is None
    fig = doc["details"]["fidelity"][cond]
    assert fig["kernel"]["cc"] == "reno" and fig["kernel"]["probe_events"] > 0
    assert (fig["usertcp_cc"], fig["kernel_cc"], fig["cc_params"]) == (
        "examples/cc/scalable.py:Scalable", "reno", ["ai_cnt=50"])
    assert not fig["usertcp"]["incomplete"] and fig["usertcp"]["exit"] == 0
    assert Path(fig["plot"]).name == "fidelity-scalable-aicnt50-vs-reno-loss0.png"
    ccs = {json.loads(line).get("cc") for line in Path(fig["usertcp"]["cc_log"]).read_text().splitlines()[1:]}
    assert ccs == {"scalable"}  # the example ran throughout: the guard never replaced it
    # Nothing left: namespaces, tracefs instance, helper processes.
    netns_dir = Path("/run/netns")
    assert not (netns_dir.is_dir() and [n for n in os.listdir(netns_dir) if n.startswith("ccft")])
    assert not any(Path(root, "instances", "usertcp_ccft").exists()
                   for root in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"))
    ccf.set_prefix("ccft")
    try:
        assert ccf.stray_processes() == []
    finally:
        ccf.set_prefix("ccf")
