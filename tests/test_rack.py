"""RACK-TLP (RFC 8985) on the scoreboard: hand-worked examples and a property.

Times are binary fractions (1/128 s steps and the like) so that sums such as
xmit_ts + RACK.rtt + reo_wnd are exact in floating point and deadlines compare exactly.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from usertcp.engine.rack import Probe, Rack, sent_after
from usertcp.engine.scoreboard import Scoreboard

SMSS = 1000
MIN_RTT = 0.125
SRTT = 0.125  # reo_wnd = min(mult * MIN_RTT / 4, SRTT) = mult * 1/32


def seg(k: int) -> tuple[int, int]:
    return 1 + SMSS * (k - 1), 1 + SMSS * k


def setup(**kw) -> tuple[Scoreboard, Rack]:
    sb = Scoreboard(SMSS, use_islost=False)
    return sb, Rack(sb, **kw)


def ack(sb, rack, cum, blocks, now, **kw):
    res = sb.on_ack(cum, blocks, now)
    kw.setdefault("min_rtt", MIN_RTT)
    kw.setdefault("srtt", SRTT)
    timer = rack.on_ack(res.delivered, now, dsack=res.dsack, **kw)
    return res, timer


def flags(sb):
    return [("S" if r.sacked else "") + ("L" if r.lost else "") + ("O" if r.rtx_out else "") for r in sb]


def test_sent_after_breaks_ties_by_end_seq():
    assert sent_after(2.0, 10, 1.0, 99)
    assert sent_after(1.0, 20, 1.0, 10)
    assert not sent_after(1.0, 10, 1.0, 10)
    assert not sent_after(1.0, 99, 2.0, 10)


# ---------------------------------------------------------------------- §6.2 detection


def test_three_segment_flight_last_sacked():
    # S1, S2, S3 leave in one burst at t = 1 (equal times: end_seq orders them). At t = 1.125 an
    # ACK sacks S3 only. RACK.segment = S3, RACK.rtt = 0.125. No reordering seen, one segment
    # sacked (< DupThresh), not in recovery, so reo_wnd = min_RTT / 4 = 0.03125.
    # S1 and S2 were sent before S3: lost at 1 + 0.125 + 0.03125 = 1.15625, not yet.
    sb, rack = setup()
    for k in (1, 2, 3):
        sb.send(*seg(k), now=1.0)
    _, timer = ack(sb, rack, 1, [seg(3)], now=1.125)
    assert rack.rtt == 0.125 and rack.xmit_ts == 1.0 and rack.end_seq == 3001
    assert rack.reo_wnd == 0.03125
    assert timer == 1.15625 and rack.timer == timer
    assert sb.lost_bytes == 0 and rack.last_marked == 0
    # Early wake-up: nothing yet, same deadline.
    assert rack.on_timer(1.15) == 1.15625 and sb.lost_bytes == 0
    # The reordering timer: both lost, nothing pending.
    assert rack.on_timer(1.15625) is None
    assert rack.last_marked == 2000 and flags(sb) == ["L", "L", "S"]
    assert sb.next_seg(2 * SMSS).start == 1 and sb.pipe() == 0


def test_timer_policy_latest_versus_earliest():
    # S1 at 1, S2 at 1 + 1/128, S3 at 1 + 2/128; S3 sacked 0.125 after it left.
    # Deadlines: S1 1.15625, S2 1.1640625. RFC 8985 §6.2 step 5 arms for the latest.
    for earliest, expected in ((False, 1.1640625), (True, 1.15625)):
        sb, rack = setup(earliest_timer=earliest)
        for k in (1, 2, 3):
            sb.send(*seg(k), now=1.0 + (k - 1) / 128)
        _, timer = ack(sb, rack, 1, [seg(3)], now=1.0 + 2 / 128 + 0.125)
        assert timer == expected
        if earliest:
            assert rack.on_timer(1.15625) == 1.1640625 and flags(sb) == ["L", "", "S"]
            assert rack.on_timer(1.1640625) is None and flags(sb) == ["L", "L", "S"]


def test_segments_sent_after_rack_segment_are_not_judged():
    # S1, S2 at 0, S3 at 0.5, S4 just after. S3 sacked at 0.625: RACK.rtt = 0.125, and S1, S2
    # are due at 0 + 0.125 + 0.03125, long past. S4 was sent after S3, so S3's delivery says
    # nothing about it: not lost, and no timer for it either.
    sb, rack = setup()
    for k, t in ((1, 0.0), (2, 0.0), (3, 0.5), (4, 0.5 + 1 / 128)):
        sb.send(*seg(k), now=t)
    _, timer = ack(sb, rack, 1, [seg(3)], now=0.625)
    assert flags(sb) == ["L", "L", "S", ""] and timer is None


def test_gso_record_half_sacked_loses_the_front_half():
    # One 64 KB super-segment; the peer sacks the back half. The front half has the same
    # transmit time and a lower end: sent before, so lost once rtt + reo_wnd has passed.
    sb, rack = setup()
    sb.send(1, 65_537, now=0.0)
    _, timer = ack(sb, rack, 1, [(32_769, 65_537)], now=0.125)
    assert [(r.start, r.end) for r in sb] == [(1, 32_769), (32_769, 65_537)]
    # 32 sacked segments >= DupThresh and no reordering seen: reo_wnd = 0, lost at once.
    assert rack.reo_wnd == 0.0 and timer is None
    assert flags(sb) == ["L", "S"] and rack.last_marked == 32_768


def test_zero_window_in_recovery_and_nonzero_once_reordering_seen():
    sb, rack = setup()
    for k in (1, 2):
        sb.send(*seg(k), now=0.0)
    ack(sb, rack, 1, [seg(2)], now=0.125, in_recovery=True)
    assert rack.reo_wnd == 0.0
    # S1's original arrives late (never retransmitted, below RACK.fack): reordering.
    ack(sb, rack, 2001, [], now=0.25, in_recovery=True)
    assert rack.reordering_seen
    assert rack.reo_wnd_value(in_recovery=True, srtt=SRTT) == MIN_RTT / 4
    # Bounded by SRTT.
    assert rack.reo_wnd_value(in_recovery=False, srtt=0.01) == 0.01


def test_retransmission_delivered_late_is_not_reordering():
    sb, rack = setup()
    for k in (1, 2):
        sb.send(*seg(k), now=0.0)
    ack(sb, rack, 1, [seg(2)], now=0.125)
    sb.mark_lost(*seg(1))
    sb.mark_retransmitted(*seg(1), now=0.25)
    ack(sb, rack, 2001, [], now=0.375)
    assert not rack.reordering_seen
    assert rack.rtt == 0.125 and rack.xmit_ts == 0.25 and rack.end_seq == 1001


def test_in_order_cumulative_ack_of_several_segments_is_not_reordering():
    sb, rack = setup()
    for k in (1, 2, 3):
        sb.send(*seg(k), now=0.0)
    ack(sb, rack, 3001, [], now=0.125)
    assert not rack.reordering_seen and rack.fack == 3001


def test_fast_ack_of_a_retransmission_is_not_an_rtt_sample():
    # S1 sent at 0, retransmitted at 1. An ACK for it at 1.0625 would give 0.0625 < min_RTT:
    # it must be the original's ACK (§6.2 step 2), so neither RACK.rtt nor RACK.segment move.
    sb, rack = setup()
    sb.send(*seg(1), now=0.0)
    sb.send(*seg(2), now=0.0)
    sb.mark_retransmitted(*seg(1), now=1.0)
    ack(sb, rack, 1001, [], now=1.0625)
    assert rack.rtt is None and rack.xmit_ts is None
    # Same story when TSecr echoes the original transmission's time.
    sb.mark_retransmitted(*seg(2), now=2.0)
    ack(sb, rack, 2001, [], now=2.25, tsecr_time=0.0)
    assert rack.rtt is None
    # A plausible one is taken.
    sb.send(*seg(3), now=3.0)
    sb.mark_retransmitted(*seg(3), now=4.0)
    ack(sb, rack, 3001, [], now=4.25, tsecr_time=4.0)
    assert rack.rtt == 0.25 and rack.xmit_ts == 4.0


def test_lost_retransmission_is_detected_and_needs_resending():
    sb, rack = setup()
    for k in (1, 2, 3):
        sb.send(*seg(k), now=0.0)
    # S2, S3 sacked at 0.25: RACK.rtt = 0.25, S1 due at 0.28125 -- pending.
    _, timer = ack(sb, rack, 1, [seg(2), seg(3)], now=0.25)
    assert flags(sb) == ["", "S", "S"] and timer == 0.28125
    assert rack.on_timer(0.28125) is None and flags(sb) == ["L", "S", "S"]
    sb.mark_retransmitted(*seg(1), now=0.3125)
    sb.send(*seg(4), now=0.3125 + 1 / 128)  # new data after the retransmission
    assert flags(sb) == ["LO", "S", "S", ""]
    # S4 sacked 0.1875 after it left, in recovery without reordering (reo_wnd = 0): the
    # retransmission of S1, sent before S4, was due at 0.3125 + 0.1875 = 0.5 and is lost too.
    ack(sb, rack, 1, [seg(4), (1001, 3001)], now=0.5 + 1 / 128, in_recovery=True)
    assert rack.rtt == 0.1875 and rack.reo_wnd == 0.0
    assert flags(sb) == ["L", "S", "S", "S"]
    assert sb.next_seg(SMSS).start == 1


def test_rto_marks_head_and_overdue_segments():
    sb, rack = setup()
    sb.send(*seg(1), now=0.5)
    sb.send(*seg(2), now=0.5 + 1 / 128)
    sb.send(*seg(3), now=0.9375)
    _, timer = ack(sb, rack, 1, [seg(2)], now=0.625 + 1 / 128)  # RACK.rtt = 0.125
    assert timer == 0.65625 and flags(sb) == ["", "S", ""]
    # RTO at 1.0: S1 is the head; S3, sent 0.0625 ago, is not overdue (due 1.09375).
    rack.tlp_end_seq = 3001
    assert rack.on_rto(1.0) == 1000
    assert flags(sb) == ["L", "S", ""] and rack.tlp_end_seq is None and rack.timer is None
    # A later, backed-off RTO: S3 is overdue now.
    assert rack.on_rto(1.25) == 1000 and flags(sb) == ["L", "S", "L"]


def test_rto_without_rtt_marks_everything():
    sb, rack = setup()
    sb.send(*seg(1), now=0.0)
    sb.send(*seg(2), now=0.0)
    assert rack.on_rto(1.0) == 2000 and sb.pipe() == 0


# ---------------------------------------------------------------------- §6.2 step 4


def test_reo_wnd_grows_with_dsack_once_per_round_and_decays_after_16_recoveries():
    sb, rack = setup()
    for k in range(1, 11):
        sb.send(*seg(k), now=0.0)
    ack(sb, rack, 2001, [], now=0.125)
    assert rack.reo_wnd_mult == 1 and rack.reo_wnd == MIN_RTT / 4
    # A D-SACK: the window grows by one quarter min_RTT; the round lasts until snd_una
    # reaches what was snd_nxt then (10001).
    ack(sb, rack, 2001, [seg(1)], now=0.25)
    assert rack.reo_wnd_mult == 2 and rack.dsack_round == 10_001 and rack.reo_wnd_persist == 16
    assert rack.reo_wnd == 2 * MIN_RTT / 4
    ack(sb, rack, 3001, [seg(2)], now=0.375)  # same round: no growth
    assert rack.reo_wnd_mult == 2
    for k in range(11, 13):
        sb.send(*seg(k), now=0.375)
    ack(sb, rack, 10_001, [], now=0.5)  # round over
    ack(sb, rack, 10_001, [seg(3)], now=0.625)
    assert rack.reo_wnd_mult == 3 and rack.dsack_round == 12_001
    assert rack.reo_wnd == SRTT * 0 + 3 * MIN_RTT / 4
    # Bounded by SRTT.
    assert rack.reo_wnd_value(False, 0.05) == 0.05
    # Sixteen recoveries without D-SACK bring it back to one quarter.
    for i in range(16):
        ack(sb, rack, 10_001, [], now=1.0 + i, exiting_recovery=True)
        assert rack.reo_wnd_mult == (3 if i < 15 else 1)
    assert rack.reo_wnd_persist == 0


# ---------------------------------------------------------------------- TLP (§7)


def test_pto_values():
    sb, rack = setup()
    sb.send(*seg(1), now=0.0)
    # One segment in flight: 2 * SRTT + max_ack_delay.
    assert rack.pto(0.0, srtt=0.125, rto_expire=None) == 0.25 + 0.2
    sb.send(*seg(2), now=0.0)
    assert rack.pto(0.0, srtt=0.125, rto_expire=None) == 0.25
    assert rack.pto(0.0, srtt=0.125, rto_expire=None, flight_size=1) == 0.25 + 0.2
    # No SRTT: 1 s.
    assert rack.pto(0.0, srtt=None, rto_expire=None) == 1.0
    # Never past the RTO.
    assert rack.pto(10.0, srtt=0.125, rto_expire=10.125) == 0.125
    assert rack.pto(10.0, srtt=None, rto_expire=10.5) == 0.5
    rack2 = Rack(sb, max_ack_delay=0.025)
    assert rack2.pto(0.0, srtt=0.125, rto_expire=None, flight_size=SMSS) == 0.275


def test_schedule_pto_conditions():
    sb, rack = setup()
    assert rack.schedule_pto(0.0, srtt=0.125, rto_expire=1.0, in_recovery=False) is None  # empty
    for k in (1, 2, 3):
        sb.send(*seg(k), now=0.0)
    assert rack.schedule_pto(0.0, srtt=0.125, rto_expire=1.0, in_recovery=False) == 0.25
    assert rack.schedule_pto(0.0, srtt=0.125, rto_expire=1.0, in_recovery=True) is None
    ack(sb, rack, 1, [seg(3)], now=0.125)
    assert rack.schedule_pto(0.125, srtt=0.125, rto_expire=1.0, in_recovery=False) is None


def test_probe_new_data_or_last_segment():
    sb, rack = setup()
    sb.send(1, 3501, now=0.0)
    assert rack.tlp_probe(new_data=10_000) is None  # no RTT sample yet
    rack.note_rtt_sample()
    # New data available and allowed: one SMSS of it.
    probe = rack.tlp_probe(new_data=10_000)
    assert probe == Probe(3501, 4501, False)
    assert rack.tlp_end_seq == 4501 and not rack.tlp_is_retrans
    sb.send(probe.start, probe.end, now=0.5)
    assert rack.tlp_probe(new_data=0) is None  # one probe per episode
    assert rack.tlp_on_ack(4501) is False and rack.tlp_end_seq is None  # new data delivered
    assert rack.tlp_probe(new_data=0) is None  # no RTT sample since the last probe
    rack.note_rtt_sample()
    # No new data: the last segment sent, [4001, 4501) of the last record [3501, 4501).
    assert rack.tlp_probe(new_data=0) == Probe(3501, 4501, True)
    assert rack.tlp_is_retrans and rack.tlp_end_seq == 4501


def test_probe_retransmits_the_last_smss_piece_of_a_gso_record():
    sb, rack = setup()
    sb.send(1, 4001, now=0.0)
    rack.note_rtt_sample()
    assert rack.tlp_probe() == Probe(3001, 4001, True)
    sb2 = Scoreboard(SMSS, use_islost=False)
    sb2.send(1, 3501, now=0.0)
    sb2.send(3501, 3502, now=0.0, fin=True)
    rack2 = Rack(sb2)
    rack2.note_rtt_sample()
    assert rack2.tlp_probe() == Probe(3501, 3502, True)  # the FIN is the last segment


def _retrans_probe() -> Rack:
    sb, rack = setup()
    for k in (1, 2, 3):
        sb.send(*seg(k), now=0.0)
    rack.note_rtt_sample()
    assert rack.tlp_probe() == Probe(2001, 3001, True)
    sb.mark_retransmitted(2001, 3001, now=0.5)
    return rack


def test_tlp_probe_repairing_a_loss_calls_for_congestion_control():
    rack = _retrans_probe()
    assert rack.tlp_on_ack(1001) is False and rack.tlp_end_seq == 3001  # below the probe
    assert rack.tlp_on_ack(3001) is False and rack.tlp_end_seq == 3001  # ambiguous: wait
    assert rack.tlp_on_ack(4001) is True and rack.tlp_end_seq is None


def test_tlp_dsack_for_the_probe_means_no_loss():
    rack = _retrans_probe()
    assert rack.tlp_on_ack(3001) is False
    assert rack.tlp_on_ack(3001, dsack_range=(2001, 3001)) is False
    assert rack.tlp_end_seq is None


def test_tlp_dupack_without_sack_ends_episode():
    rack = _retrans_probe()
    assert rack.tlp_on_ack(3001, dupack_without_sack=True) is False
    assert rack.tlp_end_seq is None


# ---------------------------------------------------------------------- property


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_rack_marks_only_what_was_sent_before_a_delivery_and_is_overdue(data):
    """Random flights, SACKs and timer wake-ups: every record RACK marks lost was sent before
    RACK.segment and is overdue; every unmarked in-flight one sent before it is not overdue and
    no later than the returned timer."""
    sb, rack = setup()
    now = 0.0
    for _ in range(data.draw(st.integers(1, 25))):
        now += data.draw(st.sampled_from([0.0, 1 / 256, 1 / 64, 1 / 8]))
        op = data.draw(st.sampled_from(["send", "send", "ack", "timer", "rtx"]))
        before = [(r.start, r.end, r.needs_rtx) for r in sb]
        if op == "send":
            n = data.draw(st.integers(1, 3000))
            sb.send(sb.snd_nxt, sb.snd_nxt + n, now)
            continue
        if op == "rtx":
            nxt = sb.next_seg(2000)
            if nxt is not None:
                sb.mark_retransmitted(nxt.start, nxt.end, now)
            continue
        if op == "ack" and sb.outstanding:
            cum = data.draw(st.integers(sb.snd_una, sb.snd_nxt))
            a = data.draw(st.integers(sb.snd_una, sb.snd_nxt))
            b = data.draw(st.integers(a, sb.snd_nxt))
            _, timer = ack(sb, rack, cum, [(a, b)] if a < b else [], now)
        else:
            timer = rack.on_timer(now)
        if rack.xmit_ts is None:
            assert timer is None
            continue
        wait = rack.rtt + rack.reo_wnd
        for r in sb:
            if r.sacked:
                continue
            was = any(s <= r.start < e and n for s, e, n in before)
            newly = r.needs_rtx and not was
            if newly:
                assert sent_after(rack.xmit_ts, rack.end_seq, r.xmit_time, r.end)
                assert r.xmit_time + wait <= now
            elif not r.needs_rtx and sent_after(rack.xmit_ts, rack.end_seq, r.xmit_time, r.end):
                due = r.xmit_time + wait
                assert due > now and timer is not None and due <= timer


def test_a_train_of_pure_dsacks_counts_as_one_round():
    """After everything sent is acknowledged, D-SACKs for a burst of spurious retransmissions
    arrive on ACKs that deliver nothing: they belong to one round trip and widen the
    reordering window once, not once per D-SACK."""
    sb = Scoreboard(1000, use_islost=False)
    sb.send(1, 3001, 0.0)
    rack = Rack(sb)
    sb.on_ack(3001, (), 0.1)
    for k in range(5):
        res = sb.on_ack(3001, [(1 + 1000 * (k % 3), 1001 + 1000 * (k % 3))], 0.2 + k * 0.001)
        assert res.dsack
        rack.on_ack(res.delivered, 0.2 + k * 0.001, min_rtt=0.1, srtt=0.1, dsack=True)
    assert rack.reo_wnd_mult == 2
