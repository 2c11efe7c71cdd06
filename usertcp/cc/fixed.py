"""Two controllers that do not control: a constant window, and a constant pacing rate.

These are experiment tools, not congestion control. Neither reacts to anything the network
says -- loss, timeout, delay, ECN -- so on a shared path they are as unfair as a sender can be,
and they belong in a lab, never on the Internet. What they are good for:

- `FixedWindow` ("fixed-window") takes the controller out of the picture to test everything
  else: the engine's loss recovery, the receiver, the path emulation. With the window fixed,
  throughput is window / RTT until the path saturates, and every retransmission or timeout in
  a trace is the engine's doing, not a reaction to one.
- `FixedRate` ("fixed-rate") is a constant-bit-rate source paced by the engine: cross traffic
  for another flow, a probe of how a path treats a known load, or a check of the pacer itself.

Both satisfy what the engine asks of every controller (`usertcp.cc.guard`): cwnd and ssthresh
at least one byte -- here at least one segment, below which a window cannot send a full segment
-- and a pacing rate, when set, positive and finite.

What "never changes" means here: the controller's ``cwnd`` stays put through every hook. The
engine still runs its own loss recovery, and during a SACK recovery the window in force is PRR's
(RFC 6937), which aims at ``ssthresh``; both classes keep ssthresh equal to cwnd, so PRR aims at
the same window and, once every loss is repaired, the engine is back at it. After a timeout the
engine resends what it presumes lost within cwnd, i.e. at once rather than in slow start. That
is the point of the exercise: nothing is backed off.
"""

from __future__ import annotations

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


class _Constant(CongestionControl):
    """The hooks of a controller whose window only its own rule may change: losses, timeouts,
    undos and idle periods change nothing (RFC 5681's reductions and RFC 5681 §4.1's restart
    deliberately not applied)."""

    def _apply(self) -> None:
        """Set cwnd (and ssthresh with it) from the parameters; subclasses decide how."""
        raise NotImplementedError

    def on_ack(self, ack: AckSample) -> None:
        pass

    def on_congestion_event(self, ev: CongestionEvent) -> None:
        self._apply()  # ssthresh = cwnd: PRR aims at the same window, nothing is reduced

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        self._apply()

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        self._apply()  # no loss window of one segment

    def on_undo(self, ev: UndoEvent) -> None:
        self._apply()

    def on_idle_restart(self, now: float, idle: float, rto: float) -> None:
        self._apply()  # no restart window after idle

    def on_mss_change(self, mss: int) -> None:
        """The window is in bytes, as the parameter said; only the one-segment floor moves (the
        base class would keep the segment count instead)."""
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss!r}")
        self.mss = mss
        self._apply()


class FixedWindow(_Constant):
    """cwnd = ``window`` bytes (at least one segment), whatever happens.

    The default, 64 KiB, is the largest window a TCP without window scaling can use (the 16-bit
    window field, RFC 7323 §2.1), so a run with it shows how such a sender fares: enough for
    about 50 Mbit/s at a 10 ms RTT, a visible ceiling on longer or faster paths. It is also the
    engine's largest GSO super-segment (``gso_max``).
    """

    name = "fixed-window"

    window = param(65536, "the congestion window in bytes, constant (at least one segment)", min=1)

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        self._apply()

    def _apply(self) -> None:
        self.cwnd = max(self.window, self.mss)
        self.ssthresh = self.cwnd

    def state(self) -> dict[str, Any]:
        return {"window": self.window}


class FixedRate(_Constant):
    """pacing_rate = ``rate`` (given in bits/s), whatever happens; the window only caps the
    damage when the path is slower than the rate.

    The rate counts what the engine's pacer books for each transmission: payload bytes, as
    Linux's EDT pacing does (see `Connection._on_sent`). So goodput is the rate; the IP packets
    carry 1500/1448 of it (3.6% more) with 1448-byte segments and timestamps.

    The window must not be what limits sending, but neither should it be unbounded: a rate above
    what the path carries would then fill every queue on it. With ``window = 0`` (the default)
    cwnd is twice what the rate puts in flight over the smallest RTT seen, 2 * rate * min_rtt:
    room for the ACK clock's jitter, delayed ACKs and a queue of up to one min_rtt, and a cap of
    about one BDP of queue at the rate when the path is slower. Until the first RTT sample it is
    the initial window (RFC 6928), so the first round trip sends that much, paced. A nonzero
    ``window`` fixes cwnd in bytes instead.
    """

    name = "fixed-rate"

    rate = param(10e6, "pacing rate in bits/s of payload (goodput)",
                 min=1.0, max=1e13)
    window = param(0, "cwnd in bytes; 0: 2 * rate * min_rtt (at least the initial window)", min=0)

    WINDOW_GAIN = 2.0
    """cwnd in units of rate * min_rtt when ``window`` is 0."""

    def __init__(self, mss: int, now: float = 0.0) -> None:
        super().__init__(mss, now)
        self.min_rtt: float | None = None
        """Smallest RTT seen (s), from the ACKs; sizes the automatic window."""
        self.pacing_rate = self.rate / 8.0  # the engine paces in bytes per second
        self._apply()

    def on_ack(self, ack: AckSample) -> None:
        if ack.min_rtt is not None and (self.min_rtt is None or ack.min_rtt < self.min_rtt):
            self.min_rtt = ack.min_rtt
            self._apply()

    def _apply(self) -> None:
        if self.window:
            cwnd = max(self.window, self.mss)
        else:
            cwnd = INITIAL_WINDOW_SEGMENTS * self.mss
            if self.min_rtt is not None:
                cwnd = max(cwnd, int(self.WINDOW_GAIN * self.pacing_rate * self.min_rtt))
        self.cwnd = self.ssthresh = min(cwnd, TCP_INFINITE_SSTHRESH)

    def state(self) -> dict[str, Any]:
        return {"rate_bps": self.rate, "min_rtt": self.min_rtt}
