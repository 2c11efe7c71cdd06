#!/usr/bin/env python3
"""Memory per connection of `usertcp serve`, measured with tracemalloc in virtual time.

    .venv/bin/python bench/connection_memory.py [--connections 1000] [--file-size 1MB] [--json out.json]

Builds N server connections the way `usertcp serve` does (`app.HttpConnection.accept`: engine,
send stream, HTTP session, congestion controller), drives each through the handshake, one
keep-alive GET of a file and the ACK of the whole response, and measures the Python memory they
hold afterwards: the state of an idle keep-alive connection, which is what a server with
thousands of clients holds most of the time. A second figure is taken while the response is
still unacknowledged (everything in flight), to show that a connection's memory does not grow
with the bytes it has in flight: the body is a range of a memory-mapped file (page cache,
shared, not counted), and the scoreboard holds references to ranges.

Why tracemalloc: it counts the bytes Python allocated and still holds, per object, without the
noise of RSS (allocator arenas, the page cache of the served file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from usertcp.app import HttpConnection  # noqa: E402
from usertcp.cc import load  # noqa: E402
from usertcp.segment import Flags, Options, Segment, parse_options  # noqa: E402

SERVER = ("198.18.1.1", 8080)


def _parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "KIB": 1 << 10, "MIB": 1 << 20}
    t = text.strip().upper()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * m)
    return int(t)


def _ack_everything(app, client_port: int, now: float, seq: int) -> None:
    conn = app.conn
    ack = (conn.iss + conn.snd_nxt) & 0xFFFFFFFF
    ts = None
    if conn.ts_ok:
        ts = (int(now * 1000) + 1, conn._ts_now(now))
    conn.receive(Segment(client_port, SERVER[1], seq, ack, Flags.ACK, 65535, Options(ts=ts), b""), now)
    app.pump(now)
    conn.transmit(now)


def build(n: int, root: str, file_name: str, acknowledge: bool) -> list:
    apps = []
    for i in range(n):
        port = 10000 + i
        client = (f"198.19.{i // 250}.{1 + i % 250}", port)
        now = 1.0
        syn = Segment(port, SERVER[1], 1000, 0, Flags.SYN, 65535,
                      Options(mss=1460, wscale=7, sack_permitted=True, ts=(1, 0)), b"")
        app = HttpConnection.accept(syn, now, SERVER, client, load("cubic", mss=1448, now=now), root,
                                    iss=5000 + i, idle_timeout=None)
        conn = app.conn
        (synack,) = conn.transmit(now)
        tsecr = parse_options(synack.options).ts[0]
        now += 0.01
        conn.receive(Segment(port, SERVER[1], 1001, (conn.iss + 1) & 0xFFFFFFFF, Flags.ACK, 512,
                             Options(ts=(2, tsecr)), b""), now)
        req = f"GET /{file_name} HTTP/1.1\r\nHost: lab\r\n\r\n".encode()
        conn.receive(Segment(port, SERVER[1], 1001, (conn.iss + 1) & 0xFFFFFFFF, Flags.ACK | Flags.PSH, 512,
                             Options(ts=(3, tsecr)), req), now)
        app.pump(now)
        conn.transmit(now)  # the response: headers and as much of the body as the window allows
        if acknowledge:
            # Let the whole response out and acknowledge it, a window at a time.
            for _ in range(10_000):
                if not app.stream.pending:
                    break
                now += 0.01
                _ack_everything(app, port, now, 1001 + len(req))
        apps.append(app)
    return apps


def measure(n: int, root: str, file_name: str, acknowledge: bool) -> dict:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    apps = build(n, root, file_name, acknowledge)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    total = sum(s.size_diff for s in after.compare_to(before, "filename"))
    flights = [a.conn.snd_nxt - a.conn.snd_una for a in apps]
    records = [len(a.conn.scoreboard) for a in apps]
    out = {
        "connections": n,
        "bytes_total": total,
        "bytes_per_connection": total / n,
        "in_flight_per_connection": sum(flights) / n,
        "scoreboard_records_per_connection": sum(records) / n,
        "stream_pieces_per_connection": sum(a.stream.piece_count for a in apps) / n,
    }
    for a in apps:
        a.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--file-size", type=_parse_size, default=10**6)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        with open(os.path.join(root, "f.bin"), "wb") as f:
            f.write(os.urandom(args.file_size))
        idle = measure(args.connections, root, "f.bin", acknowledge=True)
        busy = measure(args.connections, root, "f.bin", acknowledge=False)
    print(f"usertcp serve, memory per connection (tracemalloc, {args.connections} connections, "
          f"{args.file_size} B file, Python {sys.version.split()[0]})")
    for name, m in (("idle keep-alive (response acknowledged)", idle), ("response in flight", busy)):
        print(f"  {name:42s} {m['bytes_per_connection']:9.0f} B/connection  "
              f"in flight {m['in_flight_per_connection']:9.0f} B, "
              f"{m['scoreboard_records_per_connection']:.1f} records, "
              f"{m['stream_pieces_per_connection']:.1f} stream pieces")
    if busy["in_flight_per_connection"]:
        extra = busy["bytes_per_connection"] - idle["bytes_per_connection"]
        print(f"  extra memory while in flight: {extra:.0f} B per connection = "
              f"{extra / (busy['in_flight_per_connection'] / 1e6):.0f} B per in-flight MB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"idle": idle, "in_flight": busy}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
