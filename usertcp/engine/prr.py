"""Proportional Rate Reduction for fast recovery (RFC 6937; RFC 9937 selectable), sans-I/O.

Fast recovery has to shrink the amount in flight from the pre-loss window down to the ssthresh
the congestion controller chose. RFC 5681/6582 do it by sending nothing for half a window and
then one segment per ACK; with a burst of losses or thinned ACKs that can leave far less than
ssthresh in flight, and a timeout follows. PRR instead spreads the reduction over the whole
recovery round: while more than ssthresh is in flight (RFC 6937 §3, "pipe > ssthresh"), each ACK
releases data in proportion to what it reports delivered, ssthresh/RecoverFS of it, so that one
round later exactly ssthresh is in flight. When losses have already pushed the flight below
ssthresh, a *reduction bound* lets it climb back:

- PRR-CRB, conservative (RFC 6937 §3): send no more than was delivered during recovery (packet
  conservation);
- PRR-SSRB, slow-start (RFC 6937 §3, the RFC's recommendation and our default): one extra segment
  per ACK, which grows the flight like slow start would;
- RFC 9937 §4 (the Standards Track successor that obsoletes RFC 6937, ``variant="rfc9937"``):
  CRB, but never less than this ACK's DeliveredData, plus one SMSS only on a "safe" ACK (it
  advances SND.UNA and no further loss is indicated). It also computes RecoverFS without what
  was SACKed before recovery began (see `Prr.enter`), ignores ACKs that deliver nothing
  (RFC 9937 §6.2), credits duplicate ACKs without SACK only up to RecoverFS, and sets
  cwnd = ssthresh when recovery ends.

All quantities are bytes. Linux's tcp_cwnd_reduction() runs the same computation in segments,
with its RFC 9937 shape (and RecoverFS taken as the cwnd before recovery, ``tp->prior_cwnd``).

How the engine drives it
------------------------
::

    prr.enter(ssthresh, recover_fs, now)        # the ACK that starts recovery, then also:
    sndcnt = prr.on_ack(delivered_data, pipe, snd_una_advanced=..., further_loss=...)
    ... send at most sndcnt bytes (retransmissions first), calling prr.on_sent(n) for each ...
    sndcnt = prr.on_ack(...)                    # every later ACK in recovery
    cwnd = prr.exit()                           # the ACK that ends recovery (not passed to on_ack)

``on_ack`` returns what this ACK allows to be sent, sndcnt, never negative; the equivalent
window is ``prr.cwnd`` (pipe + sndcnt, RFC 9937 §4). ``delivered_data`` is RFC 6937 §2's
DeliveredData: change_in(SND.UNA) + change_in(SACKd) for this ACK; without SACK,
`Prr.delivered_without_sack` computes it from the duplicate ACKs as §2 describes.

Bytes or whole segments
-----------------------
RFC 6937 counts bytes, so the proportional quota ceil(prr_delivered * ssthresh / RecoverFS) can
be a fraction of a segment: in RFC 9937's own example (ssthresh/RecoverFS = 1/2) with 1448-byte
segments, the first ACK of recovery allows 724 bytes, and an engine that only sends full
segments would hold back the fast retransmit for an ACK. Linux counts segments, which amounts to
rounding that quota up to a whole number of SMSS. ``Prr(mss, whole_segments=True)`` does
exactly that (only to the proportional quota; the bounds below ssthresh are already whole
segments when DeliveredData is). The default is the RFCs' byte arithmetic.

The first-transmission guarantee
--------------------------------
RFC 6937 §3 has no rule that forces the fast retransmit out: if the very first ACK of recovery
finds pipe already at or below ssthresh with nothing left to catch up, sndcnt is 0 and the lost
segment would wait for the timer. RFC 9937 §4 closes this with "if prr_out is 0 and SndCnt is 0,
SndCnt = SMSS", written here exactly so (Linux: ``max(sndcnt, prr_out ? 0 : 1)``). We apply it in
every variant by default (``force_fast_retransmit=True``); pass False for RFC 6937 to the letter.
"""

from __future__ import annotations

__all__ = ["Prr", "PRR_CRB", "PRR_SSRB", "PRR_RFC9937", "VARIANTS"]

PRR_SSRB = "ssrb"  # RFC 6937 §3, slow-start reduction bound (recommended there)
PRR_CRB = "crb"  # RFC 6937 §3, conservative reduction bound
PRR_RFC9937 = "rfc9937"  # RFC 9937 §4
VARIANTS = (PRR_SSRB, PRR_CRB, PRR_RFC9937)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class Prr:
    """PRR state for one connection; reused across recovery episodes (`enter` resets it)."""

    __slots__ = (
        "mss",
        "variant",
        "force_fast_retransmit",
        "in_recovery",
        "entered_at",
        "ssthresh",
        "recover_fs",
        "prr_delivered",
        "prr_out",
        "sndcnt",
        "cwnd",
        "forced",
        "whole_segments",
        "_dupack_credit",
    )

    def __init__(
        self,
        mss: int,
        variant: str = PRR_SSRB,
        *,
        force_fast_retransmit: bool = True,
        whole_segments: bool = False,
    ) -> None:
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss!r}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown PRR variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.mss = mss
        self.variant = variant
        self.force_fast_retransmit = force_fast_retransmit
        self.whole_segments = whole_segments
        self.in_recovery = False
        self.entered_at: float | None = None
        self.ssthresh = 0
        self.recover_fs = 0
        self.prr_delivered = 0
        """Total bytes delivered during recovery (RFC 6937 §3)."""
        self.prr_out = 0
        """Total bytes sent during recovery (RFC 6937 §3)."""
        self.sndcnt = 0
        """The last sndcnt as computed, before clamping at 0 (negative when PRR is ahead)."""
        self.cwnd: int | None = None
        """pipe + sndcnt after the last ACK (RFC 9937 §4's ``cwnd = pipe + SndCnt``)."""
        self.forced = False
        """The first-transmission guarantee set the last ACK's sndcnt (see the module docstring).
        It fires on every ACK until something has been sent, not just once."""
        self._dupack_credit = 0

    def enter(
        self, ssthresh: int, recover_fs: int, now: float, mss: int | None = None, *, cwnd: int | None = None
    ) -> None:
        """Initialise PRR at the start of recovery (RFC 6937 §3), before this ACK's `on_ack`.

        `ssthresh` is what the congestion controller just chose ("CongCtrlAlg()"). `recover_fs`
        is RecoverFS: for RFC 6937, the FlightSize SND.NXT - SND.UNA at the start of recovery.
        RFC 9937 §4 instead leaves out the bytes that were SACKed *before* the ACK that starts
        recovery (they will never be counted in prr_delivered) and keeps the bytes that ACK
        newly acknowledges (they will): pass FlightSize before this ACK minus the SACKed bytes
        before it. Either way, prr_delivered reaches RecoverFS when the recovery round is over.
        `cwnd` is the window in force before recovery; RFC 9937 leaves the window unchanged on
        an ACK that delivers nothing, and before any ACK that window is this one (default:
        `recover_fs`).
        """
        if ssthresh <= 0:
            raise ValueError(f"ssthresh must be positive, got {ssthresh!r}")
        if mss is not None:
            if mss <= 0:
                raise ValueError(f"mss must be positive, got {mss!r}")
            self.mss = mss
        self.in_recovery = True
        self.entered_at = now
        self.ssthresh = ssthresh
        self.recover_fs = max(recover_fs, 1)  # a zero would divide by zero; one byte is harmless
        self.prr_delivered = 0
        self.prr_out = 0
        self.sndcnt = 0
        self.cwnd = recover_fs if cwnd is None else cwnd
        self.forced = False
        self._dupack_credit = 0

    def on_ack(
        self,
        delivered_bytes: int,
        pipe: int,
        *,
        snd_una_advanced: bool = False,
        further_loss: bool = False,
    ) -> int:
        """RFC 6937 §3 "on every ACK during recovery": how many bytes this ACK lets us send.

        `delivered_bytes` is DeliveredData, `pipe` the bytes in flight after processing this
        ACK (RFC 6675's pipe algorithm). `snd_una_advanced` and `further_loss` matter only to
        RFC 9937, whose slow-start bonus needs a "safe" ACK: SND.UNA advanced and this ACK
        marked nothing more lost.
        """
        if not self.in_recovery:
            raise RuntimeError("Prr.on_ack() outside recovery; call enter() first")
        mss = self.mss
        self.forced = False
        if self.variant == PRR_RFC9937 and delivered_bytes <= 0:
            # RFC 9937 §6.2: an ACK that reports nothing delivered changes nothing; what the
            # unchanged window leaves room for may still be sent.
            self.sndcnt = self.cwnd - pipe if self.cwnd is not None else 0
            return max(0, self.sndcnt)
        delivered_bytes = max(0, delivered_bytes)
        self.prr_delivered += delivered_bytes
        ssthresh = self.ssthresh
        if pipe > ssthresh:
            # Proportional Rate Reduction: ssthresh/RecoverFS of what was delivered, rounded up.
            quota = _ceil_div(self.prr_delivered * ssthresh, self.recover_fs)
            if self.whole_segments:
                quota = _ceil_div(quota, mss) * mss  # Linux's arithmetic, in segments
            sndcnt = quota - self.prr_out
        else:
            behind = self.prr_delivered - self.prr_out
            if self.variant == PRR_CRB:
                limit = behind
            elif self.variant == PRR_SSRB:
                limit = max(behind, delivered_bytes) + mss
            else:
                limit = max(behind, delivered_bytes)
                if snd_una_advanced and not further_loss:
                    limit += mss
            # Catch up towards ssthresh, as far as the reduction bound permits.
            sndcnt = min(ssthresh - pipe, limit)
        if self.force_fast_retransmit and self.prr_out == 0 and sndcnt <= 0:
            sndcnt = mss  # RFC 9937 §4: force the fast retransmit out
            self.forced = True
        self.sndcnt = sndcnt
        self.cwnd = pipe + sndcnt
        return max(0, sndcnt)

    def on_sent(self, nbytes: int) -> None:
        """RFC 6937 §3 "on any data transmission or retransmission": prr_out += data sent."""
        if self.in_recovery and nbytes > 0:
            self.prr_out += nbytes

    def exit(self) -> int:
        """Recovery is over (the ACK that ends it is not given to `on_ack`). Returns the window
        to continue with: ssthresh, as RFC 9937 §4 sets it and as PRR aims for."""
        self.in_recovery = False
        self._dupack_credit = 0
        self.cwnd = self.ssthresh
        return self.ssthresh

    def delivered_without_sack(self, acked_bytes: int, is_dupack: bool) -> int:
        """DeliveredData without SACK (RFC 6937 §2): one SMSS per duplicate ACK; on an ACK that
        advances SND.UNA, the advance minus one SMSS for each preceding duplicate ACK.

        A partial ACK that advances less than the duplicate ACKs already claimed carries the
        rest of that credit over to the next one, so that the sum of DeliveredData keeps
        agreeing with the forward progress, as §2 requires. With RFC 9937, duplicate ACKs
        stop counting once prr_delivered has reached RecoverFS: past that, they cannot stand
        for data of this recovery round, and crediting them would let a receiver that splits
        ACKs clock out data at will.
        """
        if is_dupack:
            if self.variant == PRR_RFC9937 and self.prr_delivered >= self.recover_fs:
                return 0
            self._dupack_credit += self.mss
            return self.mss
        used = min(self._dupack_credit, max(0, acked_bytes))
        self._dupack_credit -= used
        return max(0, acked_bytes - used)

    def __repr__(self) -> str:
        state = "recovery" if self.in_recovery else "idle"
        return (
            f"<Prr {self.variant} {state} ssthresh={self.ssthresh} RecoverFS={self.recover_fs} "
            f"prr_delivered={self.prr_delivered} prr_out={self.prr_out}>"
        )
