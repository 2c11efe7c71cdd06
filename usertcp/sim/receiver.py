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

Reassembly, SACK/D-SACK, the advertised window and the ACK timing are `usertcp.engine.receive`'s
(`ReceiveBuffer` with a `DelayedAck`), the same code the engine's own receive side uses; this
module keeps what only the simulated peer needs: its passive open, timestamps/PAWS, the ACK
field, its own FIN and the timer that retransmits it, the "application" (a hashing sink that
reads at once, or not until `read()`), and counters for tests.

The buffer's sequence space is absolute byte offsets from IRS+1 ("abs", 0 = the first data
byte) so that range arithmetic is plain integer arithmetic; conversion to and from 32-bit
sequence numbers goes through `seq.add` / `seq.diff`.
"""

from __future__ import annotations

import hashlib

from ..engine.receive import ACK_FIN, DelayedAck, ReceiveBuffer
from ..segment import F_ACK, F_FIN, F_RST, F_SYN, Flags, Options, Segment
from ..seq import add, diff, ge, gt, le, lt

LISTEN = "LISTEN"
SYN_RECEIVED = "SYN-RECEIVED"
ESTABLISHED = "ESTABLISHED"
CLOSE_WAIT = "CLOSE-WAIT"
LAST_ACK = "LAST-ACK"
CLOSED = "CLOSED"

# Flag tests use plain ints (segment.F_*): `IntFlag.__and__` costs about a microsecond per call.
_F_ACK, _F_SYNACK, _F_FINACK = Flags.ACK, Flags.SYN | Flags.ACK, Flags.FIN | Flags.ACK
_F_RST, _F_RSTACK = Flags.RST, Flags.RST | Flags.ACK
_DEFAULT_MSS = 536  # RFC 9293 §3.7.1: assumed when the SYN carries no MSS option


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
        self._base = 0  # sequence number of abs 0 (IRS+1)

        self._hash = hashlib.sha256()
        self.data: bytearray | None = bytearray() if keep else None
        # The receive side proper; replaced on the SYN, once the options are negotiated.
        self._rb = self._receive_buffer()
        self._sack_limit = 4

        self._rtx_at: float | None = None
        self._rto = 0.0
        self._retries = 0
        self._close_at: float | None = None
        self._out: list[Segment] = []

        # Counters, for tests and reports (more in the properties below, kept by the buffer).
        self.segments_received = 0
        self.acks_sent = 0
        self.dup_acks_sent = 0  # ACKs sent without new data acknowledged
        self.paws_dropped = 0
        self.no_ts_dropped = 0
        self.ignored = 0
        self.synacks_sent = 0
        self.fins_sent = 0
        self.rsts_sent = 0

    def _receive_buffer(self) -> ReceiveBuffer:
        """The buffer for this connection's negotiated options, in abs offsets (0 = IRS+1).

        The sink's application either reads everything at once (`reading`: the hash sees the
        bytes as they come in order, nothing waits in the buffer) or not until `read()` (the
        bytes wait, and the window closes)."""
        if self.data is None:
            on_data = self._hash.update  # a C method: no Python frame per delivery
        else:
            h, data = self._hash, self.data

            def on_data(b, _update=h.update, _data=data):
                _update(b)
                _data.extend(b)

        self._acks = DelayedAck(self.delack, self.quickack, self.mss)
        return ReceiveBuffer(
            0, self.rcv_buf, wscale=self.rcv_wscale, sack=self.sack_ok, dsack=self.dsack,
            shrink_window=self.shrink_window, store=not self.reading, on_data=on_data,
            acks=self._acks,
        )

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
    def reading(self) -> bool:
        """The sink reads everything at once; False: nothing until `read()` (tests switch it)."""
        return self._reading

    @reading.setter
    def reading(self, value: bool) -> None:
        self._reading = value
        rb = self.__dict__.get("_rb")
        if rb is not None:
            rb.store = not value  # bytes already waiting stay until read()

    @property
    def bytes_received(self) -> int:
        """In-order bytes received (read by the sink or not)."""
        return self._rb.delivered

    @property
    def unread(self) -> int:
        """In-order bytes not yet read by the application (reading=False)."""
        return self._rb.unread

    @property
    def rcv_mss(self) -> int:
        """Estimate of the sender's segment size (Linux's icsk_ack.rcv_mss)."""
        return self._rb.acks.rcv_mss

    @property
    def ooo_bytes(self) -> int:
        return self._rb.ooo_bytes

    @property
    def ooo_segments(self) -> int:
        return self._rb.ooo_segments

    @property
    def dup_bytes(self) -> int:
        return self._rb.dup_bytes

    @property
    def dsacks_sent(self) -> int:
        return self._rb.dsacks_sent

    @property
    def beyond_window_bytes(self) -> int:
        """Bytes beyond any right edge we ever advertised: a sender bug."""
        return self._rb.beyond_window_bytes

    @property
    def shrunk_window_bytes(self) -> int:
        """Bytes allowed once, dropped after the window shrank."""
        return self._rb.shrunk_window_bytes

    @property
    def _adv_max(self) -> int:
        return self._rb.adv_max  # abs: the furthest right edge ever advertised

    def sack_blocks(self) -> list[tuple[int, int]]:
        """Out-of-order blocks held, as sequence-number pairs, lowest first."""
        b = self._base
        return [(add(b, s), add(b, e)) for s, e in self._rb.ooo_ranges()]

    def transmit(self, now: float) -> list[Segment]:
        out = self._out
        if out:
            self._out = []
        return out

    def deadline(self) -> float | None:
        d = self._acks.deadline
        for t in (self._rtx_at, self._close_at):
            if t is not None and (d is None or t < d):
                d = t
        return d

    def on_timer(self, now: float) -> None:
        if self._rb.ack_due(now) and self.state in (ESTABLISHED, CLOSE_WAIT):
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
        rb = self._rb
        take = rb.discard(n)
        if self.state in (ESTABLISHED, CLOSE_WAIT) and take and rb.window_update_due():
            self._send_ack(now)
        if self.state == CLOSE_WAIT and rb.unread == 0 and self._close_at is None:
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
            if not flags & F_RST:
                self._send_rst_for(seg)
            return

        if flags & F_SYN:
            if state == SYN_RECEIVED and seg.seq == self.irs and not flags & F_ACK:
                self._send_synack(now)  # the SYN-ACK was lost: the sender retransmitted its SYN
            elif not flags & F_RST:
                self._send_ack(now)  # RFC 5961 §4.2: challenge ACK for any other SYN
            return

        ts = seg.options.ts
        if self.ts_ok and not flags & F_RST:
            if ts is None:
                self.no_ts_dropped += 1  # RFC 7323 §3.2
                return
            if lt(ts[0], self.ts_recent):
                self.paws_dropped += 1  # RFC 7323 §5.3 R1: drop, but acknowledge
                self._send_ack(now)
                return

        # RFC 9293 §3.10.7.4, first check: is the segment acceptable? (In abs offsets.)
        rb = self._rb
        fin = flags & F_FIN
        slen = len(seg.payload) + (1 if fin else 0)
        off = diff(seg.seq, self.rcv_nxt)
        rel = rb.rcv_nxt + off
        if not rb.acceptable(rel, slen):
            if flags & F_RST:
                return
            if slen:
                # Entirely old: a retransmission of data we have, D-SACKed (RFC 2883 §4), and
                # Linux re-enters quick-ACK mode; or right of the window: counted, dropped.
                rb.segment(rel, seg.payload, fin, now)
            self._send_ack(now)
            return

        if flags & F_RST:
            if self.challenge_ack and off != 0:
                self._send_ack(now)
            else:
                self._abort(reset=True)
            return
        if not flags & F_ACK:
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
            # In CLOSE-WAIT and LAST-ACK nothing new can follow the FIN: the buffer answers
            # "ACK now" without taking anything.
            verdict = rb.segment(rel, seg.payload, fin, now)
            self.rcv_nxt = add(self._base, rb.rcv_nxt)
            if verdict == ACK_FIN:
                self._consume_fin(now)
            elif verdict:
                self._send_ack(now)

    # ------------------------------------------------------------------ connection setup

    def _listen(self, seg: Segment, now: float) -> None:
        flags = int(seg.flags)
        if flags & F_RST:
            return
        if flags & F_ACK:
            self._send_rst_for(seg)  # RFC 9293 §3.10.7.2
            return
        if not flags & F_SYN:
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
        self._sack_limit = 3 if self.ts_ok else 4  # 40 option bytes: 12 for TS, 4 + 8n for SACK
        self._rb = self._receive_buffer()
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
        window = self._rb.initial_window()  # RFC 7323 §2.2: never scaled on a SYN-ACK
        self.last_ack_sent = self.rcv_nxt
        self.snd_nxt = add(self.iss, 1)
        self._out.append(Segment(self.port, self.peer_port, self.iss, self.rcv_nxt, _F_SYNACK, window, o))
        self.synacks_sent += 1

    # ------------------------------------------------------------------ closing

    def _consume_fin(self, now: float) -> None:
        self.got_fin = True
        self.state = CLOSE_WAIT
        unread = self._rb.unread
        if self.close_delay == 0 and unread == 0:
            self._send_fin(now)  # the application closed at once: the FIN carries the ACK
        else:
            self._send_ack(now)
            if unread == 0:
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
        self._rtx_at = self._close_at = None
        self._acks.deadline = None

    def _send_rst_for(self, seg: Segment) -> None:
        """RFC 9293 §3.10.7.1: the reset that answers a segment for no connection."""
        if int(seg.flags) & F_ACK:
            rst = Segment(self.port, seg.sport, seg.ack, 0, _F_RST, 0)
        else:
            rst = Segment(self.port, seg.sport, 0, add(seg.seq, seg.seg_len), _F_RSTACK, 0)
        self._out.append(rst)
        self.rsts_sent += 1

    # ------------------------------------------------------------------ ACKs and the window

    def _tsval(self, now: float) -> int:
        return (self.ts_offset + int(now * self.ts_hz + 1e-9)) & 0xFFFFFFFF

    def _send_ack(self, now: float, seq: int | None = None, flags: Flags = _F_ACK) -> None:
        o = Options()
        if self.ts_ok:
            o.ts = (self._tsval(now), self.ts_recent)
        _, window, blocks = self._rb.ack(self._sack_limit, self._base)
        if blocks:
            o.sack = blocks
        if self.rcv_nxt == self.last_ack_sent and self.acks_sent:
            self.dup_acks_sent += 1
        self._out.append(
            Segment(self.port, self.peer_port, self.snd_nxt if seq is None else seq,
                    self.rcv_nxt, flags, window, o)
        )
        self.acks_sent += 1
        self.last_ack_sent = self.rcv_nxt
