"""A sans-I/O TCP receiver modelled on Linux, used as the peer in simulations.

It plays the part the kernel's TCP stack plays in the lab: a passive open on `port`, a sink that
reads everything (iperf3-like) and closes when it reads EOF. What a sender's loss recovery and
congestion control react to is modelled on Linux's tcp_input.c / tcp_output.c:

- option negotiation on the SYN-ACK: window scale (RFC 7323 §2.2), timestamps (RFC 7323 §3.2),
  SACK-permitted (RFC 2018 §2) — each only if the SYN offered it and the receiver allows it;
- ACK cadence: a quick-ACK phase at the start (every segment ACKed, like `icsk_ack.quick`), then
  an ACK once more than one full segment is unacknowledged (`__tcp_ack_snd_check`), else a
  delayed ACK after `delack` (TCP_ATO_MIN = 40 ms); RFC 9293 §3.8.6.3, RFC 5681 §4.2;
- immediate ACKs while out-of-order data is queued, when a hole is filled (RFC 5681 §4.2), and
  for duplicate data (with a D-SACK block, RFC 2883);
- SACK blocks per RFC 2018 §4: the first block holds the most recent segment, then the most
  recently reported other blocks, as many as fit (3 next to timestamps, else 4);
- timestamps per RFC 7323 §4.3 (TS.Recent updated only from segments at or left of
  Last.ACK.sent) and PAWS (§5.3); non-RST segments without timestamps are dropped once they were
  negotiated (§3.2);
- the advertised window is the free receive buffer, scaled, with receiver-side silly-window
  avoidance (RFC 9293 §3.8.6.2.2) and a right edge that never moves left (shrinking the window
  is "strongly discouraged", RFC 9293 §3.8.6; Linux's default). As in Linux, keeping the old edge while the window closes means rounding
  it up to the scale unit on each ACK, so a non-reading sink can take in up to 2^wscale - 1 bytes
  per ACK beyond `rcv_buf` (RFC 7323 Appendix F). `shrink_window=True` models Linux's
  net.ipv4.tcp_shrink_window (6.5+): the window never exceeds the free space, even if that
  retracts the right edge;
- closing: the peer's FIN is ACKed and, like the kernel sink that reads EOF and closes, the
  receiver sends its own FIN (LAST-ACK), retransmitted on a simple doubling RTO until ACKed.

All sequence numbers in the buffers are kept as absolute byte offsets from IRS+1 ("abs") so that
range arithmetic is plain integer arithmetic; conversion to and from 32-bit sequence numbers goes
through `seq.add` / `seq.diff`.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left

from ..segment import Flags, Options, Segment
from ..seq import add, diff, ge, gt, le, lt

LISTEN = "LISTEN"
SYN_RECEIVED = "SYN-RECEIVED"
ESTABLISHED = "ESTABLISHED"
CLOSE_WAIT = "CLOSE-WAIT"
LAST_ACK = "LAST-ACK"
CLOSED = "CLOSED"

# Flag tests use plain ints: `IntFlag.__and__` costs about a microsecond per call.
_SYN, _ACK, _FIN, _RST = int(Flags.SYN), int(Flags.ACK), int(Flags.FIN), int(Flags.RST)
_F_ACK, _F_SYNACK, _F_FINACK = Flags.ACK, Flags.SYN | Flags.ACK, Flags.FIN | Flags.ACK
_F_RST, _F_RSTACK = Flags.RST, Flags.RST | Flags.ACK
_DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option


def _end_key(block: list) -> int:
    return block[1]


class Receiver:
    """The receiving end of one TCP connection, sans-I/O.

    Interface (the same shape as the sender's engine): `receive(seg, now)`, `transmit(now)`,
    `deadline()`, `on_timer(now)`, `closed`. Segments to send are produced while handling input
    or timers (so each incoming packet gets its own ACK, as in the kernel) and collected by
    `transmit()`.

    Parameters: `mss` advertised (None: no MSS option); `wscale` offered (None: no window
    scaling); `sack`, `dsack`, `timestamps`: allow those options; `rcv_buf` receive buffer in
    bytes (the advertised window is its free part); `delack` delayed-ACK timeout; `quickack`
    how many segments are ACKed one by one at the start (Linux's TCP_MAX_QUICKACKS = 16; 0 turns
    it off); `keep` keeps the received bytes in `data`; `reading=False` makes a sink that does not
    read until `read()` is called (the window then closes); `close_delay` seconds between reading
    EOF and closing (0: the FIN goes out with the ACK of the peer's FIN; None: never close);
    `fin_rto`/`fin_retries` and `synack_rto`/`synack_retries` time our FIN and SYN-ACK;
    `ts_hz`/`ts_offset` define our TSval clock; `challenge_ack=True` applies RFC 5961 §3.2 to RST
    (only an exact rcv_nxt match resets; other in-window RSTs get a challenge ACK);
    `shrink_window=True` never advertises more than the free buffer (see the module docstring).
    """

    def __init__(
        self,
        port: int = 5201,
        iss: int = 0,
        *,
        mss: int | None = 1460,
        wscale: int | None = 7,
        sack: bool = True,
        dsack: bool = True,
        timestamps: bool = True,
        rcv_buf: int = 4 << 20,
        delack: float = 0.040,
        quickack: int = 16,
        keep: bool = False,
        reading: bool = True,
        close_delay: float | None = 0.0,
        fin_rto: float = 0.2,
        fin_retries: int = 8,
        synack_rto: float = 1.0,
        synack_retries: int = 5,
        ts_hz: int = 1000,
        ts_offset: int = 0,
        challenge_ack: bool = False,
        shrink_window: bool = False,
    ):
        if wscale is not None and not 0 <= wscale <= 14:
            raise ValueError("wscale must be in 0..14 (RFC 7323 §2.3)")
        if rcv_buf <= 0:
            raise ValueError("rcv_buf must be > 0")
        self.port = port
        self.iss = iss & 0xFFFFFFFF
        self.mss = mss
        self.wscale = wscale
        self.sack = sack
        self.dsack = dsack
        self.timestamps = timestamps
        self.rcv_buf = rcv_buf
        self.delack = delack
        self.quickack = quickack
        self.reading = reading
        self.close_delay = close_delay
        self.fin_rto = fin_rto
        self.fin_retries = fin_retries
        self.synack_rto = synack_rto
        self.synack_retries = synack_retries
        self.ts_hz = ts_hz
        self.ts_offset = ts_offset
        self.challenge_ack = challenge_ack
        self.shrink_window = shrink_window

        self.state = LISTEN
        self.reset = False
        self.timed_out = False
        self.got_fin = False
        self.peer_port: int | None = None
        self.irs: int | None = None
        self.snd_una = self.snd_nxt = self.iss
        self.snd_wnd = 0
        self.rcv_nxt = 0
        # Negotiated on the SYN.
        self.ts_ok = self.sack_ok = self.ws_ok = False
        self.snd_wscale = self.rcv_wscale = 0
        self.snd_mss = _DEFAULT_MSS
        self.ts_recent = 0  # TS.Recent (RFC 7323 §4.3)
        self.last_ack_sent = 0  # Last.ACK.sent
        # Estimate of the sender's segment size, as Linux's icsk_ack.rcv_mss: starts at 536 and
        # grows to the largest segment seen (capped at our MSS).
        self.rcv_mss = min(_DEFAULT_MSS, mss or _DEFAULT_MSS)

        # Receive space in abs offsets (bytes since IRS+1).
        self._base = 0  # sequence number of abs 0 (IRS+1)
        self._nxt = 0  # abs rcv_nxt for data (the FIN not counted)
        self._wup = 0  # abs rcv_nxt when the last ACK was sent (Linux's rcv_wup)
        self._adv = 0  # abs right edge of the last advertised window
        self._wnd_adv = 0  # size of the last advertised window (Linux's rcv_wnd)
        self._adv_max = 0  # abs: the furthest right edge ever advertised
        self._wnd_max = 65535  # largest window the negotiated scale can express
        self._ooo: list[list] = []  # sorted, disjoint, non-adjacent [start, end, bytearray]
        self._ooo_bytes = 0
        self._sack_recent: list[tuple[int, int]] = []  # ooo blocks, most recently reported first
        self._dsack: tuple[int, int] | None = None  # D-SACK block (sequence numbers) for next ACK
        self._fin_abs: int | None = None  # abs position of the peer's FIN once seen
        self.unread = 0  # in-order bytes not yet read by the application (reading=False)

        self._seen_data = False
        self._quick = 0
        self._ack_pending = False
        self._delack_at: float | None = None
        self._rtx_at: float | None = None
        self._rto = 0.0
        self._retries = 0
        self._close_at: float | None = None
        self._out: list[Segment] = []

        self._hash = hashlib.sha256()
        self.bytes_received = 0
        self.data: bytearray | None = bytearray() if keep else None

        # Counters, for tests and reports.
        self.segments_received = 0
        self.acks_sent = 0
        self.dup_acks_sent = 0  # ACKs sent without new data acknowledged
        self.dsacks_sent = 0
        self.ooo_segments = 0
        self.dup_bytes = 0
        self.beyond_window_bytes = 0  # beyond any right edge we ever advertised: a sender bug
        self.shrunk_window_bytes = 0  # allowed once, dropped after the window shrank
        self.paws_dropped = 0
        self.no_ts_dropped = 0
        self.ignored = 0
        self.synacks_sent = 0
        self.fins_sent = 0
        self.rsts_sent = 0

    # ------------------------------------------------------------------ public interface

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def clean(self) -> bool:
        """Closed the normal way: the peer's FIN received, our FIN acknowledged."""
        return self.state == CLOSED and self.got_fin and not self.reset and not self.timed_out

    def sha256(self) -> str:
        """Hex SHA-256 of the in-order bytes received so far."""
        return self._hash.hexdigest()

    @property
    def ooo_bytes(self) -> int:
        return self._ooo_bytes

    def sack_blocks(self) -> list[tuple[int, int]]:
        """Out-of-order blocks held, as sequence-number pairs, lowest first."""
        b = self._base
        return [(add(b, s), add(b, e)) for s, e, _ in self._ooo]

    def transmit(self, now: float) -> list[Segment]:
        out = self._out
        if out:
            self._out = []
        return out

    def deadline(self) -> float | None:
        d = self._delack_at
        for t in (self._rtx_at, self._close_at):
            if t is not None and (d is None or t < d):
                d = t
        return d

    def on_timer(self, now: float) -> None:
        if self._delack_at is not None and now >= self._delack_at:
            self._delack_at = None
            if self.state in (ESTABLISHED, CLOSE_WAIT):
                self._send_ack(now)
        if self._close_at is not None and now >= self._close_at:
            self._close_at = None
            if self.state == CLOSE_WAIT:
                self._send_fin(now)
        if self._rtx_at is not None and now >= self._rtx_at:
            self._retransmit(now)

    def read(self, now: float, n: int | None = None) -> int:
        """The application reads up to `n` in-order bytes (all if None); returns how many.

        Reading opens the window; like Linux's tcp_cleanup_rbuf() a window update is sent when
        the window would at least double and grow by a segment. Reading EOF starts the close.
        """
        take = self.unread if n is None else min(n, self.unread)
        self.unread -= take
        if self.state in (ESTABLISHED, CLOSE_WAIT) and take:
            remaining = self._adv - self._nxt
            free = min(self._free(), self._wnd_max)
            if free >= 2 * remaining and free - remaining >= self._sws_threshold():
                self._send_ack(now)
        if self.state == CLOSE_WAIT and self.unread == 0 and self._close_at is None:
            self._schedule_close(now)
        return take

    def receive(self, seg: Segment, now: float) -> None:
        """Process one incoming segment (RFC 9293 §3.10.7, with Linux's choices noted)."""
        self.segments_received += 1
        if seg.dport != self.port or (self.peer_port is not None and seg.sport != self.peer_port):
            self.ignored += 1
            return
        state = self.state
        flags = int(seg.flags)
        if state == LISTEN:
            self._listen(seg, now)
            return
        if state == CLOSED:
            if not flags & _RST:
                self._send_rst_for(seg)
            return

        if flags & _SYN:
            if state == SYN_RECEIVED and seg.seq == self.irs and not flags & _ACK:
                self._send_synack(now)  # the SYN-ACK was lost: the sender retransmitted its SYN
            elif not flags & _RST:
                self._send_ack(now)  # RFC 5961 §4.2: challenge ACK for any other SYN
            return

        ts = seg.options.ts
        if self.ts_ok and not flags & _RST:
            if ts is None:
                self.no_ts_dropped += 1  # RFC 7323 §3.2
                return
            if lt(ts[0], self.ts_recent):
                self.paws_dropped += 1  # RFC 7323 §5.3 R1: drop, but acknowledge
                self._send_ack(now)
                return

        # RFC 9293 §3.10.7.4, first check: is the segment acceptable?
        plen = len(seg.payload)
        slen = plen + (1 if flags & _FIN else 0)
        off = diff(seg.seq, self.rcv_nxt)
        wnd = self._adv - self._nxt - (1 if self.got_fin else 0)
        if wnd < 0:
            wnd = 0
        if slen == 0:
            ok = 0 <= off <= wnd
        else:
            ok = off < wnd and off + slen > 0
        if not ok:
            if flags & _RST:
                return
            if slen and off + slen <= 0:
                # Entirely old: a retransmission of data we have (RFC 2883 §4 D-SACK), and
                # Linux re-enters quick-ACK mode (tcp_data_queue, "A retransmit").
                self.dup_bytes += plen
                if self.dsack and self.sack_ok:
                    self._dsack = (seg.seq, add(seg.seq, slen))
                self._enter_quickack()
            elif slen and off >= wnd:
                self._count_beyond(self._nxt + off, self._nxt + off + plen)
            self._send_ack(now)
            return

        if flags & _RST:
            if self.challenge_ack and off != 0:
                self._send_ack(now)
            else:
                self._abort(reset=True)
            return
        if not flags & _ACK:
            self.ignored += 1
            return

        # Fifth check: the ACK field.
        if state == SYN_RECEIVED:
            if seg.ack != self.snd_nxt:
                self._send_rst_for(seg)
                return
            self.snd_una = seg.ack
            self.snd_wnd = seg.window << self.snd_wscale
            self.state = state = ESTABLISHED
            self._rtx_at = None
        else:
            if gt(seg.ack, self.snd_nxt):
                self._send_ack(now)  # acknowledges something not yet sent
                return
            if gt(seg.ack, self.snd_una):
                self.snd_una = seg.ack
            self.snd_wnd = seg.window << self.snd_wscale
            if state == LAST_ACK and self.snd_una == self.snd_nxt:
                self._rtx_at = None
                self.state = CLOSED
                return

        # RFC 7323 §4.3 (2): TS.Recent only from segments at or left of Last.ACK.sent, so that
        # a delayed ACK echoes the earliest unacknowledged segment and out-of-order segments
        # don't move it.
        if self.ts_ok and ge(ts[0], self.ts_recent) and le(seg.seq, self.last_ack_sent):
            self.ts_recent = ts[0]

        if slen:
            if state == ESTABLISHED:
                self._data(seg, off, now)
            else:
                self._send_ack(now)  # nothing new can follow the FIN

    # ------------------------------------------------------------------ connection setup

    def _listen(self, seg: Segment, now: float) -> None:
        flags = int(seg.flags)
        if flags & _RST:
            return
        if flags & _ACK:
            self._send_rst_for(seg)  # RFC 9293 §3.10.7.2
            return
        if not flags & _SYN:
            self.ignored += 1
            return
        o = seg.options
        self.peer_port = seg.sport
        self.irs = seg.seq
        self._base = add(seg.seq, 1)
        self.rcv_nxt = self._base
        self.snd_mss = o.mss or _DEFAULT_MSS
        self.sack_ok = self.sack and o.sack_permitted  # RFC 2018 §2
        self.ts_ok = self.timestamps and o.ts is not None  # RFC 7323 §3.2
        if self.ts_ok:
            self.ts_recent = o.ts[0]
        self.ws_ok = self.wscale is not None and o.wscale is not None  # RFC 7323 §2.2
        if self.ws_ok:
            self.rcv_wscale, self.snd_wscale = self.wscale, o.wscale
        self._wnd_max = 65535 << self.rcv_wscale
        self.snd_wnd = seg.window  # never scaled on a SYN
        self.state = SYN_RECEIVED
        self._rto = self.synack_rto
        self._retries = 0
        self._rtx_at = now + self._rto
        self._send_synack(now)

    def _send_synack(self, now: float) -> None:
        o = Options(mss=self.mss)
        if self.ts_ok:
            o.ts = (self._tsval(now), self.ts_recent)
        o.sack_permitted = self.sack_ok
        if self.ws_ok:
            o.wscale = self.rcv_wscale
        # RFC 7323 §2.2: the window in a SYN or SYN-ACK is never scaled.
        window = min(self._free(), 65535)
        self._adv = self._adv_max = self._nxt + window
        self._wnd_adv = window
        self.last_ack_sent = self.rcv_nxt
        self.snd_nxt = add(self.iss, 1)
        self._out.append(Segment(self.port, self.peer_port, self.iss, self.rcv_nxt, _F_SYNACK, window, o))
        self.synacks_sent += 1

    # ------------------------------------------------------------------ data

    def _data(self, seg: Segment, off: int, now: float) -> None:
        payload = seg.payload
        plen = len(payload)
        s = self._nxt + off
        e = s + plen
        fin = bool(int(seg.flags) & _FIN)
        if e > self._adv:
            # Data beyond the window: trim it (and any FIN after it) and count it, so tests see
            # a sender that ignores the window.
            cut = e - self._adv
            self._count_beyond(self._adv, e)
            payload = payload[: plen - cut]
            e = self._adv
            fin = False
        if plen:
            self._seen_data_segment(plen)
        self._ack_pending = True
        immediate = False
        had_ooo = bool(self._ooo)
        if s < self._nxt:
            # Partly old: D-SACK the duplicate part (RFC 2883 §4.1), keep the new part.
            d = min(e, self._nxt)
            self.dup_bytes += d - s
            if self.dsack and self.sack_ok:
                self._dsack = (add(self._base, s), add(self._base, d))
            payload = payload[self._nxt - s :]
            s = self._nxt
            self._enter_quickack()
            immediate = True
        if e > s:
            if s == self._nxt:
                self._deliver(payload)
                self._nxt = e
                if self._ooo:
                    self._drain_ooo()
            else:
                self.ooo_segments += 1
                self._ooo_insert(s, e, payload)
        if fin and self._fin_abs is None:
            self._fin_abs = e
        self.rcv_nxt = add(self._base, self._nxt)

        if self._fin_abs is not None and self._fin_abs == self._nxt:
            self._consume_fin(now)
            return
        if immediate or self._ooo or had_ooo:
            # Out-of-order data queued, or a hole just filled: ACK at once (RFC 5681 §4.2,
            # Linux __tcp_ack_snd_check "we have out of order data").
            self._send_ack(now)
        elif self._quick > 0 or (
            self._nxt - self._wup > self.rcv_mss and self._free() >= self._wnd_adv
        ):
            # Quick-ACK phase, or more than one full segment unacknowledged and the window
            # would not shrink (__tcp_ack_snd_check).
            self._send_ack(now)
        elif self._delack_at is None:
            self._delack_at = now + self.delack

    def _seen_data_segment(self, plen: int) -> None:
        # tcp_measure_rcv_mss(): the estimate follows the largest segment seen.
        if plen >= self.rcv_mss:
            self.rcv_mss = min(plen, self.mss or plen)
        if not self._seen_data:
            # tcp_event_data_recv() on the first data: tcp_incr_quickack(TCP_MAX_QUICKACKS).
            self._seen_data = True
            credits = max(2, self._wnd_adv // (2 * self.rcv_mss))
            self._quick = min(self.quickack, credits)

    def _enter_quickack(self) -> None:
        credits = max(2, self._wnd_adv // (2 * self.rcv_mss))
        self._quick = max(self._quick, min(self.quickack, credits))

    def _count_beyond(self, s: int, e: int) -> None:
        """Account bytes [s, e) (abs) that lie right of the current window."""
        shrunk = max(0, min(e, self._adv_max) - s)
        self.shrunk_window_bytes += shrunk
        self.beyond_window_bytes += (e - s) - shrunk

    def _deliver(self, data) -> None:
        n = len(data)
        self._hash.update(data)
        self.bytes_received += n
        if self.data is not None:
            self.data += data
        if not self.reading:
            self.unread += n

    def _ooo_insert(self, s: int, e: int, data) -> None:
        """Queue [s, e) above a hole; merge with touching blocks; record D-SACK and recency."""
        blocks = self._ooo
        i = bisect_left(blocks, s, key=_end_key)  # first block ending at or after s
        j = i
        while j < len(blocks) and blocks[j][0] <= e:
            j += 1
        if i == j:
            blocks.insert(i, [s, e, bytearray(data)])
            self._ooo_bytes += e - s
            ms, me = s, e
        else:
            first_dup = None
            for b in blocks[i:j]:
                lo, hi = max(s, b[0]), min(e, b[1])
                if lo < hi:
                    self.dup_bytes += hi - lo
                    if first_dup is None:
                        first_dup = (lo, hi)
            if first_dup is not None and self.dsack and self.sack_ok:
                self._dsack = (add(self._base, first_dup[0]), add(self._base, first_dup[1]))
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
        """Move queued blocks that the new rcv_nxt reaches into the in-order stream."""
        blocks = self._ooo
        while blocks and blocks[0][0] <= self._nxt:
            s, e, buf = blocks.pop(0)
            self._ooo_bytes -= e - s
            if e > self._nxt:
                self._deliver(memoryview(buf)[self._nxt - s :])
                self._nxt = e
        nxt = self._nxt
        self._sack_recent = [r for r in self._sack_recent if r[0] > nxt]

    # ------------------------------------------------------------------ closing

    def _consume_fin(self, now: float) -> None:
        self.got_fin = True
        self.rcv_nxt = add(self.rcv_nxt, 1)
        self.state = CLOSE_WAIT
        if self.close_delay == 0 and self.unread == 0:
            self._send_fin(now)  # the application closed at once: the FIN carries the ACK
        else:
            self._send_ack(now)
            if self.unread == 0:
                self._schedule_close(now)

    def _schedule_close(self, now: float) -> None:
        if self.close_delay is None:
            return
        if self.close_delay == 0:
            self._send_fin(now)
        else:
            self._close_at = now + self.close_delay

    def _send_fin(self, now: float) -> None:
        self.state = LAST_ACK
        self._close_at = None
        self.snd_nxt = add(self.iss, 2)
        self._send_ack(now, seq=add(self.iss, 1), flags=_F_FINACK)
        self.fins_sent += 1
        self._rto = self.fin_rto
        self._retries = 0
        self._rtx_at = now + self._rto

    def _retransmit(self, now: float) -> None:
        limit = self.synack_retries if self.state == SYN_RECEIVED else self.fin_retries
        if self._retries >= limit:
            self._abort(timed_out=True)
            return
        self._retries += 1
        self._rto *= 2
        self._rtx_at = now + self._rto
        if self.state == SYN_RECEIVED:
            self._send_synack(now)
        elif self.state == LAST_ACK:
            self._send_ack(now, seq=add(self.iss, 1), flags=_F_FINACK)
            self.fins_sent += 1
        else:
            self._rtx_at = None

    def _abort(self, reset: bool = False, timed_out: bool = False) -> None:
        self.state = CLOSED
        self.reset = self.reset or reset
        self.timed_out = self.timed_out or timed_out
        self._rtx_at = self._delack_at = self._close_at = None

    def _send_rst_for(self, seg: Segment) -> None:
        """RFC 9293 §3.10.7.1: the reset that answers a segment for no connection."""
        if int(seg.flags) & _ACK:
            rst = Segment(self.port, seg.sport, seg.ack, 0, _F_RST, 0)
        else:
            rst = Segment(self.port, seg.sport, 0, add(seg.seq, seg.seg_len), _F_RSTACK, 0)
        self._out.append(rst)
        self.rsts_sent += 1

    # ------------------------------------------------------------------ ACKs and the window

    def _tsval(self, now: float) -> int:
        return (self.ts_offset + int(now * self.ts_hz + 1e-9)) & 0xFFFFFFFF

    def _free(self) -> int:
        free = self.rcv_buf - self._ooo_bytes - self.unread
        return free if free > 0 else 0

    def _sws_threshold(self) -> int:
        return max(1, min(self.rcv_buf // 2, self.rcv_mss))

    def _select_window(self) -> int:
        """The 16-bit window field for the next ACK; updates the advertised right edge.

        The right edge moves right only by at least min(rcv_buf/2, one segment) — receiver SWS
        avoidance, RFC 9293 §3.8.6.2.2 — and never moves left (RFC 9293 §3.8.6): the kept edge
        is rounded *up* to the scale unit (RFC 7323 §2.3 shifts the window right by the scale),
        as Linux's tcp_select_window() does, unless `shrink_window` is set.
        """
        ws = self.rcv_wscale
        nxt = self._nxt
        cur = self._adv
        cand = nxt + min(self._free(), self._wnd_max)
        if cand - cur >= self._sws_threshold():
            field = (cand - nxt) >> ws
            if nxt + (field << ws) < cur:
                field = (cur - nxt + (1 << ws) - 1) >> ws
        else:
            field = (cur - nxt + (1 << ws) - 1) >> ws
        if field > 65535:
            field = 65535
        if self.shrink_window and ws and nxt + (field << ws) > cand:
            field = (cand - nxt) >> ws  # tcp_shrink_window: retract rather than overcommit
        win = field << ws
        self._adv = nxt + win
        if self._adv > self._adv_max:
            self._adv_max = self._adv
        self._wnd_adv = win
        return field

    def _sack_option(self) -> tuple[tuple[int, int], ...]:
        limit = 3 if self.ts_ok else 4  # 40 option bytes: 12 for timestamps, 4 + 8n for SACK
        blocks = []
        if self._dsack is not None:
            blocks.append(self._dsack)
            self.dsacks_sent += 1
        base = self._base
        for s, e in self._sack_recent:
            if len(blocks) >= limit:
                break
            blocks.append((add(base, s), add(base, e)))
        return tuple(blocks)

    def _send_ack(self, now: float, seq: int | None = None, flags: Flags = _F_ACK) -> None:
        o = Options()
        if self.ts_ok:
            o.ts = (self._tsval(now), self.ts_recent)
        if self.sack_ok and (self._dsack is not None or self._sack_recent):
            o.sack = self._sack_option()
        window = self._select_window()
        if self.rcv_nxt == self.last_ack_sent and self.acks_sent:
            self.dup_acks_sent += 1
        self._out.append(
            Segment(self.port, self.peer_port, self.snd_nxt if seq is None else seq,
                    self.rcv_nxt, flags, window, o)
        )
        self.acks_sent += 1
        self.last_ack_sent = self.rcv_nxt
        self._wup = self._nxt
        self._dsack = None
        self._delack_at = None
        if self._ack_pending:
            self._ack_pending = False
            if self._quick:
                self._quick -= 1  # tcp_dec_quickack_mode()
