"""Round-trip time estimation and the retransmission timeout, per RFC 6298.

Differences from the RFC's defaults, each a knob: the minimum RTO defaults to 200 ms, Linux's
TCP_RTO_MIN (include/net/tcp.h), not RFC 6298 §2.4's 1 s, so that this sender and the kernel it is
compared with time out alike; the maximum is RFC 6298 §2.5's 60 s (Linux: 120 s).
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 1 / 8  # RFC 6298 §2.3
BETA = 1 / 4
K = 4


@dataclass(slots=True)
class RttEstimator:
    min_rto: float = 0.200
    max_rto: float = 60.0
    initial_rto: float = 1.0  # RFC 6298 §2.1
    granularity: float = 1e-6  # G: our clock ticks in microseconds
    srtt: float | None = None
    rttvar: float | None = None
    min_rtt: float | None = None
    latest_rtt: float | None = None
    backoff: int = 0  # number of consecutive doublings (RFC 6298 §5.5)
    samples: int = 0  # measurements taken: tells whether an ACK produced one

    def sample(self, r: float) -> None:
        """Fold one measurement R into SRTT and RTTVAR (RFC 6298 §2.2, §2.3)."""
        r = max(r, self.granularity)
        self.latest_rtt = r
        self.samples += 1
        if self.min_rtt is None or r < self.min_rtt:
            self.min_rtt = r
        if self.srtt is None:
            self.srtt = r
            self.rttvar = r / 2
        else:
            self.rttvar = (1 - BETA) * self.rttvar + BETA * abs(self.srtt - r)
            self.srtt = (1 - ALPHA) * self.srtt + ALPHA * r

    @property
    def base_rto(self) -> float:
        """RTO before backoff: SRTT + max(G, K*RTTVAR), clamped (RFC 6298 §2.2–2.5)."""
        if self.srtt is None:
            rto = self.initial_rto
        else:
            rto = self.srtt + max(self.granularity, K * self.rttvar)
        return min(max(rto, self.min_rto), self.max_rto)

    @property
    def rto(self) -> float:
        """The current timeout, including exponential backoff (RFC 6298 §5.5), capped at max."""
        return min(self.base_rto * (1 << self.backoff), self.max_rto)

    def back_off(self) -> None:
        if self.base_rto * (1 << self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_backoff(self) -> None:
        """New data acknowledged: the doubled RTO no longer applies (RFC 6298 §5.7 and the
        usual practice of recomputing RTO from SRTT after a valid sample)."""
        self.backoff = 0
