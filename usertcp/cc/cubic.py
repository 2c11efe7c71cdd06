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
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from .api import AckSample, CongestionControl, CongestionEvent, UndoEvent


class Cubic(CongestionControl):
    """RFC 9438 CUBIC with RFC 5681 slow start.

    Where the RFC leaves a choice, or where we had to interpret it, the choice is documented on
    the method that makes it. In short:

    - RTT in "target = W_cubic(t + RTT)" (§4.2) is the smoothed RTT, as §4.1.2 defines RTT.
      Linux uses its minimum RTT (delay_min) instead, which keeps the look-ahead steady when a
      queue builds; set ``rtt_for_target = "min_rtt"`` in a subclass for that.
    - The cwnd increment is per acknowledged segment (byte-counted), so delayed and stretch ACKs
      don't slow the curve down -- as Linux counts acked segments against its ``cnt``.
    - Application-limited ACKs change nothing and their time is cut out of t (§5.8); so is an
      idle gap between ACKs (see `_exclude_idle`).
    - ssthresh on congestion is FlightSize * beta_cubic (§4.6), not cwnd * beta_cubic as Linux.
    - Fast convergence (§4.7) is on, as in Linux; ``fast_convergence = False`` turns it off
      (the RFC says it SHOULD be off when a single CUBIC flow has the path to itself).
    - No pacing (``pacing_rate`` stays None): Linux paces CUBIC only under the fq qdisc.
    """

    name = "cubic"

    # §4.1.1 Constants of Interest
    C: ClassVar[float] = 0.4
    """Aggressiveness, in segments/second³; §5.1: "C SHOULD be set to 0.4"."""
    beta_cubic: ClassVar[float] = 0.7
    """Multiplicative decrease factor; §4.6: "SHOULD be set to 0.7"."""
    fast_convergence: ClassVar[bool] = True
    """§4.7: the heuristic "SHOULD be implemented" (Linux: tcp_cubic fast_convergence=1)."""
    rtt_for_target: ClassVar[str] = "srtt"
    """Which RTT looks ahead in target = W_cubic(t + RTT): "srtt" (RFC 9438) or "min_rtt"
    (Linux's delay_min)."""

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
        self.target: float | None = None
        self.region = "slow-start"
        # cwnd is an int of bytes; the fraction of a byte each increment earns is kept here.
        self._cwnd_frac = 0.0
        self._cwnd_seen = self.cwnd
        self._last_ack: float | None = None
        self._timed_out = False  # on_rto seen and no ACK since: a further on_rto is a re-expiry
        self._recovering = False  # on_congestion_event seen, recovery not over
        self._before_reduction: tuple | None = None  # §4.9: the state a spurious reduction undoes

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
        if self.in_slow_start():
            acked = self.slow_start_ack(ack)
            if acked <= 0:
                self.region = "slow-start"
                return
        self.congestion_avoidance(ack, acked, previous)

    def slow_start_ack(self, ack: AckSample) -> int:
        """§4.10: "CUBIC MUST employ a slow-start algorithm, when cwnd is no more than ssthresh".

        At cwnd == ssthresh (right after recovery) `in_slow_start` says congestion avoidance, as
        RFC 5681 permits and Linux does; read literally, §4.10 would slow-start one more ACK.

        The RFC says it SHOULD be HyStart++ (RFC 9406) and MAY be RFC 5681 slow start; this is
        the latter, grown per acknowledged byte like Linux's tcp_slow_start(). HyStart++ will
        override this method: watch ack.rtt per round, and to leave slow start without a loss
        set ssthresh = cwnd. Nothing else is needed here: the epoch that then begins finds
        W_max undefined (and, in the first slow start, cwnd_prior unset) and does what §4.10
        asks: cwnd_prior = cwnd, K = 0, W_max = cwnd_epoch.

        Returns the bytes left over for congestion avoidance.
        """
        return self.slow_start(ack.acked_bytes)

    def congestion_avoidance(self, ack: AckSample, acked: int, previous: float | None) -> None:
        """§4.2-§4.5: one ACK's worth of growth along the cubic curve or the Reno estimate."""
        now = ack.now
        if self.t_epoch is None:
            self.begin_epoch(now)
        elif previous is not None:
            self._exclude_idle(ack, now - previous)
        cwnd = self._exact_cwnd()
        mss = self.mss
        t = now - self.t_epoch

        # §4.2: target = W_cubic(t + RTT), bounded to [cwnd, 1.5 * cwnd] so that the increase
        # rate never falls and stays below slow start's.
        self.target = min(max(self.W_cubic(t + self._target_rtt(ack)), cwnd), 1.5 * cwnd)

        # §4.3, equation 4, with alpha_cubic raised to 1 once W_est has reached cwnd_prior
        # ("the cwnd at the time of most recently setting ssthresh"; drafts of RFC 9438
        # compared with W_max, which fast convergence may have lowered).
        alpha = 1.0 if self.W_est >= self.cwnd_prior else self.alpha_cubic
        self.W_est += alpha * acked * mss / cwnd

        if self.W_cubic(t) < self.W_est:
            # §4.3 Reno-friendly region: "cwnd SHOULD be set to W_est". As a maximum: in the
            # rare case that the look-ahead has already carried cwnd past W_est, an ACK does
            # not shrink the window (§4.2: the increase rate is non-decreasing).
            self.region = "reno-friendly"
            new_cwnd = max(cwnd, self.W_est)
        else:
            # §4.4 concave (cwnd < W_max) / §4.5 convex (cwnd >= W_max) region: cwnd grows by
            # (target - cwnd) / cwnd for each acknowledged segment. The RFC writes "for each
            # received new ACK", assuming one ACK per segment; counting acknowledged bytes keeps
            # the growth per RTT at target - cwnd under delayed and stretch ACKs, as Linux does.
            self.region = "concave" if cwnd < self.W_max else "convex"
            new_cwnd = cwnd + (self.target - cwnd) / cwnd * acked
        self._set_exact_cwnd(new_cwnd)

    def begin_epoch(self, now: float) -> None:
        """Start a congestion-avoidance stage (§4.2): fix t_epoch, cwnd_epoch, K and W_est.

        Started lazily at the first ACK in congestion avoidance, as Linux's bictcp_update()
        starts epoch_start, so the stage begins when growth resumes after recovery.
        """
        cwnd = self._exact_cwnd()
        self.t_epoch = now
        self.cwnd_epoch = cwnd
        self.W_est = cwnd  # §4.3: "W_est is set equal to cwnd_epoch at the start"
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

        ssthresh = max(flight_size * beta_cubic, 2 SMSS), from the FlightSize the engine saw
        at detection. The RFC's "cwnd = max(ssthresh, 2)" is carried out by the engine: its
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
        self.ssthresh = max(round(ev.bytes_in_flight * self.beta_cubic), 2 * self.mss)
        self.t_epoch = None
        self.target = None
        self.region = "recovery"
        self._recovering = True

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """RFC 6582 §3.2 step 3, option (2): cwnd = ssthresh, i.e. §4.6's cwnd = ssthresh."""
        super().on_recovery_exit(now, bytes_in_flight)
        self._recovering = False

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """§4.8: reduce cwnd like Reno (RFC 5681: one segment) but set ssthresh like §4.6.

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
            ssthresh = max(round(bytes_in_flight * self.beta_cubic), 2 * self.mss)
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

    _UNDONE = ("W_max", "K", "t_epoch", "cwnd_epoch", "W_est", "cwnd_prior", "target", "region")

    def _save_before_reduction(self) -> None:
        self._before_reduction = tuple(getattr(self, name) for name in self._UNDONE)

    def on_undo(self, ev: UndoEvent) -> None:
        """§4.9: a spurious congestion event. The RFC restores cwnd, ssthresh, W_max, K and the
        epoch as they were before it; the engine supplies cwnd and ssthresh (the base default),
        the rest was saved when the reduction began. (Linux's cubictcp has no undo_cwnd of its
        own and restores only cwnd and ssthresh; restoring the curve too keeps the growth where
        it was, as §4.9 asks.)"""
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
