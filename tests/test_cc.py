"""Congestion control: the API's defaults, NewReno (RFC 5681), CUBIC (RFC 9438), the registry.

The algorithms are driven with synthetic ACKs in virtual time: a cwnd-limited flow over a path
with a fixed RTT, each round sending one cwnd and receiving its ACKs spread over the next RTT.
Expected values come from the RFC formulas, computed here independently of the code under test.
"""

from __future__ import annotations

import math
import textwrap
from importlib import metadata

import pytest

from usertcp.cc import (
    TCP_INFINITE_SSTHRESH,
    AckSample,
    CCLoadError,
    CongestionControl,
    CongestionEvent,
    UndoEvent,
    UnknownCC,
    available,
    load,
    registry,
)
from usertcp.cc.cubic import Cubic
from usertcp.cc.newreno import NewReno

MSS = 1448


# ---------------------------------------------------------------------- a synthetic path


def ack(now: float, acked: int = MSS, rtt: float | None = 0.1, *, app_limited: bool = False,
        srtt: float | None = None, min_rtt: float | None = None, mss: int = MSS) -> AckSample:
    return AckSample(
        now=now,
        acked_bytes=acked,
        rtt=rtt,
        srtt=rtt if srtt is None else srtt,
        min_rtt=rtt if min_rtt is None else min_rtt,
        bytes_in_flight=0,
        mss=mss,
        app_limited=app_limited,
    )


def run_rounds(cc: CongestionControl, t: float, rounds: int, rtt: float, *, segs_per_ack: int = 1,
               app_limited: bool = False, trace: list | None = None) -> float:
    """`rounds` RTTs of a cwnd-limited flow: each round, cwnd/MSS segments are ACKed evenly
    over the RTT, `segs_per_ack` per ACK. Returns the time at the end."""
    mss = cc.mss
    for _ in range(rounds):
        n = max(1, cc.cwnd // mss)
        acks = max(1, n // segs_per_ack)
        for i in range(acks):
            now = t + rtt * (i + 1) / acks
            cc.on_ack(ack(now, segs_per_ack * mss, rtt, app_limited=app_limited, mss=mss))
        t += rtt
        if trace is not None:
            trace.append((t, cc.cwnd / mss))
    return t


def run_for(cc: CongestionControl, t: float, seconds: float, rtt: float, **kw) -> float:
    return run_rounds(cc, t, round(seconds / rtt), rtt, **kw)


def congestion(cc: CongestionControl, flight: int, now: float = 0.0) -> None:
    """A fast-retransmit episode as the engine runs it: event, recovery, full ACK."""
    cc.on_congestion_event(CongestionEvent(now=now, bytes_in_flight=flight, mss=cc.mss, cause="dupack"))
    cc.on_recovery_exit(now, flight)


# ---------------------------------------------------------------------- the API's base class


def test_initial_window_and_ssthresh():
    for cls in (NewReno, Cubic):
        cc = cls(MSS, 0.0)
        assert cc.cwnd == 10 * MSS  # RFC 6928
        assert cc.ssthresh == TCP_INFINITE_SSTHRESH == 0x7FFFFFFF
        assert cc.pacing_rate is None
        assert cc.mss == MSS


def test_base_class_requires_the_two_decisions_and_names_itself():
    class OnlyAck(CongestionControl):
        def on_ack(self, ack):
            pass

    with pytest.raises(TypeError, match="on_congestion_event"):
        OnlyAck(MSS)

    class Fixed(CongestionControl):
        def on_ack(self, ack):
            pass

        def on_congestion_event(self, ev):
            self.ssthresh = self.cwnd

    cc = Fixed(MSS)
    assert Fixed.name == "fixed"
    # Defaults: RFC 6582 §3.2 step 3 option (2) on recovery exit, RFC 5681 eq. (4) and LW on RTO.
    cc.ssthresh = 7 * MSS
    cc.on_recovery_exit(1.0, 3 * MSS)
    assert cc.cwnd == 7 * MSS
    cc.on_rto(2.0, 30 * MSS)
    assert (cc.ssthresh, cc.cwnd) == (15 * MSS, MSS)
    cc.on_rto(3.0, 3 * MSS)
    assert cc.ssthresh == 2 * MSS
    assert cc.state() == {}


def test_mss_change_keeps_windows_in_segments():
    cc = NewReno(1460)
    cc.on_mss_change(1448)  # after the handshake: timestamps cost 12 bytes
    assert cc.cwnd == 10 * 1448
    assert cc.ssthresh == TCP_INFINITE_SSTHRESH
    congestion(cc, 40 * 1448)
    cc.on_mss_change(1000)
    assert (cc.cwnd, cc.ssthresh) == (20 * 1000, 20 * 1000)
    with pytest.raises(ValueError):
        cc.on_mss_change(0)


# ---------------------------------------------------------------------- NewReno


@pytest.mark.parametrize("segs_per_ack", [1, 2])
def test_newreno_slow_start_doubles_every_rtt(segs_per_ack):
    cc = NewReno(MSS)
    trace: list = []
    run_rounds(cc, 0.0, 4, 0.05, segs_per_ack=segs_per_ack, trace=trace)
    assert [w for _, w in trace] == [20, 40, 80, 160]


def test_newreno_slow_start_counts_stretch_acks_like_linux_or_with_abc_limit():
    cc = NewReno(MSS)
    cc.on_ack(ack(0.1, 8 * MSS))
    assert cc.cwnd == 18 * MSS  # Linux: every acked byte counts

    class RFC3465(NewReno):
        abc_limit_segments = 2

    class RFC5681(NewReno):
        abc_limit_segments = 1

    cc = RFC3465(MSS)
    cc.on_ack(ack(0.1, 8 * MSS))
    assert cc.cwnd == 12 * MSS  # RFC 3465 §2.2, L = 2*SMSS
    cc = RFC5681(MSS)
    cc.on_ack(ack(0.1, 8 * MSS))
    assert cc.cwnd == 11 * MSS  # RFC 5681 eq. (2), min(N, SMSS)


def test_newreno_slow_start_stops_at_ssthresh_and_spends_the_rest_in_ca():
    cc = NewReno(MSS)
    cc.ssthresh = 15 * MSS
    cc.on_ack(ack(0.1, 10 * MSS))
    assert cc.cwnd == 15 * MSS
    assert cc.state()["bytes_acked"] == 5 * MSS


def test_newreno_congestion_avoidance_adds_one_mss_per_window_acked():
    cc = NewReno(MSS)
    cc.cwnd = cc.ssthresh = 20 * MSS
    for i in range(19):
        cc.on_ack(ack(0.01 * i))
    assert cc.cwnd == 20 * MSS
    cc.on_ack(ack(0.2))
    assert cc.cwnd == 21 * MSS
    # Then 21 more segments are needed, and over whole RTTs it is one MSS per RTT.
    for i in range(20):
        cc.on_ack(ack(0.3 + 0.001 * i))
    assert cc.cwnd == 21 * MSS
    cc.on_ack(ack(0.4))
    assert cc.cwnd == 22 * MSS
    run_rounds(cc, 1.0, 10, 0.1, segs_per_ack=2)
    assert 31 * MSS <= cc.cwnd <= 32 * MSS


def test_newreno_halves_on_congestion():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=40 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 20 * MSS  # RFC 5681 eq. (4)
    cc.on_recovery_exit(1.2, 20 * MSS)
    assert cc.cwnd == 20 * MSS
    # FlightSize, not cwnd, and never below 2*SMSS.
    cc.on_congestion_event(CongestionEvent(now=2.0, bytes_in_flight=3 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 2 * MSS


def test_newreno_rto_collapses_to_one_segment_then_slow_starts():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_rto(1.0, 40 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    trace: list = []
    run_rounds(cc, 1.0, 5, 0.1, trace=trace)
    assert [w for _, w in trace][:4] == [2, 4, 8, 16]
    assert 20 <= trace[-1][1] < 21  # slow start ended at ssthresh, then linear growth


def test_newreno_sets_ssthresh_once_per_window_on_timeouts():
    cc = NewReno(MSS)
    cc.cwnd = 40 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=40 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 20 * MSS
    # The timer fires during fast recovery; FlightSize has grown with the inflated window.
    cc.on_rto(1.5, 100 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    cc.on_rto(2.5, 10 * MSS)  # re-expiry, nothing acknowledged in between: keep ssthresh
    assert (cc.cwnd, cc.ssthresh) == (MSS, 20 * MSS)
    cc.on_ack(ack(3.0))
    cc.on_rto(4.0, 30 * MSS)  # a new timeout: equation (4) again
    assert (cc.cwnd, cc.ssthresh) == (MSS, 15 * MSS)


def test_newreno_app_limited_acks_do_not_grow_cwnd():
    cc = NewReno(MSS)
    run_rounds(cc, 0.0, 3, 0.1, app_limited=True)
    assert cc.cwnd == 10 * MSS
    cc.cwnd = cc.ssthresh = 20 * MSS
    run_rounds(cc, 1.0, 5, 0.1, app_limited=True)
    assert cc.cwnd == 20 * MSS


# ---------------------------------------------------------------------- CUBIC


def cubic_after_loss(w_max_segs: int, mss: int = MSS, cls=Cubic) -> Cubic:
    """A CUBIC flow that lost at a window of w_max_segs segments (flight = cwnd) and recovered."""
    cc = cls(mss)
    cc.cwnd = w_max_segs * mss
    congestion(cc, w_max_segs * mss)
    return cc


def w_cubic_segments(t: float, w_max: float, k: float) -> float:
    return 0.4 * (t - k) ** 3 + w_max  # RFC 9438 eq. 1, segments


def test_cubic_constants():
    assert Cubic.C == 0.4 and Cubic.beta_cubic == 0.7
    assert Cubic(MSS).alpha_cubic == pytest.approx(3 * 0.3 / 1.7)


def test_cubic_multiplicative_decrease():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=100 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 70 * MSS  # §4.6: flight_size * beta_cubic
    assert cc.W_max == 100 * MSS and cc.cwnd_prior == 100 * MSS
    cc.on_recovery_exit(1.1, 70 * MSS)
    assert cc.cwnd == 70 * MSS
    # It is cwnd that counts (Linux), not FlightSize: after back-to-back SACK recoveries
    # snd_nxt - snd_una spans SACKed data far beyond the window.
    cc.on_congestion_event(CongestionEvent(now=2.0, bytes_in_flight=300 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 49 * MSS
    # Floored at 2 SMSS.
    cc.cwnd = 2 * MSS
    cc.on_congestion_event(CongestionEvent(now=3.0, bytes_in_flight=2 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 2 * MSS


def test_cubic_ssthresh_from_flight_size_on_request():
    """RFC 9438 §4.6's text: ssthresh = flight_size * beta_cubic."""
    cc = Cubic.create(MSS, 0.0, {"ssthresh_basis": "flight_size"})
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=60 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 42 * MSS
    cc.on_rto(2.0, 10 * MSS)
    assert cc.ssthresh == 7 * MSS and cc.cwnd == MSS


@pytest.mark.parametrize("reduce", ["congestion_event", "rto"])
def test_cubic_undo_restores_the_curve_as_well_as_the_window(reduce):
    """RFC 9438 §4.9: after a spurious congestion event, cwnd, ssthresh, W_max, K and the epoch
    are what they were before it; the next ACKs grow on the old curve."""
    cc = cubic_after_loss(100)
    t = run_rounds(cc, 3.0, 3, 0.1)
    before = (cc.cwnd, cc.ssthresh, cc.W_max, cc.K, cc.t_epoch, cc.cwnd_epoch, cc.W_est, cc.region)
    prior_ssthresh = max(cc.ssthresh, cc.cwnd * 3 // 4)
    if reduce == "rto":
        cc.on_rto(t, cc.cwnd)
    else:
        cc.on_congestion_event(CongestionEvent(now=t, bytes_in_flight=cc.cwnd, mss=MSS, cause="dupack"))
    assert (cc.cwnd, cc.W_max) != before[:1] + before[2:3]
    cc.on_undo(UndoEvent(now=t + 0.3, prior_cwnd=before[0], prior_ssthresh=prior_ssthresh, cause="dsack"))
    after = (cc.cwnd, cc.ssthresh, cc.W_max, cc.K, cc.t_epoch, cc.cwnd_epoch, cc.W_est, cc.region)
    assert after == before[:1] + (max(before[1], prior_ssthresh),) + before[2:]
    # A loss after the undo reduces afresh (the episode's once-per-window guard is cleared).
    cc.on_rto(t + 1.0, cc.cwnd)
    assert cc.cwnd == MSS and cc.ssthresh == max(round(before[0] * 0.7), 2 * MSS)


def test_newreno_undo_takes_the_larger_of_before_and_now():
    cc = NewReno(MSS)
    cc.cwnd, cc.ssthresh = 40 * MSS, 30 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=40 * MSS, mss=MSS, cause="dupack"))
    cc.on_recovery_exit(1.1, 20 * MSS)
    assert cc.cwnd == 20 * MSS
    cc.on_undo(UndoEvent(now=1.2, prior_cwnd=40 * MSS, prior_ssthresh=30 * MSS, cause="timestamp"))
    assert (cc.cwnd, cc.ssthresh) == (40 * MSS, 30 * MSS)


@pytest.mark.parametrize("mss", [536, 1448, 8948])
def test_cubic_K_follows_equation_2(mss):
    cc = cubic_after_loss(1000, mss)
    cc.on_ack(ack(0.1, mss=mss))  # the first ACK in congestion avoidance opens the epoch
    state = cc.state()
    assert state["cwnd_epoch"] == 700 * mss
    assert state["K"] == pytest.approx(math.cbrt((1000 - 700) / 0.4), rel=1e-9)  # 9.0856 s
    assert state["t_epoch"] == 0.1


def test_cubic_window_follows_the_cubic_curve_and_reaches_W_max_at_K():
    rtt = 0.1
    cc = cubic_after_loss(1000)
    trace: list = []
    run_for(cc, 0.0, 14.0, rtt, trace=trace)
    k = math.cbrt(300 / 0.4)
    for t, w in trace:
        # The §4.2 look-ahead (target = W_cubic(t + RTT)) makes cwnd track the curve closely.
        assert w == pytest.approx(w_cubic_segments(t, 1000, k), abs=2.0), t
    at_k = min(trace, key=lambda p: abs(p[0] - k))
    assert at_k[1] == pytest.approx(1000, abs=1.0)
    # Concave before K (growth slowing down), convex after (speeding up).
    w = dict((round(t, 1), w) for t, w in trace)
    assert w[2.0] - w[1.0] > w[5.0] - w[4.0] > w[8.0] - w[7.0]
    assert w[10.0] - w[9.5] < w[12.0] - w[11.5] < w[14.0] - w[13.5]
    assert cc.state()["region"] == "convex"


def test_cubic_curve_is_the_same_in_segments_for_any_mss_and_ack_pattern():
    def segments(mss, segs_per_ack):
        cc = cubic_after_loss(500, mss)
        trace: list = []
        run_for(cc, 0.0, 8.0, 0.08, segs_per_ack=segs_per_ack, trace=trace)
        return [w for _, w in trace]

    base = segments(1448, 1)
    for mss, per_ack in [(536, 1), (8948, 1), (1448, 2)]:
        other = segments(mss, per_ack)
        assert max(abs(a - b) for a, b in zip(base, other)) < 1.5, (mss, per_ack)


class _CubicAlphaToOne(Cubic):
    alpha_to_one = True


@pytest.mark.parametrize("cls, alpha_after", [(Cubic, 3 * 0.3 / 1.7), (_CubicAlphaToOne, 1.0)],
                         ids=["linux", "rfc9438-should"])
def test_cubic_is_reno_friendly_on_short_rtt_paths(cls, alpha_after):
    rtt = 0.01
    cc = cubic_after_loss(100, cls=cls)
    trace: list = []
    run_for(cc, 0.0, 1.5, rtt, trace=trace)
    k = math.cbrt(30 / 0.4)
    assert cc.state()["region"] == "reno-friendly"
    t_end, w_end = trace[-1]
    assert w_end > w_cubic_segments(t_end, 100, k) + 40  # far above the cubic curve
    # §4.3: alpha_cubic = 0.53 segments per RTT until W_est reaches cwnd_prior; then 1 with
    # alpha_to_one (the RFC's SHOULD), still 0.53 by default (Linux tcp_cubic's constant
    # beta_scale: at 0.5% random loss the RFC's rule grew 16% faster than kernel CUBIC).
    alpha = 3 * 0.3 / 1.7
    per_rtt = [b - a for (_, a), (_, b) in zip(trace, trace[1:])]
    rounds_to_prior = math.ceil(30 / alpha)
    assert sum(per_rtt[5:45]) / 40 == pytest.approx(alpha, rel=0.05)
    after = per_rtt[rounds_to_prior + 5:]
    assert sum(after) / len(after) == pytest.approx(alpha_after, rel=0.05)


def test_cubic_fast_convergence_lowers_W_max():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    congestion(cc, 100 * MSS)
    assert cc.W_max == 100 * MSS
    cc.cwnd = 80 * MSS  # lost again below the previous W_max: the flow's share is shrinking
    congestion(cc, 80 * MSS)
    assert cc.W_max == pytest.approx(80 * MSS * (1 + 0.7) / 2)
    assert cc.cwnd_prior == 80 * MSS

    class NoFastConvergence(Cubic):
        fast_convergence = False

    cc = NoFastConvergence(MSS)
    cc.cwnd = 100 * MSS
    congestion(cc, 100 * MSS)
    cc.cwnd = 80 * MSS
    congestion(cc, 80 * MSS)
    assert cc.W_max == 80 * MSS
    # A loss above the old W_max just remembers cwnd.
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    congestion(cc, 100 * MSS)
    cc.cwnd = 120 * MSS
    congestion(cc, 120 * MSS)
    assert cc.W_max == 120 * MSS


def test_cubic_app_limited_acks_neither_grow_cwnd_nor_count_in_t():
    rtt = 0.1
    steady, paused = cubic_after_loss(1000), cubic_after_loss(1000)
    run_for(steady, 0.0, 6.0, rtt)

    t = run_for(paused, 0.0, 3.0, rtt)
    before = paused.cwnd, paused.state()["W_est"]
    t = run_for(paused, t, 20.0, rtt, app_limited=True)
    assert (paused.cwnd, paused.state()["W_est"]) == before
    run_for(paused, t, 3.0, rtt)
    # t excluded the 20 s: the two flows are at the same point of the curve. Had they counted,
    # t would be past K + 14 s and cwnd would have grown ~50% per RTT for 3 s.
    assert paused.cwnd / MSS == pytest.approx(steady.cwnd / MSS, abs=2.0)


def test_cubic_idle_gap_does_not_count_in_t():
    rtt = 0.1
    steady, idle = cubic_after_loss(1000), cubic_after_loss(1000)
    run_for(steady, 0.0, 6.0, rtt)
    t = run_for(idle, 0.0, 3.0, rtt)
    run_for(idle, t + 30.0, 3.0, rtt)  # 30 s with no ACKs at all, then cwnd-limited again
    assert idle.cwnd / MSS == pytest.approx(steady.cwnd / MSS, abs=2.0)


def test_cubic_rto_reduces_like_reno_and_restarts_with_K_zero():
    cc = cubic_after_loss(100)
    cc.cwnd = 90 * MSS
    cc.on_rto(5.0, 90 * MSS)
    assert cc.cwnd == MSS
    assert cc.ssthresh == 63 * MSS  # §4.8: ssthresh as in §4.6, 0.7 * FlightSize
    assert cc.cwnd_prior == 90 * MSS
    cc.on_rto(6.0, 90 * MSS)  # backed-off re-expiry: nothing new learnt
    assert (cc.cwnd, cc.ssthresh, cc.cwnd_prior) == (MSS, 63 * MSS, 90 * MSS)

    t = run_rounds(cc, 7.0, 6, 0.1)  # slow start 1 -> 64 segments, then congestion avoidance
    state = cc.state()
    assert state["K"] == 0.0
    assert state["W_max"] == state["cwnd_epoch"] == 63 * MSS
    # K = 0 and W_max = cwnd_epoch: W_cubic starts flat at cwnd_epoch and is convex from there.
    w0, t_epoch = state["cwnd_epoch"] / MSS, state["t_epoch"]
    end = run_for(cc, t, 6.0, 0.1)
    assert cc.state()["region"] == "convex"
    assert cc.cwnd / MSS == pytest.approx(w_cubic_segments(end - t_epoch, w0, 0.0), abs=2.0)


def test_cubic_timeout_during_recovery_keeps_the_recovery_ssthresh():
    cc = Cubic(MSS)
    cc.cwnd = 100 * MSS
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=100 * MSS, mss=MSS, cause="dupack"))
    cc.on_rto(1.5, 250 * MSS)  # FlightSize inflated by NewReno recovery
    assert (cc.cwnd, cc.ssthresh, cc.cwnd_prior) == (MSS, 70 * MSS, 100 * MSS)
    assert cc.W_max is None  # §4.8 still applies to the next congestion-avoidance stage
    run_rounds(cc, 2.0, 8, 0.1)
    assert cc.state()["K"] == 0.0 and cc.state()["cwnd_epoch"] == 70 * MSS


def test_cubic_target_rtt_srtt_by_default_min_rtt_like_linux_on_request():
    class LinuxLike(Cubic):
        rtt_for_target = "min_rtt"

    for cls, look_ahead in ((Cubic, 0.3), (LinuxLike, 0.1)):
        cc = cubic_after_loss(1000, cls=cls)
        cc.on_ack(ack(1.0, srtt=0.3, min_rtt=0.1, rtt=0.3))
        cc.on_ack(ack(1.2, srtt=0.3, min_rtt=0.1, rtt=0.3))
        k = cc.state()["K"]
        expected = w_cubic_segments(0.2 + look_ahead, 1000, k) * MSS
        assert cc.state()["target"] == pytest.approx(expected, rel=1e-9), cls


def test_cubic_target_is_clamped_to_one_and_a_half_cwnd():
    cc = Cubic(MSS)
    cc.cwnd = cc.ssthresh = 10 * MSS
    cc.W_max = 1000 * MSS  # far above: W_cubic(t + RTT) is huge
    cc.cwnd_prior = 1000 * MSS
    cc.on_ack(ack(0.0))
    cc.on_ack(ack(1.0))
    assert cc.state()["target"] == pytest.approx(1.5 * cc.state()["cwnd_epoch"], rel=0.01)
    # one RTT of ACKs can then add at most half a window
    start = cc.cwnd
    run_rounds(cc, 1.0, 1, 0.1)
    assert cc.cwnd <= 1.5 * start + MSS


def test_cubic_mss_change_keeps_segments_and_K():
    cc = cubic_after_loss(1000, 1460)
    cc.on_ack(ack(0.1, mss=1460))
    k, w_max = cc.K, cc.W_max
    cc.on_mss_change(1448)
    assert cc.K == k
    assert cc.W_max == pytest.approx(w_max / 1460 * 1448)
    assert cc.cwnd == pytest.approx(700 * 1448, abs=1)


# ---------------------------------------------------------------------- registry


def test_available_lists_builtins():
    names = available()
    assert {"newreno", "cubic"} <= set(names)
    assert names == sorted(names)


def test_load_by_name():
    cc = load("cubic", 1448, 3.0)
    assert isinstance(cc, Cubic) and cc.mss == 1448 and cc.name == "cubic"
    assert isinstance(load("newreno", 536), NewReno)
    assert isinstance(load("usertcp.cc.newreno:NewReno", 536), NewReno)
    assert isinstance(load(Cubic, 536), Cubic)


def test_unknown_name_is_a_clear_value_error():
    with pytest.raises(UnknownCC) as info:
        load("bbr4", MSS)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "\n" not in message
    assert "'bbr4'" in message and "cubic" in message and "newreno" in message


def test_builtins_work_without_installed_entry_points(monkeypatch):
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [])
    assert available() == sorted(registry.BUILTINS)
    assert isinstance(load("cubic", MSS), Cubic)


def test_installed_entry_points_agree_with_builtins():
    eps = {ep.name: ep for ep in metadata.entry_points(group="usertcp.cc")}
    if not eps:
        pytest.skip("usertcp is not installed (no entry points)")
    for name in registry.BUILTINS:
        assert eps[name].load() is registry.resolve(name)


def test_third_party_entry_point(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_cc.py").write_text(textwrap.dedent("""
        from usertcp.cc import CongestionControl

        class Vegas(CongestionControl):
            name = "vegas"
            def on_ack(self, ack):
                self.cwnd += 1
            def on_congestion_event(self, ev):
                self.ssthresh = self.cwnd // 2
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = metadata.EntryPoint(name="vegas", value="thirdparty_cc:Vegas", group="usertcp.cc")
    broken = metadata.EntryPoint(name="broken", value="no_such_module_xyz:X", group="usertcp.cc")
    monkeypatch.setattr(metadata, "entry_points", lambda **kw: [fake, broken])
    assert "vegas" in available()
    cc = load("vegas", MSS)
    assert type(cc).__name__ == "Vegas" and cc.name == "vegas"
    with pytest.raises(CCLoadError, match="broken.*failed to load"):
        load("broken", MSS)


PLUGIN = """
from usertcp.cc import CongestionControl
from usertcp.cc.newreno import NewReno   # imported, so not a candidate

class Aimd(CongestionControl):
    \"\"\"Fixed-increment AIMD, a page of Python.\"\"\"
    def on_ack(self, ack):
        if not ack.app_limited:
            self.cwnd += ack.mss * ack.acked_bytes // self.cwnd
    def on_congestion_event(self, ev):
        self.ssthresh = max(ev.bytes_in_flight // 2, 2 * ev.mss)
"""


def test_load_from_file(tmp_path):
    path = tmp_path / "aimd.py"
    path.write_text(PLUGIN)
    cc = load(str(path), MSS, 0.0)
    assert type(cc).__name__ == "Aimd" and cc.name == "aimd" and cc.cwnd == 10 * MSS
    cc.on_ack(ack(0.1, 10 * MSS))
    assert cc.cwnd == 11 * MSS
    cc = load(f"{path}:Aimd", MSS)
    assert type(cc).__name__ == "Aimd"
    assert type(load(f"{path}:NewReno", MSS)) is NewReno  # named explicitly, an import is fine


def test_file_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(CCLoadError, match="does not exist"):
        load(str(tmp_path / "missing.py"), MSS)

    path = tmp_path / "aimd.py"
    path.write_text(PLUGIN)
    with pytest.raises(CCLoadError, match=r"has no 'Cubic'.*Aimd"):
        load(f"{path}:Cubic", MSS)

    two = tmp_path / "two.py"
    two.write_text(PLUGIN + "\nclass Other(Aimd):\n    pass\n")
    with pytest.raises(CCLoadError, match="exactly one.*Aimd, Other"):
        load(str(two), MSS)
    assert type(load(f"{two}:Other", MSS)).__name__ == "Other"

    none = tmp_path / "none.py"
    none.write_text("x = 1\n")
    with pytest.raises(CCLoadError, match="exactly one.*none"):
        load(str(none), MSS)

    notcc = tmp_path / "notcc.py"
    notcc.write_text("class Thing:\n    pass\nhelper = 3\n")
    with pytest.raises(CCLoadError, match="Thing is not a subclass of usertcp.cc.CongestionControl"):
        load(f"{notcc}:Thing", MSS)
    with pytest.raises(CCLoadError, match="is not a class"):
        load(f"{notcc}:helper", MSS)

    half = tmp_path / "half.py"
    half.write_text("from usertcp.cc import CongestionControl\n"
                    "class Half(CongestionControl):\n    def on_ack(self, ack):\n        pass\n")
    with pytest.raises(CCLoadError, match="Half does not implement on_congestion_event"):
        load(str(half), MSS)

    boom = tmp_path / "boom.py"
    boom.write_text("raise RuntimeError('plugin exploded')\n")
    with pytest.raises(CCLoadError, match="RuntimeError: plugin exploded"):
        load(str(boom), MSS)

    with pytest.raises(CCLoadError, match="cannot import module"):
        load("no_such_module_xyz:Thing", MSS)
