"""HyStart++ (RFC 9406) in CUBIC's slow start.

Two kinds of test. The hand-worked ones feed `Cubic` synthetic ACKs organised in rounds that
line up exactly with HyStart++'s own (see `Feed`), so that every expected window, round and
decision can be worked out on paper from RFC 9406 §4.2 and §4.3. The simulator ones run the
engine over a 100 Mbit/s, 40 ms path with a deep drop-tail queue and compare CUBIC with and
without HyStart++.
"""

from __future__ import annotations

import pytest

from usertcp.cc import TCP_INFINITE_SSTHRESH, AckSample, CongestionEvent, UndoEvent
from usertcp.cc.cubic import Cubic
from usertcp.engine.connection import Connection
from usertcp.sim.link import Link
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource

MSS = 1448
IW = 10  # segments (RFC 6928)
BASE = 0.100  # s: the base RTT of the hand-worked paths
THRESH = 0.0125  # RttThresh for lastRoundMinRTT = 100 ms: max(4 ms, min(100/8 ms, 16 ms))


# ---------------------------------------------------------------------- synthetic rounds


class Feed:
    """Synthetic ACKs in HyStart++ rounds.

    `round(rtts, next_acks)` delivers one round: one ACK per entry of `rtts` (that ACK's RTT
    sample; None for an ACK without one), each acknowledging `acked` bytes. bytes_in_flight is
    chosen as a cwnd-limited sender's would be when everything the next round will acknowledge
    has been sent by the end of this one: at this round's last ACK exactly `next_acks` ACKs'
    worth is in flight. So windowEnd (delivered_total + bytes_in_flight at a round's first ACK,
    RFC 9406 §4.2 as `Cubic.slow_start_ack` reads it) falls exactly on the last ACK of each
    round, and the first ACK of all opens round 1.
    """

    def __init__(self, cc: Cubic, acked: int = MSS) -> None:
        self.cc = cc
        self.acked = acked
        self.t = 0.0
        self.delivered = 0

    def ack(self, rtt: float | None, in_flight: int, acked: int | None = None) -> None:
        acked = self.acked if acked is None else acked
        self.t += 0.001
        self.delivered += acked
        self.cc.on_ack(AckSample(
            now=self.t, acked_bytes=acked, rtt=rtt, srtt=rtt or BASE, min_rtt=BASE,
            bytes_in_flight=in_flight, mss=MSS, app_limited=False, delivered_total=self.delivered,
        ))

    def round(self, rtts, next_acks: int, *, stop_after: int | None = None) -> None:
        n = len(rtts)
        for i, rtt in enumerate(rtts[:stop_after]):
            sent_for_next = next_acks * self.acked * i // (n - 1) if n > 1 else next_acks * self.acked
            self.ack(rtt, (n - 1 - i) * self.acked + sent_for_next)

    def rounds(self, plan, then: int | None = None) -> list[dict]:
        """`plan`: (number of ACKs, RTT of each) per round; `then`: the number of ACKs of the
        round after them (default: as many as the last). Returns state() after each round."""
        states = []
        for k, (n, rtt) in enumerate(plan):
            nxt = plan[k + 1][0] if k + 1 < len(plan) else (n if then is None else then)
            self.round([rtt] * n, nxt)
            states.append(self.cc.state() | {"cwnd": self.cc.cwnd, "ssthresh": self.cc.ssthresh})
        return states


def segs(cc: Cubic) -> float:
    return cc.cwnd / MSS


def into_css(rtt: float = BASE + THRESH, **params) -> tuple[Cubic, Feed]:
    """Rounds 1 (10 ACKs) and 2 (20 ACKs) at 100 ms, then round 3 (40 ACKs) at `rtt`, stopped
    after its 8th ACK: with rtt >= 112.5 ms that ACK enters CSS at cwnd = 10+10+20+8 = 48 segments."""
    cc = Cubic.create(MSS, 0.0, params) if params else Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=40)
    feed.round([rtt] * 40, 40, stop_after=8)
    return cc, feed


# ---------------------------------------------------------------------- hand-worked


def test_initial_state():
    cc = Cubic(MSS)
    assert cc.state()["hystart"] == "ss" and cc.ssthresh == TCP_INFINITE_SSTHRESH
    s = cc.state()
    assert (s["hystart_round"], s["rtt_sample_count"], s["css_rounds"]) == (0, 0, 0)
    # RFC 9406 §4.2: lastRoundMinRTT = currentRoundMinRTT = cssBaselineMinRtt = infinity.
    assert s["current_round_min_rtt"] is s["last_round_min_rtt"] is s["css_baseline_min_rtt"] is None


def test_the_first_ack_opens_round_one_the_initial_windows_round():
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.ack(0.05, 9 * MSS)  # the IW's first segment; 9 more in flight: windowEnd = 10 segments
    s = cc.state()
    assert (s["hystart_round"], s["rtt_sample_count"], s["current_round_min_rtt"]) == (1, 1, 0.05)
    assert s["last_round_min_rtt"] is None and cc.window_end == 10 * MSS
    for i in range(8):
        feed.ack(0.04, (8 - i) * MSS)
    assert cc.state()["hystart_round"] == 1 and cc.state()["rtt_sample_count"] == 9
    feed.ack(0.04, 20 * MSS)  # the 10th ACK covers windowEnd: round 2 begins
    s = cc.state()
    assert (s["hystart_round"], s["rtt_sample_count"], s["last_round_min_rtt"]) == (2, 0, 0.04)
    assert cc.window_end == 30 * MSS


def test_flat_rtt_stays_in_slow_start_and_doubles_every_round():
    cc = Cubic(MSS)
    plan = [(IW * 2**k, BASE) for k in range(8)]  # one ACK per segment: the whole window each round
    states = Feed(cc).rounds(plan)
    for k, s in enumerate(states):
        assert s["hystart"] == "ss"
        assert s["cwnd"] == IW * 2 ** (k + 1) * MSS  # RFC 5681 slow start, untouched
        assert s["ssthresh"] == TCP_INFINITE_SSTHRESH
        assert s["hystart_round"] == k + 2  # the last ACK of round k+1 opened round k+2
        assert s["last_round_min_rtt"] == BASE and s["current_round_min_rtt"] is None
        assert s["rtt_sample_count"] == 0


def test_rtt_rising_by_less_than_rtt_thresh_each_round_stays_in_slow_start():
    # Each round's minimum is 12 ms above the last; RttThresh is at least 100/8 = 12.5 ms (and
    # grows with lastRoundMinRTT), so no round crosses it -- although the RTT doubles overall.
    cc = Cubic(MSS)
    rtts = [BASE + 0.012 * k for k in range(9)]
    states = Feed(cc).rounds([(IW * 2**k, rtt) for k, rtt in enumerate(rtts)])
    assert all(s["hystart"] == "ss" for s in states)
    assert cc.cwnd == IW * 2**9 * MSS
    # Jitter above the minimum does not matter either: only each round's minimum counts.
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=40)
    feed.round([BASE + 0.050 * (i % 2) for i in range(40)], 80)
    assert cc.state()["hystart"] == "ss" and cc.state()["last_round_min_rtt"] == BASE


def test_rtt_rise_of_rtt_thresh_enters_css_at_the_eighth_sample():
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=40)
    assert segs(cc) == 40
    rtts = [BASE + THRESH] * 40
    for i in range(7):
        feed.ack(rtts[i], (39 - i) * MSS)
        assert cc.state()["hystart"] == "ss", i  # fewer than N_RTT_SAMPLE = 8 samples
    assert segs(cc) == 47
    feed.ack(rtts[7], 32 * MSS)
    s = cc.state()
    # RFC 9406 §4.2: currentRoundMinRTT (112.5 ms) >= lastRoundMinRTT + RttThresh (100 + 12.5).
    assert s["hystart"] == "css" and s["css_baseline_min_rtt"] == BASE + THRESH
    assert s["rtt_sample_count"] == 8 and s["css_rounds"] == 0
    assert segs(cc) == 48  # the 8th ACK still grew at the slow-start rate (growth comes first)
    assert cc.ssthresh == TCP_INFINITE_SSTHRESH  # CSS is still slow start (cwnd < ssthresh)
    # CSS: cwnd += min(N, L*SMSS) / CSS_GROWTH_DIVISOR, a quarter of an MSS per ACK here.
    feed.ack(rtts[8], 31 * MSS)
    assert cc.cwnd == 48 * MSS + MSS // 4
    for i in range(9, 40):
        feed.ack(rtts[i], (39 - i) * MSS + (40 * MSS if i == 39 else 0))
    assert segs(cc) == 48 + 32 / 4  # 32 CSS ACKs of one segment each: 8 segments
    assert cc.state()["hystart_round"] == 4 and cc.state()["css_rounds"] == 1  # the partial round


@pytest.mark.parametrize(
    "last, thresh",
    [
        (0.100, 0.0125),  # lastRoundMinRTT / MIN_RTT_DIVISOR
        (0.020, 0.004),  # 2.5 ms, raised to MIN_RTT_THRESH
        (0.200, 0.016),  # 25 ms, lowered to MAX_RTT_THRESH
    ],
)
def test_rtt_thresh_is_clamped_between_4_and_16_ms(last, thresh):
    def round3_phase(rtt):
        cc = Cubic(MSS)
        feed = Feed(cc)
        feed.rounds([(10, last), (20, last)])
        feed.round([rtt] * 40, 40)
        return cc.state()["hystart"]

    assert round3_phase(last + thresh) == "css"
    assert round3_phase(last + thresh - 1e-6) == "ss"


def test_five_css_rounds_then_congestion_avoidance_from_cwnd():
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=40)
    rtt = BASE + THRESH
    feed.round([rtt] * 40, 40)  # round 3: CSS from its 8th ACK; the partial round counts (1)
    assert (cc.state()["hystart"], cc.state()["css_rounds"], segs(cc)) == ("css", 1, 56)
    for k in range(2, 5):  # rounds 4-6: CSS rounds 2-4, 40 ACKs each: +10 segments each
        feed.round([rtt] * 40, 40)
        assert (cc.state()["hystart"], cc.state()["css_rounds"], segs(cc)) == ("css", k, 56 + 10 * (k - 1))
        assert cc.ssthresh == TCP_INFINITE_SSTHRESH
    feed.round([rtt] * 40, 40)  # round 7: the fifth CSS round
    # RFC 9406 §4.2: CSS_ROUNDS rounds complete: ssthresh = cwnd, congestion avoidance.
    assert segs(cc) == 96 and cc.ssthresh == cc.cwnd
    assert not cc.in_slow_start() and cc.state()["hystart"] == "off"
    # RFC 9438 §4.10: the first congestion-avoidance stage starts with cwnd_prior = cwnd,
    # K = 0, W_max = cwnd_epoch = cwnd: a flat start of the cubic curve, then convex.
    feed.ack(rtt, 40 * MSS)
    s = cc.state()
    assert s["region"] != "slow-start"
    assert s["cwnd_epoch"] == s["W_max"] == s["cwnd_prior"] == 96 * MSS and s["K"] == 0.0
    assert 96 * MSS < cc.cwnd < 96 * MSS + MSS  # congestion avoidance: a sliver per ACK
    # Later RTT rises change nothing: HyStart++ is over.
    feed.round([0.5] * 40, 40)
    assert cc.state()["hystart"] == "off"


def test_rtt_falling_below_the_css_baseline_resumes_slow_start():
    cc, feed = into_css()  # CSS at the 8th ACK of round 3, baseline 112.5 ms
    feed.round([BASE + THRESH] * 32, 40)  # the rest of round 3 (32 ACKs, one CSS round done)
    assert cc.state()["hystart"] == "css" and segs(cc) == 56
    low = BASE + 0.005  # below the baseline, though still above lastRoundMinRTT
    for i in range(7):
        feed.ack(low, (39 - i) * MSS)
        assert cc.state()["hystart"] == "css", i  # fewer than 8 samples: no decision yet
    assert segs(cc) == 56 + 7 / 4
    feed.ack(low, 32 * MSS)
    s = cc.state()
    # RFC 9406 §4.2: currentRoundMinRTT < cssBaselineMinRtt: "resume slow start including
    # HyStart++", with cssBaselineMinRtt = infinity.
    assert s["hystart"] == "ss" and s["css_baseline_min_rtt"] is None and s["css_rounds"] == 0
    before = cc.cwnd
    feed.ack(low, 31 * MSS)
    assert cc.cwnd == before + MSS  # full slow-start growth again
    # HyStart++ still watches: lastRoundMinRTT is 112.5 ms, so it takes 125 ms to re-enter CSS.
    for i in range(9, 40):
        feed.ack(low, (39 - i) * MSS + (80 * MSS if i == 39 else 0))
    feed.round([BASE + THRESH + 0.0125] * 80, 80)
    assert cc.state()["hystart"] == "css" and cc.state()["css_baseline_min_rtt"] == BASE + THRESH + 0.0125


def test_fewer_than_eight_samples_in_a_round_decide_nothing():
    # Round 3 has 7 ACKs only, all 50 ms above the last round's minimum: no decision.
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE), (7, BASE + 0.050)])
    assert cc.state()["hystart"] == "ss"
    assert cc.state()["last_round_min_rtt"] == BASE + 0.050  # the short round still counts as last
    # An ACK without an RTT sample (Karn's rule) is no sample: the decision waits for the 9th ACK.
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=9)
    feed.round([BASE + 0.050] * 4 + [None] + [BASE + 0.050] * 4, 9, stop_after=8)
    assert cc.state()["hystart"] == "ss" and cc.state()["rtt_sample_count"] == 7
    feed.ack(BASE + 0.050, 9 * MSS)
    assert cc.state()["hystart"] == "css" and cc.state()["hystart_round"] == 4
    # In CSS, 7 low samples in a round do not resume slow start either.
    cc, feed = into_css()
    feed.round([BASE + THRESH] * 32, 7)
    feed.round([BASE] * 7, 40)
    assert cc.state()["hystart"] == "css" and cc.state()["css_rounds"] == 2


def test_every_ack_its_own_round_without_delivered_total():
    """An engine that does not fill delivered_total (API < 3, or the synthetic ACKs of
    test_cc.py) gives rounds of one ACK: HyStart++ never has 8 samples, slow start is plain."""
    cc = Cubic(MSS)
    for i in range(200):
        cc.on_ack(AckSample(now=i * 0.001, acked_bytes=MSS, rtt=BASE if i < 50 else 0.5, srtt=BASE,
                            min_rtt=BASE, bytes_in_flight=0, mss=MSS, app_limited=False))
    assert cc.state()["hystart"] == "ss" and cc.cwnd == (IW + 200) * MSS


def test_hystart_off_is_plain_slow_start():
    plan = [(10, BASE), (20, BASE), (40, 0.3), (80, 0.4), (160, 0.5)]
    cc = Cubic.create(MSS, 0.0, {"hystart": "false"})
    assert cc.hystart is False and cc.state()["hystart"] == "off"
    states = Feed(cc).rounds(plan)
    assert [s["cwnd"] // MSS for s in states] == [20, 40, 80, 160, 320]
    assert all(s["hystart"] == "off" and s["ssthresh"] == TCP_INFINITE_SSTHRESH for s in states)
    assert states[-1]["hystart_round"] == 0  # no rounds are tracked at all
    # The same path with HyStart++ leaves for CSS in round 3.
    on = Cubic(MSS)
    assert Feed(on).rounds(plan)[2]["hystart"] == "css"
    # No L cap without HyStart++: a stretch ACK of 20 segments grows cwnd by 20.
    cc = Cubic.create(MSS, 0.0, {"hystart": False})
    Feed(cc, acked=20 * MSS).ack(BASE, 0)
    assert segs(cc) == IW + 20


def test_growth_per_ack_is_capped_at_L_segments():
    # RFC 9406 §4.2/§4.3: cwnd grows by min(N, L*SMSS), L = 8 for a sender that does not pace
    # (not the default here: Linux does not cap, and neither do we unless asked).
    cc = Cubic.create(MSS, 0.0, {"hystart_ack_limit": "8"})
    Feed(cc, acked=20 * MSS).ack(BASE, 0)
    assert segs(cc) == IW + 8
    cc = Cubic.create(MSS, 0.0, {"hystart_ack_limit": "0"})  # 0 = infinity (paced)
    Feed(cc, acked=20 * MSS).ack(BASE, 0)
    assert segs(cc) == IW + 20
    # In CSS the capped bytes are divided by CSS_GROWTH_DIVISOR: 8 segments / 4.
    cc, feed = into_css(hystart_ack_limit=8)
    before = cc.cwnd
    feed.ack(BASE + THRESH, 0, acked=20 * MSS)
    assert cc.cwnd == before + 2 * MSS
    # The cap follows the MSS.
    cc = Cubic.create(MSS, 0.0, {"hystart_ack_limit": 8})
    cc.on_mss_change(1000)
    Feed(cc, acked=20_000).ack(BASE, 0)
    assert cc.cwnd == IW * 1000 + 8 * 1000


def test_congestion_in_slow_start_or_css_is_cubics_usual_response():
    for phase in ("ss", "css"):
        if phase == "css":
            cc, _ = into_css()
        else:
            cc = Cubic(MSS)
            Feed(cc).rounds([(10, BASE), (20, BASE)])
        assert cc.state()["hystart"] == phase
        cwnd = cc.cwnd
        cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=cwnd, mss=MSS, cause="dupack"))
        # RFC 9438 §4.6 as always: ssthresh = 0.7 * FlightSize, W_max = cwnd; HyStart++ is done.
        assert cc.ssthresh == round(cwnd * 0.7) and cc.W_max == cwnd
        assert cc.state()["hystart"] == "off"
        cc.on_recovery_exit(1.1, cc.ssthresh)
        assert not cc.in_slow_start()


def test_slow_start_after_a_timeout_is_plain_rfc5681():
    cc = Cubic(MSS)
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)])
    cc.on_rto(1.0, 40 * MSS)
    assert cc.cwnd == MSS and cc.ssthresh == 28 * MSS and cc.state()["hystart"] == "off"
    # RFC 9406 §4.3: HyStart++ only in the initial slow start. A delay rise now changes nothing:
    # slow start runs on up to the ssthresh the timeout set.
    feed.rounds([(1, BASE), (2, 0.3), (4, 0.3), (8, 0.3), (16, 0.3)])
    assert cc.cwnd >= cc.ssthresh == 28 * MSS and cc.state()["hystart"] == "off"


def test_undo_of_a_spurious_reduction_restores_the_hystart_phase():
    cc, feed = into_css()
    cwnd = cc.cwnd
    prior_ssthresh = max(cc.ssthresh, cwnd * 3 // 4)
    cc.on_congestion_event(CongestionEvent(now=1.0, bytes_in_flight=cwnd, mss=MSS, cause="dupack"))
    assert cc.state()["hystart"] == "off"
    cc.on_undo(UndoEvent(now=1.2, prior_cwnd=cwnd, prior_ssthresh=prior_ssthresh, cause="dsack"))
    assert cc.cwnd == cwnd and cc.ssthresh == TCP_INFINITE_SSTHRESH
    s = cc.state()
    assert s["hystart"] == "css" and s["css_baseline_min_rtt"] == BASE + THRESH


def test_params_parse_and_validate():
    names = {"C", "beta_cubic", "fast_convergence", "rtt_for_target", "hystart", "hystart_min_rtt_thresh",
             "hystart_max_rtt_thresh", "hystart_min_rtt_divisor", "hystart_n_rtt_sample",
             "hystart_css_growth_divisor", "hystart_css_rounds", "hystart_ack_limit"}
    assert names <= set(Cubic.params)
    # The class attributes stay the plain defaults, RFC 9438 §4.1.1 and RFC 9406 §4.3.
    assert (Cubic.C, Cubic.beta_cubic, Cubic.fast_convergence) == (0.4, 0.7, True)
    assert Cubic.rtt_for_target == "srtt"
    assert (Cubic.hystart, Cubic.hystart_min_rtt_thresh, Cubic.hystart_max_rtt_thresh) == (True, 0.004, 0.016)
    assert (Cubic.hystart_min_rtt_divisor, Cubic.hystart_n_rtt_sample, Cubic.hystart_css_growth_divisor,
            Cubic.hystart_css_rounds, Cubic.hystart_ack_limit) == (8, 8, 4, 5, 0)
    cc = Cubic.create(MSS, 0.0, {
        "C": "0.5", "beta_cubic": "0.8", "fast_convergence": "no", "rtt_for_target": "min_rtt",
        "hystart": "on", "hystart_min_rtt_thresh": "0.002", "hystart_max_rtt_thresh": "0.03",
        "hystart_min_rtt_divisor": "4", "hystart_n_rtt_sample": "0x10", "hystart_css_growth_divisor": "2",
        "hystart_css_rounds": "3", "hystart_ack_limit": "0",
    })
    assert (cc.C, cc.beta_cubic, cc.fast_convergence, cc.rtt_for_target) == (0.5, 0.8, False, "min_rtt")
    assert (cc.hystart_min_rtt_thresh, cc.hystart_max_rtt_thresh) == (0.002, 0.03)
    assert cc.hystart_min_rtt_divisor == 4
    assert (cc.hystart_n_rtt_sample, cc.hystart_css_growth_divisor, cc.hystart_css_rounds) == (16, 2, 3)
    assert Cubic(MSS).C == 0.4  # per connection only
    bad = [
        ({"hystart_css_growth_divisor": "1"}, "minimum"),  # RFC 9406 §4.3: MUST be at least 2
        ({"hystart_n_rtt_sample": "0"}, "minimum"),
        ({"hystart_css_rounds": "0"}, "minimum"),
        ({"hystart_ack_limit": "-1"}, "minimum"),
        ({"hystart_min_rtt_thresh": "-0.001"}, "minimum"),
        ({"hystart_max_rtt_thresh": "5"}, "maximum"),
        ({"hystart": "maybe"}, "not a valid bool"),
        ({"hystart_n_rtt_sample": "8.5"}, "not a valid int"),
        ({"rtt_for_target": "max_rtt"}, "not one of"),
        ({"C": "0"}, "minimum"),
        ({"beta_cubic": "1.0"}, "maximum"),
        ({"hystart_min_rtt_thresh": "0.02", "hystart_max_rtt_thresh": "0.01"}, "above"),
        ({"hystart_l": "8"}, "no parameter"),
    ]
    for params, message in bad:
        with pytest.raises(ValueError, match=message):
            Cubic.create(MSS, 0.0, params)


def test_tuned_params_change_the_decisions():
    # CSS_ROUNDS = 2: congestion avoidance after the partial round 3 and round 4.
    cc, feed = into_css(hystart_css_rounds=2)
    feed.round([BASE + THRESH] * 32, 40)
    assert cc.state()["hystart"] == "css"
    feed.round([BASE + THRESH] * 40, 40)
    assert cc.state()["hystart"] == "off" and cc.ssthresh == cc.cwnd
    # CSS_GROWTH_DIVISOR = 2: half a segment per segment acknowledged in CSS.
    cc, feed = into_css(hystart_css_growth_divisor=2)
    before = cc.cwnd
    feed.ack(BASE + THRESH, 31 * MSS)
    assert cc.cwnd == before + MSS // 2
    # N_RTT_SAMPLE = 4 decides at the 4th sample; MIN_RTT_THRESH = 20 ms needs a bigger rise.
    cc = Cubic.create(MSS, 0.0, {"hystart_n_rtt_sample": 4})
    feed = Feed(cc)
    feed.rounds([(10, BASE), (20, BASE)], then=40)
    feed.round([BASE + THRESH] * 40, 40, stop_after=4)
    assert cc.state()["hystart"] == "css"
    cc = Cubic.create(MSS, 0.0, {"hystart_min_rtt_thresh": 0.02, "hystart_max_rtt_thresh": 0.02})
    assert Feed(cc).rounds([(10, BASE), (20, BASE), (40, BASE + 0.019)])[-1]["hystart"] == "ss"


# ---------------------------------------------------------------------- simulator

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
RATE, RTT = 100e6, 0.040
BDP = int(RATE / 8 * RTT)  # 500 kB


def transfer(size: int, queue_bdp: int, params: dict, rcv_buf: int = 4 << 20):
    """CUBIC over 100 Mbit/s, 40 ms RTT, a drop-tail queue of `queue_bdp` BDPs; what happened
    in its slow start, from the per-ACK congestion-control log."""
    cc = Cubic.create(1448, 0.0, params)
    src = PatternSource(size, seed=5)
    seen: dict = {}

    def log(rec):
        if "css_at" not in seen and rec.get("hystart") == "css":
            seen["css_at"] = rec["t"]
        if "loss_at" not in seen and rec["event"] in ("on_congestion_event", "on_rto"):
            seen["loss_at"] = rec["t"]
        if "ss_end" not in seen and rec["ssthresh"] < TCP_INFINITE_SSTHRESH:
            seen["ss_end"] = rec["event"]
            seen["ss_end_cwnd"] = rec["cwnd"]

    conn = Connection(LOCAL, REMOTE, cc, src, iss=1, time_wait=0.5, cc_log=log)
    fwd = Link(delay=RTT / 2, rate=RATE, queue_bytes=queue_bdp * BDP, name="fwd")
    rev = Link(delay=RTT / 2, name="rev")
    rcv = Receiver(port=REMOTE[1], iss=777, rcv_buf=rcv_buf)
    res = simulate(conn, rcv, fwd, rev, until=60.0)
    assert res.completed and conn.error is None
    assert rcv.bytes_received == size and rcv.sha256() == src.sha256()
    assert conn.cc is cc  # no hook failed (the guard would have swapped in NewReno)
    return conn, fwd, seen


def test_sim_hystart_leaves_slow_start_before_the_first_loss_and_loses_far_less():
    """100 Mbit/s, 40 ms, queue 4 BDP: plain slow start overshoots BDP + queue (2.5 MB) and
    loses a large part of a window; HyStart++ sees the queue grow and leaves slow start for CSS
    long before. On this path the RTT rise shows a round late (each round's ACKs carry the
    previous round's data) and CSS then grows 1.25x per round for up to 5 rounds, so the queue
    still overflows late in CSS -- but by a few dozen packets, not a thousand."""
    plain, plain_fwd, plain_seen = transfer(8_000_000, 4, {"hystart": False})
    hs, hs_fwd, hs_seen = transfer(8_000_000, 4, {})
    # Plain slow start: ended by a loss, with much retransmitted.
    assert plain_seen["ss_end"] == "on_congestion_event" and "css_at" not in plain_seen
    assert plain.bytes_retrans > 1_000_000 and plain_fwd.dropped_queue > 500
    # HyStart++: RFC 9406 §4.2 "exit slow start and enter CSS" before the first loss, and well
    # before the window that the plain run lost at.
    assert hs_seen["css_at"] < hs_seen.get("loss_at", float("inf"))
    assert hs_seen["css_at"] < plain_seen["loss_at"]
    assert hs.bytes_retrans * 10 < plain.bytes_retrans
    assert hs_fwd.dropped_queue * 10 < plain_fwd.dropped_queue


def test_sim_hystart_reaches_congestion_avoidance_without_a_loss_on_a_deeper_queue():
    """Queue 10 BDP: CSS runs its 5 rounds and sets ssthresh = cwnd (on an ACK, not a loss)
    below BDP + queue; the transfer sees no drop and no retransmission."""
    conn, fwd, seen = transfer(24_000_000, 10, {}, rcv_buf=16 << 20)
    assert seen["ss_end"] == "ack" and "loss_at" not in seen
    assert BDP < seen["ss_end_cwnd"] < 11 * BDP
    assert conn.bytes_retrans == 0 and fwd.dropped_queue == 0
    assert conn.cc.state()["hystart"] == "off"
