"""The send queue: references to data in flight, never the data itself.

A sender whose source can regenerate any byte (see `sources`) needs no send buffer. Each record
here stands for one transmitted range: its sequence span plus what later loss recovery and rate
sampling need about it (when it was sent, whether it was retransmitted). The payload is found
again by sequence number: relative sequence 1 + k is byte k of the source (relative 0 is the
SYN), so a retransmission reads `source.read(start - 1, length)`.

Sequence numbers here are *relative* and unbounded (0 = our ISS): the engine converts to the
32-bit wire space only at its edges, so nothing in the queue has to think about wrap-around.
"""

from __future__ import annotations

import sys
from collections import deque


class SentRecord:
    """One transmitted range [start, end) of relative sequence space (FIN counts one)."""

    __slots__ = ("start", "end", "xmit_time", "retransmitted", "fin")

    def __init__(self, start: int, end: int, xmit_time: float, fin: bool = False):
        self.start = start
        self.end = end
        self.xmit_time = xmit_time
        self.retransmitted = False
        self.fin = fin

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        flags = ("R" if self.retransmitted else "") + ("F" if self.fin else "")
        return f"<{self.start}:{self.end}{' ' + flags if flags else ''} @{self.xmit_time:.6f}>"


# What one record costs, measured once rather than assumed (CPython object + slots).
_RECORD_BYTES = sys.getsizeof(SentRecord(0, 0, 0.0))


class SendQueue:
    """Records of everything sent and not yet cumulatively acknowledged, in sequence order."""

    def __init__(self) -> None:
        self._records: deque[SentRecord] = deque()
        self.peak_memory = 0

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self):
        return iter(self._records)

    def push(self, start: int, end: int, now: float, fin: bool = False) -> None:
        """Record a first transmission of [start, end); ranges arrive in increasing order."""
        self._records.append(SentRecord(start, end, now, fin))
        mem = self.memory_bytes()
        if mem > self.peak_memory:
            self.peak_memory = mem

    def acknowledge(self, upto: int) -> SentRecord | None:
        """Drop everything below `upto` (a new snd_una), trimming a record that straddles it.

        Returns the newest record acknowledged in full, or None: its send time gives an RTT
        sample when timestamps are not in use (RFC 6298 §3, subject to Karn's rule).
        """
        records = self._records
        newest = None
        while records and records[0].end <= upto:
            newest = records.popleft()
        if records and records[0].start < upto:
            records[0].start = upto
        return newest

    def mark_retransmitted(self, start: int, end: int, now: float) -> None:
        """Flag every record overlapping [start, end) as retransmitted (Karn's rule: no RTT
        sample from it) and note when it was last sent."""
        for rec in self._records:
            if rec.start >= end:
                break
            if rec.end > start:
                rec.retransmitted = True
                rec.xmit_time = now

    def head(self) -> SentRecord | None:
        return self._records[0] if self._records else None

    def memory_bytes(self) -> int:
        """Memory the queue holds for in-flight data: the records and the deque's own blocks.

        This does not grow with bytes in flight, only with the number of transmissions
        (one per GSO super-segment of up to 64 KB).
        """
        return sys.getsizeof(self._records) + _RECORD_BYTES * len(self._records)
