"""Vegas, DCTCP and the two fixed controllers: hand-worked hook examples, then simulator runs.

The unit tests drive the hooks with synthetic ACKs (`Flow`): every ACK cumulatively acknowledges
whole segments, ``delivered_total`` counts them, and the sender is taken to keep its whole window
in flight. With MSS = 1000 bytes the arithmetic can be followed by hand, and each expected value
is written out from the algorithm's formula, not computed by the code under test.

The simulator tests run the real engine over `usertcp.sim` links in virtual time and check what
each algorithm is for: Vegas keeps the bottleneck queue short where NewReno fills it; DCTCP holds
the queue at the marking threshold with the link full; FixedRate sends at its rate; FixedWindow
keeps its window through losses. Every run must also deliver exactly the source's bytes. Nothing
here depends on wall-clock time.
"""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from usertcp.cc import AckSample, CongestionEvent, UndoEvent, load
from usertcp.cc.dctcp import Dctcp
from usertcp.cc.fixed import FixedRate, FixedWindow
from usertcp.cc.newreno import NewReno
from usertcp.cc.vegas import Vegas
from usertcp.engine.connection import Connection
from usertcp.sim.link import Link
from usertcp.sim.peer import AcceptingPeer
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource
from usertcp.stream import SendStream

MSS = 1000


# ---------------------------------------------------------------------- synthetic ACKs


class Flow:
    """A window-limited flow seen from the controller: ACKs of whole segments, with
    ``delivered_total`` counting every byte delivered so far."""

    def __init__(self, cc):
        self.cc = cc
        self.delivered = 0
        self.now = 0.0

    def ack(self, rtt: float | None, segs: int = 1, *, ece: bool = False, sacked: int = 0,
            in_flight: int | None = None, app_limited: bool = False) -> None:
        cc = self.cc
        acked = segs * cc.mss
        self.delivered += acked + sacked
        self.now += 0.001
        cc.on_ack(AckSample(
            now=self.now, acked_bytes=acked, rtt=rtt, srtt=rtt, min_rtt=rtt,
            bytes_in_flight=cc.cwnd if in_flight is None else in_flight,
            mss=cc.mss, app_limited=app_limited, ece=ece, sacked_bytes=sacked,
            delivered_total=self.delivered,
        ))


def event(cc, cause: str, flight: int) -> None:
    """A congestion event as the engine delivers it, with the recovery's end right after
    (for "ecn" and "tlp" the engine does exactly this; for "dupack" it stands for the recovery)."""
    cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=flight, mss=cc.mss, cause=cause))
    cc.on_recovery_exit(0.0, flight)


# ---------------------------------------------------------------------- Vegas


def vegas_round(flow: Flow, rtt: float) -> int:
    """ACKs with RTT sample `rtt`, one segment each, until Vegas makes its once-per-RTT decision
    (the first ACK after a (re)start opens a round instead). Returns the ACKs of the round."""
    cc = flow.cc
    if cc.round_end is None:
        flow.ack(rtt)
    end, n = cc.round_end, 0
    while cc.round_end == end:
        flow.ack(rtt)
        n += 1
    return n


def vegas_in_ca(**params) -> tuple[Vegas, Flow]:
    """Vegas in congestion avoidance with cwnd = 20 segments, after one round at RTT = 100 ms
    (so baseRTT = 100 ms), in which diff = 0 < alpha grew cwnd to 21 segments; then cwnd is put
    back to 20 for the examples."""
    cc = Vegas.create(MSS, 0.0, params)
    cc.cwnd = cc.ssthresh = 20 * MSS
    flow = Flow(cc)
    vegas_round(flow, 0.100)
    assert cc.baseRTT == 0.100 and cc.region == "increase" and cc.cwnd == 21 * MSS
    cc.cwnd = 20 * MSS
    return cc, flow


def test_vegas_grows_holds_and_shrinks_by_one_segment_per_round():
    cc, flow = vegas_in_ca()
    # RTT at baseRTT: nothing queued, diff = 0 < alpha = 2: one segment more.
    vegas_round(flow, 0.100)
    assert cc.diff == 0.0 and cc.region == "increase" and cc.cwnd == 21 * MSS
    # RTT 125 ms: diff = 21 * (125 - 100) / 125 = 4.2 > beta = 4: one segment less.
    vegas_round(flow, 0.125)
    assert cc.diff == pytest.approx(4.2) and cc.region == "decrease" and cc.cwnd == 20 * MSS
    assert cc.ssthresh == 20 * MSS  # min(ssthresh, cwnd): congestion avoidance goes on
    # RTT 115 ms: diff = 20 * 15 / 115 = 2.61, between alpha and beta: hold.
    vegas_round(flow, 0.115)
    assert cc.diff == pytest.approx(20 * 15 / 115) and cc.region == "hold" and cc.cwnd == 20 * MSS
    vegas_round(flow, 0.115)
    assert cc.cwnd == 20 * MSS
    assert not cc.in_slow_start()


def test_vegas_diff_uses_the_rounds_minimum_rtt():
    """Delayed ACKs make some samples 40 ms late; the round's minimum ignores them."""
    cc, flow = vegas_in_ca()
    end, late = cc.round_end, True
    while cc.round_end == end:  # one round, every other sample 40 ms late
        flow.ack(0.140 if late else 0.100)
        late = not late
    assert cc.minRTT is math.inf  # (the next round has begun)
    assert cc.region == "increase" and cc.diff == 0.0 and cc.cwnd == 21 * MSS


def test_vegas_diff_denominator_rtt_or_base_rtt():
    """RTT 122 ms, cwnd 20: the paper's diff = 20 * 22 / 122 = 3.6 (hold); the 2008-2025 Linux
    formula, 20 * 22 / 100 = 4.4 (decrease)."""
    paper, paper_flow = vegas_in_ca()
    linux, linux_flow = vegas_in_ca(diff_rtt="base_rtt")
    vegas_round(paper_flow, 0.122)
    vegas_round(linux_flow, 0.122)
    assert paper.diff == pytest.approx(20 * 22 / 122) and paper.region == "hold" and paper.cwnd == 20 * MSS
    assert linux.diff == pytest.approx(4.4) and linux.region == "decrease" and linux.cwnd == 19 * MSS


def test_vegas_behaves_like_reno_on_a_round_with_too_few_samples():
    """Two RTT samples in a round (one stretch ACK for the window): no Vegas decision, Reno's
    congestion avoidance instead -- a window of bytes acknowledged adds one segment, however
    long the RTT."""
    cc = Vegas(MSS)
    cc.cwnd = cc.ssthresh = 20 * MSS
    flow = Flow(cc)
    flow.ack(0.100)  # opens the round: it ends when delivered passes 1000 + 20000
    flow.ack(0.200, segs=21)
    assert cc.cntRTT == 0 and cc.region == "reno" and cc.diff is None
    assert cc.cwnd == 21 * MSS


def test_vegas_slow_start_grows_every_other_round_then_exits_at_the_measured_rate():
    cc = Vegas(MSS)  # cwnd 10 segments, slow start
    flow = Flow(cc)
    # Round 1: the first ACK opens it (in flight 10 segments: it ends past delivered = 11000);
    # 12 ACKed segments grow cwnd by 12.
    vegas_round(flow, 0.100)
    assert cc.cwnd == 22 * MSS and cc.region == "slow-start"
    # Round 2: cwnd holds, so that the round is measured with a steady window.
    vegas_round(flow, 0.100)
    assert cc.cwnd == 22 * MSS and cc.in_slow_start()
    # Round 3 grows again (22 ACKs: 22 -> 44), and its RTT is twice baseRTT: diff = 44 * 100 /
    # 200 = 22 > gamma. Slow start ends with cwnd = floor(44 * 100/200) + 1 = 23 segments.
    vegas_round(flow, 0.200)
    assert cc.diff == pytest.approx(22.0) and cc.region == "slow-start-exit"
    assert cc.cwnd == 23 * MSS and cc.ssthresh == 23 * MSS and not cc.in_slow_start()


def test_vegas_linux_slow_start_grows_every_round():
    cc = Vegas.create(MSS, 0.0, {"ss_every_other_rtt": "false"})
    flow = Flow(cc)
    vegas_round(flow, 0.100)
    assert cc.cwnd == 22 * MSS
    vegas_round(flow, 0.100)  # 22 ACKs: 22 more segments
    assert cc.cwnd == 44 * MSS


def test_vegas_loss_is_reno_and_restarts_the_round():
    cc, flow = vegas_in_ca()
    event(cc, "dupack", flight=20 * MSS)
    assert cc.ssthresh == 10 * MSS and cc.cwnd == 10 * MSS  # RFC 5681 eq. 4, as NewReno
    assert cc.region == "recovery" and cc.round_end is None
    flow.ack(0.100)  # the first ACK back in the open state opens a fresh round
    assert cc.round_end == flow.delivered + cc.cwnd and cc.cntRTT == 1
    cc.on_rto(1.0, 10 * MSS)
    assert cc.cwnd == MSS and cc.round_end is None
    assert cc.baseRTT == 0.100  # the propagation delay is kept over the connection


def test_vegas_params_and_state():
    params = {"alpha": "1", "beta": "3", "gamma": "0.5", "diff_rtt": "base_rtt"}
    cc = load("usertcp.cc.vegas:Vegas", mss=MSS, params=params)
    assert (cc.alpha, cc.beta, cc.gamma, cc.diff_rtt) == (1.0, 3.0, 0.5, "base_rtt")
    assert cc.ss_every_other_rtt is True  # the default: the paper's slow start
    assert cc.name == "vegas"
    with pytest.raises(ValueError):
        Vegas.create(MSS, 0.0, {"alpha": "5", "beta": "4"})
    with pytest.raises(ValueError):
        Vegas.create(MSS, 0.0, {"diff_rtt": "srtt"})
    state = cc.state()
    assert set(state) == {"baseRTT", "minRTT", "cntRTT", "diff", "region"}
    json.dumps(state)  # traces write it as JSON: no inf


# ---------------------------------------------------------------------- DCTCP


def test_dctcp_alpha_moves_by_g_times_the_marked_fraction_per_window():
    cc = Dctcp(MSS)
    assert cc.alpha == 1.0 and cc.g == 1 / 16
    flow = Flow(cc)
    # The first ACK opens the window: delivered 1000 + 9000 in flight -> it ends at 10000.
    flow.ack(0.01, in_flight=9000)
    assert cc.window_end == 10_000
    for i in range(2, 10):
        flow.ack(0.01, ece=i > 5, in_flight=9000)
    assert cc.alpha == 1.0 and (cc.acked_bytes_ecn, cc.acked_bytes_total) == (4000, 9000)
    flow.ack(0.01, ece=True, in_flight=9000)  # delivered 10000: the window ends
    # Half of 10000 bytes marked: alpha = (1 - g) * 1 + g * 0.5 = 1 - g/2.
    assert cc.alpha == 1 - (1 / 16) / 2 == 0.96875
    assert (cc.acked_bytes_ecn, cc.acked_bytes_total, cc.window_end) == (0, 0, 19_000)
    # A window without marks: alpha decays by (1 - g).
    for _ in range(9):
        flow.ack(0.01, in_flight=9000)
    assert cc.alpha == 0.96875 * 15 / 16


def test_dctcp_ecn_reduction_is_proportional_to_alpha():
    for alpha, ssthresh in ((1.0, 50_000), (0.5, 75_000), (0.25, 87_500), (0.0, 100_000)):
        cc = Dctcp.create(MSS, 0.0, {"alpha_on_init": alpha})
        cc.cwnd = 100 * MSS
        event(cc, "ecn", flight=90 * MSS)  # cwnd, not FlightSize (RFC 8257 §3.3, Linux)
        assert cc.ssthresh == ssthresh and cc.cwnd == ssthresh
    cc = Dctcp(MSS)
    cc.cwnd = 3 * MSS
    event(cc, "ecn", flight=3 * MSS)
    assert cc.cwnd == 2 * MSS  # never below two segments


@pytest.mark.parametrize("cause", ["dupack", "tlp"])
def test_dctcp_answers_losses_like_reno_whatever_alpha(cause):
    cc = Dctcp.create(MSS, 0.0, {"alpha_on_init": 0.1})
    cc.cwnd = 100 * MSS
    event(cc, cause, flight=80 * MSS)
    assert cc.ssthresh == 40 * MSS and cc.cwnd == 40 * MSS
    cc.on_rto(1.0, 40 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 20 * MSS


def test_dctcp_counts_sacked_bytes_and_the_reducing_ack():
    """SACKed bytes count as delivered (Linux's tp->delivered), marked with their ACK's ECE. The
    ACK whose ECE starts a reduction never reaches on_ack; its bytes arrive in delivered_total
    with the next ACK, and are counted as marked."""
    cc = Dctcp(MSS)
    flow = Flow(cc)
    flow.ack(0.01, in_flight=50_000)  # opens the window: 1000 bytes, unmarked
    flow.ack(0.01, ece=True, sacked=2000, in_flight=50_000)
    assert (cc.acked_bytes_ecn, cc.acked_bytes_total) == (3000, 4000)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=40 * MSS, mss=MSS, cause="ecn"))
    cc.on_recovery_exit(0.0, 40 * MSS)
    flow.delivered += 3000  # the reducing ACK: 3000 bytes the controller did not see
    flow.ack(0.01, in_flight=50_000)  # and the next one, unmarked
    assert (cc.acked_bytes_ecn, cc.acked_bytes_total) == (6000, 8000)


def test_dctcp_grows_like_reno():
    dctcp, reno = Dctcp(MSS), NewReno(MSS)
    for cc in (dctcp, reno):
        flow = Flow(cc)
        for _ in range(30):
            flow.ack(0.01, segs=2)
        cc.ssthresh = cc.cwnd
        for _ in range(100):
            flow.ack(0.01, segs=2)
    # Slow start: 10 + 60 acknowledged segments = 70. Then 200 segments in congestion
    # avoidance: 70 of them add one segment, the next 71 another, 59 are left over.
    assert dctcp.cwnd == reno.cwnd == 72 * MSS


def test_dctcp_params_and_state():
    cc = load("usertcp.cc.dctcp:Dctcp", mss=MSS, params={"g": "0.25", "alpha_on_init": "0"})
    assert cc.name == "dctcp" and cc.g == 0.25 and cc.alpha == 0.0
    for bad in ({"g": "1.5"}, {"alpha_on_init": "-0.1"}, {"shift_g": "4"}):
        with pytest.raises(ValueError):
            Dctcp.create(MSS, 0.0, bad)
    assert {"alpha", "acked_bytes_ecn", "acked_bytes_total", "window_end"} <= set(cc.state())


# ---------------------------------------------------------------------- the fixed controllers


def _every_hook(cc, check) -> None:
    """A loss, a tail-loss repair, a CE mark, timeouts, an undo, an idle restart, ACKs, with
    `check()` after each."""
    flow = Flow(cc)
    for _ in range(20):
        flow.ack(0.05)
        check()
    for cause in ("dupack", "tlp", "ecn"):
        cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=cc.cwnd, mss=cc.mss, cause=cause))
        check()
        cc.on_recovery_exit(0.0, cc.cwnd)
        check()
    cc.on_rto(1.0, cc.cwnd)
    check()
    cc.on_rto(2.0, cc.cwnd)
    check()
    cc.on_undo(UndoEvent(now=3.0, prior_cwnd=1, prior_ssthresh=2, cause="dsack"))
    check()
    cc.on_idle_restart(4.0, idle=10.0, rto=0.2)
    check()
    flow.ack(0.05)
    check()


def _stays(cc, **expected):
    """A check that the controller's attributes still have the expected values."""
    def check():
        assert {name: getattr(cc, name) for name in expected} == expected
    return check


def test_fixed_window_never_changes():
    cc = FixedWindow(MSS)
    assert cc.name == "fixed-window" and cc.cwnd == cc.ssthresh == 65536 and cc.pacing_rate is None
    cc = FixedWindow.create(MSS, 0.0, {"window": "100000"})
    _every_hook(cc, _stays(cc, cwnd=100_000, ssthresh=100_000, pacing_rate=None))
    cc.on_mss_change(1448)  # the window was given in bytes: it stays in bytes
    assert cc.cwnd == 100_000 and cc.mss == 1448
    tiny = FixedWindow.create(MSS, 0.0, {"window": 10})
    assert tiny.cwnd == MSS  # at least one segment
    with pytest.raises(ValueError):
        FixedWindow.create(MSS, 0.0, {"window": "0"})


def test_fixed_rate_paces_at_the_rate_and_never_changes():
    cc = load("usertcp.cc.fixed:FixedRate", mss=MSS, params={"rate": "10e6"})
    assert cc.name == "fixed-rate" and cc.pacing_rate == 1_250_000.0  # bits/s -> bytes/s
    assert cc.cwnd == 10 * MSS  # the initial window until an RTT is known
    Flow(cc).ack(0.040)
    assert cc.cwnd == cc.ssthresh == 2 * 1_250_000 * 0.040 == 100_000  # 2 * rate * min_rtt
    _every_hook(cc, _stays(cc, cwnd=100_000, ssthresh=100_000, pacing_rate=1_250_000.0))
    fixed = FixedRate.create(MSS, 0.0, {"rate": 50e6, "window": 300_000})
    _every_hook(fixed, _stays(fixed, cwnd=300_000, ssthresh=300_000, pacing_rate=50e6 / 8))
    for bad in ({"rate": "0"}, {"rate": "fast"}, {"window": "-1"}):
        with pytest.raises(ValueError):
            FixedRate.create(MSS, 0.0, bad)
    json.dumps(cc.state())


# ---------------------------------------------------------------------- simulator runs

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
WIRE = 1514  # a full segment on the wire (1448 payload + 52 TCP/IP with timestamps + 14)


class QueueWatch(Link):
    """A link that records (time, bytes queued at the bottleneck) after every packet offered."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.samples: list[tuple[float, int]] = []

    def send(self, seg, now, size=None):
        ok = super().send(seg, now, size)
        self.samples.append((now, self._backlog_bytes))
        return ok

    def backlog_during(self, start: float, end: float) -> list[int]:
        return [b for t, b in self.samples if start <= t <= end]


def delivered_rate(res, start: float, end: float) -> float:
    """Bytes per second the sender saw cumulatively acknowledged between `start` and `end`."""
    marks = [(t, ev.value) for t, ev in res.timed_events if ev.kind == "delivered"]

    def at(when: float) -> int:
        return max((v for t, v in marks if t <= when), default=0)

    return (at(end) - at(start)) / (end - start)


def last_delivery(res) -> float:
    return max(t for t, ev in res.timed_events if ev.kind == "delivered")


def run_to_receiver(cc, size: int, fwd: Link, *, delay: float, seed: int = 1, **conn_kw):
    """`cc` sends `size` bytes over `fwd` to the Linux-like simulated receiver; the ACKs return
    over an uncongested link. The receiver must end up with exactly the source's bytes."""
    src = PatternSource(size, seed=seed)
    conn = Connection(LOCAL, REMOTE, cc, src, iss=seed, time_wait=0.5, **conn_kw)
    rcv = Receiver(port=REMOTE[1], iss=777)
    res = simulate(conn, rcv, fwd, Link(delay=delay, name="rev"), until=120.0)
    assert res.completed, (res.reason, conn.stats())
    assert conn.error is None and conn.cc_faults == 0
    assert rcv.bytes_received == size and rcv.sha256() == src.sha256()
    return conn, res


def test_vegas_keeps_the_queue_short_where_newreno_fills_it():
    """50 Mbit/s, 40 ms RTT (a BDP of 250 kB), a 2 MB drop-tail queue. NewReno's slow start
    overshoots into the queue until it holds megabytes; Vegas leaves slow start near the BDP and
    then keeps alpha..beta (2..4) segments queued, at full rate."""
    size, queue = 6_000_000, 2_000_000
    maxima = {}
    for cls in (NewReno, Vegas):
        fwd = QueueWatch(delay=0.020, rate=50e6, queue_bytes=queue, name="fwd")
        conn, res = run_to_receiver(cls(1448), size, fwd, delay=0.020)
        maxima[cls.name] = fwd.max_backlog
        if cls is Vegas:
            end = last_delivery(res)
            settled = fwd.backlog_during(0.6, end)  # slow start is over by 0.4 s
            # beta = 4 segments of standing queue, plus the two-segment bursts each delayed ACK
            # releases: 5 packets were seen at most.
            assert max(settled) <= 8 * WIRE, max(settled)
            assert delivered_rate(res, 0.6, end) * 8 >= 0.95 * 50e6 * 1448 / WIRE
            assert conn.bytes_retrans == 0 and conn.cc.region in ("increase", "hold", "decrease")
    assert maxima["newreno"] > 1_000_000
    assert maxima["vegas"] < maxima["newreno"] / 10, maxima


class EngineSink:
    """Our own engine as the receiving end (its receive side echoes CE as ECE, RFC 3168): an
    application for `AcceptingPeer` that reads and hashes everything and closes after the FIN."""

    def __init__(self, syn, now):
        self.conn = Connection(REMOTE, LOCAL, NewReno(1448, now), SendStream(), iss=7, now=now,
                               close_at_end=False, ecn=True, time_wait=0.5)
        self.conn.accept(syn, now)
        self.sha = hashlib.sha256()
        self.received = 0

    def pump(self, now):
        data = self.conn.read()
        if data:
            self.sha.update(data)
            self.received += len(data)
        if self.conn.fin_received:
            self.conn.shutdown()

    def deadline(self):
        return self.conn.deadline()

    def close(self):
        pass


def run_ecn(cc, size: int, fwd: Link, *, delay: float):
    """`cc` sends over `fwd` (which marks CE) to an ECN-capable engine; both ends negotiate ECN,
    as in test_serve's ECN tests, with the roles of sender and receiver swapped."""
    src = PatternSource(size, seed=5)
    conn = Connection(LOCAL, REMOTE, cc, src, iss=5, time_wait=0.5, ecn=True)
    peer = AcceptingPeer(EngineSink)
    res = simulate(conn, peer, fwd, Link(delay=delay, name="rev"), until=60.0)
    assert res.completed, (res.reason, conn.stats())
    assert conn.ecn_ok and conn.error is None and conn.cc_faults == 0
    assert peer.app.received == size and peer.app.sha.hexdigest() == src.sha256()
    return conn, res


def test_dctcp_holds_the_queue_at_the_marking_threshold_with_the_link_full():
    """100 Mbit/s, 4 ms RTT (BDP 50 kB), CE above K = 15 kB of queue, a queue of 2 MB. DCTCP's
    small, alpha-sized reductions keep the queue hovering at K and never let it drain: the link
    stays full. NewReno with ECN halves on every marked window on the same path, so its queue
    drains and the link idles (88% busy here)."""
    K, rate, size = 15_000, 100e6, 12_000_000
    payload_rate = rate * 1448 / WIRE
    results = {}
    for cls in (Dctcp, NewReno):
        fwd = QueueWatch(delay=0.002, rate=rate, queue_bytes=1 << 21, ce_threshold=K, name="fwd")
        conn, res = run_ecn(cls(1448), size, fwd, delay=0.002)
        assert fwd.marked_ce > 0 and fwd.dropped == 0 and conn.bytes_retrans == 0
        end = last_delivery(res)
        settled = fwd.backlog_during(0.3, end)
        results[cls.name] = (delivered_rate(res, 0.3, end) * 8 / payload_rate,
                             sum(settled) / len(settled), max(settled), conn)
    utilisation, mean_queue, max_queue, conn = results["dctcp"]
    assert utilisation >= 0.98, results
    assert max_queue <= K + 2 * WIRE  # marked on entering above K: the queue stops right there
    assert mean_queue >= K / 2
    assert conn.ecn_reductions >= 20 and 0.0 < conn.cc.alpha < 0.5
    assert results["newreno"][0] < 0.95 and results["newreno"][1] < mean_queue, results


def test_fixed_rate_sends_at_its_rate():
    """10 Mbit/s paced on a 50 Mbit/s, 40 ms path: the payload rate (what the pacer counts, as
    Linux does) is 10 Mbit/s, and nothing queues."""
    fwd = QueueWatch(delay=0.020, rate=50e6, queue_bytes=1 << 20, name="fwd")
    cc = FixedRate.create(1448, 0.0, {"rate": "10e6"})
    conn, res = run_to_receiver(cc, 3_000_000, fwd, delay=0.020)
    end = last_delivery(res)
    payload_rate = delivered_rate(res, 0.5, end) * 8
    assert payload_rate == pytest.approx(10e6, rel=0.02)
    assert fwd.max_backlog <= 2 * WIRE  # a paced burst of two segments at most
    assert cc.pacing_rate == 10e6 / 8


def test_fixed_window_keeps_its_window_through_losses():
    """Without loss the throughput is window / RTT; with 2% loss every hook the engine calls
    leaves cwnd at the window, and the data still arrives intact."""
    window, delay = 65536, 0.020
    fwd = Link(delay=delay, rate=50e6, queue_bytes=1 << 20, name="fwd")
    conn, res = run_to_receiver(FixedWindow(1448), 3_000_000, fwd, delay=delay)
    # At most window / min_rtt; somewhat less, since the window's packets queue behind each
    # other at the bottleneck (it leaves as one train: 45 packets, 11 ms at 50 Mbit/s).
    ratio = delivered_rate(res, 0.3, last_delivery(res)) / (window / conn.rtt.min_rtt)
    assert 0.9 <= ratio <= 1.0, ratio

    log: list[dict] = []
    fwd = Link(delay=delay, rate=50e6, queue_bytes=1 << 20, loss=0.02, seed=9, name="fwd")
    conn, res = run_to_receiver(FixedWindow(1448), 3_000_000, fwd, delay=delay, cc_log=log.append)
    hooks = {r["event"] for r in log}
    assert fwd.dropped > 20 and conn.fast_retransmits > 0 and "on_congestion_event" in hooks
    assert {r["cwnd"] for r in log} == {window} and {r["ssthresh"] for r in log} == {window}


def test_every_controller_survives_a_lossy_reordering_path():
    """Loss both ways, reordering and pacing: exact delivery, and no hook ever fails (a failing
    hook would silently hand the connection to NewReno)."""
    import random

    for i, cls in enumerate((Vegas, Dctcp, FixedRate, FixedWindow)):
        rng = random.Random(i)
        fwd = Link(delay=0.010, rate=20e6, queue_bytes=60 * WIRE, loss=0.03, seed=i,
                   extra_delay=lambda _i, _s: rng.random() * 0.002, name="fwd")
        src = PatternSource(400_000, seed=i)
        conn = Connection(LOCAL, REMOTE, cls(1448), src, iss=i, time_wait=0.5, pacing=True)
        rcv = Receiver(port=REMOTE[1], iss=1)
        res = simulate(conn, rcv, fwd, Link(delay=0.010, loss=0.03, seed=i + 50, name="rev"), until=120.0)
        assert res.completed and conn.error is None and conn.cc_faults == 0, (cls.name, res.reason)
        assert rcv.sha256() == src.sha256()
        assert math.isfinite(conn.cc.cwnd)
