"""The gate against forged and misbehaving packets, checked on both sides of the wire.

Each forged packet is sent for real from the sender namespace; the gate's counter for the reason
must move, and a packet tap on the router's side of the link must not see it (a dropped packet
that the counter claims but the wire shows would be a lie). A well-formed packet of the same
flow from the owner's socket must get through, so the tap is known to work.
"""

from __future__ import annotations

import errno
import os
import select
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
    # Egress verdicts of non-kernel senders only: a packet that passes may well make the peer
    # answer (in_* counters), and the kernel's own TCP in this namespace may send meanwhile (a
    # RST for a stray segment of an earlier test: pass_kernel), which is none of this frame's doing.
    return {k: after[k] - before[k] for k in after
            if after[k] != before[k] and not k.startswith("in_") and k != "pass_kernel"}, seen


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


# --- passive open: a usertcp server behind a listener -----------------------------------------
#
# The server side is what `usertcp serve` does with the gate: a reserved (bound, never listening)
# kernel port, a packet socket whose cookie owns the connections, one listener. Clients are the
# kernel's TCP in the receiver namespace, or forged packets put on the wire by the router right
# in front of the sender's interface (a peer whose every field the test chooses).

LPORT = 8080
SPOOF = "198.19.0.77"  # a client that does not exist: nobody answers our SYN-ACKs for it


class Server:
    """The gate side of a usertcp server on `port` (`addr` "0.0.0.0": the wildcard listener)."""

    def __init__(self, lab, port=LPORT, addr=None):
        self.lab = lab
        with netns.enter(lab.ns_sender):
            self.path = resolve(lab.receiver_ip)
            self.reservation = reserve_port(addr or self.path.src_ip, port)
            self.dp = PacketDatapath(self.path.ifname, self.path.src_ip)
            self.other = PacketDatapath(self.path.ifname, self.path.src_ip)  # not the owner
        self.local = (self.path.src_ip, port)
        self.listen_on = (addr or self.path.src_ip, port)
        self.maps = GateMaps.open(lab.ns_sender, lab.sender_if)
        self.maps.add_listener(self.listen_on, self.dp.cookie)
        self.dp.set_ports([port])

    def builder(self, remote):
        return FrameBuilder(self.path.src_mac, self.path.dst_mac, self.local, remote)

    def flow(self, remote):
        return self.maps.flow(self.local, remote)

    def wait_syn(self, timeout=5.0):
        """The next SYN our packet socket sees (it taps before the gate keeps it from the
        kernel): ((client ip, port), Segment)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for saddr, _daddr, seg in self.dp.receive():
                if seg.flags & Flags.SYN and not seg.flags & Flags.ACK:
                    return (socket.inet_ntoa(saddr), seg.sport), seg
            time.sleep(0.005)
        raise AssertionError("the server saw no SYN")

    def close(self):
        self.maps.remove_listener(self.listen_on)
        self.maps.revoke_all(self.dp.cookie)
        self.maps.close()
        self.dp.close()
        self.other.close()
        self.reservation.close()


@pytest.fixture
def server(lab):
    s = Server(lab)
    yield s
    s.close()


class RawPeer:
    """Forged client packets (built with scapy), sent from the router onto the sender's link."""

    def __init__(self, lab, server):
        with netns.enter(lab.ns_router):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((lab.router_sender_if, 0))
        self.server_mac, self.router_mac = server.path.src_mac, server.path.dst_mac

    def send(self, src, dst, *, flags, seq, ack=0, window=29200, options=(), payload=b""):
        from scapy.layers.inet import IP, TCP
        from scapy.layers.l2 import Ether

        frame = (Ether(dst=self.server_mac, src=self.router_mac) / IP(src=src[0], dst=dst[0])
                 / TCP(sport=src[1], dport=dst[1], flags=flags, seq=seq, ack=ack, window=window,
                       options=list(options)) / payload)
        self.sock.send(bytes(frame))

    def close(self):
        self.sock.close()


@pytest.fixture
def peer(lab, server):
    p = RawPeer(lab, server)
    yield p
    p.close()


def in_delta(lab, before, reason, n=1):
    """Wait until ingress counter `reason` moved by `n` (XDP runs on receive, asynchronously)."""
    return wait_for(lambda: counters(lab)[reason] - before[reason] >= n, timeout=2.0)


def syn_ack(flow_entry, isn, *, window, ack=None, wscale=7, flags=Flags.SYN | Flags.ACK, payload=b""):
    from usertcp.segment import Options

    return Transmission(
        seq=isn, ack=flow_entry["rcv_max"] if ack is None else ack, flags=flags, window=window,
        options=Options(mss=1460, wscale=wscale).encode(),
        source=BytesSource(payload) if payload else None, offset=0, length=len(payload),
    )


def kernel_client(lab, addr):
    """A non-blocking kernel TCP socket in the receiver namespace, connecting to `addr`."""
    with netns.enter(lab.ns_receiver):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.setblocking(False)
    assert c.connect_ex(addr) in (0, errno.EINPROGRESS)
    return c


def connect_result(c, timeout=3.0):
    """errno of a non-blocking connect once it finished (0: established), None if still pending."""
    _, w, _ = select.select([], [c], [], timeout)
    return c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if w else None


def test_listener_shows_in_status(lab, server):
    st = gate.status(lab.ns_sender, lab.sender_if)
    mine = [x for x in st["listeners"] if x["local"] == f"{server.local[0]}:{LPORT}"]
    assert mine == [{"local": f"{server.local[0]}:{LPORT}", "owner": server.dp.cookie, "syns": 0, "table_full": 0}]
    assert (server.listen_on, {"owner": server.dp.cookie, "syns": 0, "table_full": 0}) in server.maps.listeners()


def test_kernel_client_connects_and_talks_to_a_gated_server(lab, server):
    """SYN -> flow in syn-rcvd (no RST from the server's kernel); our SYN-ACK -> the client's
    connect() completes and its ACK synchronizes the flow; its request is learned; our ACK and
    response pass and reach the client."""
    rsts = tcp_out_rsts(lab.ns_sender)
    before = counters(lab)
    client = kernel_client(lab, server.local)
    try:
        remote, syn = server.wait_syn()
        assert remote == client.getsockname()
        assert in_delta(lab, before, "in_syn_new_flow")
        f = server.flow(remote)
        assert f["state"] == "syn-rcvd" and f["passive"] and not f["isn_known"]
        assert f["owner"] == server.dp.cookie
        assert f["rcv_max"] == (syn.seq + 1) & 0xFFFFFFFF
        assert f["mss"] == syn.options.mss and f["snd_wscale"] == syn.options.wscale
        assert f["snd_wnd"] == syn.window
        time.sleep(0.05)
        assert tcp_out_rsts(lab.ns_sender) == rsts  # the server's kernel never saw the SYN
        assert connect_result(client, 0) is None  # no RST reached the client either

        isn = int.from_bytes(os.urandom(4), "big")
        b = server.builder(remote)
        d, seen = send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5301))
        assert d == {"pass_flow": 1} and len(seen) == 1
        assert connect_result(client) == 0  # ESTABLISHED at the client
        assert wait_for(lambda: server.flow(remote)["state"] == "synchronized")
        f = server.flow(remote)
        assert (f["isn"], f["snd_una"], f["snd_max"]) == (isn, (isn + 1) & 0xFFFFFFFF, (isn + 1) & 0xFFFFFFFF)
        assert f["snd_wnd"] > 0

        request = b"GET / HTTP/1.0\r\n\r\n"
        client.send(request)
        assert wait_for(lambda: server.flow(remote)["rcv_max"] == (syn.seq + 1 + len(request)) & 0xFFFFFFFF)
        f = server.flow(remote)
        ack = Transmission(seq=(isn + 1) & 0xFFFFFFFF, ack=f["rcv_max"], flags=Flags.ACK, window=5302, options=b"")
        d, seen = send_and_watch(lab, None, server.dp, b, ack)
        assert d == {"pass_flow": 1} and len(seen) == 1
        beyond = Transmission(seq=(isn + 1) & 0xFFFFFFFF, ack=(f["rcv_max"] + 1) & 0xFFFFFFFF, flags=Flags.ACK,
                              window=5303, options=b"")
        d, seen = send_and_watch(lab, None, server.dp, b, beyond)
        assert d == {"drop_ack": 1} and seen == []
        response = b"HTTP/1.0 200 OK\r\n\r\nhello"
        data = Transmission(seq=(isn + 1) & 0xFFFFFFFF, ack=f["rcv_max"], flags=Flags.ACK | Flags.PSH, window=5304,
                            options=b"", source=BytesSource(response), offset=0, length=len(response))
        d, seen = send_and_watch(lab, None, server.dp, b, data)
        assert d == {"pass_flow": 1} and len(seen) == 1
        client.setblocking(True)
        client.settimeout(3)
        assert client.recv(100) == response
        assert wait_for(lambda: server.flow(remote)["snd_una"] == (isn + 1 + len(response)) & 0xFFFFFFFF)
        assert tcp_out_rsts(lab.ns_sender) == rsts
        assert counters(lab)["drop_not_owner"] == before["drop_not_owner"]  # no kernel RST tried either
    finally:
        client.close()


def test_syn_rcvd_admits_only_the_owners_exact_syn_ack(lab, server, peer):
    remote = (SPOOF, 40001)
    irs = 1_000_000
    before = counters(lab)
    peer.send(remote, server.local, flags="S", seq=irs, window=29200,
              options=[("MSS", 1300), ("NOP", None), ("WScale", 5)])
    assert in_delta(lab, before, "in_syn_new_flow")
    f = server.flow(remote)
    assert (f["state"], f["rcv_max"], f["mss"], f["snd_wscale"], f["snd_wnd"]) == ("syn-rcvd", irs + 1, 1300, 5, 29200)
    b = server.builder(remote)

    # Nothing but a SYN-ACK before the handshake: no data, no bare ACK.
    data = Transmission(seq=0, ack=irs + 1, flags=Flags.ACK, window=5311, options=b"",
                        source=BytesSource(b"early"), offset=0, length=5)
    assert send_and_watch(lab, None, server.dp, b, data) == ({"drop_flags": 1}, [])
    bare = Transmission(seq=0, ack=irs + 1, flags=Flags.ACK, window=5312, options=b"")
    assert send_and_watch(lab, None, server.dp, b, bare) == ({"drop_flags": 1}, [])
    # A SYN-ACK that acknowledges anything but the peer's SYN, from another socket, with data.
    isn = 7_000_000
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5313, ack=irs + 2)) == ({"drop_ack": 1}, [])
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5314, ack=irs)) == ({"drop_ack": 1}, [])
    assert send_and_watch(lab, None, server.other, b, syn_ack(f, isn, window=5315)) == ({"drop_not_owner": 1}, [])
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5316, payload=b"x")) == ({"drop_flags": 1}, [])
    assert not server.flow(remote)["isn_known"]
    # A forged ACK cannot complete a handshake whose ISN is not even chosen.
    b4 = counters(lab)
    peer.send(remote, server.local, flags="A", seq=irs + 1, ack=1)
    assert in_delta(lab, b4, "in_ignored")
    assert server.flow(remote)["state"] == "syn-rcvd"

    # The right SYN-ACK fixes the ISN; its retransmission passes, one with another ISN does not.
    d, seen = send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5317))
    assert d == {"pass_flow": 1} and len(seen) == 1
    f = server.flow(remote)
    assert (f["isn"], f["snd_una"], f["snd_max"], f["isn_known"]) == (isn, isn, isn + 1, True)
    assert f["snd_wscale"] == 5  # both SYNs carried the option
    d, seen = send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5318))
    assert d == {"pass_flow": 1} and len(seen) == 1
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn + 99, window=5319)) == ({"drop_flags": 1}, [])
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5320, flags=Flags.SYN)) == ({"drop_flags": 1}, [])
    # A RST only at ISN + 1 (acknowledging, if at all, exactly the peer's SYN).
    bad_rst = Transmission(seq=isn + 5, ack=irs + 1, flags=Flags.RST | Flags.ACK, window=5321, options=b"")
    assert send_and_watch(lab, None, server.dp, b, bad_rst) == ({"drop_flags": 1}, [])

    # Retransmitted SYN (same sequence) and a SYN with another sequence: both teach nothing.
    for seq in (irs, irs + 12345):
        b4 = counters(lab)
        peer.send(remote, server.local, flags="S", seq=seq, window=1000, options=[("MSS", 536)])
        assert in_delta(lab, b4, "in_ignored")
        g = server.flow(remote)
        assert (g["state"], g["rcv_max"], g["mss"], g["snd_wnd"], g["isn"]) == ("syn-rcvd", irs + 1, 1300, 29200, isn)
    # An ACK of anything but ISN + 1, or off the peer's next sequence, does not synchronize.
    for seq, ack in ((irs + 1, isn + 2), (irs + 1, isn), (irs + 2, isn + 1)):
        b4 = counters(lab)
        peer.send(remote, server.local, flags="A", seq=seq, ack=ack, window=100)
        assert in_delta(lab, b4, "in_ignored")
        assert server.flow(remote)["state"] == "syn-rcvd"
    # The peer's ACK of our SYN-ACK, carrying its first bytes: synchronized, window scaled.
    b4 = counters(lab)
    peer.send(remote, server.local, flags="PA", seq=irs + 1, ack=isn + 1, window=100, payload=b"hello")
    assert in_delta(lab, b4, "in_owned")
    f = server.flow(remote)
    assert (f["state"], f["snd_una"], f["snd_wnd"], f["rcv_max"]) == ("synchronized", isn + 1, 100 << 5, irs + 6)
    # From now on the rules of any synchronized flow: ACK up to rcv_max, data within the window.
    ok = Transmission(seq=isn + 1, ack=irs + 6, flags=Flags.ACK, window=5322, options=b"",
                      source=BytesSource(b"r" * 1300), offset=0, length=1300)
    d, seen = send_and_watch(lab, None, server.dp, b, ok)
    assert d == {"pass_flow": 1} and len(seen) == 1
    over = Transmission(seq=isn + 1, ack=irs + 7, flags=Flags.ACK, window=5323, options=b"")
    assert send_and_watch(lab, None, server.dp, b, over) == ({"drop_ack": 1}, [])
    assert send_and_watch(lab, None, server.dp, b, syn_ack(f, isn, window=5324, ack=irs + 1)) == ({"drop_flags": 1}, [])
    assert server.maps.revoke(server.local, remote)


def test_refusing_a_syn_with_rst(lab, server, peer):
    """Before our ISN exists, the only RST that answers a SYN is seq 0, ack = its sequence + 1."""
    remote, irs = (SPOOF, 40002), 5_000
    before = counters(lab)
    peer.send(remote, server.local, flags="S", seq=irs)
    assert in_delta(lab, before, "in_syn_new_flow")
    f = server.flow(remote)
    assert f["mss"] == 536 and f["snd_wscale"] == 0  # no options: RFC 9293 default MSS, no scaling
    b = server.builder(remote)
    wrong = Transmission(seq=1, ack=irs + 1, flags=Flags.RST | Flags.ACK, window=5331, options=b"")
    assert send_and_watch(lab, None, server.dp, b, wrong) == ({"drop_flags": 1}, [])
    wrong_ack = Transmission(seq=0, ack=irs + 2, flags=Flags.RST | Flags.ACK, window=5332, options=b"")
    assert send_and_watch(lab, None, server.dp, b, wrong_ack) == ({"drop_ack": 1}, [])
    rst = Transmission(seq=0, ack=irs + 1, flags=Flags.RST | Flags.ACK, window=5333, options=b"")
    d, seen = send_and_watch(lab, None, server.dp, b, rst)
    assert d == {"pass_flow": 1} and len(seen) == 1


def test_syn_ack_without_window_scale_turns_scaling_off(lab, server, peer):
    """RFC 7323 §2.2: the client offered a shift, our SYN-ACK did not: its windows are unscaled."""
    remote, irs, isn = (SPOOF, 40003), 77, 1 << 31
    before = counters(lab)
    peer.send(remote, server.local, flags="S", seq=irs, options=[("MSS", 1460), ("NOP", None), ("WScale", 9)])
    assert in_delta(lab, before, "in_syn_new_flow")
    assert server.flow(remote)["snd_wscale"] == 9
    b = server.builder(remote)
    d, _ = send_and_watch(lab, None, server.dp, b, syn_ack(server.flow(remote), isn, window=5341, wscale=None))
    assert d == {"pass_flow": 1}
    assert server.flow(remote)["snd_wscale"] == 0
    b4 = counters(lab)
    peer.send(remote, server.local, flags="A", seq=irs + 1, ack=isn + 1, window=1000)
    assert in_delta(lab, b4, "in_owned")
    f = server.flow(remote)
    assert f["state"] == "synchronized" and f["snd_wnd"] == 1000


def test_peer_rst_in_syn_rcvd_needs_the_exact_sequence(lab, server, peer):
    remote, irs = (SPOOF, 40004), 900
    before = counters(lab)
    peer.send(remote, server.local, flags="S", seq=irs)
    assert in_delta(lab, before, "in_syn_new_flow")
    b4 = counters(lab)
    peer.send(remote, server.local, flags="R", seq=irs + 2)
    assert in_delta(lab, b4, "in_ignored")
    assert server.flow(remote)["state"] == "syn-rcvd"
    peer.send(remote, server.local, flags="R", seq=irs + 1)
    assert wait_for(lambda: server.flow(remote)["state"] == "reset")
    b = server.builder(remote)
    assert send_and_watch(lab, None, server.dp, b, syn_ack(server.flow(remote), 1, window=5351)) == ({"drop_flags": 1}, [])


def test_syn_to_a_port_without_listener_is_refused_by_the_kernel(lab, server):
    """The gate leaves other ports alone: the kernel refuses the connection (RST), and a kernel
    server in the same namespace keeps working."""
    rsts = tcp_out_rsts(lab.ns_sender)
    before = counters(lab)
    client = kernel_client(lab, (server.local[0], LPORT + 1))
    try:
        assert connect_result(client) == errno.ECONNREFUSED
    finally:
        client.close()
    assert tcp_out_rsts(lab.ns_sender) == rsts + 1
    assert counters(lab)["in_syn_new_flow"] == before["in_syn_new_flow"]
    assert [r for _l, r, _v in server.maps.flows() if _l == (server.local[0], LPORT + 1)] == []

    with netns.enter(lab.ns_sender):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        ls.bind((server.local[0], LPORT + 2))
        ls.listen(4)
        client = kernel_client(lab, (server.local[0], LPORT + 2))
        try:
            assert connect_result(client) == 0
        finally:
            client.close()
    finally:
        ls.close()


def test_removed_listener_port_is_refused_again(lab):
    s = Server(lab, LPORT + 3)
    try:
        s.maps.remove_listener(s.listen_on)
        client = kernel_client(lab, s.local)
        try:
            assert connect_result(client) == errno.ECONNREFUSED
        finally:
            client.close()
    finally:
        s.close()


def test_stray_segment_to_a_listener_port_draws_the_kernels_rst(lab, server, peer):
    """No flow, not a SYN (say, a late segment of a connection the server revoked): the kernel
    answers it with RST, as RFC 9293 asks for a segment of an unknown connection."""
    rsts = tcp_out_rsts(lab.ns_sender)
    before = counters(lab)
    peer.send((SPOOF, 40005), server.local, flags="A", seq=10, ack=20)
    assert in_delta(lab, before, "in_listen_stray")
    assert wait_for(lambda: tcp_out_rsts(lab.ns_sender) == rsts + 1)
    assert server.flow((SPOOF, 40005)) is None


def test_wildcard_listener(lab):
    s = Server(lab, LPORT + 4, addr="0.0.0.0")
    p = RawPeer(lab, s)
    try:
        before = counters(lab)
        p.send((SPOOF, 40006), s.local, flags="S", seq=1)
        assert in_delta(lab, before, "in_syn_new_flow")
        f = s.flow((SPOOF, 40006))
        assert f["state"] == "syn-rcvd" and f["owner"] == s.dp.cookie
        assert (("0.0.0.0", LPORT + 4), {"owner": s.dp.cookie, "syns": 1, "table_full": 0}) in s.maps.listeners()
    finally:
        p.close()
        s.close()
    with GateMaps.open(lab.ns_sender, lab.sender_if) as maps:
        assert maps.flow(s.local, (SPOOF, 40006)) is None  # revoke_all took it


def test_reap_embryonic_and_revoke_all(lab, server, peer):
    before = counters(lab)
    for port in (40010, 40011):
        peer.send((SPOOF, port), server.local, flags="S", seq=port)
    assert in_delta(lab, before, "in_syn_new_flow", 2)
    # An active flow of the same owner, synchronized or not, is never embryonic.
    server.maps.register(server.local, (SPOOF, 40012), server.dp.cookie, 5)
    assert server.maps.reap_embryonic(60) == 0  # too young
    assert server.maps.reap_embryonic(0, owner_cookie=server.dp.cookie + 1) == 0
    assert server.maps.reap_embryonic(0, owner_cookie=server.dp.cookie) == 2
    assert server.flow((SPOOF, 40010)) is None and server.flow((SPOOF, 40012))["state"] == "syn-sent"
    assert server.maps.revoke_all(server.dp.cookie) == 1
    assert [x for x in server.maps.flows() if x[2]["owner"] == server.dp.cookie] == []


def test_syn_flood_with_a_full_table_creates_nothing_and_keeps_the_kernel_quiet(lab, server, peer):
    """Fill the flow table; a SYN to the listener then creates nothing, is counted, and the
    kernel (which would RST it) never sees it."""
    maps = server.maps
    dummy = server.dp.cookie ^ 0x5A5A  # nobody's socket
    filled = 0
    try:
        with pytest.raises(gate.GateError, match="flow table is full"):
            for i in range(maps.capacity() + 1):
                maps.register(("198.18.9.9", 1 + i % 60000), ("198.18.9.10", 1 + i // 60000), dummy, 0)
                filled += 1
        assert filled + len([x for x in maps.flows() if x[2]["owner"] != dummy]) == maps.capacity()
        rsts = tcp_out_rsts(lab.ns_sender)
        before = counters(lab)
        peer.send((SPOOF, 40020), server.local, flags="S", seq=1)
        assert in_delta(lab, before, "in_syn_table_full")
        time.sleep(0.05)
        assert server.flow((SPOOF, 40020)) is None
        assert tcp_out_rsts(lab.ns_sender) == rsts
        assert [v["table_full"] for a, v in maps.listeners() if a == server.listen_on] == [1]
    finally:
        assert maps.revoke_all(dummy) == filled
    before = counters(lab)
    peer.send((SPOOF, 40020), server.local, flags="S", seq=1)  # room again: the retry gets in
    assert in_delta(lab, before, "in_syn_new_flow")
