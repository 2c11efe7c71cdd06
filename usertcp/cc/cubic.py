"""CUBIC, as specified by RFC 9438 ("CUBIC for Fast and Long-Distance Networks").

Read this next to the RFC: the variable names are its names (W_max, K, t_epoch, cwnd_epoch,
cwnd_prior, W_est, target, C, beta_cubic, alpha_cubic) and every step cites its section.

Units. The RFC counts windows in segments and time in seconds; §4.1 allows bytes "factoring in
the maximum segment size wherever necessary". Here every window is in bytes, so the one place
that needs the MSS is the constant C, whose unit is segments/second³: in bytes it is C * MSS.
Hence

    W_cubic(t) = C*MSS * (t - K)³ + W_max                   (eq. 1, bytes)
    K          = ∛((W_max - cwnd_epoch) / (C*MSS))           (eq. 2, seconds)
    W_est     += alpha_cubic * acked_bytes * MSS / cwnd      (eq. 4, bytes)

and the cwnd increment "(target - cwnd) / cwnd" segments per acknowledged segment (§4.4, §4.5)
becomes (target - cwnd) / cwnd * acked_bytes bytes.

Slow start is HyStart++ (RFC 9406), which RFC 9438 §4.10 says CUBIC SHOULD use; its names
(windowEnd, lastRoundMinRTT, currentRoundMinRTT, rttSampleCount, cssBaselineMinRtt, RttThresh and
the §4.3 constants) appear here in snake case, and each step cites its section. See
`Cubic.slow_start_ack`.
"""

from __future__ import annotations

import math
from typing import Any

from .api import AckSample, CongestionControl, CongestionEvent, UndoEvent, param

_INF = math.inf

# HyStart++ phases (the strings `state()` reports): RFC 5681 slow start watched by HyStart++,
# Conservative Slow Start (RFC 9406 §4.2), and HyStart++ not running.
SS, CSS, OFF = "ss", "css", "off"


class Cubic(CongestionControl):
    """RFC 9438 CUBIC with HyStart++ (RFC 9406) slow start.

    Where the RFC leaves a choice, or where we had to interpret it, the choice is documented on
    the method that makes it. In short:

    - RTT in "target = W_cubic(t + RTT)" (§4.2) is the smoothed RTT, as §4.1.2 defines RTT.
      Linux uses its minimum RTT (delay_min) instead, which keeps the look-ahead steady when a
      queue builds; ``rtt_for_target=min_rtt`` (a parameter) does that.
    - The cwnd increment is per acknowledged segment (byte-counted), so delayed and stretch ACKs
      don't slow the curve down -- as Linux counts acked segments against its ``cnt``.
    - Application-limited ACKs change nothing and their time is cut out of t (§5.8); so is an
      idle gap between ACKs (see `_exclude_idle`).
    - ssthresh on congestion is cwnd * beta_cubic, as Linux; §4.6 writes FlightSize and allows
      cwnd when app-limited flows do not grow (§5.8, kept here). ``ssthresh_basis=flight_size``
      gives the RFC's text (see `_reduced_ssthresh` for why it is not the default).
    - Fast convergence (§4.7) is on, as in Linux; ``fast_convergence=false`` turns it off
      (the RFC says it SHOULD be off when a single CUBIC flow has the path to itself).
    - No pacing (``pacing_rate`` stays None): Linux paces CUBIC only under the fq qdisc.
    - The initial slow start is HyStart++ (RFC 9406), on by default (``hystart=false`` gives
      RFC 5681 slow start). Later slow starts, after a loss or timeout, are plain RFC 5681 slow
      start up to the ssthresh that loss set, as RFC 9406 §4.3 recommends.
    """

    name = "cubic"

    # RFC 9438 §4.1.1 Constants of Interest. `param` makes each a tunable (``usertcp cc show
    # cubic``, ``--cc-param``); the class attribute stays the plain default.
    C = param(0.4, "aggressiveness of the cubic curve, segments/s^3 (RFC 9438 §5.1: SHOULD be 0.4)",
              min=0.01, max=10.0)
    beta_cubic = param(0.7, "multiplicative decrease factor (RFC 9438 §4.6: SHOULD be 0.7)",
                       min=0.1, max=0.95)
    fast_convergence = param(True, "fast convergence heuristic (RFC 9438 §4.7: SHOULD be implemented; "
                             "Linux tcp_cubic fast_convergence=1)")
    alpha_to_one = param(False, "raise alpha_cubic to 1 once W_est reaches cwnd_prior (RFC 9438 §4.3: "
                         "SHOULD); off, the Reno-friendly estimate keeps 3(1-beta)/(1+beta) throughout, "
                         "as Linux tcp_cubic (its beta_scale is a constant)")
    ssthresh_basis = param("cwnd", "what beta_cubic multiplies at a congestion event: cwnd (Linux "
                           "bictcp_recalc_ssthresh; RFC 9438 §4.6 allows it with §5.8's app-limited "
                           "rule, which this class keeps) or flight_size (RFC 9438 §4.6's text: "
                           "snd_nxt - snd_una, which after back-to-back SACK recoveries spans SACKed "
                           "data and can exceed cwnd several times)", choices=("cwnd", "flight_size"))
    rtt_for_target = param("srtt", "RTT of the look-ahead target = W_cubic(t + RTT): srtt (RFC 9438 "
                           "§4.1.2) or min_rtt (Linux's delay_min)", choices=("srtt", "min_rtt"))

    # RFC 9406 HyStart++. §4.3 gives the constants; each may be tuned ("An implementation MAY").
    hystart = param(True, "HyStart++ (RFC 9406) in the initial slow start (RFC 9438 §4.10: SHOULD); "
                    "off: RFC 5681 slow start until the first loss")
    hystart_min_rtt_thresh = param(0.004, "MIN_RTT_THRESH, s: lower clamp of RttThresh (RFC 9406 §4.3)",
                                   min=0.0, max=1.0)
    hystart_max_rtt_thresh = param(0.016, "MAX_RTT_THRESH, s: upper clamp of RttThresh (RFC 9406 §4.3)",
                                   min=0.0, max=1.0)
    hystart_min_rtt_divisor = param(8, "MIN_RTT_DIVISOR: RttThresh = lastRoundMinRTT / this, clamped "
                                    "(RFC 9406 §4.3)", min=1, max=1000)
    hystart_n_rtt_sample = param(8, "N_RTT_SAMPLE: RTT samples a round needs before a decision "
                                 "(RFC 9406 §4.3)", min=1, max=1000)
    hystart_css_growth_divisor = param(4, "CSS_GROWTH_DIVISOR: Conservative Slow Start grows this many "
                                       "times slower (RFC 9406 §4.3: MUST be at least 2)", min=2, max=1000)
    hystart_css_rounds = param(5, "CSS_ROUNDS: rounds of Conservative Slow Start before congestion "
                               "avoidance (RFC 9406 §4.3)", min=1, max=100)
    hystart_ack_limit = param(0, "L, segments: most growth one ACK may earn under HyStart++, 0 for "
                              "no limit (the default, as Linux's tcp_slow_start: a GRO receiver's "
                              "stretch ACKs would otherwise slow us against the kernel); RFC 9406 "
                              "§4.3 suggests 8 for a sender that does not pace", min=0, max=1 << 20)

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        # §4.1.2 Variables of Interest (windows in bytes, times in seconds)
        self.W_max: float | None = None
        """cwnd just before the last reduction (lowered by fast convergence). None while it is
        undefined: before the first congestion event, and after a timeout (§4.8, §4.10)."""
        self.cwnd_prior: float | None = None
        """cwnd when ssthresh was most recently set."""
        self.K = 0.0
        self.t_epoch: float | None = None
        """Start of the current congestion-avoidance stage; None when none is running."""
        self.cwnd_epoch = 0.0
        self.W_est = 0.0
        self._alpha = self.alpha_cubic  # fixed per epoch (begin_epoch), read on every ACK
        self.target: float | None = None
        self.region = "slow-start"
        # cwnd is an int of bytes; the fraction of a byte each increment earns is kept here.
        self._cwnd_frac = 0.0
        self._cwnd_seen = self.cwnd
        self._last_ack: float | None = None
        self._timed_out = False  # on_rto seen and no ACK since: a further on_rto is a re-expiry
        self._recovering = False  # on_congestion_event seen, recovery not over
        self._before_reduction: tuple | None = None  # §4.9: the state a spurious reduction undoes
        if self.hystart_min_rtt_thresh > self.hystart_max_rtt_thresh:
            raise ValueError(f"hystart_min_rtt_thresh ({self.hystart_min_rtt_thresh}) is above "
                             f"hystart_max_rtt_thresh ({self.hystart_max_rtt_thresh})")
        # RFC 9406 §4.2 HyStart++ state. Times in seconds; "infinity" is math.inf (so that the
        # per-ACK comparisons need no None test); state() shows it as None.
        self.hystart_phase = SS if self.hystart else OFF
        """"ss" (slow start, HyStart++ watching), "css" (Conservative Slow Start) or "off"."""
        self.hystart_round = 0
        """Rounds begun so far (1 is the round of the first ACK)."""
        self.window_end = 0
        """windowEnd as a count of delivered bytes: the round ends at the ACK that brings
        ``AckSample.delivered_total`` to it (see `slow_start_ack`)."""
        self.last_round_min_rtt = _INF
        self.current_round_min_rtt = _INF
        self.rtt_sample_count = 0
        self.css_baseline_min_rtt = _INF
        self.css_rounds = 0
        """Rounds of CSS begun, the partial round of entry included (RFC 9406 §4.2)."""
        self._css_entry_rtt = _INF
        """lastRoundMinRTT + RttThresh for the current round (RFC 9406 §4.2), or infinity."""
        self._ack_limit = self.hystart_ack_limit * self.mss or None  # L*SMSS bytes; None: infinity

    # ------------------------------------------------------------------ the RFC's functions

    @property
    def alpha_cubic(self) -> float:
        """§4.3: the additive increase 3 * (1 - beta) / (1 + beta) that makes AIMD(alpha, beta)
        average the same window as Reno's AIMD(1, 0.5) -- 0.5294... for beta = 0.7."""
        return 3.0 * (1.0 - self.beta_cubic) / (1.0 + self.beta_cubic)

    def W_cubic(self, t: float) -> float:
        """Equation 1, in bytes: the window t seconds into the congestion-avoidance stage."""
        assert self.W_max is not None
        return self.C * self.mss * (t - self.K) ** 3 + self.W_max

    # ------------------------------------------------------------------ hooks

    def on_ack(self, ack: AckSample) -> None:
        previous, self._last_ack = self._last_ack, ack.now
        self._timed_out = self._recovering = False  # snd_una advanced outside recovery
        if ack.acked_bytes <= 0:
            return
        if ack.app_limited:
            # §5.8: "CUBIC does not increase its congestion window if a flow is
            # application-limited", and §4.2: t "MUST NOT include periods during which cwnd has
            # not been updated due to application-limited behavior". Sliding t_epoch forward by
            # the time since the previous ACK removes this stretch from t; W_est is left alone too.
            if self.t_epoch is not None and previous is not None:
                self.t_epoch += ack.now - previous
            return
        acked = ack.acked_bytes
        if self.cwnd < self.ssthresh:  # in_slow_start(), inlined: this runs on every ACK
            acked = self.slow_start_ack(ack)
            if acked <= 0:
                self.region = "slow-start"
                return
        self.congestion_avoidance(ack, acked, previous)

    def slow_start_ack(self, ack: AckSample) -> int:
        """§4.10: "CUBIC MUST employ a slow-start algorithm, when cwnd is no more than ssthresh",
        which SHOULD be HyStart++ (RFC 9406) and MAY be RFC 5681 slow start.

        At cwnd == ssthresh (right after recovery) `in_slow_start` says congestion avoidance, as
        RFC 5681 permits and Linux does; read literally, §4.10 would slow-start one more ACK.

        With ``hystart`` off, and once HyStart++ has finished, this is RFC 5681 slow start grown
        per acknowledged byte like Linux's tcp_slow_start(). Otherwise it is HyStart++:

        - RFC 9406 §4.1: slow start as usual while watching the lowest RTT of each round. When it
          has risen by RttThresh over the previous round's, leave slow start for Conservative
          Slow Start (CSS), which grows CSS_GROWTH_DIVISOR times slower. If the RTT falls back
          below the level that triggered CSS, the exit was spurious: slow start again. After
          CSS_ROUNDS rounds of CSS, set ssthresh = cwnd, which ends slow start without a loss.
          The congestion-avoidance stage that follows finds W_max undefined and cwnd_prior unset
          and so does what §4.10 asks: cwnd_prior = cwnd, K = 0, W_max = cwnd_epoch (see
          `begin_epoch`).
        - Each ACK, in the order of RFC 9406 §4.2: grow cwnd by min(N, L*SMSS) (in CSS divided by
          CSS_GROWTH_DIVISOR); fold this ACK's RTT sample into currentRoundMinRTT and count it
          in rttSampleCount; once the round has N_RTT_SAMPLE samples, test for the CSS entry
          (in slow start) or the spurious-exit fallback (in CSS); last, if this ACK ends the
          round, count a CSS round and start the next round. The ACK that ends a round thus
          belongs to that round: it acknowledges data sent in it.
        - Rounds. RFC 9406 §4.2 sets windowEnd = SND.NXT when a round starts and ends the round
          when windowEnd is acknowledged. The AckSample has no SND.NXT, but every byte below
          SND.NXT is either delivered or in flight, so SND.NXT (in data bytes) is
          ``delivered_total + bytes_in_flight`` at the ACK that starts the round (the engine
          reports both after processing that ACK and before sending anything in reply, which
          is the moment the RFC reads SND.NXT), and windowEnd is acknowledged exactly when
          ``delivered_total`` reaches that sum. This holds while HyStart++ runs: without loss
          nothing is marked lost, so bytes_in_flight (RFC 6675's pipe under SACK) is SND.NXT
          minus what was delivered; the first loss ends HyStart++. Only reordering that lets
          SACKed later data arrive first can end a round a little early. We prefer this to
          ``ack.rate.prior_delivered`` (BBR's round counter): that ends a round one ACK late,
          at the first ACK for data sent after the round began rather than at the ACK of
          windowEnd, and needs the rate sample, which engines before API v2 do not supply.
          An engine that leaves delivered_total at 0 makes every ACK a round of its own, so
          no round ever holds N_RTT_SAMPLE samples and HyStart++ never acts: plain slow start.
        - The first round begins at the first ACK in slow start and holds it (windowEnd is
          SND.NXT then: the initial window), so it is the initial window's round.
        - currRTT is ``ack.rtt``, the ACK's own sample (none under Karn's rule: no count).
          Application-limited ACKs never get here (`on_ack` stops them first, §5.8), so they
          neither grow cwnd nor give samples; the round boundary is still found, since
          delivered_total counts their bytes.
        - RFC 9406 §4.3 SHOULD: HyStart++ runs only in the initial slow start (ssthresh still
          at its arbitrarily high initial value); the first congestion event or timeout turns it
          off for the connection (`on_congestion_event`, `on_rto`), and later slow starts stop
          at the ssthresh that loss left. An undone (spurious) reduction restores it.

        Per-ACK cost: the RttThresh test is precomputed once per round (``_css_entry_rtt``), so
        an ACK costs a few attribute reads and comparisons on top of RFC 5681 slow start.

        Linux's tcp_cubic.c runs the older HyStart instead (Ha & Rhee 2011): an ACK-train test
        and a delay test on the first 8 RTT samples of each round against delay_min (with the
        same 4..16 ms clamp of delay_min/8), both from a cwnd of 16 segments
        (hystart_low_window), and on a positive it sets ssthresh = cwnd at once: no CSS and no
        way back to slow start when the delay rise was only jitter, which is what RFC 9406 adds.

        Returns the bytes left over for congestion avoidance.
        """
        phase = self.hystart_phase
        if phase == OFF:
            return self.slow_start(ack.acked_bytes)
        # RFC 9406 §4.2: an ACK may acknowledge any number of bytes, but at most L*SMSS of them
        # count towards growth, in slow start and in CSS alike.
        acked = ack.acked_bytes
        limit = self._ack_limit
        if limit is not None and acked > limit:
            acked = limit
        if phase == SS:
            left = self.slow_start(acked)  # §4.2: cwnd = cwnd + min(N, L*SMSS)
        else:
            # §4.2 in CSS: cwnd = cwnd + min(N, L*SMSS) / CSS_GROWTH_DIVISOR, the fraction of a
            # byte carried to the next ACK; never past ssthresh (§4.10).
            window = self._exact_cwnd() + acked / self.hystart_css_growth_divisor
            if window > self.ssthresh:
                window = self.ssthresh
            self._set_exact_cwnd(window)
            left = 0
        rtt = ack.rtt
        if rtt is not None:
            # §4.2: currentRoundMinRTT = min(currentRoundMinRTT, currRTT); rttSampleCount += 1
            current = self.current_round_min_rtt
            if rtt < current:
                self.current_round_min_rtt = current = rtt
            count = self.rtt_sample_count = self.rtt_sample_count + 1
            if count >= self.hystart_n_rtt_sample:
                if phase == SS:
                    # §4.2: with N_RTT_SAMPLE samples and both minima valid, enter CSS once
                    # currentRoundMinRTT >= lastRoundMinRTT + RttThresh. _css_entry_rtt is that
                    # sum, infinite while lastRoundMinRTT is, so an invalid minimum never passes.
                    if current >= self._css_entry_rtt:
                        self._enter_css(current)
                elif current < self.css_baseline_min_rtt:
                    self._resume_slow_start()
        if ack.delivered_total >= self.window_end:
            self._end_round(ack)
        return left

    def _enter_css(self, current_round_min_rtt: float) -> None:
        """RFC 9406 §4.2: leave slow start for CSS; cssBaselineMinRtt = currentRoundMinRTT."""
        self.css_baseline_min_rtt = current_round_min_rtt
        self.css_rounds = 0
        self.hystart_phase = CSS

    def _resume_slow_start(self) -> None:
        """RFC 9406 §4.2: in CSS, the round's minimum RTT fell below cssBaselineMinRtt, so leaving
        slow start was a false alarm: cssBaselineMinRtt = infinity, and back to slow start with
        HyStart++ still watching. A later entry into CSS counts its CSS_ROUNDS afresh."""
        self.css_baseline_min_rtt = _INF
        self.css_rounds = 0
        self.hystart_phase = SS

    def _end_round(self, ack: AckSample) -> None:
        """RFC 9406 §4.2: windowEnd is acknowledged; the round is over and the next begins."""
        if self.hystart_round:
            if self.hystart_phase == CSS:
                # §4.2: CSS lasts CSS_ROUNDS rounds at most, the round it began in counting as
                # one however little of it was left. After the last, congestion avoidance:
                # ssthresh = cwnd.
                self.css_rounds += 1
                if self.css_rounds >= self.hystart_css_rounds:
                    self.ssthresh = self.cwnd
                    self.hystart_phase = OFF
                    return
            # §4.2, at the start of each round in slow start and CSS: lastRoundMinRTT =
            # currentRoundMinRTT; currentRoundMinRTT = infinity; rttSampleCount = 0. With it
            # RttThresh = max(MIN_RTT_THRESH, min(lastRoundMinRTT / MIN_RTT_DIVISOR,
            # MAX_RTT_THRESH)), which depends on nothing else for the whole round.
            last = self.last_round_min_rtt = self.current_round_min_rtt
            self.current_round_min_rtt = _INF
            self.rtt_sample_count = 0
            if last != _INF:
                thresh = min(last / self.hystart_min_rtt_divisor, self.hystart_max_rtt_thresh)
                self._css_entry_rtt = last + max(self.hystart_min_rtt_thresh, thresh)
            else:
                self._css_entry_rtt = _INF
        # The first ACK in slow start only opens round 1, which it belongs to.
        self.hystart_round += 1
        # §4.2: windowEnd = SND.NXT, as the bytes that will have been delivered when it is ACKed.
        self.window_end = ack.delivered_total + ack.bytes_in_flight

    def congestion_avoidance(self, ack: AckSample, acked: int, previous: float | None) -> None:
        """§4.2-§4.5: one ACK's worth of growth along the cubic curve or the Reno estimate.

        Hand-tuned, because it runs on every ACK of a bulk flow (bench/cc_cost.py): equation 1
        is evaluated inline with multiplications for the cube and (t - K) computed once for
        both W_cubic(t) and W_cubic(t + RTT); `_exact_cwnd`, `_exclude_idle` and `_target_rtt`
        are inlined. The readable forms of each step are those functions and `W_cubic`.
        """
        now = ack.now
        t_epoch = self.t_epoch
        if t_epoch is None:
            self.begin_epoch(now)
            t_epoch = self.t_epoch
        elif previous is not None:
            # `_exclude_idle`: a gap between ACKs beyond one RTT is time the sender was idle.
            gap = now - previous
            rtt = ack.rtt or 0.0
            srtt = ack.srtt or 0.0
            if srtt > rtt:
                rtt = srtt
            if rtt > 0.0 and gap > rtt:
                t_epoch += gap - rtt
                self.t_epoch = t_epoch
        # `_exact_cwnd`: cwnd with the fraction of a byte earlier increments left over.
        cwnd = self.cwnd
        if cwnd != self._cwnd_seen:
            self._cwnd_frac = 0.0
            self._cwnd_seen = cwnd
        else:
            cwnd += self._cwnd_frac
        mss = self.mss
        c_mss = self.C * mss
        W_max = self.W_max
        d = now - t_epoch - self.K  # t - K
        w_cubic = c_mss * d * d * d + W_max  # eq. 1 at t

        # §4.2: target = W_cubic(t + RTT), bounded to [cwnd, 1.5 * cwnd] so that the increase
        # rate never falls and stays below slow start's. The RTT is `_target_rtt`'s.
        if self.rtt_for_target == "srtt":
            rtt = ack.srtt
            if rtt is None:
                rtt = ack.rtt if ack.rtt is not None else (ack.min_rtt or 0.0)
        else:
            rtt = ack.min_rtt
            if rtt is None:
                rtt = ack.srtt if ack.srtt is not None else (ack.rtt or 0.0)
        d += rtt
        target = c_mss * d * d * d + W_max
        if target < cwnd:
            target = cwnd
        elif target > 1.5 * cwnd:
            target = 1.5 * cwnd
        self.target = target

        # §4.3, equation 4. With alpha_to_one, alpha_cubic is raised to 1 once W_est has
        # reached cwnd_prior ("the cwnd at the time of most recently setting ssthresh"; drafts
        # of RFC 9438 compared with W_max, which fast convergence may have lowered).
        W_est = self.W_est
        alpha = 1.0 if self.alpha_to_one and W_est >= self.cwnd_prior else self._alpha
        W_est += alpha * acked * mss / cwnd
        self.W_est = W_est

        if w_cubic < W_est:
            # §4.3 Reno-friendly region: "cwnd SHOULD be set to W_est". As a maximum: in the
            # rare case that the look-ahead has already carried cwnd past W_est, an ACK does
            # not shrink the window (§4.2: the increase rate is non-decreasing).
            self.region = "reno-friendly"
            new_cwnd = W_est if W_est > cwnd else cwnd
        else:
            # §4.4 concave (cwnd < W_max) / §4.5 convex (cwnd >= W_max) region: cwnd grows by
            # (target - cwnd) / cwnd for each acknowledged segment. The RFC writes "for each
            # received new ACK", assuming one ACK per segment; counting acknowledged bytes keeps
            # the growth per RTT at target - cwnd under delayed and stretch ACKs, as Linux does.
            self.region = "concave" if cwnd < W_max else "convex"
            new_cwnd = cwnd + (target - cwnd) / cwnd * acked
        # `_set_exact_cwnd`
        whole = int(new_cwnd)
        self.cwnd = self._cwnd_seen = whole
        self._cwnd_frac = new_cwnd - whole

    def begin_epoch(self, now: float) -> None:
        """Start a congestion-avoidance stage (§4.2): fix t_epoch, cwnd_epoch, K and W_est.

        Started lazily at the first ACK in congestion avoidance, as Linux's bictcp_update()
        starts epoch_start, so the stage begins when growth resumes after recovery.
        """
        cwnd = self._exact_cwnd()
        self.t_epoch = now
        self.cwnd_epoch = cwnd
        self.W_est = cwnd  # §4.3: "W_est is set equal to cwnd_epoch at the start"
        self._alpha = self.alpha_cubic
        if self.cwnd_prior is None:
            # §4.10: slow start ended without a congestion event (HyStart++, or an ssthresh
            # chosen by a subclass): cwnd_prior = cwnd.
            self.cwnd_prior = cwnd
        if self.W_max is None or self.W_max <= cwnd:
            # §4.8 (after a timeout) and §4.10 (no congestion event yet): K = 0 and W_max is
            # the window at the start of this stage. W_max <= cwnd_epoch otherwise has no
            # real cube root in eq. 2; Linux (bictcp_update) treats it the same way.
            self.W_max = cwnd
            self.K = 0.0
        else:
            self.K = math.cbrt((self.W_max - cwnd) / (self.C * self.mss))  # equation 2

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """§4.6 multiplicative decrease, with §4.7 fast convergence before it.

        ssthresh = max(cwnd * beta_cubic, 2 SMSS) as Linux, or from the FlightSize the engine saw
        at detection with ``ssthresh_basis=flight_size`` (`_reduced_ssthresh`). The RFC's "cwnd = max(ssthresh, 2)" is carried out by the engine: its
        fast recovery starts from this ssthresh, and `on_recovery_exit` sets cwnd = ssthresh.
        The next ACK in congestion avoidance starts a new epoch with cwnd_epoch = ssthresh.
        """
        self._save_before_reduction()
        cwnd = self._exact_cwnd()
        # §4.7: W_max = cwnd * (1 + beta) / 2 when the flow lost at a smaller window than last
        # time (its share is shrinking: release bandwidth sooner), else W_max = cwnd.
        if self.fast_convergence and self.W_max is not None and cwnd < self.W_max:
            self.W_max = cwnd * (1.0 + self.beta_cubic) / 2.0
        else:
            self.W_max = cwnd
        self.cwnd_prior = cwnd  # §4.6: "save cwnd"
        self.ssthresh = self._reduced_ssthresh(cwnd, ev.bytes_in_flight)
        self.t_epoch = None
        self.target = None
        self.region = "recovery"
        self._recovering = True
        # RFC 9406 §4.2 leaves a loss or ECN mark during slow start or CSS to the controller's
        # own response (this one), which ends slow start; §4.3: HyStart++ only in the first one.
        self.hystart_phase = OFF

    def _reduced_ssthresh(self, cwnd: float, flight_size: int) -> int:
        """§4.6: ssthresh = basis * beta_cubic, at least 2 SMSS (§4.6 "cwnd = max(cwnd, 2)" and
        Linux's floor of two segments). The basis is cwnd by default, as Linux: FlightSize
        (snd_nxt - snd_una) after a fast recovery that ended with holes still SACKed around it
        counts the SACKed data, so a loss right after one recovery would set ssthresh above
        the window that just overflowed the queue -- measured: ssthresh 397 -> 696 -> 897 ->
        2,630 segments over four back-to-back recoveries on a 345-segment path."""
        basis = cwnd if self.ssthresh_basis == "cwnd" else flight_size
        return max(round(basis * self.beta_cubic), 2 * self.mss)

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """RFC 6582 §3.2 step 3, option (2): cwnd = ssthresh, i.e. §4.6's cwnd = ssthresh."""
        super().on_recovery_exit(now, bytes_in_flight)
        self._recovering = False

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """§4.8: reduce cwnd like Reno (RFC 5681: one segment) but set ssthresh like §4.6.

        HyStart++ stops for good (RFC 9406 §4.3: only the initial slow start uses it); the slow
        start after the timeout is RFC 5681's, up to the ssthresh set here.

        The following congestion-avoidance stage grows with K = 0 and W_max = cwnd_epoch, and
        W_est starts at cwnd_epoch: marking W_max undefined makes `begin_epoch` do exactly that
        (Linux gets there by resetting its state on TCP_CA_Loss).

        Like NewReno here and Linux's tcp_enter_loss(), ssthresh is not set afresh inside a
        window where it was already set: a re-expiry (no ACK since the last timeout) changes
        nothing but cwnd -- RFC 5681 §3.1 sets ssthresh only when "the given segment has not
        yet been resent by way of the retransmission timer" -- and a timeout during fast
        recovery keeps the smaller of the recovery's ssthresh and flight_size * beta_cubic,
        because FlightSize then includes what the inflated recovery window sent.
        """
        if not self._timed_out:
            if not self._recovering:
                self._save_before_reduction()
            cwnd = self._exact_cwnd()
            ssthresh = self._reduced_ssthresh(cwnd, bytes_in_flight)
            if self._recovering:
                self.ssthresh = min(self.ssthresh, ssthresh)  # cwnd_prior is the event's already
            else:
                self.ssthresh = ssthresh
                self.cwnd_prior = cwnd
            self.W_max = None
            self.t_epoch = None
            self.target = None
            self._timed_out = True
        self._recovering = False
        self.cwnd = self.mss
        self.region = "loss"
        self.hystart_phase = OFF

    _UNDONE = ("W_max", "K", "t_epoch", "cwnd_epoch", "W_est", "cwnd_prior", "target", "region",
               "hystart_phase", "css_baseline_min_rtt", "css_rounds")

    def _save_before_reduction(self) -> None:
        self._before_reduction = tuple(getattr(self, name) for name in self._UNDONE)

    def on_undo(self, ev: UndoEvent) -> None:
        """§4.9: a spurious congestion event. The RFC restores cwnd, ssthresh, W_max, K and the
        epoch as they were before it; the engine supplies cwnd and ssthresh (the base default),
        the rest was saved when the reduction began. (Linux's cubictcp has no undo_cwnd of its
        own and restores only cwnd and ssthresh; restoring the curve too keeps the growth where
        it was, as §4.9 asks.) HyStart++ returns to the phase it was in, if the reduction
        interrupted the initial slow start; its round then ends at the next ACK, since windowEnd
        has long been passed."""
        super().on_undo(ev)
        if self._before_reduction is not None:
            for name, value in zip(self._UNDONE, self._before_reduction):
                setattr(self, name, value)
            self._before_reduction = None
        self._cwnd_seen = self.cwnd
        self._recovering = self._timed_out = False

    def on_mss_change(self, mss: int) -> None:
        old = self.mss
        super().on_mss_change(mss)
        if old == self.mss:
            return
        self._ack_limit = self.hystart_ack_limit * self.mss or None
        # Every window keeps its size in segments; K does not change, since C*MSS scales too.
        if self.W_max is not None:
            self.W_max = self._rescale(self.W_max, old)
        if self.cwnd_prior is not None:
            self.cwnd_prior = self._rescale(self.cwnd_prior, old)
        if self.target is not None:
            self.target = self._rescale(self.target, old)
        self.cwnd_epoch = self._rescale(self.cwnd_epoch, old)
        self.W_est = self._rescale(self.W_est, old)

    def state(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "W_max": self.W_max,
            "K": self.K,
            "t_epoch": self.t_epoch,
            "cwnd_epoch": self.cwnd_epoch,
            "cwnd_prior": self.cwnd_prior,
            "W_est": self.W_est,
            "target": self.target,
            # RFC 9406 (HyStart++); None stands for the RFC's infinity.
            "hystart": self.hystart_phase,
            "hystart_round": self.hystart_round,
            "rtt_sample_count": self.rtt_sample_count,
            "current_round_min_rtt": _finite(self.current_round_min_rtt),
            "last_round_min_rtt": _finite(self.last_round_min_rtt),
            "css_baseline_min_rtt": _finite(self.css_baseline_min_rtt),
            "css_rounds": self.css_rounds,
        }

    # ------------------------------------------------------------------ details

    def _exclude_idle(self, ack: AckSample, gap: float) -> None:
        """§5.8 for idle periods the app_limited flag cannot report.

        After an idle period, the first ACKs can come from a burst that fills cwnd, so they are
        not application-limited -- yet the idle time must not count in t, or W_cubic(t) jumps.
        While the sender keeps a window of data in flight, consecutive ACKs are at most one RTT
        apart; any excess of the gap over the RTT is time the sender was not sending. Linux
        reaches the same end with CA_EVENT_TX_START, moving epoch_start on by the idle time.
        """
        rtt = max(ack.rtt or 0.0, ack.srtt or 0.0)
        if rtt > 0.0 and gap > rtt:
            self.t_epoch += gap - rtt

    def _target_rtt(self, ack: AckSample) -> float:
        if self.rtt_for_target == "min_rtt":
            choices = (ack.min_rtt, ack.srtt, ack.rtt)
        else:
            choices = (ack.srtt, ack.rtt, ack.min_rtt)
        return next((r for r in choices if r is not None), 0.0)

    def _exact_cwnd(self) -> float:
        """cwnd with the fractional byte we carry; the fraction is dropped if someone else
        (the engine, a subclass, the base class's slow start) has set cwnd since."""
        if self.cwnd != self._cwnd_seen:
            self._cwnd_frac = 0.0
            self._cwnd_seen = self.cwnd
        return self.cwnd + self._cwnd_frac

    def _set_exact_cwnd(self, window: float) -> None:
        self.cwnd = int(window)
        self._cwnd_frac = window - self.cwnd
        self._cwnd_seen = self.cwnd


def _finite(value: float) -> float | None:
    return None if value == _INF else value
