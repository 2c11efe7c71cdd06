"""Pacing: how big a burst may leave at once, and when the next one may leave. Sans-I/O.

The engine's `Connection` asks a `Pacer` two questions before it hands a transmission to the
datapath: how large a GSO super-segment to build (`burst_bytes`), and whether it may send now
(`can_send`) or when it may (`next_send_time`); after sending it reports what left
(`on_send`). Nothing here reads a clock: every call takes `now`, like the rest of the engine, so
the same pacer runs in virtual time under the simulator and in real time under the event loop.

The model is Linux's, where the pacing rate is a per-socket number (``sk_pacing_rate``) that
either the congestion controller sets (BBR) or TCP derives from cwnd and srtt, and the rate is
enforced either by the fq qdisc or by TCP's internal pacing timer:

Burst size -- ``tcp_tso_autosize()`` / ``tcp_tso_segs()`` (net/ipv4/tcp_output.c)
    A super-segment holds about 1 ms of data at the current rate, ``sk_pacing_rate >>
    sk_pacing_shift`` with ``sk_pacing_shift = 10`` (1/1024 s; sock_init_data() in
    net/core/sock.c), rounded down to whole segments, but never fewer than
    ``tcp_min_tso_segs`` = 2 segments (``net.ipv4.tcp_min_tso_segs``, whose per-CC override is
    ``ca_ops->min_tso_segs``), and never more than the device allows (``sk_gso_max_size``, here
    the engine's `max_payload`). "Goal is to send at least one packet per ms, not one big TSO
    packet every 100 ms. This preserves ACK clocking". Linux 5.18+ adds an allowance for close
    peers, ``sk_gso_max_size >> (min_rtt_us >> tcp_tso_rtt_log)`` with ``tcp_tso_rtt_log = 9``
    (the allowance halves for every 512 us of min RTT); `burst_bytes` applies it when given
    `min_rtt`.

Release times -- ``tcp_update_skb_after_send()`` (tcp_output.c, the EDT model) and
``fq_dequeue()`` (net/sched/sch_fq.c)
    Each transmission of ``len`` bytes books ``len / rate`` seconds of the path: the next one
    may leave at ``time_next_packet = departure + len / rate`` (fq), i.e. TCP advances
    ``tcp_wstamp_ns`` by ``len_ns`` after every skb it sends. `next_send_time` is that time;
    `can_send(now)` is ``now >= next_send_time``.

Lateness credit (the rule this module implements)
    A timer that fires late must not cost rate, but an idle period must not build up a credit
    that is later spent as a line-rate burst. Linux does both with one rule, in fq_dequeue()::

        len -= min(len / 2, now - f->time_next_packet);    /* "schedule/timers drifts" */
        f->time_next_packet = now + len;

    and in tcp_update_skb_after_send() (``credit = tcp_wstamp_ns - prior_wstamp``, how far the
    clock had run past the previous release when this skb was stamped)::

        len_ns -= min_t(u64, len_ns / 2, credit);           /* "take into account OS jitter" */
        tp->tcp_wstamp_ns += len_ns;

    So here: a send of ``nbytes`` at `now`, when the previous release time was ``R``, sets

        lateness = max(0, now - R)
        release  = max(now, R) + d - min(lateness, credit_fraction * d),   d = nbytes / rate

    with ``credit_fraction = 0.5`` (Linux's ``len / 2``). Consequences, which the tests check:

    - a timer that is late by at most half a burst's duration each time loses no rate at all:
      the release times stay exactly ``d`` apart, as if every send had been on time;
    - lateness beyond that is forgiven only up to ``d / 2`` and the rest is lost, so after an
      idle period of any length the flow is at most half a burst ahead of its schedule (fq
      likewise lets a flow run at most one ``quantum`` ahead); nothing accumulates across idle;
    - a send before the release time (the engine sent anyway, e.g. a retransmission it would
      not delay) is booked after the previous one: ``release = R + d``. The average rate holds.

    A rate change applies from the next `on_send`: a release time already booked stays (as an
    skb already stamped by TCP keeps its ``skb->tstamp``).

Not modelled: "Original sch_fq does not pace first 10 MSS" (``tp->data_segs_out >= 10`` in
tcp_update_skb_after_send); here nothing is paced until a rate is set, which with the default
rate needs an srtt, i.e. the first flight goes unpaced anyway. Pure ACKs are not paced in
Linux (fq_dequeue skips ``skb_is_tcp_pure_ack``): the engine should not call `on_send` for them.

The default rate -- ``tcp_update_pacing_rate()`` (net/ipv4/tcp_input.c)
    With pacing on (fq on the interface, or ``SO_MAX_PACING_RATE``/internal pacing) and a
    controller that does not set the rate itself, Linux paces at
    ``ratio * mss * max(cwnd, packets_out) / srtt`` with ``ratio = tcp_pacing_ss_ratio = 200%``
    in slow start and ``tcp_pacing_ca_ratio = 120%`` in congestion avoidance, capped by
    ``sk_max_pacing_rate``. Linux's "slow start" for this purpose is ``cwnd < ssthresh / 2``
    ("if snd_cwnd >= snd_ssthresh / 2, we are approaching end of slow start and should slow
    down"); `pacing_in_slow_start` gives that test. BBR replaces all of this by writing
    ``sk_pacing_rate`` itself. `default_rate` is that formula: the engine uses it only when
    pacing is enabled and the congestion controller leaves ``pacing_rate`` None, as Linux does
    when fq or internal pacing is on; with pacing disabled the engine does not pace at all.

Units: rates in bytes per second, sizes in bytes, times in seconds (floats), as in the engine.
"""

from __future__ import annotations

__all__ = [
    "PACING_SHIFT",
    "MIN_TSO_SEGS",
    "TSO_RTT_LOG",
    "PACING_SS_RATIO",
    "PACING_CA_RATIO",
    "Pacer",
    "default_rate",
    "pacing_in_slow_start",
]

PACING_SHIFT = 10  # sk_pacing_shift: a super-segment holds rate >> 10 bytes (~1 ms)
MIN_TSO_SEGS = 2  # net.ipv4.tcp_min_tso_segs
TSO_RTT_LOG = 9  # net.ipv4.tcp_tso_rtt_log: the min-RTT allowance halves every 2^9 us
PACING_SS_RATIO = 200  # net.ipv4.tcp_pacing_ss_ratio, percent
PACING_CA_RATIO = 120  # net.ipv4.tcp_pacing_ca_ratio, percent


class Pacer:
    """Pacing state of one connection (see the module docstring for the rules).

    - `mss`: payload bytes per wire segment (the engine's send MSS); may be reassigned when the
      MSS changes.
    - `rate`: bytes/s, or None for unpaced (the initial state unless `rate` is given).
    - `shift`: ``sk_pacing_shift``; a burst is ``rate >> shift`` bytes (10: ~1 ms).
    - `min_segs`: the smallest burst in segments (``tcp_min_tso_segs``).
    - `credit_fraction`: how much of a send's own duration lateness may shorten (Linux: 1/2).
    - `slack`: `can_send` accepts a time this much before the release time (a loop that wakes a
      little early); the send is then booked at the release time. 0 in virtual time.
    """

    __slots__ = ("mss", "shift", "min_segs", "credit_fraction", "slack", "_rate", "_release",
                 "bytes_paced", "sends")

    def __init__(
        self,
        mss: int,
        *,
        rate: float | None = None,
        shift: int = PACING_SHIFT,
        min_segs: int = MIN_TSO_SEGS,
        credit_fraction: float = 0.5,
        slack: float = 0.0,
    ) -> None:
        if mss <= 0:
            raise ValueError("mss must be positive")
        if min_segs < 1:
            raise ValueError("min_segs must be >= 1")
        if not 0.0 <= credit_fraction <= 1.0:
            raise ValueError("credit_fraction must be in [0, 1]")
        if slack < 0:
            raise ValueError("slack must be >= 0")
        self.mss = mss
        self.shift = shift
        self.min_segs = min_segs
        self.credit_fraction = credit_fraction
        self.slack = slack
        self._rate: float | None = None
        self._release: float | None = None  # earliest time of the next send (tcp_wstamp_ns)
        self.bytes_paced = 0  # wire bytes reported through on_send while paced
        self.sends = 0
        self.set_rate(rate)

    # ------------------------------------------------------------------ rate

    @property
    def rate(self) -> float | None:
        """The pacing rate in bytes/s, or None when unpaced."""
        return self._rate

    @property
    def paced(self) -> bool:
        return self._rate is not None

    def set_rate(self, rate: float | None) -> None:
        """Set the rate (bytes/s) or None to stop pacing, which also forgets the release time.

        A booked release time stays when the rate changes; the new rate spaces the next send.
        """
        if rate is None:
            self._rate = None
            self._release = None
            return
        if not rate > 0:  # also rejects NaN
            raise ValueError(f"pacing rate must be > 0 bytes/s or None, not {rate!r}")
        self._rate = float(rate)

    # ------------------------------------------------------------------ burst size

    def burst_bytes(self, max_payload: int, min_rtt: float | None = None) -> int:
        """The super-segment size to build now: tcp_tso_autosize() at the current rate.

        ``rate >> shift`` bytes (~1 ms of data) in whole segments, at least `min_segs`
        segments, at most `max_payload`; `max_payload` when unpaced. With `min_rtt` (seconds)
        Linux's close-peer allowance ``max_payload >> (min_rtt_us >> 9)`` is added first.
        """
        if self._rate is None:
            return max_payload
        nbytes = int(self._rate) >> self.shift
        if min_rtt is not None:
            r = int(min_rtt * 1_000_000) >> TSO_RTT_LOG
            if r < 32:  # BITS_PER_TYPE(sk_gso_max_size)
                nbytes += max_payload >> r
        nbytes = min(nbytes, max_payload)
        segs = max(nbytes // self.mss, self.min_segs)
        return min(segs * self.mss, max_payload)

    # ------------------------------------------------------------------ release times

    def next_send_time(self, now: float | None = None) -> float | None:
        """The earliest time the next transmission may leave.

        None when unpaced or nothing has been sent yet; with `now`, also None when the pacer
        does not hold a send at `now` (the release time has passed), so the result can go
        straight into the engine's deadline. Without `now` a past release time is returned.
        """
        release = self._release
        if release is None or self._rate is None:
            return None
        if now is not None and now + self.slack >= release:
            return None
        return release

    def can_send(self, now: float) -> bool:
        """Whether a transmission may leave at `now`."""
        release = self._release
        return release is None or self._rate is None or now + self.slack >= release

    def on_send(self, now: float, nbytes: int) -> float | None:
        """Account a transmission of `nbytes` at `now` (the engine books payload, as Linux does).

        Returns the new release time (None when unpaced). See "Lateness credit" in the module
        docstring for the rule.
        """
        rate = self._rate
        if rate is None:
            return None
        self.sends += 1
        self.bytes_paced += nbytes
        d = nbytes / rate
        release = self._release
        if release is None or now > release:
            late = 0.0 if release is None else now - release
            credit = self.credit_fraction * d
            if late < credit:
                credit = late
            release = now + d - credit
        else:
            release += d  # on time (now == release) or early: booked after the previous one
        self._release = release
        return release

    def reset(self) -> None:
        """Forget the release time (keeps the rate): the next send leaves at once."""
        self._release = None

    def __repr__(self) -> str:
        r = "unpaced" if self._rate is None else f"{self._rate * 8 / 1e6:.3f} Mbit/s"
        return f"<Pacer {r} mss={self.mss} release={self._release}>"


def pacing_in_slow_start(cwnd: float, ssthresh: float) -> bool:
    """tcp_update_pacing_rate()'s slow-start test: ``cwnd < ssthresh / 2``.

    Linux applies the 200% ratio only in the first half of slow start ("approaching end of slow
    start and should slow down"); pass the result as `default_rate`'s `in_slow_start` to match
    it, or the controller's own ``in_slow_start()`` for the plain RFC 5681 condition.
    """
    return cwnd < ssthresh / 2


def default_rate(
    cwnd: float,
    srtt: float | None,
    in_slow_start: bool,
    *,
    in_flight: float = 0,
    max_rate: float | None = None,
    ss_ratio: int = PACING_SS_RATIO,
    ca_ratio: int = PACING_CA_RATIO,
) -> float | None:
    """Linux's default pacing rate, tcp_update_pacing_rate(), in bytes/s.

    ``ratio * max(cwnd, in_flight) / srtt`` with `cwnd` and `in_flight` (``packets_out``) in
    bytes, ratio `ss_ratio`% (200) in slow start and `ca_ratio`% (120) otherwise, capped at
    `max_rate` (``sk_max_pacing_rate``). None without an RTT sample (srtt None or 0): nothing
    to pace by yet. The engine calls this only when pacing is enabled and the congestion
    controller leaves ``pacing_rate`` None.
    """
    if not srtt or srtt <= 0:
        return None
    ratio = ss_ratio if in_slow_start else ca_ratio
    rate = ratio / 100 * max(cwnd, in_flight) / srtt
    if max_rate is not None and rate > max_rate:
        rate = max_rate
    return rate if rate > 0 else None
