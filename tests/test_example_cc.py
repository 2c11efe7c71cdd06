"""The README's worked example, examples/cc/scalable.py, loaded by path as the README loads it.

It must keep loading, keep its parameters, and keep doing what defines Scalable TCP (Kelly 2003;
Linux net/ipv4/tcp_scalable.c): in congestion avoidance one segment more per min(cwnd, ai_cnt)
segments acknowledged, and a window of cwnd - cwnd/8 after a loss. First the hooks with
synthetic ACKs (MSS = 1000 bytes, so the arithmetic can be followed by hand), then the real
engine over a simulated 20 Mbit/s, 40 ms path in virtual time, where the same rules must show in
the per-ACK log. Nothing here depends on wall-clock time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from usertcp.cc import AckSample, CCLoadError, CongestionEvent, UndoEvent, load, resolve
from usertcp.engine.connection import Connection
from usertcp.sim.link import Link
from usertcp.sim.receiver import Receiver
from usertcp.sim.run import simulate
from usertcp.sources import PatternSource

REPO = Path(__file__).resolve().parent.parent
SPEC = "examples/cc/scalable.py:Scalable"  # as the README writes it, from the repository
MSS = 1000


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def ack(cc, segs: int, *, app_limited: bool = False) -> None:
    cc.on_ack(AckSample(now=0.0, acked_bytes=segs * cc.mss, rtt=0.04, srtt=0.04, min_rtt=0.04,
                        bytes_in_flight=cc.cwnd, mss=cc.mss, app_limited=app_limited))


def in_ca(cwnd_segs: int, **params):
    """The example in congestion avoidance at `cwnd_segs` segments."""
    cc = load(SPEC, MSS, 0.0, params=params)
    cc.cwnd = cc.ssthresh = cwnd_segs * MSS
    return cc


# ---------------------------------------------------------------------- loading


def test_loads_by_path_with_and_without_the_class_name():
    cls = resolve(SPEC)
    assert cls.name == "scalable" and cls.__name__ == "Scalable"
    # Without ":Scalable" (the file's one controller) and by absolute path: the same class
    # (each resolve executes the file afresh, so compare what it is, not the object).
    for other in (resolve("examples/cc/scalable.py"), resolve(str(REPO / SPEC))):
        assert (other.__module__, other.__qualname__) == (cls.__module__, cls.__qualname__)
    assert set(cls.params) == {"ai_cnt", "decrease"}
    assert cls.params["ai_cnt"].default == 100 and cls.params["decrease"].default == 0.125
    assert cls.cong_control is None  # window-based: the engine's recovery (PRR) applies


def test_params_are_checked():
    cc = load(SPEC, MSS, 0.0, params={"ai_cnt": "50", "decrease": "0.25"})
    assert cc.ai_cnt == 50 and cc.decrease == 0.25
    with pytest.raises(CCLoadError, match="ai_cnt"):
        load(SPEC, MSS, 0.0, params={"ai_cnt": "0"})
    with pytest.raises(CCLoadError, match="no parameter"):
        load(SPEC, MSS, 0.0, params={"beta": "0.7"})


# ---------------------------------------------------------------------- the hooks


def test_slow_start_is_linux_and_starts_at_ten_segments():
    cc = load(SPEC, MSS)
    assert cc.cwnd == 10 * MSS and cc.in_slow_start()
    ack(cc, 2)
    assert cc.cwnd == 12 * MSS


def test_growth_is_one_segment_per_ai_cnt_acked_above_ai_cnt():
    cc = in_ca(200)  # above ai_cnt = 100: one segment per 100 acknowledged, 0.5% of cwnd
    for _ in range(49):
        ack(cc, 2)
    assert cc.cwnd == 200 * MSS  # 98 acknowledged
    ack(cc, 2)
    assert cc.cwnd == 201 * MSS  # 100
    for _ in range(100):
        ack(cc, 2)
    assert cc.cwnd == 203 * MSS  # 300: Reno would be at 201 (one per cwnd = 200)
    cc = in_ca(200, ai_cnt=50)
    for _ in range(100):
        ack(cc, 2)
    assert cc.cwnd == 204 * MSS  # one per 50


def test_growth_is_renos_below_ai_cnt():
    cc = in_ca(40)  # min(cwnd, 100) = cwnd: one segment per window, as Reno
    for _ in range(20):
        ack(cc, 2)
    assert cc.cwnd == 41 * MSS
    ack(cc, 40, app_limited=True)  # app-limited: no growth
    assert cc.cwnd == 41 * MSS


def test_loss_keeps_seven_eighths_of_cwnd():
    cc = in_ca(200)
    cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=190 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 175 * MSS  # 200 - 200/8, from cwnd (not the flight), as Linux
    cc.on_recovery_exit(0.0, 175 * MSS)
    assert cc.cwnd == 175 * MSS
    cc = in_ca(200, decrease=0.25)
    cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=200 * MSS, mss=MSS, cause="dupack"))
    assert cc.ssthresh == 150 * MSS
    cc = in_ca(2)
    cc.on_congestion_event(CongestionEvent(now=0.0, bytes_in_flight=2 * MSS, mss=MSS, cause="ecn"))
    assert cc.ssthresh == 2 * MSS  # never below two segments


def test_timeout_reduces_once_then_undo_restores():
    cc = in_ca(160)
    cc.on_rto(0.0, 160 * MSS)
    assert (cc.cwnd, cc.ssthresh) == (MSS, 140 * MSS)
    cc.on_rto(1.0, 160 * MSS)  # the backed-off re-expiry keeps ssthresh
    assert (cc.cwnd, cc.ssthresh) == (MSS, 140 * MSS)
    cc.on_undo(UndoEvent(now=2.0, prior_cwnd=160 * MSS, prior_ssthresh=160 * MSS, cause="frto"))
    assert (cc.cwnd, cc.ssthresh) == (160 * MSS, 160 * MSS)


# ---------------------------------------------------------------------- the engine, simulated

LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)


def run(params: dict, size: int = 20_000_000):
    """20 MB over 20 Mbit/s, 40 ms RTT, a 100 kB (1 BDP) drop-tail queue: the window cycles
    between about 117 and 134 segments, above ai_cnt = 100 (or 50)."""
    log: list[dict] = []
    cc = load(SPEC, 1448, 0.0, params=params)
    src = PatternSource(size, seed=1)
    conn = Connection(LOCAL, REMOTE, cc, src, iss=1, time_wait=0.5, cc_log=log.append)
    rcv = Receiver(port=REMOTE[1], iss=777)
    res = simulate(conn, rcv, Link(delay=0.020, rate=20e6, queue_bytes=100_000, name="fwd"),
                   Link(delay=0.020, name="rev"), until=120.0)
    assert res.completed, res.reason
    assert conn.error is None and conn.cc_faults == 0 and conn.cc is cc  # never replaced by the guard
    assert rcv.bytes_received == size and rcv.sha256() == src.sha256()
    assert {r["cc"] for r in log if "cc" in r} == {"scalable"}
    return cc, log, res


def epochs(log: list[dict], res) -> list[tuple[int, int, int]]:
    """Each congestion-avoidance stretch from a recovery's end to the next congestion event:
    (cwnd at its start, cwnd at its last ACK, bytes acknowledged in between)."""
    marks = [(t, ev.value) for t, ev in res.timed_events if ev.kind == "delivered"]

    def delivered(when: float) -> int:
        return max((v for t, v in marks if t <= when), default=0)

    out = []
    for i, r in enumerate(log):
        if r["event"] != "on_recovery_exit":
            continue
        acks = []
        for x in log[i + 1:]:
            if x["event"] != "ack":
                break
            acks.append(x)
        else:
            continue  # the transfer ended first
        if acks:
            out.append((r["cwnd"], acks[-1]["cwnd"], delivered(acks[-1]["t"]) - delivered(r["t"])))
    return out


@pytest.mark.parametrize("ai_cnt", [100, 50])
def test_in_the_engine_each_loss_keeps_seven_eighths_and_growth_follows_ai_cnt(ai_cnt):
    cc, log, res = run({"ai_cnt": str(ai_cnt)})
    mss = cc.mss
    events = [r for r in log if r["event"] != "ack"]
    starts = [r for r in events if r["event"] == "on_congestion_event"]
    assert len(starts) >= 10 and not any(r["event"] == "on_rto" for r in events)
    for r in starts:  # the record is written after the hook: cwnd is the window before the loss
        assert r["ssthresh"] == max(r["cwnd"] - r["cwnd"] // 8, 2 * mss)
    for before, after in zip(events, events[1:]):
        if before["event"] == "on_congestion_event":
            assert after["event"] == "on_recovery_exit" and after["cwnd"] == before["ssthresh"]
    stretches = epochs(log, res)
    assert len(stretches) >= 5
    for start, end, acked in stretches:
        assert start >= ai_cnt * mss  # the fractional regime throughout
        expected = acked / (ai_cnt * mss)  # segments: one per ai_cnt acknowledged
        assert abs((end - start) / mss - expected) <= max(1.5, 0.05 * expected), (start, end, acked)
    # Kelly's point: the time between losses does not grow with the window. Here the loss
    # period at ai_cnt = 50 is about half that at 100 (0.67 s against 1.17 s).
    period = (starts[-1]["t"] - starts[-4]["t"]) / 3
    assert period == pytest.approx({100: 1.17, 50: 0.67}[ai_cnt], rel=0.1)
