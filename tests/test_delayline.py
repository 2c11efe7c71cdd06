"""The delay line (netns/delayline.py) and its nfnetlink_queue codec (netns/nfqueue.py).

The codec tests build the kernel's messages here with `struct`, independently of the module,
from the layouts in include/uapi/linux/netlink.h, netfilter/nfnetlink.h and
netfilter/nfnetlink_queue.h. The `root` tests build their own throwaway namespaces, all named
"tdl-*" (this file's alone): a line tdl-a -- tdl-r -- tdl-b with the delay line in tdl-r.
Leftovers of an earlier run are removed first, and every namespace and every delay line a test
started is removed in teardown, also when the test fails.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time

import pytest

import netns
from conftest import root_test, wait_for
from netns import delayline, nfqueue
from netns.delayline import DelayQueue, Route
from netns.nfqueue import Packet

# ---------------------------------------------------------------------------------------------
# Wire format, written out here independently of netns/nfqueue.py

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host order)
NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (big-endian)
NLA = struct.Struct("=HH")  # len, type
NLM_F_REQUEST = 0x1
NLMSG_ERROR = 2
NLA_F_NESTED = 1 << 15
NLA_F_NET_BYTEORDER = 1 << 14
NFQNL_MSG_PACKET = (3 << 8) | 0
NFQNL_MSG_VERDICT_BATCH = (3 << 8) | 3

NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_IFINDEX_INDEV = 5
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14


def nla(atype: int, payload: bytes) -> bytes:
    length = NLA.size + len(payload)
    return NLA.pack(length, atype) + payload + b"\0" * (-length % 4)


def nlmsg(mtype: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body


def notification(queue: int, packet_id: int, payload: bytes, *, tstamp: tuple[int, int] | None = None,
                 cap_len: int | None = None, type_bits: int = 0) -> bytes:
    """A packet notification laid out as nfqnl_build_packet_message does (attribute order too)."""
    attrs = nla(NFQA_PACKET_HDR | type_bits, struct.pack("!IHB", packet_id, 0x0800, 2))  # 7 bytes
    attrs += nla(NFQA_IFINDEX_INDEV | type_bits, struct.pack("!I", 3))
    if tstamp is not None:
        attrs += nla(NFQA_TIMESTAMP | type_bits, struct.pack("!QQ", *tstamp))
    attrs += nla(NFQA_SKB_INFO | type_bits, struct.pack("!I", 0))
    if cap_len is not None:
        attrs += nla(NFQA_CAP_LEN | type_bits, struct.pack("!I", cap_len))
    attrs += nla(NFQA_PAYLOAD | type_bits, payload)
    return nlmsg(NFQNL_MSG_PACKET, NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs)


def nlmsg_error(errno_: int, seq: int = 7) -> bytes:
    """struct nlmsgerr { int error; struct nlmsghdr msg; } (the request's header echoed)."""
    return nlmsg(NLMSG_ERROR, struct.pack("=i", -errno_) + NLMSGHDR.pack(28, NFQNL_MSG_VERDICT_BATCH, 1, seq, 0))


def ip_header(n: int) -> bytes:
    """n recognisable bytes standing in for the copied start of an IPv4 packet."""
    return bytes([0x45]) + bytes((i * 7 + 1) & 0xFF for i in range(1, n))


def do_parse(data: bytes, n: int | None = None) -> tuple[list[Packet], int]:
    out: list[Packet] = []
    skipped = nfqueue.parse(memoryview(data), len(data) if n is None else n, out)
    return out, skipped


# ---------------------------------------------------------------------------------------------
# batch_verdict


@pytest.mark.parametrize("queue,last_id,verdict", [(0, 1, nfqueue.NF_ACCEPT), (513, 0xDEADBEEF, nfqueue.NF_DROP)])
def test_batch_verdict_bytes(queue, last_id, verdict):
    msg = nfqueue.batch_verdict(queue, last_id, verdict)
    assert len(msg) == 16 + 4 + 12
    mlen, mtype, flags, _seq, pid = NLMSGHDR.unpack_from(msg, 0)
    assert mlen == len(msg)
    assert mtype == (3 << 8) | 3 == NFQNL_MSG_VERDICT_BATCH
    assert flags == NLM_F_REQUEST
    assert pid == 0
    family, version, res_id = struct.unpack_from(">BBH", msg, 16)
    assert (family, version) == (socket.AF_UNSPEC, 0)
    assert res_id == queue
    assert msg[18:20] == queue.to_bytes(2, "big")
    alen, atype = NLA.unpack_from(msg, 20)
    assert (alen, atype) == (12, NFQA_VERDICT_HDR)
    assert struct.unpack_from(">II", msg, 24) == (verdict, last_id)


def test_batch_verdict_default_is_accept():
    assert struct.unpack_from(">I", nfqueue.batch_verdict(1, 5), 24)[0] == 1


# ---------------------------------------------------------------------------------------------
# parse


def test_parse_one_message():
    hdrs = ip_header(40)
    msg = notification(4, 77, hdrs, tstamp=(1_700_000_000, 250_000), cap_len=1500)
    packets, skipped = do_parse(msg)
    assert skipped == 0
    assert len(packets) == 1
    p = packets[0]
    assert (p.queue, p.packet_id, p.length, p.headers) == (4, 77, 1500, hdrs)
    assert p.tstamp == pytest.approx(1_700_000_000.25, abs=1e-6)


def test_parse_reads_only_n_bytes_of_the_buffer():
    msg = notification(1, 5, ip_header(40), cap_len=60)
    packets, skipped = do_parse(msg + b"\xff" * 64, n=len(msg))
    assert [p.packet_id for p in packets] == [5] and skipped == 0


def test_parse_two_messages_in_one_buffer():
    a = notification(0, 1, ip_header(40), tstamp=(10, 1), cap_len=66_000)  # a GSO bundle
    b = notification(1, 2, ip_header(33), tstamp=(11, 999_999))  # 33 bytes: padded payload
    packets, skipped = do_parse(a + b)
    assert skipped == 0
    assert [(p.queue, p.packet_id, p.length) for p in packets] == [(0, 1, 66_000), (1, 2, 33)]
    assert packets[0].tstamp == pytest.approx(10.000001, abs=1e-7)
    assert packets[1].tstamp == pytest.approx(11.999999, abs=1e-7)
    assert packets[1].headers == ip_header(33)


def test_parse_appends_to_out():
    out = [Packet(9, 9, 9, None, b"")]
    nfqueue.parse(memoryview(notification(2, 3, ip_header(40))), len(notification(2, 3, ip_header(40))), out)
    assert [p.packet_id for p in out] == [9, 3]


def test_parse_without_timestamp():
    packets, _ = do_parse(notification(3, 12, ip_header(40), cap_len=100))
    assert packets[0].tstamp is None
    assert packets[0].length == 100


def test_parse_without_cap_len_uses_payload_length():
    hdrs = ip_header(29)  # a whole small packet: the kernel copied it all and sent no CAP_LEN
    packets, _ = do_parse(notification(0, 8, hdrs, tstamp=(5, 0)))
    assert packets[0].length == 29
    assert packets[0].headers == hdrs


@pytest.mark.parametrize("bits", [NLA_F_NET_BYTEORDER, NLA_F_NESTED, NLA_F_NET_BYTEORDER | NLA_F_NESTED])
def test_parse_strips_attribute_type_flags(bits):
    hdrs = ip_header(40)
    packets, _ = do_parse(notification(6, 0xFFFF_FFF0, hdrs, tstamp=(3, 500_000), cap_len=9000, type_bits=bits))
    assert len(packets) == 1
    p = packets[0]
    assert (p.queue, p.packet_id, p.length, p.headers) == (6, 0xFFFF_FFF0, 9000, hdrs)
    assert p.tstamp == pytest.approx(3.5)


def test_parse_skips_and_counts_error_messages():
    a = notification(0, 1, ip_header(40), tstamp=(1, 0))
    b = notification(0, 2, ip_header(40), tstamp=(2, 0))
    packets, skipped = do_parse(nlmsg_error(2) + a + nlmsg_error(0) + b + nlmsg_error(16))
    assert skipped == 3
    assert [p.packet_id for p in packets] == [1, 2]


def test_parse_empty_buffer():
    assert do_parse(b"") == ([], 0)


def _expected_packets(msgs: list[bytes]) -> list[Packet]:
    out: list[Packet] = []
    for m in msgs:
        nfqueue.parse(memoryview(m), len(m), out)
    return out


def test_parse_truncated_buffer_keeps_whole_messages():
    """Cut at a message boundary (the usual case of a short read): whole messages only."""
    msgs = [notification(0, i, ip_header(40), tstamp=(i, 0), cap_len=1500) for i in range(3)]
    whole = _expected_packets(msgs)
    data = b"".join(msgs)
    cut = len(msgs[0]) + len(msgs[1])
    packets, skipped = do_parse(data[:cut])
    assert packets == whole[:2] and skipped == 0
    packets, _ = do_parse(data, n=cut)
    assert packets == whole[:2]


def test_parse_truncated_anywhere_does_not_raise_or_invent_packets():
    """Every prefix of a buffer: no exception, and only packets of messages wholly inside it."""
    msgs = [notification(0, 1, ip_header(40), tstamp=(1, 2), cap_len=1500),
            notification(1, 2, ip_header(33), tstamp=(3, 4))]
    whole = _expected_packets(msgs)
    data = b"".join(msgs)
    for cut in range(len(data) + 1):
        complete = sum(1 for end in (len(msgs[0]), len(data)) if end <= cut)
        packets, _ = do_parse(data[:cut])
        assert packets == whole[:complete], cut


def test_parse_stops_on_a_bad_message_length():
    msg = bytearray(notification(0, 1, ip_header(40)))
    struct.pack_into("=I", msg, 0, 4)  # shorter than a netlink header: stop, do not loop
    assert do_parse(bytes(msg) + notification(0, 2, ip_header(40))) == ([], 0)


# ---------------------------------------------------------------------------------------------
# kernel_counters

# nfnetlink_queue.c seq_show: "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n": queue, portid, waiting,
# copy mode, copy range, queue dropped, user dropped, id sequence, 1.
PROC_LINES = (
    "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n" % (0, 2_345_678, 12, 2, 40, 3, 4, 123_456, 1)
    + "%5u %6u %5u %1u %5u %5u %5u %8u %2d\n" % (65_535, 99, 0, 2, 40, 0, 0, 7, 1)
)


def test_kernel_counters_parses_the_proc_file(tmp_path):
    f = tmp_path / "nfnetlink_queue"
    f.write_text(PROC_LINES)
    assert nfqueue.kernel_counters(str(f)) == {
        0: {"portid": 2_345_678, "waiting": 12, "queue_dropped": 3, "user_dropped": 4, "id_sequence": 123_456},
        65_535: {"portid": 99, "waiting": 0, "queue_dropped": 0, "user_dropped": 0, "id_sequence": 7},
    }


def test_kernel_counters_empty_and_missing(tmp_path):
    f = tmp_path / "empty"
    f.write_text("")
    assert nfqueue.kernel_counters(str(f)) == {}
    assert nfqueue.kernel_counters(str(tmp_path / "missing")) == {}


# ---------------------------------------------------------------------------------------------
# DelayQueue


BUCKET_US = delayline.BUCKET_US
FIRST_CENTRE = delayline.EARLIEST_US + BUCKET_US / 2  # errors earlier than the histogram
LATEST_US = delayline.EARLIEST_US + delayline.BUCKETS * BUCKET_US
LAST_CENTRE = LATEST_US - BUCKET_US / 2  # errors later than the histogram


def test_delay_queue_histogram_layout():
    assert BUCKET_US == 10  # 10 us resolution
    assert delayline.EARLIEST_US == -1000  # down to 1 ms early
    assert LATEST_US >= 10_000  # at least 10 ms late
    assert len(DelayQueue(0, 0.01).err_hist) == delayline.BUCKETS


def pct(q: DelayQueue, x: float) -> float | None:
    """The x-quantile of q's release error in us (percentiles_us, or the older percentile_us)."""
    if hasattr(q, "percentiles_us"):
        return q.percentiles_us((x,))[0]
    return q.percentile_us(x)


def test_delay_queue_histogram_and_percentiles():
    q = DelayQueue(3, 0.025)
    assert pct(q, 0.5) is None
    for _ in range(96):
        q.record(124.5e-6)  # late, in [120, 130) us
    q.record(-505e-6)  # early, in [-510, -500) us
    q.record(-4e-6)  # early, in [-10, 0) us
    q.record(-0.02)  # earlier than the histogram: first bucket
    q.record(0.5)  # later than the histogram: last bucket
    assert sum(q.err_hist) == 100
    assert q.err_hist[0] == 1 and q.err_hist[-1] == 1
    assert pct(q, 0.0) == FIRST_CENTRE == -995.0
    assert pct(q, 0.01) == -995.0
    assert pct(q, 0.02) == -505.0
    assert pct(q, 0.03) == -5.0
    assert pct(q, 0.04) == 125.0
    assert pct(q, 0.5) == 125.0
    assert pct(q, 0.99) == 125.0
    assert pct(q, 1.0) == LAST_CENTRE
    if hasattr(q, "percentiles_us"):
        assert q.percentiles_us((0.01, 0.5, 1.0)) == [-995.0, 125.0, LAST_CENTRE]
    assert q.late_max == pytest.approx(0.5)
    assert q.early_max == pytest.approx(0.02)


def test_delay_queue_bucket_resolution():
    q = DelayQueue(0, 0.01)
    for err_us, centre in ((0.0, 5.0), (9.9, 5.0), (10.1, 15.0), (-3.0, -5.0), (-15.0, -15.0),
                           (LATEST_US - 1.0, LAST_CENTRE), (LATEST_US + 5.0, LAST_CENTRE),
                           (-1_000.0, -995.0), (-1_005.0, -995.0)):
        q.err_hist = [0] * delayline.BUCKETS
        q.record(err_us * 1e-6)
        assert pct(q, 0.5) == centre, err_us


def test_delay_queue_sub_microsecond_early_is_early():
    q = DelayQueue(0, 0.01)
    q.record(-0.5e-6)
    assert pct(q, 0.5) == -5.0


def test_delay_queue_extremes_and_stats():
    q = DelayQueue(1, 0.03)
    q.record(0.0)
    assert (q.late_max, q.early_max) == (0.0, 0.0)
    q.record(-0.0002)
    q.record(0.0003)
    q.record(0.0001)  # smaller than the late max: no change
    q.record(-0.0001)  # smaller than the early max: no change
    assert q.late_max == pytest.approx(0.0003)
    assert q.early_max == pytest.approx(0.0002)
    q.packets, q.bytes, q.released, q.no_tstamp = 7, 7_000, 5, 1
    q.pending.extend([(1.0, 6), (1.1, 7)])
    s = q.stats()
    assert set(s) == {"delay_s", "packets", "bytes", "released", "held", "no_timestamp", "err_p01_us",
                      "err_p50_us", "err_p99_us", "late_max_us", "early_max_us", "reorder",
                      "reordered", "reorder_of"}
    assert s["delay_s"] == 0.03
    assert (s["packets"], s["bytes"], s["released"], s["held"], s["no_timestamp"]) == (7, 7_000, 5, 2, 1)
    assert s["late_max_us"] == 300.0 and s["early_max_us"] == 200.0
    assert s["err_p01_us"] == -195.0 and s["err_p50_us"] == 5.0 and s["err_p99_us"] == 305.0


def test_delay_queue_empty_stats():
    s = DelayQueue(0, 0.0).stats()
    assert s["err_p01_us"] is None and s["err_p50_us"] is None and s["err_p99_us"] is None
    assert s["held"] == 0 and s["late_max_us"] == 0.0 and s["early_max_us"] == 0.0


# ---------------------------------------------------------------------------------------------
# With root: a real line tdl-a -- tdl-r -- tdl-b, the delay line in tdl-r

PREFIX = "tdl-"
A, R, B = "tdl-a", "tdl-r", "tdl-b"
A_IF, RA_IF, RB_IF, B_IF = "tdl-a0", "tdl-ra", "tdl-rb", "tdl-b0"
A_IP, RA_IP, RB_IP, B_IP = "198.18.220.2", "198.18.220.1", "198.18.221.1", "198.18.221.2"
FWD, REV = 0.030, 0.010
ECHO_PORT = 7007
CLOCK_EPS = 20e-6


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _our_namespaces() -> list[str]:
    try:
        return [n for n in os.listdir(netns.NETNS_DIR) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []


def _our_delay_lines() -> list[int]:
    """Delay lines of any tdl-* namespace, also of one already deleted (argv names it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if delayline.MODULE.encode() in argv and b"--netns" in argv:
            i = argv.index(b"--netns")
            if i + 1 < len(argv) and argv[i + 1].startswith(PREFIX.encode()):
                pids.append(int(entry))
    return pids


def _cleanup(pids: list[int] = ()) -> None:
    for pid in {*pids, *_our_delay_lines()}:
        delayline.stop(pid)
    for name in _our_namespaces():
        _run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def cleanup():
    """Remove tdl-* leftovers before; after, stop every delay line the test started (pids
    appended to the yielded list) or that runs for a tdl-* namespace, and delete the namespaces."""
    _cleanup()
    started: list[int] = []
    try:
        yield started
    finally:
        _cleanup(started)
        assert not _our_namespaces() and not _our_delay_lines()


def _sysctl(ns: str, setting: str) -> None:
    _run(netns.command(ns, ["sysctl", "-qw", setting]))


@pytest.fixture
def router(cleanup):
    """Only the router namespace (enough to bind queues)."""
    _run(["ip", "netns", "add", R])
    _run(["ip", "-n", R, "link", "set", "lo", "up"])
    yield cleanup


@pytest.fixture
def line(cleanup):
    """tdl-a -- tdl-r -- tdl-b, forwarding in tdl-r, default routes at both ends."""
    for ns in (A, R, B):
        _run(["ip", "netns", "add", ns])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    _run(["ip", "link", "add", A_IF, "netns", A, "type", "veth", "peer", "name", RA_IF, "netns", R])
    _run(["ip", "link", "add", B_IF, "netns", B, "type", "veth", "peer", "name", RB_IF, "netns", R])
    for ns, ifname, addr in ((A, A_IF, A_IP), (R, RA_IF, RA_IP), (R, RB_IF, RB_IP), (B, B_IF, B_IP)):
        _run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname])
        _run(["ip", "-n", ns, "link", "set", ifname, "up"])
    _run(["ip", "-n", A, "route", "add", "default", "via", RA_IP])
    _run(["ip", "-n", B, "route", "add", "default", "via", RB_IP])
    _sysctl(R, "net.ipv4.ip_forward=1")
    yield cleanup


ROUTES = [Route(0, RA_IF, RB_IF, FWD), Route(1, RB_IF, RA_IF, REV)]


class Echo(threading.Thread):
    """A UDP echo server in namespace b; notes when each datagram arrived (for one-way times)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        with netns.enter(B):
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((B_IP, ECHO_PORT))
        self.sock.settimeout(0.05)
        self.done = threading.Event()
        self.arrived: dict[bytes, float] = {}

    def run(self) -> None:
        while not self.done.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            self.arrived[data] = time.perf_counter()
            self.sock.sendto(data, peer)

    def close(self) -> None:
        self.done.set()
        self.join(timeout=1)
        self.sock.close()


def _client() -> socket.socket:
    with netns.enter(A):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((A_IP, 0))
    return s


def _echo(sock: socket.socket, echo: Echo, seq: int, timeout: float = 1.0) -> tuple[float, float, float] | None:
    """One echo: (round trip, a->b, b->a) in seconds, None if no answer within `timeout`.
    The a->b time includes the echo thread's wake-up; the b->a time does not."""
    payload = seq.to_bytes(4, "big") * 16
    sock.settimeout(timeout)
    t0 = time.perf_counter()
    sock.sendto(payload, (B_IP, ECHO_PORT))
    deadline = t0 + timeout
    while True:
        try:
            data = sock.recv(2048)
        except socket.timeout:
            return None
        if data == payload:
            t1 = time.perf_counter()
            tb = echo.arrived[payload]
            return t1 - t0, tb - t0, t1 - tb
        sock.settimeout(max(1e-3, deadline - time.perf_counter()))  # a stale answer: keep waiting


@root_test
def test_delay_line_delays_both_directions_and_stops(line, tmp_path):
    state = tmp_path / "state"
    delayline.install_rules(R, ROUTES)
    rules = _run(netns.command(R, ["iptables-save", "-t", "mangle"])).stdout
    assert f"-A FORWARD -i {RA_IF} -o {RB_IF} -j NFQUEUE --queue-num 0" in rules
    assert f"-A FORWARD -i {RB_IF} -o {RA_IF} -j NFQUEUE --queue-num 1" in rules
    assert "bypass" not in rules

    pid = delayline.start(R, state, ROUTES, 10_000)
    line.append(pid)
    assert (state / "delay.pid").read_text().strip() == str(pid)
    assert delayline.is_delay_line(pid)
    assert delayline.is_delay_line(pid, R)
    assert not delayline.is_delay_line(pid, "other-ns")
    assert delayline.processes(R) == [pid]
    assert delayline.processes(A) == []

    echo = Echo()
    echo.start()
    client = _client()
    try:
        for i in range(2):  # warm-up: ARP on both sides
            assert _echo(client, echo, i) is not None
        samples = [_echo(client, echo, 100 + i) for i in range(15)]
        assert None not in samples, samples
        rtts, fwd, rev = (sorted(col) for col in zip(*samples))
        ms = [tuple(round(x * 1e3, 2) for x in s) for s in samples]

        # Both directions counted (17 datagrams each way), released, nothing dropped. The
        # report is rewritten every STATS_INTERVAL.
        def counted() -> bool:
            qs = delayline.status(state, R)["queues"]
            return all(qs.get(q, {}).get("released", 0) >= 17 for q in ("0", "1"))

        assert wait_for(counted, timeout=3 * delayline.STATS_INTERVAL + 1)
        st = delayline.status(state, R)
        assert st["pid"] == pid and st["alive"] and not st["stalled"]
        assert st["heartbeat_age_s"] < delayline.HEARTBEAT_STALE
        for q, delay in (("0", FWD), ("1", REV)):
            qs = st["queues"][q]
            assert qs["delay_s"] == delay
            assert qs["packets"] >= 17 and qs["bytes"] >= 17 * (20 + 8 + 64)
            assert qs["released"] == qs["packets"] and qs["held"] == 0
            # The kernel stamped the skbs (the delay line's SO_TIMESTAMPNS socket); the first
            # ones may miss it: net_enable_timestamp flips the static key from a workqueue.
            assert qs["no_timestamp"] <= 2, qs
            assert qs["err_p50_us"] is not None and abs(qs["err_p50_us"]) < 1_000, qs
            assert qs["early_max_us"] <= delayline.OVERSLEEP_CLIP * 1e6 + 50, qs
            k = st["kernel"][q]
            assert k["queue_dropped"] == 0 and k["user_dropped"] == 0 and k["waiting"] == 0, k
            assert k["id_sequence"] >= 17

        # The delays hold, in each direction (the rules map in/out interfaces to the right
        # queue). The delay line aims its wake-ups early by its oversleep estimate so that the
        # release error centres on zero: a packet may leave up to early_max before its time.
        # The upper bounds are on the median: the endpoints here run at normal priority, and a
        # loaded two-core machine delays single samples by several ms.
        # (+ CLOCK_EPS: the delay line times with CLOCK_REALTIME, we with CLOCK_MONOTONIC.)
        early_fwd = st["queues"]["0"]["early_max_us"] * 1e-6 + CLOCK_EPS
        early_rev = st["queues"]["1"]["early_max_us"] * 1e-6 + CLOCK_EPS
        assert FWD + REV - early_fwd - early_rev <= rtts[0] < FWD + REV + 0.002, ms
        assert rtts[len(rtts) // 2] < FWD + REV + 0.005, ms
        assert FWD - early_fwd <= fwd[0] < FWD + 0.002 and fwd[len(fwd) // 2] < FWD + 0.004, ms
        assert REV - early_rev <= rev[0] < REV + 0.002 and rev[len(rev) // 2] < REV + 0.004, ms

        delayline.stop(pid)
        assert not delayline.is_delay_line(pid)
        assert delayline.processes(R) == []
        st = delayline.status(state, R)
        assert st["alive"] is False and st["stalled"] is False
        # No listener and no bypass: the kernel drops what the rules queue.
        assert _echo(client, echo, 999, timeout=0.3) is None
        assert "Traceback" not in (state / "delay.log").read_text()
    finally:
        client.close()
        echo.close()


SINK_PORT = 7008


@root_test
def test_short_delay_packets_are_read_while_long_delay_ones_are_held(line, tmp_path):
    """The loop does not wake for arrivals while it holds packets; it reads again within the
    shortest delay. So a b->a datagram (10 ms) sent while an a->b one (30 ms) is held must
    still take ~10 ms, not wait for the held one's release."""
    delayline.install_rules(R, ROUTES)
    line.append(delayline.start(R, tmp_path / "state", ROUTES, 10_000))
    with netns.enter(B):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((B_IP, SINK_PORT))
    a = _client()
    a.settimeout(1.0)
    try:
        a.sendto(b"warm", (B_IP, SINK_PORT))  # ARP on both sides
        back.sendto(b"warm", a.getsockname())
        assert a.recv(64) == b"warm"
        one_way = []
        for i in range(8):
            a.sendto(b"held %d" % i, (B_IP, SINK_PORT))  # held FWD = 30 ms in queue 0
            time.sleep(0.003)
            t0 = time.perf_counter()
            back.sendto(b"back %d" % i, a.getsockname())  # REV = 10 ms in queue 1
            assert a.recv(64) == b"back %d" % i
            one_way.append(time.perf_counter() - t0)
            time.sleep(FWD)  # let the held one go before the next round
        one_way.sort()
        # Released at its own time: nowhere near the ~27 ms the held packet still had to go.
        assert one_way[len(one_way) // 2] < REV + 0.004, [round(x * 1e3, 2) for x in one_way]
    finally:
        for s in (sink, back, a):
            s.close()


@root_test
def test_reordering_holds_back_the_chosen_packets_and_only_those(line, tmp_path):
    """30% of a->b datagrams held 20 ms longer than the 5 ms delay: 1 ms apart, every held one
    is overtaken, so the datagrams that arrive after a higher number are exactly the ones the
    delay line moved to the reorder queue. None is lost, none duplicated."""
    delay, extra, n = 0.005, 0.020, 200
    routes = [Route(0, RA_IF, RB_IF, delay, reorder=0.3, reorder_delay=extra), Route(1, RB_IF, RA_IF, REV)]
    delayline.install_rules(R, routes)
    state = tmp_path / "state"
    line.append(delayline.start(R, state, routes, 10_000))
    with netns.enter(B):
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((B_IP, SINK_PORT))
    sink.settimeout(1.0)
    sink.setsockopt(socket.SOL_SOCKET, delayline.SO_TIMESTAMPNS, 1)  # arrival = kernel stamp
    a = _client()
    try:
        a.sendto(b"warm", (B_IP, SINK_PORT))
        assert sink.recv(64) == b"warm"
        sent = {}
        for i in range(n):
            sent[i] = time.time()
            a.sendto(i.to_bytes(4, "big") * 8, (B_IP, SINK_PORT))
            time.sleep(0.001)
        got = []
        while len(got) < n:
            data, anc, _flags, _addr = sink.recvmsg(64, 64)
            sec, nsec = struct.unpack("=qq", anc[0][2][:16])
            got.append((int.from_bytes(data[:4], "big"), sec + nsec * 1e-9))
        order = [i for i, _ in got]
        assert sorted(order) == list(range(n))  # all there, once
        late, highest = [], -1
        for i, _ in got:
            if i < highest:
                late.append(i)
            highest = max(highest, i)
        one_way = {i: t - sent[i] for i, t in got}
        held = sorted(one_way[i] for i in late)
        direct = sorted(one_way[i] for i in order if i not in set(late))

        def settled() -> bool:
            q = delayline.status(state, R)["queues"]
            main, back = q["0"], q[str(delayline.reorder_queue(0))]
            return main["packets"] == n + 1 and back["released"] == main["reordered"] and not main["held"]

        assert wait_for(settled, timeout=3 * delayline.STATS_INTERVAL + 1), delayline.status(state, R)["queues"]
        qs = delayline.status(state, R)["queues"]
        main, back = qs["0"], qs[str(delayline.reorder_queue(0))]
        assert main["reorder"] == 0.3 and back["reorder_of"] == 0 and back["delay_s"] == delay + extra
        # Held ones nothing overtook: the warm-up datagram (0 or 1) and the trailing run of held
        # datagrams at the end of the stream (told apart from direct ones by their one-way time).
        late_set, tail = set(late), 0
        for i in reversed(range(n)):
            if i in late_set or one_way[i] < delay + extra / 2:
                break
            tail += 1
        assert main["reordered"] - len(late) - tail in (0, 1) and back["packets"] == main["reordered"], (
            main, back, tail)
        assert main["released"] + main["reordered"] == main["packets"]
        # 30% of 201 datagrams: 60 expected, sd 6.5; 5 sd either side.
        assert 28 <= len(late) <= 93, len(late)
        ms = lambda xs: [round(x * 1e3, 2) for x in xs]  # noqa: E731
        assert delay + extra - 0.001 <= held[len(held) // 2] < delay + extra + 0.004, (ms(held), ms(direct))
        assert delay - 0.001 <= direct[len(direct) // 2] < delay + 0.004, ms(direct)
    finally:
        sink.close()
        a.close()


def test_hold_argument_round_trip_and_errors():
    for hold in (delayline.Hold(0, 0.02), delayline.Hold(3, 0.0, 0.01, 0.001), delayline.Hold(5, 0.1 + 0.2, 0.5, 1e-5)):
        assert delayline.Hold.from_arg(hold.to_arg()) == hold
    assert delayline.Hold(1, 0.02).to_arg() == "1:0.02"
    with pytest.raises(ValueError, match="NUM:DELAY_S"):
        delayline.Hold.from_arg("1:0.02:0.1")
    assert delayline.reorder_queue(127) == delayline.REORDER_QUEUE_BASE + 127 <= 0xFFFF


def test_requeue_and_single_verdict_bytes():
    assert nfqueue.requeue(0) == nfqueue.NF_QUEUE
    assert nfqueue.requeue(32770) == (32770 << 16) | 3
    with pytest.raises(ValueError):
        nfqueue.requeue(1 << 16)
    msg = nfqueue.verdict(7, 0xABCDEF, nfqueue.requeue(32775))
    length, mtype, flags, _seq, _pid = NLMSGHDR.unpack_from(msg)
    assert length == len(msg) and mtype == (3 << 8) | 1 and flags == NLM_F_REQUEST
    assert NFGENMSG.unpack_from(msg, NLMSGHDR.size)[2] == 7
    alen, atype = NLA.unpack_from(msg, NLMSGHDR.size + NFGENMSG.size)
    assert (alen, atype) == (12, NFQA_VERDICT_HDR)
    assert struct.unpack_from("!II", msg, NLMSGHDR.size + NFGENMSG.size + NLA.size) == ((32775 << 16) | 3, 0xABCDEF)


@root_test
def test_delay_line_holds_the_cpu_wakeup_latency_at_zero(router, tmp_path):
    if not os.path.exists(delayline.CPU_DMA_LATENCY):
        pytest.skip(f"needs {delayline.CPU_DMA_LATENCY} (CONFIG_CPU_IDLE PM QoS) to check the hold")
    state = tmp_path / "state"
    router.append(delayline.start(R, state, ROUTES, 1000))
    st = delayline.status(state, R)
    assert st["idle_poll"] is True and st["idle_poll_error"] is None, st
    # Reading the device gives the aggregate of all requests: ours is 0.
    with open(delayline.CPU_DMA_LATENCY, "rb") as f:
        assert struct.unpack("=i", f.read(4))[0] == 0


def test_hold_cpu_awake_reports_why_it_could_not(tmp_path):
    held = delayline._hold_cpu_awake(str(tmp_path / "no-such-device"))
    assert held.held is False and held.fd is None
    assert "no-such-device" in held.error and "No such file" in held.error


@pytest.mark.parametrize("value,text", [
    (None, "-"), (25.0, "25"), (-85.0, "-85"), (19_985.0, "19985"),
    (delayline.LATEST_US - delayline.BUCKET_US / 2, f"≥{delayline.LATEST_US}"),
    (delayline.EARLIEST_US + delayline.BUCKET_US / 2, f"≤{delayline.EARLIEST_US}"),
])
def test_format_error_us_shows_the_open_ended_buckets_as_bounds(value, text):
    assert delayline.format_error_us(value) == text


def test_clipped_quantile_is_shown_as_a_bound():
    q = DelayQueue(0, 0.02)
    for _ in range(10):
        q.record(0.5)  # 500 ms late: beyond the histogram
    p99 = q.stats()["err_p99_us"]
    assert delayline.format_error_us(p99) == f"≥{delayline.LATEST_US}"
    assert q.stats()["late_max_us"] == 500_000.0


@root_test
def test_start_fails_cleanly_when_the_queue_is_taken(router, tmp_path):
    pid = delayline.start(R, tmp_path / "one", ROUTES, 1000)
    router.append(pid)
    t0 = time.monotonic()
    with pytest.raises(netns.LabError) as info:
        delayline.start(R, tmp_path / "two", [Route(1, "x", "y", 0.01)], 1000)
    assert time.monotonic() - t0 < 3
    msg = str(info.value)
    assert f"delay line in {R} did not start" in msg
    assert "nfqueue 1" in msg  # the reason: the queue that could not be bound
    assert str(tmp_path / "two" / "delay.log") in msg
    assert not (tmp_path / "two" / "delay.pid").exists()
    # The failed one is gone, the first one untouched.
    assert delayline.processes(R) == [pid]
    assert delayline.status(tmp_path / "one", R)["alive"]


@root_test
def test_start_names_the_queue_already_bound(router, tmp_path):
    router.append(delayline.start(R, tmp_path / "one", ROUTES, 1000))
    with pytest.raises(netns.LabError, match="already bound"):
        delayline.start(R, tmp_path / "two", ROUTES, 1000)


@root_test
def test_delay_line_exits_when_its_namespace_is_deleted(router, tmp_path):
    state = tmp_path / "state"
    pid = delayline.start(R, state, ROUTES, 1000)
    router.append(pid)
    assert delayline.is_delay_line(pid, R)
    t0 = time.monotonic()
    _run(["ip", "netns", "del", R])
    assert wait_for(lambda: not delayline.is_delay_line(pid), timeout=2.5)
    took = time.monotonic() - t0
    assert took < 2.0, took
    try:  # our child, unless subprocess reaped it already (start() drops its Popen)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    except ChildProcessError:
        pass
    assert "Traceback" not in (state / "delay.log").read_text()
    assert delayline.status(state, R)["alive"] is False
