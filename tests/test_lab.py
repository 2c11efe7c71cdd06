"""The lab (netns/lab.py, netns/ns.py, netns/cli.py) against the real kernel.

Tests marked `root` build namespaces and need root; the others (parsers, name checks) run
anywhere. Every lab name here starts with "tl" and belongs to this file alone, so the tests can
run next to other suites' labs; every lab is removed in teardown, also when a test fails.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import netns
from conftest import root_test
from netns.cli import register
from netns.lab import Lab, default_burst_bytes, default_queue_bytes, down, status

@pytest.fixture
def labs():
    """Make labs by name; all of them (and leftovers under those names) are removed after."""
    made: list[str] = []

    def make(name: str, **kw) -> Lab:
        made.append(name)
        return Lab(name, **kw).up()

    yield make
    for name in made:
        down(name)


# ---------------------------------------------------------------------------------------------
# Helpers: kernel TCP through a lab, with sockets opened inside the namespaces via netns.enter


class Sink(threading.Thread):
    """A TCP server in namespace `ns`: accepts one connection, counts bytes until EOF."""

    def __init__(self, ns: str, ip: str, port: int = 5201):
        super().__init__(daemon=True)
        with netns.enter(ns):  # the socket belongs to `ns` for good, whichever thread uses it
            self.listener = socket.create_server((ip, port))
        self.listener.settimeout(5)
        self.received = 0
        self.peer = None
        self.first = self.last = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn, self.peer = self.listener.accept()
            with conn:
                conn.settimeout(5)
                while data := conn.recv(1 << 16):
                    now = time.monotonic()
                    if self.first is None:
                        self.first = now
                    self.received += len(data)
                    self.last = now
        except BaseException as e:  # reported by the test through .error
            self.error = e
        finally:
            self.listener.close()


def connect_from(
    ns: str, ip: str, port: int = 5201, timeout: float = 3, cc: bytes = b"cubic"
) -> socket.socket:
    """A kernel TCP connection from namespace `ns`, with a fixed congestion control.

    A new namespace inherits the root namespace's default congestion control (bbr on some
    machines, cubic on others); fix it so the result does not depend on the host.
    """
    with netns.enter(ns):
        sock = socket.socket()
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc)
            sock.settimeout(timeout)
            sock.connect((ip, port))
        except BaseException:
            sock.close()
            raise
        return sock


def send_for(sock: socket.socket, seconds: float) -> int:
    chunk = b"x" * (1 << 16)
    sent = 0
    end = time.monotonic() + seconds
    with sock:
        while time.monotonic() < end:
            sock.sendall(chunk)
            sent += len(chunk)
    return sent


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def own_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


# ---------------------------------------------------------------------------------------------
# Without root


@pytest.mark.parametrize("bad", ["", "bad-name", "toolongname", "a b", "ümlaut", "a/b", 7, None])
def test_invalid_names_rejected(bad):
    with pytest.raises(ValueError, match="letters or digits"):
        Lab(bad)
    with pytest.raises(ValueError, match="letters or digits"):
        down(bad)
    with pytest.raises(ValueError, match="letters or digits"):
        status(bad)


def test_invalid_parameters_rejected():
    with pytest.raises(ValueError, match="need a rate"):
        Lab("tl0", queue_bytes=100_000)
    with pytest.raises(ValueError, match="1 Mbit/s to 10 Gbit/s"):
        Lab("tl0", rate=0)
    with pytest.raises(ValueError, match="int in bits/s"):
        Lab("tl0", rate=50e6)
    with pytest.raises(ValueError, match="1 Mbit/s to 10 Gbit/s"):
        Lab("tl0", rate=40_000_000_000)
    with pytest.raises(ValueError, match="needs a delay"):
        Lab("tl0", rate=50_000_000, queue="1bdp")
    with pytest.raises(ValueError, match="give the queue once"):
        Lab("tl0", rate=50_000_000, queue="1bdp", queue_bytes=100_000)
    with pytest.raises(ValueError, match="senders"):
        Lab("tl0", senders=0)
    with pytest.raises(ValueError, match="smaller than one frame"):
        Lab("tl0", rate=50_000_000, queue_bytes=1000)
    with pytest.raises(ValueError, match="at least one frame"):
        Lab("tl0", rate=50_000_000, burst_bytes=1000)
    with pytest.raises(ValueError, match="mtu"):
        Lab("tl0", mtu=20)


def test_defaults_documented_values():
    assert default_queue_bytes(50_000_000) == 62_500
    assert default_queue_bytes(1_000_000) == 20 * 1514
    assert default_burst_bytes(50_000_000) == 6_250
    assert default_burst_bytes(1_000_000) == 2 * 1514
    assert default_burst_bytes(500_000_000) == 62_500  # still below a 64 KB bundle
    assert default_burst_bytes(1_000_000_000) == 125_000  # 1 ms: bundles pass whole
    assert default_burst_bytes(2_000_000_000) == 250_000  # 1 ms: accuracy wins


def test_lab_names_and_addresses():
    lab = Lab("tl0")
    assert (lab.ns_sender, lab.ns_router, lab.ns_receiver) == ("tl0-snd", "tl0-rtr", "tl0-rcv")
    assert (lab.sender_if, lab.receiver_if) == ("tl0-s0", "tl0-c0")
    assert (lab.router_sender_if, lab.router_receiver_if) == ("tl0-r0", "tl0-rc")
    assert (lab.sender_ip, lab.receiver_ip) == ("198.18.1.1", "198.19.0.1")
    assert lab.router_sender_ip == "198.18.1.254"
    assert lab.bottleneck is None


def test_command_prefix():
    assert netns.command("tl0-snd", ["tc", "qdisc"]) == [
        "nsenter", "--net=/run/netns/tl0-snd", "--", "tc", "qdisc"
    ]


def test_enter_missing_namespace_says_what_to_run():
    with pytest.raises(netns.LabError, match="usertcp lab up"):
        with netns.enter("tl0-nope"):
            pass
    assert not netns.exists("tl0-nope")


# ---------------------------------------------------------------------------------------------
# With root: real namespaces


@root_test
def test_up_builds_the_line_and_kernel_tcp_crosses_the_router(labs):
    before_fds = len(os.listdir("/proc/self/fd"))
    before_ns = own_netns_inode()
    t0 = time.monotonic()
    lab = labs("tl1")
    assert time.monotonic() - t0 < 2.0
    assert own_netns_inode() == before_ns

    sink = Sink(lab.ns_receiver, lab.receiver_ip)
    sink.start()
    sock = connect_from(lab.ns_sender, lab.receiver_ip)
    sock.sendall(b"hello through the router")
    sock.close()
    sink.join(5)
    assert sink.error is None
    assert sink.received == len(b"hello through the router")
    assert sink.peer[0] == lab.sender_ip  # routed, not NATed

    with netns.enter(lab.ns_router):
        assert read("/proc/sys/net/ipv4/ip_forward").strip() == "1"
        assert read("/proc/sys/net/ipv6/conf/all/disable_ipv6").strip() == "1"
    with netns.enter(lab.ns_sender):
        assert read("/proc/sys/net/ipv4/ip_forward").strip() == "0"
    assert own_netns_inode() == before_ns

    # Nothing of the lab in our namespace; no netlink socket left open by up/status/down.
    assert not root_links() & {"tl1-s0", "tl1-r0", "tl1-rc", "tl1-c0"}
    status("tl1")
    down("tl1")
    assert len(os.listdir("/proc/self/fd")) == before_fds


@root_test
def test_mtu_and_require_up(labs):
    with pytest.raises(netns.LabError, match="usertcp lab up --name tl11"):
        netns.require_up("tl11")
    lab = labs("tl11", mtu=9000)
    netns.require_up("tl11")
    assert [i["mtu"] for i in status("tl11")["interfaces"]] == [9000] * 4
    sink = Sink(lab.ns_receiver, lab.receiver_ip)
    sink.start()
    send_for(connect_from(lab.ns_sender, lab.receiver_ip), 0.05)
    sink.join(5)
    assert sink.error is None and sink.received > 0


@root_test
def test_enter_moves_only_the_calling_thread(labs):
    lab = labs("tl1")
    main_ns = own_netns_inode()
    seen = {}

    def worker():
        with netns.enter(lab.ns_receiver):
            seen["inside"] = own_netns_inode()
            seen["dev"] = read("/proc/thread-self/net/dev")
            time.sleep(0.05)
        seen["after"] = own_netns_inode()

    t = threading.Thread(target=worker)
    t.start()
    time.sleep(0.02)
    assert own_netns_inode() == main_ns  # the main thread did not move
    t.join()
    assert seen["inside"] != main_ns
    assert seen["after"] == main_ns
    assert "tl1-c0" in seen["dev"] and "tl1-s0" not in seen["dev"]
    assert os.path.exists("/run/netns/tl1-rcv")  # mount namespace untouched


@root_test
def test_labs_built_from_two_threads_at_once(labs):
    """Building never forks and only moves the building thread, so threads may build labs."""
    errors = []
    main_ns = own_netns_inode()

    def build(name):
        try:
            labs(name)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=build, args=(n,)) for n in ("tl12", "tl13")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == []
    assert status("tl12")["up"] and status("tl13")["up"]
    assert own_netns_inode() == main_ns


@root_test
def test_status_reports_the_lab(labs):
    lab = labs("tl2", rate=50_000_000)
    st = status("tl2")
    assert st["exists"] and st["up"]
    assert st["namespaces"] == {"tl2-snd": True, "tl2-rtr": True, "tl2-rcv": True}
    got = {(i["namespace"], i["ifname"]): i for i in st["interfaces"]}
    assert got[("tl2-snd", "tl2-s0")]["addresses"] == ["198.18.1.1/24"]
    assert got[("tl2-rtr", "tl2-r0")]["addresses"] == ["198.18.1.254/24"]
    assert got[("tl2-rtr", "tl2-rc")]["addresses"] == ["198.19.0.254/24"]
    assert got[("tl2-rcv", "tl2-c0")]["addresses"] == ["198.19.0.1/24"]
    assert all(i["state"] == "up" and i["mtu"] == 1500 for i in got.values())
    assert st["root_leftovers"] == []
    bn = st["bottleneck"]
    assert bn["kind"] == "tbf" and bn["rate_bps"] == 50_000_000
    assert bn["limit_bytes"] == lab.queue_bytes == 62_500
    assert bn["burst_bytes"] >= default_burst_bytes(50_000_000)

    # And tc(8) inside the router agrees that the TBF took.
    tc = subprocess.run(
        netns.command(lab.ns_router, ["tc", "-s", "qdisc", "show", "dev", lab.router_receiver_if]),
        capture_output=True, text=True, check=True,
    ).stdout
    assert "qdisc tbf 1: root" in tc and "rate 50Mbit" in tc

    down("tl2")
    st = status("tl2")
    assert not st["exists"] and not st["up"] and st["bottleneck"] is None
    assert st["namespaces"] == {"tl2-snd": False, "tl2-rtr": False, "tl2-rcv": False}


@root_test
def test_two_labs_coexist_with_the_same_addresses(labs):
    a, b = labs("tl3"), labs("tl4")
    assert status("tl3")["up"] and status("tl4")["up"]
    sink = Sink(b.ns_receiver, b.receiver_ip)
    sink.start()
    # Lab a has the same addresses but is a separate world: nobody listens there.
    with pytest.raises(ConnectionRefusedError):
        connect_from(a.ns_sender, a.receiver_ip).close()
    send_for(connect_from(b.ns_sender, b.receiver_ip), 0.05)
    sink.join(5)
    assert sink.error is None and sink.received > 0


@root_test
def test_down_removes_namespaces_and_interfaces(labs):
    lab = labs("tl5")
    lab.down()
    for ns in lab.namespaces:
        assert not os.path.lexists(f"/run/netns/{ns}")
        assert not netns.exists(ns)
    assert not root_links() & {"tl5-s0", "tl5-r0", "tl5-rc", "tl5-c0"}
    assert lab.down() == []  # idempotent


@root_test
def test_down_after_a_crash_needs_no_lab_object(labs):
    # A real crash: a process builds the lab and dies by SIGKILL.
    code = "import os; from netns.lab import Lab; Lab('tl6').up(); os.kill(os.getpid(), 9)"
    proc = subprocess.run([sys.executable, "-c", code], timeout=20)
    assert proc.returncode == -9
    assert status("tl6")["up"]
    # Plus debris of a crash in the middle of up(): a veth still in our namespace and an
    # empty namespace file that was never mounted.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname="tl7-s0", kind="veth", peer="tl7-r0")
    open("/run/netns/tl7-rtr", "w").close()
    assert status("tl7")["exists"] and not status("tl7")["up"]
    assert not netns.exists("tl7-rtr")

    assert set(down("tl6")) == {"tl6-snd", "tl6-rtr", "tl6-rcv"}
    removed = set(down("tl7"))  # deleting one end of the veth took its peer with it
    assert removed in ({"tl7-rtr", "tl7-s0"}, {"tl7-rtr", "tl7-r0"})
    for name in ("tl6", "tl7"):
        assert not status(name)["exists"]
    assert not root_links() & {"tl7-s0", "tl7-r0"}

    # up() over debris also works: it clears leftovers first.
    with IPRoute() as ipr:
        ipr.link("add", ifname="tl7-rc", kind="veth", peer="tl7-c0")
    labs("tl7")
    assert status("tl7")["up"] and status("tl7")["root_leftovers"] == []


@root_test
def test_context_manager_removes_the_lab_on_exception():
    with pytest.raises(RuntimeError, match="boom"):
        with Lab("tl8") as lab:
            assert status("tl8")["up"]
            raise RuntimeError("boom")
    assert not status("tl8")["exists"]
    assert lab.name == "tl8"


@root_test
def test_failed_up_leaves_nothing(monkeypatch):
    import netns.lab as labmod

    def broken(names, bn):
        raise OSError("simulated tc failure")

    monkeypatch.setattr(labmod, "_add_bottleneck", broken)
    with pytest.raises(OSError, match="simulated"):
        Lab("tl8", rate=10_000_000).up()
    assert not status("tl8")["exists"]


@root_test
def test_rate_limit_holds_kernel_tcp_to_the_bottleneck(labs):
    lab = labs("tl9", rate=50_000_000)
    sink = Sink(lab.ns_receiver, lab.receiver_ip)
    sink.start()
    send_for(connect_from(lab.ns_sender, lab.receiver_ip), 1.5)
    sink.join(10)
    assert sink.error is None
    goodput = sink.received * 8 / (sink.last - sink.first)
    # The ceiling is 50 Mbit/s * 1448/1514 = 47.8 Mbit/s of TCP payload.
    assert 35e6 < goodput < 55e6, f"goodput {goodput / 1e6:.1f} Mbit/s"
    bn = status("tl9")["bottleneck"]
    assert bn["sent_bytes"] >= sink.received


@root_test
def test_cli_up_status_down(capsys):
    parser = argparse.ArgumentParser(prog="usertcp")
    register(parser.add_subparsers())

    def run(*argv: str) -> int:
        args = parser.parse_args(["lab", *argv])
        return args.func(args)

    try:
        assert run("up", "--name", "tl10", "--rate", "20mbit", "--queue", "64k") == 0
        out = capsys.readouterr().out
        assert "lab 'tl10' is up" in out and "tbf 20 Mbit/s, queue 64000 B" in out
        assert run("status", "--name", "tl10") == 0
        out = capsys.readouterr().out
        assert "198.19.0.254/24" in out and "tl10-rc" in out and "tbf 20 Mbit/s" in out
    finally:
        assert run("down", "--name", "tl10") == 0
    assert "removed" in capsys.readouterr().out
    assert run("status", "--name", "tl10") == 1
    assert "lab 'tl10' is down" in capsys.readouterr().out
    assert run("up", "--name", "bad-name") == 2
    assert "invalid lab name" in capsys.readouterr().err
