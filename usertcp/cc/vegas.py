"""TCP Vegas (Brakmo and Peterson, IEEE JSAC 13(8), 1995), the way Linux's tcp_vegas.c runs it.

Vegas reads congestion from delay instead of waiting for a loss. Once per round trip it compares
the rate the window should give on an empty path, cwnd / BaseRTT, with the rate it gave,
cwnd / RTT. The gap, times BaseRTT, is how much of our own data sits in queues:

    Diff = (Expected - Actual) * BaseRTT = (cwnd/BaseRTT - cwnd/RTT) * BaseRTT
         = cwnd * (RTT - BaseRTT) / RTT                    (segments)

and Vegas steers it between two small numbers: below ``alpha`` segments queued, one segment
more per RTT; above ``beta``, one less; in between, hold. A Vegas flow alone on a path therefore
keeps a few packets in the bottleneck queue however large that queue is, where a loss-based
controller fills it until it overflows.

Which RTT. ``RTT`` is the *smallest* sample of the last round (Linux's ``minRTT``), not the
mean, so that a receiver's delayed ACKs (up to 40 ms late) do not read as queueing; a round with
fewer than three samples is judged unreliable and falls back to Reno for that ACK. ``BaseRTT`` is
the smallest sample over the whole connection.

Where the sources differ, and what this module does:

- Diff's denominator. The paper and the first Linux Vegas (1999) divide by RTT, as above. A 2008
  rewrite of tcp_vegas.c (commit 8d3a564da34e) divides by BaseRTT, which overstates the queue by
  RTT/BaseRTT and changes the equilibrium from rate = alpha/delay to roughly alpha/delay²; the
  fault was reported on netdev in May 2025 ("Potential bug in Linux TCP vegas implementation",
  with the patch "tcp: tcp_vegas fix diff computation") and acknowledged by the author of the
  1999 code. We use
  RTT by default; ``diff_rtt="base_rtt"`` gives the 2008-2025 kernel's formula for comparisons.
- Slow start. The paper doubles cwnd only every other RTT, holding it in between so that a
  round is measured with a steady window. Linux grows every RTT, "to avoid the performance
  penalty"; we do not, by default. With growth every RTT, the round that overfills the path is
  also the round being measured, and its minimum RTT comes from its first ACKs, before its own
  growth built the queue: the exit is noticed one doubling late, and the cut to "the actual
  rate" barely cuts. In the simulator, on 50 Mbit/s with a 40 ms RTT (a BDP of 173 segments),
  Linux's rule left slow start at 319 segments and a standing queue of ~150 packets, which
  congestion avoidance drains at one segment per RTT, for some ten seconds; the paper's rule
  left it at 158 segments with a queue of a few packets. ``ss_every_other_rtt=False`` gives
  Linux's rule. Either way,
  slow start ends when Diff exceeds ``gamma`` and cwnd is cut to what the measured rate needs,
  cwnd * BaseRTT / RTT plus one segment (Linux: "the integer truncation robs us of full link
  utilization").
- Losses. Linux leaves loss detection and recovery alone and uses Reno's reduction
  (``.ssthresh = tcp_reno_ssthresh``); so do we, inheriting `NewReno`'s (RFC 5681 eq. 4, which
  halves FlightSize where Linux halves cwnd; the two agree for a window-limited flow). Vegas then
  sits out: Linux disables it outside the Open state and re-enables it, with a fresh round,
  when recovery ends.
- Idle restart. Linux re-initialises Vegas on CA_EVENT_TX_START, BaseRTT included. We start a
  fresh round but keep BaseRTT, the minimum over the connection: idleness says nothing about
  the propagation delay.
- Units. Linux counts cwnd in segments and time in integer microseconds (adding 1 µs to every
  sample so that no RTT is zero). Here cwnd is in bytes, Diff in (fractional) segments, and a
  sample is floored at 1 µs instead.
"""

from __future__ import annotations

import math
from typing import Any

from .api import AckSample, CongestionEvent, UndoEvent, param
from .newreno import NewReno

_MIN_RTT_SAMPLE = 1e-6  # Linux: "Never allow zero rtt or baseRTT" (it adds 1 us)


class Vegas(NewReno):
    """Delay-based congestion avoidance over Reno's slow start and loss response.

    The per-ACK work is Linux's tcp_vegas_pkts_acked() (fold the RTT sample into the round's and
    the connection's minimum) followed by tcp_vegas_cong_avoid() (once per round, the Vegas
    decision; between rounds, slow-start growth only). A round is one window of data: it ends
    with the first ACK for data sent after it began.
    """

    name = "vegas"

    alpha = param(2.0, "grow cwnd by one segment per RTT while fewer than this many segments are "
                       "queued (Linux tcp_vegas alpha)", min=0.0)
    beta = param(4.0, "shrink cwnd by one segment per RTT while more than this many segments are "
                      "queued (Linux tcp_vegas beta)", min=0.0)
    gamma = param(1.0, "leave slow start once more than this many segments are queued "
                       "(Linux tcp_vegas gamma)", min=0.0)
    diff_rtt = param("rtt", "denominator of Diff: 'rtt' (the paper, Linux 1999, the 2025 fix) or "
                            "'base_rtt' (Linux 2008-2025)", choices=("rtt", "base_rtt"))
    ss_every_other_rtt = param(True, "slow start grows cwnd only every other RTT, as in the "
                                     "paper (False: every RTT, as Linux)")

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        if self.beta < self.alpha:
            raise ValueError(f"beta ({self.beta}) must not be below alpha ({self.alpha})")
        self.baseRTT = math.inf
        """Smallest RTT sample of the connection (s): the propagation delay estimate."""
        self.minRTT = math.inf
        """Smallest RTT sample of the current round (s): propagation plus queueing delay."""
        self.cntRTT = 0
        """RTT samples taken in the current round."""
        self.diff: float | None = None
        """Segments of ours queued in the network, from the last round's decision."""
        self.region = "slow-start"
        """What the last decision did: slow-start, slow-start-exit, increase, hold, decrease,
        reno (too few samples to judge), or recovery (Vegas off until the next ACK)."""
        self.round_end: int | None = None
        """`AckSample.delivered_total` that ends the current round (Linux ``beg_snd_nxt``), or
        None when Vegas is (re)enabled and the next ACK opens a round."""
        self._ss_grows = True  # with ss_every_other_rtt: whether this round is a growing one

    # ------------------------------------------------------------------ hooks

    def on_ack(self, ack: AckSample) -> None:
        self._recovering = self._timed_out = False  # NewReno's bookkeeping: snd_una advanced
        if self.round_end is None:
            self._begin_round(ack)  # vegas_enable(), deferred to the first ACK back in Open
        self._sample(ack.rtt)
        if ack.acked_bytes <= 0 or ack.app_limited:
            # Linux calls cong_avoid only while cwnd-limited (tcp_is_cwnd_limited); the sample
            # above still counts, as tcp_vegas_pkts_acked() runs for every ACK.
            return
        if ack.delivered_total > self.round_end:
            # Linux: after(ack, beg_snd_nxt). The round's flight is delivered: decide, then
            # start the next round from what is outstanding now.
            self._once_per_rtt(ack)
            self._begin_round(ack)
        elif self.in_slow_start() and self._ss_grows:
            self.slow_start(ack.acked_bytes)  # between decisions only slow start grows cwnd

    def _once_per_rtt(self, ack: AckSample) -> None:
        """tcp_vegas_cong_avoid()'s once-per-RTT adjustment, in bytes."""
        if self.cntRTT <= 2:
            # "If we only had 2 samples total, then that means we're getting only 1 ACK per
            # RTT, which means they're almost certainly delayed ACKs": behave like Reno.
            self.region = "reno"
            self.diff = None
            super().on_ack(ack)
            return
        mss = self.mss
        rtt, base = self.minRTT, self.baseRTT
        segments = self.cwnd / mss
        self.diff = segments * (rtt - base) / (rtt if self.diff_rtt == "rtt" else base)
        if self.diff > self.gamma and self.in_slow_start():
            # Queueing has begun: leave slow start with the window the measured rate needs,
            # (actual rate) * BaseRTT = cwnd * BaseRTT / RTT, plus one segment, never more than now.
            target = math.floor(segments * base / rtt) + 1
            self.cwnd = min(self.cwnd, target * mss)
            self.ssthresh = min(self.ssthresh, self.cwnd)
            self.region = "slow-start-exit"
        elif self.in_slow_start():
            if self._ss_grows:
                self.slow_start(ack.acked_bytes)
            self.region = "slow-start"
            if self.ss_every_other_rtt:
                self._ss_grows = not self._ss_grows
        elif self.diff > self.beta:
            self.cwnd -= mss  # too much of ours is queued
            self.ssthresh = min(self.ssthresh, self.cwnd)
            self.region = "decrease"
        elif self.diff < self.alpha:
            self.cwnd += mss  # too little: the path could take more
            self.region = "increase"
        else:
            self.region = "hold"
        # Linux keeps at least two segments, then ssthresh = tcp_current_ssthresh():
        # max(ssthresh, 3/4 cwnd) in the Open state, so congestion avoidance continues.
        self.cwnd = max(self.cwnd, 2 * mss)
        self.ssthresh = max(self.ssthresh, self.cwnd * 3 // 4)

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """Reno's reduction (Linux ``.ssthresh = tcp_reno_ssthresh``); Vegas sits out the
        recovery, as tcp_vegas_state() disables it outside TCP_CA_Open."""
        super().on_congestion_event(ev)
        self._disable()

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """Reno's timeout response (`NewReno.on_rto`); Vegas restarts afterwards."""
        super().on_rto(now, bytes_in_flight)
        self._disable()

    def on_undo(self, ev: UndoEvent) -> None:
        super().on_undo(ev)
        self._disable()  # back to Open: a fresh round, as vegas_enable() on the state change

    def on_idle_restart(self, now: float, idle: float, rto: float) -> None:
        """tcp_cwnd_restart() (the base default), then a fresh round: the samples and saved
        window of before the idle period are stale (Linux's CA_EVENT_TX_START). BaseRTT stays."""
        super().on_idle_restart(now, idle, rto)
        self.round_end = None

    def state(self) -> dict[str, Any]:
        return {
            "baseRTT": None if math.isinf(self.baseRTT) else self.baseRTT,
            "minRTT": None if math.isinf(self.minRTT) else self.minRTT,
            "cntRTT": self.cntRTT,
            "diff": self.diff,
            "region": self.region,
        }

    # ------------------------------------------------------------------ details

    def _sample(self, rtt: float | None) -> None:
        """tcp_vegas_pkts_acked(): min-filter the sample into the round and the connection."""
        if rtt is None:
            return
        rtt = max(rtt, _MIN_RTT_SAMPLE)
        if rtt < self.baseRTT:
            self.baseRTT = rtt
        if rtt < self.minRTT:
            self.minRTT = rtt
        self.cntRTT += 1

    def _begin_round(self, ack: AckSample) -> None:
        """A round ends when everything outstanding now has been delivered: delivered bytes so
        far plus bytes in flight is where snd_nxt stands, in the units of ``delivered_total``
        (Linux: beg_snd_nxt = snd_nxt). The round's samples start afresh."""
        self.round_end = ack.delivered_total + ack.bytes_in_flight
        self.minRTT = math.inf
        self.cntRTT = 0

    def _disable(self) -> None:
        self.round_end = None
        self.region = "recovery"
        self._ss_grows = True
