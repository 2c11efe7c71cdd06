"""The gate against forged and misbehaving packets, checked on both sides of the wire.

Each forged packet is sent for real from the sender namespace; the gate's counter for the reason
must move, and a packet tap on the router's side of the link must not see it (a dropped packet
that the counter claims but the wire shows would be a lie). A well-formed packet of the same
flow from the owner's socket must get through, so the tap is known to work.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

import netns
from usertcp import gate
from usertcp.cc.newreno import NewReno
from usertcp.datapath.frame import FrameBuilder, parse_frame
from usertcp.datapath.packet import ETH_P_ALL, PacketDatapath
from usertcp.datapath.route import resolve
from usertcp.engine.connection import Connection, State
from usertcp.gate import GateMaps
from usertcp.loop import EventLoop
from usertcp.segment import Flags, Transmission
from usertcp.sender import reserve_port
from usertcp.sources import BytesSource

from conftest import SinkProcess, make_gated_lab, tcp_out_rsts, teardown_gated_lab, wait_for

pytestmark = pytest.mark.root
PORT = 5201


@pytest.fixture(scope="module")
def lab():
    lab = make_gated_lab("tg1")
    yield lab
    teardown_gated_lab(lab)


class Tap:
    """Every frame arriving on the router's interface toward the sender."""

    def __init__(self, lab):
        with netns.enter(lab.ns_router):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((lab.router_sender_if, ETH_P_ALL))
        self.sock.settimeout(0.05)

    def frames(self, seconds: float = 0.3):
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            parsed = parse_frame(data)
            if parsed:
                out.append(parsed[2])
        return out

    def close(self):
        self.sock.close()


class IdleFlow:
    """A real, established flow with nothing to send: the stage for forged packets."""

    def __init__(self, lab):
        self.lab = lab
        self.sink = SinkProcess(lab, PORT)
        with netns.enter(lab.ns_sender):
            path = resolve(lab.receiver_ip)
            self.reservation = reserve_port(path.src_ip, 0)
            self.local = (path.src_ip, self.reservation.getsockname()[1])
            self.remote = (lab.receiver_ip, PORT)
            self.dp = PacketDatapath(path.ifname, path.src_ip)
            self.other = PacketDatapath(path.ifname, path.src_ip)  # a second, unauthorised socket
            self.path = path
        self.maps = GateMaps.open(lab.ns_sender, lab.sender_if)
        iss = int.from_bytes(os.urandom(4), "big")
        self.conn = Connection(self.local, self.remote, NewReno(1448), BytesSource(b""), iss=iss,
                               close_at_end=False)
        self.maps.register(self.local, self.remote, self.dp.cookie, iss)
        self.builder = FrameBuilder(path.src_mac, path.dst_mac, self.local, self.remote)
        self.loop = EventLoop(self.dp)
        self.loop.add(self.conn, self.builder)
        self.conn.connect(time.monotonic())
        deadline = time.monotonic() + 5
        while self.conn.state is not State.ESTABLISHED and time.monotonic() < deadline:
            self.loop.step(0.01)
        assert self.conn.state is State.ESTABLISHED

    def gate_flow(self):
        return self.maps.flow(self.local, self.remote)

    def segment(self, *, seq=None, ack=None, flags=Flags.ACK, window=1000, payload=b"", gso=1448):
        g = self.gate_flow()
        return Transmission(
            seq=g["snd_max"] if seq is None else seq,
            ack=g["rcv_max"] if ack is None else ack,
            flags=flags, window=window, options=b"",
            source=BytesSource(payload) if payload else None, offset=0, length=len(payload), gso_size=gso,
        )

    def close(self):
        for tx in self.conn.abort(time.monotonic()):
            self.dp.send(self.builder, tx)
        self.maps.revoke(self.local, self.remote)
        self.maps.close()
        self.dp.close()
        self.other.close()
        self.reservation.close()
        self.sink.close()


@pytest.fixture
def flow(lab):
    f = IdleFlow(lab)
    yield f
    f.close()


def counters(lab):
    return gate.status(lab.ns_sender, lab.sender_if)["verdicts"]


def send_and_watch(lab, flow, sock, builder, tx):
    """Send one frame; return (counter deltas, frames with its marker window seen at the router)."""
    tap = Tap(lab)
    try:
        before = counters(lab)
        sock.send(builder, tx)
        seen = [s for s in tap.frames() if s.window == tx.window and s.sport == builder.sport]
        after = counters(lab)
    finally:
        tap.close()
    # Egress verdicts only: a packet that passes may well make the peer answer (in_* counters).
    return {k: after[k] - before[k] for k in after if after[k] != before[k] and not k.startswith("in_")}, seen


def test_owner_in_window_passes(lab, flow):
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder, flow.segment(window=4242))
    assert d == {"pass_flow": 1}
    assert len(seen) == 1


def test_other_socket_same_flow_is_dropped(lab, flow):
    d, seen = send_and_watch(lab, flow, flow.other, flow.builder, flow.segment(window=4243))
    assert d == {"drop_not_owner": 1}
    assert seen == []


def test_spoofed_four_tuple_is_dropped(lab, flow):
    spoof = FrameBuilder(flow.path.src_mac, flow.path.dst_mac, (flow.local[0], flow.local[1] ^ 1), flow.remote)
    d, seen = send_and_watch(lab, flow, flow.other, spoof, flow.segment(window=4244))
    assert d == {"drop_no_flow": 1}
    assert seen == []


def test_sequence_beyond_learned_window_is_dropped(lab, flow):
    g = flow.gate_flow()
    assert g["state"] == "synchronized" and g["snd_wnd"] > 0
    beyond = (g["snd_una"] + max(g["snd_wnd"], g["mss"]) + 1) & 0xFFFFFFFF
    tx = flow.segment(seq=beyond, window=4245, payload=b"z" * 100)
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder, tx)
    assert d == {"drop_window": 1}
    assert seen == []
    # A segment ending exactly at the right edge still passes.
    edge = (g["snd_una"] + max(g["snd_wnd"], g["mss"]) - 100) & 0xFFFFFFFF
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder, flow.segment(seq=edge, window=4246, payload=b"y" * 100))
    assert d == {"pass_flow": 1} and len(seen) == 1


def test_sequence_below_snd_una_is_dropped(lab, flow):
    g = flow.gate_flow()
    tx = flow.segment(seq=(g["snd_una"] - 2000) & 0xFFFFFFFF, window=4247, payload=b"o" * 100)
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder, tx)
    assert d == {"drop_window": 1} and seen == []


def test_ack_of_unseen_peer_data_is_dropped(lab, flow):
    g = flow.gate_flow()
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder,
                             flow.segment(ack=(g["rcv_max"] + 5000) & 0xFFFFFFFF, window=4248))
    assert d == {"drop_ack": 1} and seen == []


def test_syn_after_handshake_is_dropped(lab, flow):
    g = flow.gate_flow()
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder,
                             flow.segment(seq=g["isn"], flags=Flags.SYN, window=4249))
    assert d == {"drop_flags": 1} and seen == []


def test_gso_size_above_mss_is_dropped(lab, flow):
    tx = flow.segment(window=4250, payload=b"g" * 6000, gso=3000)
    d, seen = send_and_watch(lab, flow, flow.dp, flow.builder, tx)
    assert d == {"drop_malformed": 1} and seen == []


def test_unowned_raw_tcp_is_dropped_but_not_kernel_tcp(lab):
    """A packet socket may not send TCP for a tuple nobody registered; the kernel's TCP may."""
    with netns.enter(lab.ns_sender):
        path = resolve(lab.receiver_ip)
        dp = PacketDatapath(path.ifname, path.src_ip)
    try:
        b = FrameBuilder(path.src_mac, path.dst_mac, (path.src_ip, 33333), (lab.receiver_ip, 80))
        tx = Transmission(seq=1, ack=0, flags=Flags.SYN, window=4251, options=b"")
        d, seen = send_and_watch(lab, None, dp, b, tx)
        assert d == {"drop_no_flow": 1} and seen == []
    finally:
        dp.close()


def test_kernel_sends_no_rst_for_the_owned_flow(lab, flow):
    """The peer's packets for our flow never reach the sender's kernel stack (no socket there
    would match them), so it has nothing to answer with RST. Make the peer send several: data
    past its rcv_nxt draws duplicate ACKs."""
    rsts = tcp_out_rsts(lab.ns_sender)
    not_owner = counters(lab)["drop_not_owner"]
    g = flow.gate_flow()
    in_before = g["pkts_in"]
    for k in range(3):
        tx = flow.segment(seq=(g["snd_max"] + 1000 * (k + 1)) & 0xFFFFFFFF, window=4252 + k, payload=b"d" * 100)
        flow.dp.send(flow.builder, tx)
    assert wait_for(lambda: flow.gate_flow()["pkts_in"] >= in_before + 3)
    time.sleep(0.1)
    assert tcp_out_rsts(lab.ns_sender) == rsts
    assert counters(lab)["drop_not_owner"] == not_owner  # a kernel RST for the tuple would be counted here


def test_gate_down_removes_everything(lab):
    name = "tg2"
    import netns.lab

    lab2 = netns.lab.Lab(name).up()
    try:
        gate.up(lab2.ns_sender, lab2.sender_if)
        assert gate.attached(lab2.ns_sender, lab2.sender_if)
        gate.down(lab2.ns_sender, lab2.sender_if)
        assert not gate.attached(lab2.ns_sender, lab2.sender_if)
        assert not gate.pin_dir(lab2.ns_sender, lab2.sender_if).exists()
        with pytest.raises(gate.GateError, match="gate up"):
            GateMaps.open(lab2.ns_sender, lab2.sender_if)
        from pyroute2 import IPRoute

        with IPRoute(netns=lab2.ns_sender) as ipr:
            link = ipr.link("get", index=ipr.link_lookup(ifname=lab2.sender_if)[0])[0]
            assert link.get_attr("IFLA_XDP").get_attr("IFLA_XDP_ATTACHED") in (None, 0, "none")
    finally:
        gate.down(lab2.ns_sender, lab2.sender_if)
        lab2.down()
