"""BBR v1 (usertcp/cc/bbr.py): hand-worked examples against Linux's tcp_bbr.c, then simulated paths.

The unit tests drive `Bbr` directly with hand-built ACKs (`Path`), so that every number can be
worked out on paper from tcp_bbr.c; the comments show the working. MSS is 1000 bytes there to keep
the arithmetic readable. The simulation tests run the real engine against the simulated receiver
and check what BBR is for: a full pipe with a small queue, and indifference to random loss.
"""

from __future__ import annotations

import statistics

import pytest

from usertcp.cc.api import TCP_INFINITE_SSTHRESH, AckSample, CongestionEvent, UndoEvent
from usertcp.cc.bbr import DRAIN, PACING_GAIN_CYCLE, PROBE_BW, PROBE_RTT, STARTUP, Bbr, WindowedMax
from usertcp.cc.newreno import NewReno
from usertcp.engine.connection import Connection
from usertcp.engine.rate import RateSample
from usertcp.sim.link import Link
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource
from usertcp.stream import SendStream

MSS = 1000
HIGH_GAIN = 739 / 256  # Linux: BBR_UNIT * 2885 / 1000 + 1
DRAIN_GAIN = 88 / 256  # Linux: BBR_UNIT * 1000 / 2885
MARGIN = 0.99  # bbr_pacing_margin_percent = 1


class Path:
    """A hand-driven ACK stream for one `Bbr`.

    Data is delivered in packet-timed rounds: every ACK of a round acknowledges a packet sent
    when `delivered` stood where it stood at the round's start (its ``prior_delivered``), so the
    first ACK of each round ends BBR's previous round and later ACKs of the round do not.
    """

    def __init__(self, cc: Bbr, now: float = 0.0) -> None:
        self.cc = cc
        self.now = now
        self.delivered = 0
        self.round_base = 0

    def new_round(self) -> None:
        self.round_base = self.delivered

    def ack(self, *, bw: float | None, rtt: float = 0.05, acked: int = MSS, inflight: int = 100 * MSS,
            prior_in_flight: int | None = None, dt: float = 0.0, losses: int = 0,
            app_limited: bool = False, in_recovery: bool = False, srtt: float | None = None) -> None:
        """One ACK that delivers `acked` bytes with a delivery-rate sample of `bw` bytes/s
        (None: no usable sample) and RTT `rtt`, `dt` seconds after the previous one."""
        self.now += dt
        self.delivered += acked
        interval = acked / bw if bw else 0.0
        if prior_in_flight is None:
            prior_in_flight = inflight + acked
        rs = RateSample(
            delivered=acked, interval=interval, delivery_rate=bw, rtt=rtt, losses=losses,
            acked_sacked=acked, prior_in_flight=prior_in_flight,
            prior_delivered=self.round_base, is_app_limited=app_limited, is_retrans=False,
            send_elapsed=interval, ack_elapsed=interval,
        )
        self.cc.cong_control(AckSample(
            now=self.now, acked_bytes=acked, rtt=rtt, srtt=srtt if srtt is not None else rtt, min_rtt=rtt,
            bytes_in_flight=inflight, mss=MSS, app_limited=app_limited, rate=rs, lost_bytes=losses,
            in_recovery=in_recovery, delivered_total=self.delivered,
        ))

    def round(self, bw: float, *, acks: int = 4, rtt: float = 0.05, **kw) -> None:
        """One packet-timed round of `acks` ACKs spread over `rtt`."""
        self.new_round()
        for _ in range(acks):
            self.ack(bw=bw, rtt=rtt, dt=rtt / acks, **kw)


def to_probe_bw(cc: Bbr, bw: float = 4e6, rtt: float = 0.05, acks: int = 4, acked: int = MSS) -> Path:
    """STARTUP at a constant `bw`: round 1 sets full_bw, rounds 2-4 show no growth, so the pipe
    is full at round 4's first ACK; an ACK with little in flight then ends DRAIN."""
    p = Path(cc)
    for _ in range(4):
        p.round(bw, acks=acks, rtt=rtt, acked=acked, inflight=int(10 * bw * rtt))
    assert cc.full_bw_reached and cc.mode == DRAIN
    p.ack(bw=bw, rtt=rtt, acked=acked, inflight=MSS)
    assert cc.mode == PROBE_BW
    return p


def settle(cc: Bbr, p: Path) -> int:
    """ACKs at the same instant (so the gain-cycle phase stays put) until cwnd reaches its
    target, which it approaches by the bytes acked per ACK; returns that cwnd."""
    for _ in range(1000):
        before = cc.cwnd
        p.ack(bw=4e6, acked=10 * MSS, prior_in_flight=400 * MSS)
        if cc.cwnd == before:
            return before
    raise AssertionError("cwnd never settled")


# ---------------------------------------------------------------------------- STARTUP


def test_initial_pacing_rate_is_high_gain_times_initial_window_over_rtt():
    cc = Bbr(MSS)
    # bbr_init_pacing_rate_from_rtt without an RTT: the nominal 1 ms.
    assert cc.pacing_rate == pytest.approx(HIGH_GAIN * 10 * MSS / 0.001 * MARGIN)
    assert cc.cwnd == 10 * MSS and cc.ssthresh == TCP_INFINITE_SSTHRESH
    assert cc.mode == STARTUP and cc.state()["pacing_gain"] == HIGH_GAIN
    # The first ACK brings srtt = 100 ms (and no usable rate sample): recomputed from it, with
    # the window as it was before this ACK.
    Path(cc).ack(bw=None, rtt=0.1)
    assert cc.pacing_rate == pytest.approx(HIGH_GAIN * 10 * MSS / 0.1 * MARGIN)


def test_startup_gain_applied_to_pacing_rate_and_cwnd():
    cc = Bbr(MSS)
    p = Path(cc)
    p.round(1e6)  # bw = 1 MB/s, min_rtt = 50 ms
    assert cc.mode == STARTUP
    assert cc.state()["btl_bw"] == 1e6 and cc.min_rtt == 0.05
    assert cc.state()["pacing_gain"] == cc.state()["cwnd_gain"] == HIGH_GAIN
    # pacing = high_gain x bw x 0.99 = 2,857,851.6 bytes/s (above the rate from srtt).
    assert cc.pacing_rate == pytest.approx(HIGH_GAIN * 1e6 * MARGIN)
    # cwnd grew by every byte acked (slow start towards the target): 10 + 4 segments.
    assert cc.cwnd == 14 * MSS
    # Target: BDP x high_gain = 144.34 -> 145 segments; tso goal = (2,857,851 >> 10) // 1000 = 2
    # segments, budget 3 x 2 = 6 -> 151 -> even: 152 segments. cwnd grows to it and stops.
    for _ in range(300):
        p.ack(bw=1e6)
    assert cc.cwnd == 152 * MSS


def test_pacing_rate_does_not_fall_before_the_pipe_is_full():
    cc = Bbr(MSS)
    p = Path(cc)
    p.round(2e6)
    high = cc.pacing_rate
    p.round(1e6)  # a lower sample (the max filter keeps 2e6 anyway) ...
    p.ack(bw=None)
    assert cc.pacing_rate == high  # ... and bbr_set_pacing_rate only raises it in STARTUP


# ---------------------------------------------------------------------------- bandwidth filter


def test_windowed_max_is_linuxs_three_choice_filter():
    f = WindowedMax()
    assert f.update(10, 1, 10.0) == 10.0
    assert f.update(10, 3, 8.0) == 10.0  # too early in the window to become a second choice
    assert f.update(10, 4, 7.0) == 10.0  # a quarter of the window later: second choice
    assert f.update(10, 7, 6.0) == 10.0  # half the window later: third choice
    assert f.update(10, 11, 1.0) == 10.0  # 11 - 1 = 10 rounds: still in the window
    # Round 12: the maximum ages out and the second choice, 7, takes over. (A filter keeping
    # every sample would say 8; Linux's approximation says 7, and so do we.)
    assert f.update(10, 12, 1.0) == 7.0
    assert f.update(10, 13, 9.0) == 9.0  # a new maximum replaces everything at once


def test_max_filter_keeps_the_max_over_10_rounds_and_forgets_older():
    cc = Bbr(MSS)
    p = Path(cc)
    p.round(10e6)  # round 1
    assert cc.round_count == 1
    for _ in range(10):  # rounds 2..11
        p.round(5e6)
        assert cc.state()["btl_bw"] == 10e6
    assert cc.round_count == 11
    p.round(5e6)  # round 12: the round-1 sample is more than 10 rounds old
    assert cc.state()["btl_bw"] == 5e6


def test_app_limited_samples_do_not_lower_bw():
    cc = Bbr(MSS)
    p = to_probe_bw(cc, bw=4e6)
    for _ in range(15):
        p.round(1e6, app_limited=True)
    assert cc.state()["btl_bw"] == 4e6  # never entered the filter, however many rounds
    p.round(5e6, app_limited=True)  # app-limited, but better than the model: taken
    assert cc.state()["btl_bw"] == 5e6
    for _ in range(12):  # the same low rate, not app-limited: the max ages out
        p.round(1e6)
    assert cc.state()["btl_bw"] == 1e6


# ---------------------------------------------------------------------------- full pipe, DRAIN


def test_full_pipe_after_three_rounds_without_25_percent_growth_then_drain_then_probe_bw():
    cc = Bbr(MSS)
    p = Path(cc)
    for bw in (1e6, 2e6, 4e6):  # doubling: each round is a new baseline
        p.round(bw, inflight=300 * MSS)
        assert cc.full_bw == bw and cc.full_bw_cnt == 0
    p.round(4e6, inflight=300 * MSS)
    p.round(4.9e6, inflight=300 * MSS)  # +22.5%: not enough growth
    assert cc.full_bw_cnt == 2 and cc.mode == STARTUP and not cc.full_bw_reached
    p.new_round()
    p.ack(bw=4e6, inflight=300 * MSS)  # third round without growth: pipe full, DRAIN
    assert cc.full_bw_reached and cc.mode == DRAIN
    # ssthresh = bbr_inflight(max_bw, 1.0): BDP 4.9 MB/s x 50 ms = 245 segments, plus 3 x 13
    # segments of tso goal at the STARTUP pacing rate (14,144,296 >> 10 = 13,812 bytes) = 284.
    assert cc.ssthresh == 284 * MSS
    assert cc.pacing_rate == pytest.approx(DRAIN_GAIN * 4.9e6 * MARGIN)
    # DRAIN ends once in flight <= bbr_inflight(max_bw, 1.0): 245 segments, plus 3 x 2 (tso
    # goal at the drain rate 1,667,531 bytes/s >> 10 -> 1 segment, at least 2) = 251 -> even: 252.
    p.ack(bw=4e6, inflight=253 * MSS)
    assert cc.mode == DRAIN
    p.ack(bw=4e6, inflight=252 * MSS)
    assert cc.mode == PROBE_BW
    assert cc.state()["cwnd_gain"] == 2.0
    assert cc.state()["pacing_gain"] == PACING_GAIN_CYCLE[cc.cycle_idx]


# ---------------------------------------------------------------------------- PROBE_BW


def test_gain_cycle_order():
    cc = Bbr(MSS, 0.0)
    p = to_probe_bw(cc)
    start = cc.cycle_idx
    gains = [cc.pacing_gain]
    # Each ACK a min_rtt later, with enough in flight for the 1.25 phase to be done: one
    # phase per ACK.
    for _ in range(15):
        p.ack(bw=4e6, dt=0.051, prior_in_flight=400 * MSS)
        gains.append(cc.pacing_gain)
    assert gains == [PACING_GAIN_CYCLE[(start + i) % 8] for i in range(16)]
    assert PACING_GAIN_CYCLE == (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)


def test_gain_cycle_random_start_never_the_drain_phase_and_reproducible():
    starts = set()
    for seed in range(60):
        a = Bbr.create(MSS, 0.0, {"seed": seed})
        to_probe_bw(a)
        b = Bbr.create(MSS, 0.0, {"seed": seed})
        to_probe_bw(b)
        assert a.cycle_idx == b.cycle_idx
        starts.add(a.cycle_idx)
    assert starts == {0, 2, 3, 4, 5, 6, 7}


def _to_phase(cc: Bbr, p: Path, phase: int) -> None:
    while cc.cycle_idx != phase:
        p.ack(bw=4e6, dt=0.051, prior_in_flight=400 * MSS)


def test_probe_phase_waits_for_inflight_or_loss_and_drain_phase_ends_early():
    cc = Bbr(MSS)
    p = to_probe_bw(cc)
    _to_phase(cc, p, 0)
    # 1.25 phase: bbr_inflight(bw, 1.25) = 250 segments + 3 x 4 (tso goal at 4.95 MB/s) = 262,
    # +2 in phase 0 = 264 segments; the flight counts the 4-segment burst about to leave.
    p.ack(bw=4e6, dt=0.051, prior_in_flight=259 * MSS)  # 263 < 264: keep probing
    assert cc.cycle_idx == 0
    p.ack(bw=4e6, dt=0.051, prior_in_flight=259 * MSS, losses=MSS)  # a loss ends it
    assert cc.cycle_idx == 1
    # 0.75 phase: ends before min_rtt once the flight is down to bbr_inflight(bw, 1.0) =
    # 200 + 3 x 2 = 206 segments.
    p.ack(bw=4e6, dt=0.01, prior_in_flight=207 * MSS)
    assert cc.cycle_idx == 1
    p.ack(bw=4e6, dt=0.01, prior_in_flight=206 * MSS)
    assert cc.cycle_idx == 2


# ---------------------------------------------------------------------------- PROBE_RTT


def _enter_probe_rtt(**params) -> tuple[Bbr, Path, int]:
    cc = Bbr.create(MSS, 0.0, params)
    p = to_probe_bw(cc)
    for _ in range(40):
        p.ack(bw=4e6, dt=0.001)
    cwnd = cc.cwnd
    stamp = cc.min_rtt_stamp
    p.now = stamp + 10.0
    p.ack(bw=4e6, rtt=0.06)  # not yet expired: 10 s exactly
    assert cc.mode == PROBE_BW
    p.ack(bw=4e6, rtt=0.06, dt=0.001)  # expired: PROBE_RTT, and min_rtt takes this sample
    assert cc.mode == PROBE_RTT and cc.min_rtt == 0.06
    assert cc.prior_cwnd == cwnd + MSS  # saved as it stood, then capped at 4 segments
    assert cc.cwnd == 4 * MSS
    assert cc.pacing_gain == 1.0 and cc.state()["cwnd_gain"] == 1.0
    p.ack(bw=4e6, inflight=5 * MSS)  # still more than 4 segments out: the 200 ms have not begun
    assert cc.probe_rtt_done_stamp is None
    p.ack(bw=4e6, inflight=4 * MSS)
    assert cc.probe_rtt_done_stamp == pytest.approx(p.now + cc.probe_rtt_duration)
    return cc, p, cwnd


def test_probe_rtt_left_after_200ms_and_a_round():
    cc, p, _ = _enter_probe_rtt()
    done = cc.probe_rtt_done_stamp
    p.now = done + 0.05
    p.ack(bw=4e6, inflight=4 * MSS)  # 200 ms are up, but no round has passed at 4 segments
    assert cc.mode == PROBE_RTT
    p.new_round()
    p.ack(bw=4e6, inflight=4 * MSS, dt=0.001)  # the round ends: done
    assert cc.mode == PROBE_BW
    assert cc.min_rtt_stamp == p.now
    assert cc.cwnd >= cc.prior_cwnd  # restored


def test_probe_rtt_round_first_then_time():
    cc, p, _ = _enter_probe_rtt()
    done = cc.probe_rtt_done_stamp
    p.new_round()
    p.now = done - 0.1
    p.ack(bw=4e6, rtt=0.05, inflight=4 * MSS)  # a round at 4 segments, but only 100 ms
    assert cc.mode == PROBE_RTT and cc.probe_rtt_round_done
    assert cc.min_rtt == 0.05  # the drained queue shows the real propagation delay
    p.now = done
    p.ack(bw=4e6, inflight=4 * MSS)  # not after the stamp yet
    assert cc.mode == PROBE_RTT
    p.ack(bw=4e6, inflight=4 * MSS, dt=0.001)
    assert cc.mode == PROBE_BW and cc.cwnd >= cc.prior_cwnd


def test_probe_rtt_samples_count_as_app_limited():
    # A long PROBE_RTT (5 s), so that its low-rate samples would outlast the 10-round filter.
    cc, p, _ = _enter_probe_rtt(probe_rtt_duration=5.0)
    before = cc.max_bw
    # Packets sent in PROBE_RTT (their snapshot of delivered lies in the marked range) carry
    # Linux's app-limited mark: their low rate does not enter the filter.
    p.new_round()
    for _ in range(30):
        p.round(1e5, inflight=4 * MSS)
    assert cc.mode == PROBE_RTT and cc.max_bw == before
    # Once PROBE_RTT is over and its packets are delivered, samples count again.
    p.now = cc.probe_rtt_done_stamp
    p.round(1e5, inflight=4 * MSS)
    assert cc.mode == PROBE_BW
    for _ in range(12):
        p.round(1e5, inflight=4 * MSS)
    assert cc.max_bw == 1e5


def test_idle_restart_skips_probe_rtt_and_refreshes_min_rtt():
    cc = Bbr(MSS)
    p = to_probe_bw(cc)
    p.now = cc.min_rtt_stamp + 11.0
    cc.on_idle_restart(p.now, 11.0, 0.2)
    p.ack(bw=4e6, rtt=0.06)
    assert cc.mode == PROBE_BW and not cc.idle_restart
    assert cc.min_rtt == 0.06 and cc.min_rtt_stamp == p.now


# ---------------------------------------------------------------------------- loss and recovery


def test_packet_conservation_in_recovery_then_restore():
    cc = Bbr.create(MSS, 0.0, {"extra_acked_gain": 0.0})
    p = to_probe_bw(cc)
    steady = settle(cc, p)
    cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=200 * MSS, mss=MSS, cause="dupack"))
    assert cc.prior_cwnd == steady
    # First ACK of recovery: 3 segments lost; cwnd = in flight + acked.
    p.ack(bw=4e6, inflight=100 * MSS, losses=3 * MSS, in_recovery=True)
    assert cc.packet_conservation and cc.cwnd == 101 * MSS
    p.ack(bw=4e6, inflight=99 * MSS, in_recovery=True)
    assert cc.cwnd == 101 * MSS  # max(cwnd, in flight + acked)
    p.ack(bw=4e6, inflight=90 * MSS, losses=2 * MSS, in_recovery=True)
    assert cc.cwnd == 99 * MSS  # losses come off first: max(101 - 2, 90 + 1)
    p.new_round()
    p.ack(bw=4e6, inflight=90 * MSS, in_recovery=True)  # a round later: no more conservation,
    assert not cc.packet_conservation and cc.cwnd == 100 * MSS  # cwnd grows by what is acked
    p.ack(bw=4e6, inflight=90 * MSS, in_recovery=False)  # recovery over: restored
    assert cc.cwnd == steady


def test_rto_saves_cwnd_resets_full_bw_and_restores_on_exit():
    cc = Bbr.create(MSS, 0.0, {"extra_acked_gain": 0.0})
    p = to_probe_bw(cc)
    steady, rounds = settle(cc, p), cc.round_count
    cc.on_rto(p.now, 200 * MSS)
    assert cc.cwnd == MSS and cc.prior_cwnd == steady
    assert cc.full_bw == 0.0 and cc.full_bw_reached  # Linux resets the baseline only
    cc.on_rto(p.now + 0.4, 200 * MSS)  # a re-expiry saves nothing new
    assert cc.prior_cwnd == steady
    p.ack(bw=4e6, inflight=0, in_recovery=True)  # after the timeout: at least 4 segments,
    assert cc.cwnd == 4 * MSS
    for _ in range(2):  # then grow by what is delivered
        p.ack(bw=4e6, inflight=0, in_recovery=True)
    assert cc.cwnd == 6 * MSS
    p.ack(bw=4e6, inflight=0, in_recovery=False)  # RTO recovery over: restore
    assert cc.cwnd == steady
    assert cc.round_count == rounds  # the RTO's round_start is for the policer sampler only


def test_undo_keeps_cwnd_resets_full_pipe_detection_then_restores():
    cc = Bbr.create(MSS, 0.0, {"extra_acked_gain": 0.0})
    p = to_probe_bw(cc)
    steady = settle(cc, p)
    cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=200 * MSS, mss=MSS, cause="dupack"))
    p.ack(bw=4e6, inflight=50 * MSS, losses=MSS, in_recovery=True)
    assert cc.cwnd == 51 * MSS
    cc.full_bw_cnt = 2
    cc.on_undo(UndoEvent(now=p.now, prior_cwnd=steady, prior_ssthresh=TCP_INFINITE_SSTHRESH, cause="dsack"))
    assert cc.cwnd == 51 * MSS  # bbr_undo_cwnd returns cwnd as it is
    assert cc.full_bw == 0.0 and cc.full_bw_cnt == 0 and not cc.lt_is_sampling
    p.ack(bw=4e6, inflight=50 * MSS)  # the episode is over: the saved window comes back
    assert cc.cwnd == steady


def test_tlp_and_ecn_episodes_do_not_conserve_packets():
    cc = Bbr.create(MSS, 0.0, {"extra_acked_gain": 0.0})
    p = to_probe_bw(cc)
    steady = settle(cc, p)
    for cause in ("tlp", "ecn"):
        cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=200 * MSS, mss=MSS, cause=cause))
        cc.on_recovery_exit(p.now, 200 * MSS)
        p.ack(bw=4e6, inflight=20 * MSS, prior_in_flight=400 * MSS)
        assert not cc.packet_conservation and cc.cwnd == steady


def test_random_loss_does_not_lower_the_model():
    cc = Bbr(MSS)
    p = to_probe_bw(cc)
    bw, rtt = cc.max_bw, cc.min_rtt
    for _ in range(20):  # 1 lost segment in 4 ACKs, every round: far below the policer's 20%
        p.new_round()
        p.ack(bw=4e6, dt=0.0125, acked=50 * MSS, losses=MSS)
        for _ in range(3):
            p.ack(bw=4e6, dt=0.0125, acked=50 * MSS)
    assert cc.max_bw == bw and cc.min_rtt == rtt and not cc.lt_use_bw
    assert cc.pacing_rate == pytest.approx(PACING_GAIN_CYCLE[cc.cycle_idx] * bw * MARGIN)


def test_policer_detected_from_two_lossy_intervals_with_the_same_rate():
    cc = Bbr(MSS)
    # 10 ACKs of 1000 bytes per 100 ms round: 100 kB/s long term, though each sample says 200.
    p = to_probe_bw(cc, bw=2e5, rtt=0.1, acks=10)
    for _ in range(8):  # 30% of what is delivered is lost
        p.round(2e5, acks=10, rtt=0.1, losses=300, inflight=10 * MSS)
    assert cc.lt_use_bw
    assert cc.lt_bw == pytest.approx(1e5, rel=0.01)
    assert cc.state()["btl_bw"] == cc.lt_bw
    assert cc.pacing_gain == 1.0 and cc.pacing_rate == pytest.approx(cc.lt_bw * MARGIN)
    # The policed rate is used for 48 rounds of PROBE_BW, then BBR probes again.
    for _ in range(47):
        p.round(2e5, acks=10, rtt=0.1, inflight=10 * MSS)
    assert cc.lt_use_bw
    p.round(2e5, acks=10, rtt=0.1, inflight=10 * MSS)
    assert not cc.lt_use_bw and cc.mode == PROBE_BW


def test_ack_aggregation_allowance_grows_cwnd_and_ages_out():
    a = Bbr.create(MSS, 0.0, {"seed": 3})
    b = Bbr.create(MSS, 0.0, {"seed": 3, "extra_acked_gain": 0.0})
    paths = [to_probe_bw(a), to_probe_bw(b)]
    for cc, p in zip((a, b), paths):
        settle(cc, p)  # every ACK at one instant: all of it is "extra", as from a GRO burst
    burst = a.cwnd - b.cwnd
    assert a.state()["extra_acked"] > 0 and b.state()["extra_acked"] == 0
    # The allowance is at most 100 ms at bw (400 segments), plus the quantization budget.
    assert 100 * MSS < burst <= (400 + 14) * MSS
    # Smooth ACKs, a little slower than bw (50 segments per 20 ms): once they fall behind bw x
    # time, a new epoch starts (ACKs exactly at bw would carry the burst's excess along), and
    # after 5-10 more rounds the filter has forgotten the burst.
    for cc, p in zip((a, b), paths):
        for _ in range(20):
            p.new_round()
            for _ in range(4):
                p.ack(bw=4e6, dt=0.02, acked=50 * MSS, prior_in_flight=400 * MSS)
    assert a.cwnd - b.cwnd <= 60 * MSS < burst


def test_on_ack_from_an_older_engine_rebuilds_delivered():
    cc = Bbr(MSS)
    # Two packets sent together (both with delivered = 0 when they left), then one sent after
    # both were ACKed: two rounds, not three. (Without delivered_total the engine's ACKs would
    # all say 0, and every ACK would start a round.)
    for i, prior in enumerate((0, 0, 2 * MSS), 1):
        rs = RateSample(delivered=(i - prior // MSS) * MSS, interval=0.05, delivery_rate=MSS / 0.05,
                        rtt=0.05, losses=0, acked_sacked=MSS, prior_in_flight=MSS, prior_delivered=prior,
                        is_app_limited=False, is_retrans=False, send_elapsed=0.05, ack_elapsed=0.05)
        cc.on_ack(AckSample(now=0.05 * i, acked_bytes=MSS, rtt=0.05, srtt=0.05, min_rtt=0.05,
                            bytes_in_flight=0, mss=MSS, app_limited=False, rate=rs))
    assert cc.round_count == 2 and cc.state()["btl_bw"] == MSS / 0.05


# ---------------------------------------------------------------------------- idle, quantum, params


def test_idle_restart_paces_at_bw_in_probe_bw():
    cc = Bbr(MSS)
    p = to_probe_bw(cc)
    _to_phase(cc, p, 0)  # 1.25
    assert cc.pacing_rate == pytest.approx(1.25 * 4e6 * MARGIN)
    cc.on_idle_restart(p.now + 1.0, 1.0, 0.2)
    assert cc.idle_restart and cc.pacing_rate == pytest.approx(4e6 * MARGIN)
    assert cc.cwnd >= 4 * MSS  # cwnd stays (no RFC 5681 restart window)
    p.ack(bw=4e6)
    assert not cc.idle_restart  # new data (S)ACKed: the restart is over


def test_idle_restart_in_startup_leaves_pacing_alone():
    cc = Bbr(MSS)
    Path(cc).round(1e6)
    rate, cwnd = cc.pacing_rate, cc.cwnd
    cc.on_idle_restart(1.0, 0.9, 0.2)
    assert cc.pacing_rate == rate and cc.cwnd == cwnd


def test_send_quantum_follows_bbr_tso_segs_goal():
    cc = Bbr(1448)
    # Initial rate 2.887 x 14480 B / 1 ms x 0.99 = 41.4 MB/s: 40,413 B per ms -> 27 segments.
    assert cc.send_quantum == 27 * 1448
    p = Path(cc)
    p.round(1e8)  # 285.8 MB/s: far above the 64 KB cap, 65,215 B -> 45 segments
    assert cc.send_quantum == 45 * 1448
    slow = Bbr(MSS)
    to_probe_bw(slow, bw=1e5)  # under 1.2 Mbit/s: one segment at a time
    assert slow.send_quantum == MSS


def test_params_settable():
    cc = Bbr.create(1448, 0.0, {"cwnd_gain": "2.5"})
    assert cc.cwnd_gain == 2.5 and Bbr.cwnd_gain == 2.0
    a = Bbr.create(MSS, 0.0, {"cwnd_gain": "2.5", "seed": 7, "extra_acked_gain": 0.0})
    b = Bbr.create(MSS, 0.0, {"seed": 7, "extra_acked_gain": 0.0})
    for cc in (a, b):
        settle(cc, to_probe_bw(cc))
    assert a.state()["cwnd_gain"] == 2.5 and b.state()["cwnd_gain"] == 2.0
    assert a.cwnd - b.cwnd == 100 * MSS  # 0.5 x the 200-segment BDP
    c = Bbr.create(MSS, 0.0, {"full_bw_rounds": 1, "high_gain": "2.0", "probe_rtt_duration": 0.5})
    assert c.pacing_rate == pytest.approx(2.0 * 10 * MSS / 0.001 * MARGIN)
    p = Path(c)
    p.round(1e6)
    p.round(1e6, inflight=300 * MSS)  # one round without growth is enough now
    assert c.full_bw_reached
    with pytest.raises(ValueError):
        Bbr.create(MSS, 0.0, {"cwnd_gain": "0"})
    with pytest.raises(ValueError):
        Bbr.create(MSS, 0.0, {"no_such_knob": "1"})
    assert {"high_gain", "drain_gain", "cwnd_gain", "probe_rtt_duration", "min_rtt_window",
            "bw_window_rounds", "full_bw_threshold", "full_bw_rounds", "seed", "lt_loss_threshold",
            "lt_bw_ratio", "lt_bw_diff", "lt_bw_max_rounds", "lt_interval_min_rounds"} <= set(Bbr.params)


def test_state_reports_the_model():
    cc = Bbr(MSS)
    to_probe_bw(cc)
    st = cc.state()
    for key in ("mode", "btl_bw", "min_rtt", "pacing_gain", "cwnd_gain", "round_count", "full_bw",
                "full_bw_reached", "cycle_index", "lt_use_bw", "prior_cwnd"):
        assert key in st
    assert st["mode"] == PROBE_BW and st["btl_bw"] == 4e6 and st["min_rtt"] == 0.05
    assert st["round_count"] == 4 and st["full_bw_reached"]


def test_mss_change_keeps_segment_counts():
    cc = Bbr(1000)
    cc.prior_cwnd = 50_000
    cc.on_mss_change(1448)
    assert cc.cwnd == 10 * 1448 and cc.prior_cwnd == 50 * 1448
    assert cc.pacing_rate == pytest.approx(HIGH_GAIN * 10 * 1448 / 0.001 * MARGIN)


# ---------------------------------------------------------------------------- simulated paths

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
RATE, RTT = 50e6, 0.040
BDP = int(RATE / 8 * RTT)  # 250,000 bytes: the queue is one BDP
# What the link can carry of payload: 1448 of every 1514 wire bytes of a full segment with
# timestamps (see usertcp.sim.link). No sender can beat it; goodput is measured against it.
PAYLOAD_CAPACITY = RATE * 1448 / 1514


def _run(cc, size, *, loss=0.0, rate=RATE, log=None, until=300.0):
    src = PatternSource(size, seed=5)
    conn = Connection(LOCAL, REMOTE, cc, src, time_wait=0.5, cc_log=log)
    fwd = Link(delay=RTT / 2, rate=rate, queue_bytes=int(rate / 8 * RTT), loss=loss, seed=11, name="fwd")
    rev = Link(delay=RTT / 2, name="rev")
    rcv = Receiver(port=REMOTE[1], iss=777)
    res = simulate(conn, rcv, fwd, rev, until=until)
    assert res.reason == "completed", (res.reason, conn.stats())
    assert conn.error is None and conn.cc_faults == 0
    assert rcv.bytes_received == size and rcv.sha256() == src.sha256()
    done = min(t for t, ev in res.timed_events if ev.kind == "delivered" and ev.value >= size)
    goodput = size * 8 / (done - conn.established_at)
    return conn, fwd, goodput


@pytest.fixture(scope="module")
def clean_run():
    log = []
    conn, fwd, goodput = _run(Bbr(1448), 20_000_000, log=log.append)
    return conn, fwd, goodput, log


def test_sim_bbr_fills_the_pipe(clean_run):
    conn, fwd, goodput, log = clean_run
    assert goodput >= 0.90 * PAYLOAD_CAPACITY, goodput / PAYLOAD_CAPACITY
    modes = [r["mode"] for r in log]
    assert modes[0] == STARTUP and DRAIN in modes and modes[-1] == PROBE_BW
    assert isinstance(conn.cc, Bbr)  # never fell back to NewReno
    # The model matches the path: bw within 2% of the payload capacity.
    last = log[-1]
    assert last["btl_bw"] == pytest.approx(PAYLOAD_CAPACITY / 8, rel=0.02)
    # min_rtt: the path's 40 ms plus the serialisation of at most one full segment (a short
    # segment's RTT is shorter).
    assert RTT <= last["min_rtt"] <= RTT + 1514 * 8 / RATE + 1e-6


def test_sim_bbr_keeps_the_queue_small(clean_run):
    conn, fwd, goodput, log = clean_run
    min_rtt = min(r["rtt"] for r in log if r["rtt"])
    steady = [r["rtt"] for r in log if r["t"] > 1.0 and r["rtt"]]
    # STARTUP fills the one-BDP buffer (cwnd_gain 2.89) ...
    assert fwd.max_backlog > 0.9 * BDP
    # ... after DRAIN, PROBE_BW keeps only the 1.25 phase's brief queue: the median RTT
    # sample sits within a few percent of the propagation delay.
    assert statistics.median(steady) < 1.25 * min_rtt
    assert statistics.median(steady) < 1.05 * min_rtt


def test_sim_bbr_ignores_random_loss_and_newreno_does_not():
    size = 20_000_000
    bbr_conn, _, bbr = _run(Bbr(1448), size, loss=0.01)
    reno_conn, _, reno = _run(NewReno(1448), size, loss=0.01)
    assert bbr_conn.fast_retransmits > 10  # the loss was there for both
    assert bbr >= 0.80 * PAYLOAD_CAPACITY, bbr / PAYLOAD_CAPACITY
    assert reno < 0.25 * PAYLOAD_CAPACITY
    assert bbr / reno > 5


def test_sim_probe_rtt_every_10_seconds():
    log = []
    rate = 10e6
    _run(Bbr(1448), 16_000_000, rate=rate, log=log.append)
    entered = [r["t"] for a, r in zip(log, log[1:]) if r["mode"] == PROBE_RTT and a["mode"] != PROBE_RTT]
    assert len(entered) == 1 and 10.0 < entered[0] < 10.5  # 10 s after the last min_rtt sample
    during = [r for r in log if r["mode"] == PROBE_RTT]
    assert max(r["cwnd"] for r in during) <= 4 * 1448
    span = during[-1]["t"] - during[0]["t"]
    assert 0.2 < span < 0.2 + 4 * RTT  # 200 ms at 4 segments after the flight drained, and a round
    after = [r for r in log if r["t"] > during[-1]["t"]]
    assert after[0]["mode"] == PROBE_BW


def test_sim_idle_restart_paces_at_bw():
    """An application pause: 6 MB, nothing to send for 0.5 s, 2 MB more. The engine tells BBR
    (CA_EVENT_TX_START) and BBR, in PROBE_BW, paces the restart at bw."""
    stream = SendStream()
    src = PatternSource(8_000_000, seed=5)
    stream.append(src, 0, 6_000_000)
    cc = Bbr(1448)
    seen = []
    hook = cc.on_idle_restart

    def spy(now, idle, rto):
        hook(now, idle, rto)
        seen.append((idle, cc.mode, cc.pacing_rate, cc.bw))

    cc.on_idle_restart = spy
    conn = Connection(LOCAL, REMOTE, cc, stream, time_wait=0.5, close_at_end=False)
    fwd = Link(delay=RTT / 2, rate=RATE, queue_bytes=BDP, name="fwd")
    rev = Link(delay=RTT / 2, name="rev")
    rcv = Receiver(port=REMOTE[1], iss=777)
    res = simulate(conn, rcv, fwd, rev, until=5.0)
    assert rcv.bytes_received == 6_000_000
    stream.append(src, 6_000_000, 2_000_000)
    stream.finish()
    res = simulate(conn, rcv, fwd, rev, until=30.0, connect=False, start=res.end + 0.5)
    assert res.reason == "completed" and rcv.sha256() == src.sha256()
    assert len(seen) == 1
    idle, mode, pacing, bw = seen[0]
    assert idle >= 0.5 and mode == PROBE_BW and pacing == pytest.approx(bw * MARGIN)
