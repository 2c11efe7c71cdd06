"""BBRv3 (usertcp/cc/bbr3.py, draft-ietf-ccwg-bbr-06): hand-driven state transitions, then
simulated paths.

The unit tests drive `BBRv3` with hand-built ACKs (`Path`), so every number can be worked out from
the draft's pseudocode; the comments show the working and cite the section. MSS is 1000 bytes,
the path 4 MB/s with a 50 ms RTT: BDP = 200 segments. The simulation tests run the real engine
against the simulated receiver and check what v3 is for: a full pipe with a low queue, a bounded
response to random loss, and less loss than v1 where the buffer is shallow.
"""

from __future__ import annotations

import json
import statistics

import pytest

from usertcp.cc import load
from usertcp.cc.api import AckSample, CongestionEvent, UndoEvent
from usertcp.cc.bbr import Bbr
from usertcp.cc.bbr3 import (
    DRAIN,
    PROBE_BW_CRUISE,
    PROBE_BW_DOWN,
    PROBE_BW_REFILL,
    PROBE_BW_STATES,
    PROBE_BW_UP,
    PROBE_RTT,
    STARTUP,
    BBRv3,
)
from usertcp.cc.cubic import Cubic
from usertcp.engine.connection import Connection
from usertcp.engine.rate import RateSample
from usertcp.sim.link import Link
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource

MSS = 1000
BW = 4e6  # bytes/s
RTT = 0.05
BDP = int(BW * RTT)  # 200 segments
MARGIN = 0.99  # BBR.PacingMarginPercent = 1


class Path:
    """A hand-driven ACK stream for one controller.

    Data is delivered in packet-timed rounds: by default every ACK of a round acknowledges a
    packet sent when `delivered` stood where it stood at the round's start (its
    ``prior_delivered``), so the first ACK of each round ends the controller's previous round.
    The controller rebuilds RS.tx_in_flight as the flight just before the first ACK after that
    point -- here the first ACK of the round's ``prior_in_flight`` -- and RS.lost as what was
    marked lost since.
    """

    def __init__(self, cc: BBRv3, now: float = 0.0) -> None:
        self.cc = cc
        self.now = now
        self.delivered = 0
        self.round_base = 0

    def new_round(self) -> None:
        self.round_base = self.delivered

    def ack(self, *, bw: float | None = BW, rtt: float = RTT, acked: int = MSS, inflight: int = 100 * MSS,
            prior_in_flight: int | None = None, dt: float = 0.0, losses: int = 0, app_limited: bool = False,
            in_recovery: bool = False, prior_delivered: int | None = None, ece: bool = False,
            sacked: int = 0) -> None:
        self.now += dt
        self.delivered += acked
        interval = acked / bw if bw else 0.0
        if prior_in_flight is None:
            prior_in_flight = inflight + acked
        rs = RateSample(
            delivered=acked, interval=interval, delivery_rate=bw, rtt=rtt, losses=losses,
            acked_sacked=acked, prior_in_flight=prior_in_flight,
            prior_delivered=self.round_base if prior_delivered is None else prior_delivered,
            is_app_limited=app_limited, is_retrans=False, send_elapsed=interval, ack_elapsed=interval,
        )
        self.cc.cong_control(AckSample(
            now=self.now, acked_bytes=acked - sacked, rtt=rtt, srtt=rtt, min_rtt=rtt,
            bytes_in_flight=inflight, mss=MSS, app_limited=app_limited, rate=rs, lost_bytes=losses,
            in_recovery=in_recovery, delivered_total=self.delivered, ece=ece, sacked_bytes=sacked,
        ))

    def round(self, bw: float = BW, *, acks: int = 4, rtt: float = RTT, **kw) -> None:
        self.new_round()
        for _ in range(acks):
            self.ack(bw=bw, rtt=rtt, dt=rtt / acks, **kw)


def to_probe_bw_down(cc: BBRv3) -> Path:
    """Startup at a constant 4 MB/s: round 1 sets full_bw, rounds 2-4 show no growth (§5.3.1.2),
    so the pipe is full at round 4's first ACK and Drain begins; an ACK with a BDP or less in
    flight ends Drain (§5.3.2). The flight before that ACK is kept high, so ProbeBW_DOWN does not
    turn into CRUISE on the same ACK."""
    p = Path(cc)
    for _ in range(4):
        p.round(BW, acked=10 * MSS, inflight=2000 * MSS)
    assert cc.full_bw_reached and cc.state_name == DRAIN
    p.ack(acked=10 * MSS, inflight=MSS, prior_in_flight=1000 * MSS)
    assert cc.state_name == PROBE_BW_DOWN
    return p


def settle(p: Path, n: int = 60, prior_in_flight: int = 100 * MSS) -> None:
    """ACKs of 10 segments at exactly bw (one every 2.5 ms), until cwnd reaches its target. (The
    helpers above send a few ACKs at one instant, which the aggregation estimate of §5.5.9 counts:
    extra_acked is 30 segments for the next 10 rounds.)"""
    for _ in range(n):
        p.ack(acked=10 * MSS, dt=10 * MSS / BW, prior_in_flight=prior_in_flight)


def to_cruise(cc: BBRv3) -> Path:
    p = to_probe_bw_down(cc)
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)  # flight below the BDP: queue drained
    assert cc.state_name == PROBE_BW_CRUISE
    return p


def to_probe_up(cc: BBRv3) -> Path:
    """CRUISE, then past the probe wait: REFILL; one round later: UP."""
    p = to_cruise(cc)
    p.now = cc.cycle_stamp + cc.bw_probe_wait + 0.001
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.state_name == PROBE_BW_REFILL
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.state_name == PROBE_BW_UP and cc.is_bw_probe_sample
    return p


# ---------------------------------------------------------------------------- Startup, Drain


def test_initial_state_and_pacing_rate():
    cc = BBRv3(MSS)
    # §5.6.2 InitPacingRate: 2.77 x InitialCwnd / 1 ms without an RTT sample (no margin).
    assert cc.pacing_rate == pytest.approx(2.77 * 10 * MSS / 0.001)
    assert cc.state_name == STARTUP and (cc.pacing_gain, cc.cwnd_gain_now) == (2.77, 2.0)
    assert cc.inflight_hi == cc.inflight_lo == cc.bw_lo == float("inf")
    # §5.6.3: 1 ms at that rate is 27.7 kB.
    assert cc.send_quantum == 27700
    # The first ACK brings srtt = 100 ms: the nominal rate is redone from it.
    Path(cc).ack(bw=None, rtt=0.1)
    assert cc.pacing_rate == pytest.approx(2.77 * 10 * MSS / 0.1)
    assert cc.send_quantum == 2 * MSS  # 277 B per ms, at least 2 SMSS


def test_startup_exits_on_plateau_then_drain_then_probe_bw_down():
    cc = BBRv3(MSS)
    p = Path(cc)
    for bw in (1e6, 2e6, 4e6):  # doubling every round: a new baseline each time
        p.round(bw, inflight=1000 * MSS)
        assert cc.full_bw == bw and cc.full_bw_count == 0 and cc.state_name == STARTUP
    assert cc.pacing_rate == pytest.approx(2.77 * 4e6 * MARGIN)
    p.round(4e6, inflight=1000 * MSS)
    p.round(4.9e6, inflight=1000 * MSS)  # +22.5%: not enough growth
    assert cc.full_bw_count == 2 and cc.state_name == STARTUP
    p.new_round()
    p.ack(bw=4e6, inflight=1000 * MSS)  # third round without 25% growth
    assert cc.full_bw_reached and cc.full_bw_now and cc.state_name == DRAIN
    assert cc.pacing_gain == 0.5 and cc.cwnd_gain_now == 2.0  # §5.3.2 EnterDrain
    assert cc.pacing_rate == pytest.approx(0.5 * 4.9e6 * MARGIN)
    # §5.3.2 CheckDrainDone: Inflight(1.0) = max(bw x min_rtt, offload budget, MinPipeCwnd)
    # = 4.9 MB/s x 50 ms = 245 segments.
    p.ack(bw=4e6, inflight=246 * MSS)
    assert cc.state_name == DRAIN
    p.ack(bw=4e6, inflight=245 * MSS, prior_in_flight=1000 * MSS)
    assert cc.state_name == PROBE_BW_DOWN
    assert (cc.pacing_gain, cc.cwnd_gain_now) == (0.9, 2.0)
    assert 2.0 <= cc.bw_probe_wait < 3.0 and cc.cycle_stamp == p.now


def test_drain_ends_after_three_rounds_even_above_the_bdp():
    cc = BBRv3(MSS)
    p = Path(cc)
    for _ in range(4):
        p.round(BW, inflight=1000 * MSS)
    assert cc.state_name == DRAIN and cc.drain_start_round == 4
    for _ in range(3):  # rounds 5, 6, 7: not more than drain_start_round + 3
        p.round(BW, inflight=1000 * MSS, prior_in_flight=1000 * MSS)
        assert cc.state_name == DRAIN
    p.round(BW, inflight=1000 * MSS, prior_in_flight=1000 * MSS)  # round 8
    assert cc.state_name == PROBE_BW_DOWN


def _startup_with_loss_round(cc: BBRv3, loss_events: int, recovery: bool = True, flight: int = 100) -> Path:
    """Startup at a growing rate (no plateau), then a round with `loss_events` lossy ACKs of a
    segment each; the flight when the round's packets left was `flight` segments."""
    p = Path(cc)
    for bw in (1e6, 2e6, 4e6):
        p.round(bw, inflight=1000 * MSS)
    if recovery:
        cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=300 * MSS, mss=MSS,
                                               cause="dupack"))
    p.new_round()
    # First loss: NoteLoss (§5.5.10.2) makes the loss round end a round trip from here.
    kw = dict(bw=8e6, sacked=MSS, in_recovery=recovery, inflight=1000 * MSS, prior_in_flight=flight * MSS)
    p.ack(losses=MSS, **kw)
    first = p.delivered
    for _ in range(loss_events - 1):
        p.ack(losses=MSS, **kw)
    # The packets sent after the first loss come back: end of the loss round.
    p.ack(prior_delivered=first, **kw)
    return p


def test_startup_exits_on_high_loss_in_a_recovery_round():
    cc = BBRv3(MSS)
    _startup_with_loss_round(cc, loss_events=6)
    # §5.3.1.3: a round in fast recovery, 6 loss events, 5 segments lost since the sampled
    # packet left with 100 in flight (5% > 2%): the pipe is full.
    assert cc.full_bw_reached and not cc.full_bw_now  # no bandwidth plateau was seen
    assert cc.state_name == DRAIN and cc.undo_state == STARTUP
    # inflight_hi = max(BBR.bdp, inflight_latest) = 8 MB/s x 50 ms = 400 segments.
    assert cc.inflight_hi == pytest.approx(400 * MSS)


def test_startup_stays_with_too_few_loss_events_or_outside_recovery():
    cc = BBRv3(MSS)
    _startup_with_loss_round(cc, loss_events=5)
    assert cc.state_name == STARTUP and not cc.full_bw_reached
    cc = BBRv3(MSS)
    _startup_with_loss_round(cc, loss_events=8, recovery=False)
    assert cc.state_name == STARTUP and cc.inflight_hi == float("inf")
    cc = BBRv3.create(MSS, 0.0, {"full_loss_cnt": 0})  # the loss exit disabled
    _startup_with_loss_round(cc, loss_events=8)
    assert cc.state_name == STARTUP
    cc = BBRv3(MSS)
    _startup_with_loss_round(cc, loss_events=8, flight=400)  # 7 of 400 lost: 1.75% < 2%
    assert cc.state_name == STARTUP and cc.rs.lost == 7 * MSS and cc.rs.tx_in_flight == 400 * MSS


def test_undo_of_the_startup_loss_exit_returns_to_startup():
    cc = BBRv3(MSS)
    p = _startup_with_loss_round(cc, loss_events=6)
    assert cc.state_name == DRAIN
    cc.on_undo(UndoEvent(now=p.now, prior_cwnd=cc.cwnd, prior_ssthresh=cc.ssthresh, cause="dsack"))
    # §5.5.11.2: back to Startup, the pipe no longer known full, inflight_hi as before the episode.
    assert cc.state_name == STARTUP and not cc.full_bw_reached
    assert cc.inflight_hi == float("inf") and cc.undo_state is None
    assert cc.pacing_gain == 2.77


# ---------------------------------------------------------------------------- ProbeBW cycle


def test_probe_bw_cycle_visits_down_cruise_refill_up_in_order():
    cc = BBRv3(MSS)
    p = to_probe_bw_down(cc)
    states = [cc.state_name]
    start = cc.cycle_stamp
    wait = cc.bw_probe_wait
    assert 2.0 <= wait < 3.0

    def ack(**kw):
        p.ack(acked=10 * MSS, **kw)
        if cc.state_name != states[-1]:
            states.append(cc.state_name)

    ack(prior_in_flight=300 * MSS)  # a queue still: DOWN
    ack(prior_in_flight=200 * MSS)  # flight down to the BDP (§5.3.3.9 IsTimeToCruise)
    assert cc.state_name == PROBE_BW_CRUISE and cc.pacing_gain == 1.0
    # Cruise until the probe wait is over (few rounds: T_reno = 63 rounds is not reached).
    while p.now < start + wait - 0.1:
        p.round(acks=2, acked=10 * MSS, prior_in_flight=200 * MSS)
        if cc.state_name != states[-1]:
            states.append(cc.state_name)
    assert cc.state_name == PROBE_BW_CRUISE
    p.now = start + wait + 0.001
    ack(prior_in_flight=200 * MSS)
    assert cc.state_name == PROBE_BW_REFILL
    assert cc.bw_lo == cc.inflight_lo == float("inf")  # §5.3.3.3: short-term model forgotten
    ack(prior_in_flight=200 * MSS)  # same round: REFILL holds
    assert cc.state_name == PROBE_BW_REFILL
    p.new_round()
    ack(prior_in_flight=200 * MSS)  # one round of REFILL: UP
    assert cc.state_name == PROBE_BW_UP and (cc.pacing_gain, cc.cwnd_gain_now) == (1.25, 2.25)
    # No 25% growth for three rounds, inflight_hi not limiting: the pipe is full, go DOWN.
    for _ in range(3):
        assert cc.state_name == PROBE_BW_UP
        p.round(acks=2, acked=10 * MSS, prior_in_flight=250 * MSS)
        if cc.state_name != states[-1]:
            states.append(cc.state_name)
    assert states == [PROBE_BW_DOWN, PROBE_BW_CRUISE, PROBE_BW_REFILL, PROBE_BW_UP, PROBE_BW_DOWN]
    assert 2.0 <= cc.bw_probe_wait < 3.0


def test_probe_wait_is_random_in_2_to_3_seconds_and_reproducible():
    waits = []
    for seed in range(30):
        a, b = BBRv3.create(MSS, 0.0, {"seed": seed}), BBRv3.create(MSS, 0.0, {"seed": seed})
        to_probe_bw_down(a)
        to_probe_bw_down(b)
        assert a.bw_probe_wait == b.bw_probe_wait
        assert a.rounds_since_probe_up in (0, 1)
        waits.append(a.bw_probe_wait)
    assert all(2.0 <= w < 3.0 for w in waits)
    assert max(waits) - min(waits) > 0.5  # spread over the second, not one value


def test_down_goes_straight_to_refill_after_the_probe_wait():
    cc = BBRv3(MSS)
    p = to_probe_bw_down(cc)
    p.now = cc.cycle_stamp + cc.bw_probe_wait - 0.01
    p.ack(prior_in_flight=300 * MSS)  # never drained below the BDP ...
    assert cc.state_name == PROBE_BW_DOWN
    p.now += 0.02
    p.ack(prior_in_flight=300 * MSS)  # ... but the wait is over (draft A.9)
    assert cc.state_name == PROBE_BW_REFILL


def test_reno_coexistence_bound_probes_after_target_inflight_rounds():
    # A small BDP: 0.4 MB/s x 50 ms = 20 segments, so T_reno = min(20, 63) = 20 rounds.
    cc = BBRv3(MSS)
    p = Path(cc)
    for _ in range(4):
        p.round(4e5, inflight=2000 * MSS)
    p.ack(bw=4e5, inflight=MSS, prior_in_flight=MSS)
    assert cc.state_name == PROBE_BW_CRUISE
    start = cc.rounds_since_probe_up  # 0 or 1 (PickProbeWait)
    rounds = 0
    while cc.state_name == PROBE_BW_CRUISE:
        p.round(4e5, acks=2, rtt=0.05, prior_in_flight=10 * MSS)
        rounds += 1
    assert cc.state_name == PROBE_BW_REFILL
    assert start + rounds == 20 and p.now < 2.0  # long before the 2 s wall-clock bound


# ---------------------------------------------------------------------------- loss while probing


def _lossy_probe(cc: BBRv3) -> Path:
    p = to_probe_up(cc)
    settle(p)  # cwnd up to its UP target
    # §5.6.4.2: 2.25 x 200 segments + extra_acked (30) + 2 (QuantizationBudget in UP).
    assert cc.extra_acked == 30 * MSS and cc.cwnd == 482 * MSS
    p.new_round()
    # 10 segments lost of the 300 in flight when the sampled packet left: 3.3% > 2%.
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS, losses=10 * MSS, sacked=10 * MSS)
    return p


def test_lossy_probe_sets_inflight_hi_and_bounds_cwnd():
    cc = BBRv3(MSS)
    p = _lossy_probe(cc)
    # §5.5.10.2 InflightAtLoss: inflight_prev = 290 segs, lost_prev = 0, lost_prefix =
    # 0.02 x 290 / 0.98 = 5.918 segs: the loss rate crossed 2% at 295.918 segments in flight
    # (above Beta x TargetInflight = 0.7 x 200).
    assert cc.inflight_hi == 295918
    assert cc.prev_probe_too_high and not cc.is_bw_probe_sample and cc.undo_state == PROBE_BW_UP
    assert cc.state_name == PROBE_BW_DOWN  # HandleInflightTooHigh ends UP
    assert cc.cwnd == 295918  # §5.6.4.7: DOWN caps cwnd at inflight_hi
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.state_name == PROBE_BW_CRUISE
    # CRUISE leaves 15% headroom: 295918 - 0.15 x 295918 = 251530.
    assert cc.cwnd == 251530
    for _ in range(20):
        p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
        assert cc.cwnd <= 0.85 * cc.inflight_hi + 1


def test_tx_in_flight_and_lost_are_those_of_the_sampled_packets_send_time():
    # RS.tx_in_flight and RS.lost (§2.3), rebuilt from the ACK stream: every ACK of this round
    # acknowledges a packet sent when the round began, just before its first ACK, with 300
    # segments in flight; later ACKs find the flight lower, but the sample's is still 300.
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    p.new_round()
    p.ack(prior_in_flight=300 * MSS)
    assert (cc.rs.tx_in_flight, cc.rs.lost) == (300 * MSS, 0)
    p.ack(prior_in_flight=50 * MSS, losses=3 * MSS)
    assert (cc.rs.tx_in_flight, cc.rs.lost) == (300 * MSS, 3 * MSS)
    p.ack(bw=None, acked=0, prior_in_flight=40 * MSS, losses=2 * MSS)  # marks losses, delivers nothing
    p.ack(prior_in_flight=40 * MSS)
    assert (cc.rs.tx_in_flight, cc.rs.lost) == (300 * MSS, 5 * MSS)  # all lost since that send
    p.new_round()  # packets sent after the last ACK: 40 segments out, nothing lost since
    p.ack(prior_in_flight=45 * MSS)
    assert (cc.rs.tx_in_flight, cc.rs.lost) == (45 * MSS, 0)


def test_low_loss_while_probing_leaves_inflight_hi_unset():
    cc = BBRv3(MSS)
    p = to_probe_up(cc)
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS, losses=5 * MSS, sacked=10 * MSS)  # 1.7%
    assert cc.inflight_hi == float("inf") and cc.state_name == PROBE_BW_UP and cc.is_bw_probe_sample


def test_precautionary_probe_stops_at_inflight_hi_then_reprobes_and_grows_it_1_2_4():
    cc = BBRv3.create(MSS, 0.0, {"probe_rtt_interval": 60.0})  # two probe waits: keep ProbeRTT away
    p = _lossy_probe(cc)
    hi = cc.inflight_hi
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)  # CRUISE
    p.now = cc.cycle_stamp + cc.bw_probe_wait + 0.001
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.state_name == PROBE_BW_UP and cc.prev_probe_too_high
    # §5.3.3.6: after a probe that went too high, UP ends as soon as the flight reaches inflight_hi.
    p.ack(acked=10 * MSS, prior_in_flight=int(hi) - 3 * MSS)  # + the quantum about to leave
    assert cc.state_name == PROBE_BW_DOWN and cc.prev_probe_precautionary
    assert not cc.prev_probe_too_high
    # A round of feedback without excess loss: the max_bw filter moves on a cycle (§5.5.6), and
    # the flow goes straight back to REFILL, skipping CRUISE ...
    cycles = cc.cycle_count
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS)
    assert cc.state_name == PROBE_BW_REFILL and cc.cycle_count == cycles + 1
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS)
    assert cc.state_name == PROBE_BW_UP and not cc.prev_probe_too_high
    # ... and this time UP holds the flight at inflight_hi and raises it, cwnd-limited, by 1, 2,
    # 4 segments in successive rounds (§5.3.3.9 ProbeInflightLongtermUpward; draft A.15).
    # Each round acknowledges 300 segments, about a cwnd (RaiseInflightLongtermSlope: the first
    # round's step needs a whole cwnd ACKed, the next half of one, ...); UP began on a round-start
    # ACK, so its first round goes on without a new_round().
    growth = []
    for i in range(3):
        before = cc.inflight_hi
        if i:
            p.new_round()
        for _ in range(30):
            p.ack(acked=10 * MSS, prior_in_flight=cc.cwnd)  # the flight fills cwnd
        growth.append((cc.inflight_hi - before) / MSS)
        assert cc.state_name == PROBE_BW_UP and cc.cwnd == int(cc.inflight_hi)
    assert growth == [1, 2, 4]


def test_loss_in_cruise_cuts_the_short_term_model_once_per_round():
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    # The delivery rate halves (and a loss round starts).
    p.round(2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    p.new_round()
    p.ack(bw=2e6, acked=10 * MSS, prior_in_flight=150 * MSS, losses=MSS)  # a loss: NoteLoss
    cwnd = cc.cwnd
    assert cc.bw_lo == float("inf")  # the response waits for the end of the loss round
    p.new_round()
    p.ack(bw=2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    # §5.5.10.3 InitLowerBounds + LossLowerBounds: bw_lo = max(bw_latest, 0.7 x max_bw), where
    # bw_latest, the max over the loss round, is 2e6: the cut is Beta's.
    assert cc.bw_lo == pytest.approx(2.8e6) and cc.bw == pytest.approx(2.8e6)
    # inflight_lo = max(inflight_latest (10 segs), 0.7 x cwnd).
    assert cc.inflight_lo == pytest.approx(0.7 * cwnd)
    assert cc.cwnd <= cc.inflight_lo
    assert cc.pacing_rate == pytest.approx(2.8e6 * MARGIN)
    p.new_round()
    p.ack(bw=2e6, acked=10 * MSS, prior_in_flight=150 * MSS, losses=MSS)
    p.new_round()
    p.ack(bw=2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.bw_lo == pytest.approx(2e6)  # max(2e6, 0.7 x 2.8e6 = 1.96e6)
    # A round without loss changes nothing; max_bw (the long-term model) never moved.
    p.round(2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.bw_lo == pytest.approx(2e6) and cc.max_bw == BW


# ---------------------------------------------------------------------------- ProbeRTT, min_rtt


def test_probe_rtt_entered_after_five_seconds_without_a_lower_rtt():
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    stamp = cc.probe_rtt_min_stamp
    prior = cc.cwnd
    p.now = stamp + 5.0
    p.ack(rtt=0.06, acked=10 * MSS, inflight=150 * MSS)  # exactly 5 s: not expired
    assert cc.state_name != PROBE_RTT
    p.now += 0.001
    p.ack(rtt=0.06, acked=10 * MSS, inflight=150 * MSS)
    assert cc.state_name == PROBE_RTT
    assert (cc.pacing_gain, cc.cwnd_gain_now) == (1.0, 0.5)
    assert cc.probe_rtt_min_delay == 0.06 and cc.min_rtt == RTT  # the 10 s filter keeps 50 ms
    assert cc.prior_cwnd >= prior
    # §5.6.4.5 ProbeRTTCwnd = max(0.5 x BDP, 4 segments) = 100 segments.
    assert cc.cwnd == 100 * MSS
    p.ack(inflight=101 * MSS)  # not yet down to it: the 200 ms have not begun
    assert cc.probe_rtt_done_stamp == 0
    p.ack(inflight=100 * MSS)
    assert cc.probe_rtt_done_stamp == pytest.approx(p.now + 0.2)
    p.now = cc.probe_rtt_done_stamp + 0.01
    p.ack(inflight=100 * MSS)  # 200 ms, but no round at that flight yet
    assert cc.state_name == PROBE_RTT
    p.new_round()
    p.ack(inflight=100 * MSS, dt=0.001)
    # HandleProbeRTT's MarkConnectionAppLimited: a packet sent during ProbeRTT gives an
    # app-limited sample (our stand-in, as the engine's flag is not ours to set).
    assert cc.rs.is_app_limited
    # §5.3.4.4: back to ProbeBW (via DOWN, straight to CRUISE), cwnd restored, next in 5 s.
    assert cc.state_name == PROBE_BW_CRUISE
    assert cc.cwnd >= cc.prior_cwnd and cc.probe_rtt_min_stamp == p.now
    assert cc.bw_lo == cc.inflight_lo == float("inf")


def test_min_rtt_expires_after_ten_seconds():
    cc = BBRv3.create(MSS, 0.0, {"probe_rtt_duration": 0.0})  # no ProbeRTT in the way
    p = to_cruise(cc)
    stamp = cc.min_rtt_stamp
    p.now = stamp + 9.0
    p.ack(rtt=0.07)
    assert cc.min_rtt == RTT and cc.probe_rtt_min_delay == 0.07  # 5 s filter expired: refreshed
    p.now = stamp + 10.001
    p.ack(rtt=0.08)
    assert cc.min_rtt == 0.07  # the 10 s window takes the 5 s filter's value


def test_idle_restart_paces_at_bw_and_skips_probe_rtt():
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    p.now = cc.probe_rtt_min_stamp + 6.0
    cc.on_idle_restart(p.now, 6.0, 0.2)
    assert cc.idle_restart and cc.pacing_rate == pytest.approx(BW * MARGIN)  # §5.4.1
    p.ack(rtt=0.06)
    assert cc.state_name != PROBE_RTT and not cc.idle_restart  # §5.3.4.2: idling drained the queue


# ---------------------------------------------------------------------------- recovery, undo


def test_rto_saves_cwnd_and_restores_it_when_recovery_ends():
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    settle(p)
    steady = cc.cwnd
    assert steady == 400 * MSS + cc.extra_acked  # 2 x BDP + extra_acked
    cc.on_rto(p.now, 300 * MSS)
    assert cc.cwnd == MSS and cc.prior_cwnd == steady  # §5.6.4.4 OnEnterRTO
    assert cc.inflight_lo == steady  # Linux: not the 1-segment window
    cc.on_rto(p.now + 0.4, 300 * MSS)  # a re-expiry saves nothing new
    assert cc.prior_cwnd == steady
    p.ack(inflight=0, in_recovery=True)
    assert cc.cwnd == 4 * MSS  # MinPipeCwnd
    p.ack(inflight=0, in_recovery=True)
    assert cc.cwnd == 5 * MSS  # grows by what is delivered
    p.ack(inflight=0, in_recovery=False)  # recovery over: RestoreCwnd, then this ACK's SetCwnd
    assert steady <= cc.cwnd <= steady + MSS


def test_fast_recovery_keeps_cwnd_and_undo_of_a_lossy_probe_refills():
    cc = BBRv3(MSS)
    p = to_probe_up(cc)
    settle(p)
    before = cc.cwnd
    cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=300 * MSS, mss=MSS, cause="dupack"))
    assert cc.cwnd == before and cc.prior_cwnd == before  # no reduction on entry
    assert cc.undo_inflight_hi == float("inf")
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS, losses=10 * MSS, sacked=10 * MSS, in_recovery=True)
    assert cc.state_name == PROBE_BW_DOWN and cc.inflight_hi == 295918 and cc.cwnd == 295918
    cc.on_undo(UndoEvent(now=p.now, prior_cwnd=before, prior_ssthresh=cc.ssthresh, cause="dsack"))
    # §5.5.11.2: the model as before the episode; the interrupted probe starts again at REFILL.
    assert cc.inflight_hi == float("inf") and cc.state_name == PROBE_BW_REFILL
    assert cc.cwnd == before and not cc.is_loss_in_round


def test_tlp_recovery_counts_as_a_loss_round():
    cc = BBRv3(MSS)
    p = to_cruise(cc)
    p.round(2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    cwnd = cc.cwnd
    cc.on_congestion_event(CongestionEvent(now=p.now, bytes_in_flight=10 * MSS, mss=MSS, cause="tlp"))
    cc.on_recovery_exit(p.now, 10 * MSS)
    assert cc.is_loss_in_round and cc.cwnd == cwnd
    assert cc.bw_lo == float("inf")
    p.new_round()
    p.ack(bw=2e6, acked=10 * MSS, prior_in_flight=150 * MSS)
    assert cc.bw_lo == pytest.approx(0.7 * BW)  # the end of the loss round cut the short-term model


# ---------------------------------------------------------------------------- ECN (simplified)


def test_ece_in_cruise_cuts_inflight_lo_when_the_rtt_is_short():
    for rtt, cut in ((0.004, True), (0.05, False)):
        cc = BBRv3(MSS)
        p = Path(cc)
        for _ in range(4):
            p.round(BW, rtt=rtt, acked=10 * MSS, inflight=2000 * MSS)
        p.ack(rtt=rtt, acked=10 * MSS, inflight=MSS, prior_in_flight=10 * MSS)
        assert cc.state_name == PROBE_BW_CRUISE
        for _ in range(3):  # marks every round
            p.round(BW, rtt=rtt, acked=10 * MSS, prior_in_flight=10 * MSS, ece=True)
        assert cc.ecn_eligible == cut
        if cut:
            # Linux bbr_ecn_lower_bounds: inflight_lo x (1 - ecn_alpha / 3) per marked round.
            assert 0.0 < cc.ecn_alpha <= 1.0
            assert cc.inflight_lo < 0.7 * cc.max_inflight and cc.cwnd <= cc.inflight_lo
        else:
            assert cc.inflight_lo == float("inf")


# ---------------------------------------------------------------------------- params, log, quantum


def test_params_via_create_and_load():
    defaults = {
        "startup_pacing_gain": 2.77, "startup_cwnd_gain": 2.0, "drain_pacing_gain": 0.5,
        "cwnd_gain": 2.0, "probe_down_pacing_gain": 0.9, "probe_up_pacing_gain": 1.25,
        "probe_up_cwnd_gain": 2.25, "pacing_margin": 0.01, "loss_thresh": 0.02, "beta": 0.7,
        "headroom": 0.15, "full_bw_threshold": 1.25, "full_bw_rounds": 3, "full_loss_cnt": 6,
        "max_bw_filter_len": 2, "extra_acked_filter_len": 10, "min_rtt_filter_len": 10.0,
        "probe_rtt_interval": 5.0, "probe_rtt_duration": 0.2, "probe_rtt_cwnd_gain": 0.5,
        "bw_probe_wait_base": 2.0, "bw_probe_wait_rand": 1.0, "bw_probe_max_rounds": 63,
        "ecn_thresh": 0.5,
    }
    for name, value in defaults.items():
        assert BBRv3.params[name].default == value, name
    cc = BBRv3.create(MSS, 0.0, {"beta": "0.5", "startup_pacing_gain": "2.0"})
    assert cc.beta == 0.5 and BBRv3.beta == 0.7
    assert cc.pacing_rate == pytest.approx(2.0 * 10 * MSS / 0.001)
    cc = load("usertcp.cc.bbr3:BBRv3", MSS, 0.0,
              params={"bw_probe_wait_base": 4.0, "bw_probe_wait_rand": 0.0})
    assert isinstance(cc, BBRv3) and cc.name == "bbr3"
    to_probe_bw_down(cc)
    assert cc.bw_probe_wait == 4.0
    # beta takes effect: a lossy cruise round cuts bw_lo to 0.5 x max_bw.
    cc = BBRv3.create(MSS, 0.0, {"beta": 0.5})
    p = to_cruise(cc)
    p.round(1e6, prior_in_flight=150 * MSS)
    p.new_round()
    p.ack(bw=1e6, prior_in_flight=150 * MSS, losses=MSS)
    p.new_round()
    p.ack(bw=1e6, prior_in_flight=150 * MSS)
    assert cc.bw_lo == pytest.approx(2e6)
    with pytest.raises(ValueError):
        BBRv3.create(MSS, 0.0, {"loss_thresh": "2"})
    with pytest.raises(ValueError):
        BBRv3.create(MSS, 0.0, {"no_such_knob": "1"})


def test_state_log_reports_the_model_as_plain_json():
    cc = BBRv3(MSS)
    p = to_probe_up(cc)
    st = cc.state()
    for key in ("mode", "state", "substate", "max_bw", "bw_lo", "inflight_hi", "inflight_lo", "min_rtt",
                "pacing_gain", "cwnd_gain", "round_count", "full_bw_reached", "ack_phase", "tx_in_flight"):
        assert key in st, key
    assert (st["mode"], st["state"], st["substate"]) == ("PROBE_BW", PROBE_BW_UP, "UP")
    assert st["inflight_hi"] is None and st["bw_lo"] is None  # infinite: None, not Infinity
    assert st["max_bw"] == BW and st["min_rtt"] == RTT and st["pacing_gain"] == 1.25
    json.dumps(st, allow_nan=False)
    _lossy_probe(BBRv3(MSS))
    p.new_round()
    p.ack(acked=10 * MSS, prior_in_flight=300 * MSS, losses=10 * MSS, sacked=10 * MSS)
    st = cc.state()
    assert st["inflight_hi"] == 295918 and st["tx_in_flight"] == 300 * MSS and st["rs_lost"] == 10 * MSS


def test_send_quantum_is_one_ms_at_the_pacing_rate_within_bounds():
    cc = BBRv3(1448)
    p = Path(cc)
    p.round(2e8)  # 2.77 x 200 MB/s: far above the 64 KB cap
    assert cc.send_quantum == 65536
    slow = BBRv3(MSS)
    Path(slow).round(4e5)  # 1.1 MB/s: 1.1 kB per ms, below 2 SMSS
    assert slow.send_quantum == 2 * MSS


# ---------------------------------------------------------------------------- simulated paths

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
RATE, SIM_RTT = 50e6, 0.040
SIM_BDP = int(RATE / 8 * SIM_RTT)  # 250,000 bytes
PAYLOAD_CAPACITY = RATE * 1448 / 1514  # what the link can carry of payload (see test_cc_bbr)


def _run(cc, size, *, loss=0.0, queue_bdps=1.0):
    log: list[dict] = []
    src = PatternSource(size, seed=5)
    conn = Connection(LOCAL, REMOTE, cc, src, time_wait=0.5, cc_log=log.append)
    fwd = Link(delay=SIM_RTT / 2, rate=RATE, queue_bytes=int(SIM_BDP * queue_bdps), loss=loss, seed=11,
               name="fwd")
    rev = Link(delay=SIM_RTT / 2, name="rev")
    rcv = Receiver(port=REMOTE[1], iss=777)
    res = simulate(conn, rcv, fwd, rev, until=300.0)
    assert res.reason == "completed", (res.reason, conn.stats())
    assert conn.error is None and conn.cc_faults == 0 and type(conn.cc) is type(cc)
    assert rcv.bytes_received == size and rcv.sha256() == src.sha256()
    done = min(t for t, ev in res.timed_events if ev.kind == "delivered" and ev.value >= size)
    goodput = size * 8 / (done - conn.established_at)
    return conn, fwd, goodput, log


def _p95(log, after=1.0):
    rtts = sorted(r["rtt"] for r in log if r["rtt"] and r["t"] > after)
    return rtts[int(0.95 * len(rtts))], statistics.median(rtts)


@pytest.fixture(scope="module")
def clean_run():
    return _run(BBRv3(1448), 40_000_000)


def test_sim_bbr3_fills_the_pipe_and_cycles_through_every_state(clean_run):
    conn, fwd, goodput, log = clean_run
    # Measured: 94.8% of the payload capacity.
    assert goodput >= 0.85 * PAYLOAD_CAPACITY, goodput / PAYLOAD_CAPACITY
    seen = [log[0]["state"]]
    for r in log:
        if r["state"] != seen[-1]:
            seen.append(r["state"])
    assert seen[:2] == [STARTUP, DRAIN]
    assert set(seen) == {STARTUP, DRAIN, PROBE_RTT} | PROBE_BW_STATES
    cycle = [s for s in seen[2:] if s in PROBE_BW_STATES]
    i = cycle.index(PROBE_BW_REFILL)  # a full probe: REFILL, UP, then DOWN and CRUISE
    assert cycle[i:i + 4] == [PROBE_BW_REFILL, PROBE_BW_UP, PROBE_BW_DOWN, PROBE_BW_CRUISE]
    last = log[-1]
    assert last["max_bw"] == pytest.approx(PAYLOAD_CAPACITY / 8, rel=0.02)
    assert SIM_RTT <= last["min_rtt"] <= SIM_RTT + 1514 * 8 / RATE + 1e-6


def test_sim_bbr3_keeps_the_queue_low_compared_with_cubic(clean_run):
    _, _, _, log = clean_run
    p95, median = _p95(log)
    _, _, cubic_goodput, cubic_log = _run(Cubic(1448), 40_000_000)
    cubic_p95, cubic_median = _p95(cubic_log)
    # Measured: BBRv3 p95 55.6 ms, median 41.0 ms; CUBIC p95 79.9 ms, median 67.3 ms (it fills
    # the one-BDP buffer). BBRv3's tail is its ProbeBW_UP phases, once every 2-3 s.
    assert median < 1.05 * SIM_RTT + 0.001
    assert p95 < 0.8 * cubic_p95, (p95, cubic_p95)
    assert median < 0.7 * cubic_median


def test_sim_probe_rtt_five_seconds_after_the_last_min_rtt_sample(clean_run):
    _, _, _, log = clean_run
    entered = [r["t"] for a, r in zip(log, log[1:]) if r["state"] == PROBE_RTT and a["state"] != PROBE_RTT]
    assert entered and 5.0 < entered[0] < 5.3  # min RTT seen at ~0.08 s, never beaten
    during = [r for r in log if r["state"] == PROBE_RTT]
    assert max(r["cwnd"] for r in during) <= 0.5 * PAYLOAD_CAPACITY / 8 * 0.0405 + 1448
    after = [r for r in log if r["t"] > during[-1]["t"]]
    assert after[0]["state"] == PROBE_BW_CRUISE


def test_sim_bbr3_random_loss():
    conn, _, goodput, log = _run(BBRv3(1448), 20_000_000, loss=0.01)
    assert conn.fast_retransmits > 10
    # Measured: 86.0% of the link (82-86% over other loss seeds). Unlike v1, v3 answers each
    # lossy round outside probing with bw_lo = max(bw_latest, 0.7 bw_lo), so its rate sinks
    # between probes; the bar is set below the measurement, not at v1's level.
    assert goodput >= 0.80 * PAYLOAD_CAPACITY, goodput / PAYLOAD_CAPACITY
    cruise_bw = [r["bw"] for r in log if r["state"] == PROBE_BW_CRUISE]
    assert min(cruise_bw) < 0.9 * log[-1]["max_bw"]  # it did react to the loss ...
    # ... while the long-term model kept the path's rate.
    assert max(r["max_bw"] for r in log) == pytest.approx(PAYLOAD_CAPACITY / 8, rel=0.02)


def test_sim_shallow_buffer_bbr3_loses_less_than_v1():
    # A buffer of a tenth of a BDP (25 kB). Measured: v3 retransmits 2.2% of what it sends
    # (nearly all in Startup), v1 5.9% (its 1.25 probe every 8 rounds, and cwnd_gain 2, overflow
    # the buffer all along); goodput 88.8% vs 91.9%.
    v3, v3_fwd, v3_goodput, v3_log = _run(BBRv3(1448), 20_000_000, queue_bdps=0.1)
    v1, v1_fwd, _, _ = _run(Bbr(1448), 20_000_000, queue_bdps=0.1)
    v3_rate = v3.bytes_retrans / v3.bytes_sent
    v1_rate = v1.bytes_retrans / v1.bytes_sent
    assert v3_rate < 0.5 * v1_rate, (v3_rate, v1_rate)
    assert v3_fwd.dropped_queue < 0.5 * v1_fwd.dropped_queue
    assert v3_goodput >= 0.8 * PAYLOAD_CAPACITY
    # After Startup's overshoot, steady-state losses are rare: a few segments in seconds.
    late = [r for r in v3_log if r["t"] > 1.5]
    assert late[-1]["lost"] - late[0]["lost"] < 0.002 * (late[-1]["delivered"] - late[0]["delivered"])
