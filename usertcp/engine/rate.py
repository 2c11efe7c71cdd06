"""Delivery rate estimation, sans-I/O (draft-cheng-iccrg-delivery-rate-estimation-02).

The question a model-based controller such as BBR asks on every ACK is "how fast did the network
deliver my most recent flight?". The draft answers it without timers or probes: every
transmission remembers how much had been delivered, and when, at the moment it left; when that
transmission is (S)ACKed, the difference between the connection's counters now and the ones it
carried is one rate sample. This module is that bookkeeping and nothing else; the engine owns the
scoreboard and tells it what happened.

How the engine drives it
------------------------
1. On every (re)transmission, *before* the bytes count as in flight::

       rec.rate = rate.on_send(now, flight_size_before, size=n)

   ``flight_size_before`` is SND.NXT - SND.UNA before this send (the draft tests
   ``SND.NXT == SND.UNA``; Linux tests ``packets_out == 0``), so a retransmission after a
   timeout, while everything is still outstanding, does not restart the interval. A
   retransmission replaces the record's snapshot.
2. While processing one ACK, for every record (or piece of one) that the ACK newly acknowledges,
   cumulatively or by SACK, in sequence order::

       rate.on_delivered(rec.rate, now, nbytes, is_retrans=rec.retransmitted)

   Calling it again for a piece already credited (a SACKed record later covered by the
   cumulative ACK) credits nothing: each transmitted byte is delivered once. (Data SACKed and
   then retransmitted, which only SACK reneging justifies, gets a fresh snapshot and is counted
   again when delivered again, as in Linux, where reneging clears the SACKed marks.)
3. Once the ACK is processed (losses marked, in-flight recomputed)::

       rs = rate.generate(now, lost_bytes_total, prior_in_flight=..., min_rtt=rtt.min_rtt)

   ``generate`` always returns a `RateSample`: the losses and acked bytes of an ACK matter to
   BBR even when the ACK carries no usable rate. A sample with no usable rate has
   ``delivery_rate is None`` (``valid`` is False): either nothing was delivered, or the
   interval was zero, or it was shorter than min_rtt and discarded (draft "upon receiving an
   ACK"; Linux tcp_rate_gen() marks the same samples with interval_us = -1).
4. When the application hands over data, and whenever the sender stops sending for want of
   data rather than of window (the draft checks on each application write; so does Linux's
   tcp_sendmsg())::

       rate.mark_app_limited(bytes_in_flight, cwnd, pending_bytes, mss, lost_not_retransmitted)

Names, and the Linux net/ipv4/tcp_rate.c field each stands for
--------------------------------------------------------------
Linux counts delivered *segments*; we count bytes, as the draft and QUIC do, so rates come out in
bytes per second directly.

==================================  ==================================================
here                                Linux
==================================  ==================================================
``RateEstimator.delivered``         ``tp->delivered``
``RateEstimator.delivered_time``    ``tp->delivered_mstamp``
``RateEstimator.first_tx_time``     ``tp->first_tx_mstamp``
``RateEstimator.app_limited``       ``tp->app_limited``
``RateEstimator.lost``              ``tp->lost``
``rate_delivered/_interval/...``    ``tp->rate_delivered``, ``rate_interval_us``,
                                    ``rate_app_limited`` (what tcp_info reports)
``TxSnapshot``                      ``TCP_SKB_CB(skb)->tx`` plus ``skb->skb_mstamp_ns``
``TxSnapshot.tx_time``              ``skb->skb_mstamp_ns``
``on_send``                         ``tcp_rate_skb_sent()``
``on_delivered``                    ``tcp_rate_skb_delivered()``
``generate``                        ``tcp_rate_gen()``
``mark_app_limited``                ``tcp_rate_check_app_limited()``
``RateSample``                      ``struct rate_sample``
``RateSample.prior_delivered``      ``rs->prior_delivered``
``RateSample.send_elapsed``         ``rs->snd_interval_us``
``RateSample.ack_elapsed``          ``rs->rcv_interval_us``
``RateSample.interval``             ``rs->interval_us``
``RateSample.rtt``                  ``rs->rtt_us``
==================================  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RateEstimator", "RateSample", "TxSnapshot", "CLOCK_SLACK"]

CLOCK_SLACK = 1e-9
"""Seconds by which an interval may fall short of min_rtt and still count as not shorter.

Linux compares whole microseconds. Our times are floats, and an interval computed as the
difference of two float times can land a few ulps below an RTT measured over the same span; such
a sample must not be thrown away for rounding. One nanosecond is far below any clock we run on.
"""


@dataclass(slots=True)
class TxSnapshot:
    """The connection's delivery state when one transmission left (draft: per-packet state P).

    The engine stores it, opaque, in the scoreboard record (``rec.rate``); only this module
    creates and reads it. A retransmission gets a fresh snapshot.
    """

    delivered: int
    """`RateEstimator.delivered` at send time (P.delivered)."""
    delivered_time: float
    """`RateEstimator.delivered_time` at send time (P.delivered_time)."""
    first_tx_time: float
    """Start of the send interval this transmission belongs to (P.first_sent_time)."""
    is_app_limited: bool
    """Sent during an app-limited phase (P.is_app_limited)."""
    tx_time: float
    """When it was sent (P.sent_time)."""
    lost: int = 0
    """`RateEstimator.lost` at send time: lets a controller compute the loss rate of the data sent
    since this transmission (what BBRv3 keeps in ``tx.lost``)."""
    size: int | None = None
    """Bytes sent, when the engine says; it caps what can ever be credited for this transmission."""
    counted: int = 0
    """Bytes of this transmission already credited as delivered. The draft zeroes
    P.delivered_time for the same purpose; an explicit count also copes with a record delivered
    in pieces (part SACKed, the rest cumulatively acknowledged later)."""

    def _uncounted(self, nbytes: int) -> int:
        if self.size is None:
            return 0 if self.counted else nbytes
        return max(0, min(nbytes, self.size - self.counted))


@dataclass(frozen=True, slots=True)
class RateSample:
    """One ACK's delivery-rate sample (draft: rs; Linux: ``struct rate_sample``)."""

    delivered: int
    """Bytes delivered over `interval`: delivered now minus the snapshot's delivered (0 when
    nothing was delivered by this ACK)."""
    interval: float
    """max(send_elapsed, ack_elapsed), seconds. Reported even for a sample discarded because it
    was shorter than min_rtt, so that traces can show why."""
    delivery_rate: float | None
    """delivered / interval in bytes per second; None when there is no usable sample (nothing
    delivered, interval zero, or interval < min_rtt)."""
    rtt: float | None
    """now minus the send time of the transmission the sample is built on; None when any piece
    this ACK delivered was a retransmission (Karn's rule, RFC 6298 §3: the ACK may answer the
    retransmission or the original, and for data that waited behind a hole its timing is the
    retransmission's, not theirs). Linux drops the RTT only for the cumulatively acknowledged
    part and still takes one from newly SACKed data; we do not tell the two apart, so we are
    the more cautious."""
    losses: int
    """Bytes newly marked lost while processing this ACK."""
    acked_sacked: int
    """Bytes newly delivered (cumulatively acknowledged or SACKed) by this ACK."""
    prior_in_flight: int
    """Bytes in flight before this ACK was processed, as the engine reported it."""
    prior_delivered: int
    """The snapshot's `delivered` (0 when nothing was delivered): BBR's round counting."""
    is_app_limited: bool
    """The sample's transmission left during an app-limited phase, so the rate may understate
    what the path can carry. (When this ACK delivered nothing: whether the connection is in an
    app-limited phase now.)"""
    is_retrans: bool
    """The transmission the sample is based on was a retransmission."""
    send_elapsed: float
    """tx_time - first_tx_time of the snapshot: the send phase."""
    ack_elapsed: float
    """delivered_time now - delivered_time of the snapshot: the ACK phase."""

    @property
    def valid(self) -> bool:
        """True when `delivery_rate` is a usable bandwidth sample."""
        return self.delivery_rate is not None


class RateEstimator:
    """Connection-level delivery-rate state (draft: per-connection state C). See the module
    docstring for the order of calls."""

    __slots__ = (
        "delivered",
        "delivered_time",
        "first_tx_time",
        "app_limited",
        "lost",
        "rate_delivered",
        "rate_interval",
        "rate_app_limited",
        "_acked_sacked",
        "_newest",
        "_newest_retrans",
        "_any_retrans",
    )

    def __init__(self) -> None:
        self.delivered = 0
        """Bytes delivered so far, each (S)ACKed byte counted once (C.delivered)."""
        self.delivered_time: float | None = None
        """When `delivered` last grew (C.delivered_time)."""
        self.first_tx_time: float | None = None
        """Send time of the newest transmission delivered so far; the current send interval
        starts there (C.first_sent_time)."""
        self.app_limited = 0
        """0, or the value of `delivered` that ends the current app-limited phase (C.app_limited)."""
        self.lost = 0
        """Bytes marked lost so far, as last reported to `generate`."""
        # The last sample that was not app-limited, or an app-limited one that beat it: what
        # Linux reports as tcpi_delivery_rate.
        self.rate_delivered = 0
        self.rate_interval = 0.0
        self.rate_app_limited = False
        self._reset_ack()

    def _reset_ack(self) -> None:
        self._acked_sacked = 0
        self._newest: TxSnapshot | None = None
        self._newest_retrans = False
        self._any_retrans = False

    # ------------------------------------------------------------------ sending

    def on_send(self, now: float, bytes_in_flight_before: int, size: int | None = None) -> TxSnapshot:
        """Draft, "upon transmitting a data packet": snapshot the counters for this transmission.

        With nothing in flight, a new send interval begins now: both first_tx_time and
        delivered_time restart, so that the idle time before this send is counted neither as
        sending nor as ACK time (it would make the rate look low for no fault of the path).
        """
        if bytes_in_flight_before <= 0 or self.first_tx_time is None or self.delivered_time is None:
            self.first_tx_time = now
            self.delivered_time = now
        return TxSnapshot(
            delivered=self.delivered,
            delivered_time=self.delivered_time,
            first_tx_time=self.first_tx_time,
            is_app_limited=self.app_limited != 0,
            tx_time=now,
            lost=self.lost,
            size=size,
        )

    def mark_app_limited(
        self,
        bytes_in_flight: int,
        cwnd: int,
        pending_bytes: int,
        mss: int,
        lost_not_retransmitted: int = 0,
    ) -> bool:
        """Draft, "detecting application-limited phases": is the application, not the network,
        what keeps the pipe from being full?

        It is when all hold: less than one segment is waiting to be sent (`pending_bytes`), the
        window is not full (`bytes_in_flight < cwnd`), and every byte marked lost has been
        retransmitted (else the sender is busy with repair, not idle). The phase then lasts
        until everything in flight now has been delivered, so `app_limited` is set to
        delivered + bytes_in_flight (1 if that is 0, since 0 means "not app-limited").
        Transmissions sent until then carry the flag, and so do the samples built on them.
        Returns whether the sender was marked app-limited.
        """
        if pending_bytes < mss and bytes_in_flight < cwnd and lost_not_retransmitted <= 0:
            self.app_limited = (self.delivered + bytes_in_flight) or 1
            return True
        return False

    @property
    def is_app_limited(self) -> bool:
        return self.app_limited != 0

    # ------------------------------------------------------------------ receiving an ACK

    def on_delivered(
        self, snapshot: TxSnapshot, now: float, bytes_delivered: int, is_retrans: bool = False
    ) -> int:
        """Draft, "upon receiving an ACK", per packet: credit bytes newly (S)ACKed.

        Returns the bytes credited (0 for a piece already credited). Among the transmissions
        credited by this ACK, the sample is built on the most recently *sent* one: later send
        time wins, then (same instant, as in virtual time) the higher snapshot ``delivered``,
        i.e. the one sent after more had been delivered; at a complete tie the later call wins.
        The draft and Linux break that last tie on the higher end sequence number, which is the
        same thing as long as the engine reports pieces in sequence order. The send interval of
        the next sample starts at the chosen transmission's send time.
        """
        n = snapshot._uncounted(bytes_delivered)
        if n <= 0:
            return 0
        snapshot.counted += n
        self.delivered += n
        self.delivered_time = now
        self._acked_sacked += n
        newest = self._newest
        if newest is None or (snapshot.tx_time, snapshot.delivered) >= (newest.tx_time, newest.delivered):
            self._newest = snapshot
            self._newest_retrans = is_retrans
            self.first_tx_time = snapshot.tx_time
        self._any_retrans = self._any_retrans or is_retrans
        return n

    def generate(
        self,
        now: float,
        lost_bytes_now: int | None = None,
        acked_sacked: int | None = None,
        prior_in_flight: int = 0,
        min_rtt: float | None = None,
    ) -> RateSample:
        """Draft, "upon receiving an ACK", after the per-packet steps: build this ACK's sample.

        `lost_bytes_now` is the engine's running total of bytes marked lost; the sample's
        `losses` is its growth since the previous call. `acked_sacked` defaults to what
        `on_delivered` credited during this ACK.

        interval = max(send_elapsed, ack_elapsed): sending a flight and receiving its ACKs are
        two pipeline phases, and the rate of the slower one is the one the path sustained. ACK
        compression shortens the ACK phase and would overstate the rate; a stretched-out send
        phase (pacing, application pauses) would be hidden by the ACK phase; the longer of the
        two guards against both. An interval shorter than min_rtt cannot be a real flight's
        (typically a spurious retransmission that was delivered by its original) and is
        discarded: the sample comes back with ``delivery_rate=None``.
        """
        if self.app_limited and self.delivered > self.app_limited:
            self.app_limited = 0  # the app-limited bubble has been delivered
        losses = 0
        if lost_bytes_now is not None:
            losses = max(0, lost_bytes_now - self.lost)
            self.lost = max(self.lost, lost_bytes_now)
        acked = self._acked_sacked if acked_sacked is None else acked_sacked
        newest, is_retrans, any_retrans = self._newest, self._newest_retrans, self._any_retrans
        self._reset_ack()
        rtt = None if newest is None or any_retrans else now - newest.tx_time

        if newest is None or self.delivered_time is None:
            return RateSample(
                delivered=0,
                interval=0.0,
                delivery_rate=None,
                rtt=rtt,
                losses=losses,
                acked_sacked=acked,
                prior_in_flight=prior_in_flight,
                prior_delivered=0,
                is_app_limited=self.app_limited != 0,
                is_retrans=False,
                send_elapsed=0.0,
                ack_elapsed=0.0,
            )

        send_elapsed = newest.tx_time - newest.first_tx_time
        ack_elapsed = self.delivered_time - newest.delivered_time
        interval = max(send_elapsed, ack_elapsed)
        delivered = self.delivered - newest.delivered
        rate = None
        if interval > 0 and not (min_rtt is not None and interval < min_rtt - CLOCK_SLACK):
            rate = delivered / interval
            # What Linux reports as the connection's delivery rate: the newest sample that is
            # not app-limited, or an app-limited one that shows a higher rate.
            if not newest.is_app_limited or delivered * self.rate_interval >= self.rate_delivered * interval:
                self.rate_delivered = delivered
                self.rate_interval = interval
                self.rate_app_limited = newest.is_app_limited
        return RateSample(
            delivered=delivered,
            interval=interval,
            delivery_rate=rate,
            rtt=rtt,
            losses=losses,
            acked_sacked=acked,
            prior_in_flight=prior_in_flight,
            prior_delivered=newest.delivered,
            is_app_limited=newest.is_app_limited,
            is_retrans=is_retrans,
            send_elapsed=send_elapsed,
            ack_elapsed=ack_elapsed,
        )

    @property
    def delivery_rate(self) -> float | None:
        """The connection's current delivery-rate estimate for traces (Linux tcpi_delivery_rate)."""
        if self.rate_interval <= 0:
            return None
        return self.rate_delivered / self.rate_interval
