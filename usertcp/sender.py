"""Send one source to a peer with the Python stack, through the gate: the glue of all parts.

Steps, each with an error a user can act on: find the route and next hop; reserve the local port
with a bound (never connected) kernel socket so no other program takes it; open the packet
socket; register the flow in the gate with that socket's cookie and our ISN; run the connection
in the event loop; revoke the flow. The caller's thread must already be in the sender's network
namespace.
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from .cc import registry
from .datapath.frame import FrameBuilder
from .datapath.packet import PacketDatapath
from .datapath.route import resolve
from .engine.connection import Connection, Event
from .gate import GateMaps
from .loop import EventLoop


class SendError(RuntimeError):
    """One line for the user: what went wrong and what to do."""


def current_netns() -> str | None:
    """The name under /run/netns of the calling thread's network namespace, if it has one."""
    try:
        me = os.stat("/proc/thread-self/ns/net")
    except OSError:
        return None
    try:
        names = os.listdir("/run/netns")
    except OSError:
        return None
    for name in names:
        try:
            st = os.stat(f"/run/netns/{name}")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
            return name
    return None


@dataclass
class SendResult:
    conn: Connection
    events: list[Event] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    gate_flow: dict | None = None
    send_errors: int = 0

    @property
    def seconds(self) -> float:
        """From SYN to the peer's acknowledgment of the last byte (FIN included)."""
        return max(self.finished - self.started, 1e-9)

    @property
    def goodput_bps(self) -> float:
        return self.conn.delivered * 8 / self.seconds


def reserve_port(ip: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((ip, port))
    except OSError as exc:
        s.close()
        if exc.errno == errno.EADDRINUSE:
            raise SendError(f"local port {port} on {ip} is taken: pick another with --sport or leave it 0") from exc
        raise SendError(f"cannot reserve a local port on {ip}: {exc.strerror}") from exc
    return s


def send(
    remote: tuple[str, int],
    source,
    cc: str = "cubic",
    *,
    sport: int = 0,
    netns: str | None = None,
    on_tick: Callable[[Connection], None] | None = None,
    time_wait: float = 1.0,
    syn_retries: int = 2,
    gso_max: int = 65536,
    ecn: bool = False,
    pacing: bool = False,
    cc_params: dict | None = None,
    cc_log: Callable[[dict], None] | None = None,
) -> SendResult:
    """Run one transfer to completion (or error) and return what happened."""
    try:
        path = resolve(remote[0])
    except Exception as exc:  # RouteError and netlink errors
        raise SendError(f"unreachable peer {remote[0]}: {exc}") from exc
    netns = netns if netns is not None else current_netns()
    try:
        cc_obj = registry.load(cc, mss=path_mss(), now=time.monotonic(), params=cc_params)
    except ValueError as exc:
        raise SendError(str(exc)) from exc
    reservation = reserve_port(path.src_ip, sport)
    local = (path.src_ip, reservation.getsockname()[1])
    dp = PacketDatapath(path.ifname, path.src_ip)
    try:
        maps = GateMaps.open(netns, path.ifname)
    except Exception:
        dp.close()
        reservation.close()
        raise
    iss = secrets.randbits(32)
    try:
        maps.register(local, remote, dp.cookie, iss)
        now = time.monotonic()
        conn = Connection(local, remote, cc_obj, source, iss=iss, now=now, time_wait=time_wait,
                          syn_retries=syn_retries, gso_max=gso_max, ecn=ecn, pacing=pacing, cc_log=cc_log)
        loop = EventLoop(dp)
        flow = loop.add(conn, FrameBuilder(path.src_mac, path.dst_mac, local, remote))
        result = SendResult(conn, started=now)
        conn.connect(now)
        tick = (lambda: on_tick(conn)) if on_tick else None
        try:
            loop.run(on_tick=tick)
        except KeyboardInterrupt:
            for tx in conn.abort(time.monotonic()):
                dp.send(flow.builder, tx)
            raise
        result.events = flow.events
        done = [e.time for e in flow.events if e.kind == "delivered" and e.value == source.size]
        result.finished = done[0] if done else time.monotonic()
        result.gate_flow = maps.flow(local, remote)
        result.send_errors = dp.send_errors
        return result
    finally:
        maps.revoke(local, remote)
        maps.close()
        dp.close()
        reservation.close()


def path_mss() -> int:
    """Initial SMSS before the handshake tells us better (Ethernet MTU minus headers and TS)."""
    return 1448
