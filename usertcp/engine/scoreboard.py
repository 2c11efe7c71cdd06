"""The SACK scoreboard: what is in flight, what the peer holds, what is lost (RFC 6675, RFC 2018,
RFC 2883).

Every range sent and not yet cumulatively acknowledged has one `Record` here. A record is a
*transmission unit*, not a segment: a first transmission is one GSO super-segment of up to ~64 KB,
a retransmission whatever range the engine resent. Keeping ranges instead of per-MSS entries keeps
the memory per in-flight megabyte small (see `memory_bytes`), which this project measures. The
price is that a SACK block, a cumulative ACK or a retransmission may cover part of a record; the
record is then split at that edge (`Record.split`) so that every record is uniform: all its
octets are sacked or none, lost or not, sent at the same time.

Sequence numbers are relative and unbounded like everywhere in the engine (our ISS is 0, data
byte k is 1 + k): SACK blocks must be unwrapped by the caller before they come here.

Record states and who sets them
-------------------------------
``sacked``
    The peer reported holding the range in a SACK block (RFC 2018 §3). No reneging support:
    a sacked record stays sacked until the cumulative ACK passes it.
``lost``
    A loss detector's verdict that a transmission of the range was lost. It stays set when the
    range is retransmitted (the *original* is still lost) and is cleared only by delivery.
``rtx_out``
    A retransmission of the range is believed to be in flight. `mark_retransmitted` sets it;
    `mark_lost` clears it (the detector says the latest transmission is gone, too).

A record "needs retransmission" when it is lost and has no retransmission out
(`Record.needs_rtx`). That is RFC 8985's ``Segment.lost`` (set by detection, cleared by
retransmitting, §6.1), while ``lost`` itself plays RFC 6675's IsLost() role in SetPipe.

Two loss detectors feed ``lost``:

- RFC 6675's own, ``use_islost=True`` (the default): after each ACK every unsacked record for
  which IsLost() (§4) holds is marked lost. IsLost() only becomes true over time (SACKs only
  accumulate), so the flag and the predicate agree for every never-retransmitted octet.
- RACK (RFC 8985, `rack.Rack`), with ``use_islost=False``: RACK replaces the DupThresh rule
  (RFC 8985 §1 and §6.2 step 4 reproduce DupThresh through a zero reordering window) and marks
  records with `mark_lost`. An RTO handler marks through `mark_lost` in either mode.

With those flags `pipe()` is RFC 6675 §4 SetPipe for every unsacked octet S between HighACK and
HighData: (a) one if S is not lost, plus (b) one if a retransmission of S is out. The RFC's test
for (b) is ``S <= HighRxt``; here each record knows whether *its* retransmission is out, which
is the same thing for every octet the NextSeg rules actually resent and differs only where the
RFC over-counts: octets below HighRxt that were never resent, and retransmissions a detector has
since declared lost (RFC 8985 lets the sender resend those; HighRxt could not express it).

Invariants (checked by tests/test_scoreboard.py): records are sorted, non-overlapping and cover
[snd_una, snd_nxt) exactly; `sacked_bytes`, `lost_bytes` and `retrans_out_bytes` are the sums
over records (the last two over unsacked records only); so `pipe()` is O(1).
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, NamedTuple

from .recovery import DUPACK_THRESHOLD

DUPTHRESH = DUPACK_THRESHOLD  # RFC 6675 §2 DupThresh is RFC 5681 §3.2's threshold

_START = attrgetter("start")


class Record:
    """One transmission unit [start, end) of relative sequence space (a FIN counts one).

    ``xmit_time`` is the time of the latest (re)transmission (RFC 8985 §6.1 Segment.xmit_ts),
    ``first_xmit_time`` that of the first; ``retrans`` counts retransmissions (RFC 8985
    Segment.retransmitted is ``retrans > 0``). ``rate`` is an opaque delivery-rate snapshot the
    engine attaches; the scoreboard only carries it.
    """

    __slots__ = (
        "start",
        "end",
        "xmit_time",
        "first_xmit_time",
        "retrans",
        "sacked",
        "lost",
        "rtx_out",
        "fin",
        "rate",
    )

    def __init__(self, start: int, end: int, xmit_time: float, fin: bool = False, rate: Any = None):
        self.start = start
        self.end = end
        self.xmit_time = xmit_time
        self.first_xmit_time = xmit_time
        self.retrans = 0
        self.sacked = False
        self.lost = False
        self.rtx_out = False
        self.fin = fin
        self.rate = rate

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def needs_rtx(self) -> bool:
        """Lost, and no retransmission of it is in flight: NextSeg rule (1) material."""
        return self.lost and not self.rtx_out and not self.sacked

    def split(self, at: int) -> Record:
        """Cut at `at` (start < at < end): this record keeps [start, at), the returned copy is
        [at, end). Both halves come from the same transmission, so every field is copied; the
        one exception is ``fin``, which stays with the half that holds the last sequence number,
        because that is where the FIN is."""
        if not self.start < at < self.end:
            raise ValueError(f"split at {at} outside ({self.start}, {self.end})")
        right = Record.__new__(Record)
        right.start = at
        right.end = self.end
        right.xmit_time = self.xmit_time
        right.first_xmit_time = self.first_xmit_time
        right.retrans = self.retrans
        right.sacked = self.sacked
        right.lost = self.lost
        right.rtx_out = self.rtx_out
        right.fin = self.fin
        right.rate = self.rate
        self.end = at
        self.fin = False
        return right

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        flags = "".join(
            c
            for c, on in (
                ("S", self.sacked),
                ("L", self.lost),
                ("O", self.rtx_out),
                ("F", self.fin),
            )
            if on
        )
        rtx = f" r{self.retrans}" if self.retrans else ""
        return f"<{self.start}:{self.end} {flags or '-'}{rtx} @{self.xmit_time:.6f}>"


# What one record costs, measured once rather than assumed (CPython object with slots).
_RECORD_BYTES = sys.getsizeof(Record(0, 1, 0.0))


@dataclass(slots=True)
class AckResult:
    """What one ACK changed (`Scoreboard.on_ack`).

    ``delivered`` lists, in sequence order, the pieces newly delivered by this ACK, cumulatively
    or selectively: the records themselves (split to the delivered part), with their
    ``xmit_time``, ``retrans`` and ``rate`` as they were when delivered. RACK (RFC 8985 §6.2) and
    a delivery-rate sampler consume it. ``dsack_range`` is the D-SACK block (RFC 2883 §4), which
    is not applied to the scoreboard.
    """

    time: float = 0.0
    acked_bytes: int = 0  # snd_una advance (includes bytes sacked earlier)
    sacked_bytes: int = 0  # bytes newly marked sacked by this ACK's SACK blocks
    delivered: list[Record] = field(default_factory=list)
    dsack: bool = False
    dsack_range: tuple[int, int] | None = None
    highest_sacked: int = 0  # SND.FACK-like: end of the highest range ever sacked
    lost_marked: int = 0  # bytes IsLost() newly declared lost (use_islost mode only)

    @property
    def delivered_bytes(self) -> int:
        return sum(r.end - r.start for r in self.delivered)


class NextSeg(NamedTuple):
    """A range for the engine to (re)send, and the RFC 6675 §4 NextSeg rule that chose it."""

    start: int
    end: int
    rule: int  # 1: lost data, 2: new data, 3: unsacked data below the highest SACK


class Scoreboard:
    """Records of everything sent and not cumulatively acknowledged, in sequence order.

    `smss` is the sender's maximum segment size (RFC 5681 §2), used by IsLost() and to count
    segments. `snd_una` is the first sequence number the scoreboard will see (data starts at 1
    in the engine's relative space).
    """

    def __init__(
        self,
        smss: int,
        *,
        snd_una: int = 1,
        dupthresh: int = DUPTHRESH,
        use_islost: bool = True,
    ) -> None:
        if smss <= 0:
            raise ValueError("smss must be positive")
        self.smss = smss
        self.dupthresh = dupthresh
        self.use_islost = use_islost
        self._records: list[Record] = []
        self.snd_una = snd_una  # RFC 6675 HighACK
        self.snd_nxt = snd_una  # RFC 6675 HighData (one past it: ranges are half-open)
        self.sacked_bytes = 0
        self.lost_bytes = 0  # unsacked octets marked lost
        # Octets ever declared lost, a lost retransmission counting again (Linux's tp->lost, via
        # tcp_sum_lost()): a delivery-rate sample's `losses` is its growth over one ACK.
        self.lost_total = 0
        self.retrans_out_bytes = 0  # unsacked octets with a retransmission out
        # RFC 6675 HighRxt, as one past the highest octet retransmitted ("S > HighRxt" reads
        # "S >= high_rxt"). Monotonic: a recovery ends only when HighACK passes RecoveryPoint,
        # which is above it, so the next recovery starts with it below HighACK, as if reset.
        self.high_rxt = snd_una
        # One past the highest octet covered by any SACK block received (RFC 6675 NextSeg 1.b).
        self.highest_sacked = snd_una
        # Every unsacked octet below this is known IsLost() and already marked: IsLost() is
        # monotonic in time, so each pass only has to look above it.
        self._islost_edge = snd_una
        self.peak_memory = 0

    # ------------------------------------------------------------------ inspection

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(self._records)

    def head(self) -> Record | None:
        return self._records[0] if self._records else None

    def tail(self) -> Record | None:
        return self._records[-1] if self._records else None

    @property
    def outstanding(self) -> int:
        """RFC 5681 FlightSize: sent and not cumulatively acknowledged."""
        return self.snd_nxt - self.snd_una

    def segs(self, nbytes: int) -> int:
        """Segments needed for `nbytes` at SMSS: a sacked range of that size arrived in at least
        this many segments."""
        return -(-nbytes // self.smss)

    @property
    def sacked_segs(self) -> int:
        """Segments held by the peer (RFC 8985 RACK.segs_sacked). O(records)."""
        return sum(self.segs(r.end - r.start) for r in self._records if r.sacked)

    def memory_bytes(self) -> int:
        """Memory the scoreboard holds: the records and the list's own array.

        Grows with the number of transmissions and SACK-block edges, not with bytes in flight.
        """
        return sys.getsizeof(self._records) + _RECORD_BYTES * len(self._records)

    # ------------------------------------------------------------------ sending

    def send(self, start: int, end: int, now: float, fin: bool = False, rate: Any = None) -> Record:
        """Record a first transmission of [start, end), which must begin at snd_nxt."""
        if start != self.snd_nxt or end <= start:
            raise ValueError(f"send [{start}, {end}) is not a new range after snd_nxt={self.snd_nxt}")
        rec = Record(start, end, now, fin, rate)
        self._records.append(rec)
        self.snd_nxt = end
        mem = self.memory_bytes()
        if mem > self.peak_memory:
            self.peak_memory = mem
        return rec

    def mark_retransmitted(self, start: int, end: int, now: float, rate: Any = None) -> int:
        """The engine resent [start, end) at `now`. Returns the unsacked bytes covered.

        Sacked records inside are left alone (the peer has them; resending them is the caller's
        waste, not new information). Each unsacked record gets its new ``xmit_time`` (RFC 8985
        §6.1), one more ``retrans``, ``rtx_out`` set and, if given, the new rate snapshot.
        HighRxt advances (RFC 6675 §4 NextSeg rule (1), §5 step (4.3)).
        """
        start, end = max(start, self.snd_una), min(end, self.snd_nxt)
        if start >= end:
            return 0
        i = self._split_at(start)
        j = self._split_at(end)
        covered = 0
        for rec in self._records[i:j]:
            if rec.sacked:
                continue
            n = rec.end - rec.start
            covered += n
            rec.retrans += 1
            rec.xmit_time = now
            if not rec.rtx_out:
                rec.rtx_out = True
                self.retrans_out_bytes += n
            if rate is not None:
                rec.rate = rate
        if end > self.high_rxt:
            self.high_rxt = end
        return covered

    # ------------------------------------------------------------------ loss marking

    def mark_lost(self, what: Record | int, end: int | None = None) -> int:
        """A loss detector declares the latest transmission lost: of a record, of the record
        holding sequence `what` (no `end`), or of every unsacked octet in [what, end). Returns
        the bytes that newly need retransmission.

        Passing a record (as RACK does while walking the scoreboard) costs O(1); a range may
        split records at its edges.
        """
        if isinstance(what, Record):
            return self._mark_lost(what)
        if end is None:
            k = self._index_after(what)
            if what < self.snd_una or k >= len(self._records):
                return 0
            return self._mark_lost(self._records[k])
        start, stop = max(what, self.snd_una), min(end, self.snd_nxt)
        if start >= stop:
            return 0
        i = self._split_at(start)
        j = self._split_at(stop)
        return sum(self._mark_lost(rec) for rec in self._records[i:j])

    def _mark_lost(self, rec: Record) -> int:
        if rec.sacked or (rec.lost and not rec.rtx_out):
            return 0
        n = rec.end - rec.start
        if not rec.lost:
            rec.lost = True
            self.lost_bytes += n
        if rec.rtx_out:
            rec.rtx_out = False
            self.retrans_out_bytes -= n
        self.lost_total += n
        return n

    def clear_lost(self) -> int:
        """Forget every loss verdict (Linux's tcp_undo_cwnd_reduction with unmark_loss): the
        sender learnt that what it presumed lost had arrived or is still on its way. Records
        with a retransmission out keep it (both copies are then counted in pipe, as they are in
        flight). Returns the bytes unmarked."""
        cleared = 0
        for rec in self._records:
            if rec.lost and not rec.sacked:
                rec.lost = False
                cleared += rec.end - rec.start
        self.lost_bytes = 0
        self._islost_edge = self.snd_una
        return cleared

    def is_lost(self, seq: int) -> bool:
        """RFC 6675 §4 IsLost(SeqNum): DupThresh SACKed segments, or more than
        (DupThresh - 1) * SMSS SACKed bytes, above `seq`.

        "Discontiguous SACKed sequences" are counted as segments: a sacked range of n bytes
        stands for at least ceil(n / SMSS) segments that arrived (see `segs`).
        """
        limit = (self.dupthresh - 1) * self.smss
        nbytes = nsegs = 0
        for rec in reversed(self._records):
            if rec.end <= seq + 1:
                break
            if rec.sacked:
                n = rec.end - max(rec.start, seq + 1)
                nbytes += n
                nsegs += self.segs(n)
                if nbytes > limit or nsegs >= self.dupthresh:
                    return True
        return False

    def _mark_islost(self) -> int:
        """Mark every unsacked record for which IsLost() now holds; returns the bytes marked.

        Scans down from the highest sacked record until IsLost()'s threshold is met; every
        unsacked octet below that point is lost, and only the part above the previous pass's
        edge can hold unmarked ones. Marking sets ``lost`` only: a retransmission already out
        (from rule (3) or a loss probe) stays counted in pipe, as RFC 6675's (b) term counts it.
        """
        records = self._records
        limit = (self.dupthresh - 1) * self.smss
        k = self._index_after(self.highest_sacked - 1) + 1  # one past the highest sacked record
        nbytes = nsegs = 0
        while k > 0:
            k -= 1
            rec = records[k]
            if rec.start < self._islost_edge:
                return 0
            if rec.sacked:
                n = rec.end - rec.start
                nbytes += n
                nsegs += self.segs(n)
                if nbytes > limit or nsegs >= self.dupthresh:
                    break
        else:
            return 0
        edge = records[k].start
        marked = 0
        while k > 0:
            k -= 1
            rec = records[k]
            if rec.end <= self._islost_edge:
                break
            if not rec.sacked and not rec.lost:
                rec.lost = True
                n = rec.end - rec.start
                self.lost_bytes += n
                marked += n
        self.lost_total += marked
        self._islost_edge = max(self._islost_edge, edge)
        return marked

    # ------------------------------------------------------------------ ACK processing

    def on_ack(self, ack: int, sack_blocks=(), now: float = 0.0) -> AckResult:
        """Apply one ACK: its SACK blocks (RFC 2018 §4) and cumulative acknowledgment.

        `sack_blocks` are (left, right) pairs, half-open, in the order the option carried them.
        A D-SACK block (RFC 2883 §4) is reported, not applied. Blocks that reach beyond snd_nxt
        or are empty are ignored (they cannot describe data we sent); the rest are clipped to
        what is outstanding. An `ack` below snd_una (an old, reordered ACK) advances nothing but
        its SACK blocks still count. An `ack` beyond snd_nxt is the caller's bug.
        """
        if ack > self.snd_nxt:
            raise ValueError(f"ack {ack} beyond snd_nxt {self.snd_nxt}")
        res = AckResult(time=now)
        blocks = [(int(b[0]), int(b[1])) for b in sack_blocks]
        dsack = _find_dsack(ack, blocks)
        if dsack is not None and dsack[1] <= self.snd_nxt:
            res.dsack, res.dsack_range = True, dsack
            blocks = blocks[1:]
        delivered = res.delivered

        floor = max(ack, self.snd_una)
        for left, right in blocks:
            if left >= right or right > self.snd_nxt:
                continue
            left = max(left, floor)
            if left >= right:
                continue
            res.sacked_bytes += self._sack(left, right, delivered)
            if right > self.highest_sacked:
                self.highest_sacked = right

        if ack > self.snd_una:
            res.acked_bytes = ack - self.snd_una
            self._cumulative(ack, delivered)

        if self.use_islost and self.highest_sacked > self._islost_edge:
            res.lost_marked = self._mark_islost()
        delivered.sort(key=_START)
        res.highest_sacked = self.highest_sacked
        return res

    def _sack(self, left: int, right: int, delivered: list[Record]) -> int:
        i = self._split_at(left)
        j = self._split_at(right)
        newly = 0
        for rec in self._records[i:j]:
            if rec.sacked:
                continue
            n = rec.end - rec.start
            rec.sacked = True
            self.sacked_bytes += n
            if rec.lost:
                rec.lost = False
                self.lost_bytes -= n
            if rec.rtx_out:
                rec.rtx_out = False
                self.retrans_out_bytes -= n
            newly += n
            delivered.append(rec)
        return newly

    def _cumulative(self, ack: int, delivered: list[Record]) -> None:
        """Drop records below `ack` (RFC 9293 §3.10.7.4 SND.UNA advance), splitting a straddler."""
        records = self._records
        n = 0
        while n < len(records) and records[n].end <= ack:
            n += 1
        gone = records[:n]
        if n < len(records) and records[n].start < ack:
            left = records[n]
            records[n] = left.split(ack)
            gone.append(left)
        del records[:n]
        for rec in gone:
            size = rec.end - rec.start
            if rec.sacked:
                self.sacked_bytes -= size
                continue
            if rec.lost:
                self.lost_bytes -= size
            if rec.rtx_out:
                self.retrans_out_bytes -= size
            delivered.append(rec)
        self.snd_una = ack
        if self._islost_edge < ack:
            self._islost_edge = ack
        if self.high_rxt < ack:
            self.high_rxt = ack

    # ------------------------------------------------------------------ RFC 6675 §4

    def pipe(self) -> int:
        """RFC 6675 §4 SetPipe: octets believed in the network.

        Over the unsacked octets from HighACK to HighData: one for each not lost (a), plus one
        for each with a retransmission out (b); see the module docstring for how "lost" and (b)
        are read. An octet that is not lost and has a retransmission out (a loss probe, a rule
        (3) resend) counts twice, as in the RFC, so pipe may exceed FlightSize by the bytes in
        `retrans_out_bytes`.
        """
        return self.snd_nxt - self.snd_una - self.sacked_bytes - self.lost_bytes + self.retrans_out_bytes

    def next_seg(self, max_len: int, unsent: int = 0, *, rule3: bool = True) -> NextSeg | None:
        """RFC 6675 §4 NextSeg: what to send next during loss recovery, up to `max_len` bytes.

        `unsent` is how much new data exists *and* the peer's window allows (rule (2) asks the
        caller's question, the scoreboard cannot answer it). The range may span several records
        of the same kind, so the engine can resend it as one GSO super-segment; `max_len` should
        be a multiple of SMSS.

        Rule (1): the lowest range that needs retransmission (lost, none out). The RFC's extra
        conditions (1.a) S2 > HighRxt and (1.b) S2 below the highest SACK are dropped: per-record
        state already says what has been resent, and RACK or an RTO may declare losses above the
        highest SACK, or of a retransmission, which must be repaired too.
        Rule (2): new data at HighData.
        Rule (3): the lowest unsacked octet above HighRxt and below the highest SACK, not yet
        lost; the range is also kept below the highest SACK, so a GSO-sized rule (3) resend does
        not repeat data that is probably still in flight.
        Rule (4) (the rescue retransmission) is left to the tail loss probe of RFC 8985 §7.
        """
        if max_len <= 0:
            return None
        records = self._records
        for idx, rec in enumerate(records):
            if rec.needs_rtx:
                start = rec.start
                cap = start + max_len
                end = min(rec.end, cap)
                for nxt in records[idx + 1 :]:
                    if end >= cap or not nxt.needs_rtx:
                        break
                    end = min(nxt.end, cap)
                return NextSeg(start, end, 1)
        if unsent > 0:
            return NextSeg(self.snd_nxt, self.snd_nxt + min(unsent, max_len), 2)
        if not rule3:
            return None
        limit = self.highest_sacked
        for idx in range(self._index_after(self.high_rxt), len(records)):
            rec = records[idx]
            if rec.start >= limit:
                break
            if rec.sacked or rec.lost or rec.end <= self.high_rxt:
                continue
            start = max(rec.start, self.high_rxt)
            cap = min(start + max_len, limit)
            end = min(rec.end, cap)
            for nxt in records[idx + 1 :]:
                if end >= cap or nxt.sacked or nxt.lost:
                    break
                end = min(nxt.end, cap)
            return NextSeg(start, end, 3)
        return None

    # ------------------------------------------------------------------ helpers

    def _index_after(self, seq: int) -> int:
        """Index of the record holding `seq` (or the first one above it)."""
        k = bisect_right(self._records, seq, key=_START) - 1
        if k < 0:
            return 0
        return k if seq < self._records[k].end else k + 1

    def _split_at(self, at: int) -> int:
        """Make `at` a record boundary and return the index of the first record starting at or
        after it. A sacked record is never split (nothing about it can change); the returned
        index then lies after it."""
        records = self._records
        k = bisect_right(records, at, key=_START) - 1
        if k < 0:
            return 0
        rec = records[k]
        if rec.start == at:
            return k
        if at >= rec.end:
            return k + 1
        if rec.sacked:
            return k + 1
        records.insert(k + 1, rec.split(at))
        return k + 1


def _find_dsack(ack: int, blocks: list[tuple[int, int]]) -> tuple[int, int] | None:
    """RFC 2883 §4: the first block reports a duplicate if it lies (at least partly) below the
    cumulative ACK of the same segment, or if the second block contains it."""
    if not blocks:
        return None
    left, right = blocks[0]
    if left >= right:
        return None
    if left < ack:
        return left, right
    if len(blocks) > 1:
        left2, right2 = blocks[1]
        if left2 <= left and right <= right2:
            return left, right
    return None
