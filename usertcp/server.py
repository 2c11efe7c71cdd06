"""`usertcp serve`: answer HTTP/1.1 clients with the Python stack, through the gate.

One process, one packet socket, one event loop, any number of connections, each with its own
congestion controller. The steps, each with an error a user can act on:

1. Reserve the port with a bound, never listening, kernel socket, so no other program takes it
   (the same reservation a sender makes for its local port).
2. Register the port as a *listener* in the gate. The gate's XDP program then turns each
   client's SYN into a flow owned by our packet socket (state syn-rcvd), and its TC ingress keeps
   those SYNs, and everything of owned flows, from the kernel, which would answer with RST.
3. For each SYN the loop hands us: check the gate created the flow (if not, its table was full:
   drop the SYN; the client retries, as with a full accept backlog), then accept it with a new
   engine and an `app.HttpConnection`. The first SYN-ACK fixes the flow's ISN in the gate.
4. When a connection is over, revoke its flow; on shutdown, remove the listener and every flow
   the socket owns. Periodically reap flows whose handshake never completed.

The caller's thread must be in the server's network namespace.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .app import HttpConnection
from .cc import registry
from .datapath.frame import FrameBuilder
from .datapath.packet import PacketDatapath
from .datapath.route import Path, RouteError, resolve
from .gate import GateMaps
from .loop import EventLoop, Flow
from .segment import Flags
from .sender import SendError, current_netns, path_mss, reserve_port

EMBRYONIC_MAX_AGE = 75.0  # s: a handshake older than this is abandoned (Linux: 63 s of SYN-ACK retries)


class ServeError(SendError):
    """One line for the user: what went wrong and what to do."""


@dataclass
class ServerStats:
    accepted: int = 0
    closed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    syn_without_flow: int = 0
    requests: int = 0
    bytes_sent: int = 0
    bytes_retrans: int = 0


def local_address(ip: str | None) -> tuple[str, str]:
    """The address to serve on and its interface: `ip` if given, else the only global IPv4
    address of this network namespace (the lab's sender address)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = []
        for a in ipr.get_addr(family=socket.AF_INET):
            addr = a.get_attr("IFA_ADDRESS")
            if ipaddress.ip_address(addr).is_loopback:
                continue
            found.append((addr, names.get(a["index"], "?")))
    if ip is not None:
        for addr, ifname in found:
            if addr == ip:
                return addr, ifname
        raise ServeError(f"{ip} is not an address of this network namespace (have: "
                         f"{', '.join(a for a, _ in found) or 'none'})")
    if len(found) != 1:
        raise ServeError("pick the address to serve on with --bind: this namespace has "
                         f"{', '.join(a for a, _ in found) or 'no IPv4 address'}")
    return found[0]


class Server:
    """Serve `root` on (ip, port) until `stop()` or the time limit. See the module docstring."""

    def __init__(self, root: str | os.PathLike, port: int, *, ip: str | None = None, cc: str = "cubic",
                 cc_params: dict | None = None, netns: str | None = None, idle_timeout: float = 60.0, time_wait: float = 1.0,
                 ecn: bool = False, pacing: bool = False, clock: Callable[[], float] = time.monotonic):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise ServeError(f"--root {root!r} is not a directory")
        try:
            registry.load(cc, 1448, 0.0, cc_params)  # a bad name or parameter fails here, not per client
        except ValueError as exc:
            raise ServeError(str(exc)) from exc
        self.root, self.cc, self.cc_params = root, cc, cc_params
        self.idle_timeout, self.time_wait = idle_timeout, time_wait
        self.engine = {"ecn": ecn, "pacing": pacing}
        self.clock = clock
        self.ip, self.ifname = local_address(ip)
        self.netns = netns if netns is not None else current_netns()
        self.stats = ServerStats()
        self._paths: dict[str, Path] = {}
        self._reservation = reserve_port(self.ip, port)
        self.port = self._reservation.getsockname()[1]
        self.local = (self.ip, self.port)
        self.dp = self.maps = None
        try:
            self.dp = PacketDatapath(self.ifname, self.ip)
            self.maps = GateMaps.open(self.netns, self.ifname)
            self.maps.add_listener(self.local, self.dp.cookie)
        except Exception:
            self.close()
            raise
        self.loop = EventLoop(self.dp, clock=clock)
        self.loop.keep_finished = False
        self.loop.on_retire = self._retired
        self.loop.listen(self.port, self._on_syn)
        self._stopping = False
        self._next_reap = clock() + 5.0

    # ------------------------------------------------------------------ connections

    def _on_syn(self, saddr: bytes, _daddr: bytes, seg, now: float) -> None:
        flags = seg.flags
        if not flags & Flags.SYN or flags & (Flags.ACK | Flags.RST | Flags.FIN) or self._stopping:
            return  # a straggler of a connection already gone (the kernel answers it with RST)
        remote = (socket.inet_ntoa(saddr), seg.sport)
        info = self.maps.flow(self.local, remote)
        if info is None or info.get("state") != "syn-rcvd":
            # No flow: the gate's table was full, or a SYN for a 4-tuple still in TIME-WAIT here.
            self.stats.syn_without_flow += 1
            return
        try:
            path = self._path(remote[0])
        except RouteError:
            self.stats.syn_without_flow += 1
            return
        cc = registry.load(self.cc, mss=path_mss(), now=now, params=self.cc_params)
        app = HttpConnection.accept(seg, now, self.local, remote, cc, self.root, iss=secrets.randbits(32),
                                    idle_timeout=self.idle_timeout, time_wait=self.time_wait, **self.engine)
        self.loop.add(app.conn, FrameBuilder(path.src_mac, path.dst_mac, self.local, remote), app=app)
        self.stats.accepted += 1

    def _path(self, client_ip: str) -> Path:
        """Frames to a client go to the next hop on the route to it (resolved once per client
        address; the lab's clients all sit behind one router)."""
        path = self._paths.get(client_ip)
        if path is None:
            path = self._paths[client_ip] = resolve(client_ip)
        return path

    def _retired(self, flow: Flow) -> None:
        conn = flow.conn
        self.maps.revoke(conn.local, conn.remote)
        st = self.stats
        st.closed += 1
        st.bytes_sent += conn.bytes_sent
        st.bytes_retrans += conn.bytes_retrans
        if flow.app is not None:
            st.requests += flow.app.session.requests
        if conn.error:
            st.errors[conn.error] = st.errors.get(conn.error, 0) + 1

    # ------------------------------------------------------------------ running

    def run(self, *, until: float | None = None, on_tick: Callable[[], None] | None = None,
            tick: float = 1.0) -> None:
        """Serve until `stop()` is called (from on_tick or a signal handler) or `until`."""
        next_tick = self.clock() + tick
        while not (self._stopping and not self.loop.flows):
            self.loop.step(min(tick, 0.05))
            now = self.clock()
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + tick
            if now >= self._next_reap:
                self.maps.reap_embryonic(EMBRYONIC_MAX_AGE, owner_cookie=self.dp.cookie)
                self._next_reap = now + 5.0
            if until is not None and now >= until:
                break

    def stop(self) -> None:
        """Stop accepting and close every connection once its response in progress is out and
        acknowledged (idle keep-alive connections at once); `run` returns when all are done."""
        self._stopping = True
        self.loop.listeners.clear()
        for flow in self.loop.flows.values():
            if flow.app is not None:
                flow.app.close_when_idle()

    def close(self) -> None:
        """Abort what is still open and give every resource back: flows, listener, socket."""
        if getattr(self, "loop", None) is not None:
            now = self.clock()
            for flow in list(self.loop.flows.values()):
                for tx in flow.conn.abort(now):
                    self.dp.send(flow.builder, tx)
                if flow.app is not None:
                    flow.app.close()
            self.loop.flows.clear()
        if self.maps is not None:
            try:
                self.maps.remove_listener(self.local)
                self.maps.revoke_all(self.dp.cookie)
            finally:
                self.maps.close()
                self.maps = None
        if self.dp is not None:
            self.dp.close()
            self.dp = None
        self._reservation.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
