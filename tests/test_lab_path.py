"""The lab's path elements in a real lab: delay line, loss, several senders, configs, leftovers.

Every lab here is named "tp<N>" and belongs to this file; each is removed in teardown, also when a
test fails. Timing checks are functional (is the delay there, per direction and per sender), with
bounds loose enough for a loaded CI machine; the accuracy figures themselves are measured by
bench/lab_path.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import netns
from netns import delayline
from netns.config import LabConfig
from netns.lab import STATE_ROOT, Lab, down, status
from netns.probe import rtt_probe

pytestmark = pytest.mark.root


@pytest.fixture
def labs():
    made: list[str] = []

    def make(**kw) -> Lab:
        lab = Lab(**kw) if "config" not in kw else Lab.from_config(kw["config"])
        made.append(lab.name)
        return lab.up()

    yield make
    for name in made:
        down(name)


def assert_rtt(ns: str, dst: str, expected: float, count: int = 10) -> None:
    r = rtt_probe(ns, dst, count=count, interval=0.005, timeout=2 + 2 * expected)
    assert r.received == count, f"{r.lost} of {count} probes lost"
    # The delay line releases up to its wake-up latency early (~50 us) and, on a loaded
    # machine, a few ms late; it must never be missing or doubled.
    assert expected - 0.001 <= r.min, (r.min, expected)
    assert r.median < expected + 0.005, (r.median, expected)


def test_delay_each_direction_and_status(labs):
    lab = labs(name="tp1", delay=0.015, delay_rev=0.005)
    assert_rtt(lab.ns_sender, lab.receiver_ip, 0.020)
    time.sleep(2 * delayline.STATS_INTERVAL)  # the delay line reports twice a second
    st = status("tp1", probe=True)
    assert st["up"] and st["delay"]["alive"] and not st["delay"]["stalled"]
    queues = {(q["sender"], q["direction"]): q for q in st["delay"]["queues"].values()}
    assert queues[(0, "forward")]["delay_s"] == 0.015
    assert queues[(0, "reverse")]["delay_s"] == 0.005
    for q in queues.values():
        assert q["packets"] >= 10 and q["queue_dropped"] == 0 and q["user_dropped"] == 0
        # The kernel's receive timestamps reach the queue (a first packet racing the kernel's
        # switch-on of timestamping may be timed by the delay line's own clock instead).
        assert q["no_timestamp"] <= 1
    rtt = st["base_rtt"][0]
    assert rtt["configured_ms"] == 20 and 19 <= rtt["min_ms"] < 25
    assert st["config"]["delay"] == "15ms" and st["config"]["delay_rev"] == "5ms"


def test_zero_delay_direction_needs_no_queue(labs):
    lab = labs(name="tp2", delay=0.0, delay_rev=0.010)
    assert_rtt(lab.ns_sender, lab.receiver_ip, 0.010)
    queues = status("tp2")["delay"]["queues"]
    assert [q["direction"] for q in queues.values()] == ["reverse"]


def test_several_senders_with_their_own_rtt_share_one_bottleneck(labs):
    config = LabConfig.from_dict(
        {"name": "tp3", "rate": "20mbit", "queue": "1bdp",
         "sender": [{"delay": "5ms"}, {"delay": "15ms"}, {"delay": "10ms", "delay_rev": "0ms"}]},
        source="test",
    )
    lab = labs(config=config)
    assert lab.ns_senders == ("tp3-snd", "tp3-snd2", "tp3-snd3")
    for i, expected in enumerate((0.010, 0.030, 0.010)):
        ns, ifname, ip = lab.sender(i)
        assert ifname == f"tp3-s{i}" and ip == f"198.18.{i + 1}.1"
        assert_rtt(ns, lab.receiver_ip, expected, count=5)
    # One bottleneck for all: the TBF on the router's egress toward the receiver, 1 BDP of
    # sender 1's RTT.
    bn = status("tp3")["bottleneck"]
    assert bn["rate_bps"] == 20_000_000 and bn["limit_bytes"] == 20_000_000 // 8 * 10 // 1000
    with pytest.raises(IndexError, match="3 sender"):
        lab.sender(3)


def test_dead_delay_line_stops_forwarding_and_status_says_so(labs):
    lab = labs(name="tp4", delay=0.005)
    pid = status("tp4")["delay"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while delayline.is_delay_line(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    st = status("tp4")
    assert not st["delay"]["alive"] and not st["up"]
    r = rtt_probe(lab.ns_sender, lab.receiver_ip, count=5, interval=0.01, timeout=0.5)
    assert r.received == 0  # no silent zero-delay forwarding
    out = subprocess.run(
        [sys.executable, "-m", "usertcp", "lab", "status", "--name", "tp4", "--no-probe"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1 and "delay line DEAD" in out.stdout


def test_forward_and_reverse_loss_are_counted_per_packet(labs):
    lab = labs(name="tp5", loss=0.2, loss_rev=0.1)
    with netns.enter(lab.ns_receiver):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        rx.bind((lab.receiver_ip, 9000))
    with netns.enter(lab.ns_sender):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    got = []

    def drain():
        rx.settimeout(1.0)
        try:
            while True:
                got.append(rx.recv(2048))
        except socket.timeout:
            pass

    t = threading.Thread(target=drain)
    t.start()
    n = 5000
    for i in range(n):
        tx.sendto(b"x" * 1472, (lab.receiver_ip, 9000))
        if i % 200 == 0:
            time.sleep(0.002)
    t.join()
    fwd = status("tp5")["loss"]["forward"]
    assert fwd["full_packets"] >= n and fwd["dropped"] == n - len(got) + (fwd["packets"] - n)
    assert 0.15 < fwd["dropped"] / fwd["packets"] < 0.25
    # Reverse loss sits on the router's interface toward the receiver: it sees what the
    # receiver sends back (here ICMP echo replies).
    r = rtt_probe(lab.ns_sender, lab.receiver_ip, count=500, interval=0.0005, timeout=1.0)
    rev = status("tp5")["loss"]["reverse"]
    assert rev["packets"] >= r.sent * 0.7 and rev["dropped"] > 0
    # 1 - 0.8 * 0.9 = 0.28 expected; sd over 500 probes is 0.02: these are 5-sigma bounds.
    assert 0.18 < r.lost / r.sent < 0.38
    rx.close()
    tx.close()


def test_crash_leaves_a_delay_line_that_down_and_up_clear(labs):
    code = "import os; from netns.lab import Lab; Lab('tp6', delay=0.002).up(); os.kill(os.getpid(), 9)"
    proc = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert proc.returncode == -9
    orphans = delayline.processes("tp6-rtr")
    assert len(orphans) == 1  # the wire outlives the process that built it, by design
    assert status("tp6")["up"]
    labs(name="tp6", delay=0.003)  # up() over the leftovers replaces everything
    now = delayline.processes("tp6-rtr")
    assert len(now) == 1 and now != orphans
    removed = down("tp6")
    assert any("delay line" in r for r in removed)
    assert delayline.processes("tp6-rtr") == []
    assert not (STATE_ROOT / "tp6").exists()


def test_cli_up_from_toml_with_flag_overrides_then_json_status(tmp_path):
    cfg = tmp_path / "lab.toml"
    cfg.write_text('rate = "10mbit"\ndelay = "3ms"\nqueue = "50p"\nsenders = 2\n')

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "usertcp", "lab", *argv],
                              capture_output=True, text=True, timeout=120)

    try:
        r = cli("up", "--name", "tp7", "-c", str(cfg), "--delay-rev", "1ms", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["up"] and st["config"]["senders"] == 2
        assert st["bottleneck"]["limit_bytes"] == 50 * 1514
        assert [round(b["configured_ms"]) for b in st["base_rtt"]] == [4, 4]
        assert all(b["lost"] == 0 and b["min_ms"] >= 3.9 for b in st["base_rtt"])
        r = cli("status", "--name", "tp7", "--json", "--no-probe")
        assert r.returncode == 0 and json.loads(r.stdout)["base_rtt"] is None
    finally:
        cli("down", "--name", "tp7")
    r = cli("up", "--name", "tp7", "--preset", "nosuch")
    assert r.returncode == 2 and "nosuch" in r.stderr and "wan-50m-40ms" in r.stderr
    r = cli("up", "--name", "tp7", "--rate", "50mbit", "--queue", "1bdp")
    assert r.returncode == 2 and "needs a delay" in r.stderr
    r = cli("presets", "--json")
    assert "wan-50m-40ms" in json.loads(r.stdout)
    assert not netns.exists("tp7-rtr")


def _netstat(ns: str) -> dict[str, int]:
    """TcpExt counters of namespace `ns` (/proc/net/netstat read from inside it)."""
    with netns.enter(ns):
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    out = {}
    for head, values in zip(lines[::2], lines[1::2]):
        prefix, names = head.split(":", 1)
        out.update({f"{prefix}{n}": int(v) for n, v in zip(names.split(), values.split(":", 1)[1].split())})
    return out


def test_reordering_is_per_packet_and_kernel_tcp_sees_it(labs):
    """A reordering direction's queue holds MTU-sized packets (bundles segmented before it), a
    fraction of them held back by the extra delay; kernel TCP through it still delivers
    everything, and its sender notices the reordering (SACK-detected reordering)."""
    lab = labs(name="tp8", rate=50_000_000, delay=0.005, reorder=0.02, reorder_delay=0.002)
    with netns.enter(lab.ns_receiver):
        server = socket.create_server((lab.receiver_ip, 5208))
    got = []

    def sink():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1 << 16):
                got.append(len(data))

    t = threading.Thread(target=sink)
    t.start()
    before = _netstat(lab.ns_sender)
    with netns.enter(lab.ns_sender):
        c = socket.socket()
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    c.connect((lab.receiver_ip, 5208))
    payload = b"y" * (4 << 20)
    c.sendall(payload)
    c.close()
    t.join(timeout=30)
    server.close()
    assert sum(got) == len(payload)
    after = _netstat(lab.ns_sender)
    assert after["TcpExtTCPSACKReorder"] > before["TcpExtTCPSACKReorder"]
    time.sleep(2 * delayline.STATS_INTERVAL)
    queues = {q["direction"]: q for q in status("tp8")["delay"]["queues"].values()}
    fwd, back, rev = queues["forward"], queues["forward held back"], queues["reverse"]
    # Per packet: no queued packet is larger than an MTU (a GSO bundle would be ~64 KB).
    assert fwd["packets"] > len(payload) // 1500 and fwd["bytes"] / fwd["packets"] <= lab.mtu
    assert back["delay_s"] == 0.007 and back["packets"] == fwd["reordered"] == back["released"]
    # 2% of ~3000 packets: 60 expected, sd ~7.7: 5-sigma bounds.
    share = fwd["reordered"] / fwd["packets"]
    assert 0.02 - 5 * (0.02 * 0.98 / fwd["packets"]) ** 0.5 < share < 0.02 + 5 * (0.02 * 0.98 / fwd["packets"]) ** 0.5
    assert rev["reorder"] == 0 and rev["reordered"] == 0
