"""The receive half of a TCP connection, sans-I/O: reassembly, SACK, window and ACK timing.

Both the simulated Linux-like peer (`usertcp.sim.receiver`) and the engine's `Connection` use
this module, so that what a TCP receiver owes its sender is written down once:

- reassembly: in-order bytes go to the application, out-of-order ones are held until the hole
  before them fills (RFC 9293 §3.10.7.4, seventh step); everything right of the advertised
  window is trimmed, so what is held is bounded by the window we offered;
- SACK blocks per RFC 2018 §4: the first block holds the most recently received segment, the
  others are the most recently reported blocks, as many as the option has room for;
- D-SACK per RFC 2883 §4: a duplicate (below rcv_nxt, or inside a block already held) is
  reported in the first block, followed by the held block that contains it, if any;
- the advertised window: the free part of the buffer (held out-of-order data and the bytes the
  application has not read yet both use it), scaled (RFC 7323 §2.3), with receiver-side
  silly-window avoidance (RFC 9293 §3.8.6.2.2) and a right edge that never moves left
  (RFC 9293 §3.8.6 "strongly discouraged"), unless `shrink_window` (Linux's
  net.ipv4.tcp_shrink_window) asks for never overcommitting the buffer instead;
- the peer's FIN, taken once every byte before it has arrived (RFC 9293 §3.10.7.4, eighth step);
- when to acknowledge (`DelayedAck`): at least every second full-sized segment, at once for
  out-of-order data, a filled hole, duplicates and the FIN, otherwise within the delayed-ACK
  timeout (RFC 9293 §3.8.6.3, RFC 5681 §4.2, RFC 1122 §4.2.3.2), with Linux's quick-ACK phase.

Sequence numbers here are *relative and unbounded* integers: the caller picks the convention by
the `rcv_nxt` it starts with (the simulator: 0 = the first data byte; the engine: 1 = the first
data byte, the peer's SYN being 0) and converts to and from 32-bit wire values at its edges.
Timestamps/PAWS, the handshake and the ACK field stay with the caller: they are about the
connection, not about the bytes received.

The per-segment paths (`ReceiveBuffer.segment`, `ReceiveBuffer.ack`, the out-of-order queue)
are hand-tuned: the property tests run thousands of simulated transfers through them, so they
cache attributes in locals and avoid helper calls where the logic stays readable.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable

DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when no MSS option says otherwise
TCP_ATO_MIN = 0.040  # Linux's minimum delayed-ACK timeout (include/net/tcp.h)
TCP_MAX_QUICKACKS = 16  # Linux: segments ACKed one by one at the start of a connection
MASK = 0xFFFFFFFF

# What `ReceiveBuffer.segment` answers.
ACK_NONE = 0  # no ACK needed now; `ack_deadline` says when one is due, if any
ACK_NOW = 1  # send an ACK now
ACK_FIN = 2  # the peer's FIN was just taken in order: ACK now (and change state, RFC 9293 §3.10.7.4)


def _end_key(block: list) -> int:
    return block[1]


class DelayedAck:
    """When to acknowledge received data, modelled on Linux (tcp_input.c `__tcp_ack_snd_check`).

    RFC 1122 §4.2.3.2 and RFC 5681 §4.2 allow delaying an ACK, but by less than 500 ms and with
    at least every second full-sized segment acknowledged; RFC 9293 §3.8.6.3 repeats both.
    Linux delays by at least TCP_ATO_MIN (40 ms) and, at the start of a connection and after a
    retransmission is seen, acknowledges every segment for a while (the quick-ACK phase,
    `icsk_ack.quick`) so that a sender in slow start is not held back by delayed ACKs.

    `delay` is the delayed-ACK timeout; `quickack` caps the quick-ACK credits (0 turns the phase
    off); `mss` is our own MSS, which caps `rcv_mss`, the estimate of the sender's segment size
    that "full-sized" is measured against (Linux's `icsk_ack.rcv_mss`: it starts at 536 and
    follows the largest segment seen).
    """

    __slots__ = ("delay", "quickack", "mss", "rcv_mss", "quick", "pending", "deadline", "_seen_data")

    def __init__(self, delay: float = TCP_ATO_MIN, quickack: int = TCP_MAX_QUICKACKS, mss: int | None = None):
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.delay = delay
        self.quickack = quickack
        self.mss = mss
        self.rcv_mss = min(DEFAULT_MSS, mss or DEFAULT_MSS)
        self.quick = 0  # segments still to be ACKed one by one
        self.pending = False  # data arrived since the last ACK (a quick credit is used up by it)
        self.deadline: float | None = None  # the delayed ACK is due then
        self._seen_data = False

    def on_segment(self, plen: int, wnd_adv: int) -> None:
        """An acceptable segment with `plen` bytes (plus perhaps a FIN) arrived; `wnd_adv` is
        the window last advertised (it sizes the quick-ACK credits, as in Linux)."""
        if plen:
            # tcp_measure_rcv_mss(): the estimate follows the largest segment seen.
            if plen >= self.rcv_mss:
                self.rcv_mss = min(plen, self.mss or plen)
            if not self._seen_data:
                # tcp_event_data_recv() on the first data: tcp_incr_quickack(TCP_MAX_QUICKACKS).
                self._seen_data = True
                credits = max(2, wnd_adv // (2 * self.rcv_mss))
                self.quick = min(self.quickack, credits)
        self.pending = True

    def enter_quickack(self, wnd_adv: int) -> None:
        """A retransmission arrived (Linux tcp_data_queue, "A retransmit"): the sender lost an
        ACK or timed out, so acknowledge every segment for a while again."""
        credits = max(2, wnd_adv // (2 * self.rcv_mss))
        if self.quickack < credits:
            credits = self.quickack
        if credits > self.quick:
            self.quick = credits

    def decide(self, now: float, immediate: bool, unacked: int, window_ok: bool) -> bool:
        """True: ACK now. Else the ACK is delayed and `deadline` set (if it was not already).

        `immediate`: out-of-order data is queued, a hole was just filled or a duplicate came
        (RFC 5681 §4.2 "SHOULD be generated immediately"); `unacked`: bytes taken in order
        since the last ACK; `window_ok`: the window to advertise would not be smaller than the
        last one (Linux acknowledges two full segments only then, `__tcp_ack_snd_check`).
        """
        if immediate or self.quick > 0 or (unacked > self.rcv_mss and window_ok):
            return True
        if self.deadline is None:
            self.deadline = now + self.delay
        return False

    def on_ack_sent(self) -> None:
        """Any segment carrying our ACK left: nothing is delayed any more (tcp_event_ack_sent)."""
        self.deadline = None
        if self.pending:
            self.pending = False
            if self.quick:
                self.quick -= 1  # tcp_dec_quickack_mode()

    def due(self, now: float) -> bool:
        """Timer check: True (once) when the delayed ACK's deadline has passed."""
        d = self.deadline
        if d is not None and now >= d:
            self.deadline = None
            return True
        return False


class ReceiveBuffer:
    """The receive side of one connection in relative, unbounded sequence space.

    Per segment that carries data or a FIN, call `segment(seq, data, fin, now)`; it answers
    `ACK_NOW`, `ACK_FIN` or `ACK_NONE` (then `ack_deadline` tells when the delayed ACK is due;
    `ack_due(now)` checks it from a timer). For every segment that carries our ACK, call
    `ack(max_blocks)` for the fields it must carry: rcv_nxt, the window field and SACK blocks.

    `rcv_nxt`: where the data starts (the caller's sequence convention); `capacity`: the receive
    buffer in bytes, shared by held out-of-order data and unread in-order data; `wscale`: our
    window shift, once negotiated (RFC 7323 §2.2; 0 without scaling); `sack`: SACK was
    negotiated (RFC 2018 §2), so blocks are reported; `dsack`: report duplicates (RFC 2883);
    `shrink_window`: never advertise more than the free buffer, even if the right edge retracts
    (with a window scale only, as Linux; held data is never dropped — no reneging, RFC 2018 §8 —
    so a buffer nearly full of out-of-order data can then close the window on the hole before it);
    `acks`: the ACK policy (a `DelayedAck` with Linux's defaults if None).

    The application side: with `store=True` in-order bytes wait in the buffer for `read()` /
    `discard()`, and until then reduce the window (RFC 9293 §3.8.6.2.2: the window is what the
    buffer can still take). `on_data`, if given, sees every run of bytes the moment it is in
    order (for hashing, tracing, or push-style delivery). With `store=False` what `on_data`
    gets counts as read at once: nothing waits, the window is never reduced by unread data.
    `store` may be switched at run time (bytes already waiting stay until read); `wscale` and
    `capacity` are fixed at construction.
    """

    __slots__ = (
        "capacity", "wscale", "sack", "dsack", "shrink_window", "acks", "store", "on_data",
        "rcv_nxt", "fin_received", "unread",
        "_start", "_nxt", "_wup", "_adv", "_wnd_adv", "_adv_max", "_wnd_max",
        "_ooo", "_ooo_bytes", "_sack_recent", "_dsack", "_fin", "_app",
        "dup_bytes", "ooo_segments", "beyond_window_bytes", "shrunk_window_bytes", "dsacks_sent",
    )

    def __init__(
        self,
        rcv_nxt: int,
        capacity: int,
        *,
        wscale: int = 0,
        sack: bool = True,
        dsack: bool = True,
        shrink_window: bool = False,
        acks: DelayedAck | None = None,
        store: bool = True,
        on_data: Callable[[bytes | memoryview], object] | None = None,
    ):
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        if not 0 <= wscale <= 14:
            raise ValueError("wscale must be in 0..14 (RFC 7323 §2.3)")
        self.capacity = capacity
        self.wscale = wscale
        self.sack = sack
        self.dsack = dsack and sack
        self.shrink_window = shrink_window
        self.acks = acks if acks is not None else DelayedAck()
        self.store = store
        self.on_data = on_data

        self.rcv_nxt = rcv_nxt  # what our ACK carries: data taken in order, and the FIN once taken
        self.fin_received = False  # the FIN was taken in order
        self.unread = 0  # in-order bytes the application has not read yet
        self._start = rcv_nxt
        self._nxt = rcv_nxt  # next data byte expected (the FIN not counted)
        self._wup = rcv_nxt  # _nxt when the last ACK was sent (Linux's rcv_wup)
        self._adv = rcv_nxt  # right edge of the last advertised window
        self._wnd_adv = 0  # size of the last advertised window (Linux's rcv_wnd)
        self._adv_max = rcv_nxt  # the furthest right edge ever advertised
        self._wnd_max = 65535 << wscale  # largest window the scale can express
        self._ooo: list[list] = []  # sorted, disjoint, non-adjacent [start, end, bytearray]
        self._ooo_bytes = 0
        self._sack_recent: list[tuple[int, int]] = []  # held blocks, most recently reported first
        self._dsack: tuple[int, int] | None = None  # D-SACK block for the next ACK
        self._fin: int | None = None  # where the peer's FIN is, once a FIN was seen
        self._app = bytearray()  # in-order bytes not yet read (store=True)

        # Counters, for tests and reports.
        self.dup_bytes = 0  # payload bytes received more than once
        self.ooo_segments = 0  # segments queued above a hole
        self.beyond_window_bytes = 0  # beyond any right edge we ever advertised: a sender bug
        self.shrunk_window_bytes = 0  # within an edge advertised once, after the window shrank
        self.dsacks_sent = 0

    # ------------------------------------------------------------------ state

    @property
    def ack_deadline(self) -> float | None:
        """When the delayed ACK is due (None: nothing is waiting)."""
        return self.acks.deadline

    def ack_due(self, now: float) -> bool:
        """For the caller's timer: True (once) if the delayed ACK is due by `now`."""
        return self.acks.due(now)

    @property
    def delivered(self) -> int:
        """Bytes taken in order so far (read or not)."""
        return self._nxt - self._start

    @property
    def ooo_bytes(self) -> int:
        """Bytes held above a hole."""
        return self._ooo_bytes

    @property
    def right_edge(self) -> int:
        """Right edge of the window last advertised (rcv_nxt + RCV.WND as the peer knows it)."""
        return self._adv

    @property
    def adv_max(self) -> int:
        """The furthest right edge ever advertised."""
        return self._adv_max

    def ooo_ranges(self) -> list[tuple[int, int]]:
        """Out-of-order ranges held, lowest first."""
        return [(s, e) for s, e, _ in self._ooo]

    @property
    def readable(self) -> int:
        """In-order bytes the application can read now."""
        return self.unread

    @property
    def at_eof(self) -> bool:
        """The peer's FIN was taken in order and every byte before it has been read."""
        return self.fin_received and self.unread == 0

    def free(self) -> int:
        """Free receive buffer: what the window may offer (RFC 9293 §3.8.6.2.2)."""
        free = self.capacity - self._ooo_bytes - self.unread
        return free if free > 0 else 0

    def acceptable(self, seq: int, seg_len: int) -> bool:
        """RFC 9293 §3.10.7.4's first check against the window we advertised.

        As in Linux's tcp_sequence(), an empty segment (an ACK, a window probe's answer) may
        start exactly at the right edge; data must overlap [rcv_nxt, right edge), and a zero
        window takes only data that starts before rcv_nxt (RFC 9293 is stricter at both edges;
        this is the simulated Linux peer's reading, which `segment()` agrees with).
        """
        nxt = self.rcv_nxt
        wnd = self._adv - nxt
        if wnd < 0:
            wnd = 0
        off = seq - nxt
        if seg_len == 0:
            return 0 <= off <= wnd
        return off < wnd and off + seg_len > 0

    # ------------------------------------------------------------------ input

    def segment(self, seq: int, data: bytes | memoryview | int, fin: bool, now: float) -> int:
        """Take one segment's data (or, if `data` is an int, that many bytes of unknown content,
        taken as zeros) and FIN flag; answer ACK_NOW, ACK_FIN or ACK_NONE.

        Call it for every segment carrying data or a FIN that passed the caller's PAWS check,
        acceptable or not: an entirely old segment is a duplicate to report (RFC 2883 §4.1) and
        to acknowledge at once (RFC 9293 §3.10.7.4: "an acknowledgment should be sent in reply");
        one entirely right of the window is dropped and acknowledged. Hot path, hand-tuned.
        """
        if data.__class__ is int:
            data = bytes(data)
        plen = len(data)
        slen = plen + 1 if fin else plen
        if not slen:
            return ACK_NONE
        acks = self.acks
        rcv_nxt = self.rcv_nxt
        if seq + slen <= rcv_nxt:
            # Entirely old: a retransmission of what we have. Report it (RFC 2883 §4.1) and, as
            # Linux does (tcp_data_queue, "A retransmit"), go back to quick ACKs.
            self.dup_bytes += plen
            if self.dsack:
                self._dsack = (seq, seq + slen)
            acks.enter_quickack(self._wnd_adv)
            return ACK_NOW
        adv = self._adv
        if seq >= adv and seq >= rcv_nxt:
            self._count_beyond(seq, seq + plen)  # nothing of it fits: drop, acknowledge
            return ACK_NOW
        if self.fin_received:
            return ACK_NOW  # nothing new can follow the FIN; acknowledge what we have

        s = seq
        e = s + plen
        nxt = self._nxt
        if e > adv:
            # Beyond the window: trim it (and a FIN after it), count it so that tests see a
            # sender that ignores the window.
            self._count_beyond(adv, e)
            data = data[: plen - (e - adv)]
            e = adv
            fin = False
        acks.on_segment(plen, self._wnd_adv)
        immediate = False
        ooo = self._ooo
        had_ooo = bool(ooo)
        if s < nxt:
            # Partly old: D-SACK the duplicate part (RFC 2883 §4.1), keep the new part.
            d = e if e < nxt else nxt
            self.dup_bytes += d - s
            if self.dsack:
                self._dsack = (s, d)
            data = data[nxt - s :]
            s = nxt
            acks.enter_quickack(self._wnd_adv)
            immediate = True
        if e > s:
            if s == nxt:
                self._nxt = nxt = e
                self._deliver(data)
                if ooo:
                    self._drain_ooo()
                    nxt = self._nxt
            else:
                self.ooo_segments += 1
                self._ooo_insert(s, e, data)
        if fin and self._fin is None:
            self._fin = e
        self.rcv_nxt = nxt
        if self._fin == nxt:
            self.fin_received = True
            self.rcv_nxt = nxt + 1  # RFC 9293 §3.10.7.4 eighth step: the FIN takes one number
            return ACK_FIN
        # Out-of-order data queued, or a hole just filled: ACK at once (RFC 5681 §4.2, Linux
        # __tcp_ack_snd_check "we have out of order data"). Otherwise two full segments, if
        # the window would not shrink, or the quick-ACK phase; else delay.
        if acks.decide(now, immediate or had_ooo or bool(ooo), nxt - self._wup,
                       self.free() >= self._wnd_adv):
            return ACK_NOW
        return ACK_NONE

    def _count_beyond(self, s: int, e: int) -> None:
        """Account bytes [s, e) that lie right of the current window."""
        shrunk = min(e, self._adv_max) - s
        if shrunk < 0:
            shrunk = 0
        self.shrunk_window_bytes += shrunk
        self.beyond_window_bytes += (e - s) - shrunk

    def _deliver(self, data) -> None:
        if self.store:
            self._app += data
            self.unread += len(data)
        if self.on_data is not None:
            self.on_data(data)

    def _ooo_insert(self, s: int, e: int, data) -> None:
        """Queue [s, e) above a hole; merge with touching blocks; record D-SACK and recency."""
        blocks = self._ooo
        i = bisect_left(blocks, s, key=_end_key)  # first block ending at or after s
        j = i
        n = len(blocks)
        while j < n and blocks[j][0] <= e:
            j += 1
        if i == j:
            blocks.insert(i, [s, e, bytearray(data)])
            self._ooo_bytes += e - s
            ms, me = s, e
        else:
            first_dup = None
            for b in blocks[i:j]:
                lo = s if s > b[0] else b[0]
                hi = e if e < b[1] else b[1]
                if lo < hi:
                    self.dup_bytes += hi - lo
                    if first_dup is None:
                        first_dup = (lo, hi)
            if first_dup is not None and self.dsack:
                # RFC 2883 §4: the duplicate first; the block holding it follows (below).
                self._dsack = first_dup
            b = blocks[i]
            if j == i + 1 and b[0] <= s and e <= b[1]:
                ms, me = b[0], b[1]  # all duplicate
            elif j == i + 1 and s == b[1]:
                b[2] += data
                b[1] = e
                self._ooo_bytes += e - s
                ms, me = b[0], e
            else:
                ms = min(s, b[0])
                me = max(e, blocks[j - 1][1])
                buf = bytearray(me - ms)
                buf[s - ms : e - ms] = data
                held = 0
                for ob in blocks[i:j]:
                    buf[ob[0] - ms : ob[1] - ms] = ob[2]  # what we hold wins over the new copy
                    held += ob[1] - ob[0]
                blocks[i:j] = [[ms, me, buf]]
                self._ooo_bytes += (me - ms) - held
        # RFC 2018 §4: the block holding this segment is reported first; it replaces the blocks
        # it absorbed; the others keep their recency order.
        self._sack_recent = [(ms, me)] + [r for r in self._sack_recent if r[1] < ms or r[0] > me]

    def _drain_ooo(self) -> None:
        """Move held blocks that the new rcv_nxt reaches into the in-order stream."""
        blocks = self._ooo
        nxt = self._nxt
        while blocks and blocks[0][0] <= nxt:
            s, e, buf = blocks.pop(0)
            self._ooo_bytes -= e - s
            if e > nxt:
                view = memoryview(buf)[nxt - s :]
                self._nxt = nxt = e
                self._deliver(view)
        self._sack_recent = [r for r in self._sack_recent if r[0] > nxt]

    # ------------------------------------------------------------------ the application

    def read(self, n: int | None = None) -> bytes:
        """Take up to `n` in-order bytes (all if None). Reading frees buffer space; ask
        `ack_after_read()` afterwards whether the peer should hear of it now."""
        take = self.unread if n is None or n > self.unread else max(n, 0)
        if not take:
            return b""
        app = self._app
        out = bytes(app[:take])
        del app[:take]  # bytearray deletes from the front in amortised O(1)
        self.unread -= take
        return out

    def discard(self, n: int | None = None) -> int:
        """Like `read`, but drop the bytes instead of returning them; returns how many."""
        take = self.unread if n is None or n > self.unread else max(n, 0)
        if take:
            del self._app[:take]
            self.unread -= take
        return take

    def ack_after_read(self) -> bool:
        """After the application read: send an ACK now? Linux's tcp_cleanup_rbuf() in full: the
        once-per-two-segments ACK that `segment()` held back because unread data made the
        window look smaller (RFC 5681 §4.2's "every second full-sized segment" is kept here,
        when the application frees the space), or a window update (`window_update_due`)."""
        return (self.acks.deadline is not None and self._nxt - self._wup > self.acks.rcv_mss) or (
            self.window_update_due()
        )

    def window_update_due(self) -> bool:
        """After the application read: send a window update now? As Linux's tcp_cleanup_rbuf(),
        only if the window would at least double and grow by at least the SWS threshold, so a
        slowly reading application does not cause a stream of tiny updates (RFC 9293
        §3.8.6.2.2; RFC 1122 §4.2.3.3)."""
        remaining = self._adv - self._nxt
        free = self.free()
        if free > self._wnd_max:
            free = self._wnd_max
        return free >= 2 * remaining and free - remaining >= self._sws_threshold()

    # ------------------------------------------------------------------ the ACK

    def _sws_threshold(self) -> int:
        """Receiver SWS avoidance (RFC 9293 §3.8.6.2.2): the window opens by at least
        min(buffer / 2, one segment) (Fr = 1/2, and the sender's segment size as estimated)."""
        return max(1, min(self.capacity // 2, self.acks.rcv_mss))

    def initial_window(self) -> int:
        """The window for our SYN or SYN-ACK: never scaled (RFC 7323 §2.2), so at most 65535."""
        window = self.free()
        if window > 65535:
            window = 65535
        self._adv = self._nxt + window
        if self._adv > self._adv_max:
            self._adv_max = self._adv
        self._wnd_adv = window
        return window

    def select_window(self) -> int:
        """The 16-bit window field for a segment sent now; records the advertised right edge.

        The right edge moves right only by at least min(capacity/2, one segment) — receiver SWS
        avoidance, RFC 9293 §3.8.6.2.2 — and never moves left (RFC 9293 §3.8.6): the kept edge
        is rounded *up* to the scale unit (RFC 7323 §2.3 shifts the window right by the scale),
        as Linux's tcp_select_window() does. That lets a non-reading application's peer send up
        to 2^wscale - 1 bytes per ACK beyond the buffer (RFC 7323 Appendix F); `shrink_window`
        trades the fixed edge for never overcommitting.
        """
        ws = self.wscale
        nxt = self._nxt
        cur = self._adv
        free = self.capacity - self._ooo_bytes - self.unread
        if free < 0:
            free = 0
        if free > self._wnd_max:
            free = self._wnd_max
        cand = nxt + free
        sws = self.acks.rcv_mss  # _sws_threshold(), inlined
        half = self.capacity >> 1
        if half < sws:
            sws = half if half > 0 else 1
        if cand - cur >= sws:
            field = free >> ws
            if nxt + (field << ws) < cur:
                field = (cur - nxt + (1 << ws) - 1) >> ws
        else:
            field = (cur - nxt + (1 << ws) - 1) >> ws
        if field > 65535:
            field = 65535
        if self.shrink_window and ws and nxt + (field << ws) > cand:
            field = free >> ws  # tcp_shrink_window: retract rather than overcommit
        win = field << ws
        self._adv = adv = nxt + win
        if adv > self._adv_max:
            self._adv_max = adv
        self._wnd_adv = win
        return field

    def sack_blocks(self, max_blocks: int = 4) -> list[tuple[int, int]]:
        """The SACK blocks an ACK sent now carries, without sending it: the D-SACK block first
        (RFC 2883 §4), then held blocks by recency (RFC 2018 §4), `max_blocks` in all."""
        if not self.sack or max_blocks <= 0:
            return []
        blocks = [self._dsack] if self._dsack is not None else []
        for r in self._sack_recent:
            if len(blocks) >= max_blocks:
                break
            blocks.append(r)
        return blocks

    def ack(self, max_blocks: int = 4, wire: int | None = None) -> tuple[int, int, tuple[tuple[int, int], ...]]:
        """An ACK is being sent now: returns (rcv_nxt, window field, SACK blocks) and records
        it — the advertised edge moves, the D-SACK block is spent, the delayed ACK is cancelled.

        Call it for *every* segment that carries our ACK (data segments too), once. SACK blocks
        are (left, right) pairs, D-SACK first; `max_blocks` is what the option space allows
        (40 bytes: 4 blocks, 3 next to timestamps; 0 keeps a pending D-SACK for a later
        segment with room). With `wire` given, the blocks come as 32-bit sequence numbers,
        `(wire + left) mod 2^32`: pass the wire value of relative sequence 0. Hot path.
        """
        blocks: tuple[tuple[int, int], ...] = ()
        if self.sack and max_blocks > 0 and (self._dsack is not None or self._sack_recent):
            out = []
            if self._dsack is not None:
                out.append(self._dsack)
                self._dsack = None
                self.dsacks_sent += 1
            for r in self._sack_recent:
                if len(out) >= max_blocks:
                    break
                out.append(r)
            if wire is not None:
                out = [((wire + s) & MASK, (wire + e) & MASK) for s, e in out]
            blocks = tuple(out)
        window = self.select_window()
        self._wup = self._nxt
        self.acks.on_ack_sent()
        return self.rcv_nxt, window, blocks
