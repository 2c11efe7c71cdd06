"""RACK-TLP loss detection (RFC 8985), sans-I/O, on the scoreboard's records.

RACK (§6) declares a segment lost when a segment *sent after it* has been delivered and more
than one recent RTT plus a reordering window has passed since it was sent. Time replaces the
DupThresh count of RFC 6675, so lost retransmissions and losses in short flights are found
without waiting for three later segments. TLP (§7) sends one probe when a flight's tail may have
been lost, so that the ACK it solicits gives RACK something to work with instead of an RTO.

This module decides; the engine acts. `Rack` reads and marks a `scoreboard.Scoreboard` (built with
``use_islost=False``: RACK replaces RFC 6675's IsLost() as the loss detector) and returns
deadlines; it never sends and never reads a clock.

How the engine drives it
------------------------
Per ACK carrying new information (RFC 8985 §6.2):

1. ``res = scoreboard.on_ack(ack, sack_blocks, now)``.
2. Update the RTT estimator (RFC 6298 / RFC 7323) as today; if it took a sample, call
   `note_rtt_sample` (TLP may only probe again after one, §7.3).
3. Decide the recovery state *before* RACK: whether the sender is in fast or RTO recovery, and
   whether this ACK ends it (cumulative ACK beyond the recovery point).
4. ``timer = rack.on_ack(res.delivered, now, min_rtt=..., srtt=..., dsack=res.dsack,
   in_recovery=..., exiting_recovery=..., tsecr_time=...)``. It runs §6.2 steps 2-5: marks lost
   records in the scoreboard (``rack.last_marked`` bytes) and returns the reordering-timer
   deadline or None.
5. ``if rack.tlp_on_ack(ack, dsack_range=res.dsack_range, dupack_without_sack=...)``: the probe
   repaired a loss; invoke congestion control as for a loss (§7.4.1), without retransmitting.
6. If lost data now exists (``scoreboard.lost_bytes``) and the sender is not in recovery, enter
   fast recovery (ssthresh from the controller, recovery point = snd_nxt) and send with
   ``scoreboard.next_seg`` while ``cwnd - scoreboard.pipe()`` allows (RFC 6675 §5, or PRR).
7. Timers (§8): one timer at a time, chosen in this order. The reordering timer if `on_ack`
   returned a deadline (it cancels PTO and RTO); else a PTO if `schedule_pto` returns one;
   else the RTO per RFC 6298.

When the reordering timer fires: ``timer = rack.on_timer(now)``, then as steps 6-7.
When the PTO fires: ``probe = rack.tlp_probe(...)``; send it (new data through
``scoreboard.send``, a retransmission through ``scoreboard.mark_retransmitted``), then arm the RTO,
not another PTO, while anything is in flight (§7.3), also when no probe could be sent.
When the RTO fires: ``rack.on_rto(now)`` marks losses per §6.3 and ends the TLP episode; the
engine then does its RFC 6298 §5.4-5.6 and RFC 5681 §3.1 work and resends with ``next_seg``.

Times are floats in seconds; sequence numbers relative and unbounded, as in the engine.
"""

from __future__ import annotations

from typing import NamedTuple

from .scoreboard import DUPTHRESH, Record, Scoreboard

REO_WND_PERSIST = 16  # RFC 8985 §6.2 step 4: recoveries a grown reordering window survives
TLP_MAX_ACK_DELAY = 0.200  # RFC 8985 §7.2 TLP.max_ack_delay default: WCDelAckT, 200 ms
PTO_NO_SRTT = 1.0  # RFC 8985 §7.2: PTO without an SRTT (RFC 6298's initial RTO)


class Probe(NamedTuple):
    """A loss probe to send (RFC 8985 §7.3): [start, end), new data or a retransmission."""

    start: int
    end: int
    is_retrans: bool


def sent_after(t1: float, seq1: int, t2: float, seq2: int) -> bool:
    """RFC 8985 §6.2 RACK_sent_after: was (t1, seq1) sent after (t2, seq2)? The end sequence
    breaks ties between equal timestamps (one GSO burst, or a coarse clock)."""
    return t1 > t2 or (t1 == t2 and seq1 > seq2)


class Rack:
    """RACK-TLP state for one connection (RFC 8985 §5.3 per-connection variables, §7.1 TLP).

    ``earliest_timer`` chooses how the reordering timer is armed: False (default) follows
    §6.2 step 5's pseudocode, which waits for the *latest* deadline among the pending segments
    and so marks them in one batch; True arms it for the earliest, so each segment is declared
    lost as soon as its own window passes (more timer events, earlier detection).
    """

    def __init__(
        self,
        scoreboard: Scoreboard,
        *,
        dupthresh: int = DUPTHRESH,
        max_ack_delay: float = TLP_MAX_ACK_DELAY,
        ts_tick: float = 1e-6,
        earliest_timer: bool = False,
    ) -> None:
        self.sb = scoreboard
        self.dupthresh = dupthresh
        self.ts_tick = ts_tick  # granularity of the timestamps behind `tsecr_time`
        self.earliest_timer = earliest_timer
        # RACK.segment, the most recently sent segment delivered so far: its time and end.
        self.xmit_ts: float | None = None
        self.end_seq: int = scoreboard.snd_una
        self.rtt: float | None = None  # RACK.rtt, from RACK.segment's delivery
        self.rtt_seq: int = scoreboard.snd_una  # end of the segment RACK.rtt was measured on
        self.fack: int = scoreboard.snd_una  # highest end_seq delivered (§6.2 step 3)
        self.min_rtt: float | None = None  # RACK.min_RTT, the connection's windowed minimum
        self.reordering_seen = False
        self.reo_wnd = 0.0
        self.dsack_round: int | None = None
        self.reo_wnd_mult = 1
        self.reo_wnd_persist = REO_WND_PERSIST
        self.timer: float | None = None  # reordering timer deadline
        self.last_marked = 0  # bytes the latest detection declared lost
        # TLP (§7.1).
        self.tlp_end_seq: int | None = None
        self.tlp_is_retrans = False
        self.tlp_max_ack_delay = max_ack_delay
        self.rtt_sampled = False  # an RTT sample since the last probe or the connection start

    @property
    def segs_sacked(self) -> int:
        """RACK.segs_sacked: segments the scoreboard holds as sacked."""
        return self.sb.sacked_segs

    # ------------------------------------------------------------------ §6.2 upon an ACK

    def on_ack(
        self,
        delivered: list[Record],
        now: float,
        *,
        min_rtt: float | None,
        srtt: float | None,
        dsack: bool = False,
        in_recovery: bool = False,
        exiting_recovery: bool = False,
        tsecr_time: float | None = None,
    ) -> float | None:
        """Run §6.2 steps 1-5 for one ACK, after `Scoreboard.on_ack` applied it.

        `delivered` is ``AckResult.delivered``. `min_rtt` and `srtt` come from the connection's
        RTT estimator (step 1 is the estimator's job). `in_recovery` means fast or RTO recovery;
        `exiting_recovery` that this ACK ends it. `tsecr_time` is the send time the ACK's
        TSecr echoes, when timestamps are in use. Returns the reordering timer deadline or None.
        """
        self.min_rtt = min_rtt
        self._update(delivered, now, tsecr_time)
        self._detect_reordering(delivered)
        self._update_reo_wnd(dsack, in_recovery, exiting_recovery, srtt, bool(delivered))
        return self._detect_loss(now)

    def _update(self, delivered: list[Record], now: float, tsecr_time: float | None) -> None:
        """Step 2: RACK.rtt and RACK.segment from the newly delivered segments, in order of
        transmission so that the last valid one wins.

        A retransmitted segment's delivery is ambiguous (Karn): the ACK may be for an earlier
        copy. It is skipped when the ACK's TSecr predates the retransmission, or when the RTT it
        would give is below the path's minimum RTT, which no ACK of the retransmission itself
        can beat.
        """
        for rec in sorted(delivered, key=_by_xmit):
            rtt = now - rec.xmit_time
            if rec.retrans:
                if tsecr_time is not None and tsecr_time < rec.xmit_time - self.ts_tick:
                    continue
                if self.min_rtt is not None and rtt < self.min_rtt:
                    continue
            else:
                self.rtt_sampled = True
            self.rtt = rtt
            self.rtt_seq = rec.end
            if self.xmit_ts is None or sent_after(rec.xmit_time, rec.end, self.xmit_ts, self.end_seq):
                self.xmit_ts = rec.xmit_time
                self.end_seq = rec.end

    def _detect_reordering(self, delivered: list[Record]) -> None:
        """Step 3: an original transmission delivered below RACK.fack arrived out of order.
        `delivered` is in sequence order, so one ACK covering several segments in order does
        not look like reordering."""
        for rec in delivered:
            if rec.end > self.fack:
                self.fack = rec.end
            elif rec.end < self.fack and not rec.retrans:
                self.reordering_seen = True

    def _update_reo_wnd(
        self, dsack: bool, in_recovery: bool, exiting: bool, srtt: float | None, delivered: bool = True
    ) -> None:
        """Step 4 (RACK_update_reo_wnd): grow the window by min_RTT/4 per round trip that brings
        a D-SACK (a spurious retransmission means the window was too small), keep it for 16
        recoveries without one, then fall back to one quarter.

        Only an ACK that delivers something ends a D-SACK round. Once everything sent is
        acknowledged, SND.UNA >= RACK.dsack_round holds for every later ACK, and a train of pure
        D-SACKs for one burst of spurious retransmissions would each count as a new round (a
        burst of 70 took the multiplier to 72). Linux ignores D-SACKs on ACKs that deliver
        nothing for the same reason (tcp_rack_update_reo_wnd() returns on !rs->prior_delivered).
        """
        snd_una, snd_nxt = self.sb.snd_una, self.sb.snd_nxt
        if self.dsack_round is not None and snd_una >= self.dsack_round and delivered:
            self.dsack_round = None
        if self.dsack_round is None and dsack:
            self.dsack_round = snd_nxt
            self.reo_wnd_mult += 1
            self.reo_wnd_persist = REO_WND_PERSIST
        elif exiting:
            self.reo_wnd_persist = max(0, self.reo_wnd_persist - 1)
            if self.reo_wnd_persist <= 0:
                self.reo_wnd_mult = 1
        self.reo_wnd = self.reo_wnd_value(in_recovery, srtt)

    def reo_wnd_value(self, in_recovery: bool, srtt: float | None) -> float:
        """The window step 4 returns. Zero while no reordering has been seen and either the
        sender is recovering or DupThresh segments are sacked: then RACK acts as fast as the
        DupThresh rule would. Otherwise RACK.reo_wnd_mult * min_RTT / 4, bounded by SRTT
        (§3.3.2: the window MUST be bounded, SHOULD by SRTT), zero without RTT estimates."""
        if not self.reordering_seen:
            if in_recovery:
                return 0.0
            if self.sb.sacked_bytes and self.segs_sacked >= self.dupthresh:
                return 0.0
        if self.min_rtt is None or srtt is None:
            return 0.0
        return min(self.reo_wnd_mult * self.min_rtt / 4, srtt)

    def _detect_loss(self, now: float) -> float | None:
        """Step 5 (RACK_detect_loss): every record still believed in flight that was sent before
        RACK.segment is lost once RACK.rtt + reo_wnd has passed since its transmission; for the
        others, the timer. Records already lost and not resent are skipped, as the RFC's
        INFINITE_TS marker skips them."""
        self.last_marked = 0
        self.timer = None
        if self.xmit_ts is None or self.rtt is None:
            return None
        xmit_ts, end_seq = self.xmit_ts, self.end_seq
        wait = self.rtt + self.reo_wnd
        timer = None
        sb = self.sb
        # Records are in sequence order, which is send order for first transmissions. Once one
        # of those was sent after RACK.segment, so were all first transmissions above it; only
        # retransmissions can still be older, and there are none to look for when no
        # retransmission is out (every loss found is resent or marked). This keeps an ACK in
        # the steady state O(1) instead of O(records), as Linux's walk of its time-sorted
        # queue stops at the first skb sent after RACK.mstamp (tcp_rack_detect_loss()).
        rtx_pending = sb.retrans_out_bytes > 0
        for rec in sb:
            if rec.sacked or rec.needs_rtx:
                continue
            if not sent_after(xmit_ts, end_seq, rec.xmit_time, rec.end):
                if not rtx_pending and not rec.retrans:
                    break
                continue
            due = rec.xmit_time + wait
            if due <= now:
                self.last_marked += self.sb.mark_lost(rec)
            elif timer is None or (due < timer if self.earliest_timer else due > timer):
                timer = due
        self.timer = timer
        return timer

    # ------------------------------------------------------------------ timers

    def on_timer(
        self, now: float, *, in_recovery: bool | None = None, srtt: float | None = None
    ) -> float | None:
        """The reordering timer fired (§6.2 step 5, RACK_detect_loss_and_arm_timer): detect again
        and return the next deadline. Without `in_recovery`, the window of the last ACK is kept;
        with it (and `srtt`), the window is recomputed, without the ACK-driven D-SACK part."""
        if in_recovery is not None:
            self.reo_wnd = self.reo_wnd_value(in_recovery, srtt)
        return self._detect_loss(now)

    def on_rto(self, now: float) -> int:
        """§6.3 RACK_mark_losses_on_RTO: the first outstanding segment is lost (it was sent an RTO
        ago); every other one only if RACK.rtt + reo_wnd has passed since it was sent. Without
        any RACK.rtt yet, everything outstanding is marked lost (RFC 5681 §3.1's view after a
        timeout). The TLP episode ends: its probe is deemed lost (§7.3). Returns bytes marked."""
        self.timer = None
        self.tlp_end_seq = None
        self.tlp_is_retrans = False
        sb = self.sb
        marked = 0
        for rec in sb:
            if rec.sacked:
                continue
            if (
                rec.start == sb.snd_una
                or self.rtt is None
                or rec.xmit_time + self.rtt + self.reo_wnd <= now
            ):
                marked += sb.mark_lost(rec)
        self.last_marked = marked
        return marked

    # ------------------------------------------------------------------ TLP (§7)

    def note_rtt_sample(self) -> None:
        """The connection took an RTT sample (RFC 6298 / RFC 7323): a new probe is allowed
        (§7.3). `on_ack` also counts RACK's own measurement on a never-retransmitted segment."""
        self.rtt_sampled = True

    def pto(
        self, now: float, *, srtt: float | None, rto_expire: float | None, flight_size: int | None = None
    ) -> float:
        """§7.2 PTO interval: 2 * SRTT, plus TLP.max_ack_delay when only one segment is in flight
        (its ACK may be a delayed one); 1 s without an SRTT; never past the RTO's expiry.

        `flight_size` is FlightSize in bytes (default: the scoreboard's); "one segment" means at
        most SMSS. `rto_expire` is the absolute time the RTO timer would fire.
        """
        if flight_size is None:
            flight_size = self.sb.outstanding
        if srtt is not None:
            pto = 2 * srtt
            if flight_size <= self.sb.smss:
                pto += self.tlp_max_ack_delay
        else:
            pto = PTO_NO_SRTT
        if rto_expire is not None and now + pto > rto_expire:
            pto = rto_expire - now
        return max(pto, 0.0)

    def schedule_pto(
        self,
        now: float,
        *,
        srtt: float | None,
        rto_expire: float | None,
        in_recovery: bool,
        flight_size: int | None = None,
    ) -> float | None:
        """§7.2: the PTO deadline to arm after sending new data (not a probe) or on an ACK that
        advances snd_una, or None when a probe must not be scheduled: nothing in flight, the
        sender in fast or RTO recovery, or segments already sacked (the reordering timer and
        fast recovery cover those cases)."""
        if flight_size is None:
            flight_size = self.sb.outstanding
        if flight_size <= 0 or in_recovery or self.sb.sacked_bytes > 0:
            return None
        return now + self.pto(now, srtt=srtt, rto_expire=rto_expire, flight_size=flight_size)

    def tlp_probe(self, *, new_data: int = 0, max_len: int | None = None) -> Probe | None:
        """§7.3, the PTO fired: what to send as the probe, or None to send nothing.

        No probe while an earlier one is unacknowledged (TLP.end_seq set) or before an RTT
        sample has been taken since the last probe. Otherwise one segment of new data if
        `new_data` bytes are available and the peer's window allows them (caller's answer), else
        the highest-sequence segment sent so far, again: the last SMSS-aligned piece of the last
        record, ending at snd_nxt (a retransmission whose ACK is unambiguous about the tail).
        The episode state is recorded here, on the understanding that the engine sends it.
        """
        if self.tlp_end_seq is not None or not self.rtt_sampled:
            return None
        sb = self.sb
        seg = sb.smss if max_len is None else max_len
        if new_data > 0:
            probe = Probe(sb.snd_nxt, sb.snd_nxt + min(new_data, seg), False)
        else:
            last = sb.tail()
            if last is None:
                return None
            # The last wire segment of a GSO unit cut into SMSS pieces from its start.
            start = last.start + (last.end - last.start - 1) // seg * seg
            probe = Probe(start, last.end, True)
        self.tlp_end_seq = probe.end
        self.tlp_is_retrans = probe.is_retrans
        self.rtt_sampled = False
        return probe

    def tlp_on_ack(
        self,
        ack: int,
        *,
        dsack_range: tuple[int, int] | None = None,
        dupack_without_sack: bool = False,
    ) -> bool:
        """§7.4.1 TLP_process_ack. Returns True when the probe repaired a loss: the ACK went past
        the probe's end without a D-SACK for it, so the original tail was lost and the probe
        retransmission delivered it. The engine must then invoke congestion control as for
        any loss (the episode is over; nothing needs resending).

        The episode also ends without a response when the probe was new data, when a D-SACK
        shows the probe was a duplicate (original and probe both arrived), or when a pure
        duplicate ACK without SACK arrives at the probe's end (likewise). An ACK exactly at
        TLP.end_seq without those signals is still ambiguous: wait for the next one.
        """
        end = self.tlp_end_seq
        if end is None or ack < end:
            return False
        if not self.tlp_is_retrans:
            self.tlp_end_seq = None
            return False
        if dsack_range is not None and dsack_range[0] < end <= dsack_range[1]:
            self.tlp_end_seq = None
            return False
        if ack > end:
            self.tlp_end_seq = None
            self.tlp_is_retrans = False
            return True
        if dupack_without_sack:
            self.tlp_end_seq = None
        return False


def _by_xmit(rec: Record) -> tuple[float, int]:
    return rec.xmit_time, rec.end
