"""NewReno: RFC 5681 congestion control with RFC 6582 fast recovery.

The recovery half of NewReno (partial ACKs, window inflation) lives in the engine; this class is
the congestion-control half: slow start, congestion avoidance and the window reductions.
"""

from __future__ import annotations

from typing import Any

from .api import AckSample, CongestionControl, CongestionEvent, UndoEvent


class NewReno(CongestionControl):
    """RFC 5681 §3.1 slow start and congestion avoidance, in bytes.

    Choices, each the one Linux's Reno (tcp_cong.c) makes, so a NewReno run here and one in the
    kernel on the same path are comparable:

    - Slow start grows cwnd by every byte an ACK acknowledges, as Linux's tcp_slow_start()
      does. RFC 5681 §3.1 equation (2) allows at most SMSS per ACK (and RFC 3465, experimental,
      L = 2*SMSS); a receiver with delayed ACKs or GRO acknowledges two or more segments per ACK,
      so either limit would make us slower than the kernel on the same path. A subclass with
      ``abc_limit_segments = 1`` (or 2) follows the RFC instead.
    - Congestion avoidance counts bytes, which RFC 5681 §3.1 RECOMMENDS: "count the number of
      bytes that have been acknowledged by ACKs for new data ... When the number of bytes
      acknowledged reaches cwnd, then cwnd can be incremented by up to SMSS bytes" (the
      algorithm of RFC 3465 §2.1). It is exact in integers, does not depend on how many segments
      each ACK covers, and is what Linux's tcp_cong_avoid_ai() does with snd_cwnd_cnt. The
      alternative, cwnd += SMSS*SMSS/cwnd per ACK (equation 3), grows more slowly under
      delayed ACKs.
    - ACKs while the sender is application-limited do not grow cwnd: such an ACK says nothing
      about whether the path could carry more (RFC 7661's premise; Linux only calls cong_avoid
      when tcp_is_cwnd_limited()).
    """

    name = "newreno"

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        self.bytes_acked = 0
        """Bytes acknowledged in congestion avoidance since cwnd last grew (RFC 3465 §2.1)."""
        self._recovering = False  # on_congestion_event seen, recovery not over
        self._timed_out = False  # on_rto seen, no ACK since

    def on_ack(self, ack: AckSample) -> None:
        self._recovering = self._timed_out = False
        acked = ack.acked_bytes
        if acked <= 0 or ack.app_limited:
            return
        if self.in_slow_start():
            acked = self.slow_start(acked)  # leftover past ssthresh goes to congestion avoidance
            if acked <= 0:
                return
        self.congestion_avoidance(acked)

    def congestion_avoidance(self, acked: int) -> None:
        """One SMSS per cwnd's worth of acknowledged bytes (RFC 5681 §3.1, byte counting)."""
        self.bytes_acked += acked
        if self.bytes_acked >= self.cwnd:
            # One increment per cwnd acknowledged; divmod only matters if slow start handed
            # over a leftover that, with this ACK, spans more than a window (Linux does the same).
            increments, self.bytes_acked = divmod(self.bytes_acked, self.cwnd)
            self.cwnd += increments * self.mss

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """RFC 5681 §3.2 step 2 (equation 4): ssthresh = max(FlightSize / 2, 2*SMSS)."""
        self.ssthresh = max(ev.bytes_in_flight // 2, 2 * self.mss)
        self.bytes_acked = 0
        self._recovering = True

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """RFC 6582 §3.2 step 3, option (2): cwnd = ssthresh (the base default)."""
        super().on_recovery_exit(now, bytes_in_flight)
        self._recovering = False

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """RFC 5681 §3.1: ssthresh per equation (4), cwnd = the loss window (one segment).

        Not every expiry sets ssthresh afresh, as in Linux's tcp_enter_loss() ("reduce ssthresh
        if it has not yet been made inside this window"):

        - a re-expiry (no ACK since the last timeout) leaves it alone: RFC 5681 sets ssthresh
          only when "the given segment has not yet been resent by way of the retransmission
          timer";
        - a timeout during fast recovery keeps the smaller of the recovery's ssthresh and
          equation (4): FlightSize then counts what the inflated window sent, and "no more
          than" equation (4) is all RFC 5681 asks.
        """
        if not self._timed_out:
            eq4 = max(bytes_in_flight // 2, 2 * self.mss)
            self.ssthresh = min(self.ssthresh, eq4) if self._recovering else eq4
        self.cwnd = self.mss
        self.bytes_acked = 0
        self._recovering = False
        self._timed_out = True

    def on_undo(self, ev: UndoEvent) -> None:
        """Take the reduction back (the base default) and leave the episode's bookkeeping, so
        the next loss reduces afresh."""
        super().on_undo(ev)
        self._recovering = self._timed_out = False

    def state(self) -> dict[str, Any]:
        return {"bytes_acked": self.bytes_acked}
