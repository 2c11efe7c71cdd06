"""BBR version 1, as Linux's net/ipv4/tcp_bbr.c runs it, for comparison with the kernel's bbr.

BBR ("Bottleneck Bandwidth and Round-trip propagation time") does not read loss as a congestion
signal. It keeps a two-number model of the path -- the bottleneck bandwidth (the windowed maximum
of the delivery-rate samples over 10 round trips) and the propagation delay (the windowed minimum
RTT over 10 seconds) -- and sets three controls from it on every ACK: the pacing rate
(pacing_gain x bw), the window (cwnd_gain x BDP plus a budget for bursts) and the send quantum.
A small state machine varies the gains to probe: STARTUP doubles the rate each round until the
bandwidth stops growing, DRAIN removes the queue STARTUP built, PROBE_BW cycles the pacing gain
around 1.0 (1.25 to look for more bandwidth, 0.75 to drain what that put in the queue, then six
phases at 1.0), and PROBE_RTT drops to 4 packets in flight for 200 ms when the minimum RTT has
not been seen again for 10 seconds.

Sources. The reference is Linux's tcp_bbr.c (the v1 algorithm as it is in mainline today,
including the ACK-aggregation allowance of Linux 5.1 and the EDT in-network estimate of 4.20),
with lib/win_minmax.c for the bandwidth filter. Each method names the Linux function it follows.
The IETF description of the same algorithm is draft-cardwell-iccrg-bbr-congestion-control-00
(July 2017, "the draft" below); section numbers cited are that draft's. Where Linux and the draft
differ, we follow Linux, because the point of this module is to be compared with the kernel.

Units and conversions
---------------------
Linux counts windows in packets, bandwidth in packets per microsecond scaled by 2^24 (BW_SCALE),
gains in 1/256 (BBR_SCALE), and time in microseconds or jiffies. Here, as everywhere in usertcp:

- windows, in-flight, delivered and lost counts are in BYTES (``self.mss`` converts a packet
  count: a Linux constant of N packets is N * mss bytes);
- bandwidth is in BYTES PER SECOND (the engine's rate samples come that way: delivered bytes over
  the interval), so ``bw * min_rtt`` is a BDP in bytes directly;
- gains are plain floats; the defaults are Linux's fixed-point values divided by 256 (so
  high_gain is 739/256 = 2.88672, not 2/ln 2 = 2.88539), so that our numbers are the kernel's;
- times are SECONDS (floats).

Where Linux rounds to whole packets (the BDP is rounded *up* to whole packets, the quantization
budget to an even number of packets), we round to whole segments of ``mss`` bytes, so that the
window targets come out as the same number of segments as the kernel's.

Linux name -> ours
------------------
=========================================  =============================================================
Linux (tcp_bbr.c)                          here
=========================================  =============================================================
bbr_main (cong_control)                    `Bbr.cong_control`
bbr_init                                   `Bbr.__init__`
bbr_ssthresh (ssthresh)                    `Bbr.on_congestion_event` (saves cwnd only)
bbr_set_state(TCP_CA_Loss)                 `Bbr.on_rto`
bbr_undo_cwnd (undo_cwnd)                  `Bbr.on_undo`
bbr_cwnd_event(CA_EVENT_TX_START)          `Bbr.on_idle_restart`
bbr_get_info (get_info)                    `Bbr.state`
icsk_ca_state                              ``_ca_state`` (CA_OPEN, CA_RECOVERY, CA_LOSS)
bbr->prev_ca_state                         ``_prev_ca_state``
struct minmax bw, minmax_running_max       `WindowedMax`, ``_bw_filter``
bbr_max_bw                                 ``max_bw``
bbr_bw                                     ``bw`` (lt_bw when lt_use_bw)
bbr_update_model                           ``_update_model``
bbr_update_bw                              ``_update_bw``
bbr_lt_bw_sampling                         ``_lt_bw_sampling``
bbr_lt_bw_interval_done                    ``_lt_bw_interval_done``
bbr_reset_lt_bw_sampling                   ``_reset_lt_bw_sampling``
bbr_reset_lt_bw_sampling_interval          ``_reset_lt_bw_sampling_interval``
bbr_update_ack_aggregation                 ``_update_ack_aggregation``
bbr_ack_aggregation_cwnd                   ``_ack_aggregation_cwnd``
bbr_update_cycle_phase                     ``_update_cycle_phase``
bbr_is_next_cycle_phase                    ``_is_next_cycle_phase``
bbr_advance_cycle_phase                    ``_advance_cycle_phase``
bbr_check_full_bw_reached                  ``_check_full_bw_reached``
bbr_check_drain                            ``_check_drain``
bbr_update_min_rtt                         ``_update_min_rtt``
bbr_check_probe_rtt_done                   ``_check_probe_rtt_done``
bbr_update_gains                           ``_update_gains``
bbr_reset_mode                             ``_reset_mode``
bbr_reset_startup_mode                     ``mode = STARTUP``
bbr_reset_probe_bw_mode                    ``_reset_probe_bw_mode``
bbr_set_pacing_rate                        ``_set_pacing_rate``
bbr_init_pacing_rate_from_rtt              ``_init_pacing_rate_from_rtt``
bbr_bw_to_pacing_rate                      ``_rate`` (bw x gain x (1 - pacing_margin))
bbr_rate_bytes_per_sec                     ``_rate``
bbr_tso_segs_goal, bbr_min_tso_segs        ``_tso_segs_goal`` (segments); ``send_quantum`` is that x mss
bbr_bdp                                    ``_bdp`` (bytes, whole segments, rounded up)
bbr_quantization_budget                    ``_quantization_budget`` (bytes)
bbr_inflight                               ``_inflight``
bbr_packets_in_net_at_edt                  ``_in_net_at_edt``
bbr_set_cwnd                               ``_set_cwnd``
bbr_set_cwnd_to_recover_or_restore         ``_recover_or_restore``
bbr_save_cwnd                              ``_save_cwnd``
bbr_bw_rtts (CYCLE_LEN + 2 = 10)           param ``bw_window_rounds`` = 10
bbr_min_rtt_win_sec (10)                   param ``min_rtt_window`` = 10.0 s
bbr_probe_rtt_mode_ms (200)                param ``probe_rtt_duration`` = 0.2 s
bbr_min_tso_rate (1.2 Mbit/s)              ``MIN_TSO_RATE`` = 150000 bytes/s
bbr_pacing_margin_percent (1)              param ``pacing_margin`` = 0.01
bbr_high_gain (BBR_UNIT*2885/1000+1)       param ``high_gain`` = 739/256
bbr_drain_gain (BBR_UNIT*1000/2885)        param ``drain_gain`` = 88/256
bbr_cwnd_gain (BBR_UNIT*2)                 param ``cwnd_gain`` = 2.0
bbr_pacing_gain[] (5/4, 3/4, 1 x 6)        ``PACING_GAIN_CYCLE``
CYCLE_LEN (8), bbr_cycle_rand (7)          ``CYCLE_LEN``, ``CYCLE_RAND``; param ``seed``
bbr_cwnd_min_target (4)                    ``CWND_MIN_TARGET`` = 4 segments
bbr_full_bw_thresh (BBR_UNIT*5/4)          param ``full_bw_threshold`` = 1.25
bbr_full_bw_cnt (3)                        param ``full_bw_rounds`` = 3
bbr_lt_intvl_min_rtts (4)                  param ``lt_interval_min_rounds`` = 4
bbr_lt_loss_thresh (50 / BBR_UNIT)         param ``lt_loss_threshold`` = 50/256
bbr_lt_bw_ratio (BBR_UNIT / 8)             param ``lt_bw_ratio`` = 0.125
bbr_lt_bw_diff (4000 / 8 bytes/s)          param ``lt_bw_diff`` = 500.0 bytes/s
bbr_lt_bw_max_rtts (48)                    param ``lt_bw_max_rounds`` = 48
bbr_extra_acked_gain (BBR_UNIT)            param ``extra_acked_gain`` = 1.0
bbr_extra_acked_win_rtts (5)               param ``extra_acked_window_rounds`` = 5
bbr_extra_acked_max_us (100 ms)            param ``extra_acked_max`` = 0.1 s
bbr_ack_epoch_acked_reset_thresh (2^20)    ``ACK_EPOCH_RESET_SEGMENTS`` (x mss bytes)
TCP_INIT_CWND (10)                         ``INITIAL_WINDOW_SEGMENTS`` (x mss bytes)
tp->delivered                              ``ack.delivered_total``
tp->delivered_mstamp                       ``_delivered_time`` (when delivered_total last grew)
tp->lost                                   ``_lost`` (the sum of the samples' ``losses``)
tcp_packets_in_flight(tp)                  ``ack.bytes_in_flight``
rs->acked_sacked                           ``ack.rate.acked_sacked``
rs->losses                                 ``ack.rate.losses``
rs->prior_in_flight                        ``ack.rate.prior_in_flight``
rs->prior_delivered                        ``ack.rate.prior_delivered``
rs->is_app_limited                         ``ack.rate.is_app_limited``
rs->rtt_us                                 ``ack.rate.rtt`` (rounded to whole microseconds)
rs->delivered < 0 || rs->interval_us <= 0  ``ack.rate.delivery_rate is None``
=========================================  =============================================================

What we cannot do exactly as Linux does (each is explained where it matters)
---------------------------------------------------------------------------
- bbr_packets_in_net_at_edt() subtracts what the path drains before the pacer's next departure
  time (tp->tcp_wstamp_ns); the engine does not tell a controller that time, so we take it as
  "now" (the estimate Linux made before 4.20, plus the EDT skb term).
- bbr_update_min_rtt() writes tp->app_limited during PROBE_RTT, so that the low-rate samples of
  those packets are ignored; a controller here cannot write the engine's rate estimator. We keep
  our own record of the delivered range that Linux would have marked and treat samples built on
  packets sent in it as app-limited (``_probe_rtt_app_limited``).
- On an RTO, Linux sets cwnd = packets in flight after the timeout's loss marking + 1; `on_rto`
  is called before the engine marks anything, so we use the draft's one segment (§4.2.3.4),
  which is the same value whenever everything outstanding is marked lost.
- rs->is_ack_delayed (Linux's FLAG_ACK_MAYBE_DELAYED, a lone sub-MSS segment acknowledged on its
  own) is rebuilt from the sample, short of one input (``_is_ack_delayed``).
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import Any

from .api import (
    INITIAL_WINDOW_SEGMENTS,
    TCP_INFINITE_SSTHRESH,
    AckSample,
    CongestionControl,
    CongestionEvent,
    UndoEvent,
    param,
)

__all__ = ["Bbr", "WindowedMax", "STARTUP", "DRAIN", "PROBE_BW", "PROBE_RTT", "PACING_GAIN_CYCLE"]

# enum bbr_mode
STARTUP = "STARTUP"
DRAIN = "DRAIN"
PROBE_BW = "PROBE_BW"
PROBE_RTT = "PROBE_RTT"

# Linux's congestion-avoidance states (enum tcp_ca_state), of which BBR only asks "below
# TCP_CA_Recovery or not"; TCP_CA_Disorder and TCP_CA_CWR behave as Open for it.
CA_OPEN = 0
CA_RECOVERY = 3
CA_LOSS = 4

CYCLE_LEN = 8
PACING_GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
"""bbr_pacing_gain[]: probe for more bandwidth, drain what that queued, cruise for six phases.
The values are exact in 8-bit fixed point, so these floats are Linux's."""
CYCLE_RAND = 7
"""bbr_cycle_rand: the start phase is drawn among 7 of the 8 phases, never the 0.75 one (draft
§4.3.4.2: entering PROBE_BW there is no queue for it to drain)."""

CWND_MIN_TARGET = 4
"""bbr_cwnd_min_target, segments: two 2-segment flights keep an every-other-segment ACK clock
going (draft §4.2.3.3, BBRMinPipeCwnd)."""

MIN_TSO_RATE = 1_200_000 / 8
"""bbr_min_tso_rate (1.2 Mbit/s) in bytes/s: below it, bursts of one segment."""

PACING_SHIFT = 10
"""sk_pacing_shift: a burst holds pacing_rate >> 10 bytes, about 1 ms of data."""

TSO_GOAL_MAX_BYTES = 65536 - 1 - 320
"""bbr_tso_segs_goal()'s cap: GSO_LEGACY_MAX_SIZE - 1 - MAX_TCP_HEADER, with MAX_TCP_HEADER =
L1_CACHE_ALIGN(128 + MAX_HEADER) = 320 on a usual x86-64 distribution kernel (LL_MAX_HEADER 128
with Hyper-V networking built, plus 48 for tunnels)."""

TSO_GOAL_MAX_SEGS = 0x7F
"""bbr_tso_segs_goal() never answers more than 127 segments."""

ACK_EPOCH_RESET_SEGMENTS = 1 << 20
"""bbr_ack_epoch_acked_reset_thresh, segments: an aggregation epoch that long starts over."""

ACK_EPOCH_MAX_SEGMENTS = 0xFFFFF
"""ack_epoch_acked is a 20-bit field in Linux: it saturates there."""

_MAX_PACING_RATE = 1e12
"""A ceiling (8 Tbit/s) standing in for sk_max_pacing_rate, so that no sample, however odd, can
make the engine's answer check reject the rate."""


class WindowedMax:
    """Kathleen Nichols' windowed max filter, as lib/win_minmax.c (minmax_running_max) runs it.

    It keeps the best, second-best and third-best samples of the last `win` time units (here,
    rounds) in constant space, each younger than the one before, and spread over the window so
    that when the best one ages out the next is a good stand-in. Almost always it answers what a
    filter keeping every sample of the window would. A sample is forgotten once the newest time
    exceeds its own by more than `win`: with win = 10, a round-1 maximum still counts in round 11
    and is gone in round 12.
    """

    __slots__ = ("s",)

    def __init__(self, t: int = 0, value: float = 0.0) -> None:
        self.s: list[tuple[int, float]] = [(t, value)] * 3

    def reset(self, t: int, value: float) -> float:
        """minmax_reset: one sample, in all three places."""
        self.s = [(t, value)] * 3
        return value

    def get(self) -> float:
        """minmax_get: the windowed maximum."""
        return self.s[0][1]

    def update(self, win: int, t: int, value: float) -> float:
        """minmax_running_max: take the sample `value` at time `t`; return the new maximum."""
        s = self.s
        if value >= s[0][1] or t - s[2][0] > win:
            return self.reset(t, value)  # a new maximum, or nothing left in the window
        sample = (t, value)
        if value >= s[1][1]:
            s[2] = s[1] = sample
        elif value >= s[2][1]:
            s[2] = sample
        # minmax_subwin_update: age the choices as time passes.
        dt = t - s[0][0]
        if dt > win:
            # The best choice left the window: the second becomes the best, the third the
            # second, this sample the third; the (new) best may be outside too, so once more.
            s[0], s[1], s[2] = s[1], s[2], sample
            if t - s[0][0] > win:
                s[0], s[1], s[2] = s[1], s[2], sample
        elif s[1][0] == s[0][0] and dt > win / 4:
            # A quarter of the window without a new second choice: take one from this quarter.
            s[2] = s[1] = sample
        elif s[2][0] == s[1][0] and dt > win / 2:
            # Half the window without a new third choice: take one from the second half.
            s[2] = sample
        return s[0][1]


class _Sample:
    """What one ACK tells BBR: the fields of Linux's ``struct rate_sample`` that tcp_bbr.c reads,
    taken from the engine's `AckSample` (in bytes and seconds)."""

    __slots__ = ("valid", "bw", "delivered", "rtt", "losses", "acked_sacked", "prior_in_flight",
                 "prior_delivered", "is_app_limited", "is_ack_delayed")

    def __init__(self, ack: AckSample, mss: int) -> None:
        rs = ack.rate
        if rs is None:  # an engine older than API 2: no rate sample, only what the ACK says
            self.valid = False
            self.bw = 0.0
            self.delivered = 0
            self.rtt = ack.rtt
            self.losses = ack.lost_bytes
            self.acked_sacked = ack.acked_bytes + ack.sacked_bytes
            self.prior_in_flight = ack.bytes_in_flight
            self.prior_delivered = 0
            self.is_app_limited = ack.app_limited
        else:
            rate = rs.delivery_rate
            self.valid = rate is not None
            self.bw = rate if rate is not None else 0.0
            self.delivered = rs.delivered
            self.rtt = rs.rtt
            self.losses = rs.losses
            self.acked_sacked = rs.acked_sacked
            self.prior_in_flight = rs.prior_in_flight
            self.prior_delivered = rs.prior_delivered
            self.is_app_limited = rs.is_app_limited
        self.is_ack_delayed = _is_ack_delayed(self, ack, mss)


def _is_ack_delayed(s: _Sample, ack: AckSample, mss: int) -> bool:
    """Linux's FLAG_ACK_MAYBE_DELAYED (tcp_clean_rtx_queue): the ACK cumulatively acknowledged
    one segment, less than an MSS of data, with nothing SACKed and no loss or ECE, and nothing
    else was delivered since that segment left (prior_delivered + 1 == delivered) -- "a lone
    runt packet", whose ACK the receiver may have held back for its delayed-ACK timer. Its RTT
    sample then measures the receiver's timer, so an expired min_rtt is not refreshed with it.
    Linux also requires that nothing was SACKed *before* the ACK; the engine does not report
    that, and with the last condition it rarely matters."""
    return (
        0 < ack.acked_bytes < mss
        and ack.sacked_bytes == 0
        and s.losses == 0
        and s.delivered == s.acked_sacked == ack.acked_bytes
    )


class Bbr(CongestionControl):
    """BBR v1 (Linux tcp_bbr.c). See the module docstring for the mapping to Linux and the units.

    The engine calls `cong_control` (Linux's bbr_main) on every ACK that delivered data or
    marked losses, recovery included; the window in force is always ``cwnd``. Loss recovery is
    not a window reduction here: BBR keeps its model and only, for the first round of a fast
    recovery, holds the flight to what is being delivered (packet conservation), then restores
    the window it had.
    """

    name = "bbr"

    high_gain = param(739 / 256, "STARTUP pacing and cwnd gain (Linux bbr_high_gain, 2/ln 2 in 1/256ths)",
                      min=1.0, max=16.0)
    drain_gain = param(88 / 256, "DRAIN pacing gain (Linux bbr_drain_gain, 1/high_gain in 1/256ths)",
                       min=0.01, max=1.0)
    cwnd_gain = param(2.0, "PROBE_BW cwnd gain, in BDPs (Linux bbr_cwnd_gain)", min=0.25, max=16.0)
    pacing_margin = param(0.01, "pace this fraction below gain x bw (Linux bbr_pacing_margin_percent)",
                          min=0.0, max=0.5)
    probe_rtt_duration = param(0.2, "seconds at 4 segments in PROBE_RTT (Linux bbr_probe_rtt_mode_ms); "
                               "0 disables PROBE_RTT", min=0.0, max=10.0)
    min_rtt_window = param(10.0, "seconds a min_rtt sample stays valid (Linux bbr_min_rtt_win_sec)",
                           min=0.001, max=3600.0)
    bw_window_rounds = param(10, "rounds the bandwidth max filter covers (Linux bbr_bw_rtts)",
                             min=1, max=1000)
    full_bw_threshold = param(1.25, "growth per round that means STARTUP has not filled the pipe "
                              "(Linux bbr_full_bw_thresh)", min=1.0, max=10.0)
    full_bw_rounds = param(3, "rounds without that growth before the pipe counts as full "
                           "(Linux bbr_full_bw_cnt)", min=1, max=100)
    seed = param(0, "seed of the random PROBE_BW start phase (Linux uses get_random_u32_below); "
                 "give flows that share a bottleneck different seeds")
    lt_interval_min_rounds = param(4, "shortest policer-sampling interval, in rounds "
                                   "(Linux bbr_lt_intvl_min_rtts)", min=1, max=1000)
    lt_loss_threshold = param(50 / 256, "lost/delivered above which an interval is lossy "
                              "(Linux bbr_lt_loss_thresh)", min=0.0, max=1.0)
    lt_bw_ratio = param(1 / 8, "relative difference under which two intervals' rates agree "
                        "(Linux bbr_lt_bw_ratio)", min=0.0, max=1.0)
    lt_bw_diff = param(500.0, "absolute difference in bytes/s under which two intervals' rates "
                       "agree (Linux bbr_lt_bw_diff, 4 kbit/s)", min=0.0)
    lt_bw_max_rounds = param(48, "rounds to pace at the policed rate before probing again "
                             "(Linux bbr_lt_bw_max_rtts)", min=1, max=100000)
    extra_acked_gain = param(1.0, "gain on the ACK-aggregation cwnd allowance; 0 turns it off, as "
                             "before Linux 5.1 (Linux bbr_extra_acked_gain)", min=0.0, max=16.0)
    extra_acked_window_rounds = param(5, "rounds per half of the aggregation max filter "
                                      "(Linux bbr_extra_acked_win_rtts)", min=1, max=31)
    extra_acked_max = param(0.1, "cap on the aggregation allowance, in seconds at bw "
                            "(Linux bbr_extra_acked_max_us)", min=0.0, max=10.0)

    def __init__(self, mss: int, now: float = 0.0) -> None:
        """bbr_init (draft §4.3.1, BBRInit)."""
        super().__init__(mss, now)
        self.ssthresh = TCP_INFINITE_SSTHRESH  # BBR does not use ssthresh for its window
        self._rng = random.Random(self.seed)
        self.mode = STARTUP
        self.pacing_gain = self.high_gain
        self.cwnd_gain_now = self.high_gain
        # Connection counters BBR reads from tcp_sock; we keep the last values the engine gave.
        self._delivered = 0  # tp->delivered, bytes
        self._delivered_time = now  # tp->delivered_mstamp
        self._lost = 0  # tp->lost, bytes
        # Round counting (draft §4.1.1.3).
        self.round_count = 0  # bbr->rtt_cnt
        self.next_rtt_delivered = 0
        self.round_start = False
        # Bandwidth model (draft §4.1.1).
        self._bw_filter = WindowedMax(self.round_count, 0.0)
        # min_rtt model (draft §4.1.2); None is Linux's ~0U, "no sample yet".
        self.min_rtt: float | None = None
        self.min_rtt_stamp = now
        self.probe_rtt_done_stamp: float | None = None
        self.probe_rtt_round_done = False
        # Loss recovery (draft §4.2.3.4).
        self.packet_conservation = False
        self.prior_cwnd = 0
        self._ca_state = CA_OPEN  # icsk_ca_state, as the engine's hooks report it
        self._prev_ca_state = CA_OPEN  # bbr->prev_ca_state
        self._acked_since_rto = False  # Linux: icsk_retransmits == 0 again
        self.idle_restart = False
        # Full-pipe estimator (draft §4.3.2.2).
        self.full_bw_reached = False
        self.full_bw = 0.0
        self.full_bw_cnt = 0
        # Gain cycling (draft §4.3.4).
        self.cycle_mstamp = 0.0
        self.cycle_idx = 0
        # Long-term ("policer") bandwidth.
        self.lt_is_sampling = False
        self.lt_rtt_cnt = 0
        self.lt_use_bw = False
        self.lt_bw = 0.0
        self.lt_last_delivered = 0
        self.lt_last_stamp = 0  # milliseconds, as Linux keeps it
        self.lt_last_lost = 0
        self._reset_lt_bw_sampling()
        # ACK aggregation (Linux 5.1+).
        self.ack_epoch_mstamp = now
        self.ack_epoch_acked = 0
        self.extra_acked = [0.0, 0.0]
        self.extra_acked_win_rtts = 0
        self.extra_acked_win_idx = 0
        # Our stand-in for the tp->app_limited that PROBE_RTT writes in Linux: the delivered
        # range [start, end] during which Linux would have marked new transmissions app-limited.
        self._probe_rtt_al_start = 0
        self._probe_rtt_al_end = 0
        self.has_seen_rtt = False
        self._init_pacing_rate_from_rtt(None)
        self.send_quantum = self._tso_segs_goal() * self.mss

    # ------------------------------------------------------------------ the model's outputs

    @property
    def max_bw(self) -> float:
        """bbr_max_bw: the windowed maximum delivery rate, bytes/s."""
        return self._bw_filter.get()

    @property
    def bw(self) -> float:
        """bbr_bw: the bandwidth BBR paces by -- the policed rate while it believes in one."""
        return self.lt_bw if self.lt_use_bw else self._bw_filter.get()

    def _rate(self, bw: float, gain: float) -> float:
        """bbr_rate_bytes_per_sec / bbr_bw_to_pacing_rate: gain x bw, `pacing_margin` (1%) below
        it, so that the average rate sits just under the estimate and the queue tends to drain
        (draft §4.2.1; Linux: "an important aspect of the design")."""
        return min(bw * gain * (1.0 - self.pacing_margin), _MAX_PACING_RATE)

    def _bdp(self, bw: float, gain: float) -> int:
        """bbr_bdp: gain x bw x min_rtt in bytes, rounded up to whole segments ("to avoid a
        negative feedback loop"). Without any RTT sample, the initial window, as Linux (which
        then ignores the gain)."""
        if self.min_rtt is None:
            return INITIAL_WINDOW_SEGMENTS * self.mss
        segs = math.ceil(bw * self.min_rtt * gain / self.mss - 1e-9)
        return max(segs, 0) * self.mss

    def _tso_segs_goal(self) -> int:
        """bbr_tso_segs_goal with bbr_min_tso_segs, in segments: about 1 ms at the pacing rate
        (tcp_tso_autosize without the device's limit), at least 2 segments (1 below 1.2 Mbit/s),
        at most 127 and under 64 KB (draft §4.2.2, BBRSetSendQuantum, says the same in bytes)."""
        rate = self.pacing_rate or 0.0
        nbytes = min(int(rate) >> PACING_SHIFT, TSO_GOAL_MAX_BYTES)
        min_segs = 1 if rate < MIN_TSO_RATE else 2
        return min(max(nbytes // self.mss, min_segs), TSO_GOAL_MAX_SEGS)

    def _quantization_budget(self, cwnd: float) -> int:
        """bbr_quantization_budget, in bytes: room for three bursts in the end hosts (one in the
        qdisc, one in GSO, one in the receiver's GRO/delayed ACK), rounded up to an even number of
        segments so a delayed-ACK receiver is not left waiting for a second segment, and two more
        segments in the 1.25 phase so that probing gets above the BDP even when the BDP is tiny
        (draft §4.2.3.2's "quanta" term)."""
        mss = self.mss
        segs = math.ceil((cwnd + 3 * self._tso_segs_goal() * mss) / mss - 1e-9)
        segs = (segs + 1) & ~1
        if self.mode == PROBE_BW and self.cycle_idx == 0:
            segs += 2
        return segs * mss

    def _inflight(self, bw: float, gain: float) -> int:
        """bbr_inflight (draft §4.2.3.2, BBRInflight): the flight, in bytes, that gain x BDP
        plus the quantization budget allows."""
        return self._quantization_budget(self._bdp(bw, gain))

    def _in_net_at_edt(self, inflight_now: int) -> int:
        """bbr_packets_in_net_at_edt, in bytes. Linux subtracts bw x (next departure - now), what
        drains while the pacer holds the next burst; the engine does not expose its pacer's
        release time, so we take it as now (nothing drains). When raising the flight (gain > 1),
        the burst about to leave counts already, as in Linux."""
        if self.pacing_gain > 1.0:
            return inflight_now + self._tso_segs_goal() * self.mss
        return inflight_now

    # ------------------------------------------------------------------ per ACK

    def cong_control(self, ack: AckSample) -> None:
        """bbr_main: update the model from this ACK, then set pacing rate, cwnd and quantum
        (draft §3.5.2, BBRUpdateOnACK)."""
        s = _Sample(ack, self.mss)
        if ack.delivered_total > self._delivered:
            self._delivered_time = ack.now  # tp->delivered_mstamp moves with tp->delivered
        self._delivered = ack.delivered_total
        self._lost += s.losses
        if ack.acked_bytes > 0:
            self._acked_since_rto = True
        # The engine's in_recovery says when a recovery of either kind (fast recovery, or RTO
        # recovery, which has no exit hook of its own) is over: Linux's return to TCP_CA_Open.
        if not ack.in_recovery:
            self._ca_state = CA_OPEN
        if self._probe_rtt_al_end and s.valid:
            s.is_app_limited = self._probe_rtt_app_limited(s.prior_delivered) or s.is_app_limited

        self._update_model(ack, s)
        bw = self.bw
        self._set_pacing_rate(bw, self.pacing_gain, ack.srtt)
        self._set_cwnd(ack, s, s.acked_sacked, bw, self.cwnd_gain_now)
        self.send_quantum = self._tso_segs_goal() * self.mss

    def on_ack(self, ack: AckSample) -> None:
        """Only an engine without `cong_control` support (API < 3) calls this; BBR then runs
        its per-ACK step on the ACKs it gets. Such an engine leaves ``delivered_total`` at 0;
        the rate sample gives it back (Linux: tp->delivered = prior_delivered + delivered)."""
        rs = ack.rate
        if not ack.delivered_total and rs is not None and rs.delivery_rate is not None:
            ack = replace(ack, delivered_total=rs.prior_delivered + rs.delivered)
        self.cong_control(ack)

    def _update_model(self, ack: AckSample, s: _Sample) -> None:
        """bbr_update_model (draft §3.5.2, BBRUpdateModelAndState), in Linux's order."""
        self._update_bw(s)
        self._update_ack_aggregation(s)
        self._update_cycle_phase(s)
        self._check_full_bw_reached(s)
        self._check_drain(ack.bytes_in_flight)
        self._update_min_rtt(ack, s)
        self._update_gains()

    def _update_bw(self, s: _Sample) -> None:
        """bbr_update_bw (draft §4.1.1.3 BBRUpdateRound, §4.1.1.5 BBRUpdateBtlBw).

        A round ends when a packet sent after the round began is delivered: its snapshot of
        ``delivered`` (rs.prior_delivered) has reached the count at which the round began. Then
        the sample enters the max filter, unless it is app-limited and below the current
        maximum: a sender short of data measures the application, not the path (§4.1.1.4).
        """
        self.round_start = False
        if not s.valid:
            return  # Linux: rs->delivered < 0 || rs->interval_us <= 0
        if s.prior_delivered >= self.next_rtt_delivered:
            self.next_rtt_delivered = self._delivered
            self.round_count += 1
            self.round_start = True
            self.packet_conservation = False
        self._lt_bw_sampling(s.losses, s.is_app_limited)
        if not s.is_app_limited or s.bw >= self.max_bw:
            self._bw_filter.update(self.bw_window_rounds, self.round_count, s.bw)

    def _probe_rtt_app_limited(self, prior_delivered: int) -> bool:
        """Was the sample's packet sent while Linux would have had tp->app_limited set by
        PROBE_RTT? Linux marks every ACK in PROBE_RTT with app_limited = delivered + in flight
        and clears it once delivered passes that mark; a packet carries the mark if it left
        in between, i.e. its snapshot of delivered lies in [entry, last mark]."""
        if self._probe_rtt_al_start <= prior_delivered <= self._probe_rtt_al_end:
            return True
        if prior_delivered > self._probe_rtt_al_end and self.mode != PROBE_RTT:
            self._probe_rtt_al_end = 0  # the marked flight is delivered: Linux clears the mark
        return False

    # ------------------------------------------------------------------ long-term bandwidth

    def _reset_lt_bw_sampling_interval(self) -> None:
        """bbr_reset_lt_bw_sampling_interval: start a new interval at the current counters
        (Linux keeps its start time in whole milliseconds)."""
        self.lt_last_stamp = int(self._delivered_time * 1000)
        self.lt_last_delivered = self._delivered
        self.lt_last_lost = self._lost
        self.lt_rtt_cnt = 0

    def _reset_lt_bw_sampling(self) -> None:
        """bbr_reset_lt_bw_sampling: forget the policer estimate entirely."""
        self.lt_bw = 0.0
        self.lt_use_bw = False
        self.lt_is_sampling = False
        self._reset_lt_bw_sampling_interval()

    def _lt_bw_interval_done(self, bw: float) -> None:
        """bbr_lt_bw_interval_done: two lossy intervals in a row with nearly the same rate (within
        1/8, or within 4 kbit/s) look like a token-bucket policer; pace at their average."""
        if self.lt_bw:
            diff = abs(bw - self.lt_bw)
            if diff <= self.lt_bw_ratio * self.lt_bw or self._rate(diff, 1.0) <= self.lt_bw_diff:
                self.lt_bw = (bw + self.lt_bw) / 2
                self.lt_use_bw = True
                self.pacing_gain = 1.0  # try to avoid drops
                self.lt_rtt_cnt = 0
                return
        self.lt_bw = bw
        self._reset_lt_bw_sampling_interval()

    def _lt_bw_sampling(self, losses: int, is_app_limited: bool) -> None:
        """bbr_lt_bw_sampling: detect a token-bucket policer ("An Internet-Wide Analysis of
        Traffic Policing", SIGCOMM 2016) from the long-term delivery rate of lossy intervals.

        Sampling starts at the first loss (the policer has then spent its tokens), lasts 4 to 16
        rounds, and ends at a loss once lost/delivered exceeds ~20%. Once a policed rate is in
        use, it is kept for 48 rounds of PROBE_BW, then BBR probes afresh.
        """
        if self.lt_use_bw:
            if self.mode == PROBE_BW and self.round_start:
                self.lt_rtt_cnt += 1
                if self.lt_rtt_cnt >= self.lt_bw_max_rounds:
                    self._reset_lt_bw_sampling()  # stop using lt_bw
                    self._reset_probe_bw_mode()  # and restart gain cycling
            return
        if not self.lt_is_sampling:
            if not losses:
                return
            self._reset_lt_bw_sampling_interval()
            self.lt_is_sampling = True
        if is_app_limited:
            self._reset_lt_bw_sampling()  # out of data: the rate would be an underestimate
            return
        if self.round_start:
            self.lt_rtt_cnt += 1
        if self.lt_rtt_cnt < self.lt_interval_min_rounds:
            return
        if self.lt_rtt_cnt > 4 * self.lt_interval_min_rounds:
            self._reset_lt_bw_sampling()  # interval too long
            return
        if not losses:
            return  # end intervals at a loss, when the tokens are surely exhausted
        lost = self._lost - self.lt_last_lost
        delivered = self._delivered - self.lt_last_delivered
        if not delivered or lost < self.lt_loss_threshold * delivered:
            return
        t_ms = int(self._delivered_time * 1000) - self.lt_last_stamp
        if t_ms < 1:
            return  # under a millisecond: wait
        self._lt_bw_interval_done(delivered / (t_ms / 1000))

    # ------------------------------------------------------------------ ACK aggregation

    def _update_ack_aggregation(self, s: _Sample) -> None:
        """bbr_update_ack_aggregation: how much more was (S)ACKed in the current "epoch" than bw
        alone would deliver -- the data a receiver or the path holds back and releases at once
        (delayed ACKs, Wi-Fi aggregation, GRO). The max over 5-10 rounds becomes extra cwnd, so
        the sender can keep sending through the ACK silences. In bytes, capped at cwnd."""
        if not self.extra_acked_gain or s.acked_sacked <= 0 or not s.valid:
            return
        if self.round_start:
            self.extra_acked_win_rtts = min(0x1F, self.extra_acked_win_rtts + 1)
            if self.extra_acked_win_rtts >= self.extra_acked_window_rounds:
                self.extra_acked_win_rtts = 0
                self.extra_acked_win_idx ^= 1
                self.extra_acked[self.extra_acked_win_idx] = 0.0
        epoch = self._delivered_time - self.ack_epoch_mstamp
        expected = self.bw * epoch
        # A new epoch when ACKs fall behind the expected rate, or the epoch grew huge.
        if (self.ack_epoch_acked <= expected
                or self.ack_epoch_acked + s.acked_sacked >= ACK_EPOCH_RESET_SEGMENTS * self.mss):
            self.ack_epoch_acked = 0
            self.ack_epoch_mstamp = self._delivered_time
            expected = 0.0
        self.ack_epoch_acked = min(ACK_EPOCH_MAX_SEGMENTS * self.mss, self.ack_epoch_acked + s.acked_sacked)
        extra = min(self.ack_epoch_acked - expected, self.cwnd)
        if extra > self.extra_acked[self.extra_acked_win_idx]:
            self.extra_acked[self.extra_acked_win_idx] = extra

    def _ack_aggregation_cwnd(self) -> float:
        """bbr_ack_aggregation_cwnd: the allowance, once the pipe is full, at most 100 ms at bw."""
        if self.extra_acked_gain and self.full_bw_reached:
            aggr = self.extra_acked_gain * max(self.extra_acked)
            return min(aggr, self.bw * self.extra_acked_max)
        return 0.0

    # ------------------------------------------------------------------ the state machine

    def _update_cycle_phase(self, s: _Sample) -> None:
        """bbr_update_cycle_phase (draft §4.3.4.3, BBRCheckCyclePhase)."""
        if self.mode == PROBE_BW and self._is_next_cycle_phase(s):
            self._advance_cycle_phase()

    def _is_next_cycle_phase(self, s: _Sample) -> bool:
        """bbr_is_next_cycle_phase (draft §4.3.4.3, BBRIsNextCyclePhase). A phase lasts one
        min_rtt; the 1.25 phase also waits until the flight reached 1.25 BDP (which takes longer
        than min_rtt on a short path) unless there were losses (the buffer may not hold that
        much); the 0.75 phase ends early once the flight is down to one BDP (queue drained)."""
        min_rtt = self.min_rtt if self.min_rtt is not None else math.inf
        is_full_length = self._delivered_time - self.cycle_mstamp > min_rtt
        if self.pacing_gain == 1.0:
            return is_full_length
        inflight = self._in_net_at_edt(s.prior_in_flight)
        bw = self.max_bw
        if self.pacing_gain > 1.0:
            return is_full_length and (s.losses > 0 or inflight >= self._inflight(bw, self.pacing_gain))
        return is_full_length or inflight <= self._inflight(bw, 1.0)

    def _advance_cycle_phase(self) -> None:
        """bbr_advance_cycle_phase (draft BBRAdvanceCyclePhase); the phase is timed from the
        delivery clock, not the wall clock, as Linux does (cycle_mstamp = delivered_mstamp)."""
        self.cycle_idx = (self.cycle_idx + 1) % CYCLE_LEN
        self.cycle_mstamp = self._delivered_time

    def _reset_probe_bw_mode(self) -> None:
        """bbr_reset_probe_bw_mode (draft §4.3.4.3, BBREnterProbeBW): start gain cycling at a
        random phase other than 0.75 (§4.3.4.2), from our seeded generator."""
        self.mode = PROBE_BW
        self.cycle_idx = CYCLE_LEN - 1 - self._rng.randrange(CYCLE_RAND)
        self._advance_cycle_phase()

    def _reset_mode(self) -> None:
        """bbr_reset_mode (draft BBRExitProbeRTT): back to STARTUP unless the pipe was filled."""
        if not self.full_bw_reached:
            self.mode = STARTUP
        else:
            self._reset_probe_bw_mode()

    def _check_full_bw_reached(self, s: _Sample) -> None:
        """bbr_check_full_bw_reached (draft §4.3.2.2, BBRCheckFullPipe): once per round, from
        samples that are not app-limited, has the max bandwidth grown by 25%? Three rounds
        without: the pipe is full (one round for receive-window autotuning to grow the window,
        one to fill it, one to see the higher rate)."""
        if self.full_bw_reached or not self.round_start or s.is_app_limited:
            return
        if self.max_bw >= self.full_bw * self.full_bw_threshold:
            self.full_bw = self.max_bw
            self.full_bw_cnt = 0
            return
        self.full_bw_cnt += 1
        self.full_bw_reached = self.full_bw_cnt >= self.full_bw_rounds

    def _check_drain(self, inflight: int) -> None:
        """bbr_check_drain (draft §4.3.3, BBRCheckDrain): leave STARTUP for DRAIN when the pipe
        is full (Linux then sets ssthresh to one BDP's flight, for what reads it), and leave
        DRAIN once the flight is down to that: the queue is gone, the pipe still full."""
        if self.mode == STARTUP and self.full_bw_reached:
            self.mode = DRAIN
            self.ssthresh = self._inflight(self.max_bw, 1.0)
        if self.mode == DRAIN and self._in_net_at_edt(inflight) <= self._inflight(self.max_bw, 1.0):
            self._reset_probe_bw_mode()

    def _update_min_rtt(self, ack: AckSample, s: _Sample) -> None:
        """bbr_update_min_rtt (draft §4.1.2.3 BBRUpdateRTprop, §4.3.5 BBRCheckProbeRTT).

        min_rtt takes any lower sample, or, once it is older than `min_rtt_window` (10 s), any
        sample that is not from a delayed ACK. An expired min_rtt also sends BBR to PROBE_RTT --
        not when it restarts from idle, which drained the queue already -- where cwnd is 4
        segments until 200 ms and a full round have passed at that flight.

        Linux compares whole microseconds (rs->rtt_us): a sample that merely equals min_rtt does
        not refresh it. We round to microseconds too; with float times, samples that should be
        equal differ in the last bits, and "strictly lower" would then refresh min_rtt at random
        and put off PROBE_RTT indefinitely on a path whose queue drains.
        """
        now = ack.now
        expired = now > self.min_rtt_stamp + self.min_rtt_window
        rtt = s.rtt
        if rtt is not None and rtt >= 0:
            rtt = round(rtt * 1e6) / 1e6
            if self.min_rtt is None or rtt < self.min_rtt or (expired and not s.is_ack_delayed):
                self.min_rtt = rtt
                self.min_rtt_stamp = now

        if self.probe_rtt_duration > 0 and expired and not self.idle_restart and self.mode != PROBE_RTT:
            self.mode = PROBE_RTT  # dip, drain the queue
            self._save_cwnd()  # to restore it afterwards
            self.probe_rtt_done_stamp = None
            self._probe_rtt_al_start = self._delivered

        if self.mode == PROBE_RTT:
            inflight = ack.bytes_in_flight
            # Linux: tp->app_limited = (delivered + in flight) ?: 1, "ignore low rate samples".
            self._probe_rtt_al_end = (self._delivered + inflight) or 1
            if self.probe_rtt_done_stamp is None and inflight <= CWND_MIN_TARGET * self.mss:
                self.probe_rtt_done_stamp = now + self.probe_rtt_duration
                self.probe_rtt_round_done = False
                self.next_rtt_delivered = self._delivered  # and a round from now
            elif self.probe_rtt_done_stamp is not None:
                if self.round_start:
                    self.probe_rtt_round_done = True
                if self.probe_rtt_round_done:
                    self._check_probe_rtt_done(now)
        if s.delivered > 0:
            self.idle_restart = False  # the restart is over once new data is (S)ACKed

    def _check_probe_rtt_done(self, now: float) -> None:
        """bbr_check_probe_rtt_done (draft BBRHandleProbeRTT's exit): the 200 ms are up: the
        min_rtt just measured is good for another window; restore cwnd and resume."""
        if not (self.probe_rtt_done_stamp is not None and now > self.probe_rtt_done_stamp):
            return
        self.min_rtt_stamp = now  # wait a while until the next PROBE_RTT
        self.cwnd = max(self.cwnd, self.prior_cwnd)
        self._reset_mode()

    def _update_gains(self) -> None:
        """bbr_update_gains (draft §4.3.2 BBREnterStartup, §4.3.3 BBREnterDrain, §4.3.4,
        §4.3.5 BBREnterProbeRTT)."""
        mode = self.mode
        if mode == STARTUP:
            self.pacing_gain = self.cwnd_gain_now = self.high_gain
        elif mode == DRAIN:
            self.pacing_gain = self.drain_gain  # slow, to drain
            self.cwnd_gain_now = self.high_gain  # keep cwnd
        elif mode == PROBE_BW:
            self.pacing_gain = 1.0 if self.lt_use_bw else PACING_GAIN_CYCLE[self.cycle_idx]
            self.cwnd_gain_now = self.cwnd_gain
        else:
            self.pacing_gain = self.cwnd_gain_now = 1.0

    # ------------------------------------------------------------------ the controls

    def _init_pacing_rate_from_rtt(self, srtt: float | None) -> None:
        """bbr_init_pacing_rate_from_rtt (draft §4.2.1, BBRInitPacingRate): high_gain x cwnd /
        srtt, or over a nominal 1 ms while there is no RTT sample."""
        if srtt:
            rtt = max(srtt, 1e-6)  # Linux: max(srtt_us, 1 us)
            self.has_seen_rtt = True
        else:
            rtt = 0.001
        self.pacing_rate = self._rate(self.cwnd / rtt, self.high_gain)

    def _set_pacing_rate(self, bw: float, gain: float, srtt: float | None) -> None:
        """bbr_set_pacing_rate (draft §4.2.1, BBRSetPacingRateWithGain): until the pipe is known
        full, the rate only goes up -- app-limited or early samples must not slow the search."""
        if not self.has_seen_rtt and srtt:
            self._init_pacing_rate_from_rtt(srtt)
        rate = self._rate(bw, gain)
        if rate > 0 and (self.full_bw_reached or rate > (self.pacing_rate or 0.0)):
            self.pacing_rate = rate

    def _save_cwnd(self) -> None:
        """bbr_save_cwnd (draft BBRSaveCwnd): remember the last window not cut by recovery or
        PROBE_RTT; inside those, keep the larger of what was saved and what is there now."""
        if self._prev_ca_state < CA_RECOVERY and self.mode != PROBE_RTT:
            self.prior_cwnd = self.cwnd
        else:
            self.prior_cwnd = max(self.prior_cwnd, self.cwnd)

    def _recover_or_restore(self, ack: AckSample, s: _Sample, acked: int, cwnd: int) -> tuple[bool, int]:
        """bbr_set_cwnd_to_recover_or_restore (draft §4.2.3.4): losses come off the window; the
        first round of a fast recovery sends no more than is delivered (packet conservation,
        cutting what the application left unused); leaving recovery, or an RTO recovery,
        restores the window saved on entry. Returns (conserving, cwnd)."""
        inflight = ack.bytes_in_flight
        if s.losses > 0:
            cwnd = max(cwnd - s.losses, self.mss)  # Linux: at least 1 packet
        state, prev = self._ca_state, self._prev_ca_state
        if state == CA_RECOVERY and prev != CA_RECOVERY:
            self.packet_conservation = True  # the first round of recovery
            self.next_rtt_delivered = self._delivered  # starts a round now
            cwnd = inflight + acked
        elif prev >= CA_RECOVERY and state < CA_RECOVERY:
            cwnd = max(cwnd, self.prior_cwnd)  # recovery over: restore
            self.packet_conservation = False
        self._prev_ca_state = state
        if self.packet_conservation:
            return True, max(cwnd, inflight + acked)
        return False, cwnd

    def _set_cwnd(self, ack: AckSample, s: _Sample, acked: int, bw: float, gain: float) -> None:
        """bbr_set_cwnd (draft §4.2.3.6, BBRSetCwnd): grow by what was delivered towards the
        target (gain x BDP + aggregation allowance + quantization budget); once the pipe is
        known full, cut straight down to the target when above it. Before, grow while below the
        target or while less than an initial window has been delivered. Never below 4 segments,
        and at most 4 segments in PROBE_RTT (draft §4.2.3.5)."""
        cwnd = self.cwnd
        if acked:
            conserving, cwnd = self._recover_or_restore(ack, s, acked, cwnd)
            if not conserving:
                target = self._bdp(bw, gain) + self._ack_aggregation_cwnd()
                target = self._quantization_budget(target)
                if self.full_bw_reached:
                    cwnd = min(cwnd + acked, target)
                elif cwnd < target or self._delivered < INITIAL_WINDOW_SEGMENTS * self.mss:
                    cwnd = cwnd + acked
                cwnd = max(cwnd, CWND_MIN_TARGET * self.mss)
        # done: (no snd_cwnd_clamp here)
        if self.mode == PROBE_RTT:
            cwnd = min(cwnd, CWND_MIN_TARGET * self.mss)
        self.cwnd = int(cwnd)

    # ------------------------------------------------------------------ episodes

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """bbr_ssthresh, which Linux calls as a reduction begins (tcp_init_cwnd_reduction): BBR
        only saves cwnd, to restore it when the episode ends, and leaves ssthresh as it is.

        ``"dupack"`` is TCP_CA_Recovery: the next ACK starts packet conservation. ``"tlp"`` and
        ``"ecn"`` are TCP_CA_CWR in Linux, which BBR treats like Open (its window stays its own;
        BBR v1 does not respond to ECN)."""
        self._save_cwnd()
        if ev.cause == "dupack":
            self._ca_state = CA_RECOVERY

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """Linux's tcp_end_cwnd_reduction() does nothing for a cong_control algorithm; the
        restore happens on the next ACK, when bbr_main sees the state below TCP_CA_Recovery."""
        if self._ca_state == CA_RECOVERY:
            self._ca_state = CA_OPEN

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """tcp_enter_loss() with BBR: bbr_ssthresh (save cwnd) -- only as Linux calls it, when
        the timeout starts an episode (from Open, or after an ACK since the last timeout), not
        on a re-expiry or during a fast recovery that saved it already -- then cwnd to one
        segment (draft §4.2.3.4; Linux: in flight + 1), then bbr_set_state(TCP_CA_Loss): the
        full-pipe baseline is reset (so STARTUP, if still running, re-measures it), the RTO
        counts as a round end and as a loss for the policer estimator."""
        if self._ca_state == CA_OPEN or (self._ca_state == CA_LOSS and self._acked_since_rto):
            self._save_cwnd()
        self._acked_since_rto = False
        self.cwnd = self.mss
        self._ca_state = CA_LOSS
        self._prev_ca_state = CA_LOSS
        self.full_bw = 0.0
        self.round_start = True  # treat the RTO like the end of a round
        self._lt_bw_sampling(losses=1, is_app_limited=False)

    def on_undo(self, ev: UndoEvent) -> None:
        """bbr_undo_cwnd: the loss was spurious. Keep cwnd (the next ACK restores the saved one,
        as the episode is over), but reset the full-pipe detection and the policer sampling that
        the false loss may have disturbed. ssthresh comes back as tcp_undo_cwnd_reduction() does
        it."""
        self.full_bw = 0.0
        self.full_bw_cnt = 0
        self._reset_lt_bw_sampling()
        self.ssthresh = max(self.ssthresh, ev.prior_ssthresh)
        self._ca_state = CA_OPEN

    def on_idle_restart(self, now: float, idle: float, rto: float) -> None:
        """bbr_cwnd_event(CA_EVENT_TX_START) (draft §4.3.4.4, BBRHandleRestartFromIdle): sending
        resumes with nothing in flight. cwnd stays (Linux skips tcp_cwnd_restart for a
        cong_control algorithm); in PROBE_BW pace at exactly bw -- no need to probe, and no
        1.25 burst into an empty queue; in PROBE_RTT the idle period may have done its job.

        Linux acts only when tp->app_limited is set; the engine calls this hook when it is about
        to send new data with nothing in flight, which is what tcp_sendmsg() has just marked
        app-limited in Linux, so we take it as set."""
        self.idle_restart = True
        self.ack_epoch_mstamp = now
        self.ack_epoch_acked = 0
        if self.mode == PROBE_BW:
            self._set_pacing_rate(self.bw, 1.0, None)
        elif self.mode == PROBE_RTT:
            self._check_probe_rtt_done(now)
        self.send_quantum = self._tso_segs_goal() * self.mss

    def on_mss_change(self, mss: int) -> None:
        """Linux counts its windows in packets, so an MSS change keeps their segment counts:
        rescale every byte window we keep (cwnd and ssthresh in the base class, prior_cwnd and
        the aggregation counters here). Bandwidth stays in bytes/s."""
        old = self.mss
        super().on_mss_change(mss)
        if old == mss:
            return
        self.prior_cwnd = int(self._rescale(self.prior_cwnd, old))
        self.extra_acked = [self._rescale(x, old) for x in self.extra_acked]
        self.ack_epoch_acked = int(self._rescale(self.ack_epoch_acked, old))
        if not self.has_seen_rtt:
            self._init_pacing_rate_from_rtt(None)  # the initial window in bytes changed
        self.send_quantum = self._tso_segs_goal() * self.mss

    def state(self) -> dict[str, Any]:
        """bbr_get_info and more: the model, the state machine and the recovery bookkeeping."""
        return {
            "mode": self.mode,
            "btl_bw": self.bw,
            "max_bw": self.max_bw,
            "min_rtt": self.min_rtt,
            "pacing_gain": self.pacing_gain,
            "cwnd_gain": self.cwnd_gain_now,
            "round_count": self.round_count,
            "full_bw": self.full_bw,
            "full_bw_reached": self.full_bw_reached,
            "cycle_index": self.cycle_idx,
            "lt_use_bw": self.lt_use_bw,
            "lt_bw": self.lt_bw,
            "prior_cwnd": self.prior_cwnd,
            "packet_conservation": self.packet_conservation,
            "extra_acked": max(self.extra_acked),
        }
