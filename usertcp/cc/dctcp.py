"""DCTCP, Data Center TCP (RFC 8257), as Linux's tcp_dctcp.c runs it over Reno.

A classic ECN sender (RFC 3168) treats a CE mark like a loss and halves its window. That makes
a mark a one-bit signal: a queue touched the marking threshold, or it did not. DCTCP turns the
marks into a measurement instead. The bottleneck marks every packet that finds the queue above
a threshold K (RFC 8257 §3.1, "step marking"); the sender counts, per window of data, the
fraction F of bytes whose ACKs echoed a mark, keeps a moving average of it,

    alpha <- (1 - g) * alpha + g * F                       (RFC 8257 §3.3, steps 5-6)

and on an echo cuts its window in proportion:

    cwnd <- cwnd * (1 - alpha / 2)                         (RFC 8257 §3.3, after the steps)

Light marking (alpha near 0) costs a few percent of the window; a queue that stays above K
(alpha -> 1) halves it, like Reno. The queue therefore hovers around K with small oscillations,
and K can be far below a bandwidth-delay product without losing throughput: low latency and
full links with shallow buffers, which is what DCTCP was built for.

Everything else is Reno: the window grows as in conventional TCP (RFC 8257 §3.4; Linux:
tcp_reno_cong_avoid) and a loss is answered as conventional TCP answers it (§3.5; Linux's
dctcp_react_to_loss() halves on entering recovery or on a timeout), so the class extends
`NewReno`: slow start, congestion avoidance, the loss and timeout reductions.

Choices, where the sources leave room or differ:

- The observation window is one window of data. RFC 8257 ends it when the cumulative ACK
  passes DCTCP.WindowEnd (step 4), which was set to SND.NXT when the previous window ended
  (step 7); Linux does the same with ``next_seq``. The API gives a controller no snd_nxt, but it gives ``delivered_total``
  (bytes delivered so far, cumulatively or by SACK) and ``bytes_in_flight``: their sum is where
  snd_nxt stands, counted in delivered bytes, so the window ends when ``delivered_total``
  reaches the sum taken at its start. We chose this over counting rounds with the rate sample's
  ``prior_delivered`` (BBR's way) because it is RFC 8257's rule restated term for term, and it
  needs nothing but the AckSample's own fields. The window ends at equality, as Linux's
  ``!before(snd_una, next_seq)`` (the RFC's "less than or equal ... stop" wants one byte more).
- Bytes counted. RFC 8257 step 1 counts SEG.ACK - SND.UNA and ignores SACK; Linux counts
  ``tp->delivered`` and ``tp->delivered_ce``, which include SACKed data. We count as Linux does,
  in bytes: the growth of ``delivered_total`` since the previous ACK, marked when ECE was set.
- ACKs the hook does not see. `on_ack` is not called for the ACK whose ECE starts the window
  reduction (the engine answers it with ``on_congestion_event(cause="ecn")``; Linux, in CWR,
  does not grow the window on it either), nor for ACKs during loss recovery. Their bytes still
  show up in ``delivered_total`` at the next `on_ack`. The ones carried by the reducing ACK are
  counted as marked (it had ECE, or there would have been no reduction); the ones of a loss
  recovery as unmarked, since a recovery's ECE is not reported to the controller.
- Initial alpha is 1 (Linux's ``dctcp_alpha_on_init`` = 1024/1024; RFC 8257 §3.3: "initialized
  to 1"): a new flow that is marked at once backs off like Reno until it has measured better.
  g = 1/16 is Linux's ``dctcp_shift_g = 4``.
- The reduction uses cwnd, as the RFC and Linux's dctcp_ssthresh(); ssthresh is set to it and
  the engine applies it at once (Linux reduces towards it with PRR while in CWR). Alpha is a
  float here; Linux keeps it in 1/1024 steps, which lets a small alpha decay to exactly zero.
- DCTCP needs ECN on the connection (Linux: TCP_CONG_NEEDS_ECN, and a fall-back to Reno
  otherwise). Create the engine with ``ecn=True``; without it no ECE ever arrives and this is
  Reno. The receiver matters too: RFC 8257 §3.2 asks it to echo the CE state of every packet,
  where an RFC 3168 receiver (this engine's receive side, for one) sets ECE on every ACK until
  the sender's CWR arrives, an RTT later, so that F overstates the marked fraction. On a short
  path that costs little: in the simulator, at 100 Mbit/s with a 4 ms RTT and K = 15 kB, alpha
  settled near 0.21 with the engine as receiver against 0.13 with an exact echo, and the link
  stayed full either way. On long paths the overstatement grows with the RTT.
"""

from __future__ import annotations

from typing import Any

from .api import AckSample, CongestionEvent, param
from .newreno import NewReno


class Dctcp(NewReno):
    """RFC 8257 §3.3 (alpha and the ECN reduction) over `NewReno` (all the rest)."""

    name = "dctcp"

    g = param(1 / 16, "weight of the newest window in alpha's moving average (RFC 8257 §3.3 "
                      "step 6; Linux dctcp_shift_g = 4)", min=0.0, max=1.0)
    alpha_on_init = param(1.0, "alpha of a new connection (Linux dctcp_alpha_on_init/1024)",
                          min=0.0, max=1.0)

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        self.alpha: float = self.alpha_on_init
        """Estimated fraction of bytes marked, a moving average over windows (DCTCP.Alpha)."""
        self.acked_bytes_ecn = 0
        """Bytes delivered in this observation window whose ACKs carried ECE (DCTCP.BytesMarked)."""
        self.acked_bytes_total = 0
        """Bytes delivered in this observation window (DCTCP.BytesAcked)."""
        self.window_end: int | None = None
        """``delivered_total`` that ends the observation window (DCTCP.WindowEnd); None until
        the first ACK opens one."""
        self._delivered = 0  # delivered_total at the previous on_ack
        self._ece_unseen = False  # an ECE ACK started a reduction since the previous on_ack

    def on_ack(self, ack: AckSample) -> None:
        # Linux runs dctcp_update_alpha (in_ack_event) before cong_avoid; the growth is Reno's.
        self.count_marks(ack)
        super().on_ack(ack)

    def count_marks(self, ack: AckSample) -> None:
        """RFC 8257 §3.3 steps 1-8 for one ACK: count, and at the end of a window, update alpha."""
        delivered = ack.delivered_total
        new = max(0, delivered - self._delivered)
        self._delivered = delivered
        own = min(new, ack.acked_bytes + ack.sacked_bytes)  # what this ACK itself delivered
        earlier = new - own  # delivered by ACKs on_ack did not see (see the module docstring)
        self.acked_bytes_total += new
        if ack.ece:
            self.acked_bytes_ecn += own
        if self._ece_unseen:
            self.acked_bytes_ecn += earlier
            self._ece_unseen = False
        if self.window_end is None:
            self.window_end = delivered + ack.bytes_in_flight
            return
        if delivered >= self.window_end:
            if self.acked_bytes_total > 0:
                fraction = self.acked_bytes_ecn / self.acked_bytes_total  # step 5: M
                self.alpha = (1.0 - self.g) * self.alpha + self.g * fraction  # step 6
            self.window_end = delivered + ack.bytes_in_flight  # step 7: WindowEnd = SND.NXT
            self.acked_bytes_ecn = self.acked_bytes_total = 0  # step 8

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """ECN: ssthresh = cwnd * (1 - alpha/2), at least two segments (RFC 8257 §3.3, Linux
        dctcp_ssthresh()); the engine sets cwnd to it at once. A loss: Reno's halving (RFC 8257
        §3.5; `NewReno.on_congestion_event`)."""
        super().on_congestion_event(ev)
        if ev.cause == "ecn":
            self._ece_unseen = True
            self.ssthresh = max(int(self.cwnd * (1.0 - self.alpha / 2.0)), 2 * self.mss)

    def state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "acked_bytes_ecn": self.acked_bytes_ecn,
            "acked_bytes_total": self.acked_bytes_total,
            "window_end": self.window_end,
            "bytes_acked": self.bytes_acked,
        }
