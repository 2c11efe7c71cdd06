"""The plugin API's engine side (issue 5): parameters, cong_control, idle restart, the guard
against misbehaving plugins, the per-ACK log, and the `usertcp cc` commands."""

from __future__ import annotations

import json
import logging
import math
import re
import time

import pytest

from usertcp import cli
from usertcp.cc import guard, load
from usertcp.cc.api import CongestionControl, param
from usertcp.cc.log import CcLogWriter, read_cc_log
from usertcp.cc.newreno import NewReno
from usertcp.cc.registry import CCLoadError
from usertcp.engine.connection import Connection
from usertcp.sim.link import Link
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource
from usertcp.stream import SendStream

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
MSS = 1448


def run(conn, *, loss=0.0, seed=1, until=120.0, rate=50e6, delay=0.010, **kw):
    fwd = Link(delay=delay, rate=rate, queue_bytes=200 * 1514, loss=loss, seed=seed, name="fwd")
    rev = Link(delay=delay, name="rev")
    return simulate(conn, Receiver(port=REMOTE[1], iss=777), fwd, rev, until=until, **kw)


def delivered_exactly(res, conn, src) -> bool:
    return (res.completed and conn.error is None and res.receiver.bytes_received == src.size
            and res.receiver.sha256() == src.sha256())


# ------------------------------------------------------------------ parameters


class Tunable(NewReno):
    name = "tunable"
    gain = param(1.5, "a float", min=0.0, max=10.0)
    rounds = param(3, "an int", min=1)
    verbose = param(False, "a bool")
    mode = param("a", "a choice", choices=("a", "b"))

    def __init__(self, mss, now=0.0):
        super().__init__(mss, now)
        self.seen_in_init = (self.gain, self.rounds, self.verbose, self.mode)


def test_params_are_plain_class_defaults_and_listed():
    assert Tunable.gain == 1.5 and Tunable.rounds == 3
    assert list(Tunable.params) == ["gain", "rounds", "verbose", "mode"]
    assert Tunable.params["gain"].type is float


def test_params_set_per_connection_before_init_from_strings_or_values():
    cc = Tunable.create(MSS, 0.0, {"gain": "2.5", "rounds": "0x10", "verbose": "yes", "mode": "b"})
    assert cc.seen_in_init == (2.5, 16, True, "b")
    other = Tunable.create(MSS, 0.0, {"gain": 3})  # an int for a float parameter is fine
    assert other.gain == 3.0 and Tunable.gain == 1.5  # the class default is untouched


@pytest.mark.parametrize("params, words", [
    ({"gain": "11"}, "above the maximum"),
    ({"gain": "-1"}, "below the minimum"),
    ({"gain": "nan"}, "not finite"),
    ({"gain": "fast"}, "not a valid float"),
    ({"rounds": "1.5"}, "not a valid int"),
    ({"verbose": "maybe"}, "not a valid bool"),
    ({"mode": "c"}, "not one of a, b"),
    ({"gian": "1"}, "has no parameter 'gian' (did you mean gain?) (it has: gain, mode, rounds, verbose)"),
])
def test_bad_params_say_what_is_wrong(params, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Tunable.create(MSS, 0.0, params)


def test_load_passes_params_and_wraps_errors():
    with pytest.raises(CCLoadError, match="newreno.*has no parameter 'x'"):
        load("newreno", MSS, 0.0, {"x": "1"})
    assert load(Tunable, MSS, 0.0, {"rounds": "7"}).rounds == 7


def test_a_default_outside_its_own_bounds_is_refused_at_class_definition():
    with pytest.raises(ValueError, match="above the maximum"):
        class Bad(NewReno):  # noqa: F841
            x = param(5, "x", max=4)


# ------------------------------------------------------------------ cong_control


class Owner(NewReno):
    """Holds a fixed window of 30 segments and records every ACK it is shown."""

    name = "owner"

    def __init__(self, mss, now=0.0):
        super().__init__(mss, now)
        self.cwnd = 30 * mss
        self.samples = []

    def cong_control(self, ack):
        self.samples.append(ack)

    def on_congestion_event(self, ev):
        pass  # the window stays at 30 segments whatever happens

    def on_recovery_exit(self, now, bytes_in_flight):
        pass

    def on_rto(self, now, bytes_in_flight):
        pass


def test_cong_control_sees_every_ack_with_news_and_its_window_rules_in_recovery():
    src = PatternSource(3_000_000, seed=3)
    cc = Owner(MSS)
    conn = Connection(LOCAL, REMOTE, cc, src, iss=5, time_wait=0.5)
    windows_in_recovery = []
    orig = conn.receive

    def receive(seg, now):
        orig(seg, now)
        if conn.recovering:
            windows_in_recovery.append(conn.cwnd)

    conn.receive = receive
    res = run(conn, loss=0.02, seed=4)
    assert delivered_exactly(res, conn, src)
    assert conn.fast_retransmits > 0 and windows_in_recovery
    assert set(windows_in_recovery) == {30 * MSS}  # not PRR's window: the controller's
    rec = [s for s in cc.samples if s.in_recovery]
    assert rec, "cong_control saw no ACK during recovery"
    assert any(s.lost_bytes > 0 for s in cc.samples)
    assert any(s.sacked_bytes > 0 and s.acked_bytes == 0 for s in cc.samples)  # SACK-only ACKs too
    assert all(s.rate is not None for s in cc.samples)
    totals = [s.delivered_total for s in cc.samples]
    assert totals == sorted(totals) and totals[-1] >= src.size
    assert conn.cc is cc  # on_ack was never needed, nothing fell back


def test_on_ack_controllers_see_no_ack_in_recovery():
    seen = []

    class Spy(NewReno):
        def on_ack(self, ack):
            seen.append(ack.in_recovery)
            super().on_ack(ack)

    src = PatternSource(1_000_000, seed=2)
    conn = Connection(LOCAL, REMOTE, Spy(MSS), src, iss=5, time_wait=0.5)
    res = run(conn, loss=0.02, seed=4)
    assert delivered_exactly(res, conn, src) and conn.fast_retransmits > 0
    assert seen and not any(seen)


def test_send_quantum_caps_the_burst():
    class Quantum(NewReno):
        def __init__(self, mss, now=0.0):
            super().__init__(mss, now)
            self.send_quantum = 2 * mss + 100  # rounded down to whole segments

    src = PatternSource(400_000)
    conn = Connection(LOCAL, REMOTE, Quantum(MSS), src, iss=5, time_wait=0.5)
    res = run(conn, trace=False)
    assert delivered_exactly(res, conn, src)
    conn2 = Connection(LOCAL, REMOTE, NewReno(MSS), PatternSource(400_000), iss=5, time_wait=0.5)
    sizes = []
    orig = conn2.transmit
    conn2.transmit = lambda now: [sizes.append(tx.length) or tx for tx in orig(now)]
    run(conn2, trace=False)
    assert max(sizes) > 2 * MSS  # without a quantum the engine does send bigger bursts
    sizes.clear()
    conn3 = Connection(LOCAL, REMOTE, Quantum(MSS), PatternSource(400_000), iss=5, time_wait=0.5)
    orig3 = conn3.transmit
    conn3.transmit = lambda now: [sizes.append(tx.length) or tx for tx in orig3(now)]
    run(conn3, trace=False)
    assert max(sizes) == 2 * MSS


# ------------------------------------------------------------------ idle restart


def test_default_idle_restart_halves_per_rto_down_to_the_restart_window():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 100 * MSS, 60 * MSS
    cc.on_idle_restart(10.0, idle=3.5, rto=1.0)  # Linux: three halvings for 3.5 RTOs
    assert cc.cwnd == 100 * MSS // 8
    assert cc.ssthresh == 75 * MSS  # max(ssthresh, 3/4 cwnd before)
    cc.on_idle_restart(20.0, idle=30.0, rto=1.0)
    assert cc.cwnd == 10 * MSS  # not below min(IW, cwnd)
    small = NewReno(MSS)
    small.cwnd = 4 * MSS
    small.on_idle_restart(0.0, idle=10.0, rto=1.0)
    assert small.cwnd == 4 * MSS  # a window below IW is kept


def test_engine_reports_idle_once_per_pause_and_not_before_the_first_data():
    calls = []

    class Spy(NewReno):
        def on_idle_restart(self, now, idle, rto):
            before = self.cwnd
            super().on_idle_restart(now, idle, rto)
            calls.append((now, idle, rto, before, self.cwnd))

    stream = SendStream()
    first = PatternSource(300_000, seed=1).read(0, 300_000)
    stream.append_bytes(bytes(first))
    conn = Connection(LOCAL, REMOTE, Spy(MSS), stream, iss=9, time_wait=0.5, close_at_end=False)
    rcv = Receiver(port=REMOTE[1], iss=777, keep=True)
    fwd, rev = Link(delay=0.01, rate=50e6, name="fwd"), Link(delay=0.01, name="rev")
    res = simulate(conn, rcv, fwd, rev, until=30.0)
    assert res.reason == "stall" and conn.delivered == 300_000  # all sent, waiting for more
    assert calls == []
    cwnd_before = conn.cc.cwnd
    stream.append_bytes(b"x" * 100_000)
    stream.finish()
    res = simulate(conn, rcv, fwd, rev, until=60.0, connect=False, start=res.end + 5.0)
    assert res.completed and bytes(rcv.data) == bytes(first) + b"x" * 100_000
    assert len(calls) == 1
    now, idle, rto, before, after = calls[0]
    assert idle >= 5.0 and 0 < rto < 1.0  # measured from the last data sent
    assert before == cwnd_before > 10 * MSS
    assert after == 10 * MSS  # many RTOs idle: back to the restart window


# ------------------------------------------------------------------ the guard


class Faulty(NewReno):
    """Misbehaves in `hook` from the third call on, in the way `how` says."""

    name = "faulty"
    how = "raise"
    hook = "on_ack"

    def __init__(self, mss, now=0.0):
        super().__init__(mss, now)
        self.calls = 0

    def _fault(self):
        self.calls += 1
        if self.calls < 3:
            return
        how = self.how
        if how == "raise":
            raise RuntimeError("boom")
        if how in ("nan", "inf", "negative", "zero", "string"):
            self.cwnd = {"nan": math.nan, "inf": math.inf, "negative": -5, "zero": 0, "string": "x"}[how]
        elif how == "rate-nan":
            self.pacing_rate = math.nan
        elif how == "rate-zero":
            self.pacing_rate = 0.0
        elif how == "quantum":
            self.send_quantum = -1
        elif how == "slow":
            time.sleep(0.3)
        elif how == "spin":
            while True:
                pass
        elif how == "swallow":
            try:
                while True:
                    pass
            except Exception:  # the guard's interruption must get through this
                pass

    def on_ack(self, ack):
        super().on_ack(ack)
        if self.hook == "on_ack":
            self._fault()

    def on_congestion_event(self, ev):
        super().on_congestion_event(ev)
        if self.hook == "on_congestion_event":
            self.calls = max(self.calls, 2)
            self._fault()


@pytest.mark.parametrize("how", ["raise", "nan", "inf", "negative", "zero", "string", "rate-nan",
                                 "rate-zero", "quantum", "slow", "spin", "swallow"])
def test_a_misbehaving_plugin_costs_no_data_and_falls_back_to_newreno(how):
    cls = type(f"Faulty_{how}", (Faulty,), {"how": how, "name": f"faulty-{how}"})
    src = PatternSource(500_000, seed=7)
    conn = Connection(LOCAL, REMOTE, cls(MSS), src, iss=3, time_wait=0.5, cc_time_limit=0.2)
    t0 = time.monotonic()
    res = run(conn, trace=False)
    assert delivered_exactly(res, conn, src)
    errs = [e for e in res.events if e.kind == "cc_error"]
    assert len(errs) == 1 and errs[0].value.startswith(f"faulty-{how}.on_ack")
    assert type(conn.cc) is NewReno and conn.cc_faults == 1
    assert 1 <= conn.cc.cwnd < guard.WINDOW_LIMIT
    if how in ("spin", "swallow"):
        assert guard.WATCHDOG.running
        assert time.monotonic() - t0 < 5.0  # interrupted after ~0.2 s, not hung


def test_a_fault_in_a_congestion_event_hook_is_contained_too():
    cls = type("FaultyEvent", (Faulty,), {"hook": "on_congestion_event", "name": "faulty-event"})
    src = PatternSource(1_000_000, seed=7)
    conn = Connection(LOCAL, REMOTE, cls(MSS), src, iss=3, time_wait=0.5)
    res = run(conn, loss=0.02, seed=5, trace=False)
    assert delivered_exactly(res, conn, src)
    assert [e.value.split(":")[0] for e in res.events if e.kind == "cc_error"] == ["faulty-event.on_congestion_event"]


def test_fallback_keeps_a_sane_window_and_clamps_a_mad_one():
    good = NewReno(MSS)
    good.cwnd, good.ssthresh = 80 * MSS, 40 * MSS
    nr = guard.fallback(good, MSS, 1.0)
    assert (nr.cwnd, nr.ssthresh) == (80 * MSS, 40 * MSS)
    mad = NewReno(MSS)
    mad.cwnd, mad.ssthresh = math.nan, -3
    nr = guard.fallback(mad, MSS, 1.0)
    assert nr.cwnd == 10 * MSS and nr.ssthresh == NewReno(MSS).ssthresh


def test_faults_are_logged_once_per_plugin_hook_and_kind(caplog):
    cls = type("FaultyLog", (Faulty,), {"name": "faulty-log-once"})
    caplog.set_level(logging.WARNING, logger="usertcp.cc")
    for seed in (1, 2, 3):
        src = PatternSource(100_000, seed=seed)
        conn = Connection(LOCAL, REMOTE, cls(MSS), src, iss=seed, time_wait=0.5)
        res = run(conn, trace=False)
        assert delivered_exactly(res, conn, src)
        assert any(e.kind == "cc_error" for e in res.events)  # every connection records its event
    lines = [r.getMessage() for r in caplog.records if "faulty-log-once" in r.getMessage()]
    assert len(lines) == 1 and "on_ack" in lines[0] and "RuntimeError" in lines[0]


# ------------------------------------------------------------------ the per-ACK log


def test_cc_log_has_a_record_per_ack_with_news_and_per_episode(tmp_path):
    path = tmp_path / "cc.jsonl"
    src = PatternSource(1_000_000, seed=2)
    with CcLogWriter(path, meta={"cc": "cubic"}) as log:
        conn = Connection(LOCAL, REMOTE, load("cubic", MSS), src, iss=5, time_wait=0.5, cc_log=log)
        res = run(conn, loss=0.01, seed=3, trace=False)
    assert delivered_exactly(res, conn, src)
    meta, records = read_cc_log(path)
    assert meta == {"cc": "cubic"}
    acks = [r for r in records if r["event"] == "ack"]
    assert len(acks) == log.records - (len(records) - len(acks))
    assert len(acks) > 100
    times = [r["t"] for r in records]
    assert times == sorted(times)
    assert {"cwnd", "ssthresh", "pacing_rate", "srtt", "min_rtt", "in_flight", "delivery_rate",
            "recovery", "W_max", "region"} <= set(acks[-1])
    assert {"open", "recovery"} <= {r["recovery"] for r in acks}
    assert any(r["event"] == "on_congestion_event" for r in records)
    assert any(r["event"] == "on_recovery_exit" for r in records)


def test_without_a_log_the_engine_builds_no_records(monkeypatch):
    called = []
    monkeypatch.setattr(Connection, "_log_cc", lambda self, *a: called.append(a))
    conn = Connection(LOCAL, REMOTE, load("cubic", MSS), PatternSource(50_000), iss=5, time_wait=0.5)
    run(conn, trace=False)
    assert called == []


# ------------------------------------------------------------------ usertcp cc


def test_cc_list_names_each_with_its_summary(capsys):
    assert cli.main(["cc", "list"]) == 0
    out = capsys.readouterr().out
    assert "cubic" in out and "RFC 9438" in out and "newreno" in out


def test_cc_show_lists_parameters_and_json(tmp_path, capsys):
    plugin = tmp_path / "mine.py"
    plugin.write_text(
        "from usertcp.cc.newreno import NewReno\n"
        "from usertcp.cc.api import param\n"
        "class Mine(NewReno):\n"
        "    '''My experiment.'''\n"
        "    gain = param(2.0, 'how hard to push', min=1.0)\n"
    )
    assert cli.main(["cc", "show", f"{plugin}:Mine"]) == 0
    out = capsys.readouterr().out
    assert "My experiment." in out and "gain = 2.0  [float] (>= 1.0)" in out and "how hard to push" in out
    assert cli.main(["cc", "show", str(plugin), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["name"] == "mine" and info["params"][0]["name"] == "gain" and info["params"][0]["default"] == 2.0


def test_cc_show_unknown_and_missing_name_fail_clearly(capsys):
    assert cli.main(["cc", "show", "nope"]) == 2
    assert "unknown congestion control 'nope'" in capsys.readouterr().err
    assert cli.main(["cc", "show"]) == 2
    assert "which controller" in capsys.readouterr().err


def test_cc_param_is_checked_before_anything_runs():
    args = cli.build_parser().parse_args(["send", "198.19.0.1:5001", "--bytes", "1k", "--cc", "newreno",
                                          "--cc-param", "nope=1"])
    with pytest.raises(cli.UserError, match="no parameter 'nope'.*usertcp cc show newreno"):
        cli.cc_params(args)
    args.cc_param = ["novalue"]
    with pytest.raises(cli.UserError, match="expected NAME=VALUE"):
        cli.cc_params(args)


class _Abstract(CongestionControl):
    pass
