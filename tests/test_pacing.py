"""The pacer (usertcp/engine/pacing.py): burst sizes, release times, lateness credit, default rate.

Numbers are worked by hand from the Linux formulas quoted in the module docstring.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usertcp.engine.pacing import (
    MIN_TSO_SEGS,
    PACING_SHIFT,
    Pacer,
    default_rate,
    pacing_in_slow_start,
)

MSS = 1448
MAX_PAYLOAD = 45 * MSS  # 65160: the engine's largest whole-segment GSO payload with timestamps
WIRE_HDR = 14 + 20 + 20 + 12  # Ethernet + IPv4 + TCP + timestamp option, per wire segment


def mbit(x: float) -> float:
    """Mbit/s in bytes/s."""
    return x * 1e6 / 8


def wire(payload: int) -> int:
    return payload + WIRE_HDR * -(-payload // MSS)


# ------------------------------------------------------------------ burst size


def test_constants_are_linuxs():
    assert PACING_SHIFT == 10 and MIN_TSO_SEGS == 2


def test_burst_at_50mbit_is_four_whole_segments():
    # 50 Mbit/s = 6,250,000 B/s; 1 ms of it is 6250 B, and Linux's rate >> 10 (1/1024 s) is
    # 6,250,000 >> 10 = 6103 B. Either way 4 whole segments of 1448: 5792 B.
    p = Pacer(MSS, rate=mbit(50))
    assert int(mbit(50)) >> 10 == 6103
    assert p.burst_bytes(MAX_PAYLOAD) == 4 * MSS == 5792


def test_burst_at_100mbit():
    # 12,500,000 >> 10 = 12207 B -> 8 segments (11584 B).
    assert Pacer(MSS, rate=mbit(100)).burst_bytes(MAX_PAYLOAD) == 8 * MSS


def test_burst_at_10gbit_is_capped_by_max_payload():
    # 1.25e9 >> 10 = 1,220,703 B, far above what one super-segment may carry.
    p = Pacer(MSS, rate=mbit(10_000))
    assert p.burst_bytes(MAX_PAYLOAD) == MAX_PAYLOAD
    assert p.burst_bytes(10 * MSS) == 10 * MSS


def test_burst_at_low_rate_is_at_least_two_segments():
    # 1 Mbit/s: 125,000 >> 10 = 122 B, less than one segment: tcp_min_tso_segs gives 2.
    assert Pacer(MSS, rate=mbit(1)).burst_bytes(MAX_PAYLOAD) == 2 * MSS
    # ... but never more than max_payload.
    assert Pacer(MSS, rate=mbit(1)).burst_bytes(MSS) == MSS


def test_burst_unpaced_is_max_payload():
    p = Pacer(MSS)
    assert p.rate is None
    assert p.burst_bytes(MAX_PAYLOAD) == MAX_PAYLOAD


def test_burst_min_rtt_allowance_for_close_peers():
    p = Pacer(MSS, rate=mbit(50))
    # min_rtt 1 ms: 1000 us >> 9 = 1, allowance 65160 >> 1 = 32580; 6103 + 32580 = 38683 B
    # -> 26 segments (37648 B).
    assert p.burst_bytes(MAX_PAYLOAD, min_rtt=0.001) == 26 * MSS
    # 100 us: 100 >> 9 = 0, the whole max_payload is added: capped.
    assert p.burst_bytes(MAX_PAYLOAD, min_rtt=0.0001) == MAX_PAYLOAD
    # 40 ms: 40000 >> 9 = 78 >= 32 bits: no allowance.
    assert p.burst_bytes(MAX_PAYLOAD, min_rtt=0.040) == 4 * MSS


@given(rate=st.floats(1e3, 1e10), mss=st.integers(500, 9000), segs=st.integers(1, 64))
def test_burst_is_whole_segments_within_bounds(rate, mss, segs):
    max_payload = segs * mss
    b = Pacer(mss, rate=rate).burst_bytes(max_payload)
    assert b % mss == 0
    assert min(2 * mss, max_payload) <= b <= max_payload
    # ~1 ms of data when neither bound applies.
    if 2 * mss <= (int(rate) >> 10) <= max_payload:
        assert (int(rate) >> 10) - mss < b <= (int(rate) >> 10)


def test_mss_can_change():
    p = Pacer(MSS, rate=mbit(50))
    p.mss = 1000
    assert p.burst_bytes(MAX_PAYLOAD) == 6000


# ------------------------------------------------------------------ release times


def test_unpaced_never_holds():
    p = Pacer(MSS)
    assert p.on_send(0.0, 65000) is None
    assert p.can_send(0.0)
    assert p.next_send_time() is None and p.next_send_time(0.0) is None


def test_first_send_is_not_held():
    p = Pacer(MSS, rate=mbit(50))
    assert p.can_send(0.0) and p.next_send_time() is None


def test_bursts_are_spaced_len_over_rate():
    rate = mbit(50)
    p = Pacer(MSS, rate=rate)
    b = wire(p.burst_bytes(MAX_PAYLOAD))  # 5792 + 4 * 66 = 6056 wire bytes
    assert b == 6056
    d = b / rate  # 968.96 us
    assert d == pytest.approx(968.96e-6)
    now = 1.0
    releases = []
    for _ in range(100):
        assert p.can_send(now)
        releases.append(p.on_send(now, b))
        assert not p.can_send(now)
        assert p.next_send_time(now) == releases[-1]
        now = p.next_send_time()
    for k, r in enumerate(releases):
        assert r == pytest.approx(1.0 + (k + 1) * d, abs=1e-12)


def test_can_send_flips_at_the_release_time():
    p = Pacer(MSS, rate=1e6)
    r = p.on_send(0.0, 1000)  # 1 ms
    assert r == pytest.approx(0.001)
    assert not p.can_send(0.000999)
    assert p.can_send(r)
    assert p.next_send_time(r) is None
    assert p.next_send_time() == r  # without `now`, the (past) time itself


def test_sending_early_is_booked_after_the_previous_send():
    p = Pacer(MSS, rate=1e6)
    p.on_send(0.0, 1000)
    assert p.on_send(0.0, 1000) == pytest.approx(0.002)  # not 0.001: the path is booked
    assert p.on_send(0.0005, 1000) == pytest.approx(0.003)


def test_slack_accepts_an_early_wakeup_and_books_at_release():
    p = Pacer(MSS, rate=1e6, slack=20e-6)
    p.on_send(0.0, 1000)
    assert not p.can_send(0.001 - 30e-6)
    assert p.can_send(0.001 - 10e-6)
    assert p.next_send_time(0.001 - 10e-6) is None
    assert p.on_send(0.001 - 10e-6, 1000) == pytest.approx(0.002)


def test_idle_does_not_build_credit():
    rate = 1e6
    p = Pacer(MSS, rate=rate)
    d = 0.001  # 1000 wire bytes at 1 MB/s
    p.on_send(0.0, 1000)
    # Idle for 10 s, then send as fast as allowed: the first goes at once, the second only
    # d/2 later (half a burst of credit, Linux's len/2), and from then on every d.
    t = 10.0
    sends = []
    for _ in range(50):
        assert p.can_send(t)
        sends.append(t)
        t = p.on_send(t, 1000)
    assert sends[1] - sends[0] == pytest.approx(d / 2)
    for a, b in zip(sends[1:], sends[2:]):
        assert b - a == pytest.approx(d)
    # 50 sends after 10 s idle take 48.5 d: nowhere near the ~10,000 sends 10 s would "owe".
    assert sends[-1] - sends[0] == pytest.approx(48.5 * d)


@pytest.mark.parametrize("idle", [0.0011, 0.01, 1.0, 3600.0])
def test_credit_after_idle_is_the_same_whatever_the_idle_time(idle):
    p = Pacer(MSS, rate=1e6)
    p.on_send(0.0, 1000)
    t = 0.001 + idle
    assert p.on_send(t, 1000) == pytest.approx(t + 0.0005)


@pytest.mark.parametrize("late_fraction", [0.0, 0.1, 0.25, 0.5])
def test_lateness_up_to_half_a_burst_loses_no_rate(late_fraction):
    p = Pacer(MSS, rate=1e6)
    d = 0.001
    t = 0.0
    releases = []
    for _ in range(1000):
        r = p.on_send(t, 1000)
        releases.append(r)
        t = r + late_fraction * d  # the timer fires late by this much every time
    for k, r in enumerate(releases):
        assert r == pytest.approx((k + 1) * d, abs=1e-9)


def test_lateness_credit_is_bounded():
    p = Pacer(MSS, rate=1e6)
    d = 0.001
    r0 = p.on_send(0.0, 1000)
    # 0.8 d late: only d/2 is credited, the other 0.3 d is lost.
    r1 = p.on_send(r0 + 0.8 * d, 1000)
    assert r1 == pytest.approx(r0 + 0.8 * d + d - 0.5 * d)
    assert r1 - r0 == pytest.approx(1.3 * d)
    # Lateness always late by 0.8 d: the rate falls to 1 / 1.3 of the set rate.
    t, sent, start = r1 + 0.8 * d, 0, r1 + 0.8 * d
    for _ in range(1000):
        t = p.on_send(t, 1000) + 0.8 * d
        sent += 1000
    assert sent / (t - start) == pytest.approx(1e6 / 1.3, rel=1e-6)


def test_credit_fraction_zero_is_strict():
    p = Pacer(MSS, rate=1e6, credit_fraction=0.0)
    r0 = p.on_send(0.0, 1000)
    assert p.on_send(r0 + 0.0002, 1000) == pytest.approx(r0 + 0.0012)


def test_rate_change_applies_from_the_next_send():
    p = Pacer(MSS, rate=1e6)
    r = p.on_send(0.0, 1000)
    p.set_rate(2e6)
    assert p.next_send_time() == r  # already booked
    assert p.on_send(r, 1000) == pytest.approx(r + 0.0005)


def test_unpacing_forgets_the_release_time():
    p = Pacer(MSS, rate=1e6)
    p.on_send(0.0, 100_000)
    assert not p.can_send(0.05)
    p.set_rate(None)
    assert p.can_send(0.05) and p.next_send_time() is None and p.rate is None
    p.set_rate(1e6)
    assert p.can_send(0.05)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_rate_must_be_positive(bad):
    with pytest.raises(ValueError):
        Pacer(MSS, rate=bad)


def test_reset_keeps_the_rate():
    p = Pacer(MSS, rate=1e6)
    p.on_send(0.0, 1000)
    p.reset()
    assert p.can_send(0.0) and p.rate == 1e6


# ------------------------------------------------------------------ long-run rate


def run_jittery(rate: float, sizes: list[int], jitter: list[float], start: float = 0.0) -> float:
    """Send `sizes` (wire bytes) with a timer that fires `jitter[k] * d_k` after each release
    time (d_k: the k-th send's own duration); the average rate over the sends."""
    p = Pacer(MSS, rate=rate)
    t = start
    first = None
    for size, j in zip(sizes, jitter):
        nxt = p.next_send_time(t)
        if nxt is not None:
            t = nxt + j * size / rate
        assert p.can_send(t)
        if first is None:
            first = t
        p.on_send(t, size)
    # Everything sent occupies [first send, release after the last send).
    return sum(sizes) / (p.next_send_time() - first)


def test_long_run_rate_with_a_jittery_timer():
    rng = random.Random(7)
    rate = mbit(50)
    n = 10_000
    sizes = [wire(rng.choice([2, 3, 4]) * MSS) for _ in range(n)]
    jitter = [rng.uniform(0.0, 0.5) for _ in range(n)]
    assert run_jittery(rate, sizes, jitter) == pytest.approx(rate, rel=1e-3)


@settings(max_examples=20, deadline=None)
@given(
    rate=st.floats(1e5, 2e9),
    seed=st.integers(0, 2**32 - 1),
    max_late=st.floats(0.0, 0.5),
    start=st.floats(0.0, 1e5),
)
def test_long_run_rate_property(rate, seed, max_late, start):
    rng = random.Random(seed)
    n = 10_000
    sizes = [wire(rng.randint(1, 45) * MSS) for _ in range(n)]
    jitter = [rng.uniform(0.0, max_late) for _ in range(n)]
    assert run_jittery(rate, sizes, jitter, start) == pytest.approx(rate, rel=1e-3)


# ------------------------------------------------------------------ default rate


def test_default_rate_slow_start_is_200_percent():
    # cwnd 10 segments of 1448, srtt 40 ms: cwnd/srtt = 362,000 B/s; 200% = 724,000 B/s.
    assert default_rate(14480, 0.040, True) == pytest.approx(724_000)


def test_default_rate_congestion_avoidance_is_120_percent():
    assert default_rate(14480, 0.040, False) == pytest.approx(434_400)


def test_default_rate_uses_max_of_cwnd_and_in_flight():
    # Linux: max(snd_cwnd, packets_out).
    assert default_rate(14480, 0.040, False, in_flight=28960) == pytest.approx(868_800)
    assert default_rate(14480, 0.040, False, in_flight=1448) == pytest.approx(434_400)


def test_default_rate_cap_and_missing_rtt():
    assert default_rate(14480, 0.040, True, max_rate=500_000) == 500_000
    assert default_rate(14480, None, True) is None
    assert default_rate(14480, 0.0, True) is None


def test_pacing_slow_start_is_linuxs_half_ssthresh_test():
    assert pacing_in_slow_start(10, 100)
    assert not pacing_in_slow_start(50, 100)  # approaching the end of slow start
    assert not pacing_in_slow_start(60, 100)


def test_default_rate_feeds_the_pacer():
    # BDP-sized cwnd on a 1 Gbit/s, 40 ms path in congestion avoidance: 5 MB / 40 ms * 1.2
    # = 150 MB/s = 1.2 Gbit/s; a burst is then 146,484 B, capped at the 45-segment payload.
    rate = default_rate(5_000_000, 0.040, False)
    assert rate == pytest.approx(150e6)
    p = Pacer(MSS, rate=rate)
    assert p.burst_bytes(MAX_PAYLOAD) == MAX_PAYLOAD
