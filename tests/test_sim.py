"""Tests of the simulation pieces on their own: the Linux-like receiver driven by hand-made
segments, the one-way link, GSO segmentation, and the event loop driving a toy sender.

The receiver tests pin down behaviour a sender's recovery depends on (what is ACKed when, which
SACK blocks in which order, which timestamp is echoed), with RFC sections cited where they decide
the expected value.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import struct

import pytest

from usertcp.segment import Flags, Options, Segment, Transmission, parse_options
from usertcp.seq import add, diff
from usertcp.sim import Link, Receiver, options_len, segments_from, simulate, wire_size

SYN, ACK, FIN, RST, PSH, CWR, ECE = (
    Flags.SYN, Flags.ACK, Flags.FIN, Flags.RST, Flags.PSH, Flags.CWR, Flags.ECE)
SPORT, DPORT = 40000, 5201
IRS = 0xFFFFF000  # the sender's ISS: close to the wrap, so seq arithmetic is exercised
ISS = 5000  # the receiver's ISS
SMSS = 1448  # payload of a full segment next to the timestamp option
DATA = random.Random(1).randbytes(400_000)
SEED14 = 5  # a seed whose reads make a scale-14 window round below its old right edge


class BytesSource:
    """A regenerable source over a bytes object (the engine's Source protocol)."""

    def __init__(self, data: bytes):
        self.data = data
        self.size = len(data)
        self.reads = 0

    def read(self, offset: int, length: int):
        self.reads += 1
        return memoryview(self.data)[offset : offset + length]


def syn_seg(*, mss=1460, wscale=7, sack=True, ts=True, tsval=100, seq=IRS):
    o = Options(mss=mss, wscale=wscale, sack_permitted=sack, ts=(tsval, 0) if ts else None)
    return Segment(SPORT, DPORT, seq, 0, SYN, 65535, o)


def seq_of(off: int) -> int:
    """Sequence number of the sender's data byte `off` (byte 0 is IRS+1)."""
    return add(IRS, 1 + off)


def data_seg(off, n=SMSS, *, tsval=1000, flags=ACK, ts=True):
    o = Options(ts=(tsval, 0) if ts else None)
    return Segment(SPORT, DPORT, seq_of(off), add(ISS, 1), flags, 1000, o, DATA[off : off + n])


def ack_seg(*, seq_off, ack, tsval=1000, flags=ACK):
    return Segment(SPORT, DPORT, seq_of(seq_off), ack, flags, 1000, Options(ts=(tsval, 0)))


def established(tsval=100, **kw) -> Receiver:
    """A receiver past the three-way handshake (its SYN-ACK drained)."""
    r = Receiver(port=DPORT, iss=ISS, **kw)
    r.receive(syn_seg(tsval=tsval), 0.0)
    [synack] = r.transmit(0.0)
    assert synack.flags == SYN | ACK
    r.receive(ack_seg(seq_off=0, ack=add(ISS, 1), tsval=tsval), 0.0)
    assert r.state == "ESTABLISHED"
    assert r.transmit(0.0) == []
    return r


def acks_of(segs):
    return [diff(s.ack, seq_of(0)) for s in segs]


def sack_offs(seg):
    return [(diff(l, seq_of(0)), diff(r, seq_of(0))) for l, r in seg.options.sack]


# ----------------------------------------------------------------------------- handshake


def test_synack_offers_every_option_the_syn_offered():
    r = Receiver(port=DPORT, iss=ISS)
    r.receive(syn_seg(tsval=12345), 0.5)
    [sa] = r.transmit(0.5)
    assert sa.flags == SYN | ACK
    assert (sa.sport, sa.dport) == (DPORT, SPORT)
    assert sa.seq == ISS and sa.ack == add(IRS, 1)
    o = sa.options
    assert o.mss == 1460
    assert o.wscale == 7
    assert o.sack_permitted
    assert o.ts == (500, 12345)  # TSval from our 1 kHz clock, TSecr = the SYN's TSval
    # RFC 7323 §2.2: the window field of a SYN-ACK is never scaled.
    assert sa.window == 65535
    assert r.state == "SYN-RECEIVED"
    assert (r.ws_ok, r.sack_ok, r.ts_ok, r.snd_wscale, r.snd_mss) == (True, True, True, 7, 1460)


@pytest.mark.parametrize("missing", ["wscale", "sack", "ts"])
@pytest.mark.parametrize("side", ["syn", "receiver"])
def test_option_negotiation_each_off(missing, side):
    """Each option appears on the SYN-ACK only if the SYN offered it *and* the receiver allows
    it (RFC 7323 §2.2, §3.2; RFC 2018 §2); the others are unaffected."""
    syn_kw = {"wscale": 7, "sack": True, "ts": True}
    rcv_kw = {"wscale": 7, "sack": True, "timestamps": True}
    if side == "syn":
        syn_kw[missing] = None if missing == "wscale" else False
    else:
        rcv_kw[{"wscale": "wscale", "sack": "sack", "ts": "timestamps"}[missing]] = (
            None if missing == "wscale" else False)
    r = Receiver(port=DPORT, iss=ISS, **rcv_kw)
    r.receive(syn_seg(**syn_kw), 0.0)
    [sa] = r.transmit(0.0)
    o = sa.options
    assert (o.wscale is not None) == (missing != "wscale")
    assert o.sack_permitted == (missing != "sack")
    assert (o.ts is not None) == (missing != "ts")
    assert o.mss == 1460
    assert r.ws_ok == (missing != "wscale")
    assert r.sack_ok == (missing != "sack")
    assert r.ts_ok == (missing != "ts")
    if missing == "wscale":
        assert r.rcv_wscale == 0 and r.snd_wscale == 0


def test_unscaled_window_is_capped_and_scaled_window_reports_free_space():
    r = established(wscale=None, quickack=0)
    r.receive(data_seg(0), 0.01)
    r.receive(data_seg(SMSS), 0.01)
    [a] = r.transmit(0.01)
    assert a.window == 65535  # 4 MiB free, but without scaling 65535 is the most we can say
    r = established(quickack=0, rcv_buf=1 << 20)
    r.receive(data_seg(0), 0.01)
    r.receive(data_seg(SMSS), 0.01)
    [a] = r.transmit(0.01)
    assert a.window == (1 << 20) >> 7


def test_retransmitted_syn_gets_the_same_synack_again():
    r = Receiver(port=DPORT, iss=ISS)
    r.receive(syn_seg(tsval=100), 0.0)
    [first] = r.transmit(0.0)
    r.receive(syn_seg(tsval=1100), 1.0)  # our SYN-ACK was lost; the sender retransmits
    [again] = r.transmit(1.0)
    assert again.flags == SYN | ACK
    assert (again.seq, again.ack) == (first.seq, first.ack)
    assert again.options.mss == first.options.mss and again.options.wscale == first.options.wscale
    assert r.synacks_sent == 2


def test_synack_retransmitted_on_its_own_timer_until_acked():
    r = Receiver(port=DPORT, iss=ISS)
    r.receive(syn_seg(), 0.0)
    r.transmit(0.0)
    assert r.deadline() == pytest.approx(1.0)
    r.on_timer(1.0)
    [sa] = r.transmit(1.0)
    assert sa.flags == SYN | ACK and sa.seq == ISS
    assert r.deadline() == pytest.approx(3.0)  # doubled
    r.receive(ack_seg(seq_off=0, ack=add(ISS, 1)), 1.5)
    assert r.state == "ESTABLISHED" and r.deadline() is None


def test_handshake_ack_with_wrong_ack_gets_reset_and_listen_answers_stray_ack_with_rst():
    r = Receiver(port=DPORT, iss=ISS)
    r.receive(syn_seg(), 0.0)
    r.transmit(0.0)
    r.receive(ack_seg(seq_off=0, ack=add(ISS, 7)), 0.1)
    [rst] = r.transmit(0.1)
    assert rst.flags == RST and rst.seq == add(ISS, 7)
    assert r.state == "SYN-RECEIVED"
    fresh = Receiver(port=DPORT, iss=ISS)
    fresh.receive(ack_seg(seq_off=10, ack=1234), 0.0)
    [rst] = fresh.transmit(0.0)
    assert rst.flags == RST and rst.seq == 1234  # RFC 9293 §3.10.7.2


def test_data_on_the_handshake_ack_is_accepted():
    r = Receiver(port=DPORT, iss=ISS, quickack=0)
    r.receive(syn_seg(), 0.0)
    r.transmit(0.0)
    r.receive(data_seg(0), 0.01)
    assert r.state == "ESTABLISHED" and r.bytes_received == SMSS


# ----------------------------------------------------------------------------- ACK cadence


def test_delayed_ack_cadence_every_second_full_segment():
    r = established(quickack=0)
    t = 0.1
    r.receive(data_seg(0), t)
    assert r.transmit(t) == []
    assert r.deadline() == pytest.approx(t + 0.040)
    r.receive(data_seg(SMSS), t + 0.001)
    [a] = r.transmit(t + 0.001)
    assert acks_of([a]) == [2 * SMSS]
    assert r.deadline() is None
    # A third segment alone waits for the delayed-ACK timer.
    r.receive(data_seg(2 * SMSS), 0.2)
    assert r.transmit(0.2) == []
    assert r.deadline() == pytest.approx(0.24)
    r.on_timer(0.239)
    assert r.transmit(0.239) == []
    r.on_timer(r.deadline())
    [a] = r.transmit(0.24)
    assert acks_of([a]) == [3 * SMSS]
    assert r.deadline() is None


def test_delayed_ack_timer_is_not_pushed_back_by_small_segments():
    r = established(quickack=0)
    r.receive(data_seg(0), 0.1)  # sets rcv_mss to 1448
    r.receive(data_seg(SMSS), 0.1)
    r.transmit(0.1)
    r.receive(data_seg(2 * SMSS, 100), 0.2)
    r.receive(data_seg(2 * SMSS + 100, 100), 0.21)
    assert r.transmit(0.21) == []
    assert r.deadline() == pytest.approx(0.24)


def test_quickack_acks_the_first_segments_one_by_one():
    r = established(quickack=16)
    out = []
    for i in range(20):
        r.receive(data_seg(i * SMSS), 0.1 + i * 0.001)
        out.append(len(r.transmit(0.1 + i * 0.001)))
    # 16 quick ACKs, then every second segment.
    assert out == [1] * 16 + [0, 1, 0, 1]


# ----------------------------------------------------------------------------- SACK


def test_out_of_order_dup_acks_with_sack_blocks_in_rfc2018_order():
    r = established(quickack=0)
    seg = lambda i, t: r.receive(data_seg(i * SMSS, tsval=t), 0.1)  # noqa: E731
    K = SMSS
    seg(0, 1000)
    assert r.transmit(0.1) == []  # delayed
    seg(2, 1002)  # hole at segment 1
    [a] = r.transmit(0.1)
    assert acks_of([a]) == [K]  # the pending ACK goes out at once, as a dup-ACK-to-be
    assert sack_offs(a) == [(2 * K, 3 * K)]
    seg(3, 1003)
    [a] = r.transmit(0.1)
    assert acks_of([a]) == [K] and sack_offs(a) == [(2 * K, 4 * K)]
    seg(6, 1006)  # second hole: 4..5
    [a] = r.transmit(0.1)
    assert sack_offs(a) == [(6 * K, 7 * K), (2 * K, 4 * K)]  # most recent first
    seg(9, 1009)
    [a] = r.transmit(0.1)
    assert sack_offs(a) == [(9 * K, 10 * K), (6 * K, 7 * K), (2 * K, 4 * K)]
    seg(3, 1013)  # a duplicate inside block 2..4: D-SACK it, then its block (RFC 2883 §4)
    [a] = r.transmit(0.1)
    assert sack_offs(a) == [(3 * K, 4 * K), (2 * K, 4 * K), (9 * K, 10 * K)]
    seg(11, 1011)  # four blocks: with timestamps only three fit; the oldest-reported drops
    [a] = r.transmit(0.1)
    assert sack_offs(a) == [(11 * K, 12 * K), (2 * K, 4 * K), (9 * K, 10 * K)]
    assert r.sack_blocks() == [
        (seq_of(2 * K), seq_of(4 * K)), (seq_of(6 * K), seq_of(7 * K)),
        (seq_of(9 * K), seq_of(10 * K)), (seq_of(11 * K), seq_of(12 * K))]
    # Filling the first hole: the cumulative ACK jumps over the queued block, at once.
    seg(1, 1020)
    [a] = r.transmit(0.1)
    assert acks_of([a]) == [4 * K]
    assert sack_offs(a) == [(11 * K, 12 * K), (9 * K, 10 * K), (6 * K, 7 * K)]
    for i in (4, 5, 7, 8, 10):
        seg(i, 1030 + i)
        [a] = r.transmit(0.1)  # every segment while a hole remains, and the one that fills it
    assert acks_of([a]) == [12 * K] and a.options.sack == ()
    assert r.bytes_received == 12 * K
    assert r.sha256() == hashlib.sha256(DATA[: 12 * K]).hexdigest()
    assert r.ooo_bytes == 0 and r.sack_blocks() == []


def test_four_sack_blocks_without_timestamps():
    r = Receiver(port=DPORT, iss=ISS, quickack=0)
    r.receive(syn_seg(ts=False), 0.0)
    r.transmit(0.0)
    r.receive(Segment(SPORT, DPORT, seq_of(0), add(ISS, 1), ACK, 1000), 0.0)
    for i in (1, 3, 5, 7, 9):
        r.receive(data_seg(i * SMSS, ts=False), 0.1)
    *_, a = r.transmit(0.1)
    assert a.options.ts is None
    assert len(a.options.sack) == 4
    assert sack_offs(a)[0] == (9 * SMSS, 10 * SMSS)


def test_overlapping_and_adjacent_out_of_order_data_merges():
    r = established(quickack=0, keep=True)
    r.receive(data_seg(1000, 500), 0.1)
    r.receive(data_seg(3000, 500), 0.1)
    r.receive(data_seg(1400, 1700), 0.1)  # overlaps both, bridges them
    r.transmit(0.1)
    assert r.sack_blocks() == [(seq_of(1000), seq_of(3500))]
    assert r.ooo_bytes == 2500
    r.receive(data_seg(3500, 100), 0.1)  # adjacent on the right: appended
    r.receive(data_seg(900, 100), 0.1)  # adjacent on the left
    assert r.sack_blocks() == [(seq_of(900), seq_of(3600))]
    r.receive(data_seg(0, 1000), 0.1)
    assert r.bytes_received == 3600 and bytes(r.data) == DATA[:3600]
    assert r.ooo_bytes == 0


def test_retransmitted_data_below_rcv_nxt_is_acked_at_once_with_dsack():
    r = established(quickack=0)
    r.receive(data_seg(0), 0.1)
    r.receive(data_seg(SMSS), 0.1)
    r.transmit(0.1)
    r.receive(data_seg(0), 0.2)  # a spurious retransmission
    [a] = r.transmit(0.2)
    assert acks_of([a]) == [2 * SMSS]
    assert sack_offs(a) == [(0, SMSS)]  # D-SACK: below the cumulative ACK (RFC 2883 §4)
    assert r.bytes_received == 2 * SMSS and r.dup_bytes == SMSS
    # The D-SACK is reported once only.
    r.receive(data_seg(2 * SMSS), 0.3)
    r.receive(data_seg(3 * SMSS), 0.3)
    [a] = r.transmit(0.3)
    assert acks_of([a]) == [4 * SMSS] and a.options.sack == ()


def test_duplicate_data_reenters_quickack_mode():
    r = established(quickack=16)
    for i in range(20):  # use up the initial quick ACKs
        r.receive(data_seg(i * SMSS), 0.1)
    r.transmit(0.1)
    r.receive(data_seg(0), 0.2)
    assert len(r.transmit(0.2)) == 1
    r.receive(data_seg(20 * SMSS), 0.3)
    assert len(r.transmit(0.3)) == 1  # ACKed alone: quick-ACK mode again


def test_partially_old_segment_delivers_only_the_new_part():
    r = established(quickack=0, keep=True)
    r.receive(data_seg(0, 1000), 0.1)
    r.receive(data_seg(500, 1000), 0.1)
    [a] = r.transmit(0.1)
    assert acks_of([a]) == [1500] and sack_offs(a) == [(500, 1000)]
    assert bytes(r.data) == DATA[:1500]


# ----------------------------------------------------------------------------- timestamps


def test_ts_echo_follows_rfc7323_section_4_3():
    r = established(quickack=0, tsval=90)
    # (A) delayed ACK: echo the earliest unacknowledged segment's TSval.
    r.receive(data_seg(0, tsval=100), 0.1)
    r.receive(data_seg(SMSS, tsval=101), 0.1)
    [a] = r.transmit(0.1)
    assert a.options.ts == (100, 100)
    # (B) out-of-order segments don't move TS.Recent; (C) the retransmission that fills the
    # hole does (its seq equals Last.ACK.sent).
    r.receive(data_seg(3 * SMSS, tsval=200), 0.2)
    [a] = r.transmit(0.2)
    assert a.options.ts[1] == 100
    r.receive(data_seg(2 * SMSS, tsval=300), 0.3)
    [a] = r.transmit(0.3)
    assert acks_of([a]) == [4 * SMSS]
    assert a.options.ts == (300, 300)


def test_paws_drops_an_old_timestamp_and_acks():
    r = established(quickack=0)
    r.receive(data_seg(0, tsval=500), 0.1)
    r.receive(data_seg(SMSS, tsval=501), 0.1)
    r.transmit(0.1)
    r.receive(data_seg(2 * SMSS, tsval=400), 0.2)  # TSval < TS.Recent: RFC 7323 §5.3 R1
    [a] = r.transmit(0.2)
    assert r.paws_dropped == 1 and r.bytes_received == 2 * SMSS
    assert acks_of([a]) == [2 * SMSS]


def test_timestamp_wraps_are_compared_modulo_2_32():
    r = established(quickack=0, tsval=0xFFFFFFF0)
    r.receive(data_seg(0, tsval=5), 0.1)  # later than 0xFFFFFFF0 modulo 2**32
    r.receive(data_seg(SMSS, tsval=6), 0.1)
    [a] = r.transmit(0.1)
    assert r.paws_dropped == 0 and a.options.ts[1] == 5


def test_segment_without_timestamp_dropped_when_negotiated():
    r = established(quickack=0)
    r.receive(data_seg(0, ts=False), 0.1)
    assert r.bytes_received == 0 and r.no_ts_dropped == 1


# ----------------------------------------------------------------------------- window


def test_window_right_edge_never_shrinks_and_zero_window_probe():
    r = established(quickack=0, rcv_buf=16 * 1024, reading=False, wscale=2)
    right = []
    off = 0
    t = 0.1
    while off < 16 * 1024:
        n = min(SMSS, 16 * 1024 - off)
        r.receive(data_seg(off, n), t)
        off += n
        r.on_timer(t + 0.05)
        for a in r.transmit(t + 0.05):
            right.append(diff(a.ack, seq_of(0)) + (a.window << 2))
        t += 0.1
    assert right == sorted(right) and right[-1] == 16 * 1024
    assert r.unread == 16 * 1024
    # Zero window now: a 1-byte probe is not accepted, but answered with window 0.
    r.receive(data_seg(off, 1), 2.0)
    [a] = r.transmit(2.0)
    assert a.window == 0 and acks_of([a]) == [16 * 1024]
    assert r.bytes_received == 16 * 1024
    # Reading opens the window and sends a window update.
    assert r.read(2.1) == 16 * 1024
    [u] = r.transmit(2.1)
    assert (u.window << 2) == 16 * 1024 and acks_of([u]) == [16 * 1024]


def test_data_beyond_the_advertised_window_is_trimmed_and_counted():
    r = established(quickack=0, rcv_buf=4096, wscale=0, keep=True)
    # Before any ACK the right edge is the SYN-ACK's 4096.
    r.receive(data_seg(0, 6000), 0.1)
    assert r.bytes_received == 4096 and r.beyond_window_bytes == 6000 - 4096
    assert bytes(r.data) == DATA[:4096]


# ----------------------------------------------------------------------------- closing


def test_fin_is_acked_with_our_own_fin_and_retransmitted_until_acked():
    r = established(quickack=0)
    r.receive(data_seg(0), 0.1)
    r.receive(data_seg(SMSS, 100, flags=ACK | FIN | PSH), 0.1)
    [f] = r.transmit(0.1)
    assert f.flags == FIN | ACK
    assert acks_of([f]) == [SMSS + 100 + 1]  # the FIN takes one sequence number
    assert f.seq == add(ISS, 1)
    assert r.got_fin and r.state == "LAST-ACK"
    assert r.deadline() == pytest.approx(0.3)
    r.on_timer(r.deadline())
    [f2] = r.transmit(0.3)
    assert f2.flags == FIN | ACK and f2.seq == add(ISS, 1)
    assert r.deadline() == pytest.approx(0.7)  # 200 ms, then 400 ms
    # The peer's FIN retransmitted (our ACK lost): acknowledged again, sequence after our FIN.
    r.receive(data_seg(SMSS, 100, flags=ACK | FIN, tsval=1100), 0.4)
    [a] = r.transmit(0.4)
    assert a.flags == ACK and a.seq == add(ISS, 2) and acks_of([a]) == [SMSS + 101]
    r.receive(ack_seg(seq_off=SMSS + 101, ack=add(ISS, 2), tsval=1200), 0.5)
    assert r.closed and r.clean and r.deadline() is None
    assert r.sha256() == hashlib.sha256(DATA[: SMSS + 100]).hexdigest()
    # Closed: anything else gets a reset.
    r.receive(ack_seg(seq_off=SMSS + 101, ack=add(ISS, 2)), 0.6)
    [rst] = r.transmit(0.6)
    assert rst.flags == RST


def test_fin_gives_up_after_retries():
    r = established(quickack=0, fin_retries=2)
    r.receive(data_seg(0, 10, flags=ACK | FIN), 0.1)
    r.transmit(0.1)
    while not r.closed:
        r.on_timer(r.deadline())
    assert r.timed_out and not r.clean and r.fins_sent == 3


def test_close_delay_sends_ack_first_then_fin():
    r = established(quickack=0, close_delay=0.05)
    r.receive(data_seg(0, 10, flags=ACK | FIN), 0.1)
    [a] = r.transmit(0.1)
    assert a.flags == ACK and acks_of([a]) == [11]
    assert r.state == "CLOSE-WAIT" and r.deadline() == pytest.approx(0.15)
    r.on_timer(r.deadline())
    [f] = r.transmit(0.15)
    assert f.flags == FIN | ACK and r.state == "LAST-ACK"


def test_out_of_order_fin_waits_for_the_hole():
    r = established(quickack=0)
    r.receive(data_seg(SMSS, 100, flags=ACK | FIN), 0.1)
    [a] = r.transmit(0.1)
    assert a.flags == ACK and acks_of([a]) == [0] and not r.got_fin
    r.receive(data_seg(0), 0.2)
    [f] = r.transmit(0.2)
    assert f.flags == FIN | ACK and acks_of([f]) == [SMSS + 101]


def test_rst_in_window_closes_with_reset_and_outside_is_ignored():
    r = established()
    r.receive(Segment(SPORT, DPORT, seq_of(10**6), 0, RST, 0), 0.1)  # outside the window
    assert not r.closed
    r.receive(Segment(SPORT, DPORT, seq_of(100), 0, RST, 0), 0.1)
    assert r.closed and r.reset and not r.clean
    strict = established(challenge_ack=True)
    strict.receive(Segment(SPORT, DPORT, seq_of(100), 0, RST, 0), 0.1)
    [a] = strict.transmit(0.1)
    assert not strict.closed and a.flags == ACK  # RFC 5961 §3.2 challenge ACK
    strict.receive(Segment(SPORT, DPORT, seq_of(0), 0, RST, 0), 0.1)
    assert strict.closed and strict.reset


# ----------------------------------------------------------------------------- link


def seg_of_size(payload_len, seq=0):
    """A segment with the timestamp option: wire size = payload + 54 + 12."""
    return Segment(SPORT, DPORT, seq, 0, ACK, 1000, Options(ts=(1, 2)), bytes(payload_len))


def test_wire_size_and_options_len_match_encoding():
    assert wire_size(seg_of_size(1448)) == 1514
    for mss, ws, sp, ts, nsack in itertools.product(
        (None, 1460), (None, 7), (False, True), (None, (1, 2)), (0, 1, 3)
    ):
        o = Options(mss=mss, wscale=ws, sack_permitted=sp, ts=ts,
                    sack=tuple((i, i + 1) for i in range(nsack)))
        try:
            encoded = o.encode()
        except ValueError:
            continue  # more than 40 bytes
        assert options_len(o) == len(encoded), o


def test_link_delay_only():
    link = Link(delay=0.025)
    assert link.send(seg_of_size(100), 1.0)
    assert link.next_arrival() == pytest.approx(1.025)
    assert link.deliver(1.0249) == []
    [s] = link.deliver(1.025)
    assert len(s.payload) == 100
    assert link.empty and link.next_arrival() is None
    assert (link.packets_in, link.delivered, link.bytes_in) == (1, 1, 166)


def test_link_serialisation_spaces_back_to_back_packets():
    rate = 8_000_000  # one byte per microsecond
    link = Link(delay=0.01, rate=rate)
    sizes = [1514, 1514, 166, 1514]
    for i, n in enumerate(sizes):
        link.send(seg_of_size(n - 66, seq=i), 0.0)
    arrivals = []
    while not link.empty:
        t = link.next_arrival()
        arrivals += [(t, s.seq) for s in link.deliver(t)]
    expect, t = [], 0.0
    for n in sizes:
        t += n * 8 / rate
        expect.append(t + 0.01)
    assert [s for _, s in arrivals] == [0, 1, 2, 3]
    assert [a for a, _ in arrivals] == pytest.approx(expect)
    # A packet arriving after the link went idle is not delayed by the old ones.
    link.send(seg_of_size(1448), 1.0)
    assert link.next_arrival() == pytest.approx(1.0 + 1514 * 8 / rate + 0.01)


def test_link_drop_tail_at_queue_limit():
    rate = 8_000_000
    link = Link(delay=0.0, rate=rate, queue_bytes=2 * 1514)
    got = [link.send(seg_of_size(1448, seq=i), 0.0) for i in range(4)]
    assert got == [True, True, False, False]
    assert link.dropped_queue == 2 and link.max_backlog == 2 * 1514
    # Once the first packet has left the bottleneck there is room for one more.
    assert link.backlog(1514e-6) == 1514
    assert link.send(seg_of_size(1448, seq=9), 1514e-6)
    assert not link.send(seg_of_size(1448, seq=10), 1514e-6)
    assert [s.seq for s in link.deliver(1.0)] == [0, 1, 9]


def test_link_deterministic_drop_predicate_by_index():
    seen = []

    def drop(index, seg):
        seen.append((index, seg.seq))
        return index in (2, 5)

    link = Link(delay=0.001, loss=drop)
    for i in range(8):
        link.send(seg_of_size(10, seq=100 + i), 0.0)
    assert [s.seq for s in link.deliver(1.0)] == [100, 101, 103, 104, 106, 107]
    assert seen == [(i, 100 + i) for i in range(8)]
    assert link.dropped_loss == 2 and link.delivered == 6


def test_link_lost_packets_still_use_the_bottleneck():
    rate = 8_000_000
    link = Link(rate=rate, loss=lambda i, s: i == 0)
    link.send(seg_of_size(1448, seq=0), 0.0)
    link.send(seg_of_size(1448, seq=1), 0.0)
    assert link.next_arrival() == pytest.approx(2 * 1514e-6)


def test_link_seeded_loss_is_reproducible():
    def pattern(seed, p=0.1, n=2000):
        link = Link(loss=p, seed=seed)
        return [link.send(seg_of_size(10, seq=i), 0.0) for i in range(n)]

    a, b, c = pattern(7), pattern(7), pattern(8)
    assert a == b and a != c
    assert 150 < a.count(False) < 250  # ~10% of 2000


def test_link_extra_delay_reorders():
    link = Link(delay=0.01, extra_delay=lambda i, s: 0.005 if i == 0 else 0.0)
    for i in range(3):
        link.send(seg_of_size(10, seq=i), 0.0)
    assert [s.seq for s in link.deliver(1.0)] == [1, 2, 0]


# ----------------------------------------------------------------------------- GSO


def super_segment(length, flags=ACK | PSH | FIN | CWR | ECE, gso=SMSS, seq=0xFFFFFFF0):
    src = BytesSource(DATA)
    opts = Options(ts=(777, 888)).encode()
    tx = Transmission(seq=seq, ack=123456, flags=flags, window=501, options=opts,
                      source=src, offset=4096, length=length, gso_size=gso)
    return tx, src


def test_segments_from_cuts_like_tcp_gso_segment():
    tx, src = super_segment(10 * SMSS)
    segs = segments_from(tx, SPORT, DPORT)
    assert len(segs) == 10 and src.reads == 1
    assert [s.seq for s in segs] == [add(0xFFFFFFF0, i * SMSS) for i in range(10)]  # wraps
    assert all(len(s.payload) == SMSS for s in segs)
    assert b"".join(bytes(s.payload) for s in segs) == DATA[4096 : 4096 + 10 * SMSS]
    assert segs[0].flags == ACK | CWR | ECE  # CWR only on the first
    assert all(s.flags == ACK | ECE for s in segs[1:-1])
    assert segs[-1].flags == ACK | PSH | FIN | ECE  # FIN and PSH only on the last
    assert all((s.ack, s.window, s.sport, s.dport) == (123456, 501, SPORT, DPORT) for s in segs)
    assert all(s.options.ts == (777, 888) for s in segs)
    assert sum(s.seg_len for s in segs) == tx.seg_len


def test_segments_from_short_last_and_single():
    tx, _ = super_segment(10 * SMSS - 100)
    segs = segments_from(tx, SPORT, DPORT)
    assert [len(s.payload) for s in segs] == [SMSS] * 9 + [SMSS - 100]
    tx, _ = super_segment(SMSS)
    [s] = segments_from(tx, SPORT, DPORT)
    assert s.flags == tx.flags and len(s.payload) == SMSS
    tx = Transmission(seq=1, ack=2, flags=ACK, window=3, options=b"")
    [s] = segments_from(tx, SPORT, DPORT)
    assert s.payload == b"" and s.options == Options()


def test_segments_from_agrees_with_scapy_dissection():
    scapy = pytest.importorskip("scapy.layers.inet")
    tx, _ = super_segment(3 * SMSS)
    seg = segments_from(tx, SPORT, DPORT)[1]
    opts = tx.options
    hdr = struct.pack("!HHIIBBHHH", seg.sport, seg.dport, seg.seq, seg.ack,
                      (20 + len(opts)) // 4 << 4, int(seg.flags), seg.window, 0, 0)
    t = scapy.TCP(hdr + opts + bytes(seg.payload))
    assert (t.sport, t.dport, t.seq, t.ack, t.window) == (SPORT, DPORT, seg.seq, 123456, 501)
    assert int(t.flags) == int(seg.flags) == int(ACK | ECE)
    assert dict(t.options)["Timestamp"] == seg.options.ts == (777, 888)
    assert bytes(t.payload) == DATA[4096 + SMSS : 4096 + 2 * SMSS]
    assert parse_options(opts) == seg.options


# ----------------------------------------------------------------------------- the loop


class ToySender:
    """A minimal go-back-N sender with the engine's interface, only to exercise `simulate`:
    fixed window, GSO bursts, timestamps, FIN with the last data, RTO doubling."""

    local = ("198.18.1.1", SPORT)
    remote = ("198.18.2.1", DPORT)

    def __init__(self, data: bytes, *, iss=0xFFFF0000, cwnd=20, rto=0.3, gso=10):
        self.src = BytesSource(data)
        self.size = len(data)
        self.iss, self.cwnd, self.rto0, self.gso = iss, cwnd, rto, gso
        self.state = "CLOSED"
        self.una = self.nxt = 0  # abs: byte offsets; the FIN is at abs == size
        self.rcv_nxt = self.ts_recent = self.ws = self.peer_wnd = 0
        self.syn_due = self.ack_due = self.peer_fin = False
        self.rto_at = None
        self.rto = rto
        self.closed = False
        self._events = []

    def seq(self, a):
        return add(self.iss, 1 + a)

    def opts(self, now, **kw):
        return Options(ts=(int(now * 1000) & 0xFFFFFFFF, self.ts_recent), **kw).encode()

    def connect(self, now):
        self.state, self.syn_due, self.rto_at = "SYN-SENT", True, now + 1.0

    def transmit(self, now):
        out = []
        if self.syn_due:
            self.syn_due = False
            out.append(Transmission(self.iss, 0, SYN, 65535,
                                    self.opts(now, mss=1460, wscale=7, sack_permitted=True)))
        if self.state == "ESTABLISHED":
            limit = min(self.una + self.cwnd * SMSS, self.una + self.peer_wnd, self.size + 1)
            while self.nxt < limit:
                n = min(limit, self.size) - self.nxt
                n = min(n, self.gso * SMSS)
                flags = ACK
                if self.nxt + n == self.size and limit > self.size:
                    flags |= FIN | PSH
                out.append(Transmission(self.seq(self.nxt), self.rcv_nxt, flags, 65535 >> 7,
                                        self.opts(now), self.src, self.nxt, n, SMSS))
                self.nxt += n + (1 if flags & FIN else 0)
                self.ack_due = False
                if self.rto_at is None:
                    self.rto_at = now + self.rto
        if self.ack_due:
            self.ack_due = False
            out.append(Transmission(self.seq(self.nxt), self.rcv_nxt, ACK, 65535 >> 7,
                                    self.opts(now)))
            if self.peer_fin and self.una == self.size + 1:
                self.closed = True
                self._events.append(("closed",))
        return out

    def receive(self, seg, now):
        if seg.options.ts:
            self.ts_recent = seg.options.ts[0]
        if self.state == "SYN-SENT":
            if seg.flags & SYN and seg.flags & ACK and seg.ack == self.seq(0):
                self.state, self.rcv_nxt = "ESTABLISHED", add(seg.seq, 1)
                self.ws = seg.options.wscale or 0
                self.peer_wnd, self.ack_due, self.rto_at = seg.window, True, None
                self._events.append(("established",))
            return
        if seg.flags & RST:
            self.closed = True
            self._events.append(("error", "reset"))
            return
        acked = diff(seg.ack, self.seq(0))
        self.peer_wnd = seg.window << self.ws
        if acked > self.una:
            self._events.append(("delivered", acked - self.una))
            self.una = acked
            self.nxt = max(self.nxt, self.una)
            self.rto = self.rto0
            self.rto_at = now + self.rto if self.una < self.nxt else None
        if seg.flags & FIN:
            self.rcv_nxt = add(seg.seq, len(seg.payload) + 1)
            self.peer_fin = self.ack_due = True

    def deadline(self):
        return self.rto_at

    def on_timer(self, now):
        self.rto *= 2
        self.rto_at = now + self.rto
        if self.state == "SYN-SENT":
            self.syn_due = True
        else:
            self.nxt = self.una  # go back N

    def events(self):
        ev, self._events = self._events, []
        return ev


def run_toy(n=300_000, fwd_kw=None, rev_kw=None, rcv_kw=None, **kw):
    data = DATA[:n]
    fwd = Link(**({"delay": 0.01, "rate": 100e6, "queue_bytes": 200_000} | (fwd_kw or {})))
    rev = Link(**({"delay": 0.01} | (rev_kw or {})))
    rcv = Receiver(port=DPORT, iss=ISS, **(rcv_kw or {}))
    res = simulate(ToySender(data), rcv, fwd, rev, until=60.0, **kw)
    return res, data


def test_simulate_clean_transfer():
    res, data = run_toy(trace=True)
    assert res.completed, res.reason
    assert res.receiver.clean and res.receiver.bytes_received == len(data)
    assert res.receiver.sha256() == hashlib.sha256(data).hexdigest()
    assert res.events[0] == ("established",) and res.events[-1] == ("closed",)
    assert sum(n for e, *n in res.events if e == "delivered" for n in n) == len(data) + 1
    assert res.fwd.dropped == 0 and res.fwd.empty and res.rev.empty
    assert res.trace[0][1:] == ("fwd", 0xFFFF0000, 0, int(SYN), 0)
    assert 0.02 < res.end < 1.0 and res.goodput > 0


def test_simulate_recovers_from_chosen_drops_and_is_deterministic():
    drop = lambda i, s: i in (5, 6, 40)  # noqa: E731
    res, data = run_toy(fwd_kw={"loss": drop}, rcv_kw={"keep": True}, trace=True)
    assert res.completed and res.receiver.clean
    assert bytes(res.receiver.data) == data
    assert res.fwd.dropped_loss == 3 and res.receiver.ooo_segments > 0
    assert sum(1 for t in res.trace if t[1] == "fwd-drop") == 3
    again, _ = run_toy(fwd_kw={"loss": drop}, rcv_kw={"keep": True}, trace=True)
    assert again.trace == res.trace and again.end == res.end


def test_simulate_seeded_random_loss_reproducible():
    a, data = run_toy(fwd_kw={"loss": 0.02, "seed": 3}, rev_kw={"loss": 0.02, "seed": 4}, trace=True)
    b, _ = run_toy(fwd_kw={"loss": 0.02, "seed": 3}, rev_kw={"loss": 0.02, "seed": 4}, trace=True)
    assert a.completed and a.receiver.sha256() == hashlib.sha256(data).hexdigest()
    assert a.trace == b.trace and a.steps == b.steps
    c, _ = run_toy(fwd_kw={"loss": 0.02, "seed": 5}, rev_kw={"loss": 0.02, "seed": 4}, trace=True)
    assert c.trace != a.trace


def test_simulate_stops_at_until_and_reports_stall():
    fwd = Link(delay=0.01, loss=1.0)
    res = simulate(ToySender(DATA[:1000]), Receiver(port=DPORT), fwd, Link(delay=0.01), until=10.0)
    assert res.reason == "until" and res.end == 10.0 and not res.completed
    assert res.receiver.state == "LISTEN"

    class Silent(ToySender):
        def connect(self, now):
            pass

    res = simulate(Silent(b""), Receiver(port=DPORT), Link(), Link(), until=10.0)
    assert res.stalled and res.end == 0.0


def test_simulate_max_events_bounds_a_timer_that_never_advances():
    class Stuck(ToySender):
        def deadline(self):
            return 0.0

        def on_timer(self, now):
            pass

    res = simulate(Stuck(b"x"), Receiver(port=DPORT), Link(), Link(), until=10.0, max_events=500)
    assert res.reason == "max_events" and res.steps == 500


@pytest.mark.parametrize("wscale,seed", [(0, 0), (3, 3), (10, 10), (14, 14), (14, SEED14)])
def test_advertised_right_edge_never_moves_left_under_random_reads(wscale, seed):
    """RFC 7323 §2.4 / RFC 9293 §3.8.6.2.2: whatever the application does, the right edge of
    the advertised window (ack + window << scale) never moves left, and no accepted data lies
    beyond it."""
    rng = random.Random(seed)
    r = established(quickack=4, rcv_buf=200_000, reading=False, wscale=wscale)
    edge = 65535  # the SYN-ACK's unscaled window
    t, off = 0.1, 0
    while off < len(DATA) - 3000:
        t += 0.001
        if rng.random() < 0.3:
            r.read(t, rng.randrange(1, 30_000))
        else:
            n = rng.choice((SMSS, SMSS, 700, 1, 3000))
            room = edge - off  # what the receiver has advertised so far
            if room > 0:
                r.receive(data_seg(off, min(n, room), tsval=int(t * 1000)), t)
                off += min(n, room)
            else:
                r.receive(data_seg(off, 1, tsval=int(t * 1000)), t)  # zero-window probe
        if r.deadline() is not None and r.deadline() <= t:
            r.on_timer(t)
        for a in r.transmit(t):
            right = diff(a.ack, seq_of(0)) + (a.window << wscale)
            assert right >= edge
            edge = right
    assert r.beyond_window_bytes == 0
    assert r.bytes_received == off


def fill_non_reading_sink(**kw):
    """Feed full segments to a sink that does not read, as a sender that obeys every advertised
    window would, until the window is zero. Returns the receiver."""
    r = established(quickack=0, reading=False, **kw)
    ws = r.rcv_wscale
    edge, off, t = 65535, 0, 0.1
    while off < edge:
        n = min(SMSS, edge - off)
        r.receive(data_seg(off, n, tsval=int(t * 1000)), t)
        off += n
        t += 0.01
        r.on_timer(t)  # flush a delayed ACK
        for a in r.transmit(t):
            edge = diff(a.ack, seq_of(0)) + (a.window << ws)
    assert r.beyond_window_bytes == 0
    return r


def test_never_shrinking_a_scaled_window_overcommits_the_buffer_like_linux():
    """RFC 7323 Appendix F: keeping the right edge while rounding to the scale unit lets a
    non-reading sink take in a little more than its buffer — by less than one unit per ACK."""
    r = fill_non_reading_sink(rcv_buf=16_384)
    over = r.bytes_received - 16_384
    assert 0 < over < r.acks_sent * 128


def test_shrink_window_keeps_within_the_buffer():
    r = fill_non_reading_sink(rcv_buf=16_384, shrink_window=True)
    assert 16_384 - 128 < r.bytes_received <= 16_384
    # A sender still using the older, larger window gets its excess dropped and counted apart
    # from real window violations.
    old_edge = r._adv_max
    got = r.bytes_received
    assert old_edge > got  # the window did shrink
    r.receive(data_seg(got, old_edge - got), 5.0)
    [a] = r.transmit(5.0)
    assert a.window == 0 and r.bytes_received == got
    assert r.beyond_window_bytes == 0 and r.shrunk_window_bytes == old_edge - got
    r.receive(data_seg(got, old_edge - got + 10), 5.1)
    assert r.beyond_window_bytes == 10


def test_link_duplicates_with_its_own_generator():
    """Duplication draws from its own generator: the same seed loses the same packets with and
    without it, and each copy arrives DUP_GAP after its original."""
    from usertcp.sim.link import DUP_GAP

    def run(dup):
        link = Link(delay=0.01, loss=0.3, seed=9, duplicate=dup)
        kept = [link.send(data_seg(i * SMSS), 0.0) for i in range(200)]
        return link, kept

    plain, kept_plain = run(0.0)
    dupl, kept_dup = run(0.2)
    assert kept_plain == kept_dup and plain.dropped_loss == dupl.dropped_loss
    assert plain.duplicated == 0 and 20 < dupl.duplicated < 60
    first = dupl.deliver(0.01)
    again = dupl.deliver(0.01 + DUP_GAP)
    assert len(first) == sum(kept_dup) and len(again) == dupl.duplicated
    assert {s.seq for s in again} <= {s.seq for s in first}
    with pytest.raises(ValueError):
        Link(duplicate=1.5)
