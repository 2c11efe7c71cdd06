"""BBR version 3, as specified by the IETF draft draft-ietf-ccwg-bbr (revision -06, July 2026).

BBRv3 keeps BBR v1's idea -- a model of the path (bottleneck bandwidth and round-trip
propagation delay) from which the pacing rate, the window and the send quantum are set on every
ACK -- and adds what v1 lacks: it reads loss (and ECN marks) as a signal. The model has a
long-term part (``max_bw``, the max filter over the last two ProbeBW cycles, and ``inflight_hi``,
the volume of data that last caused a loss rate above 2%) and a short-term part (``bw_lo`` and
``inflight_lo``, cut by 30% once per round trip in which losses were seen while not probing).
Bandwidth probing is rare and careful: ProbeBW cycles DOWN (pace at 0.9 to drain), CRUISE (pace at
1.0 with 15% of inflight_hi left free), REFILL (one round at 1.0 with the short-term model
forgotten) and UP (pace at 1.25, growing inflight_hi by 1, 2, 4... segments a round), and a new
probe starts only after 2-3 s or, on small BDPs, as often as Reno would lose a packet (up to 63
rounds). See ``usertcp/cc/bbr.py`` for v1 and the conventions both modules share.

Sources
-------
The reference is the draft (section numbers below are those of draft-ietf-ccwg-bbr-06; every
method names the draft routine it follows). Google's Linux implementation (github.com/google/bbr,
branch v3, net/ipv4/tcp_bbr.c) settles details the draft leaves open; where we take something
from it, the docstring says "Linux" and names the function. Where the two differ in a constant,
we use the draft's (drain gain 0.5, not Linux's 0.35; ProbeBW_DOWN gain 0.90, not 0.91;
Startup gain 2.77 exactly). Revision -06 renamed some variables; we keep the names of Linux and
of the earlier revisions, which are also the names our CC log uses:

==================================  ===========================================
here (and Linux, draft -00..-03)    draft -06
==================================  ===========================================
``inflight_hi``                     BBR.inflight_longterm
``inflight_lo``                     BBR.inflight_shortterm
``bw_lo``                           BBR.bw_shortterm
``prev_probe_precautionary``        (Linux: stopped_risky_probe)
==================================  ===========================================

Units: windows and volumes in bytes, rates in bytes/s, times in seconds (draft §2: "the unit of
all volumes of data is bytes ... of all data rates is bytes per second"). "Infinity" is
``math.inf``; `state` reports it as None so the JSON log stays standard JSON.

What the engine does not tell a controller, and how we make up for it
---------------------------------------------------------------------
- RS.tx_in_flight and RS.lost (§2.3; Linux rs->tx_in_flight, rs->lost = tp->lost - tx.lost):
  the flight when the sampled packet left and what was marked lost since. `AckSample` carries
  neither. We rebuild them from a history of the ACK stream (``_tx_state``): a packet whose
  snapshot says ``delivered = D`` left between the ACK that brought C.delivered to D and the
  next ACK that delivered data, so its tx_in_flight is at most the flight just before that next
  ACK (that ACK's ``prior_in_flight``), and exactly that if it was the last packet sent before
  it; and C.lost at its send time is the running lost count as of that interval. If a future
  engine puts ``tx_in_flight`` and ``lost`` on the rate sample, they are used instead.
- Per-packet loss (§5.2.4 HandleLostPacket(P), Linux skb_marked_lost): the engine reports only
  the bytes marked lost per ACK. We run HandleLostPacket once per ACK that marked losses,
  treating those bytes as one packet ("offload burst", as the draft's InflightAtLoss allows)
  with the tx_in_flight / lost estimate above.
- C.is_cwnd_limited (§2.2): estimated from the ACK stream -- the flight before an ACK reached
  cwnd to within one segment (and the sender was not application-limited), in this round or
  the previous one.
- C.has_selective_acks (§2.2): true once an ACK has SACKed data.
- MarkConnectionAppLimited in ProbeRTT (§5.3.4.3): a controller cannot write the engine's rate
  estimator; as in our v1, samples built on packets sent while ProbeRTT would have set the
  app-limited mark are treated as app-limited (``_probe_rtt_app_limited``).

Simplifications
---------------
- ECN (§3.7 leaves the response open; we follow Linux's v3 response, simplified): the engine
  gives one ECE bit per ACK, not a per-packet CE echo, so bytes delivered by an ACK carrying ECE
  count as CE-marked (with an RFC 3168 receiver, which repeats ECE until CWR, this overstates the
  mark rate). Used only once an ECE has been seen and min_rtt <= ``ecn_max_rtt`` (Linux's
  bbr_ecn_max_rtt_us, the shallow-threshold datacenter case): ecn_alpha EWMA per round, a CE
  ratio above ``ecn_thresh`` counts as "inflight too high", two such Startup rounds end Startup,
  and a marked round cuts inflight_lo by ecn_alpha x ``ecn_factor``. Linux's re-probe after ECN
  clears and PLB are not implemented.
- HandleLostPacket's tx_in_flight / lost are per ACK (above), not per lost packet.
- No ``is_ack_delayed`` filtering of min_rtt samples (Linux only; the draft has none).
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import replace
from typing import Any

from .api import (
    TCP_INFINITE_SSTHRESH,
    AckSample,
    CongestionControl,
    CongestionEvent,
    UndoEvent,
    param,
)
from .bbr import WindowedMax

__all__ = [
    "BBRv3", "STARTUP", "DRAIN", "PROBE_BW_DOWN", "PROBE_BW_CRUISE", "PROBE_BW_REFILL",
    "PROBE_BW_UP", "PROBE_RTT", "PROBE_BW_STATES",
]

INF = math.inf

# BBR.state (§5.1.1): the draft's states, ProbeBW's four sub-states spelled out.
STARTUP = "STARTUP"
DRAIN = "DRAIN"
PROBE_BW_DOWN = "PROBE_BW_DOWN"
PROBE_BW_CRUISE = "PROBE_BW_CRUISE"
PROBE_BW_REFILL = "PROBE_BW_REFILL"
PROBE_BW_UP = "PROBE_BW_UP"
PROBE_RTT = "PROBE_RTT"
PROBE_BW_STATES = frozenset({PROBE_BW_DOWN, PROBE_BW_CRUISE, PROBE_BW_REFILL, PROBE_BW_UP})

# BBR.ack_phase (§2.14).
ACKS_INIT = "INIT"
ACKS_REFILLING = "REFILLING"
ACKS_PROBE_STARTING = "PROBE_STARTING"
ACKS_PROBE_FEEDBACK = "PROBE_FEEDBACK"
ACKS_PROBE_STOPPING = "PROBE_STOPPING"

MIN_PIPE_CWND_SEGMENTS = 4
"""BBR.MinPipeCwnd = 4 * C.SMSS (§2.8, §5.6.4.3)."""

SEND_QUANTUM_MAX = 64 * 1024
"""§5.6.3: C.send_quantum = min(C.pacing_rate * 1 ms, 64 KBytes)."""

_MAX_PACING_RATE = 1e12  # far below the guard's limit: no sample can make the rate rejected
_HISTORY_MAX = 1 << 16  # bound on the ACK history behind the tx_in_flight estimate


class _RS:
    """The per-ACK rate sample RS of §2.3 / §4.1.2.1.3, built from the engine's `AckSample`."""

    __slots__ = ("valid", "delivery_rate", "delivered", "rtt", "newly_acked", "newly_lost",
                 "prior_delivered", "is_app_limited", "prior_in_flight", "tx_in_flight", "lost",
                 "delivered_ce")

    def __init__(self, ack: AckSample) -> None:
        rs = ack.rate
        if rs is None:  # an engine older than API 2: only what the ACK itself says
            self.valid = False
            self.delivery_rate = 0.0
            self.delivered = 0
            self.rtt = ack.rtt
            self.newly_acked = ack.acked_bytes + ack.sacked_bytes
            self.newly_lost = ack.lost_bytes
            self.prior_delivered = 0
            self.is_app_limited = ack.app_limited
            self.prior_in_flight = ack.bytes_in_flight
        else:
            rate = rs.delivery_rate
            self.valid = rate is not None
            self.delivery_rate = rate if rate is not None else 0.0
            self.delivered = rs.delivered
            self.rtt = rs.rtt
            self.newly_acked = rs.acked_sacked
            self.newly_lost = rs.losses
            self.prior_delivered = rs.prior_delivered
            self.is_app_limited = rs.is_app_limited
            self.prior_in_flight = rs.prior_in_flight
        self.tx_in_flight = 0
        self.lost = 0
        self.delivered_ce = 0


class BBRv3(CongestionControl):
    """BBRv3 (draft-ietf-ccwg-bbr-06). See the module docstring for sources, units and the
    approximations the API forces.

    The engine calls `cong_control` on every ACK that delivered data or marked losses (recovery
    included); the window in force is always ``cwnd``."""

    name = "bbr3"

    # ---- §2.5-2.6, §5.6.1: gains
    startup_pacing_gain = param(2.77, "Startup pacing gain, 4 ln 2 (draft §2.5 BBR.StartupPacingGain)",
                                min=1.0, max=16.0)
    startup_cwnd_gain = param(2.0, "Startup (and Drain) cwnd gain (draft §2.6 BBR.DefaultCwndGain)",
                              min=0.25, max=16.0)
    drain_pacing_gain = param(0.5, "Drain pacing gain (draft §2.5 BBR.DrainPacingGain)", min=0.01, max=1.0)
    cwnd_gain = param(2.0, "cwnd gain in ProbeBW DOWN/CRUISE/REFILL (draft §2.6 BBR.DefaultCwndGain)",
                      min=0.25, max=16.0)
    probe_down_pacing_gain = param(0.9, "ProbeBW_DOWN pacing gain (draft §5.3.3.1)", min=0.01, max=1.0)
    probe_up_pacing_gain = param(1.25, "ProbeBW_UP pacing gain (draft §5.3.3.5)", min=1.0, max=4.0)
    probe_up_cwnd_gain = param(2.25, "ProbeBW_UP cwnd gain (draft §5.3.3.5)", min=0.25, max=16.0)
    pacing_margin = param(0.01, "pace this fraction below gain x bw (draft §2.5 BBR.PacingMarginPercent)",
                          min=0.0, max=0.5)
    # ---- §2.8: core design parameters
    loss_thresh = param(0.02, "highest tolerated per-round loss rate when probing "
                        "(draft §2.8 BBR.LossThresh)",
                        min=0.0, max=1.0)
    beta = param(0.7, "multiplicative decrease per lossy round (draft §2.8 BBR.Beta)", min=0.0, max=1.0)
    headroom = param(0.15, "fraction of inflight_hi left free in CRUISE/ProbeRTT "
                     "(draft §2.8 BBR.Headroom)",
                     min=0.0, max=1.0)
    # ---- §5.3.1: Startup exit
    full_bw_threshold = param(1.25, "growth per round that means the pipe is not full yet "
                              "(draft §5.3.1.2)",
                              min=1.0, max=10.0)
    full_bw_rounds = param(3, "rounds without that growth before the pipe counts as full (draft §5.3.1.2)",
                           min=1, max=100)
    full_loss_cnt = param(6, "loss events in a recovery round needed to end Startup on loss "
                          "(draft §5.3.1.3 BBRStartupFullLossCnt); 0 disables", min=0, max=15)
    drain_max_rounds = param(3, "rounds after which Drain ends even above the BDP (draft §5.3.2)",
                             min=1, max=1000)
    # ---- §2.11-2.12: filters
    max_bw_filter_len = param(2, "ProbeBW cycles the max_bw filter covers "
                              "(draft §2.11 BBR.MaxBwFilterLen)",
                              min=1, max=16)
    extra_acked_filter_len = param(10, "rounds the extra_acked filter covers after Startup "
                                   "(draft §2.12 BBR.ExtraAckedFilterLen)", min=1, max=1000)
    # ---- §2.16, §5.3.4: min_rtt and ProbeRTT
    min_rtt_filter_len = param(10.0, "seconds a min_rtt sample stays valid "
                               "(draft §2.16.1 BBR.MinRTTFilterLen)",
                               min=0.001, max=3600.0)
    probe_rtt_interval = param(5.0, "seconds without a lower RTT before ProbeRTT (draft §2.16.2 "
                               "BBR.ProbeRTTInterval)", min=0.001, max=3600.0)
    probe_rtt_duration = param(0.2, "seconds at the ProbeRTT window (draft §2.16.2 BBR.ProbeRTTDuration); "
                               "0 disables ProbeRTT", min=0.0, max=10.0)
    probe_rtt_cwnd_gain = param(0.5, "ProbeRTT cwnd in BDPs (draft §2.16.2 BBR.ProbeRTTCwndGain)",
                                min=0.0, max=4.0)
    # ---- §5.3.3.8: when to probe for bandwidth
    bw_probe_wait_base = param(2.0, "least seconds between bandwidth probes (draft §5.3.3.8 T_bbr)",
                               min=0.0, max=3600.0)
    bw_probe_wait_rand = param(1.0, "random extra seconds between probes, uniform in [0, this) "
                               "(draft §5.3.3.8 T_bbr)", min=0.0, max=3600.0)
    bw_probe_max_rounds = param(63, "Reno-coexistence bound on rounds between probes (draft §5.3.3.8 "
                                "T_reno_bound)", min=1, max=100000)
    bw_probe_rand_rounds = param(2, "the round counter starts at random in [0, this) (draft §5.3.3.8 "
                                 "PickProbeWait: 0 or 1)", min=1, max=1000)
    seed = param(0, "seed of the random probe wait (draft §5.3.3.8 PickProbeWait); give flows that share "
                 "a bottleneck different seeds")
    # ---- ECN (draft §3.7 leaves it open; Linux v3's response, simplified: see the module docstring)
    ecn_thresh = param(0.5, "CE fraction of a sample that counts as inflight too high "
                       "(Linux bbr_ecn_thresh); "
                       "0 disables", min=0.0, max=1.0)
    ecn_factor = param(1 / 3, "inflight_lo cut per marked round, times ecn_alpha (Linux bbr_ecn_factor); "
                       "0 disables the ECN response", min=0.0, max=1.0)
    ecn_alpha_gain = param(1 / 16, "EWMA gain of ecn_alpha (Linux bbr_ecn_alpha_gain)", min=0.0, max=1.0)
    ecn_alpha_init = param(1.0, "initial ecn_alpha (Linux bbr_ecn_alpha_init)", min=0.0, max=1.0)
    full_ecn_cnt = param(2, "Startup rounds with CE ratio >= ecn_thresh that end Startup (Linux "
                         "bbr_full_ecn_cnt); 0 disables", min=0, max=100)
    ecn_max_rtt = param(0.005, "use ECN only while min_rtt is at most this many seconds (Linux "
                        "bbr_ecn_max_rtt_us); 0: at any RTT", min=0.0, max=3600.0)

    # ------------------------------------------------------------------ §5.2.1 OnInit

    def __init__(self, mss: int, now: float = 0.0) -> None:
        """§5.2.1 OnInit."""
        super().__init__(mss, now)
        self.ssthresh = TCP_INFINITE_SSTHRESH  # BBR does not use ssthresh
        self._rng = random.Random(self.seed)
        self._now = now  # Now(): the time of the ACK or event being handled
        self.initial_cwnd = self.cwnd  # C.InitialCwnd
        # Connection state (§2.2) as far as the engine reports it.
        self._delivered = 0  # C.delivered
        self._lost = 0  # C.lost
        self._delivered_ce = 0  # bytes delivered by ACKs carrying ECE (Linux tp->delivered_ce)
        self._has_sack = False  # C.has_selective_acks, inferred
        self._cwnd_limited_round = False  # C.is_cwnd_limited in this round ...
        self._cwnd_limited_prev = False  # ... and in the previous one
        self._in_recovery: str | None = None  # "fast" / "rto" while in loss recovery
        self._acked_since_rto = False
        # ACK history for RS.tx_in_flight / RS.lost: [delivered, lost, delivered_ce, flight_next].
        self._hist: deque[list] = deque([[0, 0, 0, None]])
        # Model (§2.9-2.11).
        self._bw_slots = [0.0] * self.max_bw_filter_len  # BBR.max_bw_filter, one max per cycle
        self.cycle_count = 0
        self.bw = 0.0  # BBR.bw = min(max_bw, bw_lo)
        self.min_rtt = INF
        self.min_rtt_stamp = now
        self.extra_acked = 0.0
        self._extra_acked_filter = WindowedMax(0, 0.0)  # §5.5.9 BBR.extra_acked_filter
        self.extra_acked_interval_start = now
        self.extra_acked_delivered = 0
        self.max_inflight = float(self.cwnd)
        self.offload_budget = 0
        # §5.3.4.3 ProbeRTT.
        self.probe_rtt_min_delay = INF
        self.probe_rtt_min_stamp = now
        self.probe_rtt_expired = False
        self.probe_rtt_done_stamp = 0.0
        self.probe_rtt_round_done = False
        self._al_start = 0  # our stand-in for MarkConnectionAppLimited in ProbeRTT
        self._al_end = 0
        # Recovery and undo (§2.15, §5.6.4.4).
        self.prior_cwnd = 0
        self.undo_state: str | None = None
        self.undo_bw_lo = 0.0
        self.undo_inflight_lo = 0.0
        self.undo_inflight_hi = 0.0
        self.idle_restart = False
        # ProbeBW (§2.14).
        self.inflight_hi = INF
        self.probe_up_acked_per_inc = INF
        self.bw_probe_up_acked = 0
        self.bw_probe_up_rounds = 0
        self.rounds_since_probe_up = 0
        self.is_bw_probe_sample = False
        self.prev_probe_too_high = False
        self.prev_probe_precautionary = False
        self.ack_phase = ACKS_INIT
        self.cycle_stamp = 0.0
        self.bw_probe_wait = 0.0
        # Startup's loss and ECN exits.
        self.loss_events_in_round = 0
        self.startup_ecn_rounds = 0
        # ECN (Linux v3).
        self.ecn_eligible = False
        self.ecn_alpha = self.ecn_alpha_init
        self.ecn_in_round = False
        self._alpha_last_delivered = 0
        self._alpha_last_delivered_ce = 0
        self.has_seen_rtt = False
        self.pacing_gain = self.startup_pacing_gain
        self.cwnd_gain_now = self.startup_cwnd_gain
        self.state_name = STARTUP
        self.loss_round_delivered = 0  # C.delivered that ends the current loss round
        self.loss_round_start = False
        self._reset_congestion_signals()  # §5.5.10.3 ResetCongestionSignals
        self._reset_short_term_model()  # §5.5.10.3 ResetShortTermModel
        self._init_round_counting()  # §5.5.1 InitRoundCounting
        self._reset_full_bw()  # §5.3.1.2 ResetFullBW
        self.full_bw_reached = False
        self._init_pacing_rate(None)  # §5.6.2 InitPacingRate
        self._enter_startup()  # §5.3.1.1 EnterStartup
        self._set_send_quantum()

    # ------------------------------------------------------------------ the state machine's gains

    def _set_state(self, state: str) -> None:
        """Set BBR.state with the pacing and cwnd gains of the table in §5.6.1."""
        self.state_name = state
        if state == STARTUP:
            self.pacing_gain, self.cwnd_gain_now = self.startup_pacing_gain, self.startup_cwnd_gain
        elif state == DRAIN:
            self.pacing_gain, self.cwnd_gain_now = self.drain_pacing_gain, self.startup_cwnd_gain
        elif state == PROBE_BW_DOWN:
            self.pacing_gain, self.cwnd_gain_now = self.probe_down_pacing_gain, self.cwnd_gain
        elif state in (PROBE_BW_CRUISE, PROBE_BW_REFILL):
            self.pacing_gain, self.cwnd_gain_now = 1.0, self.cwnd_gain
        elif state == PROBE_BW_UP:
            self.pacing_gain, self.cwnd_gain_now = self.probe_up_pacing_gain, self.probe_up_cwnd_gain
        else:  # PROBE_RTT
            self.pacing_gain, self.cwnd_gain_now = 1.0, self.probe_rtt_cwnd_gain

    @property
    def max_bw(self) -> float:
        """BBR.max_bw (§2.9.1): the max of the filter's per-cycle slots."""
        return max(self._bw_slots)

    def _is_in_probe_bw(self) -> bool:
        """§5.3.3.9 IsInAProbeBWState."""
        return self.state_name in PROBE_BW_STATES

    def _is_probing_bw(self) -> bool:
        """§5.3.3.9 IsProbingBW: Startup, REFILL and UP push the flight up."""
        return self.state_name in (STARTUP, PROBE_BW_REFILL, PROBE_BW_UP)

    # ------------------------------------------------------------------ per ACK (§5.2.3)

    def cong_control(self, ack: AckSample) -> None:
        """§5.2.3 UpdateOnACK: the per-loss steps for what this ACK marked lost (§5.2.4, see the
        module docstring), then UpdateModelAndState and UpdateControlParameters."""
        rs = _RS(ack)
        self.rs = rs
        self._now = ack.now
        self._inflight = ack.bytes_in_flight  # C.inflight after this ACK
        self._delivered = max(self._delivered, ack.delivered_total)
        self._lost += rs.newly_lost
        if ack.sacked_bytes > 0:
            self._has_sack = True
        if ack.acked_bytes > 0:
            self._acked_since_rto = True
        if ack.ece:
            self._delivered_ce += rs.newly_acked
            if self.ecn_eligible:
                self.ecn_in_round = True  # Linux bbr_main: ecn_in_round |= ecn_eligible && is_ece
        if self._al_end and rs.valid:
            rs.is_app_limited = self._probe_rtt_app_limited(rs.prior_delivered) or rs.is_app_limited
        self._tx_state(ack, rs)
        # C.is_cwnd_limited (§2.2): did the flight fill cwnd before this ACK?
        if not ack.app_limited and rs.prior_in_flight + self.mss > self.cwnd:
            self._cwnd_limited_round = True
        # The engine's in_recovery says when a recovery of either kind is over; RTO recovery
        # has no exit hook of its own (§5.6.4.4: restore the cwnd on exit).
        if self._in_recovery and not ack.in_recovery:
            self._exit_recovery()
        if rs.newly_lost > 0:
            self._handle_lost_packet(rs)  # §5.2.4

        self._update_model_and_state(ack, rs)
        self._update_control_parameters(ack, rs)

    def on_ack(self, ack: AckSample) -> None:
        """Only an engine without `cong_control` support (API < 3) calls this; run the per-ACK
        step on what it gives, rebuilding C.delivered from the rate sample if it is missing."""
        rs = ack.rate
        if not ack.delivered_total and rs is not None and rs.delivery_rate is not None:
            ack = replace(ack, delivered_total=rs.prior_delivered + rs.delivered)
        self.cong_control(ack)

    def _tx_state(self, ack: AckSample, rs: _RS) -> None:
        """RS.tx_in_flight, RS.lost (§2.3) and Linux's rs->delivered_ce for this ACK's sample.

        Taken from the engine's rate sample when it carries them (a proposed API addition);
        otherwise rebuilt from our history of the ACK stream. Each record stands for the
        interval after an ACK that raised C.delivered to `delivered`: packets sent then carry
        P.delivered = `delivered`, P.lost = `lost` (C.lost then), and the newest of them left
        with C.inflight = the flight just before the next data-delivering ACK (`flight_next`,
        that ACK's prior_in_flight)."""
        hist = self._hist
        last = hist[-1]
        delivered_now = ack.delivered_total
        grew = delivered_now > last[0]
        if grew and last[3] is None:
            last[3] = rs.prior_in_flight
        engine_rs = ack.rate
        tx = getattr(engine_rs, "tx_in_flight", None)
        lost = getattr(engine_rs, "lost", None)
        if rs.delivered > 0:
            p = rs.prior_delivered
            while len(hist) > 1 and hist[1][0] <= p:
                hist.popleft()
            rec = hist[0]
            if tx is None:
                tx = rec[3] if rec[3] is not None else rs.prior_in_flight
            if lost is None:
                lost = self._lost - rec[1]
            rs.delivered_ce = self._delivered_ce - rec[2]
        rs.tx_in_flight = int(tx) if tx is not None else 0
        rs.lost = max(0, int(lost)) if lost is not None else 0
        if grew:
            hist.append([delivered_now, self._lost, self._delivered_ce, None])
            if len(hist) > _HISTORY_MAX:
                hist.popleft()
        else:  # nothing delivered: later packets still carry this P.delivered, with a newer C.lost
            last[1], last[2] = self._lost, self._delivered_ce

    def _update_model_and_state(self, ack: AckSample, rs: _RS) -> None:
        """§5.2.3 UpdateModelAndState, in the draft's order."""
        self._update_latest_delivery_signals(rs)
        self._update_congestion_signals(rs)
        self._update_ack_aggregation(rs)
        self._check_full_bw_reached(rs)
        self._check_startup_done(rs)
        self._check_drain_done()
        self._update_probe_bw_cycle_phase(rs)
        self._update_min_rtt(rs)
        self._check_probe_rtt(rs)
        self._advance_latest_delivery_signals(rs)
        self._bound_bw_for_model()

    def _update_control_parameters(self, ack: AckSample, rs: _RS) -> None:
        """§5.2.3 UpdateControlParameters."""
        self._set_pacing_rate(ack.srtt)
        self._set_send_quantum()
        self._set_cwnd(rs)

    # ------------------------------------------------------------------ §5.5.1 rounds

    def _init_round_counting(self) -> None:
        """§5.5.1 InitRoundCounting."""
        self.next_round_delivered = 0
        self.round_start = False
        self.round_count = 0

    def _start_round(self) -> None:
        """§5.5.1 StartRound."""
        self.next_round_delivered = self._delivered

    def _update_round(self, rs: _RS) -> None:
        """§5.5.1 UpdateRound: a round ends when a packet sent after it began is delivered. Only
        on a usable sample, as Linux (rs->interval_us > 0): a sample discarded as shorter than
        min_rtt (a spurious retransmission) says nothing reliable about when its packet left."""
        self.round_start = False
        if rs.valid and rs.prior_delivered >= self.next_round_delivered:
            self._start_round()
            self.round_count += 1
            self.rounds_since_probe_up += 1
            self.round_start = True
            # C.is_cwnd_limited covers the last packet-timed round trip.
            self._cwnd_limited_prev, self._cwnd_limited_round = self._cwnd_limited_round, False
            self._update_ecn_alpha()

    @property
    def is_cwnd_limited(self) -> bool:
        """C.is_cwnd_limited (§2.2): cwnd was filled in this round trip or the last."""
        return self._cwnd_limited_round or self._cwnd_limited_prev

    # ------------------------------------------------------------------ §5.5.10 congestion signals

    def _update_latest_delivery_signals(self, rs: _RS) -> None:
        """§5.5.10.3 UpdateLatestDeliverySignals: 1-round maxima of the delivery rate and the
        delivered volume, and the loss round (which NoteLoss re-anchors at its first loss)."""
        self.loss_round_start = False
        if not rs.valid or not rs.newly_acked:
            return  # Linux: not a valid observation
        self.bw_latest = max(self.bw_latest, rs.delivery_rate)
        self.inflight_latest = max(self.inflight_latest, rs.delivered)
        if rs.prior_delivered >= self.loss_round_delivered:
            self.loss_round_delivered = self._delivered
            self.loss_round_start = True

    def _advance_latest_delivery_signals(self, rs: _RS) -> None:
        """§5.5.10.3 AdvanceLatestDeliverySignals: a new loss round starts the maxima afresh."""
        if self.loss_round_start:
            self.bw_latest = rs.delivery_rate
            self.inflight_latest = rs.delivered

    def _reset_congestion_signals(self) -> None:
        """§5.5.10.3 ResetCongestionSignals."""
        self.is_loss_in_round = False
        self.ecn_in_round = False
        self.bw_latest = 0.0
        self.inflight_latest = 0

    def _update_congestion_signals(self, rs: _RS) -> None:
        """§5.5.10.3 UpdateCongestionSignals: the max_bw filter, then once per loss round the
        short-term model's response."""
        self._update_max_bw(rs)
        if not self.loss_round_start:
            return
        self._adapt_lower_bounds_from_congestion()
        self.is_loss_in_round = False
        self.ecn_in_round = False

    def _adapt_lower_bounds_from_congestion(self) -> None:
        """§5.5.10.3 AdaptLowerBoundsFromCongestion: not while probing; after a round with
        losses, bw_lo and inflight_lo move down by Beta but not below what the last round
        delivered. ECN (Linux bbr_adapt_lower_bounds): a marked round cuts inflight_lo by
        ecn_alpha x ecn_factor."""
        if self._is_probing_bw():
            return
        ecn_inflight_lo = INF
        if self.ecn_in_round and self.ecn_factor:
            self._init_lower_bounds(init_bw=False)
            ecn_inflight_lo = self.inflight_lo * (1.0 - self.ecn_alpha * self.ecn_factor)
        if self.is_loss_in_round:
            self._init_lower_bounds(init_bw=True)
            self._loss_lower_bounds()
        self.inflight_lo = min(self.inflight_lo, ecn_inflight_lo)

    def _init_lower_bounds(self, init_bw: bool = True) -> None:
        """§5.5.10.3 InitLowerBounds: the first congestion of a cycle starts from the model."""
        if init_bw and self.bw_lo == INF:
            self.bw_lo = self.max_bw
        if self.inflight_lo == INF:
            self.inflight_lo = float(self.cwnd)

    def _loss_lower_bounds(self) -> None:
        """§5.5.10.3 LossLowerBounds."""
        self.bw_lo = max(self.bw_latest, self.beta * self.bw_lo)
        self.inflight_lo = max(float(self.inflight_latest), self.beta * self.inflight_lo)

    def _reset_short_term_model(self) -> None:
        """§5.5.10.3 ResetShortTermModel."""
        self.bw_lo = INF
        self.inflight_lo = INF

    def _bound_bw_for_model(self) -> None:
        """§5.5.10.3 BoundBWForModel."""
        self.bw = min(self.max_bw, self.bw_lo)

    # ------------------------------------------------------------------ §5.5.2-5.5.6 max_bw

    def _update_max_bw(self, rs: _RS) -> None:
        """§5.5.5 UpdateMaxBw: app-limited samples count only if they beat the model (§5.5.4)."""
        self._update_round(rs)
        if rs.delivery_rate > 0 and (rs.delivery_rate >= self.max_bw or not rs.is_app_limited):
            slots = self._bw_slots
            if rs.delivery_rate > slots[-1]:
                slots[-1] = rs.delivery_rate

    def _advance_max_bw_filter(self) -> None:
        """§5.5.6 AdvanceMaxBwFilter: the filter's virtual time moves on by one ProbeBW cycle.
        The filter keeps one maximum per cycle for the last `max_bw_filter_len` cycles. As
        Linux's bbr_advance_max_bw_filter, a cycle with no sample at all does not push older
        cycles out (max_bw would otherwise fall for want of samples, not for a lower rate)."""
        self.cycle_count += 1
        slots = self._bw_slots
        if not slots[-1]:
            return
        slots.pop(0)
        slots.append(0.0)

    # ------------------------------------------------------------------ §5.5.9 extra_acked

    def _update_ack_aggregation(self, rs: _RS) -> None:
        """§5.5.9 UpdateACKAggregation: data ACKed beyond bw x time in the current aggregation
        epoch, max-filtered over 10 rounds (1 in Startup). The filter is our v1's windowed max
        (Kathleen Nichols' algorithm, which §5.5.5 names), over round_count."""
        if rs.newly_acked <= 0:
            return
        now = self._now
        interval = now - self.extra_acked_interval_start
        expected = self.bw * interval
        if self.extra_acked_delivered <= expected:
            self.extra_acked_delivered = 0
            self.extra_acked_interval_start = now
            expected = 0.0
        self.extra_acked_delivered += rs.newly_acked
        extra = min(self.extra_acked_delivered - expected, float(self.cwnd))
        filter_len = self.extra_acked_filter_len if self.full_bw_reached else 1
        self.extra_acked = self._extra_acked_filter.update(filter_len, self.round_count, extra)

    # ------------------------------------------------------------------ §5.3.1 Startup

    def _enter_startup(self) -> None:
        """§5.3.1.1 EnterStartup."""
        self._set_state(STARTUP)

    def _reset_full_bw(self) -> None:
        """§5.3.1.2 ResetFullBW."""
        self.full_bw = 0.0
        self.full_bw_count = 0
        self.full_bw_now = False

    def _check_full_bw_reached(self, rs: _RS) -> None:
        """§5.3.1.2 CheckFullBWReached: once per round, from samples that are not app-limited,
        has the delivery rate grown by 25%? Three rounds without: the pipe is full."""
        if self.full_bw_now or not self.round_start or rs.is_app_limited:
            return
        if rs.delivery_rate >= self.full_bw * self.full_bw_threshold:
            self._reset_full_bw()
            self.full_bw = rs.delivery_rate
            return
        self.full_bw_count += 1
        self.full_bw_now = self.full_bw_count >= self.full_bw_rounds
        if self.full_bw_now:
            self.full_bw_reached = True

    def _check_startup_done(self, rs: _RS) -> None:
        """§5.3.1 CheckStartupDone."""
        self._check_startup_high_loss(rs)
        if self.state_name == STARTUP and self.full_bw_reached:
            self._enter_drain()

    def _check_startup_high_loss(self, rs: _RS) -> None:
        """§5.3.1.3 CheckStartupHighLoss (as Linux bbr_check_loss_too_high_in_startup): at the
        end of a loss round spent in fast recovery, with at least `full_loss_cnt` loss events
        (ACKs that marked losses: our stand-in for "discontiguous sequence ranges lost") and a
        loss rate above LossThresh -- or, without SACK, any loss in fast recovery -- the pipe
        is full: inflight_hi = max(BDP, inflight_latest), and Startup ends."""
        if self.full_bw_reached:
            return
        if rs.newly_lost > 0 and self.loss_events_in_round < 0xF:
            self.loss_events_in_round += 1
        if self.loss_round_start and self._in_recovery == "fast":
            if self._has_sack:
                high = (self.full_loss_cnt > 0 and self.loss_events_in_round >= self.full_loss_cnt
                        and self._is_inflight_too_high(rs))
            else:
                high = self.loss_events_in_round > 0
            if high:
                self._handle_queue_too_high_in_startup()
                return
        if self.loss_round_start:
            self.loss_events_in_round = 0

    def _handle_queue_too_high_in_startup(self) -> None:
        """§5.3.1.3: undo_state = Startup, full_bw_reached, inflight_hi = max(BBR.bdp,
        BBR.inflight_latest)."""
        self.undo_state = STARTUP
        self.full_bw_reached = True
        self.inflight_hi = max(self._bdp_multiple(self.max_bw, 1.0), float(self.inflight_latest))

    # ------------------------------------------------------------------ §5.3.2 Drain

    def _enter_drain(self) -> None:
        """§5.3.2 EnterDrain."""
        self._set_state(DRAIN)
        self.drain_start_round = self.round_count

    def _check_drain_done(self) -> None:
        """§5.3.2 CheckDrainDone: the queue is gone (flight at most one BDP), or three rounds
        have passed (the bandwidth was overestimated)."""
        if self.state_name == DRAIN and (
            self._inflight <= self._inflight_at(self.bw, 1.0)
            or self.round_count > self.drain_start_round + self.drain_max_rounds
        ):
            self._enter_probe_bw()

    # ------------------------------------------------------------------ §5.3.3 ProbeBW

    def _enter_probe_bw(self) -> None:
        """§5.3.3.9 EnterProbeBW."""
        self.cwnd_gain_now = self.cwnd_gain
        self._start_probe_bw_down()

    def _start_probe_bw_down(self) -> None:
        """§5.3.3.9 StartProbeBW_DOWN: a new cycle; its probe time is drawn now."""
        self._reset_congestion_signals()
        self.probe_up_acked_per_inc = INF  # not growing inflight_hi
        self._pick_probe_wait()
        self.cycle_stamp = self._now
        self.ack_phase = ACKS_PROBE_STOPPING
        self._start_round()
        self._set_state(PROBE_BW_DOWN)

    def _start_probe_bw_cruise(self) -> None:
        """§5.3.3.9 StartProbeBW_CRUISE."""
        self._set_state(PROBE_BW_CRUISE)

    def _start_probe_bw_refill(self) -> None:
        """§5.3.3.9 StartProbeBW_REFILL: forget the short-term model and refill the pipe at
        1.0 for one round before probing (§5.3.3.3)."""
        self._reset_short_term_model()
        self.bw_probe_up_rounds = 0
        self.bw_probe_up_acked = 0
        self.prev_probe_precautionary = False
        self.ack_phase = ACKS_REFILLING
        self._start_round()
        self._set_state(PROBE_BW_REFILL)

    def _start_probe_bw_up(self, rs: _RS) -> None:
        """§5.3.3.9 StartProbeBW_UP."""
        self.ack_phase = ACKS_PROBE_STARTING
        self._start_round()
        self._reset_full_bw()
        self.full_bw = rs.delivery_rate
        self._set_state(PROBE_BW_UP)
        self._raise_inflight_hi_slope()

    def _update_probe_bw_cycle_phase(self, rs: _RS) -> None:
        """§5.3.3.9 UpdateProbeBWCyclePhase: DOWN -> CRUISE -> REFILL -> UP -> DOWN."""
        if not self.full_bw_reached:
            return
        if self._adapt_long_term_model(rs):
            return
        state = self.state_name
        if state == PROBE_BW_DOWN:
            if self._is_time_to_probe_bw():
                return
            if self._is_time_to_cruise(rs):
                self._start_probe_bw_cruise()
        elif state == PROBE_BW_CRUISE:
            self._is_time_to_probe_bw()
        elif state == PROBE_BW_REFILL:
            if self.round_start:  # after one round of REFILL, start UP
                self.is_bw_probe_sample = True
                self._start_probe_bw_up(rs)
        elif state == PROBE_BW_UP:
            if self._is_time_to_go_down(rs):
                self.prev_probe_too_high = False  # no high loss (yet)
                self._start_probe_bw_down()

    def _in_net(self, rs: _RS) -> float:
        """The flight the ProbeBW checks compare, as Linux's bbr_packets_in_net_at_edt: the
        flight before this ACK (rs->prior_in_flight), plus, while raising the flight, the
        quantum about to leave. (Linux also subtracts what drains before the pacer's next
        departure; the engine does not expose that time, so that term is 0 here.)"""
        inflight = float(rs.prior_in_flight)
        if self.pacing_gain > 1.0:
            inflight += self.send_quantum or 0
        return inflight

    def _is_time_to_cruise(self, rs: _RS) -> bool:
        """§5.3.3.9 IsTimeToCruise: headroom left under inflight_hi, and no queue."""
        inflight = self._in_net(rs)
        if inflight > self._inflight_with_headroom():
            return False
        return inflight <= self._inflight_at(self.max_bw, 1.0)

    def _is_time_to_go_down(self, rs: _RS) -> bool:
        """§5.3.3.9 IsTimeToGoDown: precautionary stop at the inflight_hi that was too high
        last time (§5.3.3.6); or the bandwidth plateaued while inflight_hi did not hold the
        flight back."""
        inflight = self._in_net(rs)
        if self.prev_probe_too_high and inflight >= self.inflight_hi:
            self.prev_probe_precautionary = True
            return True
        if self.is_cwnd_limited and self.cwnd >= self.inflight_hi:
            self._reset_full_bw()  # bw is limited by inflight_hi
            self.full_bw = rs.delivery_rate
        elif self.full_bw_now:
            return True  # the path's bandwidth is in use
        return False

    def _has_elapsed_in_phase(self, interval: float) -> bool:
        """§5.3.3.9 HasElapsedInPhase."""
        return self._now > self.cycle_stamp + interval

    def _is_time_to_probe_bw(self) -> bool:
        """§5.3.3.8 IsTimeToProbeBW."""
        if self._has_elapsed_in_phase(self.bw_probe_wait) or self._is_reno_coexistence_probe_time():
            self._start_probe_bw_refill()
            return True
        return False

    def _pick_probe_wait(self) -> None:
        """§5.3.3.8 PickProbeWait: a random round-count head start (0 or 1) and a random wall
        clock wait in [2, 3) s, from our seeded generator."""
        self.rounds_since_probe_up = self._rng.randrange(self.bw_probe_rand_rounds)
        self.bw_probe_wait = self.bw_probe_wait_base + self.bw_probe_wait_rand * self._rng.random()

    def _is_reno_coexistence_probe_time(self) -> bool:
        """§5.3.3.8 IsRenoCoexistenceProbeTime: probe at least as often as a Reno flow with our
        BDP would lose a packet -- TargetInflight in segments, round trips -- capped at 63."""
        reno_rounds = self._target_inflight() / self.mss
        rounds = min(reno_rounds, self.bw_probe_max_rounds)
        return self.rounds_since_probe_up >= rounds

    def _target_inflight(self) -> float:
        """§5.3.3.8 TargetInflight: the BDP, unless congestion cut cwnd."""
        return min(self._bdp_multiple(self.bw, 1.0), float(self.cwnd))

    def _inflight_with_headroom(self) -> float:
        """§5.3.3.9 InflightWithHeadroom: inflight_hi less 15% (at least a segment) for cross
        traffic; never below MinPipeCwnd."""
        if self.inflight_hi == INF:
            return INF
        headroom = max(float(self.mss), self.headroom * self.inflight_hi)
        return max(self.inflight_hi - headroom, float(self._min_pipe_cwnd()))

    def _raise_inflight_hi_slope(self) -> None:
        """§5.3.3.9 RaiseInflightLongtermSlope: each round of UP doubles inflight_hi's growth."""
        growth_this_round = 1 << self.bw_probe_up_rounds
        self.bw_probe_up_rounds = min(self.bw_probe_up_rounds + 1, 30)
        self.probe_up_acked_per_inc = max(self.cwnd / growth_this_round, float(self.mss))

    def _probe_inflight_hi_upward(self, rs: _RS) -> None:
        """§5.3.3.9 ProbeInflightLongtermUpward: one SMSS per probe_up_acked_per_inc ACKed, while
        inflight_hi is what holds the flight back."""
        if not self.is_cwnd_limited or self.cwnd < self.inflight_hi:
            return
        self.bw_probe_up_acked += rs.newly_acked
        if self.bw_probe_up_acked >= self.probe_up_acked_per_inc:
            delta = int(self.bw_probe_up_acked // self.probe_up_acked_per_inc)
            self.bw_probe_up_acked -= delta * self.probe_up_acked_per_inc
            self.inflight_hi += delta * self.mss
        if self.round_start:
            self._raise_inflight_hi_slope()

    def _adapt_long_term_model(self, rs: _RS) -> bool:
        """§5.3.3.9 AdaptLongTermModel: track what the ACKs say about the last probe; advance the
        max_bw filter a round after UP ends; re-probe at once after a precautionary stop that
        saw no excess loss (§5.3.3.6); raise inflight_hi when a higher flight proved safe.
        Returns whether it decided a state transition."""
        if self.ack_phase == ACKS_PROBE_STARTING and self.round_start:
            self.ack_phase = ACKS_PROBE_FEEDBACK  # starting to get bw probing samples
        if self.ack_phase == ACKS_PROBE_STOPPING and self.round_start:
            self.is_bw_probe_sample = False  # end of samples from the probing phase
            self.ack_phase = ACKS_INIT
            if self._is_in_probe_bw() and not rs.is_app_limited:
                self._advance_max_bw_filter()
            if self._is_in_probe_bw() and self.prev_probe_precautionary and not self.prev_probe_too_high:
                self._start_probe_bw_refill()
                return True
        if not self._is_inflight_too_high(rs):
            if self.inflight_hi == INF:
                return False  # no upper bound to raise
            if rs.tx_in_flight > self.inflight_hi:
                self.inflight_hi = float(rs.tx_in_flight)
            if self.state_name == PROBE_BW_UP:
                self._probe_inflight_hi_upward(rs)
        return False

    # ------------------------------------------------------------------ §5.5.10.2 loss while probing

    def _is_inflight_too_high(self, rs: _RS) -> bool:
        """§5.5.10.2 IsInflightTooHigh: the loss rate since the sampled packet left exceeds
        LossThresh (any loss, without SACK). ECN (Linux bbr_is_inflight_too_high): more than
        ecn_thresh of what the sample delivered was CE-marked."""
        if rs.lost > 0:
            if rs.lost > rs.tx_in_flight * self.loss_thresh and rs.tx_in_flight > 0:
                return True
            if not self._has_sack:
                return True
        if self.ecn_eligible and self.ecn_thresh and rs.delivered > 0:
            if rs.delivered_ce > rs.delivered * self.ecn_thresh:
                return True
        return False

    def _handle_inflight_too_high(self, rs: _RS) -> None:
        """§5.5.10.2 HandleInflightTooHigh: once per probe, inflight_hi to the flight at which the
        loss rate crossed the threshold (not below Beta x TargetInflight), and UP ends."""
        self.prev_probe_too_high = True
        self.is_bw_probe_sample = False  # only react once per bw probe
        if not rs.is_app_limited:
            self.inflight_hi = max(float(rs.tx_in_flight), self._target_inflight() * self.beta)
        if self.state_name == PROBE_BW_UP:
            self.undo_state = PROBE_BW_UP
            self._start_probe_bw_down()

    def _note_loss(self) -> None:
        """§5.5.10.2 NoteLoss: the loss round ends a round trip after its first loss. (The
        draft also calls SaveStateUponLoss here; we save it where an episode starts, in
        `on_congestion_event` and `on_rto`, as Linux's bbr_ssthresh does, so that an undo
        restores the model as it stood "before the loss episode" (§5.5.11.2) and not as the
        episode's own earlier rounds left it.)"""
        if not self.is_loss_in_round:
            self.loss_round_delivered = self._delivered
        self.is_loss_in_round = True

    def _handle_lost_packet(self, rs: _RS) -> None:
        """§5.5.10.2 HandleLostPacket, once per ACK that marked losses: the bytes it marked are
        the "packet" P, sent about when the ACK's sampled packet was (see the module
        docstring)."""
        self._note_loss()
        if not self.is_bw_probe_sample:
            return  # not a packet sent while probing bandwidth
        if self._is_inflight_too_high(rs):
            probe = _copy_rs(rs)
            probe.tx_in_flight = self._inflight_at_loss(rs, rs.newly_lost)
            self._handle_inflight_too_high(probe)

    def _inflight_at_loss(self, rs: _RS, size: int) -> int:
        """§5.5.10.2 InflightAtLoss: at which prefix of P did the loss rate cross LossThresh?
        lost_prefix = (LossThresh x inflight_prev - lost_prev) / (1 - LossThresh)."""
        inflight_prev = rs.tx_in_flight - size
        if inflight_prev < 0:
            return rs.tx_in_flight  # Linux: an implausible sample; do not refine
        lost_prev = max(0, rs.lost - size)
        budget = self.loss_thresh * inflight_prev
        lost_prefix = 0.0 if lost_prev >= budget else (budget - lost_prev) / (1.0 - self.loss_thresh)
        return int(inflight_prev + lost_prefix)

    # ------------------------------------------------------------------ §5.3.4 ProbeRTT and min_rtt

    def _update_min_rtt(self, rs: _RS) -> None:
        """§5.3.4.3 UpdateMinRTT: probe_rtt_min_delay is the min over ProbeRTTInterval (5 s);
        min_rtt the min over MinRTTFilterLen (10 s). Samples are rounded to microseconds, as
        Linux compares them: equal RTTs must not count as "lower" through float noise."""
        now = self._now
        self.probe_rtt_expired = now > self.probe_rtt_min_stamp + self.probe_rtt_interval
        rtt = rs.rtt
        if rtt is not None and rtt >= 0:
            rtt = round(rtt * 1e6) / 1e6
            if rtt < self.probe_rtt_min_delay or self.probe_rtt_expired:
                self.probe_rtt_min_delay = rtt
                self.probe_rtt_min_stamp = now
        min_rtt_expired = now > self.min_rtt_stamp + self.min_rtt_filter_len
        if self.probe_rtt_min_delay < self.min_rtt or min_rtt_expired:
            self.min_rtt = self.probe_rtt_min_delay
            self.min_rtt_stamp = self.probe_rtt_min_stamp

    def _check_probe_rtt(self, rs: _RS) -> None:
        """§5.3.4.3 CheckProbeRTT: enter ProbeRTT when the 5 s RTT minimum has expired (unless
        an idle restart just drained the queue), then run it; an ACK of new data ends the idle
        restart."""
        if (self.probe_rtt_duration > 0 and self.state_name != PROBE_RTT and self.probe_rtt_expired
                and not self.idle_restart):
            self._set_state(PROBE_RTT)  # EnterProbeRTT
            self._save_cwnd()
            self.probe_rtt_done_stamp = 0.0
            self.ack_phase = ACKS_PROBE_STOPPING
            self._start_round()
            self._al_start = self._delivered
        if self.state_name == PROBE_RTT:
            self._handle_probe_rtt()
        if rs.delivered > 0:
            self.idle_restart = False

    def _handle_probe_rtt(self) -> None:
        """§5.3.4.3 HandleProbeRTT: hold the flight at ProbeRTTCwnd for 200 ms and a round."""
        # MarkConnectionAppLimited: C.app_limited = max(C.delivered + C.inflight, 1).
        self._al_end = max(self._delivered + self._inflight, 1)
        if not self.probe_rtt_done_stamp and self._inflight <= self._probe_rtt_cwnd():
            self.probe_rtt_done_stamp = self._now + self.probe_rtt_duration
            self.probe_rtt_round_done = False
            self._start_round()
        elif self.probe_rtt_done_stamp:
            if self.round_start:
                self.probe_rtt_round_done = True
            if self.probe_rtt_round_done:
                self._check_probe_rtt_done()

    def _check_probe_rtt_done(self) -> None:
        """§5.3.4.3 CheckProbeRTTDone."""
        if self.probe_rtt_done_stamp and self._now > self.probe_rtt_done_stamp:
            self.probe_rtt_min_stamp = self._now  # schedule the next ProbeRTT
            self._restore_cwnd()
            self._exit_probe_rtt()

    def _exit_probe_rtt(self) -> None:
        """§5.3.4.4 ExitProbeRTT: forget the short-term model; restart the ProbeBW clock at
        DOWN but cruise at once (the flight is below the BDP already), or back to Startup."""
        self._reset_short_term_model()
        if self.full_bw_reached:
            self._start_probe_bw_down()
            self._start_probe_bw_cruise()
        else:
            self._enter_startup()

    def _probe_rtt_app_limited(self, prior_delivered: int) -> bool:
        """Our stand-in for ProbeRTT's MarkConnectionAppLimited: was the sample's packet sent
        while the engine would have carried that mark, i.e. with its P.delivered in
        [delivered at ProbeRTT entry, the last mark]? Once delivered has passed the mark after
        ProbeRTT, the mark is gone."""
        if self._al_start <= prior_delivered <= self._al_end:
            return True
        if prior_delivered > self._al_end and self.state_name != PROBE_RTT:
            self._al_end = 0
        return False

    def _probe_rtt_cwnd(self) -> float:
        """§5.6.4.5 ProbeRTTCwnd: half the BDP, at least MinPipeCwnd."""
        return max(self._bdp_multiple(self.bw, self.probe_rtt_cwnd_gain), float(self._min_pipe_cwnd()))

    # ------------------------------------------------------------------ ECN (Linux v3, simplified)

    def _update_ecn_alpha(self) -> None:
        """Linux bbr_update_ecn_alpha, once per round: ecn_alpha is an EWMA (gain 1/16) of the
        CE-marked fraction of what was delivered; Startup ends after `full_ecn_cnt` rounds at or
        above ecn_thresh (bbr_check_ecn_too_high_in_startup)."""
        if not self.ecn_eligible:
            if self._delivered_ce and self.ecn_factor and (
                    not self.ecn_max_rtt or self.min_rtt <= self.ecn_max_rtt):
                self.ecn_eligible = True
            else:
                return
        delivered = self._delivered - self._alpha_last_delivered
        if delivered <= 0:
            return
        ce_ratio = (self._delivered_ce - self._alpha_last_delivered_ce) / delivered
        g = self.ecn_alpha_gain
        self.ecn_alpha = min(1.0, (1.0 - g) * self.ecn_alpha + g * ce_ratio)
        self._alpha_last_delivered = self._delivered
        self._alpha_last_delivered_ce = self._delivered_ce
        if self.full_bw_reached or not self.full_ecn_cnt or not self.ecn_thresh:
            return
        self.startup_ecn_rounds = self.startup_ecn_rounds + 1 if ce_ratio >= self.ecn_thresh else 0
        if self.startup_ecn_rounds >= self.full_ecn_cnt:
            self._handle_queue_too_high_in_startup()
            self.undo_state = None  # a CE mark is never undone

    # ------------------------------------------------------------------ §5.6 the controls

    def _bdp_multiple(self, bw: float, gain: float) -> float:
        """§5.6.4.2 BDPMultiple: gain x bw x min_rtt; the initial window with no RTT sample."""
        if self.min_rtt == INF:
            return float(self.initial_cwnd)
        return gain * bw * self.min_rtt

    def _min_pipe_cwnd(self) -> int:
        """§2.8 BBR.MinPipeCwnd."""
        return MIN_PIPE_CWND_SEGMENTS * self.mss

    def _quantization_budget(self, inflight_cap: float) -> float:
        """§5.6.4.2 QuantizationBudget, with the TCP offload budget of §5.5.8.1 (3 quanta)."""
        self.offload_budget = 3 * (self.send_quantum or 0)
        inflight_cap = max(inflight_cap, float(self.offload_budget), float(self._min_pipe_cwnd()))
        if self.state_name == PROBE_BW_UP:
            inflight_cap += 2 * self.mss
        return inflight_cap

    def _inflight_at(self, bw: float, gain: float) -> float:
        """§5.6.4.2 Inflight(gain), for a given bw (the draft uses BBR.bw or BBR.max_bw)."""
        return self._quantization_budget(self._bdp_multiple(bw, gain))

    def _update_max_inflight(self) -> None:
        """§5.6.4.2 UpdateMaxInflight."""
        inflight_cap = self._bdp_multiple(self.bw, self.cwnd_gain_now) + self.extra_acked
        self.max_inflight = self._quantization_budget(inflight_cap)

    def _init_pacing_rate(self, srtt: float | None) -> None:
        """§5.6.2 InitPacingRate: StartupPacingGain x InitialCwnd / (srtt, or 1 ms without one)."""
        if srtt:
            rtt = max(srtt, 1e-6)
            self.has_seen_rtt = True
        else:
            rtt = 0.001
        self.pacing_rate = min(self.startup_pacing_gain * self.initial_cwnd / rtt, _MAX_PACING_RATE)

    def _set_pacing_rate_with_gain(self, gain: float) -> None:
        """§5.6.2 SetPacingRateWithGain: gain x bw, 1% below; before the pipe is full, only up."""
        rate = min(gain * self.bw * (1.0 - self.pacing_margin), _MAX_PACING_RATE)
        if rate > 0 and (self.full_bw_reached or rate > (self.pacing_rate or 0.0)):
            self.pacing_rate = rate

    def _set_pacing_rate(self, srtt: float | None) -> None:
        """§5.6.2 SetPacingRate; the nominal initial rate is redone from the first srtt (§5.6.2:
        "the initial C.srtt after the first non-zero RTT sample")."""
        if not self.has_seen_rtt and srtt:
            self._init_pacing_rate(srtt)
        self._set_pacing_rate_with_gain(self.pacing_gain)

    def _set_send_quantum(self) -> None:
        """§5.6.3 SetSendQuantum: 1 ms at the pacing rate, at most 64 KB, at least 2 SMSS."""
        quantum = (self.pacing_rate or 0.0) * 0.001
        quantum = min(quantum, SEND_QUANTUM_MAX)
        self.send_quantum = int(max(quantum, 2 * self.mss))

    def _set_cwnd(self, rs: _RS) -> None:
        """§5.6.4.6 SetCwnd: towards max_inflight by what was delivered; once the pipe is full,
        straight down to it when above. Then the ProbeRTT and model bounds."""
        self._update_max_inflight()
        cwnd = float(self.cwnd)
        if self.full_bw_reached:
            cwnd = min(cwnd + rs.newly_acked, self.max_inflight)
        elif cwnd < self.max_inflight or self._delivered < self.initial_cwnd:
            cwnd = cwnd + rs.newly_acked
        cwnd = max(cwnd, float(self._min_pipe_cwnd()))
        self.cwnd = int(cwnd)
        self._bound_cwnd_for_probe_rtt()
        self._bound_cwnd_for_model()

    def _bound_cwnd_for_probe_rtt(self) -> None:
        """§5.6.4.5 BoundCwndForProbeRTT."""
        if self.state_name == PROBE_RTT:
            self.cwnd = int(min(self.cwnd, self._probe_rtt_cwnd()))

    def _bound_cwnd_for_model(self) -> None:
        """§5.6.4.7 BoundCwndForModel: inflight_hi while probing (DOWN, REFILL, UP), with 15%
        headroom in CRUISE and ProbeRTT, and inflight_lo always."""
        cap = INF
        state = self.state_name
        if state in PROBE_BW_STATES and state != PROBE_BW_CRUISE:
            cap = self.inflight_hi
        elif state in (PROBE_RTT, PROBE_BW_CRUISE):
            cap = self._inflight_with_headroom()
        cap = min(cap, self.inflight_lo)
        cap = max(cap, float(self._min_pipe_cwnd()))
        if cap < self.cwnd:
            self.cwnd = int(cap)

    # ------------------------------------------------------------------ §5.6.4.4 recovery, §5.5.11 undo

    def _save_cwnd(self) -> None:
        """§5.6.4.4 SaveCwnd: the last cwnd not cut by recovery or ProbeRTT."""
        if not self._in_recovery and self.state_name != PROBE_RTT:
            self.prior_cwnd = self.cwnd
        else:
            self.prior_cwnd = max(self.prior_cwnd, self.cwnd)

    def _restore_cwnd(self) -> None:
        """§5.6.4.4 RestoreCwnd."""
        self.cwnd = max(self.cwnd, self.prior_cwnd)

    def _save_state_upon_loss(self) -> None:
        """§5.5.11.1 SaveStateUponLoss."""
        self._save_cwnd()
        self.undo_state = None
        self.undo_bw_lo = self.bw_lo
        self.undo_inflight_lo = self.inflight_lo
        self.undo_inflight_hi = self.inflight_hi

    def _exit_recovery(self) -> None:
        """§5.6.4.4: leaving loss recovery (fast or RTO), restore the last known good cwnd; the
        next SetCwnd bounds it by the model again."""
        self._in_recovery = None
        self._restore_cwnd()

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """§5.6.4.4 OnEnterFastRecovery (``"dupack"``): SaveCwnd and SaveStateUponLoss; BBR
        does not cut its window (no ssthresh, no PRR; losses reach the model on the ACKs).

        ``"tlp"``: a loss probe repaired a tail loss that was never marked lost; as Linux's
        bbr_run_loss_probe_recovery, note the loss, and while probing check whether one lost
        segment over the last round's flight is too much. ``"ecn"``: BBRv3 answers ECE per ACK,
        not per window; nothing to do here."""
        self._now = ev.now
        if ev.cause == "dupack":
            if not self._in_recovery:
                self._save_state_upon_loss()
            self._in_recovery = "fast"
        elif ev.cause == "tlp":
            self._note_loss()
            if self.is_bw_probe_sample:
                rs = _RS.__new__(_RS)
                rs.lost = self.mss
                rs.tx_in_flight = self.inflight_latest + self.mss
                rs.is_app_limited = False
                rs.delivered = rs.delivered_ce = 0
                if self._is_inflight_too_high(rs):
                    self._handle_inflight_too_high(rs)

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """The recovery point was acknowledged: §5.6.4.4 RestoreCwnd (the ACK's SetCwnd then
        bounds it by the model). Also called after "tlp" and "ecn" episodes, which were no
        recovery for BBR."""
        if self._in_recovery:
            self._exit_recovery()

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """§5.6.4.4 OnEnterRTO: SaveCwnd, SaveStateUponLoss -- when the timeout starts an
        episode, as Linux's tcp_enter_loss() calls bbr_ssthresh: not on a re-expiry with no ACK
        in between (that would save the 1-segment window's state), nor during a fast recovery
        that saved it already -- then cwnd = C.inflight + 1: everything is about to be marked lost,
        so one segment. As Linux's bbr_set_state(TCP_CA_Loss), when not probing and no
        inflight_lo is set yet, inflight_lo starts from the window before the timeout, so that
        InitLowerBounds does not take the 1-segment cwnd as the path's capacity."""
        self._now = now
        if not self._in_recovery or (self._in_recovery == "rto" and self._acked_since_rto):
            self._save_state_upon_loss()
        self._acked_since_rto = False
        self._in_recovery = "rto"
        if not self._is_probing_bw() and self.inflight_lo == INF:
            self.inflight_lo = float(max(self.cwnd, self.prior_cwnd))
        self.cwnd = self.mss

    def on_undo(self, ev: UndoEvent) -> None:
        """§5.5.11.2 HandleSpuriousLossDetection: restore cwnd and the model saved at the start
        of the episode; if the episode ended Startup or ProbeBW_UP, go back to probing."""
        self._now = ev.now
        self._in_recovery = None
        self._restore_cwnd()
        self.is_loss_in_round = False
        self._reset_full_bw()
        self.bw_lo = max(self.bw_lo, self.undo_bw_lo)
        self.inflight_lo = max(self.inflight_lo, self.undo_inflight_lo)
        self.inflight_hi = max(self.inflight_hi, self.undo_inflight_hi)
        if self.undo_state == STARTUP and self.state_name != STARTUP:
            self.full_bw_reached = False
            if self.state_name != PROBE_RTT:
                self._enter_startup()
        elif self.undo_state == PROBE_BW_UP and self.state_name != PROBE_BW_UP:
            if self.state_name != PROBE_RTT:
                self._start_probe_bw_refill()
        self.undo_state = None
        self._bound_bw_for_model()

    def on_idle_restart(self, now: float, idle: float, rto: float) -> None:
        """§5.4.1 HandleRestartFromIdle: the engine calls this when new data is about to leave
        with nothing in flight and the sender was app-limited. cwnd stays; in ProbeBW pace at
        exactly bw; in ProbeRTT the idle time may have completed it."""
        self._now = now
        self.idle_restart = True
        self.extra_acked_interval_start = now
        if self._is_in_probe_bw():
            self._set_pacing_rate_with_gain(1.0)
        elif self.state_name == PROBE_RTT:
            self._check_probe_rtt_done()
        self._set_send_quantum()

    def on_mss_change(self, mss: int) -> None:
        """Keep the segment counts of every byte window, as Linux (which counts packets) does."""
        old = self.mss
        super().on_mss_change(mss)
        if old == mss:
            return
        r = self._rescale
        self.initial_cwnd = max(int(r(self.initial_cwnd, old)), mss)
        self.prior_cwnd = int(r(self.prior_cwnd, old))
        for name in ("inflight_hi", "inflight_lo", "undo_inflight_hi", "undo_inflight_lo"):
            value = getattr(self, name)
            if value != INF:
                setattr(self, name, r(value, old))
        self.max_inflight = r(self.max_inflight, old)
        if not self.has_seen_rtt:
            self._init_pacing_rate(None)  # the initial window in bytes changed
        self._set_send_quantum()

    # ------------------------------------------------------------------ helpers

    def state(self) -> dict[str, Any]:
        """What the CC log records per ACK (Linux bbr_get_info and more)."""
        st = self.state_name
        return {
            "mode": "PROBE_BW" if st in PROBE_BW_STATES else st,
            "state": st,
            "substate": st[len("PROBE_BW_"):] if st in PROBE_BW_STATES else None,
            "max_bw": self.max_bw,
            "bw": self.bw,
            "bw_lo": _finite(self.bw_lo),
            "bw_latest": self.bw_latest,
            "inflight_hi": _finite(self.inflight_hi),
            "inflight_lo": _finite(self.inflight_lo),
            "inflight_latest": self.inflight_latest,
            "max_inflight": self.max_inflight,
            "min_rtt": _finite(self.min_rtt),
            "probe_rtt_min_delay": _finite(self.probe_rtt_min_delay),
            "pacing_gain": self.pacing_gain,
            "cwnd_gain": self.cwnd_gain_now,
            "round_count": self.round_count,
            "cycle_count": self.cycle_count,
            "full_bw": self.full_bw,
            "full_bw_reached": self.full_bw_reached,
            "full_bw_now": self.full_bw_now,
            "ack_phase": self.ack_phase,
            "bw_probe_wait": self.bw_probe_wait,
            "rounds_since_probe_up": self.rounds_since_probe_up,
            "is_bw_probe_sample": self.is_bw_probe_sample,
            "prev_probe_too_high": self.prev_probe_too_high,
            "loss_in_round": self.is_loss_in_round,
            "extra_acked": self.extra_acked,
            "prior_cwnd": self.prior_cwnd,
            "undo_state": self.undo_state,
            "ecn_alpha": self.ecn_alpha if self.ecn_eligible else None,
            "tx_in_flight": self.rs.tx_in_flight if hasattr(self, "rs") else None,
            "rs_lost": self.rs.lost if hasattr(self, "rs") else None,
        }


def _finite(x: float) -> float | None:
    """Infinity as None in the log (JSON has no infinity)."""
    return None if x == INF else x


def _copy_rs(rs: _RS) -> _RS:
    out = _RS.__new__(_RS)
    for name in _RS.__slots__:
        setattr(out, name, getattr(rs, name))
    return out
