"""The lab's measuring instruments: the ICMP RTT probe and the router hold-time tracer.

The root tests build their own throwaway line of namespaces with iproute2 (not netns/lab.py, so
they test the instruments and nothing else):

    tprb-a [tprb-a0 198.18.210.1] -- [tprb-ra .254] tprb-r [tprb-rb 198.18.211.254] -- [tprb-b0 .1] tprb-b
"""

from __future__ import annotations

import math
import os
import select
import socket
import subprocess
import time

import pytest

import netns
from netns.holdtime import HoldTimes, summarize
from netns.probe import ProbeResult, rtt_probe

NS_A, NS_R, NS_B = "tprb-a", "tprb-r", "tprb-b"
A_IP, B_IP = "198.18.210.1", "198.18.211.1"
PAIRS = [("tprb-ra", "tprb-rb"), ("tprb-rb", "tprb-ra")]


def _run(argv: list[str], check: bool = True) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if check and p.returncode:
        raise AssertionError(f"{' '.join(argv)} failed: {p.stderr.strip()}")


def _ip(*args: str, check: bool = True) -> None:
    _run(["ip", *args], check=check)


def _tc(*args: str, check: bool = True) -> None:
    _run(["tc", *args], check=check)


def _remove_topology() -> None:
    for ns in (NS_A, NS_R, NS_B):
        _ip("netns", "del", ns, check=False)  # its veth ends go with it


def _leftovers() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith("tprb-")]


@pytest.fixture(scope="module")
def topo():
    _remove_topology()
    try:
        for ns in (NS_A, NS_R, NS_B):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", "tprb-a0", "netns", NS_A, "type", "veth", "peer", "name", "tprb-ra", "netns", NS_R)
        _ip("link", "add", "tprb-rb", "netns", NS_R, "type", "veth", "peer", "name", "tprb-b0", "netns", NS_B)
        for ns, dev, addr in (
            (NS_A, "tprb-a0", f"{A_IP}/24"),
            (NS_R, "tprb-ra", "198.18.210.254/24"),
            (NS_R, "tprb-rb", "198.18.211.254/24"),
            (NS_B, "tprb-b0", f"{B_IP}/24"),
        ):
            _ip("-n", ns, "addr", "add", addr, "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
        subprocess.run(
            netns.command(NS_R, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), check=True
        )
        _ip("-n", NS_A, "route", "add", "default", "via", "198.18.210.254")
        _ip("-n", NS_B, "route", "add", "default", "via", "198.18.211.254")
        # Resolve neighbours once, so no test sees ARP in its first samples.
        warm = rtt_probe(NS_A, B_IP, count=3, interval=0.01, timeout=2.0)
        assert warm.received == 3, f"the throwaway topology does not forward: {warm}"
        yield
    finally:
        _remove_topology()
        assert not _leftovers(), f"tprb namespaces left behind: {_leftovers()}"


def _udp_socket(ns: str, bind: tuple[str, int] | None = None) -> socket.socket:
    with netns.enter(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if bind:
        s.bind(bind)
    return s


# -- no root needed ------------------------------------------------------------------------


def test_probe_result_statistics():
    r = ProbeResult(sent=5, received=4, samples=[0.004, 0.001, 0.003, 0.002])
    assert r.lost == 1
    assert (r.min, r.max) == (0.001, 0.004)
    assert r.median == pytest.approx(0.0025)
    assert r.mean == pytest.approx(0.0025)
    assert r.p99 == 0.004  # nearest rank of 4 samples: the 4th
    big = ProbeResult(sent=200, received=200, samples=[i / 1000 for i in range(1, 201)])
    assert big.p99 == pytest.approx(0.198)  # ceil(0.99 * 200) = 198th
    empty = ProbeResult(sent=3, received=0, samples=[])
    assert empty.lost == 3
    assert None is empty.min is empty.median is empty.p99 is empty.max is empty.mean
    assert "all lost" in str(empty)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dst": "not-an-address"},
        {"dst": "::1"},
        {"dst": "198.18.211.1", "count": 0},
        {"dst": "198.18.211.1", "count": 70000},
        {"dst": "198.18.211.1", "interval": -0.1},
        {"dst": "198.18.211.1", "timeout": math.nan},
        {"dst": "198.18.211.1", "size": 70000},
        {"dst": "198.18.211.1", "size": -1},
        {"dst": "198.18.211.1", "count": 2.5},
    ],
)
def test_probe_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        rtt_probe("tprb-a", **kwargs)  # checked before the namespace is touched


def test_summarize():
    s = summarize([10_100_000, 9_950_000, 10_000_000, 10_300_000], 0.010)
    assert s["count"] == 4
    assert s["median_ms"] == pytest.approx(0.05)
    assert s["min_ms"] == pytest.approx(-0.05)
    assert s["max_ms"] == pytest.approx(0.3)
    assert s["p99_ms"] == pytest.approx(0.3)
    assert s["abs_median_ms"] == pytest.approx(0.075)
    assert s["abs_max_ms"] == pytest.approx(0.3)
    empty = summarize([], 0.01)
    assert empty["count"] == 0 and empty["median_ms"] is None


@pytest.mark.parametrize(
    "pairs",
    [
        [],
        [("a", "b")] * 9,
        [("a", "b"), ("a", "c")],  # one ingress, two directions
        [("a-name-far-too-long", "b")],
        [("", "b")],
        [("a",)],
    ],
)
def test_holdtimes_rejects_bad_pairs(pairs):
    with pytest.raises(ValueError):
        HoldTimes(pairs)


# -- root: a real path ---------------------------------------------------------------------


@pytest.mark.root
def test_probe_idle_path(topo):
    r = rtt_probe(NS_A, B_IP, count=50, interval=0.002)
    assert (r.sent, r.received, r.lost) == (50, 50, 0)
    assert len(r.samples) == 50 and all(s > 0 for s in r.samples)
    assert r.min <= r.median <= r.p99 <= r.max
    assert r.min <= r.mean <= r.max
    assert r.min < 0.005, r  # an idle veth line turns an echo round in microseconds
    assert r.median < 0.005, r
    if tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 13):
        assert r.tx_kernel == r.received  # SCM_TS_OPT_ID: every send time is the kernel's
    # Big requests cross too (not fragmented: 1400 + 28 < 1500).
    big = rtt_probe(NS_A, B_IP, count=5, interval=0, size=1400)
    assert big.received == 5


@pytest.mark.root
def test_probe_without_kernel_tx_timestamps(topo, monkeypatch):
    import netns.probe

    monkeypatch.setattr(netns.probe, "SCM_TS_OPT_ID", 0x7FFF)  # unknown cmsg: EINVAL, as pre-6.13
    r = rtt_probe(NS_A, B_IP, count=10, interval=0.002)
    assert r.received == 10 and r.tx_kernel == 0
    assert 0 < r.min < 0.005


@pytest.mark.root
@pytest.mark.parametrize(
    "dst",
    [
        "198.18.211.77",  # on b's subnet, nobody there: the router's ARP never resolves
        "198.18.99.1",  # no route in the router: it answers net unreachable, not echo reply
    ],
)
def test_probe_unreachable_is_all_lost(topo, dst):
    t0 = time.monotonic()
    r = rtt_probe(NS_A, dst, count=5, interval=0.01, timeout=0.3)
    assert (r.sent, r.received, r.lost) == (5, 0, 5)
    assert r.samples == [] and r.min is None
    assert time.monotonic() - t0 < 1.0


@pytest.mark.root
def test_probe_missing_namespace():
    with pytest.raises(netns.LabError, match="tprb-nosuchns"):
        rtt_probe("tprb-nosuchns", B_IP)


@pytest.mark.root
def test_holdtimes_both_directions(topo):
    rx = _udp_socket(NS_B, (B_IP, 9400))
    tx = _udp_socket(NS_A)
    with rx, tx, HoldTimes(PAIRS) as h:
        assert h.compile_s is not None
        probe = rtt_probe(NS_A, B_IP, count=100, interval=0.001)
        for _ in range(100):
            tx.sendto(b"u" * 1000, (B_IP, 9400))
        # Echo requests to the router itself are stamped on arrival but never leave: their
        # skbs are freed in the router and their addresses reused at once. None of them may
        # turn into a sample of some other skb (see "Stale entries" in netns/holdtime.py).
        to_router = rtt_probe(NS_A, "198.18.210.254", count=50, interval=0.001)
        time.sleep(0.05)
        h.poll(100)
        ab, ba = h.samples(0), h.samples(1)
        ab_len, ba_len = h.lengths(0), h.lengths(1)
        assert h.lost() == 0
        stats = h.stats()
    assert probe.received == 100 and to_router.received == 50
    icmp = 14 + 20 + 8 + 56  # Ethernet + IP + ICMP + payload: net_dev_queue's len has L2
    udp = 14 + 20 + 8 + 1000
    # a->b: 100 echo requests + 100 datagrams; b->a: 100 echo replies; nothing else.
    assert sorted(ab_len) == [icmp] * 100 + [udp] * 100, sorted(set(ab_len))
    assert ba_len == [icmp] * 100, sorted(set(ba_len))
    assert stats["emitted"] == len(ab) + len(ba)
    assert stats["freed"] >= 50  # the echo requests to the router
    for holds in (ab, ba):
        assert all(0 < s < 2_000_000 for s in holds), max(holds)  # < 2 ms with no delay element
        assert summarize(holds, 0.0)["median_ms"] < 0.5


@pytest.mark.root
def test_holdtimes_exclude_egress_qdisc(topo):
    """A slow TBF on the router's egress delays packets end to end by hundreds of ms, but the
    hold-time samples stop at net_dev_queue, before the qdisc, and stay small."""
    _tc("-n", NS_R, "qdisc", "add", "dev", "tprb-rb", "root", "tbf",
        "rate", "1mbit", "burst", "3028", "limit", "200000")
    n, size = 40, 1000
    try:
        rx = _udp_socket(NS_B, (B_IP, 9401))
        tx = _udp_socket(NS_A)
        with rx, tx, HoldTimes(PAIRS) as h:
            t0 = time.time()
            for i in range(n):
                tx.sendto(i.to_bytes(4, "big") + b"t" * (size - 4), (B_IP, 9401))
            got, last = 0, t0
            while got < n and select.select([rx], [], [], 2.0)[0]:
                rx.recv(2048)
                got, last = got + 1, time.time()
            h.poll(100)
            holds, lens = h.samples(0), h.lengths(0)
    finally:
        _tc("-n", NS_R, "qdisc", "del", "dev", "tprb-rb", "root", check=False)
    assert got == n
    # 38 frames beyond the 2-frame burst at 1 Mbit/s: ~8.3 ms each, ~0.32 s in all.
    assert last - t0 > 0.2, last - t0
    frame = 14 + 20 + 8 + size
    assert lens.count(frame) == n
    datagram_holds = [s for s, ln in zip(holds, lens) if ln == frame]
    assert max(datagram_holds) < 2_000_000, summarize(datagram_holds, 0.0)
