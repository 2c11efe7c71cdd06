"""One direction of a simulated path, in virtual time, and GSO segmentation for it.

A `Link` models what the lab's path does to packets (DESIGN.md, "Path emulation"): a bottleneck
that serialises packets at `rate` behind a drop-tail queue of `queue_bytes` (TBF on the router),
then a constant propagation `delay` (the NFQUEUE delay line), then random or chosen loss at the
receiving end (the XDP drop on the receiver's interface, i.e. *after* the bottleneck: a lost
packet still used its share of the queue and of the link's capacity).

Nothing here reads a clock: the caller passes `now`, and asks `next_arrival()` when to come back.

Wire size
---------
A packet's size on the wire is counted as the Ethernet II frame without preamble or FCS::

    payload + 20 (IPv4 header, no options) + 20 (TCP header) + TCP options + 14 (Ethernet)

so a full 1448-byte segment with the timestamp option is 1514 bytes, as tcpdump reports it and as
TBF and the DESIGN's goodput figure (1448/1514 = 95.6%) count it.
"""

from __future__ import annotations

import random
from heapq import heappop, heappush
from collections import deque
from typing import Callable

from ..segment import Flags, Options, Segment, Transmission, parse_options

HEADER_BYTES = 20 + 20 + 14  # IPv4 + TCP + Ethernet, without options
DUP_GAP = 1e-6  # a duplicate arrives this long after its original

_MASK = 0xFFFFFFFF
_NOT_FIN_PSH = ~(Flags.FIN | Flags.PSH)
_NOT_CWR = ~Flags.CWR


def options_len(o: Options) -> int:
    """Encoded length of `o`, padding included: the same as `len(o.encode())`, without encoding.

    Mirrors `Options.encode`: SACK-permitted shares the timestamp option's 12 bytes when both are
    present (Linux's layout), otherwise each gets its own 4-byte, NOP-padded slot.
    """
    n = 0
    if o.mss is not None:
        n += 4
    if o.ts is not None:
        n += 12
    elif o.sack_permitted:
        n += 4
    if o.wscale is not None:
        n += 4
    if o.sack:
        n += 4 + 8 * len(o.sack)
    return n


def wire_size(seg: Segment) -> int:
    """Bytes this segment occupies on the wire (see the module docstring)."""
    return len(seg.payload) + HEADER_BYTES + options_len(seg.options)


def segments_from(tx: Transmission, sport: int, dport: int) -> list[Segment]:
    """Cut a transmission into wire segments the way Linux's `tcp_gso_segment()` does.

    Every segment gets `gso_size` bytes of payload (the last may be shorter), its sequence number
    advanced by the payload before it, and the same ack, window and options (the kernel copies
    the header, timestamps included). FIN and PSH stay only on the last segment; CWR only on the
    first (RFC 3168 §6.1.2: CWR marks the first new data after a window reduction). The payload is
    read from the source once and sliced, so no per-segment copies are made; the options are
    parsed once and the `Options` object is shared by all segments: treat it as read-only.
    """
    opts = parse_options(tx.options) if tx.options else Options()
    n = tx.length
    mss = tx.gso_size
    if n == 0 or mss <= 0 or n <= mss:
        return [Segment(sport, dport, tx.seq, tx.ack, tx.flags, tx.window, opts, tx.payload(), tx.ecn)]
    view = memoryview(tx.payload())
    if len(view) != n:
        raise ValueError(f"source returned {len(view)} bytes for a {n}-byte transmission")
    flags = tx.flags
    first = flags & _NOT_FIN_PSH
    middle = first & _NOT_CWR
    last = flags & _NOT_CWR
    seq, ack, window = tx.seq, tx.ack, tx.window
    out = []
    append = out.append
    last_off = ((n - 1) // mss) * mss
    for off in range(0, n, mss):
        f = first if off == 0 else (last if off == last_off else middle)
        append(Segment(sport, dport, (seq + off) & _MASK, ack, f, window, opts, view[off : off + mss], tx.ecn))
    return out


DropPredicate = Callable[[int, Segment], bool]


class Link:
    """One direction of a path: serialisation at `rate`, drop-tail queue, delay, loss.

    - `delay`: one-way propagation delay in seconds, added after serialisation.
    - `rate`: bottleneck rate in bits/s, or None for infinite (no serialisation, no queue).
    - `queue_bytes`: drop-tail limit on the bytes waiting at the bottleneck (the packet being
      serialised included), or None for unlimited. A packet that would take the backlog past the
      limit is dropped (`dropped_queue`).
    - `loss`: a probability, drawn from `random.Random(seed)` once for *every* packet entering
      the link (so the same seed gives the same losses by index whatever the queue does), or a
      predicate `drop(index, segment) -> bool` for deterministic drops; `index` counts packets
      entering the link from 0 (queue drops included).
    - `extra_delay`: optional `f(index, segment) -> seconds` added to one packet's delay, to make
      jitter or reordering (arrivals then leave FIFO order; they are delivered by time).
    - `ce_threshold`: ECN marking (RFC 3168 §5) as DCTCP's step AQM does (RFC 8257 §3.1): an
      ECN-capable packet (ECT(0) or ECT(1)) that finds more than this many bytes waiting at the
      bottleneck is marked CE instead of being queued unmarked; None marks nothing. Drop-tail
      still applies when the queue is full.
    - `duplicate`: probability that a delivered packet arrives twice (the copy DUP_GAP after the
      original, as a link-layer retransmission whose ACK was lost would produce), drawn from its
      own generator so that adding duplication does not change which packets are lost.

    Counters (bytes are wire bytes): `packets_in`, `bytes_in`, `delivered`, `bytes_delivered`,
    `dropped_queue`, `dropped_loss`, `duplicated`, `marked_ce`, `max_backlog`.
    """

    __slots__ = (
        "name", "delay", "rate", "queue_bytes", "extra_delay", "_drop", "_p", "_rng",
        "_busy_until", "_backlog", "_backlog_bytes", "_flight", "_n",
        "packets_in", "bytes_in", "delivered", "bytes_delivered",
        "dropped_queue", "dropped_loss", "max_backlog", "_dup_p", "_dup_rng", "duplicated",
        "ce_threshold", "marked_ce",
    )

    def __init__(
        self,
        delay: float = 0.0,
        rate: float | None = None,
        queue_bytes: int | None = None,
        loss: float | DropPredicate = 0.0,
        seed: int = 0,
        extra_delay: Callable[[int, Segment], float] | None = None,
        name: str = "link",
        duplicate: float = 0.0,
        ce_threshold: int | None = None,
    ):
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0 bits/s, or None for infinite")
        self.name = name
        self.delay = delay
        self.rate = rate
        self.queue_bytes = queue_bytes
        self.extra_delay = extra_delay
        if callable(loss):
            self._drop, self._p, self._rng = loss, 0.0, None
        else:
            if not 0.0 <= loss <= 1.0:
                raise ValueError("loss probability must be in [0, 1]")
            self._drop, self._p = None, float(loss)
            self._rng = random.Random(seed) if loss > 0 else None
        if not 0.0 <= duplicate <= 1.0:
            raise ValueError("duplicate probability must be in [0, 1]")
        self._dup_p = float(duplicate)
        self._dup_rng = random.Random(seed ^ 0x5EED_D0B1) if duplicate > 0 else None
        self.duplicated = 0
        self.ce_threshold = ce_threshold
        self.marked_ce = 0
        self._busy_until = 0.0
        self._backlog: deque[tuple[float, int]] = deque()  # (serialisation end, size)
        self._backlog_bytes = 0
        self._flight: list[tuple[float, int, int, Segment]] = []  # heap: (arrival, index, size, seg)
        self._n = 0
        self.packets_in = self.bytes_in = 0
        self.delivered = self.bytes_delivered = 0
        self.dropped_queue = self.dropped_loss = 0
        self.max_backlog = 0

    def send(self, seg: Segment, now: float, size: int | None = None) -> bool:
        """Offer a packet to the link at `now`. Returns False if it was dropped (queue or loss).

        `size` is its wire size; computed with `wire_size()` when not given.
        """
        if size is None:
            size = wire_size(seg)
        index = self._n
        self._n = index + 1
        self.packets_in += 1
        self.bytes_in += size
        if self._drop is not None:
            lost = bool(self._drop(index, seg))
        elif self._rng is not None:
            lost = self._rng.random() < self._p
        else:
            lost = False

        rate = self.rate
        if rate is None:
            depart = now
        else:
            backlog = self._backlog
            while backlog and backlog[0][0] <= now:
                self._backlog_bytes -= backlog.popleft()[1]
            qlimit = self.queue_bytes
            if qlimit is not None and self._backlog_bytes + size > qlimit:
                self.dropped_queue += 1
                return False
            if self.ce_threshold is not None and seg.ecn in (1, 2) and self._backlog_bytes > self.ce_threshold:
                seg.ecn = 3
                self.marked_ce += 1
            start = self._busy_until if self._busy_until > now else now
            depart = start + size * 8 / rate
            self._busy_until = depart
            backlog.append((depart, size))
            self._backlog_bytes += size
            if self._backlog_bytes > self.max_backlog:
                self.max_backlog = self._backlog_bytes

        if lost:
            self.dropped_loss += 1
            return False
        arrival = depart + self.delay
        if self.extra_delay is not None:
            arrival += self.extra_delay(index, seg)
        heappush(self._flight, (arrival, index, size, seg))
        if self._dup_rng is not None and self._dup_rng.random() < self._dup_p:
            # Same index, later arrival: the heap orders by time first, so the tuples never tie.
            heappush(self._flight, (arrival + DUP_GAP, index, size, seg))
            self.duplicated += 1
        return True

    def deliver(self, now: float) -> list[Segment]:
        """Packets whose arrival time is <= now, in arrival order (ties: order of entry)."""
        flight = self._flight
        if not flight or flight[0][0] > now:
            return []
        out = []
        while flight and flight[0][0] <= now:
            _, _, size, seg = heappop(flight)
            out.append(seg)
            self.delivered += 1
            self.bytes_delivered += size
        return out

    def next_arrival(self) -> float | None:
        return self._flight[0][0] if self._flight else None

    @property
    def in_flight(self) -> int:
        """Packets accepted and not yet delivered."""
        return len(self._flight)

    @property
    def empty(self) -> bool:
        return not self._flight

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_loss

    def backlog(self, now: float) -> int:
        """Bytes queued at the bottleneck at `now` (the one being serialised included)."""
        return sum(size for end, size in self._backlog if end > now)

    def counters(self) -> dict[str, int]:
        return {
            "packets_in": self.packets_in,
            "bytes_in": self.bytes_in,
            "delivered": self.delivered,
            "bytes_delivered": self.bytes_delivered,
            "dropped_queue": self.dropped_queue,
            "marked_ce": self.marked_ce,
            "dropped_loss": self.dropped_loss,
            "duplicated": self.duplicated,
            "max_backlog": self.max_backlog,
        }
