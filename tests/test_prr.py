"""Proportional Rate Reduction (RFC 6937, RFC 9937), driven ACK by ACK.

The worked examples count in segments, as the RFCs' figures do: with ``mss=1`` every quantity
below is a number of segments. The scoreboard is played by hand: pipe (RFC 6675's estimate of
what is in flight) drops by one for every segment an ACK SACKs and by the segments it deems
lost, and rises by one for every segment sent.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usertcp.engine.prr import PRR_CRB, PRR_RFC9937, PRR_SSRB, VARIANTS, Prr

# ---------------------------------------------------------------------- single loss, 20 segments


def single_loss(prr: Prr, recover_fs: int) -> dict[int, tuple[int, int, str]]:
    """The RFC 9937 §8 scenario (the one RFC 6937 §3.1 also uses): bulk data, Reno,
    cwnd = FlightSize = pipe = 20 segments, segment 0 lost, ssthresh set to 10 when recovery
    starts, Limited Transmit (RFC 3042) sending one new segment on each of the first two
    duplicate ACKs. ACK #k SACKs segment k (k = 1..19), ACKs #20 and #21 SACK the two Limited
    Transmit segments, ACK #22 is the cumulative ACK that the retransmission draws.

    Returns, per ACK, (cwnd, pipe after the ACK and before sending, what was sent).
    """
    rows: dict[int, tuple[int, int, str]] = {}
    pipe = 20
    for a in (1, 2):  # Limited Transmit, before recovery: cwnd is still 20
        pipe -= 1
        rows[a] = (20, pipe, "N")
        pipe += 1
    prr.enter(10, recover_fs, now=0.0)
    new_sent = 0  # new segments sent in recovery: all still unacknowledged at ACK #22
    for a in range(3, 22):
        # ACK #3 SACKs segment 3, and with three segments SACKed above it segment 0 counts as
        # lost (RFC 6675 IsLost): pipe drops by two. Every later ACK SACKs one segment.
        pipe -= 2 if a == 3 else 1
        sndcnt = prr.on_ack(1, pipe)
        sent = ""
        for _ in range(sndcnt):
            sent += "R" if prr.prr_out == 0 else "N"
            prr.on_sent(1)
        new_sent += sent.count("N")
        rows[a] = (prr.cwnd, pipe, sent)
        pipe += len(sent)
    cwnd = prr.exit()  # ACK #22 covers everything up to the new data sent in recovery
    rows[22] = (cwnd, new_sent, "N" * (cwnd - new_sent))
    return rows


def columns(rows):
    return (
        [rows[a][0] for a in range(1, 23)],
        [rows[a][1] for a in range(1, 23)],
        [rows[a][2] for a in range(1, 23)],
    )


def test_rfc9937_example_1_single_loss():
    """RFC 9937 §8, Example 1, PRR, ACK by ACK. RecoverFS leaves out the two segments SACKed
    before the ACK that starts recovery: 22 outstanding - 2 = 20, so each delivered segment
    releases ssthresh/RecoverFS = 10/20 of a segment and PRR sends on every other ACK.

    ACK #3: prr_delivered 1, pipe 18 > 10: sndcnt = ceil(1*10/20) - 0 = 1 -> the retransmission.
    ACK #4: prr_delivered 2: ceil(20/20) - 1 = 0.   ACK #5: ceil(30/20) - 1 = 1 -> N.
    ... and so on, one new segment on every odd ACK, cwnd = pipe + sndcnt falling by one every
    two ACKs, to ACK #18: ceil(160/20) - 8 = 0, pipe 11.
    ACK #19: pipe 10 is no longer above ssthresh, so the reduction bound applies (CRB, the ACK
        does not advance SND.UNA): min(ssthresh - pipe, max(17 - 8, 1)) = min(0, 9) = 0.
    ACK #20: pipe 9: min(10 - 9, max(18 - 8, 1)) = 1 -> N.
    ACK #21: pipe 9: min(1, max(19 - 9, 1)) = 1 -> N.
    ACK #22: recovery ends, cwnd = ssthresh = 10 with 9 in flight -> N.

    The RFC's figure differs at ACKs #19 and #20 only: it shows cwnd 11 and a send at #19
    (pipe 10, as here), then pipe 10 and no send at #20. That is what the proportional part
    gives at #19 (ceil(17*10/20) - 8 = 1), but the pseudocode of RFC 9937 §4, like RFC 6937
    §3 and Linux, uses the proportional part only while pipe > ssthresh, and at #19 pipe equals
    ssthresh. We follow the pseudocode: the same segment leaves one ACK later, and every
    other entry, and the 13 transmissions in all, match the figure.
    """
    cwnd, pipe, sent = columns(single_loss(Prr(1, PRR_RFC9937), recover_fs=22 - 2))
    acks = list(range(1, 23))
    figure_cwnd = [20, 20, 19, 18, 18, 17, 17, 16, 16, 15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 10]
    figure_pipe = [19, 19, 18, 18, 17, 17, 16, 16, 15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9]
    figure_sent = ["N", "N", "R"] + ["", "N"] * 8 + ["", "N", "N"]
    for a, c, p, s, fc, fp, fs in zip(acks, cwnd, pipe, sent, figure_cwnd, figure_pipe, figure_sent):
        if a in (19, 20):
            continue
        assert (c, p, s) == (fc, fp, fs), f"ACK #{a}"
    assert (cwnd[18], pipe[18], sent[18]) == (10, 10, "")  # ACK #19 (figure: 11, 10, "N")
    assert (cwnd[19], pipe[19], sent[19]) == (10, 9, "N")  # ACK #20 (figure: 10, 10, "")
    assert "".join(sent) == "".join(figure_sent) == "NNR" + "N" * 10


@pytest.mark.parametrize("variant", [PRR_SSRB, PRR_CRB])
def test_rfc6937_single_loss(variant):
    """The same scenario under RFC 6937, whose RecoverFS is the whole FlightSize at the start of
    recovery, 22 segments, the two already SACKed included. Each delivered segment is then worth
    10/22 of a segment, so PRR falls behind in the middle of the round:

      ACK   pipe  prr_delivered  ceil(pd*10/22)  prr_out before  sndcnt  cwnd  sent
       3     18        1              1               0            1     19    R
       4     18        2              1               1            0     18
       5     17        3              2               1            1     18    N
       7     16        5              3               2            1     17    N
       9     15        7              4               3            1     16    N
      11     14        9              5               4            1     15    N
      12     14       10              5               5            0     14
      13     13       11              5               5            0     13        <- lags
      14     12       12              6               5            1     13    N
      16     11       14              7               6            1     12    N
      17     11       15              7               7            0     11
      18     10       16        (pipe = ssthresh: bound)   min(10-10, ..) = 0   10
      19      9       17        bound: min(10-9, 17-7 [+1 SSRB]) = 1          10    N
      20      9       18        min(1, ...) = 1                                10    N
      21      9       19        min(1, ...) = 1                                10    N
      22   recovery over: cwnd = ssthresh = 10, 9 new segments in flight        N

    (even ACKs 6..10 and 15 are like #4: sndcnt 0.) With one loss the flight never drops
    below ssthresh - 1, so CRB and SSRB agree; the 13 transmissions in all are the same as
    RFC 9937's, only later.
    """
    cwnd, pipe, sent = columns(single_loss(Prr(1, variant), recover_fs=22))
    assert cwnd == [20, 20, 19, 18, 18, 17, 17, 16, 16, 15, 15, 14, 13, 13, 12, 12, 11, 10, 10, 10, 10, 10]
    assert pipe == [19, 19, 18, 18, 17, 17, 16, 16, 15, 15, 14, 14, 13, 12, 12, 11, 11, 10, 9, 9, 9, 9]
    assert sent == ["N", "N", "R"] + ["", "N"] * 4 + ["", "", "N", "", "N", "", "", "N", "N", "N", "N"]


def test_quota_is_in_bytes_unless_whole_segments():
    """RFC 6937 counts bytes. The example with 1448-byte segments (ssthresh 10, RecoverFS 20
    segments): ACK #3 allows ceil(1448*10/20) = 724 bytes, half a segment, so a sender of full
    segments cannot even send the retransmission; on ACK #4, ceil(2*1448*10/20) - 0 = 1448 it
    can; ACK #5: ceil(3*1448/2) - 1448 = 724 again.
    whole_segments=True rounds the quota up to whole segments, which is Linux's arithmetic and
    gives the figure's pattern in bytes: 1448 on #3 (R), 0 on #4, 1448 on #5 (N)."""
    mss = 1448
    prr = Prr(mss, PRR_RFC9937)
    prr.enter(10 * mss, 20 * mss, now=0.0)
    assert prr.on_ack(mss, 18 * mss) == 724  # ACK #3
    assert prr.on_ack(mss, 17 * mss) == 1448  # ACK #4, nothing sent on #3
    prr.on_sent(mss)
    assert prr.on_ack(mss, 17 * mss) == 724  # ACK #5

    seg = Prr(mss, PRR_RFC9937, whole_segments=True)
    seg.enter(10 * mss, 20 * mss, now=0.0)
    assert seg.on_ack(mss, 18 * mss) == mss  # ACK #3: R
    seg.on_sent(mss)
    assert seg.on_ack(mss, 18 * mss) == 0  # ACK #4
    assert seg.on_ack(mss, 17 * mss) == mss  # ACK #5: N


# ---------------------------------------------------------------------- burst loss: SSRB vs CRB


def burst(prr: Prr) -> list[tuple[int, int]]:
    """RFC 9937 §8's second scenario, first round: 20 segments, segments 0..14 lost. ACKs #15
    and #16 SACK segments 15 and 16 and clock out the two Limited Transmit segments; ACK #17
    SACKs a third segment, recovery starts and all of 0..14 count as lost:
    pipe = 22 outstanding - 3 SACKed - 15 lost = 4, far below ssthresh = 10. ACKs #18, #19 and
    (for the Limited Transmit segments) #20, #21 SACK one segment each. Returns (pipe, sndcnt)
    per ACK #17..#21, pipe as seen before sending."""
    prr.enter(10, 22, now=0.0)
    pipe = 22 - 3 - 15
    out = []
    for a in range(17, 22):
        if a > 17:
            pipe -= 1
        n = prr.on_ack(1, pipe)
        prr.on_sent(n)
        out.append((pipe, n))
        pipe += n
    return out


def test_ssrb_and_crb_differ_when_pipe_is_below_ssthresh():
    """Below ssthresh the reduction bound decides (RFC 6937 §3):

      CRB:  limit = prr_delivered - prr_out: one segment out per segment delivered, so pipe
            stays at 4 (packet conservation):
              #17 pipe 4, min(10-4, 1-0) = 1;  #18 pipe 4, min(6, 2-1) = 1;  ... every ACK 1.
      SSRB: limit = max(prr_delivered - prr_out, DeliveredData) + MSS: one extra segment per
            ACK, slow start, so pipe climbs back to ssthresh within the round:
              #17 pipe 4: min(6, max(1, 1) + 1) = 2  -> pipe 6
              #18 pipe 5: min(5, max(0, 1) + 1) = 2  -> pipe 7   (prr_delivered 2, prr_out 2)
              #19 pipe 6: min(4, max(-1, 1) + 1) = 2 -> pipe 8
              #20 pipe 7: min(3, 2) = 2 -> 9;  #21 pipe 8: min(2, 2) = 2 -> pipe 10 = ssthresh.
      RFC 9937: none of these ACKs advances SND.UNA, so no slow-start bonus: it behaves like
            CRB here (max(prr_delivered - prr_out, DeliveredData) = 1).
    """
    assert burst(Prr(1, PRR_CRB)) == [(4, 1)] * 5
    assert burst(Prr(1, PRR_SSRB)) == [(4, 2), (5, 2), (6, 2), (7, 2), (8, 2)]
    assert burst(Prr(1, PRR_RFC9937)) == [(4, 1)] * 5


def test_rfc9937_slow_start_bonus_needs_a_safe_ack():
    """RFC 9937 §4: one SMSS more only when the ACK advances SND.UNA and no further loss is
    indicated. pipe 4, ssthresh 10, prr_delivered - prr_out = 0, DeliveredData 2:
    safe -> min(6, max(0, 2) + 1) = 3; otherwise 2."""
    for advanced, loss, expected in [(True, False, 3), (True, True, 2), (False, False, 2)]:
        prr = Prr(1, PRR_RFC9937)
        prr.enter(10, 20, now=0.0)
        assert prr.on_ack(2, 4, snd_una_advanced=advanced, further_loss=loss) == expected


# ---------------------------------------------------------------------- corner rules


def test_fast_retransmit_is_forced_out():
    """Recovery starts with pipe already at ssthresh: the bound gives min(10 - 10, ...) = 0 and
    the lost segment would wait for the timer. RFC 9937 §4: prr_out is 0 and SndCnt is 0, so
    SndCnt = SMSS, on every ACK until something has gone out. With the rule switched off
    (RFC 6937 to the letter) nothing may be sent."""
    for variant in VARIANTS:
        prr = Prr(1448, variant)
        prr.enter(10 * 1448, 20 * 1448, now=0.0)
        assert prr.on_ack(1448, 10 * 1448) == 1448 and prr.forced
        assert prr.on_ack(1448, 10 * 1448) == 1448 and prr.forced  # not sent yet: still owed
        prr.on_sent(1448)
        assert prr.on_ack(1448, 10 * 1448) == 0 and not prr.forced  # once out, never again
    strict = Prr(1448, PRR_SSRB, force_fast_retransmit=False)
    strict.enter(10 * 1448, 20 * 1448, now=0.0)
    assert strict.on_ack(1448, 10 * 1448) == 0 and not strict.forced


def test_rfc9937_ack_delivering_nothing_changes_nothing():
    """RFC 9937 §6.2: DeliveredData 0 leaves PRR's state and the window alone; what may be
    sent is what the unchanged cwnd allows (here cwnd 19 from ACK #3, pipe 18 -> 1 more, or
    0 once it went out). RFC 6937 has no such rule and recomputes: with prr_delivered still
    1, ceil(1*10/20) - 1 = 0."""
    prr = Prr(1, PRR_RFC9937)
    prr.enter(10, 20, now=0.0)
    assert prr.on_ack(1, 18) == 1 and prr.cwnd == 19
    assert prr.on_ack(0, 18) == 1 and prr.prr_delivered == 1 and prr.cwnd == 19
    prr.on_sent(1)
    assert prr.on_ack(0, 19) == 0
    old = Prr(1, PRR_SSRB)
    old.enter(10, 20, now=0.0)
    old.on_ack(1, 18)
    old.on_sent(1)
    assert old.on_ack(0, 18) == 0 and old.prr_delivered == 1


def test_delivered_data_without_sack():
    """RFC 6937 §2 without SACK: a duplicate ACK stands for one SMSS delivered; an ACK that
    advances SND.UNA counts its advance minus one SMSS per preceding duplicate ACK.
      three dupacks: 1448 each; partial ACK advancing 5 segments: 5*1448 - 3*1448 = 2896.
      three dupacks; partial ACK advancing 1 segment: 0, two segments of credit left over;
      then an ACK advancing 4 segments: 4*1448 - 2*1448 = 2896. The sum, 3+0+... equals the
      forward progress."""
    mss = 1448
    prr = Prr(mss)
    prr.enter(10 * mss, 20 * mss, now=0.0)
    assert [prr.delivered_without_sack(0, True) for _ in range(3)] == [mss] * 3
    assert prr.delivered_without_sack(5 * mss, False) == 2 * mss
    assert [prr.delivered_without_sack(0, True) for _ in range(3)] == [mss] * 3
    assert prr.delivered_without_sack(mss, False) == 0
    assert prr.delivered_without_sack(4 * mss, False) == 2 * mss


def test_rfc9937_caps_dupack_credit_at_recover_fs():
    """RFC 9937: once prr_delivered has reached RecoverFS, further duplicate ACKs (without
    SACK) are not counted as deliveries; RFC 6937 keeps counting them."""
    for variant, expected in [(PRR_RFC9937, 0), (PRR_SSRB, 1)]:
        prr = Prr(1, variant)
        prr.enter(2, 4, now=0.0)
        for _ in range(4):
            prr.on_ack(prr.delivered_without_sack(0, True), 3)
        assert prr.prr_delivered == 4
        assert prr.delivered_without_sack(0, True) == expected


def test_lifecycle_and_argument_checks():
    prr = Prr(1448)
    with pytest.raises(RuntimeError):
        prr.on_ack(1448, 0)
    prr.on_sent(1448)  # outside recovery: not counted
    assert prr.prr_out == 0
    prr.enter(5000, 10000, now=1.5)
    assert prr.in_recovery and prr.entered_at == 1.5
    prr.on_sent(1448)
    assert prr.prr_out == 1448
    assert prr.exit() == 5000 and not prr.in_recovery and prr.cwnd == 5000
    prr.enter(4000, 8000, now=2.0)  # a new episode starts from zero
    assert (prr.prr_delivered, prr.prr_out, prr.forced) == (0, 0, False)
    with pytest.raises(ValueError):
        Prr(1448, "prr-xyz")
    with pytest.raises(ValueError):
        Prr(0)
    with pytest.raises(ValueError):
        prr.enter(0, 8000, now=0.0)


# ---------------------------------------------------------------------- what RFC 6937 allows


@st.composite
def recoveries(draw):
    variant = draw(st.sampled_from(VARIANTS))
    whole = draw(st.booleans())
    mss = draw(st.sampled_from([1, 536, 1448]))
    recover_fs = draw(st.integers(1, 60)) * mss + draw(st.integers(0, mss - 1))
    ssthresh = draw(st.integers(1, recover_fs))
    pipe0 = draw(st.integers(0, recover_fs))
    # RFC 9937 returns early on an ACK that delivers nothing (and keeps the old window), so the
    # RFC 6937 bound is checked on ACKs that do deliver; the RFC 6937 variants also get empty ones.
    low = 1 if variant == PRR_RFC9937 else 0
    acks = draw(
        st.lists(
            st.tuples(
                st.integers(low, 3 * mss),  # DeliveredData
                st.integers(0, 2 * mss),  # bytes newly marked lost by this ACK
                st.floats(0.0, 1.0),  # share of sndcnt the sender actually uses
                st.booleans(),  # SND.UNA advanced
            ),
            min_size=1,
            max_size=40,
        )
    )
    return variant, whole, mss, recover_fs, ssthresh, pipe0, acks


@settings(max_examples=300, deadline=None)
@given(recoveries())
def test_never_sends_more_than_rfc6937_allows(case):
    """Over random ACK sequences, with a sender that uses any part of what each ACK allows:

    - while pipe > ssthresh (RFC 6937 §3's proportional part), no ACK lets prr_out go past
      ceil(prr_delivered * ssthresh / RecoverFS), and as long as every ACK so far was in that
      regime, prr_out <= ceil(prr_delivered * ssthresh / RecoverFS) holds outright;
    - below it, no ACK takes pipe past ssthresh;
    - PRR-CRB never sends more than was delivered (packet conservation; with whole_segments,
      by less than one SMSS more);
    the only exception everywhere being the one forced fast retransmit (one SMSS while
    prr_out is 0). With whole_segments the quota is that CEIL rounded up to whole SMSS.
    """
    variant, whole, mss, recover_fs, ssthresh, pipe, acks = case
    prr = Prr(mss, variant, whole_segments=whole)
    prr.enter(ssthresh, recover_fs, now=0.0)
    all_proportional = True
    ever_forced = False
    for delivered, lost, share, advanced in acks:
        pipe = max(0, pipe - delivered - lost)
        out_before = prr.prr_out
        sndcnt = prr.on_ack(delivered, pipe, snd_una_advanced=advanced, further_loss=lost > 0)
        forced_now = prr.forced
        assert not forced_now or (out_before == 0 and sndcnt == mss)
        ever_forced = ever_forced or forced_now
        assert sndcnt >= 0
        sent = math.floor(sndcnt * share)
        prr.on_sent(sent)
        quota = -(-prr.prr_delivered * ssthresh // recover_fs)  # CEIL
        if whole:
            quota = -(-quota // mss) * mss
        if pipe > ssthresh:
            if forced_now:
                assert prr.prr_out <= mss
            else:
                assert prr.prr_out <= max(out_before, quota)
        else:
            all_proportional = False
            assert pipe + sent <= max(ssthresh, pipe + (mss if forced_now else 0))
        if all_proportional:
            assert prr.prr_out <= max(quota, mss if ever_forced else 0)
        if variant == PRR_CRB:
            # (whole segments: the rounded-up quota may run ahead by less than one SMSS)
            slack = (mss - 1 if whole else 0) + (mss if ever_forced else 0)
            assert prr.prr_out <= prr.prr_delivered + slack
        pipe += sent
