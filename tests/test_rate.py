"""Delivery rate estimation (draft-cheng-iccrg-delivery-rate-estimation), driven by hand.

Each test plays the engine: it calls on_send for every transmission, on_delivered for every
piece an ACK covers, then generate, in the order the module docstring prescribes. Expected
values are worked out in the comments from the draft's definitions:

    send_elapsed = P.tx_time - P.first_tx_time
    ack_elapsed  = C.delivered_time - P.delivered_time
    interval     = max(send_elapsed, ack_elapsed)
    delivered    = C.delivered - P.delivered
    rate         = delivered / interval

Times are float seconds; `exactly` allows only float rounding (1e-12 relative), not slack.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usertcp.engine.rate import RateEstimator, RateSample, TxSnapshot

MSS = 1448
MS = 0.001


def exactly(x: float):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def ack(r: RateEstimator, now: float, *pieces, min_rtt=None, lost=None, prior_in_flight=0) -> RateSample:
    """One ACK: credit each (snapshot, nbytes, is_retrans) piece in order, then generate."""
    for piece in pieces:
        snap, n, *rest = piece
        r.on_delivered(snap, now, n, bool(rest and rest[0]))
    return r.generate(now, lost, prior_in_flight=prior_in_flight, min_rtt=min_rtt)


# ---------------------------------------------------------------------- (a) a steady flight


def test_steady_flight_reaches_one_segment_per_ms():
    """Ten 1448 B segments sent 1 ms apart; each ACKed 40 ms after it was sent, and each ACK
    clocks out one new segment at once (ACK clocking), so the flow stays at 10 in flight.

    First flight (seg k sent at k ms, k = 0..9):
      seg 0 finds nothing in flight, so first_tx_time = delivered_time = 0 ("upon transmitting").
      Every seg k therefore carries delivered=0, delivered_time=0, first_tx_time=0, tx=k ms.

    ACK of seg k at (40 + k) ms, k = 0..9: C.delivered = (k+1)*1448,
      send_elapsed = k ms - 0 = k ms, ack_elapsed = (40+k) ms - 0 = (40+k) ms,
      interval = (40+k) ms, rate = (k+1)*1448 / (40+k) ms:
        k=0: 1448 / 0.040 = 36200 B/s
        k=1: 2896 / 0.041 = 70634.146... B/s
        k=2: 4344 / 0.042 = 103428.571... B/s
      The estimate ramps up: the first flight's samples include the idle start.
      Choosing seg k moves C.first_tx_time to k ms.

    Second flight: seg 10+k is sent at (40+k) ms, right after the ACK of seg k, and carries
      delivered=(k+1)*1448, delivered_time=(40+k) ms, first_tx_time=k ms, tx=(40+k) ms.
    ACK of seg 10+k at (80+k) ms: C.delivered = (11+k)*1448,
      delivered = (11+k - (k+1))*1448 = 14480, send_elapsed = (40+k) - k = 40 ms,
      ack_elapsed = (80+k) - (40+k) = 40 ms, interval = 40 ms,
      rate = 14480 / 0.040 = 362000 B/s = 1448 B per ms: one segment per millisecond, the rate
      the flow was sent at.
    """
    r = RateEstimator()
    snaps: dict[int, TxSnapshot] = {}
    in_flight = 0
    for k in range(10):
        snaps[k] = r.on_send(k * MS, in_flight, MSS)
        in_flight += MSS
    assert (snaps[0].first_tx_time, snaps[0].delivered_time, snaps[0].delivered) == (0.0, 0.0, 0)
    assert (snaps[9].first_tx_time, snaps[9].delivered_time, snaps[9].tx_time) == (0.0, 0.0, exactly(9 * MS))

    first: list[RateSample] = []
    for k in range(10):
        now = 0.040 + k * MS
        rs = ack(r, now, (snaps[k], MSS), min_rtt=0.040, prior_in_flight=in_flight)
        in_flight -= MSS
        first.append(rs)
        snaps[10 + k] = r.on_send(now, in_flight, MSS)  # ACK clocking: one out per one in
        in_flight += MSS

    rs0, rs1, rs2 = first[:3]
    assert rs0.delivered == 1448 and rs0.send_elapsed == 0.0
    assert rs0.ack_elapsed == exactly(0.040) and rs0.interval == exactly(0.040)
    assert rs0.delivery_rate == exactly(36200.0)
    assert rs0.rtt == exactly(0.040) and rs0.prior_delivered == 0 and rs0.acked_sacked == 1448
    assert rs0.prior_in_flight == 10 * MSS and not rs0.is_app_limited and not rs0.is_retrans

    assert rs1.delivered == 2896
    assert rs1.send_elapsed == exactly(0.001) and rs1.ack_elapsed == exactly(0.041)
    assert rs1.interval == exactly(0.041) and rs1.delivery_rate == exactly(2896 / 0.041)
    assert rs2.delivered == 4344 and rs2.interval == exactly(0.042)
    assert rs2.delivery_rate == exactly(4344 / 0.042)
    assert first[9].delivered == 14480 and first[9].interval == exactly(0.049)

    # The second flight's snapshots, as worked out above.
    assert snaps[10].delivered == 1448 and snaps[10].delivered_time == exactly(0.040)
    assert snaps[10].first_tx_time == 0.0 and snaps[10].tx_time == exactly(0.040)
    assert snaps[12].delivered == 4344 and snaps[12].first_tx_time == exactly(0.002)

    for k in range(10):
        now = 0.080 + k * MS
        rs = ack(r, now, (snaps[10 + k], MSS), min_rtt=0.040)
        assert rs.delivered == 14480, k
        assert rs.send_elapsed == exactly(0.040) and rs.ack_elapsed == exactly(0.040), k
        assert rs.interval == exactly(0.040), k
        assert rs.delivery_rate == exactly(362_000.0), k  # 1448 B/ms
        assert rs.rtt == exactly(0.040) and rs.prior_delivered == (k + 1) * MSS, k
        assert rs.valid
    assert r.delivered == 20 * MSS
    assert r.delivery_rate == exactly(362_000.0)  # what tcp_info would report


# ---------------------------------------------------------------------- (b) stretch ACK


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_cumulative_ack_of_three_uses_the_most_recently_sent(order):
    """Segs 0, 1, 2 sent at 0, 1, 2 ms (nothing in flight before seg 0, so every snapshot has
    delivered=0, delivered_time=0, first_tx_time=0). One ACK at 42 ms covers all three.

    The sample must come from seg 2, the most recently sent, whatever order the pieces are
    reported in: send_elapsed = 2 ms - 0 = 2 ms, ack_elapsed = 42 ms - 0 = 42 ms,
    interval = 42 ms, delivered = 3*1448 - 0 = 4344, rate = 4344/0.042 = 103428.57 B/s,
    rtt = 42 - 2 = 40 ms. The next interval starts at seg 2's send time.
    """
    r = RateEstimator()
    snaps = [r.on_send(k * MS, k * MSS, MSS) for k in range(3)]
    rs = ack(r, 0.042, *[(snaps[k], MSS) for k in order])
    assert rs.delivered == 4344 and rs.acked_sacked == 4344
    assert rs.send_elapsed == exactly(0.002) and rs.ack_elapsed == exactly(0.042)
    assert rs.interval == exactly(0.042) and rs.delivery_rate == exactly(4344 / 0.042)
    assert rs.rtt == exactly(0.040)
    assert r.first_tx_time == exactly(0.002)


def test_same_send_time_tie_breaks_on_delivered():
    """In virtual time two sends can share an instant with an ACK processed between them: A is
    sent at t=5 ms with delivered=0, the ACK of an earlier segment lands at t=5 ms, and B is
    sent at t=5 ms with delivered=1448. B is the more recent: same tx_time, higher delivered.
    Reported B first, then A, the sample must still be B's: delivered = 3*1448 - 1448 = 2896.
    """
    r = RateEstimator()
    s0 = r.on_send(0.0, 0, MSS)
    a = r.on_send(0.005, MSS, MSS)
    ack(r, 0.005, (s0, MSS))
    b = r.on_send(0.005, MSS, MSS)
    assert (a.tx_time, a.delivered) == (b.tx_time, 0) and b.delivered == 1448
    rs = ack(r, 0.045, (b, MSS), (a, MSS))
    assert rs.prior_delivered == 1448 and rs.delivered == 2896


# ---------------------------------------------------------------------- (c) app-limited


def test_app_limited_phase_flags_samples_until_delivered_passes_the_mark():
    """Phase 1, t=0..3 ms: the application writes 4 segments; the sender sends them (0, 1, 2,
    3 ms), then has nothing more: mark_app_limited(in flight 4*1448 < cwnd, nothing pending)
    sets app_limited = delivered + in flight = 0 + 5792. The four snapshots were taken
    before, so they are not flagged. Their ACKs at 40..43 ms bring delivered to 5792, which
    does not pass the mark (5792 > 5792 is false), so it stays.

    Phase 2, t=100 ms: the application writes 2 segments. Seg 4 (100 ms) and seg 5 (101 ms) are
    sent while app_limited != 0: both flagged. With nothing left to send, the sender marks
    again: app_limited = 5792 + 2*1448 = 8688.
      ACK seg 4 at 140 ms: delivered 7240 <= 8688, mark kept; sample flagged. Seg 4 found
        nothing in flight, so first_tx_time = delivered_time = 100 ms: send_elapsed 0,
        ack_elapsed 40 ms, rate 1448/0.040 = 36200 B/s.
    Phase 3: the application now has plenty (pending >= mss: mark_app_limited does nothing).
      Seg 6 is sent at 140 ms: still flagged (the bubble is not delivered yet).
      ACK seg 5 at 141 ms: delivered 8688, not past 8688: mark kept, sample flagged.
      Seg 7 is sent at 141 ms: flagged.
      ACK seg 6 at 180 ms: delivered 10136 > 8688: the mark clears; seg 6's sample is flagged
        all the same (it was sent inside the phase).
      Seg 8 is sent at 180 ms: not flagged.
      ACK seg 7 at 181 ms: flagged (sent at 141 ms). ACK seg 8 at 220 ms: not flagged.
    """
    r = RateEstimator()
    cwnd = 10 * MSS
    s = [r.on_send(k * MS, k * MSS, MSS) for k in range(4)]
    assert r.mark_app_limited(4 * MSS, cwnd, pending_bytes=0, mss=MSS)
    assert r.app_limited == 5792
    assert not any(x.is_app_limited for x in s)
    for k in range(4):
        rs = ack(r, 0.040 + k * MS, (s[k], MSS))
        assert not rs.is_app_limited
    assert r.app_limited == 5792 and r.delivered == 5792

    s.append(r.on_send(0.100, 0, MSS))
    s.append(r.on_send(0.101, MSS, MSS))
    assert s[4].is_app_limited and s[5].is_app_limited
    assert r.mark_app_limited(2 * MSS, cwnd, pending_bytes=0, mss=MSS)
    assert r.app_limited == 8688

    rs4 = ack(r, 0.140, (s[4], MSS))
    assert rs4.is_app_limited and r.app_limited == 8688
    assert rs4.send_elapsed == 0.0 and rs4.ack_elapsed == exactly(0.040)
    assert rs4.delivery_rate == exactly(36200.0)

    assert not r.mark_app_limited(MSS, cwnd, pending_bytes=100 * MSS, mss=MSS)
    s.append(r.on_send(0.140, MSS, MSS))  # seg 6
    assert s[6].is_app_limited
    rs5 = ack(r, 0.141, (s[5], MSS))
    assert rs5.is_app_limited and r.app_limited == 8688 and r.delivered == 8688
    s.append(r.on_send(0.141, MSS, MSS))  # seg 7
    assert s[7].is_app_limited

    rs6 = ack(r, 0.180, (s[6], MSS))
    assert r.app_limited == 0 and rs6.is_app_limited
    s.append(r.on_send(0.180, MSS, MSS))  # seg 8
    assert not s[8].is_app_limited
    assert ack(r, 0.181, (s[7], MSS)).is_app_limited
    assert not ack(r, 0.220, (s[8], MSS)).is_app_limited


def test_app_limited_not_marked_when_window_full_or_repair_pending():
    """The draft's conditions one by one: data waiting, a full window, or lost data not yet
    retransmitted each mean the application is not the limit. Nothing in flight and nothing
    delivered marks app_limited = 1 (0 would mean "not app-limited")."""
    r = RateEstimator()
    assert not r.mark_app_limited(0, 10 * MSS, pending_bytes=MSS, mss=MSS)
    assert not r.mark_app_limited(10 * MSS, 10 * MSS, pending_bytes=0, mss=MSS)
    assert not r.mark_app_limited(MSS, 10 * MSS, pending_bytes=0, mss=MSS, lost_not_retransmitted=MSS)
    assert r.app_limited == 0 and not r.is_app_limited
    assert r.mark_app_limited(0, 10 * MSS, pending_bytes=MSS - 1, mss=MSS)
    assert r.app_limited == 1


# ---------------------------------------------------------------------- (d) ACK compression


def test_ack_compression_uses_the_longer_send_phase():
    """Segs 0 and 1 are sent at 0 and 1 ms (seg 0 finds nothing in flight: first_tx_time =
    delivered_time = 0; both snapshots carry delivered 0, times 0). The receiver's ACKs are
    aggregated on the way back: the ACK of seg 0 is held until 50 ms. Then delivered = 1448,
    delivered_time = 50 ms, first_tx_time = 0 (seg 0's send time).
    Segs 2, 3, 4 go out at 50, 51, 52 ms. Seg 1 is still in flight, so the interval does not
    restart: each carries delivered 1448, delivered_time 50 ms, first_tx_time 0.
    The next ACK, at 90 ms, covers segs 1..4 at once. Sample from seg 4, the newest:
      send_elapsed = 52 - 0 = 52 ms, ack_elapsed = 90 - 50 = 40 ms.
    The ACK phase is compressed (40 < 52), so interval = send_elapsed = 52 ms and
    rate = (5*1448 - 1448)/0.052 = 5792/0.052 = 111384.6 B/s, not the 5792/0.040 = 144800 B/s
    that the ACK phase alone would claim. rtt = 90 - 52 = 38 ms.
    """
    r = RateEstimator()
    s0 = r.on_send(0.0, 0, MSS)
    s1 = r.on_send(0.001, MSS, MSS)
    ack(r, 0.050, (s0, MSS))
    s = [r.on_send(0.050 + k * MS, (1 + k) * MSS, MSS) for k in range(3)]
    assert all(x.first_tx_time == 0.0 and x.delivered_time == exactly(0.050) for x in s)
    assert all(x.delivered == 1448 for x in s)
    rs = ack(r, 0.090, (s1, MSS), *[(x, MSS) for x in s], min_rtt=0.038)
    assert rs.send_elapsed == exactly(0.052) and rs.ack_elapsed == exactly(0.040)
    assert rs.ack_elapsed < rs.send_elapsed
    assert rs.interval == rs.send_elapsed
    assert rs.delivered == 5792
    assert rs.delivery_rate == exactly(5792 / 0.052)
    assert rs.rtt == exactly(0.038)


# ---------------------------------------------------------------------- (e) interval < min_rtt


def test_interval_shorter_than_min_rtt_is_discarded():
    """min_rtt is 40 ms. After an idle period seg 1 is sent at 1.000 s (nothing in flight:
    first_tx_time = delivered_time = 1.000 s) and retransmitted at 1.005 s (a premature loss
    probe), which replaces the record's snapshot: first_tx_time = delivered_time = 1.000 s
    (something is in flight, no restart), tx_time = 1.005 s. The original arrives and its ACK
    comes at 1.030 s; we cannot tell it from an ACK of the retransmission.
      send_elapsed = 1.005 - 1.000 = 5 ms, ack_elapsed = 1.030 - 1.000 = 30 ms,
      interval = 30 ms < min_rtt = 40 ms: no real flight is that short, the sample is
      discarded (delivery_rate None) although delivered = 1448 is still reported, and there is
      no RTT (Karn's rule).
    """
    r = RateEstimator()
    s0 = r.on_send(0.0, 0, MSS)
    assert ack(r, 0.040, (s0, MSS), min_rtt=0.040).valid  # 40 ms is not shorter than 40 ms
    r.on_send(1.000, 0, MSS)
    retx = r.on_send(1.005, MSS, MSS)
    assert retx.first_tx_time == 1.000 and retx.delivered_time == 1.000
    rs = ack(r, 1.030, (retx, MSS, True), min_rtt=0.040)
    assert rs.interval == exactly(0.030) and rs.delivered == 1448
    assert rs.delivery_rate is None and not rs.valid
    assert rs.is_retrans and rs.rtt is None
    # Without a min_rtt the same sample would have been used.
    r2 = RateEstimator()
    r2.on_send(1.000, 0, MSS)
    retx2 = r2.on_send(1.005, MSS, MSS)
    assert ack(r2, 1.030, (retx2, MSS, True)).delivery_rate == exactly(1448 / 0.030)


def test_float_rounding_does_not_discard_an_interval_equal_to_min_rtt():
    """0.3 - 0.1 is 0.19999999999999998 in binary floating point: an interval equal to min_rtt
    up to rounding is not "shorter than min_rtt"."""
    r = RateEstimator()
    s = r.on_send(0.1, 0, MSS)
    rs = ack(r, 0.3, (s, MSS), min_rtt=0.2)
    assert rs.interval < 0.2 and rs.valid


# ---------------------------------------------------------------------- (f) SACK, then cumulative


def test_sacked_then_cumulatively_acked_counts_once():
    """Segs 0, 1, 2 sent at 0, 1, 2 ms (snapshots: delivered 0, times 0). Seg 0 is lost.
      41 ms: ACK SACKs seg 1. delivered 1448. Sample: send 1 ms, ack 41 ms, interval 41 ms.
             Seg 1 becomes the start of the next send interval: first_tx_time = 1 ms.
      42 ms: ACK SACKs seg 2. delivered 2896. Sample from seg 2 (delivered 0 at send):
             delivered 2896, send 2 ms, ack 42 ms. first_tx_time = 2 ms.
      45 ms: seg 0 is retransmitted: delivered 2896, delivered_time 42 ms, first_tx 2 ms.
      85 ms: a cumulative ACK covers segs 0..2. An engine that reports all three pieces again
             must see segs 1 and 2 credited nothing: delivered = 3*1448 = 4344, not 7240.
             Sample from the retransmission: delivered 4344 - 2896 = 1448,
             send_elapsed 45 - 2 = 43 ms, ack_elapsed 85 - 42 = 43 ms, is_retrans, no RTT.
    """
    r = RateEstimator()
    s = [r.on_send(k * MS, k * MSS, MSS) for k in range(3)]
    rs1 = ack(r, 0.041, (s[1], MSS))
    assert (rs1.delivered, rs1.interval, rs1.rtt) == (1448, exactly(0.041), exactly(0.040))
    rs2 = ack(r, 0.042, (s[2], MSS))
    assert rs2.delivered == 2896 and rs2.send_elapsed == exactly(0.002)
    retx = r.on_send(0.045, 3 * MSS, MSS)
    assert (retx.delivered, retx.delivered_time, retx.first_tx_time) == (2896, exactly(0.042), exactly(0.002))
    rs = ack(r, 0.085, (retx, MSS, True), (s[1], MSS), (s[2], MSS))
    assert r.delivered == 3 * MSS
    assert rs.acked_sacked == MSS
    assert rs.delivered == 1448
    assert rs.send_elapsed == exactly(0.043) and rs.ack_elapsed == exactly(0.043)
    assert rs.delivery_rate == exactly(1448 / 0.043)
    assert rs.is_retrans and rs.rtt is None


def test_record_delivered_in_pieces_counts_each_byte_once():
    """One GSO transmission of two segments (2896 B): the second half is SACKed first, then a
    cumulative ACK covers the whole record and the engine reports its full size. Only the
    first half is new: 1448 + 1448 = 2896 in all. A snapshot without a size (the engine did
    not say) is credited once, whatever comes later."""
    r = RateEstimator()
    rec = r.on_send(0.0, 0, 2 * MSS)
    assert ack(r, 0.040, (rec, MSS)).acked_sacked == MSS
    assert ack(r, 0.041, (rec, 2 * MSS)).acked_sacked == MSS
    assert ack(r, 0.042, (rec, 2 * MSS)).acked_sacked == 0
    assert r.delivered == 2 * MSS
    r2 = RateEstimator()
    unsized = r2.on_send(0.0, 0)
    assert r2.on_delivered(unsized, 0.040, MSS) == MSS
    assert r2.on_delivered(unsized, 0.041, MSS) == 0


# ---------------------------------------------------------------------- (g) retransmissions


def test_retransmission_flags_the_sample_and_gives_no_rtt():
    """No SACK: segs 0, 1, 2 at 0, 1, 2 ms; seg 0 is lost, segs 1 and 2 arrive and draw
    duplicate ACKs (which deliver nothing we can name). Seg 0 is retransmitted at 45 ms. The
    cumulative ACK at 85 ms covers all three: the newest transmission among them is the
    retransmission (45 ms > 2 ms), so the sample is is_retrans. No RTT: the ACK's timing is
    the retransmission's; 85 - 2 = 83 ms from seg 2 would be the time seg 2 waited behind the
    hole, not a round trip. The rate is still usable: delivered = 3*1448 - 0,
    send_elapsed = 45 - 0 = 45 ms, ack_elapsed = 85 - 0 = 85 ms (delivered_time is still 0,
    nothing having been delivered before), rate = 4344/0.085.
    """
    r = RateEstimator()
    s = [r.on_send(k * MS, k * MSS, MSS) for k in range(3)]
    retx = r.on_send(0.045, 3 * MSS, MSS)
    rs = ack(r, 0.085, (retx, MSS, True), (s[1], MSS), (s[2], MSS), min_rtt=0.040)
    assert rs.is_retrans and rs.rtt is None
    assert rs.delivered == 4344 and rs.interval == exactly(0.085)
    assert rs.delivery_rate == exactly(4344 / 0.085)
    # The next ACK without retransmitted data gives an RTT again.
    s3 = r.on_send(0.085, 0, MSS)
    assert ack(r, 0.125, (s3, MSS)).rtt == exactly(0.040)


# ---------------------------------------------------------------------- bookkeeping


def test_ack_without_delivery_still_reports_losses():
    """An ACK that delivers nothing (a duplicate ACK without SACK) but during which the engine
    marked 2 segments lost: no rate, but losses and the in-flight figure reach the controller.
    `lost_bytes_now` is a running total, so losses are its growth since the previous ACK."""
    r = RateEstimator()
    r.on_send(0.0, 0, MSS)
    rs = r.generate(0.050, 2 * MSS, prior_in_flight=5 * MSS)
    assert rs.losses == 2 * MSS and rs.acked_sacked == 0 and rs.delivered == 0
    assert rs.delivery_rate is None and rs.rtt is None and rs.prior_in_flight == 5 * MSS
    assert r.generate(0.051, 2 * MSS).losses == 0
    assert r.generate(0.052, 3 * MSS).losses == MSS
    assert r.lost == 3 * MSS


def test_snapshot_records_lost_at_send_time_and_restart_after_idle():
    r = RateEstimator()
    s0 = r.on_send(0.0, 0, MSS)
    r.generate(0.010, MSS)  # one segment's worth marked lost
    s1 = r.on_send(0.020, MSS, MSS)
    assert (s0.lost, s1.lost) == (0, MSS)
    ack(r, 0.060, (s1, MSS))
    # Idle, then a new send with nothing in flight restarts both clocks at now.
    s2 = r.on_send(5.0, 0, MSS)
    assert (s2.first_tx_time, s2.delivered_time) == (5.0, 5.0)


def test_rate_sample_is_frozen():
    r = RateEstimator()
    rs = r.generate(0.0)
    with pytest.raises(AttributeError):
        rs.delivered = 5  # type: ignore[misc]


# ---------------------------------------------------------------------- any sequence of events


@settings(max_examples=120, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["send", "sack", "cum", "rexmit"]),
            st.integers(0, 5),  # which outstanding segment / how many
            st.integers(0, 3),  # time step, ms
        ),
        max_size=40,
    )
)
def test_invariants_over_random_events(events):
    """Whatever the engine does, in whatever order: each sent byte is credited once; a sample's
    delivered is never less than what its own ACK delivered (the pieces it credits were not yet
    delivered when the newest of them was sent); elapsed times are never negative; a usable
    rate is delivered/interval."""
    r = RateEstimator()
    now = 0.0
    nxt = 0  # next new segment number
    outstanding: dict[int, TxSnapshot] = {}  # segment -> current snapshot
    retransmitted: set[int] = set()
    acked: set[int] = set()
    for kind, k, dt in events:
        now += dt * MS
        flight = len(outstanding) * MSS
        if kind == "send":
            outstanding[nxt] = r.on_send(now, flight, MSS)
            nxt += 1
            continue
        holes = sorted(set(outstanding) - acked)  # a sender never resends what was SACKed
        if kind == "rexmit" and holes:
            seg = holes[k % len(holes)]
            outstanding[seg] = r.on_send(now, flight, MSS)
            retransmitted.add(seg)
            continue
        if not outstanding:
            continue
        segs = sorted(outstanding)
        chosen = segs[: k + 1] if kind == "cum" else [segs[k % len(segs)]]
        before = r.delivered
        for seg in chosen:
            r.on_delivered(outstanding[seg], now, MSS, seg in retransmitted)
            if kind == "cum":
                del outstanding[seg]
            acked.add(seg)
        rs = r.generate(now, prior_in_flight=flight, min_rtt=None)
        assert rs.acked_sacked == r.delivered - before
        assert rs.delivered >= rs.acked_sacked
        assert rs.send_elapsed >= 0 and rs.ack_elapsed >= 0
        if rs.valid:
            assert rs.interval > 0 and rs.delivery_rate == rs.delivered / rs.interval
        if rs.rtt is not None:
            assert rs.rtt >= 0 and not rs.is_retrans
    assert r.delivered == len(acked) * MSS
