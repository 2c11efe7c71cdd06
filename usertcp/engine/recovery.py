"""Loss detection by duplicate ACKs and NewReno fast recovery (RFC 5681 §3.2, RFC 6582).

This module decides; the connection acts. It keeps the duplicate-ACK count, the `recover` point
(RFC 6582 §3.2) and, during fast recovery, the inflated window that governs sending. The
congestion-control plugin only chooses ssthresh on entry and the window on exit, the way Linux
keeps `tcp_congestion_ops.ssthresh` separate from the recovery machinery in tcp_input.c.
"""

from __future__ import annotations

from dataclasses import dataclass

DUPACK_THRESHOLD = 3  # RFC 5681 §3.2


@dataclass(slots=True)
class NewRenoRecovery:
    dupacks: int = 0
    recover: int = 0  # highest sequence sent when recovery (or an RTO) began
    in_recovery: bool = False
    cwnd: int = 0  # the inflated window while in_recovery (RFC 6582 §3.2 steps 2–3)
    partial_acks: int = 0

    def on_duplicate_ack(self, snd_una: int, snd_max: int, ssthresh_fn, mss: int) -> bool:
        """Count a duplicate ACK (RFC 5681 §2 definition, checked by the caller).

        Returns True when this ACK starts fast retransmit. `ssthresh_fn()` is called exactly
        then, so the congestion controller sees the event once.
        """
        self.dupacks += 1
        if self.in_recovery:
            # RFC 6582 §3.2 step 2 / RFC 5681 §3.2 step 4: each further duplicate ACK means
            # one more segment has left the network.
            self.cwnd += mss
            return False
        if self.dupacks != DUPACK_THRESHOLD:
            return False
        # RFC 6582 §3.2 step 1: only when the cumulative ACK covers more than `recover`, so
        # duplicate ACKs for data sent before an earlier loss event don't trigger a second one.
        if snd_una <= self.recover:
            return False
        ssthresh = ssthresh_fn()
        self.in_recovery = True
        self.recover = snd_max
        self.partial_acks = 0
        self.cwnd = ssthresh + DUPACK_THRESHOLD * mss  # RFC 5681 §3.2 step 3 (window inflation)
        return True

    def on_new_ack(self, ack: int, newly_acked: int, mss: int) -> str:
        """An ACK that advanced snd_una. Returns "full", "partial" or "none" (not in recovery).

        Partial ACK (RFC 6582 §3.2 step 3, 'partial acknowledgment'): deflate the window by
        the amount acknowledged, add back one SMSS if at least that much was acknowledged, and
        let the caller retransmit the first unacknowledged segment. Full ACK: recovery ends
        (step 3, 'full acknowledgment'); the caller lets the controller set the window.
        """
        self.dupacks = 0
        if not self.in_recovery:
            return "none"
        if ack > self.recover:
            self.in_recovery = False
            return "full"
        self.cwnd = max(self.cwnd - newly_acked, mss)
        if newly_acked >= mss:
            self.cwnd += mss
        self.partial_acks += 1
        return "partial"

    def on_timeout(self, snd_max: int) -> None:
        """RFC 6582 §3.2 step 4: after a retransmission timeout, record the highest sequence
        sent in `recover` and leave fast recovery."""
        self.recover = snd_max
        self.in_recovery = False
        self.dupacks = 0
