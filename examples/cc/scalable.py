"""Scalable TCP (Tom Kelly, "Scalable TCP: Improving Performance in Highspeed Wide Area
Networks", ACM SIGCOMM CCR 33(2), 2003), as Linux has it in net/ipv4/tcp_scalable.c.

Reno grows by one segment per RTT and halves on a loss, so the time it needs to win back a
loss grows with the window. Scalable TCP grows by a fixed *fraction* per RTT (Kelly's a = 0.01:
one segment per 100 acknowledged) and gives back a fixed fraction (b = 1/8): the recovery time
is the same at every window size. Linux applies the fractional rule only above 100 segments
(below, min(cwnd, 100) makes it Reno's one-per-window); the decrease to 7/8 applies everywhere.

Run it:  usertcp send HOST:PORT --bytes 64MiB --cc examples/cc/scalable.py:Scalable
                     --cc-param ai_cnt=50 --cc-param decrease=0.125
"""

from usertcp.cc import AckSample, CongestionControl, CongestionEvent, param


class Scalable(CongestionControl):
    """Scalable TCP (Kelly 2003; Linux tcp_scalable.c): +1 segment per min(cwnd, 100) ACKed, -1/8 on loss."""

    # Tunables: `usertcp cc show examples/cc/scalable.py:Scalable` lists them, and
    # `--cc-param ai_cnt=50` sets one for a connection. The class attribute becomes the default.
    ai_cnt = param(100, "segments ACKed per one-segment increase, once cwnd exceeds it "
                        "(Linux TCP_SCALABLE_AI_CNT; Kelly's a = 1/ai_cnt)", min=1, max=100_000)
    decrease = param(0.125, "fraction of cwnd given up on a loss (Kelly's b; Linux cwnd >> 3)",
                     min=0.01, max=0.5)

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)  # cwnd = 10 segments, ssthresh "infinite"; in bytes
        self.acked = 0  # bytes ACKed since cwnd last grew: Linux's snd_cwnd_cnt, in bytes

    def on_ack(self, ack: AckSample) -> None:
        """Linux's cong_avoid: called for each ACK that advanced snd_una outside recovery."""
        if ack.acked_bytes <= 0 or ack.app_limited:  # tcp_is_cwnd_limited(): no news, no growth
            return
        acked = ack.acked_bytes
        if self.in_slow_start():
            acked = self.slow_start(acked)  # the base class's (Linux's) slow start; returns the
            if acked <= 0:                  # bytes left over once cwnd reached ssthresh
                return
        # tcp_cong_avoid_ai(tp, min(cwnd, ai_cnt), acked), in bytes: one segment more for
        # every w bytes ACKed. w = cwnd (Reno) while cwnd is small, ai_cnt segments above that.
        w = min(self.cwnd, self.ai_cnt * self.mss)
        self.acked += acked
        if self.acked >= w:
            segments, self.acked = divmod(self.acked, w)
            self.cwnd += segments * self.mss

    def _reduced(self) -> int:
        """tcp_scalable_ssthresh(): max(cwnd - cwnd/8, 2 segments). Linux reduces the window
        (cwnd), not what was in flight; PRR (the engine's) then brings cwnd down to it."""
        return max(self.cwnd - int(self.cwnd * self.decrease), 2 * self.mss)

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """A loss (or an ECN mark) starts a recovery: set ssthresh. The engine runs the recovery
        and calls on_recovery_exit, whose default sets cwnd = ssthresh."""
        self.ssthresh = self._reduced()
        self.acked = 0

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """The retransmission timer expired: the same ssthresh, and cwnd to one segment. A
        re-expiry finds cwnd at one segment already and keeps ssthresh (as tcp_enter_loss())."""
        if self.cwnd > self.mss:
            self.ssthresh = self._reduced()
        self.cwnd = self.mss
        self.acked = 0

    # on_undo (a spurious reduction), on_idle_restart and on_mss_change keep the base class's
    # defaults, which are Linux's: tcp_reno_undo_cwnd, tcp_cwnd_restart, segments kept.

    def state(self) -> dict:
        """Extra fields for the per-ACK log (--cc-log), next to cwnd and ssthresh."""
        return {"acked": self.acked}
