"""`usertcp serve` in virtual time: passive open, the HTTP application over our own engine, and a
client engine downloading from it across simulated links (lossy ones included)."""

from __future__ import annotations

import hashlib

import h11
import pytest

from usertcp.app import HttpConnection
from usertcp.cc import load
from usertcp.engine.connection import Connection, State
from usertcp.segment import Flags, Options, Segment, parse_options
from usertcp.sim.link import Link
from usertcp.sim.peer import AcceptingPeer
from usertcp.sim.run import simulate
from usertcp.sources import BytesSource
from usertcp.stream import SendStream

CLIENT, SERVER = ("198.18.2.1", 41000), ("198.18.1.1", 8080)


@pytest.fixture
def root(tmp_path):
    (tmp_path / "big.bin").write_bytes(bytes(range(256)) * 4000 + b"tail")  # 1,024,004 bytes
    (tmp_path / "index.html").write_bytes(b"<h1>usertcp</h1>\n")
    return tmp_path


def server_factory(root, **kw):
    def factory(syn, now):
        return HttpConnection.accept(syn, now, SERVER, CLIENT, load("cubic", mss=1448, now=now), root,
                                     iss=0xFFFF0000, **kw)
    return factory


def reading_client(request: bytes, **client_kw):
    """A client engine that sends `request` (then FIN) and reads everything as it arrives into
    the returned bytearray."""
    client = Connection(CLIENT, SERVER, load("newreno", mss=1448, now=0.0), BytesSource(request),
                        iss=1000, time_wait=0.5, **client_kw)
    got = bytearray()
    receive = client.receive

    def receive_and_read(seg, now):
        receive(seg, now)
        got.extend(client.read())

    client.receive = receive_and_read
    return client, got


def fetch(root, request: bytes, *, fwd=None, rev=None, until=60.0, **client_kw):
    """A client engine sends `request` (then FIN) to an accepting server engine; returns the
    bytes the client received in order, the client, the server app and the run."""
    client, got = reading_client(request, **client_kw)
    peer = AcceptingPeer(server_factory(root))
    fwd = fwd or Link(delay=0.005, rate=100e6, name="fwd")
    rev = rev or Link(delay=0.005, rate=100e6, name="rev")
    res = simulate(client, peer, fwd, rev, until=until)
    return bytes(got), client, peer.app, res


def responses(data: bytes) -> list[tuple[int, dict, bytes]]:
    """Parse a byte stream of HTTP/1.1 responses with h11 (as a client would)."""
    c = h11.Connection(h11.CLIENT)
    out = []
    c.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    c.send(h11.EndOfMessage())
    c.receive_data(data)
    c.receive_data(b"")
    status, headers, body = None, None, bytearray()
    while True:
        try:
            ev = c.next_event()
        except h11.RemoteProtocolError:
            break  # EOF after a complete keep-alive response: what would be the next one never came
        if ev is h11.NEED_DATA or type(ev) is h11.ConnectionClosed:
            break
        if type(ev) is h11.Response:
            status, headers, body = ev.status_code, {k.decode(): v.decode() for k, v in ev.headers}, bytearray()
        elif type(ev) is h11.Data:
            body += ev.data
        elif type(ev) is h11.EndOfMessage:
            out.append((status, headers, bytes(body)))
            if c.our_state is h11.MUST_CLOSE or c.their_state is h11.MUST_CLOSE:
                break
            c.start_next_cycle()
            c.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
            c.send(h11.EndOfMessage())
    return out


def test_passive_open_answers_only_with_the_options_offered():
    stream = SendStream()
    conn = Connection(SERVER, CLIENT, load("cubic", mss=1448, now=0.0), stream, iss=77, close_at_end=False)
    syn = Segment(CLIENT[1], SERVER[1], 5000, 0, Flags.SYN, 29200, Options(mss=1400, sack_permitted=True), b"")
    conn.accept(syn, 0.0)
    (synack,) = conn.transmit(0.0)
    opts = parse_options(synack.options)
    assert synack.flags == Flags.SYN | Flags.ACK and synack.seq == 77 and synack.ack == 5001
    assert opts.mss == 1460 and opts.sack_permitted and opts.wscale is None and opts.ts is None
    assert conn.state is State.SYN_RECEIVED and conn.send_mss == 1400
    # A retransmitted SYN draws the SYN-ACK again; the ACK of it establishes the connection.
    conn.receive(syn, 0.1)
    assert [t.flags for t in conn.transmit(0.1)] == [Flags.SYN | Flags.ACK]
    conn.receive(Segment(CLIENT[1], SERVER[1], 5001, 78, Flags.ACK, 29200, Options(), b""), 0.2)
    assert conn.state is State.ESTABLISHED and conn.snd_wnd == 29200 and conn.rtt.srtt is not None
    # Data from the peer is handed to the application in order.
    conn.receive(Segment(CLIENT[1], SERVER[1], 5001, 78, Flags.ACK | Flags.PSH, 29200, Options(), b"GET"), 0.3)
    assert conn.read() == b"GET" and conn.read() == b""


def test_passive_open_gives_up_after_syn_ack_retries():
    conn = Connection(SERVER, CLIENT, load("cubic", mss=1448, now=0.0), SendStream(), iss=1,
                      close_at_end=False, syn_retries=2)
    conn.accept(Segment(CLIENT[1], SERVER[1], 9, 0, Flags.SYN, 1000, Options(mss=1460), b""), 0.0)
    now, sent = 0.0, 0
    while not conn.closed and now < 100:
        sent += len(conn.transmit(now))
        now = conn.deadline()
        conn.on_timer(now)
    assert conn.error == "handshake timeout" and sent == 3


@pytest.mark.parametrize("loss", [0.0, 0.02])
def test_get_over_our_engine_both_ends(root, loss):
    """A 1 MB file over the simulated path, with and without 2% loss each way: the client gets
    exactly the file, then the server's FIN (Connection: close), and both ends close."""
    req = b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    fwd = Link(delay=0.005, rate=100e6, loss=loss, seed=3, name="fwd")
    rev = Link(delay=0.005, rate=100e6, loss=loss, seed=4, name="rev")
    data, client, app, res = fetch(root, req, fwd=fwd, rev=rev)
    assert res.completed, res.reason
    ((status, headers, body),) = responses(data)
    want = (root / "big.bin").read_bytes()
    assert status == 200 and int(headers["content-length"]) == len(want)
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(want).hexdigest()
    assert client.fin_received and app.conn.closed and app.conn.error is None
    assert app.stream.piece_count == 0  # everything released: the server holds no response


def test_keep_alive_and_range_over_our_engine(root):
    """Three pipelined requests on one connection: a Range, a full file, a 404; then close."""
    req = (b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nRange: bytes=1000-1999\r\n\r\n"
           b"GET /index.html HTTP/1.1\r\nHost: lab\r\n\r\n"
           b"GET /missing HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n")
    data, client, app, res = fetch(root, req)
    assert res.completed, res.reason
    got = responses(data)
    assert [s for s, _, _ in got] == [206, 200, 404]
    assert got[0][2] == (root / "big.bin").read_bytes()[1000:2000]
    assert got[0][1]["content-range"] == "bytes 1000-1999/1024004"
    assert got[1][2] == b"<h1>usertcp</h1>\n"


class _Watched(Link):
    """A link that records (ECN field as it leaves the queue, flags, payload length) per packet."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.wire = []

    def send(self, seg, now, size=None):
        ok = super().send(seg, now, size)
        self.wire.append((seg.ecn, int(seg.flags), len(seg.payload)))
        return ok


def _ecn_fetch(root, client_ecn, server_ecn, ce_threshold):
    """A 1 MB download from a server engine to a client engine over a 20 Mbit/s bottleneck that
    marks CE above `ce_threshold` bytes of queue (DCTCP-style step marking)."""
    req = b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    client, got = reading_client(req, ecn=client_ecn)

    def factory(syn, now):
        return HttpConnection.accept(syn, now, SERVER, CLIENT, load("newreno", mss=1448, now=now), root,
                                     iss=7, ecn=server_ecn)

    peer = AcceptingPeer(factory)
    rev = _Watched(delay=0.005, rate=20e6, queue_bytes=1 << 20, ce_threshold=ce_threshold, name="rev")
    wire = rev.wire
    res = simulate(client, peer, Link(delay=0.005, name="fwd"), rev, until=60.0)
    assert res.completed, res.reason
    ((status, _, body),) = responses(bytes(got))
    assert status == 200 and body == (root / "big.bin").read_bytes()
    return client, peer.app.conn, rev, wire


def test_ecn_marks_reduce_the_window_without_loss(root):
    """RFC 3168 end to end between two engines: the handshake negotiates ECN, the server's new
    data leaves ECT(0), the bottleneck marks CE instead of dropping, the client echoes ECE until
    the server's CWR, and the server reduces its window once per window of marks, with no loss
    and no retransmission."""
    client, server, rev, wire = _ecn_fetch(root, True, True, ce_threshold=30_000)
    assert client.ecn_ok and server.ecn_ok
    data = [w for w in wire if w[2] > 0]
    assert data and all(ecn in (2, 3) for ecn, _, _ in data)  # ECT(0), or CE once marked
    assert rev.marked_ce > 0 and rev.dropped == 0
    assert client.ce_received > 0
    assert server.ecn_reductions >= 1 and server.bytes_retrans == 0
    assert any(flags & int(Flags.CWR) for _, flags, n in wire if n > 0)
    # At most one reduction per window: far fewer reductions than marked packets.
    assert server.ecn_reductions < rev.marked_ce


@pytest.mark.parametrize("client_ecn, server_ecn", [(False, True), (True, False)])
def test_ecn_is_used_only_when_both_ends_agree(root, client_ecn, server_ecn):
    client, server, rev, wire = _ecn_fetch(root, client_ecn, server_ecn, ce_threshold=30_000)
    assert not client.ecn_ok and not server.ecn_ok
    assert all(ecn == 0 for ecn, _, _ in wire) and rev.marked_ce == 0


class _Reorder(Link):
    """Every 7th packet arrives 3 ms late: the ones behind it overtake it."""

    def __init__(self, **kw):
        super().__init__(extra_delay=lambda i, seg: 0.003 if i % 7 == 3 else 0.0, **kw)


def test_our_receiving_side_sacks_delays_acks_and_reassembles(root):
    """The client engine as a receiver: out-of-order data is held and SACKed (RFC 2018), so the
    server repairs losses by SACK recovery without a timeout; in-order data is ACKed about every
    second segment once the quick-ACK phase is over (RFC 5681 §4.2); the file arrives intact."""
    req = b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    rev = _Reorder(delay=0.005, rate=100e6, loss=0.01, seed=11, name="rev")
    fwd = Link(delay=0.005, name="fwd")
    data, client, app, res = fetch(root, req, fwd=fwd, rev=rev)
    assert res.completed, res.reason
    ((status, _, body),) = responses(data)
    assert status == 200 and body == (root / "big.bin").read_bytes()
    server = app.conn
    assert server.sack_ok and client.rcvq.ooo_segments > 0
    assert server.fast_retransmits > 0 and server.timeouts == 0


def test_in_order_data_is_acked_every_second_segment(root):
    """Without loss or reordering, after 16 quick ACKs the client engine acknowledges every
    second full-sized segment (RFC 5681 §4.2, Linux's __tcp_ack_snd_check)."""
    req = b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    data, client, app, res = fetch(root, req)
    assert res.completed, res.reason
    data_segments, acks = res.rev.packets_in, res.fwd.packets_in
    assert 0.45 * data_segments < acks < 0.6 * data_segments


def test_a_reader_that_stops_closes_the_window_and_reopens_it(root):
    """The client's application does not read for 2 s: its receive buffer (64 KB) fills, the
    window closes, the server holds (persist probes, no data lost); reading reopens it."""
    req = b"GET /big.bin HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n"
    client = Connection(CLIENT, SERVER, load("newreno", mss=1448, now=0.0), BytesSource(req),
                        iss=1000, time_wait=0.5, rcv_wnd=65536)
    got = bytearray()
    receive, windows = client.receive, []

    def receive_and_maybe_read(seg, now):
        receive(seg, now)
        if now > 2.0:
            got.extend(client.read())

    client.receive = receive_and_maybe_read
    transmit = client.transmit

    def watch(now):
        out = transmit(now)
        windows.extend((now, tx.window) for tx in out)
        if now > 2.0:
            got.extend(client.read())
        return out

    client.transmit = watch
    peer = AcceptingPeer(server_factory(root))
    res = simulate(client, peer, Link(delay=0.005, name="fwd"), Link(delay=0.005, rate=100e6, name="rev"), until=60)
    assert res.completed, res.reason
    ((status, _, body),) = responses(bytes(got))
    assert status == 200 and body == (root / "big.bin").read_bytes()
    assert any(w == 0 for t, w in windows if 0.1 < t < 2.0)  # closed while nobody read
    server = peer.app.conn
    # Held, not lost: no timeout counted, only window probes resent (a byte or two each).
    assert server.timeouts == 0 and server.bytes_retrans <= 16


def test_close_when_idle_ends_an_idle_keep_alive_connection(root):
    """A server shutting down (`Server.stop`) closes idle keep-alive connections at once: the
    client's request is answered, then the server sends its FIN without waiting for the idle
    timeout. This client never closes its half, so the server waits in FIN-WAIT-2 until
    fin_timeout (Linux's tcp_fin_timeout) and then closes without an error."""
    req = b"GET /index.html HTTP/1.1\r\nHost: lab\r\n\r\n"  # keep-alive: the client does not close
    client, got = reading_client(req, close_at_end=False)
    apps = []

    def factory(syn, now):
        app = HttpConnection.accept(syn, now, SERVER, CLIENT, load("cubic", mss=1448, now=now), root,
                                    iss=3, idle_timeout=3600.0, fin_timeout=2.0)
        apps.append(app)
        return app

    peer = AcceptingPeer(factory)
    res = simulate(client, peer, Link(delay=0.005, name="fwd"), Link(delay=0.005, name="rev"), until=0.5)
    assert res.reason == "until" and not client.fin_received  # idle keep-alive, nobody closes
    apps[0].close_when_idle()
    res = simulate(client, peer, Link(delay=0.005, name="fwd"), Link(delay=0.005, name="rev"),
                   until=1.0, connect=False, start=0.5)
    server = apps[0].conn
    assert client.fin_received and server.state is State.FIN_WAIT_2
    ((status, _, body),) = responses(bytes(got))
    assert status == 200 and body == (root / "index.html").read_bytes()
    simulate(client, peer, Link(delay=0.005, name="fwd"), Link(delay=0.005, name="rev"),
             until=5.0, connect=False, start=1.0)
    assert peer.closed and server.error is None and 2.5 <= server.closed_at <= 2.6
