"""One TCP connection, sans-I/O: a sender first, and a correct receiver of what the peer sends.

The connection takes segments and timer expiries with the time they happen, and answers with
transmissions and its next deadline. It never reads a clock, touches a socket or sleeps, so the
same object runs in virtual time under the simulator and in real time under the event loop.

What it does, and where:

- Opening: active (`connect`, RFC 9293 §3.10.7.3) or passive (`accept`, §3.10.7.2), with MSS,
  window scale, SACK-permitted, timestamps (RFC 7323, RFC 2018) and ECN (RFC 3168 §6.1.1)
  negotiated; SYN and SYN-ACK retried with backoff, then a clear error.
- Sending: within min(cwnd, peer window), in GSO super-segments, paced when the controller sets
  a pacing rate (`pacing`, ~1 ms super-segments); the source may grow (`stream.SendStream`).
- Everything in flight lives in the SACK scoreboard (`scoreboard`, RFC 6675), which takes the
  peer's SACK blocks. With SACK, RACK-TLP (RFC 8985, `rack`) detects losses and sends tail loss
  probes; recovery is RFC 6675 §5 with PRR (RFC 6937) deciding how much leaves per ACK
  (`_sack_recovery`, `_send_lost`); an RTO resends what the scoreboard holds lost, never what
  the peer SACKed. Without SACK: NewReno (RFC 6582, `recovery`) and go-back-N after a timeout.
- Spurious reductions are undone (`_check_undo`): D-SACK (RFC 3708), timestamps (RFC 3522),
  F-RTO (RFC 5682). RFC 6298 RTO with backoff and a give-up limit.
- Every ACK with news yields a delivery-rate sample (`rate`, Linux tcp_rate.c) for the controller.
- Input checks: PAWS (RFC 7323 §5), RFC 5961 for RST, SYN and ACK, answers rate-limited.
- Receiving (`engine.receive`): reassembly, SACK and D-SACK blocks, delayed ACKs, a window that
  follows what the application has read; FIN close and TIME-WAIT.

Sequence numbers inside are *relative and unbounded* (our ISS is 0, the peer's is 0 on the
receive side); they are turned into 32-bit wire values only when a segment is built or parsed.
Data byte k of the source is relative sequence 1 + k; the FIN is 1 + source.size.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from time import perf_counter
from enum import Enum
from typing import Any

from .. import seq as wire
from ..cc import guard
from ..cc.api import AckSample, CongestionControl, CongestionEvent, UndoEvent
from ..segment import F_ACK, F_CWR, F_ECE, F_FIN, F_RST, F_SYN, OPT_NOP, OPT_TIMESTAMP, Flags, Options, Segment, Transmission
from ..sources import Source
from .pacing import Pacer, default_rate, pacing_in_slow_start
from .prr import Prr
from .rack import Rack
from .rate import RateEstimator, RateSample
from .receive import ACK_FIN, DelayedAck, ReceiveBuffer
from .recovery import DUPACK_THRESHOLD, NewRenoRecovery
from .rtt import RttEstimator
from .scoreboard import AckResult, Scoreboard

MASK = 0xFFFFFFFF
IPV4_TCP_HEADERS = 40  # IPv4 + TCP headers without options
GSO_MAX_IP_LEN = 65535  # an IPv4 total length field caps a GSO super-segment
TS_OPTION_LEN = 12  # NOP NOP kind len TSval TSecr (RFC 7323 Appendix A layout)
DEFAULT_PEER_MSS = 536  # RFC 9293 §3.7.1: assume 536 when the peer sends no MSS option
# With SACK: "rack" (RFC 8985 RACK-TLP, the default, as in Linux since 4.18) or "dupthresh"
# (RFC 6675's IsLost() alone, no loss probes). Without SACK, NewReno's duplicate ACKs.
LOSS_DETECTORS = ("rack", "dupthresh")
_TS_OPTION = struct.Struct("!BBBBII")
# Answers to out-of-window segments, PAWS rejects and RFC 5961 challenges: at most one per this
# interval per connection (Linux's net.ipv4.tcp_invalid_ratelimit default, tcp_oow_rate_limited),
# so that a stream of bogus or reordered segments cannot make us send a stream of ACKs.
OOW_ACK_INTERVAL = 0.5
PAWS_IDLE_LIMIT = 24 * 24 * 3600.0  # RFC 7323 §5.5: TS.Recent older than 24 days is invalid


class State(Enum):
    CLOSED = "CLOSED"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME-WAIT"
    CLOSE_WAIT = "CLOSE-WAIT"
    LAST_ACK = "LAST-ACK"


# States in which our side may still send data (RFC 9293 §3.3.2).
_CAN_SEND = {State.ESTABLISHED, State.CLOSE_WAIT}
# States reached after our FIN went out.
_FIN_SENT_STATES = {State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSING, State.TIME_WAIT, State.LAST_ACK}


@dataclass(frozen=True, slots=True)
class Event:
    """Something the application may want to know: `established`, `delivered` (value: bytes of
    source data acknowledged so far), `peer_fin`, `closed`, `error` (value: a reason),
    `cc_error` (value: the exception text; the connection fell back to NewReno)."""

    kind: str
    time: float
    value: Any = None


_PER_ACK_HOOKS = frozenset({"on_ack", "cong_control", "on_mss_change"})


class Connection:
    """A TCP sender for one source. See the module docstring for what it implements."""

    def __init__(
        self,
        local: tuple[str, int],
        remote: tuple[str, int],
        cc: CongestionControl,
        source: Source,
        *,
        iss: int = 0,
        now: float = 0.0,
        mss: int = 1460,
        wscale: int = 7,
        rcv_wnd: int = 4 << 20,
        sack: bool = True,
        timestamps: bool = True,
        gso_max: int = 65536,
        time_wait: float = 60.0,
        fin_timeout: float = 60.0,
        syn_retries: int = 6,
        max_retries: int = 15,
        rtt: RttEstimator | None = None,
        close_at_end: bool = True,
        loss_detection: str = "rack",
        pacing: bool = False,
        ecn: bool = False,
        cc_time_limit: float = guard.DEFAULT_TIME_LIMIT,
        cc_log: Any = None,
    ) -> None:
        if loss_detection not in LOSS_DETECTORS:
            raise ValueError(f"loss_detection must be one of {', '.join(LOSS_DETECTORS)}, not {loss_detection!r}")
        self.local, self.remote = local, remote
        self._set_cc(cc)
        self.cc_time_limit = cc_time_limit
        self.cc_log = cc_log
        """Called with one dict per ACK with news and per congestion event: the controller's
        window, pacing rate and own `state()`, with the engine's RTT, in-flight and recovery
        state (see `_log_cc`). None: no log, no cost."""
        guard.WATCHDOG.start()
        self.source = source
        self.iss = iss & MASK
        self.irs = 0
        self.mss = mss  # the MSS we announce (our MTU - 40)
        self.rcv_wscale = wscale
        self.rcv_wnd = rcv_wnd
        self.want_sack, self.want_ts, self.want_ecn = sack, timestamps, ecn
        self.gso_max = gso_max
        self.time_wait = time_wait
        # FIN-WAIT-2 lasts until the peer's FIN, which a peer that never closes never sends:
        # give up after this long (Linux's net.ipv4.tcp_fin_timeout, 60 s), without error.
        self.fin_timeout = fin_timeout
        self.syn_retries, self.max_retries = syn_retries, max_retries
        self.rtt = rtt or RttEstimator()
        self.close_at_end = close_at_end

        self.state = State.CLOSED
        # Send sequence variables (relative; RFC 9293 §3.3.1 names).
        self.snd_una = 0
        self.snd_nxt = 0
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.snd_wscale = 0
        self.data_end = 1 + source.size  # relative sequence of our FIN (while the source grows, of its end)
        self.fin_sent = False
        # A source that grows (`stream.SendStream`: a server's responses) says so with
        # `finished`; one that can drop what the peer has acknowledged has `release`.
        self._grows = hasattr(source, "finished")
        self._release = getattr(source, "release", None)
        # Receive side (relative to the peer's ISS).
        self.rcv_nxt = 0
        self.fin_received = False
        # What the peer sends us (reassembly, SACK blocks, our window, delayed ACKs): made once
        # the handshake fixes window scaling and SACK (`_negotiate`).
        self.rcvq: ReceiveBuffer | None = None
        # Negotiated.
        self.peer_mss = DEFAULT_PEER_MSS
        self.send_mss = DEFAULT_PEER_MSS  # payload bytes per wire segment
        self.sack_ok = False
        self.ts_ok = False
        self.wscale_ok = False
        # ECN (RFC 3168): negotiated in the handshake (§6.1.1). As a sender: ECT(0) on new data,
        # ECE on an ACK starts one window reduction per window (`ecn_recover`), CWR on the next
        # new data. As a receiver: CE on data makes every ACK carry ECE until CWR arrives.
        self.ecn_ok = False
        self.ecn_recover = 0
        self._cwr_pending = False
        self._ece_echo = False
        self.ecn_reductions = 0
        self.ce_received = 0
        self.ts_recent = 0
        self.ts_recent_time = now  # when TS.Recent was last set (RFC 7323 §5.5)
        self.last_ack_sent = 0
        self.max_snd_wnd = 0  # the largest window the peer offered (RFC 5961 §5.2 MAX.SND.WND)
        self._oow_ack_time: float | None = None
        self.paws_rejected = 0
        # Our timestamp clock ticks in microseconds, as Linux's does with TCP_USEC_TS (6.7+):
        # on a lab path RTTs are tens of microseconds, which a 1 ms clock cannot resolve.
        self.ts_offset = (iss * 2654435761) & MASK

        # Everything in flight, with what the peer SACKed (RFC 6675); its smss is set once the
        # handshake fixes send_mss.
        self.loss_detection = loss_detection
        self.scoreboard = Scoreboard(DEFAULT_PEER_MSS, snd_una=1, use_islost=loss_detection != "rack")
        # RACK-TLP (RFC 8985) decides what is lost and when to probe; used with SACK only (as in
        # Linux, whose tcp_identify_packet_loss() runs RACK only for SACK connections).
        self.rack = Rack(self.scoreboard) if loss_detection == "rack" else None
        self.reo_deadline: float | None = None  # RACK reordering timer (RFC 8985 §6.2 step 5)
        self.pto_deadline: float | None = None  # TLP probe timeout (RFC 8985 §7.2)
        self._tlp_due = False
        # After an RTO with SACK: RTO recovery (RFC 6675 §5.1, Linux's TCP_CA_Loss) until the
        # cumulative ACK passes `recovery.recover`; lost data is resent by the scoreboard within cwnd.
        self.in_loss = False
        # Delivery-rate estimation (Linux tcp_rate.c): every transmission carries a snapshot in
        # its scoreboard record; every ACK with news yields `rate_sample`.
        self.rate = RateEstimator()
        self.rate_sample: RateSample | None = None
        # Undo of spurious reductions (Linux tcp_init_undo / tcp_try_undo_*). An episode starts
        # when a recovery or timeout reduces the window; `undo_retrans` counts the bytes
        # retransmitted (in it, or still out from an earlier one) that no D-SACK has yet shown to
        # be duplicates (RFC 3708 §3); `retrans_stamp` is the time of the first retransmission
        # that may still be answered (RFC 3522's Eifel test): it survives into the next episode
        # while retransmissions are out (`_retrans_stamp_cleanup`).
        self.undo_marker: int | None = None
        self.undo_retrans = 0
        self.retrans_stamp: float | None = None
        self.prior_cwnd = self.prior_ssthresh = 0
        # F-RTO (RFC 5682 §3, SACK-enhanced; Linux's tcp_process_loss): 1 after a timeout's
        # retransmission, 2 while new data probes whether the timeout was genuine, 0 when off.
        self.frto = 0
        self.undos = 0
        self.cc_faults = 0  # hooks that failed (the controller was replaced by NewReno)
        self._last_data_sent: float | None = None  # Linux's lsndtime, for the idle restart
        self._idle_reported: float | None = None
        # Pacing (Linux's internal pacing, tcp_output.c): at the controller's pacing_rate when it
        # sets one, else, with pacing=True, at tcp_update_pacing_rate()'s default. The pacer also
        # sizes super-segments to ~1 ms of data (tcp_tso_autosize) so that paced sending is smooth.
        self.pacing = pacing
        self.pacer = Pacer(self.mss)
        self._pacing_held = False  # transmit() stopped for the pacer: its release time is a deadline
        self.recovery = NewRenoRecovery()
        # SACK loss recovery (RFC 6675 §5) with PRR (RFC 6937) sending; used when SACK was
        # negotiated, NewReno's `recovery` otherwise. `prr` is set while in recovery; `sndcnt`
        # is what PRR allows to leave before the next ACK.
        self.prr: Prr | None = None
        self.sndcnt = 0
        self.sack_dupacks = 0
        self.rtx_next: int | None = None  # go-back-N pointer after a timeout
        self.pending_rtx: int | None = None  # fast retransmit of one segment at this sequence
        self.syn_pending = False
        self.ack_pending = False
        self.retries = 0
        self.syn_retransmitted = False
        self.rto_deadline: float | None = None
        self.persist_deadline: float | None = None
        self.persist_backoff = 0
        self.tw_deadline: float | None = None
        self.first_partial_ack_done = False
        self._probe_due = False
        self._syn_time = now

        # Counters for summaries and traces.
        self.bytes_sent = 0  # payload bytes handed to the datapath, retransmissions included
        self.bytes_retrans = 0
        self.segments_out = 0  # transmissions (a GSO super-segment counts once)
        self.fast_retransmits = 0
        self.timeouts = 0
        self.tlp_probes = 0
        self.tlp_recoveries = 0  # probes that repaired a tail loss (RFC 8985 §7.4)
        self.established_at: float | None = None
        self.closed_at: float | None = None
        self.error: str | None = None
        self._events: list[Event] = []

    # ------------------------------------------------------------------ public API

    def connect(self, now: float) -> None:
        """Active open (RFC 9293 §3.10.1): queue a SYN and arm its retransmission timer."""
        if self.state is not State.CLOSED:
            raise RuntimeError(f"connect() in state {self.state.value}")
        self.state = State.SYN_SENT
        self.snd_una, self.snd_nxt = 0, 1
        self.syn_pending = True
        self.rto_deadline = now + self.rtt.rto

    def read(self, n: int | None = None) -> bytes:
        """Up to `n` bytes (all if None) of the in-order data the peer sent (RFC 9293 RECEIVE).
        Reading frees receive window; the peer hears of it at once when that matters (Linux's
        tcp_cleanup_rbuf: a held-back ACK, or a window that at least doubles)."""
        rcvq = self.rcvq
        if rcvq is None or not rcvq.unread:
            return b""
        data = rcvq.read(n)
        if rcvq.ack_after_read():
            self.ack_pending = True
        return data

    @property
    def peer_data(self) -> int:
        """Bytes the peer sent that were taken in order."""
        return self.rcvq.delivered if self.rcvq is not None else 0

    def shutdown(self) -> None:
        """The application has nothing more to send: a FIN follows the last byte of the source
        (RFC 9293 §3.10.4 CLOSE). Connections made with close_at_end do this by themselves."""
        self.close_at_end = True

    def events(self) -> list[Event]:
        out, self._events = self._events, []
        return out

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED and self.closed_at is not None

    @property
    def delivered(self) -> int:
        """Source bytes cumulatively acknowledged by the peer."""
        return max(0, min(self.snd_una, self.data_end) - 1)

    @property
    def flight_size(self) -> int:
        """Bytes sent and not cumulatively acknowledged (RFC 5681 §2 FlightSize)."""
        return self.snd_nxt - self.snd_una

    @property
    def pipe(self) -> int:
        """What counts against the window: after a timeout only what was resent since
        (everything older is presumed lost, as BSD's go-back-N and Linux's tcp_enter_loss do);
        with SACK, RFC 6675 §4 SetPipe from the scoreboard; else FlightSize."""
        if self.rtx_next is not None:
            return self.rtx_next - self.snd_una
        if self.sack_ok:
            return self.scoreboard.pipe()
        return self.snd_nxt - self.snd_una

    @property
    def recovering(self) -> bool:
        """In a loss recovery of any kind: SACK fast recovery (`prr`), RTO recovery with SACK
        (`in_loss`), NewReno fast recovery, or go-back-N after a timeout (`rtx_next`)."""
        return self.prr is not None or self.in_loss or self.recovery.in_recovery or self.rtx_next is not None

    @property
    def _prr_paces(self) -> bool:
        """PRR's sndcnt is the sending budget: in SACK fast recovery, unless the controller
        owns the window (cong_control)."""
        return self.prr is not None and not self._cc_owns_window

    @property
    def cwnd(self) -> int:
        """The window in force: NewReno's inflated one during fast recovery, else the CC's."""
        if self._cc_owns_window:
            return int(self.cc.cwnd)  # cong_control: the controller's window, in recovery too
        if self.prr is not None:
            return self.pipe + self.sndcnt  # PRR (RFC 6937): what may be in flight after this ACK
        return self.recovery.cwnd if self.recovery.in_recovery else int(self.cc.cwnd)

    def deadline(self) -> float | None:
        """The earliest time `on_timer` (or, for the pacer, `transmit`) has work to do.
        Called by the event loop after every step, so it is written out rather than built
        from a list."""
        d = self.rto_deadline
        for t in (self.reo_deadline, self.pto_deadline, self.persist_deadline, self.tw_deadline):
            if t is not None and (d is None or t < d):
                d = t
        if self._pacing_held:
            t = self.pacer.next_send_time()
            if t is not None and (d is None or t < d):
                d = t
        rcvq = self.rcvq
        if rcvq is not None and rcvq.ack_deadline is not None and self.state is not State.CLOSED:
            t = rcvq.ack_deadline  # the delayed ACK
            if d is None or t < d:
                d = t
        return d

    def abort(self, now: float) -> list[Transmission]:
        """Give up at once: one RST for the peer (RFC 9293 §3.10.5 ABORT), then CLOSED."""
        out = []
        if self.state not in (State.CLOSED, State.SYN_SENT, State.TIME_WAIT):
            out.append(self._segment(self.snd_nxt, Flags.RST | Flags.ACK, now))
        self._close(now, error="aborted")
        return out

    def stats(self) -> dict:
        return {
            "state": self.state.value,
            "delivered": self.delivered,
            "bytes_sent": self.bytes_sent,
            "bytes_retrans": self.bytes_retrans,
            "segments_out": self.segments_out,
            "fast_retransmits": self.fast_retransmits,
            "timeouts": self.timeouts,
            "tlp_probes": self.tlp_probes,
            "tlp_recoveries": self.tlp_recoveries,
            "undos": self.undos,
            "ecn": self.ecn_ok,
            "ecn_reductions": self.ecn_reductions,
            "loss_detection": self.loss_detection if self.sack_ok else "newreno",
            "cwnd": self.cwnd,
            "ssthresh": self.cc.ssthresh,
            "srtt": self.rtt.srtt,
            "rttvar": self.rtt.rttvar,
            "min_rtt": self.rtt.min_rtt,
            "rto": self.rtt.rto,
            "send_mss": self.send_mss,
            "snd_wnd": self.snd_wnd,
            "sendq_records": len(self.scoreboard),
            "sendq_peak_bytes": self.scoreboard.peak_memory,
            "sacked_bytes": self.scoreboard.sacked_bytes,
            "delivery_rate": self.rate.delivery_rate,
        }

    # ------------------------------------------------------------------ input

    def receive(self, seg: Segment, now: float) -> None:
        """Process one incoming segment (RFC 9293 §3.10.7)."""
        if self.state is State.CLOSED:
            return
        if self.state is State.SYN_SENT:
            self._receive_in_syn_sent(seg, now)
            return
        if self.state is State.SYN_RECEIVED and not self._receive_in_syn_received(seg, now):
            return
        flags = int(seg.flags)  # plain int: this is the per-ACK path
        seq_rel = self.rcv_nxt + wire.diff(seg.seq, (self.irs + self.rcv_nxt) & MASK)

        opts = seg.options
        if self.ts_ok and not flags & F_RST:
            if opts.ts is None:
                return  # RFC 7323 §3.2: once negotiated, a non-RST segment without TSopt is dropped
            if wire.lt(opts.ts[0], self.ts_recent) and now - self.ts_recent_time < PAWS_IDLE_LIMIT:
                # PAWS (RFC 7323 §5.3 R1): an older timestamp marks an old duplicate segment.
                self.paws_rejected += 1
                self._oow_ack(now)
                return
        if flags & F_RST:
            self._receive_rst(seq_rel, now)
            return
        if flags & F_SYN:
            # A retransmitted SYN-ACK means our handshake ACK was lost: answer with an ACK.
            # Any other SYN in a synchronized state gets a challenge ACK (RFC 5961 §4.2).
            self._oow_ack(now)
            return
        if not self._acceptable(seq_rel, seg.seg_len):
            # RFC 9293 §3.10.7.4: answer an unacceptable segment with an ACK. An old duplicate
            # of data gets its D-SACK (RFC 2883 §4) and is not rate-limited: data segments are
            # no part of an ACK loop (Linux's tcp_oow_rate_limited() exempts them too).
            if seg.payload or flags & F_FIN:
                self.rcvq.segment(seq_rel, seg.payload, bool(flags & F_FIN), now)
                self.ack_pending = True
            else:
                self._oow_ack(now)
            return
        if self.ts_ok:
            # RFC 7323 §4.3 (3): remember the peer's TSval of the segment that covers Last.ACK.sent.
            if seq_rel <= self.last_ack_sent and wire.ge(opts.ts[0], self.ts_recent):
                self.ts_recent = opts.ts[0]
                self.ts_recent_time = now
        if not flags & F_ACK:
            return
        ack_rel = self.snd_una + wire.diff(seg.ack, (self.iss + self.snd_una) & MASK)
        if ack_rel > self.snd_nxt or ack_rel < self.snd_una - self.max_snd_wnd:
            # RFC 5961 §5.2: an ACK outside [SND.UNA - MAX.SND.WND, SND.NXT] is dropped and
            # answered (with a challenge ACK), not acted on: it may be forged.
            self._oow_ack(now)
            return
        if self.ecn_ok and (seg.payload or flags & F_FIN):
            # RFC 3168 §6.1.3: CWR ends our echo; CE (on this very segment too) starts it.
            if flags & F_CWR:
                self._ece_echo = False
            if seg.ecn == 3:
                self.ce_received += 1
                self._ece_echo = True
                self.ack_pending = True
        window = seg.window << self.snd_wscale
        window_changed = window != self.snd_wnd
        self._update_window(seq_rel, ack_rel, window)
        blocks = self._sack_blocks(opts)
        rtt_samples_before = self.rtt.samples
        sacked_before = self.scoreboard.sacked_bytes
        snd_una_before = self.snd_una
        delivered_before = sacked_before + snd_una_before
        advanced = ack_rel > self.snd_una
        prior_in_flight = self.pipe
        result = self.scoreboard.on_ack(max(ack_rel, self.snd_una), blocks, now) if advanced or blocks else None
        if result is not None:
            for rec in result.delivered:  # draft-cheng-iccrg-delivery-rate-estimation, per packet
                if rec.rate is not None:
                    self.rate.on_delivered(rec.rate, now, rec.end - rec.start, is_retrans=rec.retrans > 0)
        acked_for_cc = None
        if advanced:
            acked_for_cc = self._new_ack(ack_rel, opts, result, now)
        elif (
            ack_rel == self.snd_una
            and not seg.payload
            and not flags & F_FIN
            and not window_changed
            and self.snd_nxt > self.snd_una
            and self.snd_wnd > 0
        ):
            # RFC 5681 §2 DUPLICATE ACKNOWLEDGMENT, all five conditions; with a zero window
            # the repeats are answers to our window probes, not signs of loss.
            self._duplicate_ack(now)
        if self.state is not State.CLOSED:
            self._check_undo(result, opts, advanced, now)
        if self.sack_ok and self.state is not State.CLOSED:
            if self.rack is not None and result is not None:
                self._rack_on_ack(result, opts, now)
            # DeliveredData (RFC 6937 §2): the change in snd_una plus the change in SACKed bytes.
            delivered = self.scoreboard.sacked_bytes + self.snd_una - delivered_before
            self._sack_recovery(now, delivered, advanced)
            if advanced:
                self._arm_pto(now)
        if result is not None:
            # After loss detection, as Linux's tcp_rate_gen() follows tcp_fastretrans_alert().
            self.rate_sample = self.rate.generate(
                now, self.scoreboard.lost_total, prior_in_flight=prior_in_flight, min_rtt=self.rtt.min_rtt
            )
        if self.ecn_ok and flags & F_ECE and self._ecn_reduce(now):
            acked_for_cc = None  # the reducing ACK grows nothing (Linux: CWR state, no cong_avoid)
        if self.state is not State.CLOSED and (
            (acked_for_cc is not None and self.prr is None) or (self._cc_owns_window and result is not None)
        ):
            # Window growth comes last and only outside recovery (Linux's tcp_cong_control():
            # cong_avoid in the Open state, PRR's reduction while recovering) -- unless the
            # controller owns the window (cong_control), which then sees every ACK with news.
            rs = self.rate_sample
            acked = max(0, min(ack_rel, self.data_end) - max(snd_una_before, 1))
            sample = AckSample(
                now=now,
                acked_bytes=acked_for_cc if acked_for_cc is not None else acked,
                rtt=self.rtt.latest_rtt if self.rtt.samples != rtt_samples_before else None,
                srtt=self.rtt.srtt,
                min_rtt=self.rtt.min_rtt,
                bytes_in_flight=self.pipe,
                mss=self.send_mss,
                app_limited=self._app_limited(),
                rate=rs,
                ece=bool(flags & F_ECE),
                sacked_bytes=max(0, self.scoreboard.sacked_bytes - sacked_before),
                lost_bytes=rs.losses if rs is not None and result is not None else 0,
                in_recovery=self.recovering,
                delivered_total=self.rate.delivered,
            )
            self._cc_call("cong_control" if self._cc_owns_window else "on_ack", sample)
        if self.cc_log is not None and result is not None and self.state is not State.CLOSED:
            self._log_cc("ack", now)
        self._receive_data(seg, seq_rel, now)

    def _receive_in_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 §3.10.7.3: the reply to our SYN."""
        flags = seg.flags
        if flags & Flags.ACK and seg.ack != (self.iss + 1) & MASK:
            return  # not for our SYN; RFC would answer with a RST, but nothing of ours is at stake
        if flags & Flags.RST:
            if flags & Flags.ACK:
                self._close(now, error="refused")
            return
        if not (flags & Flags.SYN and flags & Flags.ACK):
            return  # simultaneous open is not supported by a sender-only stack
        self._negotiate(seg)
        self.snd_una = 1
        self.snd_wl1, self.snd_wl2 = 0, 1
        self.ack_pending = True
        self._established(seg.options, now)

    def accept(self, syn: Segment, now: float) -> None:
        """Passive open (RFC 9293 §3.10.7.2, a SYN reaching a LISTEN): take the peer's SYN, answer
        with a SYN-ACK carrying only the options the peer offered (RFC 7323 §2.2 and §3.2, RFC
        2018 §2), and wait in SYN-RECEIVED for the ACK of it. The listener (not this object)
        decides which SYNs become connections."""
        if self.state is not State.CLOSED or self.closed_at is not None:
            raise RuntimeError(f"accept() in state {self.state.value}")
        if not syn.flags & Flags.SYN or syn.flags & (Flags.ACK | Flags.RST | Flags.FIN):
            raise ValueError("accept() takes a bare SYN")
        self._negotiate(syn)
        self.snd_una, self.snd_nxt = 0, 1
        self.snd_wl1 = self.snd_wl2 = 0
        self.state = State.SYN_RECEIVED
        self.syn_pending = True
        self._syn_time = now
        self.rto_deadline = now + self.rtt.rto

    def _negotiate(self, syn: Segment) -> None:
        """What the peer's SYN or SYN-ACK settles: its ISS, MSS, window and the options both
        sides use (RFC 9293 §3.7.1, RFC 7323 §2.2 and §3.2, RFC 2018 §2)."""
        opts = syn.options
        self.irs = syn.seq
        self.rcv_nxt = 1
        self.peer_mss = opts.mss if opts.mss else DEFAULT_PEER_MSS
        # RFC 7323 §2.2: scaling applies in both directions only if both sides sent the option.
        self.wscale_ok = opts.wscale is not None
        if self.wscale_ok:
            self.snd_wscale = opts.wscale
        else:
            self.snd_wscale = self.rcv_wscale = 0
        self.sack_ok = self.want_sack and opts.sack_permitted
        self.ts_ok = self.want_ts and opts.ts is not None
        # RFC 3168 §6.1.1: an "ECN-setup SYN" has ECE and CWR, an "ECN-setup SYN-ACK" ECE only.
        ece_cwr = syn.flags & (Flags.ECE | Flags.CWR)
        self.ecn_ok = self.want_ecn and ece_cwr == (Flags.ECE if syn.flags & Flags.ACK else Flags.ECE | Flags.CWR)
        if self.ts_ok:
            self.ts_recent = opts.ts[0]
        self.max_snd_wnd = syn.window
        self.send_mss = min(self.peer_mss, self.mss) - (TS_OPTION_LEN if self.ts_ok else 0)
        self.snd_wnd = syn.window  # never scaled in a SYN (RFC 7323 §2.2)
        self.rcvq = ReceiveBuffer(1, self.rcv_wnd, wscale=self.rcv_wscale, sack=self.sack_ok,
                                  acks=DelayedAck(mss=self.mss))
        if syn.flags & Flags.ACK:
            self.rcvq.initial_window()  # the window our SYN announced, unscaled

    def _established(self, opts: Options, now: float) -> None:
        """The handshake is complete: the first RTT sample, then ESTABLISHED."""
        if self.ts_ok and opts.ts is not None and opts.ts[1]:
            self.rtt.sample(self._ts_age(opts.ts[1], now))
        elif not self.syn_retransmitted:
            self.rtt.sample(now - self._syn_time)
        self.rtt.reset_backoff()
        self.retries = 0
        self.state = State.ESTABLISHED
        self.established_at = now
        self.syn_pending = False
        self.rto_deadline = None
        self.scoreboard.smss = self.pacer.mss = self.send_mss
        self._cc_call("on_mss_change", self.send_mss)
        self._events.append(Event("established", now))

    def _receive_in_syn_received(self, seg: Segment, now: float) -> bool:
        """RFC 9293 §3.10.7.4 in SYN-RECEIVED. Returns True when the segment completed the
        handshake and should go on to the synchronized-state processing (it may carry data)."""
        flags = seg.flags
        if flags & Flags.RST:
            if seg.seq == (self.irs + 1) & MASK:
                self._close(now, error="reset")  # RFC 5961 §3.2: exact match only
            return False
        if flags & Flags.SYN:
            if seg.seq == self.irs:
                self.syn_pending = True  # the peer did not get our SYN-ACK: send it again
            return False  # a SYN with another sequence is a new incarnation or forged: ignore
        if not flags & Flags.ACK or seg.ack != (self.iss + 1) & MASK:
            return False
        self.snd_una = 1
        self._established(seg.options, now)
        return True

    def _receive_rst(self, seq_rel: int, now: float) -> None:
        """RFC 5961 §3.2: reset only on an exact match with rcv_nxt; in window, challenge ACK."""
        if seq_rel == self.rcv_nxt:
            if self.state is State.TIME_WAIT:
                self._close(now)  # RFC 1337 would ignore it; Linux closes TIME-WAIT on RST too
            else:
                self._close(now, error="reset")
        elif self._acceptable(seq_rel, 1):
            self._oow_ack(now)  # RFC 5961 §3.2: in the window but not exact: challenge ACK

    def _oow_ack(self, now: float) -> None:
        """Answer a segment we will not act on with an ACK, rate-limited (OOW_ACK_INTERVAL)."""
        if self._oow_ack_time is None or now - self._oow_ack_time >= OOW_ACK_INTERVAL:
            self._oow_ack_time = now
            self.ack_pending = True

    def _acceptable(self, seq_rel: int, seg_len: int) -> bool:
        """RFC 9293 §3.10.7.4 segment acceptability test against the window we advertised."""
        if self.rcvq is not None:
            return self.rcvq.acceptable(seq_rel, seg_len)
        wnd = self.rcv_wnd
        if seg_len == 0:
            return self.rcv_nxt <= seq_rel < self.rcv_nxt + wnd or seq_rel == self.rcv_nxt
        end = seq_rel + seg_len - 1
        return (self.rcv_nxt <= seq_rel < self.rcv_nxt + wnd) or (self.rcv_nxt <= end < self.rcv_nxt + wnd)

    def _update_window(self, seq_rel: int, ack_rel: int, window: int) -> None:
        """RFC 9293 §3.10.7.4: take the window from the newest segment (SND.WL1/SND.WL2 rule)."""
        if self.snd_wl1 < seq_rel or (self.snd_wl1 == seq_rel and self.snd_wl2 <= ack_rel):
            opened = window > self.snd_wnd
            self.snd_wnd = window
            if window > self.max_snd_wnd:
                self.max_snd_wnd = window
            self.snd_wl1, self.snd_wl2 = seq_rel, ack_rel
            if opened and window > 0:
                self.persist_deadline = None
                self.persist_backoff = 0

    def _sack_blocks(self, opts: Options) -> list[tuple[int, int]]:
        """The peer's SACK blocks (RFC 2018 §3) in relative sequence space, unwrapped around
        snd_una; empty unless SACK was negotiated."""
        if not (self.sack_ok and opts.sack):
            return []
        base = (self.iss + self.snd_una) & MASK
        return [(self.snd_una + wire.diff(left, base), self.snd_una + wire.diff(right, base))
                for left, right in opts.sack]

    def _new_ack(self, ack_rel: int, opts: Options, result: AckResult, now: float) -> int | None:
        """An ACK that advanced snd_una: RTT, timers, NewReno's partial and full ACKs. Returns
        the data bytes it acknowledged when the controller's `on_ack` should see it (outside
        any recovery), else None."""
        newly_acked = ack_rel - self.snd_una
        self.snd_una = ack_rel
        if self._release is not None:
            self._release(min(ack_rel, self.data_end) - 1)  # acknowledged bytes are never read again
        # The newest range this ACK acknowledged cumulatively (SACKed pieces lie above it).
        newest = None
        for rec in result.delivered:
            if rec.end <= ack_rel:
                newest = rec
        # RTT (RFC 7323 §4.1: TSecr of an ACK that advances the left edge; without timestamps,
        # the send time of a never-retransmitted segment, RFC 6298 §3 / Karn's rule).
        if self.ts_ok and opts.ts is not None and opts.ts[1]:
            self.rtt.sample(self._ts_age(opts.ts[1], now))
        elif newest is not None and not newest.retrans:
            self.rtt.sample(now - newest.xmit_time)
        self.rtt.reset_backoff()
        self.retries = 0
        if self.rtx_next is not None:
            if self.rtx_next < self.snd_una:
                self.rtx_next = self.snd_una
            if self.rtx_next >= self.snd_nxt:
                self.rtx_next = None  # everything outstanding at the timeout has been resent
        if self.pending_rtx is not None and self.pending_rtx < self.snd_una:
            self.pending_rtx = None

        outcome = self.recovery.on_new_ack(ack_rel, newly_acked, self.send_mss)
        restart_timer = True
        acked_for_cc = None
        if self.prr is not None:
            pass  # SACK recovery: no window growth until it ends (_sack_recovery)
        elif outcome == "partial":
            # RFC 6582 §3.2 step 3: retransmit the first unacknowledged segment; reset the timer
            # on the first partial ACK only ("Impatient" variant, as RFC 6582 §4.1 recommends).
            self.pending_rtx = self.snd_una
            restart_timer = not self.first_partial_ack_done
            self.first_partial_ack_done = True
        elif outcome == "full":
            self._cc_call("on_recovery_exit", now, self.flight_size)
        else:
            acked_for_cc = max(0, min(ack_rel, self.data_end) - max(ack_rel - newly_acked, 1))
        self._events.append(Event("delivered", now, self.delivered))

        if self.fin_sent and self.snd_una > self.data_end:
            self._our_fin_acked(now)
        if self.snd_una >= self.snd_nxt:
            self.rto_deadline = None  # RFC 6298 §5.2
            self.reo_deadline = self.pto_deadline = None
        elif restart_timer:
            self.rto_deadline = now + self.rtt.rto  # RFC 6298 §5.3
        return acked_for_cc

    def _duplicate_ack(self, now: float) -> None:
        if self.sack_ok:
            self.sack_dupacks += 1  # counted for RFC 6675 §5; _sack_recovery decides
            return

        def enter() -> int:
            self._congestion_event(now, "dupack")
            return int(self.cc.ssthresh)

        if self.recovery.on_duplicate_ack(self.snd_una, self.snd_nxt, enter, self.send_mss):
            # RFC 5681 §3.2 step 2 / RFC 6582 §3.2 step 1: retransmit the lost segment.
            self.fast_retransmits += 1
            self.first_partial_ack_done = False
            self.pending_rtx = self.snd_una

    def _rack_on_ack(self, result: AckResult, opts: Options, now: float) -> None:
        """RFC 8985 §6.2 for one ACK with news, then §7.4 (did a loss probe repair a loss?).

        The recovery state RACK sees is the one before this ACK (§6.2 step 4 asks whether the ACK
        ends a recovery); `_sack_recovery` acts on the losses RACK marks right after.
        """
        rack = self.rack
        in_recovery = self.recovering
        tsecr_time = None
        if self.ts_ok and opts.ts is not None and opts.ts[1]:
            tsecr_time = now - self._ts_age(opts.ts[1], now)
        self.reo_deadline = rack.on_ack(
            result.delivered,
            now,
            min_rtt=self.rtt.min_rtt,
            srtt=self.rtt.srtt,
            dsack=result.dsack,
            in_recovery=in_recovery,
            exiting_recovery=in_recovery and self.snd_una >= self.recovery.recover,
            tsecr_time=tsecr_time,
        )
        if self.reo_deadline is not None:
            self.pto_deadline = None  # one timer at a time (RFC 8985 §8): the reordering timer first
        if rack.tlp_on_ack(self.snd_una, dsack_range=result.dsack_range):
            # §7.4.1: the probe repaired a tail loss. Nothing is left to resend, but the loss
            # happened: reduce as for any loss, in one step (Linux's tcp_process_tlp_ack, CWR).
            self.tlp_recoveries += 1
            self._congestion_event(now, "tlp")
            self._cc_call("on_recovery_exit", now, self.flight_size)

    def _congestion_event(self, now: float, cause: str) -> None:
        if cause != "ecn":  # a CE mark is not a loss guess that could turn out spurious
            self._start_undo_episode()
        self._cc_call(
            "on_congestion_event",
            CongestionEvent(now=now, bytes_in_flight=self.flight_size, mss=self.send_mss, cause=cause),
        )

    def _sack_recovery(self, now: float, delivered: int, advanced: bool) -> None:
        """RFC 6675 §5 loss recovery driven by the scoreboard, sending paced by PRR.

        Enter when the loss detector has marked data lost: RACK (RFC 8985 §6.2), or with
        ``loss_detection="dupthresh"`` DupThresh duplicate ACKs or IsLost() for the first
        unacknowledged segment, the latter once per window (the RFC 6582 `recover` guard, shared
        with NewReno, which an RTO also sets). RACK needs no guard: a recovery ends only when
        everything sent before it is acknowledged, so what RACK marks next belongs to a later
        window. Leave when the cumulative ACK reaches the RecoveryPoint (HighData at entry, RFC
        6675 §5 step (4.1)); the CC then sets the window. RTO recovery (`in_loss`) ends at the
        same point and leaves the window to the CC's slow start.
        """
        sb = self.scoreboard
        if advanced:
            self.sack_dupacks = 0
        if self.in_loss:
            if self.snd_una < self.recovery.recover and self.snd_nxt > self.snd_una:
                return
            self.in_loss = False
        if self.prr is not None:
            if self.snd_una < self.recovery.recover:
                self.sndcnt = self.prr.on_ack(delivered, sb.pipe(), snd_una_advanced=advanced)
                return
            self.prr = None
            self.sndcnt = 0
            self._cc_call("on_recovery_exit", now, self.flight_size)
        if self.rtx_next is not None or self.snd_nxt <= self.snd_una:
            return
        if self.rack is not None:
            if sb.lost_bytes == 0:
                return
        else:
            head = sb.head()
            if not (self.sack_dupacks >= DUPACK_THRESHOLD or (head is not None and head.lost)):
                return
            if self.snd_una <= self.recovery.recover:
                return
            # Step (4.3): retransmit the first unacknowledged segment, also when IsLost() marked
            # it already but an earlier send of it (a window probe) is still counted as out.
            sb.mark_lost(self.snd_una)
        self._enter_sack_recovery(now, delivered)

    def _ecn_reduce(self, now: float) -> bool:
        """RFC 3168 §6.1.2: ECE asks for the response to a loss, once per window of data and not
        on top of a loss recovery; the controller picks ssthresh (``cause="ecn"``, which DCTCP
        answers with its alpha, RFC 8257 §3.3), the window drops to it at once, and the next new
        data carries CWR. Returns whether the window was reduced."""
        if self.snd_una <= self.ecn_recover or self.recovering or self.state is State.CLOSED:
            return False
        self._congestion_event(now, "ecn")
        self._cc_call("on_recovery_exit", now, self.flight_size)
        self.ecn_recover = self.snd_nxt
        self._cwr_pending = True
        self.ecn_reductions += 1
        return True

    def _start_undo_episode(self) -> None:
        """Remember the window before a reduction (Linux tcp_init_undo and prior_ssthresh =
        tcp_current_ssthresh()), so that a spurious one can be taken back."""
        cwnd, ssthresh = int(self.cc.cwnd), int(self.cc.ssthresh)
        self.prior_cwnd = cwnd
        self.prior_ssthresh = max(ssthresh, cwnd * 3 // 4)
        self.undo_marker = self.snd_una
        # Retransmissions of an earlier episode still in flight may be D-SACKed later: they
        # count, as Linux's tcp_init_undo starts undo_retrans at retrans_out.
        self.undo_retrans = self.scoreboard.retrans_out_bytes
        self._retrans_stamp_cleanup()

    def _retrans_stamp_cleanup(self) -> None:
        """Forget `retrans_stamp` only when no retransmission can still be answered (Linux
        tcp_retrans_stamp_cleanup, which tcp_enter_recovery calls since the 2024 fix "zero
        retrans_stamp when it's safe"). Back-to-back recoveries on a shallow queue otherwise
        restart the clock while a retransmission of the previous episode is in flight; its ACK
        echoes a timestamp older than the new episode's first retransmission, and the Eifel test
        takes a genuine loss for a delayed packet. That undid hundreds of real reductions per
        minute of a CUBIC flow on a 1-BDP queue."""
        head = self.scoreboard.head()
        if self.scoreboard.retrans_out_bytes == 0 and (head is None or not head.retrans):
            self.retrans_stamp = None

    def _check_undo(self, result: AckResult | None, opts: Options, advanced: bool, now: float) -> None:
        """Was the episode's reduction spurious? Three signals, each for the case it covers:
        every retransmission D-SACKed (RFC 3708 §3), an ACK that advances snd_una echoing the
        timestamp of an original transmission sent before the first retransmission (RFC 3522
        §3.2, Linux's tcp_packet_delayed()), or, after a timeout, original data (s)acked (RFC
        5682 §3, `_frto_on_ack`).

        The timestamp test on a partial ACK of a fast recovery (one below the recovery point)
        undoes only when no retransmission is in flight, as Linux's tcp_try_undo_partial: the
        hole was filled by a delayed original, but a retransmission still out may yet show
        another hole that was a real loss. An ACK that ends the recovery, or any advancing ACK
        after a timeout, undoes on the test alone (tcp_try_undo_recovery, tcp_try_undo_loss)."""
        if self.undo_marker is None:
            return
        if result is not None and result.dsack and result.dsack_range[0] >= self.undo_marker:
            left, right = result.dsack_range
            self.undo_retrans -= right - left
            if self.undo_retrans <= 0 and self.retrans_stamp is not None:
                self._undo(now, "dsack")
                return
        if (
            advanced
            and (self.prr is not None or self.in_loss or self.recovery.in_recovery)
            and self.retrans_stamp is not None
            and self.ts_ok
            and opts.ts is not None
            and opts.ts[1]
            and now - self._ts_age(opts.ts[1], now) < self.retrans_stamp - 1e-6
            and (
                self.in_loss
                or self.snd_una >= self.recovery.recover
                or self.scoreboard.retrans_out_bytes == 0
            )
        ):
            self._undo(now, "timestamp")
            return
        if self.in_loss and self.frto and result is not None:
            self._frto_on_ack(result, advanced, now)

    def _frto_on_ack(self, result: AckResult, advanced: bool, now: float) -> None:
        """RFC 5682 §3.1 (SACK-enhanced F-RTO) as Linux's tcp_process_loss() runs it.

        Step 3.b: original data sent before the timeout and never retransmitted is (s)acked, so
        not everything was lost: the timeout was spurious. Step 2.b: the first ACK that advances
        snd_una lets new data go out instead of more retransmissions (`transmit` holds them back
        while `frto == 2`). Step 3.a: if the ACK after that brings SACKs or is a duplicate, the
        loss was real and RTO recovery resends as usual."""
        recover = self.recovery.recover
        if any(not rec.retrans and rec.end <= recover for rec in result.delivered):
            self._undo(now, "frto")
            return
        if self.frto == 2 and self.snd_nxt > recover:
            if result.sacked_bytes or not advanced:
                self.frto = 0
        elif self.frto == 1 and advanced and self.snd_una < recover:
            if self.state in _CAN_SEND and self.data_end > self.snd_nxt and self.snd_una + self.snd_wnd > self.snd_nxt:
                self.recovery.recover = self.snd_nxt  # Linux: high_seq = snd_nxt
                self.frto = 2
            else:
                self.frto = 0

    def _undo(self, now: float, cause: str) -> None:
        """Take back the episode's reduction (Linux tcp_undo_cwnd_reduction): the controller
        restores its window, recovery ends, and what was presumed lost is in flight again (a
        real loss among it is found anew by RACK or an RTO)."""
        self.undos += 1
        self._cc_call("on_undo", UndoEvent(now, self.prior_cwnd, self.prior_ssthresh, cause))
        self.prr = None
        self.sndcnt = 0
        self.in_loss = False
        self.frto = 0
        self.recovery.in_recovery = False
        self.rtx_next = None
        self.scoreboard.clear_lost()
        self.undo_marker = None
        self._retrans_stamp_cleanup()
        self.rtt.reset_backoff()
        self._events.append(Event("undo", now, cause))

    def _enter_sack_recovery(self, now: float, delivered: int) -> None:
        self._congestion_event(now, "dupack")
        self.recovery.recover = self.snd_nxt
        self.prr = Prr(self.send_mss, whole_segments=True)
        self.prr.enter(int(self.cc.ssthresh), self.flight_size, now)
        self.fast_retransmits += 1
        self.first_partial_ack_done = False
        self.pto_deadline = None
        self.sndcnt = self.prr.on_ack(delivered, self.scoreboard.pipe(), snd_una_advanced=False)

    def _arm_pto(self, now: float) -> None:
        """RFC 8985 §7.2: after new data is sent or an ACK advances snd_una, schedule a loss
        probe, unless recovering, a reordering timer runs, or the peer's window is closed (then
        the zero-window probe is the RTO's job)."""
        rack = self.rack
        if (
            rack is None
            or not self.sack_ok
            or self.recovering
            or self.reo_deadline is not None
            or self.snd_wnd == 0
            or self.state not in _CAN_SEND and self.state not in _FIN_SENT_STATES
        ):
            self.pto_deadline = None
            return
        self.pto_deadline = rack.schedule_pto(
            now, srtt=self.rtt.srtt, rto_expire=self.rto_deadline, in_recovery=False, flight_size=self.flight_size
        )

    def _receive_data(self, seg: Segment, seq_rel: int, now: float) -> None:
        """The peer's data and FIN go to the receive side (`rcvq`), which reassembles them,
        keeps what the application has not read, and says when to acknowledge."""
        fin = bool(int(seg.flags) & F_FIN)
        if not (seg.payload or fin):
            return
        answer = self.rcvq.segment(seq_rel, seg.payload, fin, now)
        self.rcv_nxt = self.rcvq.rcv_nxt
        if answer:
            self.ack_pending = True
        if answer == ACK_FIN and not self.fin_received:
            self.fin_received = True
            self._events.append(Event("peer_fin", now))
            if self.state is State.ESTABLISHED:
                self.state = State.CLOSE_WAIT
            elif self.state is State.FIN_WAIT_1:
                self.state = State.CLOSING  # our FIN not yet acked (else we'd be in FIN-WAIT-2)
            elif self.state is State.FIN_WAIT_2:
                self._enter_time_wait(now)

    def _our_fin_acked(self, now: float) -> None:
        if self.state is State.FIN_WAIT_1:
            self.state = State.FIN_WAIT_2
            self.tw_deadline = now + self.fin_timeout  # cleared into TIME-WAIT by the peer's FIN
        elif self.state is State.CLOSING:
            self._enter_time_wait(now)
        elif self.state is State.LAST_ACK:
            self._close(now)

    def _enter_time_wait(self, now: float) -> None:
        self.state = State.TIME_WAIT
        self.rto_deadline = None
        self.persist_deadline = None
        self.tw_deadline = now + self.time_wait

    def _close(self, now: float, error: str | None = None) -> None:
        self.state = State.CLOSED
        self.rto_deadline = self.persist_deadline = self.tw_deadline = None
        self.closed_at = now
        if error is not None:
            self.error = error
            self._events.append(Event("error", now, error))
        self._events.append(Event("closed", now, error))

    # ------------------------------------------------------------------ timers

    def on_timer(self, now: float) -> None:
        if self.tw_deadline is not None and now >= self.tw_deadline:
            self._close(now)
            return
        if self.rcvq is not None and self.rcvq.ack_due(now):
            self.ack_pending = True
        if self.persist_deadline is not None and now >= self.persist_deadline:
            self._persist_timeout(now)
        if self.rto_deadline is not None and now >= self.rto_deadline:
            self._retransmission_timeout(now)
            return
        if self.reo_deadline is not None and now >= self.reo_deadline:
            self._reorder_timeout(now)
        if self.pto_deadline is not None and now >= self.pto_deadline:
            self.pto_deadline = None
            self._tlp_due = True  # transmit() sends the probe (RFC 8985 §7.3)

    def _reorder_timeout(self, now: float) -> None:
        """RFC 8985 §6.2 step 5: the reordering window of a pending segment has passed; mark
        what is lost now and re-arm for the rest. Losses start recovery as an ACK's would (Linux's
        tcp_rack_reo_timeout counts one delivered segment for PRR)."""
        in_recovery = self.recovering
        self.reo_deadline = self.rack.on_timer(now, in_recovery=in_recovery, srtt=self.rtt.srtt)
        if self.scoreboard.lost_bytes and not in_recovery:
            self._enter_sack_recovery(now, self.send_mss)
        elif self.prr is not None and self.rack.last_marked:
            self.sndcnt = self.prr.on_ack(self.send_mss, self.scoreboard.pipe(), snd_una_advanced=False)

    def _retransmission_timeout(self, now: float) -> None:
        """RFC 6298 §5.4–5.6, RFC 5681 §3.1 (loss window), RFC 6582 §3.2 step 4."""
        self.rto_deadline = None
        if self.state in (State.SYN_SENT, State.SYN_RECEIVED):
            self.retries += 1
            if self.retries > self.syn_retries:
                passive = self.state is State.SYN_RECEIVED
                self._close(now, error="handshake timeout" if passive else "connect timeout")
                return
            self.rtt.back_off()
            self.syn_pending = self.syn_retransmitted = True
            self.rto_deadline = now + self.rtt.rto
            return
        if self.snd_una >= self.snd_nxt:
            return
        self.retries += 1
        if self.retries > self.max_retries:
            self._close(now, error="timeout")
            return
        self.rtt.back_off()
        if self.snd_wnd == 0:
            # The outstanding byte is a zero-window probe: the peer is alive and has no room.
            # Probe again with backoff and leave the congestion state alone (RFC 9293 §3.8.6.1).
            self.retries -= 1
            self.pending_rtx = self.snd_una
            self.rto_deadline = now + self.rtt.rto
            return
        self.timeouts += 1
        episode = self.in_loss or self.rtx_next is not None
        if not episode:
            self._start_undo_episode()
        # F-RTO only on a timeout that starts an episode, with SACK (RFC 5682 §3; a re-expiry
        # means the retransmission was lost too, which is not what F-RTO tests).
        self.frto = 1 if self.sack_ok and not episode else 0
        self._cc_call("on_rto", now, self.flight_size)
        self.recovery.on_timeout(self.snd_nxt)
        self.prr = None
        self.sndcnt = 0
        self.sack_dupacks = 0
        self.pending_rtx = None
        self.reo_deadline = self.pto_deadline = None
        self._tlp_due = False
        if self.sack_ok:
            # RTO recovery with the scoreboard: what is presumed lost is resent in order as cwnd
            # allows (transmit's `_send_lost`); SACKed data is not resent.
            if self.rack is not None:
                self.rack.on_rto(now)  # RFC 8985 §6.3: the head, and what is older than RACK.rtt
            else:
                self.scoreboard.mark_lost(self.snd_una, self.snd_nxt)  # RFC 6675 §5.1: all of it
            self.in_loss = True
        else:
            self.rtx_next = self.snd_una  # go-back-N (RFC 5681 §3.1 resends from snd_una)
        self.rto_deadline = now + self.rtt.rto  # RFC 6298 §5.6

    def _persist_timeout(self, now: float) -> None:
        """The peer's window is zero and nothing is in flight: send one byte beyond the window
        so the peer has to answer with its current window (RFC 9293 §3.8.6.1)."""
        self.persist_deadline = None
        self.persist_backoff += 1
        self._probe_due = True

    # ------------------------------------------------------------------ output

    def transmit(self, now: float) -> list[Transmission]:
        """Everything that should leave now, in order."""
        out: list[Transmission] = []
        state = self.state
        if state is State.CLOSED:
            return out
        self._pacing_held = False
        self._update_pacing_rate()
        if self._grows and not self.fin_sent:
            self.data_end = 1 + self.source.size
            if self.source.finished:
                self.close_at_end = True
        if state in (State.SYN_SENT, State.SYN_RECEIVED):
            if self.syn_pending:
                self.syn_pending = False
                if not self.syn_retransmitted:
                    self._syn_time = now
                out.append(self._syn(now))
            return out

        if self.pending_rtx is not None:
            start, self.pending_rtx = self.pending_rtx, None
            if start < self.snd_nxt:
                out.append(self._retransmit(start, self.send_mss, now))
        if self._tlp_due:
            self._tlp_due = False
            self._send_probe(out, now)
        if self.prr is not None or (self.in_loss and self.frto != 2):
            self._send_lost(out, now)
        if self.rtx_next is not None:
            self._go_back_n(out, now)
        new_before = self.snd_nxt
        if self.rtx_next is None and state in _CAN_SEND:
            if self.snd_nxt == self.snd_una and self.data_end > self.snd_nxt:
                if self._restart_after_idle(now):
                    self._update_pacing_rate()  # the controller may have set a new rate
            self._send_new(out, now)
        if self._probe_due:
            self._probe_due = False
            if not out and self.snd_nxt < self.data_end:
                out.append(self._new_data(1, now))
        if self.ack_pending and not out and state is not State.CLOSED:
            out.append(self._segment(self.snd_nxt, Flags.ACK, now))
        if out:
            self.ack_pending = False
            self.last_ack_sent = self.rcv_nxt
        if self.rto_deadline is None and self.snd_nxt > self.snd_una:
            self.rto_deadline = now + self.rtt.rto  # RFC 6298 §5.1
        if self.snd_nxt > new_before and self.sack_ok:
            self._arm_pto(now)  # RFC 8985 §7.2: new data went out
        pending = self.data_end - self.snd_nxt
        if pending < self.send_mss and state in _CAN_SEND:
            # Out of data with room in the window: samples from here until this flight is
            # delivered may understate the path (Linux tcp_rate_check_app_limited()).
            sb = self.scoreboard
            self.rate.mark_app_limited(
                self.pipe, self.cwnd, max(pending, 0), self.send_mss, max(0, sb.lost_bytes - sb.retrans_out_bytes)
            )
        self._arm_persist(now)
        return out

    def _restart_after_idle(self, now: float) -> bool:
        """New data is about to leave with nothing in flight: tell the controller how long the
        sender was idle (Linux's CA_EVENT_TX_START, with tcp_cwnd_restart() as the hook's
        default), once per idle period. Not before the first data, and not when the peer's
        window, not the application, kept us idle."""
        last = self._last_data_sent
        if last is None or self._idle_reported == last or self.snd_wnd == 0:
            return False
        self._idle_reported = last
        self._cc_call("on_idle_restart", now, now - last, self.rtt.rto)
        return True

    def _update_pacing_rate(self) -> None:
        rate = self.cc.pacing_rate
        if rate is None and self.pacing and self.state in _CAN_SEND | _FIN_SENT_STATES:
            cwnd = int(self.cc.cwnd)
            rate = default_rate(cwnd, self.rtt.srtt, pacing_in_slow_start(cwnd, self.cc.ssthresh),
                                in_flight=self.flight_size)
        if rate != self.pacer.rate:
            self.pacer.set_rate(rate)

    def _paced(self, now: float) -> bool:
        """May a data segment leave now? If not, remember that the pacer's time is a deadline."""
        if self.pacer.can_send(now):
            return True
        self._pacing_held = True
        return False

    def _on_sent(self, tx: Transmission, now: float) -> None:
        """Book a data transmission with the pacer: its payload bytes, as Linux's EDT pacing
        books ``skb->len`` of the write-queue skb (headers are pushed on the clone that is sent)
        in tcp_update_skb_after_send(). So a pacing rate is a rate of payload, the unit BBR's
        bandwidth estimate and Linux's default rate are in; the wire carries ~3.5% more."""
        if self.pacer.rate is not None:
            self.pacer.on_send(now, tx.length)

    def _send_probe(self, out: list[Transmission], now: float) -> None:
        """RFC 8985 §7.3: the PTO fired. Send one segment of new data if the peer's window has
        room for it (cwnd does not count here), else resend the last segment; then the RTO, not
        another PTO, guards the flight. A FIN alone is never the probe: the last data segment goes
        with it, so that a lost tail is SACKed into view."""
        new = 0
        if self.state in _CAN_SEND:
            new = min(self.data_end - self.snd_nxt, self.snd_una + self.snd_wnd - self.snd_nxt)
        probe = self.rack.tlp_probe(new_data=max(new, 0), max_len=self.send_mss)
        if probe is None:
            return
        self.tlp_probes += 1
        if not probe.is_retrans:
            out.append(self._new_data(probe.end - probe.start, now))
        else:
            start = probe.start
            if start >= self.data_end and self.data_end > self.snd_una:
                start = max(self.snd_una, self.data_end - self.send_mss)
            out.append(self._retransmit(start, probe.end - start, now))
        self.rto_deadline = now + self.rtt.rto

    def _send_lost(self, out: list[Transmission], now: float) -> None:
        """Resend what NextSeg rules (1) and (3) pick (RFC 6675 §4) within the budget: PRR's
        sndcnt in fast recovery, cwnd - pipe in RTO recovery. New data (rule (2)) is left to
        _send_new, which the same budget bounds. Rule (3), resending unsacked data nobody declared
        lost, is RFC 6675's; with RACK as the detector only marked losses are resent, as Linux's
        tcp_xmit_retransmit_queue() does."""
        mss = self.send_mss
        max_payload = self._max_payload()
        rule3 = self.rack is None and self.prr is not None
        while True:
            budget = self.sndcnt if self._prr_paces else self.cwnd - self.pipe
            if not (budget >= mss or (budget > 0 and self.pipe == 0)):
                break
            limit = max(mss, min(max_payload, budget - budget % mss))
            ns = self.scoreboard.next_seg(limit, rule3=rule3)
            if ns is None or ns.rule == 2 or not self._paced(now):
                break
            tx = self._retransmit(ns.start, ns.end - ns.start, now)
            self._on_sent(tx, now)
            out.append(tx)
            if self.prr is not None:
                sent = max(tx.length, 1)
                self.sndcnt -= sent
                self.prr.on_sent(sent)

    def _usable(self) -> int:
        """Bytes of new sequence space we may send now: min(cwnd, peer window) minus in flight."""
        by_cwnd = self.sndcnt if self._prr_paces else self.cwnd - self.pipe
        by_rwnd = self.snd_una + self.snd_wnd - self.snd_nxt
        return min(by_cwnd, by_rwnd)

    def _max_payload(self) -> int:
        """The largest GSO super-segment: whole segments, within the IPv4 length field, and
        when paced about 1 ms of data at the pacing rate (the pacer's tcp_tso_autosize)."""
        opt = TS_OPTION_LEN if self.ts_ok else 0
        limit = min(self.gso_max, GSO_MAX_IP_LEN - IPV4_TCP_HEADERS - opt)
        limit = max(self.send_mss, limit - limit % self.send_mss)
        quantum = self.cc.send_quantum
        if quantum is not None:  # the controller's own choice (Linux: ca_ops->tso_segs)
            return max(self.send_mss, min(limit, quantum - quantum % self.send_mss))
        if self.pacer.rate is not None:
            return self.pacer.burst_bytes(limit, self.rtt.min_rtt)
        return limit

    def _send_new(self, out: list[Transmission], now: float) -> None:
        mss = self.send_mss
        max_payload = self._max_payload()
        last_new: Transmission | None = None
        while True:
            remaining = self.data_end - self.snd_nxt
            if remaining <= 0:
                break
            usable = self._usable()
            n = min(usable, remaining, max_payload)
            if n < remaining:
                # Sender-side silly window avoidance (RFC 9293 §3.8.6.2.1): full segments only,
                # unless nothing is in flight (then anything the window allows goes).
                n -= n % mss
                if n <= 0:
                    if self.pipe == 0 and usable > 0:
                        n = min(usable, remaining, mss)
                    else:
                        break
            if not self._paced(now):
                break
            last_new = self._new_data(n, now)
            self._on_sent(last_new, now)
            out.append(last_new)
        if (
            self.close_at_end
            and not self.fin_sent
            and self.snd_nxt == self.data_end
            and self.state in _CAN_SEND
        ):
            if last_new is not None:
                last_new.flags |= Flags.FIN  # piggyback on the last data segment, as Linux does
            else:
                out.append(self._segment(self.snd_nxt, Flags.FIN | Flags.ACK, now))
            self.scoreboard.send(self.snd_nxt, self.snd_nxt + 1, now, fin=True)
            self._fin_queued()

    def _fin_queued(self) -> None:
        self.fin_sent = True
        self.snd_nxt += 1
        self.state = State.FIN_WAIT_1 if self.state is State.ESTABLISHED else State.LAST_ACK

    def _new_data(self, n: int, now: float) -> Transmission:
        if self.prr is not None:
            self.sndcnt -= n
            self.prr.on_sent(n)
        start = self.snd_nxt
        tx = self._segment(start, Flags.ACK | Flags.PSH, now, length=n)
        if self.ecn_ok and self.snd_wnd > 0:  # RFC 3168 §6.1.5/6.1.6: not on probes or resends
            tx.ecn = 2
            if self._cwr_pending:
                tx.flags |= Flags.CWR  # §6.1.2: the first new data after a reduction
                self._cwr_pending = False
        self.scoreboard.send(start, start + n, now, rate=self.rate.on_send(now, start - self.snd_una, size=n))
        self.snd_nxt += n
        self.bytes_sent += n
        self._last_data_sent = now
        return tx

    def _retransmit(self, start: int, limit: int, now: float) -> Transmission:
        """Resend [start, start+limit) from the source, plus the FIN if it falls inside."""
        n = max(0, min(limit, self.data_end - start, self.snd_nxt - start))
        flags = Flags.ACK
        if n:
            flags |= Flags.PSH
        if self.fin_sent and start + n == self.data_end and start + n < self.snd_nxt:
            flags |= Flags.FIN
        tx = self._segment(start, flags, now, length=n, retransmit=True)
        span = n + (1 if flags & Flags.FIN else 0)
        if self.undo_marker is not None and self.recovering:
            self.undo_retrans += n
            if self.retrans_stamp is None:
                self.retrans_stamp = now
        snapshot = self.rate.on_send(now, self.snd_nxt - self.snd_una, size=span)
        self.scoreboard.mark_retransmitted(start, start + span, now, rate=snapshot)
        self.bytes_sent += n
        self.bytes_retrans += n
        self._last_data_sent = now
        return tx

    def _go_back_n(self, out: list[Transmission], now: float) -> None:
        """After a timeout, resend the outstanding range in order as the window allows."""
        max_payload = self._max_payload()
        while self.rtx_next is not None and self.rtx_next < self.snd_nxt:
            room = self.cwnd - self.pipe
            if room <= 0:
                break
            start = self.rtx_next
            n = min(room, max_payload, max(0, self.data_end - start))
            if n < self.data_end - start:
                n = max(n - n % self.send_mss, min(self.send_mss, self.data_end - start))
            if not self._paced(now):
                break
            tx = self._retransmit(start, n, now)
            self._on_sent(tx, now)
            out.append(tx)
            self.rtx_next = start + tx.seg_len
            if tx.seg_len == 0:
                break
        if self.rtx_next is not None and self.rtx_next >= self.snd_nxt:
            self.rtx_next = None

    def _arm_persist(self, now: float) -> None:
        """RFC 9293 §3.8.6.1: with a zero window, nothing in flight and data waiting, probe."""
        if (
            self.snd_wnd == 0
            and self.snd_nxt == self.snd_una
            and self.snd_nxt < self.data_end
            and self.state in _CAN_SEND
            and self.persist_deadline is None
        ):
            self.persist_deadline = now + min(self.rtt.base_rto * (1 << self.persist_backoff), self.rtt.max_rto)

    def _app_limited(self) -> bool:
        return self.snd_nxt >= self.data_end and self.pipe < self.cwnd

    # ------------------------------------------------------------------ segment building

    def _ts_now(self, now: float) -> int:
        return (int(now * 1_000_000) + self.ts_offset) & MASK

    def _ts_age(self, tsecr: int, now: float) -> float:
        """Seconds since we sent the TSval the peer echoes (RFC 7323 §4.1)."""
        return ((self._ts_now(now) - tsecr) & MASK) / 1_000_000

    def _syn(self, now: float) -> Transmission:
        """Our SYN offers every option we want; a SYN-ACK only those the peer's SYN offered."""
        ts = self._ts_now(now)
        if self.state is State.SYN_RECEIVED:
            opts = Options(
                mss=self.mss,
                wscale=self.rcv_wscale if self.wscale_ok else None,
                sack_permitted=self.sack_ok,
                ts=(ts, self.ts_recent) if self.ts_ok else None,
            )
            seq, ack, flags = self.iss, (self.irs + 1) & MASK, Flags.SYN | Flags.ACK
            if self.ecn_ok:
                flags |= Flags.ECE
        else:
            opts = Options(
                mss=self.mss,
                wscale=self.rcv_wscale,
                sack_permitted=self.want_sack,
                ts=(ts, 0) if self.want_ts else None,
            )
            seq, ack, flags = self.iss, 0, Flags.SYN
            if self.want_ecn:
                flags |= Flags.ECE | Flags.CWR
        self.segments_out += 1
        # RFC 7323 §2.2: the window field of a SYN is never scaled.
        window = self.rcvq.initial_window() if self.rcvq is not None else min(self.rcv_wnd, 65535)
        return Transmission(seq=seq, ack=ack, flags=flags, window=window, options=opts.encode())

    def _segment(
        self, start: int, flags: Flags, now: float, *, length: int = 0, retransmit: bool = False
    ) -> Transmission:
        rcvq = self.rcvq
        blocks = ()
        if rcvq is not None:
            # Every segment carries our ACK, so each one takes the receive side's fields. SACK
            # blocks ride on segments without data only: send_mss leaves room for timestamps
            # alone, and GSO repeats the options on every wire segment.
            _, window, blocks = rcvq.ack(0 if length else (3 if self.ts_ok else 4), wire=self.irs)
        else:
            window = min(self.rcv_wnd >> self.rcv_wscale, 65535)
        if blocks:
            ts = (self._ts_now(now), self.ts_recent) if self.ts_ok else None
            options = Options(ts=ts, sack=blocks).encode()
        elif self.ts_ok:
            options = _TS_OPTION.pack(OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, self._ts_now(now), self.ts_recent)
        else:
            options = b""
        self.segments_out += 1
        if self._ece_echo:
            flags |= Flags.ECE
        return Transmission(
            seq=(self.iss + start) & MASK,
            ack=(self.irs + self.rcv_nxt) & MASK,
            flags=flags,
            window=window,
            options=options,
            source=self.source if length else None,
            offset=start - 1,
            length=length,
            gso_size=self.send_mss,
            retransmit=retransmit,
        )

    # ------------------------------------------------------------------ congestion control

    def _set_cc(self, cc: CongestionControl) -> None:
        self.cc = cc
        # A controller with cong_control owns the window in recovery too (API 3).
        self._cc_owns_window = callable(getattr(cc, "cong_control", None))

    def _cc_call(self, hook: str, *args) -> None:
        """Call a plugin hook under the guard (`usertcp.cc.guard`): a hook that raises, answers
        nonsense or overruns `cc_time_limit` is replaced by NewReno carrying over its window, so
        a bug in an experiment never costs data or hangs the connection."""
        wd = guard.WATCHDOG
        try:
            t0 = perf_counter()
            wd.deadline = t0 + self.cc_time_limit
            getattr(self.cc, hook)(*args)
            wd.deadline = 0.0
            took = perf_counter() - t0
            guard.check_answer(self.cc, hook)
            if took > self.cc_time_limit:
                raise TimeoutError(f"{hook} took {took:.3f} s, over the {self.cc_time_limit} s limit")
        except (Exception, guard.HookTimeout) as exc:  # noqa: BLE001 - any plugin failure is contained here
            wd.deadline = 0.0
            self._cc_failed(hook, args, exc)
            return
        if self.cc_log is not None and hook not in _PER_ACK_HOOKS:
            self._log_cc(hook, args[0])  # an episode; `receive` logs every ACK with news

    def _cc_failed(self, hook: str, args: tuple, exc: BaseException) -> None:
        failed = self.cc
        arg = args[0] if args else None
        now = arg.now if hasattr(arg, "now") else (arg if isinstance(arg, float) else 0.0)
        self._set_cc(guard.fallback(failed, self.send_mss, now))
        name = getattr(failed, "name", type(failed).__name__)
        guard.log_once(name, hook, exc)
        self.cc_faults += 1
        self._events.append(Event("cc_error", now, f"{name}.{hook}: {exc!r}; falling back to newreno"))

    def _log_cc(self, hook: str, arg: Any) -> None:
        """One record for the trace tool: what the controller decided after `hook`, next to what
        the engine saw. A controller whose `state()` fails is logged without it."""
        cc = self.cc
        now = arg.now if hasattr(arg, "now") else arg
        rs = self.rate_sample
        record = {
            "t": now,
            "event": hook,
            "cc": cc.name,
            "cwnd": cc.cwnd,
            "ssthresh": cc.ssthresh,
            "pacing_rate": cc.pacing_rate,
            "window": self.cwnd,
            "in_flight": self.pipe,
            "srtt": self.rtt.srtt,
            "min_rtt": self.rtt.min_rtt,
            "rtt": self.rtt.latest_rtt,
            "delivery_rate": rs.delivery_rate if rs is not None else None,
            "delivered": self.rate.delivered,
            "lost": self.scoreboard.lost_total,
            "recovery": self._recovery_state(),
        }
        try:
            record.update(cc.state())
        except Exception:  # noqa: BLE001 - a trace must not cost the transfer
            pass
        self.cc_log(record)

    def _recovery_state(self) -> str:
        """Linux's congestion-avoidance state names (tcp_ca_state) for what the engine is doing."""
        if self.in_loss or self.rtx_next is not None:
            return "loss"
        if self.prr is not None or self.recovery.in_recovery:
            return "recovery"
        return "open"
