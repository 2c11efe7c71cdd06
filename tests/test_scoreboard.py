"""The SACK scoreboard (RFC 6675, RFC 2018, RFC 2883): hand-worked examples and properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usertcp.engine.scoreboard import NextSeg, Record, Scoreboard

SMSS = 1000


def seg(k: int) -> tuple[int, int]:
    """Segment Sk (k = 1..) of a flight of 1000-byte segments starting at sequence 1."""
    return 1 + SMSS * (k - 1), 1 + SMSS * k


def flight(n: int, **kw) -> Scoreboard:
    sb = Scoreboard(SMSS, **kw)
    for k in range(1, n + 1):
        sb.send(*seg(k), now=0.0)
    return sb


def spans(sb: Scoreboard) -> list[tuple[int, int, str]]:
    """(start, end, flags) per record; flags: S sacked, L lost, O retransmission out."""
    return [
        (r.start, r.end, ("S" if r.sacked else "") + ("L" if r.lost else "") + ("O" if r.rtx_out else ""))
        for r in sb
    ]


def check_invariants(sb: Scoreboard) -> None:
    recs = list(sb)
    if sb.snd_una == sb.snd_nxt:
        assert recs == []
    else:
        assert recs[0].start == sb.snd_una
        assert recs[-1].end == sb.snd_nxt
    for a, b in zip(recs, recs[1:]):
        assert a.end == b.start  # sorted, non-overlapping, contiguous
    for r in recs:
        assert r.start < r.end
        if r.sacked:
            assert not r.lost and not r.rtx_out
    assert sb.sacked_bytes == sum(r.length for r in recs if r.sacked)
    assert sb.lost_bytes == sum(r.length for r in recs if r.lost and not r.sacked)
    assert sb.retrans_out_bytes == sum(r.length for r in recs if r.rtx_out and not r.sacked)
    expected_pipe = sum(r.length * ((not r.lost) + r.rtx_out) for r in recs if not r.sacked)
    assert sb.pipe() == expected_pipe
    assert sb.pipe() >= 0
    # Only an octet that is not lost *and* has a retransmission out counts twice.
    doubled = sum(r.length for r in recs if not r.sacked and not r.lost and r.rtx_out)
    assert sb.pipe() <= sb.outstanding - sb.sacked_bytes + doubled
    assert sb.high_rxt >= sb.snd_una
    assert all(r.end <= sb.high_rxt for r in recs if r.rtx_out)


# ---------------------------------------------------------------------- RFC 6675 walk-through


def test_rfc6675_walkthrough_ten_segments():
    sb = flight(10)
    assert sb.outstanding == 10_000 and sb.pipe() == 10_000
    assert sb.next_seg(SMSS) is None  # nothing lost, nothing sacked, no new data

    # ACK 1 with SACK S3..S5 = [2001, 5001). Segment view after it:
    #   S1 S2 | S3 S4 S5 | S6 S7 S8 S9 S10
    #   .  .  | S  S  S  | .  .  .  .  .
    # IsLost(S1), IsLost(S2): 3000 sacked bytes above > (3 - 1) * SMSS, and 3 segments >= DupThresh.
    # IsLost(S6..S10): nothing sacked above. SetPipe: S1, S2 lost and not retransmitted -> 0;
    # S6..S10 -> 5000.
    res = sb.on_ack(1, [seg(3)[:1] + seg(5)[1:]], now=1.0)
    assert res.acked_bytes == 0 and res.sacked_bytes == 3000 and not res.dsack
    assert [(r.start, r.end) for r in res.delivered] == [seg(3), seg(4), seg(5)]
    assert res.highest_sacked == 5001
    assert res.lost_marked == 2000
    assert sb.is_lost(1) and sb.is_lost(1001) and sb.is_lost(2000)
    assert not sb.is_lost(5001) and not sb.is_lost(9001)
    assert sb.sacked_bytes == 3000 and sb.lost_bytes == 2000
    assert sb.pipe() == 5000
    check_invariants(sb)

    # NextSeg rule (1): lowest lost octet, one SMSS; with room for 4 segments it spans S1+S2
    # but stops at the sacked S3.
    assert sb.next_seg(SMSS) == NextSeg(1, 1001, 1)
    assert sb.next_seg(4 * SMSS) == NextSeg(1, 2001, 1)

    # Retransmit S1: it stays lost (the original is gone) and its retransmission is out, so SetPipe
    # counts it once more (RFC 6675 (b)): 6000. HighRxt = 1000, i.e. high_rxt = 1001.
    sb.mark_retransmitted(*seg(1), now=1.0)
    assert sb.pipe() == 6000 and sb.high_rxt == 1001
    assert sb.next_seg(SMSS) == NextSeg(1001, 2001, 1)
    sb.mark_retransmitted(*seg(2), now=1.0)
    assert sb.pipe() == 7000 and sb.retrans_out_bytes == 2000
    # Rules (1) and (3) have nothing (no unsacked octet above HighRxt below the highest SACK);
    # rule (2) sends new data when there is some.
    assert sb.next_seg(SMSS) is None
    assert sb.next_seg(SMSS, unsent=5000) == NextSeg(10_001, 11_001, 2)
    check_invariants(sb)

    # ACK 1 with SACK S7..S9 (newest first) and S3..S5:
    #   S1 S2 | S3 S4 S5 | S6 | S7 S8 S9 | S10
    #   LO LO | S  S  S  | L  | S  S  S  | .
    # pipe = S1 rtx + S2 rtx + S10 = 3000.
    res = sb.on_ack(1, [(6001, 9001), (2001, 5001)], now=1.1)
    assert res.sacked_bytes == 3000 and not res.dsack and res.highest_sacked == 9001
    assert res.lost_marked == 1000  # S6
    assert sb.sacked_bytes == 6000 and sb.lost_bytes == 3000
    assert sb.pipe() == 3000
    assert sb.next_seg(SMSS) == NextSeg(*seg(6), 1)
    check_invariants(sb)

    # The retransmissions of S1, S2 arrive: ACK 5001 (S3..S5 were already held), SACK S7..S9.
    # Newly delivered: S1 and S2 (the sacked S3..S5 were reported when sacked).
    res = sb.on_ack(5001, [(6001, 9001)], now=1.2)
    assert res.acked_bytes == 5000 and res.sacked_bytes == 0
    assert [(r.start, r.end, r.retrans) for r in res.delivered] == [(1, 1001, 1), (1001, 2001, 1)]
    assert sb.snd_una == 5001 and sb.outstanding == 5000
    assert sb.sacked_bytes == 3000 and sb.lost_bytes == 1000 and sb.retrans_out_bytes == 0
    assert sb.pipe() == 1000  # S10
    assert spans(sb) == [
        (5001, 6001, "L"),
        (6001, 7001, "S"),
        (7001, 8001, "S"),
        (8001, 9001, "S"),
        (9001, 10001, ""),
    ]
    check_invariants(sb)


def test_rule3_resends_unsacked_data_below_highest_sack():
    # Only S10 sacked: 1000 bytes, one segment above S1..S9, so IsLost() is false for all of
    # them and rule (1) has nothing. Rule (3): the lowest unsacked octet above HighRxt (none yet)
    # and below the highest SACK, i.e. S1, then S2 after HighRxt passed S1.
    sb = flight(10)
    sb.on_ack(1, [seg(10)], now=1.0)
    assert sb.lost_bytes == 0
    assert sb.next_seg(SMSS) == NextSeg(*seg(1), 3)
    assert sb.next_seg(SMSS, rule3=False) is None
    sb.mark_retransmitted(*seg(1), now=1.0)
    # S1 not lost and resent: both copies count (RFC 6675 (a) and (b)).
    assert sb.pipe() == 9000 + 1000
    assert sb.next_seg(SMSS) == NextSeg(*seg(2), 3)
    # A large max_len stops at the highest SACK.
    assert sb.next_seg(100 * SMSS) == NextSeg(1001, 9001, 3)
    check_invariants(sb)


def test_islost_counts_small_segments_and_bytes():
    # Ten 100-byte records, SMSS 1000. IsLost() by segment count: three sacked records above.
    sb = Scoreboard(SMSS)
    for k in range(10):
        sb.send(1 + 100 * k, 101 + 100 * k, now=0.0)
    sb.on_ack(1, [(201, 301), (401, 501)])
    assert not sb.is_lost(1) and sb.lost_bytes == 0
    sb.on_ack(1, [(601, 701)])
    # Sacked above 1..200: three records (300 bytes, far below 2 * SMSS) -> lost.
    # Above 301..400 and 501..600 only two or one: not lost.
    assert sb.is_lost(1) and sb.is_lost(200)
    assert not sb.is_lost(301) and not sb.is_lost(501) and not sb.is_lost(701)
    assert sb.lost_bytes == 200
    assert spans(sb)[:2] == [(1, 101, "L"), (101, 201, "L")]
    sb.on_ack(1, [(801, 901)])  # now 301..400 has three above it
    assert sb.is_lost(301) and sb.lost_bytes == 300
    check_invariants(sb)


def test_islost_byte_threshold_is_strictly_more_than_two_smss():
    sb = flight(5)
    sb.on_ack(1, [(2001, 4001)])  # exactly 2 * SMSS in two segments above S1, S2
    assert not sb.is_lost(1) and sb.lost_bytes == 0
    sb.on_ack(1, [(2001, 4002)])  # one byte more
    assert sb.is_lost(1) and sb.lost_bytes == 2000
    check_invariants(sb)


def test_rack_mode_does_not_mark_by_islost():
    sb = flight(10, use_islost=False)
    sb.on_ack(1, [(2001, 8001)])
    assert sb.is_lost(1)  # the predicate still answers
    assert sb.lost_bytes == 0 and sb.pipe() == 4000
    assert sb.next_seg(SMSS) == NextSeg(1, 1001, 3)


# ---------------------------------------------------------------------- splitting


def test_sack_of_half_a_gso_record_splits_it():
    sb = Scoreboard(1448)
    rate = object()
    sb.send(1, 65_537, now=2.0, rate=rate)
    res = sb.on_ack(1, [(32_769, 65_537)], now=2.1)
    # 32 KB sacked above the first half: IsLost() holds for it (more than 2 * SMSS above).
    assert spans(sb) == [(1, 32_769, "L"), (32_769, 65_537, "S")]
    left, right = list(sb)
    assert left.xmit_time == right.xmit_time == 2.0
    assert left.rate is right.rate is rate
    assert [(r.start, r.end) for r in res.delivered] == [(32_769, 65_537)]
    assert res.sacked_bytes == 32_768 and res.lost_marked == 32_768 and sb.pipe() == 0
    check_invariants(sb)


def test_block_inside_a_record_splits_both_edges():
    sb = Scoreboard(1000)
    sb.send(1, 10_001, now=0.0)
    sb.on_ack(1, [(3001, 5001)])
    assert spans(sb) == [(1, 3001, ""), (3001, 5001, "S"), (5001, 10_001, "")]
    check_invariants(sb)


def test_split_copies_every_field_and_keeps_fin_on_the_right():
    rec = Record(1, 2001, 5.0, fin=True, rate="snap")
    rec.xmit_time, rec.retrans, rec.lost, rec.rtx_out = 7.0, 2, True, True
    right = rec.split(1001)
    assert (rec.start, rec.end, right.start, right.end) == (1, 1001, 1001, 2001)
    for name in ("xmit_time", "first_xmit_time", "retrans", "sacked", "lost", "rtx_out", "rate"):
        assert getattr(rec, name) == getattr(right, name), name
    assert rec.first_xmit_time == 5.0
    assert right.fin and not rec.fin
    with pytest.raises(ValueError):
        rec.split(1)


def test_cumulative_ack_trims_a_partly_acked_record():
    sb = Scoreboard(1000)
    sb.send(1, 65_537, now=0.0)
    sb.send(65_537, 65_538, now=0.0, fin=True)
    res = sb.on_ack(10_001, [], now=0.1)
    assert res.acked_bytes == 10_000
    assert [(r.start, r.end) for r in res.delivered] == [(1, 10_001)]
    assert spans(sb) == [(10_001, 65_537, ""), (65_537, 65_538, "")]
    assert sb.tail().fin and not sb.head().fin
    assert sb.snd_una == 10_001 and sb.pipe() == 55_537
    check_invariants(sb)
    res = sb.on_ack(65_538, [], now=0.2)
    assert len(sb) == 0 and sb.pipe() == 0 and res.delivered_bytes == 55_537
    check_invariants(sb)


def test_retransmission_of_part_of_a_record_splits_it():
    sb = Scoreboard(1000, use_islost=False)
    sb.send(1, 4001, now=0.0)
    assert sb.mark_lost(1, 4001) == 4000
    assert sb.pipe() == 0
    assert sb.next_seg(1000) == NextSeg(1, 1001, 1)
    sb.mark_retransmitted(1, 1001, now=1.0)
    assert spans(sb) == [(1, 1001, "LO"), (1001, 4001, "L")]
    assert sb.head().xmit_time == 1.0 and sb.head().retrans == 1
    assert sb.pipe() == 1000
    assert sb.next_seg(8000) == NextSeg(1001, 4001, 1)
    # The retransmission is declared lost too: it needs resending again. A bare sequence number
    # names the whole record holding it.
    assert sb.mark_lost(500) == 1000
    assert sb.mark_lost(sb.head()) == 0  # already awaiting retransmission
    assert sb.next_seg(1000) == NextSeg(1, 1001, 1) and sb.pipe() == 0
    check_invariants(sb)


# ---------------------------------------------------------------------- D-SACK (RFC 2883 §4)


def test_dsack_below_cumulative_ack():
    sb = flight(4)
    sb.on_ack(3001, [])
    # The peer got S2 twice: ACK 3001, first block [1001, 2001) is below the ACK.
    res = sb.on_ack(3001, [seg(2)])
    assert res.dsack and res.dsack_range == seg(2)
    assert res.sacked_bytes == 0 and res.delivered == []
    check_invariants(sb)


def test_dsack_inside_second_block():
    sb = flight(6)
    sb.on_ack(1, [(2001, 5001)])
    # A duplicate S4 while S1 is still missing: first block S4, contained in the second.
    res = sb.on_ack(1, [seg(4), (2001, 5001)])
    assert res.dsack and res.dsack_range == seg(4)
    assert res.sacked_bytes == 0
    check_invariants(sb)
    # Not a D-SACK: the first block is outside the second.
    res = sb.on_ack(1, [seg(6), (2001, 5001)])
    assert not res.dsack and res.sacked_bytes == 1000


def test_invalid_blocks_are_ignored_and_ack_beyond_snd_nxt_rejected():
    sb = flight(3)
    res = sb.on_ack(1, [(2001, 9001), (2001, 2001)])
    assert res.sacked_bytes == 0 and sb.sacked_bytes == 0
    with pytest.raises(ValueError):
        sb.on_ack(3002, [])


def test_old_ack_still_applies_its_sack_blocks():
    sb = flight(5)
    sb.on_ack(2001, [])
    res = sb.on_ack(1001, [(3001, 4001)])  # reordered older ACK
    assert res.acked_bytes == 0 and res.sacked_bytes == 1000 and sb.snd_una == 2001
    check_invariants(sb)


def test_send_must_be_contiguous():
    sb = Scoreboard(1000)
    sb.send(1, 101, now=0.0)
    with pytest.raises(ValueError):
        sb.send(200, 300, now=0.0)
    with pytest.raises(ValueError):
        sb.send(101, 101, now=0.0)


def test_memory_grows_with_records_not_bytes():
    big = Scoreboard(1448)
    big.send(1, 65_537, now=0.0)
    small = Scoreboard(1448)
    for k in range(64):
        small.send(1 + 1024 * k, 1 + 1024 * (k + 1), now=0.0)
    assert big.outstanding == small.outstanding
    assert small.memory_bytes() > 20 * big.memory_bytes() // 2
    assert big.peak_memory == big.memory_bytes()


# ---------------------------------------------------------------------- properties


@st.composite
def _block(draw, sb: Scoreboard):
    lo, hi = sb.snd_una - 50, sb.snd_nxt + 1
    a = draw(st.integers(lo, hi))
    b = draw(st.integers(lo, hi))
    return (min(a, b), max(a, b) + draw(st.integers(0, 1)))


def _random_program(data, use_islost: bool, only_lost_rtx: bool) -> None:
    sb = Scoreboard(100, use_islost=use_islost)
    sacked_model: set[int] = set()  # octets the peer reported holding (outstanding ones)
    now = 0.0
    for _ in range(data.draw(st.integers(1, 30), label="steps")):
        now += 0.01
        op = data.draw(st.sampled_from(["send", "send", "ack", "ack", "lost", "rtx", "next"]))
        if op == "send":
            n = data.draw(st.integers(1, 400))
            sb.send(sb.snd_nxt, sb.snd_nxt + n, now, fin=data.draw(st.booleans()))
        elif op == "ack":
            ack = data.draw(st.integers(sb.snd_una - 10, sb.snd_nxt))
            blocks = data.draw(st.lists(_block(sb), max_size=4))
            sacked_before, una_before, nxt = sb.sacked_bytes, sb.snd_una, sb.snd_nxt
            res = sb.on_ack(ack, blocks, now)
            applied = blocks[1:] if res.dsack else blocks
            for left, right in applied:
                if left < right <= nxt:
                    sacked_model.update(range(max(left, ack, una_before), right))
            sacked_model = {s for s in sacked_model if s >= sb.snd_una}
            removed = sacked_before + res.sacked_bytes - sb.sacked_bytes
            assert res.delivered_bytes == res.sacked_bytes + res.acked_bytes - removed
            assert res.acked_bytes == max(0, ack - una_before)
            pieces = res.delivered
            for a, b in zip(pieces, pieces[1:]):
                assert a.end <= b.start
            assert all(una_before <= p.start < p.end <= nxt for p in pieces)
        elif op == "lost" and sb.outstanding:
            a = data.draw(st.integers(sb.snd_una, sb.snd_nxt - 1))
            b = data.draw(st.integers(a + 1, sb.snd_nxt))
            sb.mark_lost(a, b)
        elif op == "rtx" and sb.outstanding and not only_lost_rtx:
            a = data.draw(st.integers(sb.snd_una, sb.snd_nxt - 1))
            b = data.draw(st.integers(a + 1, sb.snd_nxt))
            sb.mark_retransmitted(a, b, now)
        elif op == "next":
            nxt = sb.next_seg(data.draw(st.sampled_from([100, 300, 6400])), rule3=not only_lost_rtx)
            if nxt is not None:
                assert nxt.rule in (1, 3) and sb.snd_una <= nxt.start < nxt.end <= sb.snd_nxt
                if nxt.rule == 1:
                    assert all(r.needs_rtx for r in sb if r.start < nxt.end and r.end > nxt.start)
                sb.mark_retransmitted(nxt.start, nxt.end, now)
        check_invariants(sb)
        assert {s for r in sb if r.sacked for s in range(r.start, r.end)} == sacked_model
        if only_lost_rtx:
            assert sb.pipe() <= sb.outstanding
        if use_islost:
            # Every octet IsLost() condemns is marked (the converse need not hold: mark_lost).
            for r in sb:
                if not r.sacked and sb.is_lost(r.start):
                    assert r.lost


_FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.data(), st.booleans())
def test_random_programs_keep_invariants(data, use_islost):
    _random_program(data, use_islost, only_lost_rtx=False)


@_FAST
@given(st.data())
def test_pipe_within_flight_when_only_lost_data_is_resent(data):
    _random_program(data, use_islost=False, only_lost_rtx=True)
