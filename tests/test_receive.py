"""Unit tests of the sans-I/O receive side (usertcp.engine.receive), worked by hand.

Sequence numbers are the buffer's relative ones; the RFC examples are run with the buffer
starting at the RFC's own numbers, so the tables read the same here as in the RFCs.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usertcp.engine.receive import ACK_FIN, ACK_NONE, ACK_NOW, DelayedAck, ReceiveBuffer


def buf(rcv_nxt: int = 1, capacity: int = 1 << 20, *, wscale: int = 0, mss: int | None = 1460,
        quickack: int = 0, delay: float = 0.040, **kw) -> ReceiveBuffer:
    """A buffer that has announced its window, as after the handshake. No quick-ACK phase unless
    asked for, so that ACK timing is the plain delayed-ACK rule."""
    rb = ReceiveBuffer(rcv_nxt, capacity, wscale=wscale, acks=DelayedAck(delay, quickack, mss), **kw)
    rb.initial_window()
    rb.ack()  # the handshake's ACK: announces the (scaled) window
    return rb


def seg(rb: ReceiveBuffer, start: int, end: int, now: float = 0.0, fin: bool = False) -> int:
    """Data [start, end) whose content is a function of its position: byte k is k mod 251."""
    return rb.segment(start, bytes(k % 251 for k in range(start, end)), fin, now)


def stream(start: int, end: int) -> bytes:
    return bytes(k % 251 for k in range(start, end))


# ------------------------------------------------------------------ in-order delivery


def test_in_order_data_is_readable_and_acknowledged():
    rb = buf(rcv_nxt=1)
    assert rb.segment(1, b"GET / HTTP/1.1\r\n", False, 0.0) == ACK_NONE  # one small segment: delayed
    assert rb.rcv_nxt == 17 and rb.readable == 16 and rb.delivered == 16
    assert rb.read(4) == b"GET " and rb.readable == 12
    assert rb.read() == b"/ HTTP/1.1\r\n" and rb.readable == 0
    assert rb.read() == b""
    assert not rb.at_eof
    nxt, _, blocks = rb.ack()
    assert nxt == 17 and blocks == ()


def test_length_only_segments_count_as_zero_bytes():
    rb = buf(rcv_nxt=0)
    rb.segment(0, 3, False, 0.0)
    assert rb.read() == b"\x00\x00\x00" and rb.rcv_nxt == 3


def test_push_delivery_reads_at_once_and_keeps_the_window_open():
    got = []
    rb = buf(rcv_nxt=0, capacity=10_000, store=False, on_data=lambda b: got.append(bytes(b)))
    seg(rb, 0, 1000)
    assert b"".join(got) == stream(0, 1000)
    assert rb.readable == 0 and rb.free() == 10_000


def test_acceptable_follows_the_advertised_window():
    """RFC 9293 §3.10.7.4's test against what we advertised (Linux's tcp_sequence reading)."""
    rb = buf(rcv_nxt=100, capacity=1000)
    assert rb.right_edge == 1100
    assert rb.acceptable(100, 0) and rb.acceptable(1100, 0)  # an empty segment at the edge
    assert not rb.acceptable(99, 0) and not rb.acceptable(1101, 0)
    assert rb.acceptable(1099, 10) and not rb.acceptable(1100, 10)
    assert rb.acceptable(50, 51) and not rb.acceptable(50, 50)  # must reach rcv_nxt


# ------------------------------------------------------------------ SACK (RFC 2018 §4)


def test_sack_blocks_follow_rfc_2018_example():
    """RFC 2018's example (§7, case 3, the rules of §4): left edge 5000, eight 500-byte segments,
    the 2nd, 4th, 6th and 8th lost. The first block always holds the segment that triggered the
    ACK; the others follow most recently reported first."""
    rb = buf(rcv_nxt=5000, capacity=1 << 16, mss=500)

    def ack_after(start):
        verdict = seg(rb, start, start + 500)
        nxt, _, blocks = rb.ack(4)
        return verdict, nxt, list(blocks)

    assert ack_after(5000)[1:] == (5500, [])
    assert ack_after(6000) == (ACK_NOW, 5500, [(6000, 6500)])
    assert ack_after(7000) == (ACK_NOW, 5500, [(7000, 7500), (6000, 6500)])
    assert ack_after(8000) == (ACK_NOW, 5500, [(8000, 8500), (7000, 7500), (6000, 6500)])
    # The 4th segment (6500) arrives: it joins 6000-6500 and 7000-7500 into one block.
    assert ack_after(6500) == (ACK_NOW, 5500, [(6000, 7500), (8000, 8500)])
    # The 2nd segment (5500) fills the hole: the ACK moves to 7500 and is sent at once.
    assert ack_after(5500) == (ACK_NOW, 7500, [(8000, 8500)])
    assert rb.read() == stream(5000, 7500)


def test_sack_blocks_are_limited_and_the_most_recent_first():
    """RFC 2018 §4: as many blocks as fit (3 next to timestamps); the oldest reported drops off,
    and is reported again once it is the most recent one."""
    rb = buf(rcv_nxt=0, capacity=1 << 16)
    for k in (1, 3, 5, 7):
        seg(rb, k * 100, k * 100 + 50)
    assert list(rb.ack(3)[2]) == [(700, 750), (500, 550), (300, 350)]
    seg(rb, 150, 200)  # extends the block at 100
    assert list(rb.ack(3)[2]) == [(100, 200), (700, 750), (500, 550)]
    assert rb.ooo_ranges() == [(100, 200), (300, 350), (500, 550), (700, 750)]
    assert rb.ooo_bytes == 250


def test_sack_blocks_wire_conversion_wraps():
    rb = buf(rcv_nxt=1, capacity=1 << 16)
    seg(rb, 1001, 1101)
    irs = 0xFFFFFF00
    nxt, _, blocks = rb.ack(4, wire=irs)
    assert blocks == (((irs + 1001) & 0xFFFFFFFF, (irs + 1101) & 0xFFFFFFFF),)
    assert blocks[0][0] < irs  # wrapped past 2^32


def test_no_sack_blocks_without_sack():
    rb = buf(rcv_nxt=0, sack=False)
    seg(rb, 100, 200)
    seg(rb, 100, 200)  # a duplicate: no D-SACK either
    assert rb.ack(4)[2] == () and rb.ooo_ranges() == [(100, 200)]


# ------------------------------------------------------------------ D-SACK (RFC 2883 §4)


def test_dsack_for_a_duplicate_below_rcv_nxt():
    """RFC 2883 §4.1.1 (example 1): both ACKs were lost, 3000-3499 is retransmitted:
    ACK 4000, SACK=3000-3500."""
    rb = buf(rcv_nxt=3000, capacity=1 << 16, mss=500)
    seg(rb, 3000, 3500)
    seg(rb, 3500, 4000)
    rb.ack()
    assert seg(rb, 3000, 3500) == ACK_NOW
    nxt, _, blocks = rb.ack(4)
    assert (nxt, blocks) == (4000, ((3000, 3500),))
    assert rb.dsacks_sent == 1 and rb.dup_bytes == 500
    assert rb.ack(4)[2] == ()  # reported once


def test_dsack_with_an_out_of_order_block():
    """RFC 2883 §4.1.2 (example 2): ACK 4000, SACK=3000-3500, 4500-5000."""
    rb = buf(rcv_nxt=3000, capacity=1 << 16, mss=500)
    seg(rb, 3000, 3500)
    seg(rb, 3500, 4000)
    seg(rb, 4500, 5000)
    assert rb.ack(4)[::2] == (4000, ((4500, 5000),))
    seg(rb, 3000, 3500)
    assert rb.ack(4)[::2] == (4000, ((3000, 3500), (4500, 5000)))


def test_dsack_for_a_duplicate_inside_an_out_of_order_block():
    """RFC 2883 §4.1.3 (example 3): the D-SACK block first, then the block that holds it:
    ACK 4000, SACK=5000-5500, 4500-5500."""
    rb = buf(rcv_nxt=3500, capacity=1 << 16, mss=500)
    seg(rb, 3500, 4000)
    rb.ack()
    assert seg(rb, 4500, 5000) == ACK_NOW
    assert rb.ack(4)[::2] == (4000, ((4500, 5000),))
    assert seg(rb, 5000, 5500) == ACK_NOW
    assert rb.ack(4)[::2] == (4000, ((4500, 5500),))
    assert seg(rb, 5000, 5500) == ACK_NOW  # duplicated by the network
    assert rb.ack(4)[::2] == (4000, ((5000, 5500), (4500, 5500)))
    assert rb.dup_bytes == 500 and rb.ooo_bytes == 1000


def test_dsack_for_a_partly_old_segment():
    """RFC 2883 §4.2.1 (example 4): 1000-1499 delayed, 1500-1999 lost; the sender resends
    1000-1999 as one segment after the delayed one arrived: ACK 2500, SACK=1000-1500."""
    rb = buf(rcv_nxt=500, capacity=1 << 16, mss=1000)
    seg(rb, 500, 1000)
    seg(rb, 2000, 2500)
    assert rb.ack(4)[::2] == (1000, ((2000, 2500),))
    seg(rb, 1000, 1500)
    assert rb.ack(4)[::2] == (1500, ((2000, 2500),))
    assert seg(rb, 1000, 2000) == ACK_NOW
    assert rb.ack(4)[::2] == (2500, ((1000, 1500),))
    assert rb.read() == stream(500, 2500)


def test_dsack_subsegments_not_covered_by_the_ack():
    """RFC 2883 §4.2.3 (example 6): duplicates inside a block above a hole, each reported
    first, with the block holding it second and the other block after."""
    rb = buf(rcv_nxt=500, capacity=1 << 16, mss=1500)
    seg(rb, 500, 1000)
    seg(rb, 3500, 4000)
    assert rb.ack(4)[::2] == (1000, ((3500, 4000),))
    seg(rb, 1500, 3000)
    assert rb.ack(4)[::2] == (1000, ((1500, 3000), (3500, 4000)))
    seg(rb, 1500, 2000)  # the delayed originals
    assert rb.ack(4)[::2] == (1000, ((1500, 2000), (1500, 3000), (3500, 4000)))
    seg(rb, 2500, 3000)
    assert rb.ack(4)[::2] == (1000, ((2500, 3000), (1500, 3000), (3500, 4000)))


def test_dsack_counts_in_the_block_limit_and_waits_for_room():
    rb = buf(rcv_nxt=0, capacity=1 << 16)
    for k in (1, 3, 5):
        seg(rb, k * 100, k * 100 + 50)
    seg(rb, 300, 350)  # duplicate inside (300, 350)
    assert rb.sack_blocks(3) == [(300, 350), (300, 350), (500, 550)]  # a look, nothing spent
    assert rb.ack(0)[2] == ()  # no option room on this segment: the D-SACK waits
    assert list(rb.ack(3)[2]) == [(300, 350), (300, 350), (500, 550)]
    assert list(rb.ack(3)[2]) == [(300, 350), (500, 550), (100, 150)]


# ------------------------------------------------------------------ hole filling


def test_hole_fill_delivers_everything_and_acks_at_once():
    rb = buf(rcv_nxt=0, capacity=1 << 16, mss=1000)
    assert seg(rb, 1000, 2000) == ACK_NOW  # out of order: immediate (RFC 5681 §4.2)
    assert seg(rb, 2000, 3000) == ACK_NOW
    assert seg(rb, 4000, 5000) == ACK_NOW
    assert rb.readable == 0 and rb.ooo_bytes == 3000
    assert seg(rb, 0, 1000) == ACK_NOW  # fills the first hole: immediate
    assert rb.rcv_nxt == 3000 and rb.ooo_ranges() == [(4000, 5000)]
    assert seg(rb, 3000, 4000) == ACK_NOW
    assert rb.rcv_nxt == 5000 and rb.ooo_bytes == 0 and rb.ooo_ranges() == []
    assert rb.read() == stream(0, 5000)
    assert rb.ack(4)[::2] == (5000, ())


def test_overlapping_out_of_order_segments_keep_the_first_copy():
    rb = buf(rcv_nxt=0, capacity=1 << 16)
    rb.segment(10, b"aaaaa", False, 0.0)  # 10-15
    rb.segment(20, b"ccccc", False, 0.0)  # 20-25
    rb.segment(12, b"BBBBBBBBBBBBBBB", False, 0.0)  # 12-27 overlaps both
    assert rb.ooo_ranges() == [(10, 27)] and rb.ooo_bytes == 17 and rb.dup_bytes == 8
    rb.segment(0, b"0123456789", False, 0.0)
    assert rb.read() == b"0123456789aaaaaBBBBBcccccBB"


# ------------------------------------------------------------------ ACK timing


def test_delayed_ack_every_second_full_segment():
    """RFC 5681 §4.2 / RFC 9293 §3.8.6.3: one full segment may wait (Linux: 40 ms), the second
    is acknowledged at once."""
    rb = buf(rcv_nxt=0, store=False, mss=1460)
    assert seg(rb, 0, 1460, now=1.0) == ACK_NONE
    assert rb.ack_deadline == pytest.approx(1.040)
    assert seg(rb, 1460, 2920, now=1.001) == ACK_NOW
    rb.ack()
    assert rb.ack_deadline is None
    # A lone segment: the timer sends it.
    assert seg(rb, 2920, 4380, now=2.0) == ACK_NONE
    assert not rb.ack_due(2.039)
    assert rb.ack_due(2.041) and not rb.ack_due(2.042)  # once


def test_delayed_ack_deadline_is_not_pushed_back():
    rb = buf(rcv_nxt=0, store=False, mss=1460)
    seg(rb, 0, 100, now=1.0)
    seg(rb, 100, 200, now=1.03)
    assert rb.ack_deadline == pytest.approx(1.040)


def test_quickack_phase_acks_every_segment_at_first():
    """Linux's quick-ACK phase: the first segments are ACKed one by one (credits: half the
    window in segments, at most TCP_MAX_QUICKACKS)."""
    rb = buf(rcv_nxt=0, capacity=1 << 20, wscale=7, store=False, quickack=16, mss=1460)
    verdicts = []
    for k in range(20):
        verdicts.append(seg(rb, k * 1460, (k + 1) * 1460))
        if verdicts[-1]:
            rb.ack()
    assert verdicts[:16] == [ACK_NOW] * 16
    assert verdicts[16:] == [ACK_NONE, ACK_NOW, ACK_NONE, ACK_NOW]


def test_duplicate_restarts_quickack():
    rb = buf(rcv_nxt=0, capacity=1 << 20, wscale=7, store=False, quickack=16)
    seg(rb, 0, 1460)
    rb.ack()
    rb.acks.quick = 0
    assert seg(rb, 0, 1460) == ACK_NOW  # old: D-SACK and quick ACKs again
    assert rb.acks.quick == 16


def test_unread_data_defers_the_second_segment_ack_to_the_read():
    """Linux ACKs two full segments at once only if the window would not shrink
    (__tcp_ack_snd_check); with the data still unread it would, so the ACK waits for the
    application's read (tcp_cleanup_rbuf) or the delayed-ACK timer."""
    rb = buf(rcv_nxt=0, capacity=65535, mss=1460)
    assert seg(rb, 0, 1460, now=1.0) == ACK_NONE
    assert not rb.ack_after_read()  # one segment: may wait
    assert seg(rb, 1460, 2920, now=1.001) == ACK_NONE
    assert rb.ack_deadline == pytest.approx(1.040)
    rb.read()
    assert rb.ack_after_read()
    rb.ack()
    assert rb.ack_deadline is None and not rb.ack_after_read()


# ------------------------------------------------------------------ the window


def test_window_closes_with_unread_data_and_reopens_without_tiny_updates():
    """RFC 9293 §3.8.6.2.2: the window shrinks as the application leaves data unread (the right
    edge stays put), and reopens only by at least min(buffer/2, one segment)."""
    rb = buf(rcv_nxt=0, capacity=10_000, mss=1000)
    assert rb.right_edge == 10_000
    windows = []
    for k in range(10):
        seg(rb, k * 1000, (k + 1) * 1000)
        windows.append(rb.ack()[1])
        assert rb.right_edge == 10_000  # never moves left
    assert windows == [9000, 8000, 7000, 6000, 5000, 4000, 3000, 2000, 1000, 0]
    assert rb.readable == 10_000
    rb.read(500)
    assert not rb.window_update_due()  # 500 bytes free: below one segment
    assert rb.ack()[1] == 0  # and an ACK sent anyway still says zero: no silly window
    rb.read(499)
    assert not rb.window_update_due() and rb.ack()[1] == 0
    rb.read(1)
    assert rb.window_update_due()
    assert rb.ack()[1] == 1000 and rb.right_edge == 11_000
    rb.read()
    assert rb.window_update_due() and rb.ack()[1] == 10_000


def test_scaled_window_keeps_the_edge_by_rounding_up():
    """RFC 7323 §2.3: the field is shifted, so keeping the right edge rounds up to the scale
    unit (as Linux's tcp_select_window does); shrink_window rounds down instead."""
    for shrink, expect in ((False, 1), (True, 0)):
        rb = buf(rcv_nxt=0, capacity=4096, wscale=7, mss=1000, shrink_window=shrink)
        assert rb.right_edge == 4096
        seg(rb, 0, 4000)
        assert rb.ack()[1] == expect
        assert rb.right_edge == 4000 + 128 * expect


def test_shrink_window_can_close_on_a_hole():
    """With shrink_window the edge follows the free space; held out-of-order data is never
    dropped (no reneging, RFC 2018 §8), so a buffer nearly full of it can leave no room for the
    hole before it. That is the sysctl's model, not a default."""
    rb = buf(rcv_nxt=0, capacity=1024, wscale=7, mss=100, shrink_window=True)
    seg(rb, 100, 1000)
    assert rb.ack()[1] == 0 and rb.right_edge == 0
    assert seg(rb, 0, 100) == ACK_NOW and rb.rcv_nxt == 0  # the hole is outside the window
    assert rb.beyond_window_bytes == 0 and rb.shrunk_window_bytes == 100


def test_data_beyond_the_window_is_trimmed():
    rb = buf(rcv_nxt=0, capacity=1000)
    assert rb.right_edge == 1000
    assert rb.segment(0, stream(0, 1500), True, 0.0) == ACK_NONE  # the FIN after the edge is dropped
    assert rb.rcv_nxt == 1000 and not rb.fin_received
    assert rb.beyond_window_bytes == 500
    assert rb.read() == stream(0, 1000)
    rb.ack()
    # Out of order and partly beyond: only what fits is held.
    assert seg(rb, 1800, 2300) == ACK_NOW
    assert rb.ooo_ranges() == [(1800, 2000)] and rb.beyond_window_bytes == 800
    # Entirely beyond: nothing taken, ACKed at once.
    assert seg(rb, 2000, 2100) == ACK_NOW
    assert rb.ooo_ranges() == [(1800, 2000)] and rb.beyond_window_bytes == 900


def test_initial_window_is_unscaled_and_capped():
    rb = ReceiveBuffer(0, 1 << 20, wscale=7)
    assert rb.initial_window() == 65535  # RFC 7323 §2.2
    assert rb.right_edge == 65535
    assert rb.ack()[1] == (1 << 20) >> 7  # the first scaled window


# ------------------------------------------------------------------ FIN


def test_fin_in_order():
    rb = buf(rcv_nxt=1)
    assert rb.segment(1, b"bye", True, 0.0) == ACK_FIN
    assert rb.fin_received and rb.rcv_nxt == 5  # RFC 9293 §3.4: the FIN takes a number
    assert not rb.at_eof  # the application has not read "bye" yet
    assert rb.read() == b"bye" and rb.at_eof
    assert rb.ack()[0] == 5
    # A retransmitted FIN: a duplicate, reported and ACKed.
    assert rb.segment(1, b"bye", True, 0.1) == ACK_NOW
    assert rb.ack(4)[::2] == (5, ((1, 5),))
    # Anything new after the FIN is not taken.
    assert rb.segment(5, b"more", False, 0.2) == ACK_NOW and rb.rcv_nxt == 5 and rb.readable == 0


def test_fin_alone():
    rb = buf(rcv_nxt=1)
    seg(rb, 1, 11)
    assert rb.segment(11, b"", True, 0.0) == ACK_FIN
    assert rb.rcv_nxt == 12 and rb.read() == stream(1, 11) and rb.at_eof


def test_fin_after_an_out_of_order_gap():
    rb = buf(rcv_nxt=0, capacity=1 << 16)
    assert seg(rb, 1000, 1500, fin=True) == ACK_NOW  # FIN seen above a hole: not yet taken
    assert not rb.fin_received and rb.rcv_nxt == 0
    assert list(rb.ack(4)[2]) == [(1000, 1500)]  # the FIN itself is not SACKed
    assert seg(rb, 500, 1000) == ACK_NOW
    assert not rb.fin_received
    assert seg(rb, 0, 500) == ACK_FIN
    assert rb.rcv_nxt == 1501 and rb.read() == stream(0, 1500) and rb.at_eof


# ------------------------------------------------------------------ random arrival orders


@st.composite
def arrivals(draw):
    """A byte stream cut into segments, and an arrival schedule in which every segment comes at
    least once, in any order, some several times (duplicates, retransmissions), some merged with
    their neighbour (a sender repacketizing a retransmission)."""
    size = draw(st.integers(0, 3000))
    data = draw(st.binary(min_size=size, max_size=size))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(size - 1, 1)), max_size=30)))) if size > 1 else []
    bounds = [0, *cuts, size] if size else [0, 0]
    segs = [(a, b) for a, b in zip(bounds, bounds[1:])]
    extra = draw(st.lists(st.integers(0, len(segs) - 1), max_size=20))
    merged = draw(st.lists(st.integers(0, len(segs) - 1), max_size=5))
    schedule = segs + [segs[i] for i in extra] + [(segs[i][0], segs[min(i + 1, len(segs) - 1)][1]) for i in merged]
    order = draw(st.permutations(range(len(schedule))))
    return data, [schedule[i] for i in order]


@settings(max_examples=300, deadline=None)
@given(arrivals(), st.integers(1, 4000), st.sampled_from([0, 2, 7]), st.integers(0, 3), st.booleans())
def test_random_arrival_orders_read_back_the_stream(case, capacity, wscale, read_every, shrink):
    """Whatever the order, duplicates and window limits, the bytes read are the stream exactly,
    the FIN is taken once after the last byte, SACK blocks stay above rcv_nxt and inside what
    was offered, and the right edge never moves left (unless shrink_window)."""
    data, schedule = case
    capacity = max(capacity, 1 << wscale)  # a buffer smaller than the scale unit cannot open
    if shrink:
        # Without reneging, held data may close a shrinkable window on a hole (see
        # test_shrink_window_can_close_on_a_hole): leave room for the SWS threshold
        # (capacity / 2) and a scale unit even with the whole stream held.
        capacity = max(capacity, 2 * len(data) + (1 << wscale))
    rb = ReceiveBuffer(1000, capacity, wscale=wscale, shrink_window=shrink,
                       acks=DelayedAck(0.040, 16, 1460))
    rb.initial_window()
    out = bytearray()
    fins = 0
    edge = rb.right_edge
    t = 0.0
    # A sender that ignores the window resends the schedule until everything got through.
    for _ in range(len(data) + 3):
        for k, (a, b) in enumerate(schedule):
            t += 0.001
            verdict = rb.segment(1000 + a, data[a:b], b == len(data), t)
            fins += verdict == ACK_FIN
            if verdict or rb.ack_due(t):
                _, window, blocks = rb.ack(4)
                assert all(1000 <= s < e for s, e in blocks)
                assert all(rb.rcv_nxt < s < e <= rb.adv_max for s, e in blocks[1:])
                assert shrink or rb.right_edge >= edge
                edge = rb.right_edge
            ranges = rb.ooo_ranges()
            assert not ranges or (ranges[0][0] > rb.rcv_nxt and ranges[-1][1] <= rb.adv_max)
            if read_every and k % read_every == 0:
                out += rb.read()
        out += rb.read()
        rb.ack()
        if rb.at_eof:
            break
    assert rb.at_eof and fins == 1
    assert bytes(out) == data
    assert rb.rcv_nxt == 1000 + len(data) + 1 and rb.ooo_bytes == 0
