"""Random loss in XDP (netns/loss.py, bpf/loss.c) on a throwaway veth pair of its own.

Namespaces tlos-a and tlos-b, veth tlos-a0 -- tlos-b0, 198.18.200.1/24 -- 198.18.200.2/24. The
loss program goes on tlos-b0 (what b receives from a). IPv6 is off in both namespaces so the
kernel sends no background IP traffic that the counters would see; the MTU is 1428 so that the
tests' 1400-byte UDP datagrams are full-size frames (1442 bytes = MTU + 14).
"""

from __future__ import annotations

import math
import socket
import struct
import subprocess
import threading
import time

import pytest

import netns
from netns import loss

A, B = "tlos-a", "tlos-b"
A_IF, B_IF = "tlos-a0", "tlos-b0"
A_IP, B_IP = "198.18.200.1", "198.18.200.2"
GONE, GONE_IF = "tlos-gone", "tlos.g0"  # a dot: pin names must escape it
MTU = 1428
PAYLOAD = 1400
FRAME = PAYLOAD + 8 + 20 + 14
assert FRAME == MTU + 14

SO_RCVBUFFORCE = 33


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _cleanup() -> None:
    for ns, ifname in ((B, B_IF), (A, A_IF), (GONE, GONE_IF)):
        loss.detach(ns, ifname)
    for ns in (A, B, GONE):
        _ip("netns", "del", ns, check=False)


def _no_ipv6(ns: str) -> None:
    for conf in ("all", "default"):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1"],
                       check=True, capture_output=True)


@pytest.fixture(scope="module")
def pair():
    _cleanup()
    try:
        for ns in (A, B):
            _ip("netns", "add", ns)
            _no_ipv6(ns)
        _ip("link", "add", A_IF, "netns", A, "mtu", str(MTU), "type", "veth",
            "peer", "name", B_IF, "netns", B, "mtu", str(MTU))
        _ip("-n", A, "addr", "add", f"{A_IP}/24", "dev", A_IF)
        _ip("-n", B, "addr", "add", f"{B_IP}/24", "dev", B_IF)
        for ns, ifname in ((A, A_IF), (B, B_IF)):
            _ip("-n", ns, "link", "set", ifname, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        _cleanup()


@pytest.fixture
def lossy(pair):
    yield
    loss.detach(B, B_IF)


# --- traffic helpers -------------------------------------------------------------------------

class UdpCounter:
    """A UDP socket in namespace b that counts datagrams in a thread (optionally echoing them)."""

    def __init__(self, port: int, echo: bool = False):
        with netns.enter(B):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
        self.sock.bind((B_IP, port))
        self.sock.settimeout(0.05)
        self.echo = echo
        self.count = 0
        self.last = time.monotonic()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data, peer = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.count += 1
            self.last = time.monotonic()
            if self.echo:
                self.sock.sendto(data, peer)

    def settle(self, quiet: float = 0.2, timeout: float = 5.0) -> int:
        """Wait until nothing has arrived for `quiet` seconds; the count so far."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.monotonic() - self.last < quiet:
            time.sleep(0.02)
        return self.count

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def _sender() -> socket.socket:
    with netns.enter(A):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s


def _send(tx: socket.socket, port: int, n: int, burst: int = 50) -> int:
    """n datagrams of PAYLOAD bytes, paced in bursts so that no queue on the way overflows."""
    buf = bytearray(PAYLOAD)
    for i in range(n):
        struct.pack_into("!I", buf, 0, i)
        tx.sendto(buf, (B_IP, port))
        if i % burst == burst - 1:
            time.sleep(0.0005)
    return n


def _warm_up(tx: socket.socket, rx: UdpCounter, port: int) -> None:
    """Resolve the neighbour and make sure the path carries traffic (retrying across loss)."""
    before = rx.count
    for _ in range(100):
        tx.sendto(b"warm-up", (B_IP, port))
        time.sleep(0.02)
        if rx.count > before:
            rx.settle(quiet=0.05)
            return
    raise AssertionError("no datagram got through a -> b")


def _udp_errors(ns: str) -> dict[str, int]:
    """The namespace's UDP counters (RcvbufErrors, InErrors, ...) from /proc/thread-self/net/snmp."""
    with netns.enter(ns):
        with open("/proc/thread-self/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Udp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))


def _delta(after: dict, before: dict) -> dict:
    return {k: after[k] - before[k] for k in after if k not in ("probability", "seed")}


def _sigma_ok(dropped: int, n: int, p: float, k: float = 5.0) -> bool:
    return abs(dropped - n * p) <= k * math.sqrt(n * p * (1 - p))


# --- tests -----------------------------------------------------------------------------------

@pytest.mark.root
def test_forward_loss_is_random_and_counted_exactly(lossy):
    port, n, p = 9000, 20_000, 0.1
    t0 = time.monotonic()
    loss.attach(B, B_IF, p, mtu=MTU)
    attach_s = time.monotonic() - t0
    rx, tx = UdpCounter(port), _sender()
    try:
        _warm_up(tx, rx, port)
        base, got0, errs0 = loss.counters(B, B_IF), rx.count, _udp_errors(B)
        sent = _send(tx, port, n)
        received = rx.settle() - got0
        d = _delta(loss.counters(B, B_IF), base)
        errs = _delta(_udp_errors(B), errs0)
    finally:
        rx.close()
        tx.close()
    assert errs["RcvbufErrors"] == 0 and errs["InErrors"] == 0, errs
    assert d["packets"] == sent  # the program saw every datagram: nothing lost before it
    assert d["dropped"] == sent - received
    assert d["bytes"] == sent * FRAME and d["bytes_dropped"] == d["dropped"] * FRAME
    assert d["full_packets"] == sent and d["full_dropped"] == d["dropped"]
    frac = d["dropped"] / sent
    sigma = math.sqrt(p * (1 - p) / sent)
    print(f"\nattach {attach_s:.2f} s; p={p}: dropped {d['dropped']}/{sent} = {frac:.4f} "
          f"({(frac - p) / sigma:+.2f} sigma, sigma={sigma:.4f}); received {received}")
    assert abs(frac - p) <= 5 * sigma


def _mac(ns: str, ifname: str) -> bytes:
    out = _ip("-n", ns, "-br", "link", "show", ifname).stdout.split()
    return bytes.fromhex(out[2].replace(":", ""))


@pytest.mark.root
def test_arp_and_neighbour_discovery_always_pass(lossy):
    """p = 0.5 drops IP only: raw ARP, IPv6 NS and other frames all arrive; ICMPv6 echo does not."""
    loss.attach(B, B_IF, 0.5, mtu=MTU)
    src = b"\x02\x00\x00\x00\x10\x5e"  # a made-up sender MAC: our frames are easy to tell apart
    dst = _mac(B, B_IF)

    def eth(proto: int, body: bytes) -> bytes:
        return dst + src + struct.pack("!H", proto) + body

    # ARP probe (RFC 5227: sender IP 0) for an unused address: b neither answers nor learns.
    arp = eth(0x0806, struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, src, bytes(4), bytes(6),
                                  socket.inet_aton("198.18.200.77")))

    def ip6(icmp_type: int) -> bytes:
        icmp = struct.pack("!BBHI16s", icmp_type, 0, 0, 0, socket.inet_pton(socket.AF_INET6, "fe80::77"))
        hdr = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 255,
                          socket.inet_pton(socket.AF_INET6, "fe80::99"),
                          socket.inet_pton(socket.AF_INET6, "fe80::77"))
        return eth(0x86DD, hdr + icmp)

    frames = {"arp": arp, "ns": ip6(135), "na": ip6(136), "echo6": ip6(128), "other": eth(0x88B5, bytes(46))}
    n = 200
    with netns.enter(B):
        cap = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))  # ETH_P_ALL
    with netns.enter(A):
        out = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    try:
        cap.bind((B_IF, 0x0003))
        cap.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        cap.settimeout(0.2)
        out.bind((A_IF, 0))
        base = loss.counters(B, B_IF)
        for i in range(n):
            for f in frames.values():
                out.send(f)
            if i % 20 == 19:
                time.sleep(0.0005)
        seen = dict.fromkeys(frames, 0)
        by_frame = {f: k for k, f in frames.items()}
        while True:
            try:
                data, addr = cap.recvfrom(65536)
            except TimeoutError:
                break
            kind = by_frame.get(data)
            if kind and addr[2] != socket.PACKET_OUTGOING:
                seen[kind] += 1
        d = _delta(loss.counters(B, B_IF), base)
    finally:
        cap.close()
        out.close()
    print(f"\np=0.5, {n} of each frame: arrived {seen}; program: {d}")
    assert seen["arp"] == seen["ns"] == seen["na"] == seen["other"] == n
    assert d["packets"] == n  # only the ICMPv6 echo frames are IP that may be dropped
    assert d["dropped"] == n - seen["echo6"]
    assert _sigma_ok(d["dropped"], n, 0.5)

    # And the path comes up from scratch: flush the neighbours, then an exchange a -> b -> a.
    for ns, ifname in ((A, A_IF), (B, B_IF)):
        _ip("-n", ns, "neigh", "flush", "dev", ifname)
    echo, tx = UdpCounter(9001, echo=True), _sender()
    tx.settimeout(0.2)
    try:
        t0 = time.monotonic()
        for _ in range(40):
            tx.sendto(b"ping", (B_IP, 9001))
            try:
                if tx.recv(100) == b"ping":
                    break
            except TimeoutError:
                continue
        else:
            pytest.fail("no answer from b through p=0.5 loss after a neighbour flush")
        # Each try loses with p = 0.5, but ARP never: no resolution timeout (1 s) on the way.
        assert time.monotonic() - t0 < 0.9 * 40 * 0.2
    finally:
        echo.close()
        tx.close()


@pytest.mark.root
def test_zero_loss_and_live_probability_change(lossy):
    port = 9002
    loss.attach(B, B_IF, 0.0, mtu=MTU)
    rx, tx = UdpCounter(port), _sender()

    def run(n: int) -> tuple[int, dict]:
        base, got0 = loss.counters(B, B_IF), rx.count
        sent = _send(tx, port, n)
        received = rx.settle() - got0
        d = _delta(loss.counters(B, B_IF), base)
        assert d["packets"] == sent and d["dropped"] == sent - received
        return received, d

    try:
        _warm_up(tx, rx, port)
        received, d = run(2000)
        assert received == 2000 and d["dropped"] == 0
        assert loss.counters(B, B_IF)["probability"] == 0.0

        loss.set_probability(B, B_IF, 0.5)
        assert loss.counters(B, B_IF)["probability"] == 0.5
        received, d = run(2000)
        print(f"\np=0.5 live: dropped {d['dropped']}/2000")
        assert _sigma_ok(d["dropped"], 2000, 0.5)

        loss.set_probability(B, B_IF, 0)
        received, d = run(1000)
        assert received == 1000 and d["dropped"] == 0
    finally:
        rx.close()
        tx.close()


def _splitmix_drops(seed: int, n: int, p: float) -> set[int]:
    """The packet indices bpf/loss.c drops for `seed`, computed independently here."""
    threshold = loss._threshold(p)
    mask = (1 << 64) - 1
    out = set()
    for i in range(n):
        z = (seed + i * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        if (z >> 32) < threshold:
            out.add(i)
    return out


class _IndexRecorder(UdpCounter):
    """Counts datagrams and keeps the index `_send` wrote into each."""

    def __init__(self, port: int):
        self.indices: list[int] = []
        super().__init__(port)

    def _run(self) -> None:
        while not self._stop:
            try:
                data, _ = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            if len(data) >= 4 and data != b"warm-up":
                self.indices.append(struct.unpack_from("!I", data)[0])
            self.count += 1
            self.last = time.monotonic()


@pytest.mark.root
def test_seeded_loss_repeats_the_same_pattern_packet_by_packet(lossy):
    """With a seed, the n-th packet's fate is SplitMix64(seed + n * golden) against the
    threshold: the dropped indices are exactly those computed here, and `reseed` replays them,
    which is what lets two senders be compared under the same losses."""
    port, n, p, seed = 9004, 3000, 0.2, 42
    loss.attach(B, B_IF, p, mtu=MTU, seed=seed)
    rx, tx = _IndexRecorder(port), _sender()
    try:
        _warm_up(tx, rx, port)
        expected = _splitmix_drops(seed, n, p)
        for _ in range(2):
            loss.reseed(B, B_IF, seed)  # the warm-up used indices up to here; start again
            rx.indices.clear()
            _send(tx, port, n)
            rx.settle()
            lost = set(range(n)) - set(rx.indices)
            assert lost == expected
        assert loss.counters(B, B_IF)["seed"] == seed
        assert _sigma_ok(len(expected), n, p)
        # Another seed, another pattern; no seed, bpf_get_prandom_u32() again.
        loss.reseed(B, B_IF, seed + 1)
        rx.indices.clear()
        _send(tx, port, n)
        rx.settle()
        assert set(range(n)) - set(rx.indices) == _splitmix_drops(seed + 1, n, p) != expected
        loss.reseed(B, B_IF, None)
        assert loss.counters(B, B_IF)["seed"] is None
        base, got0 = loss.counters(B, B_IF), rx.count
        _send(tx, port, n)
        d = _delta(loss.counters(B, B_IF), base)
        assert d["packets"] == n and d["dropped"] == n - (rx.settle() - got0)
        assert _sigma_ok(d["dropped"], n, p)
    finally:
        rx.close()
        tx.close()


@pytest.mark.parametrize("seed", [0, -1, 2**64, 1.5, True, "7"])
def test_invalid_seed(seed):
    with pytest.raises(loss.LossError, match="seed"):
        loss.attach(B, B_IF, 0.1, seed=seed)
    with pytest.raises(loss.LossError, match="seed"):
        loss.reseed(B, B_IF, seed)


def _xdp_line(ns: str, ifname: str) -> str:
    return _ip("-n", ns, "-d", "link", "show", ifname).stdout


@pytest.mark.root
def test_attach_replace_detach_and_leftovers(lossy):
    loss.attach(B, B_IF, 0.2, mtu=MTU)
    first = loss.xdp_program(B, B_IF)
    loss.attach(B, B_IF, 0.3, mtu=MTU)  # replaces: one program, fresh counters, new p
    second = loss.xdp_program(B, B_IF)
    assert first[1] == second[1] == "lab_loss" and first[0] != second[0]
    assert "prog/xdp" in _xdp_line(B, B_IF) and f"id {second[0]} " in _xdp_line(B, B_IF)
    c = loss.counters(B, B_IF)
    assert abs(c["probability"] - 0.3) < 1e-9 and c["packets"] == 0
    pins = loss.pin_dir(B, B_IF)
    assert sorted(p.name for p in pins.iterdir()) == ["config", "prog", "stats"]

    assert loss.detach(B, B_IF) is True
    assert "prog/xdp" not in _xdp_line(B, B_IF)
    assert loss.xdp_program(B, B_IF) is None
    assert not pins.exists()
    assert loss.counters(B, B_IF) is None
    assert loss.detach(B, B_IF) is False
    with pytest.raises(loss.LossError, match="no loss program"):
        loss.set_probability(B, B_IF, 0.1)

    # Pins outlive a deleted namespace: leftovers() finds them, detach() removes them.
    _ip("netns", "add", GONE)
    _ip("-n", GONE, "link", "add", GONE_IF, "type", "veth", "peer", "name", "tlos-g1")
    _ip("-n", GONE, "link", "set", GONE_IF, "up")
    loss.attach(GONE, GONE_IF, 0.1)
    assert "." not in loss.pin_dir(GONE, GONE_IF).name
    assert (GONE, GONE_IF) not in loss.leftovers()
    _ip("netns", "del", GONE)
    assert (GONE, GONE_IF) in loss.leftovers()
    assert loss.counters(GONE, GONE_IF) is None
    assert loss.detach(GONE, GONE_IF) is True
    assert (GONE, GONE_IF) not in loss.leftovers()
    assert not loss.pin_dir(GONE, GONE_IF).exists()


@pytest.mark.root
def test_someone_elses_xdp_program_is_left_alone(pair):
    from bcc import BPF

    other = BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    fn = other.load_func(b"other_xdp", BPF.XDP)
    from pyroute2 import IPRoute

    with netns.enter(A):
        ipr = IPRoute()
    try:
        ipr.link("set", index=ipr.link_lookup(ifname=A_IF)[0], xdp_fd=fn.fd)
        with pytest.raises(loss.LossError, match="other_xdp"):
            loss.attach(A, A_IF, 0.1)
        assert loss.detach(A, A_IF) is False
        assert loss.xdp_program(A, A_IF)[1] == "other_xdp"
    finally:
        ipr.link("set", index=ipr.link_lookup(ifname=A_IF)[0], xdp_fd=-1)
        ipr.close()
        other.cleanup()


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.1", None, True])
def test_invalid_probability(p):
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        loss.attach(B, B_IF, p)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        loss.set_probability(B, B_IF, p)


@pytest.mark.parametrize("mtu", [0, 67, 70000, 1500.0])
def test_invalid_mtu(mtu):
    with pytest.raises(ValueError, match="mtu"):
        loss.attach(B, B_IF, 0.1, mtu=mtu)


def test_missing_namespace_is_a_user_error():
    with pytest.raises(loss.LossError, match="tlos-nope"):
        loss.set_probability("tlos-nope", "x0", 0.1)
    assert loss.counters("tlos-nope", "x0") is None
