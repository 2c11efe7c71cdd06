"""The event loop: drives sans-I/O connections over one datapath in real time.

Each turn: take every waiting packet and hand it to its connection (demultiplexed by 4-tuple),
fire due timers, then let every connection transmit. It sleeps in poll() only when no packet
arrived and nothing was sent, until the earliest deadline. Many connections share one loop
and one socket; the connection objects never see the clock except as the `now` passed in.

Sleeping is select() with the deadline to the microsecond, under a timer slack of 1 us
(`_tighten_timer_slack`): poll() and epoll take milliseconds, and rounding a pacer's 0.9 ms gap up
to 1 ms plus the default 50 us slack made every wake-up 0.1-0.8 ms late. With 2-segment bursts
(tcp_tso_autosize's floor below ~23 Mbit/s) that capped a paced flow near 21 Mbit/s whatever its
rate: BBR under 0.5% loss fell to that cap and could never probe past it (1.25 x its own
estimate, eaten by the lateness). Measured on the development VM: poll() late by a median of
185-796 us, select() with 1 us slack by 46-55 us.

A server adds two things: `listen(port, on_syn)` hands packets to that port which belong to no
flow (new SYNs) to a callback that may `add` a flow; and a flow may carry an application object
(`app`, e.g. `app.HttpConnection`) whose `pump(now)` runs after its connection took packets in or
a timer fired and before it transmits, whose `deadline()` stands for the flow's (it includes the
connection's), and whose
`close()` runs when the flow is retired, as does the loop's `on_retire` callback.
"""

from __future__ import annotations

import ctypes
import select
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .datapath.frame import FrameBuilder
from .engine.connection import Connection, Event
from .segment import Transmission


@dataclass(eq=False)
class Flow:
    conn: Connection
    builder: FrameBuilder
    key: tuple[bytes, int, int]  # (remote address, remote port, local port), as packets demultiplex
    outbox: deque[Transmission] = field(default_factory=deque)
    events: list[Event] = field(default_factory=list)
    app: object | None = None


class EventLoop:
    def __init__(self, datapath, clock: Callable[[], float] = time.monotonic):
        self.dp = datapath
        self.clock = clock
        self.flows: dict[tuple[bytes, int, int], Flow] = {}
        self.finished: list[Flow] = []
        self.keep_finished = True  # a long-running server sets False: retired flows are dropped
        self.listeners: dict[int, Callable] = {}
        self.on_retire: Callable[[Flow], None] | None = None
        self._fd = datapath.fileno()
        self._want_out = False
        _tighten_timer_slack()

    def add(self, conn: Connection, builder: FrameBuilder, app: object | None = None) -> Flow:
        key = (socket.inet_aton(conn.remote[0]), conn.remote[1], conn.local[1])
        flow = Flow(conn, builder, key, app=app)
        self.flows[key] = flow
        if conn.local[1] not in self.listeners:
            self._refresh_ports()
        return flow

    def listen(self, port: int, on_syn: Callable[[bytes, bytes, object, float], None]) -> None:
        """Packets to `port` that match no flow go to `on_syn(saddr, daddr, segment, now)`."""
        self.listeners[port] = on_syn
        self._refresh_ports()

    def _refresh_ports(self) -> None:
        """The socket filter admits exactly the listening ports and the local ports of the flows
        still running."""
        self.dp.set_ports(sorted(set(self.listeners) | {k[2] for k in self.flows}))

    def _send(self, flow: Flow, txs) -> None:
        outbox = flow.outbox
        outbox.extend(txs)
        send = self.dp.send
        while outbox:
            if not send(flow.builder, outbox[0]):
                return
            outbox.popleft()

    def step(self, timeout: float) -> None:
        """One turn of the loop; waits at most `timeout` seconds for a packet."""
        now = self.clock()
        packets = self.dp.receive()
        flows = self.flows
        for saddr, daddr, seg in packets:
            flow = flows.get((saddr, seg.sport, seg.dport))
            if flow is not None:
                flow.conn.receive(seg, now)
            else:
                on_syn = self.listeners.get(seg.dport)
                if on_syn is not None:
                    on_syn(saddr, daddr, seg, now)
        busy = bool(packets)
        earliest = None
        for flow in list(flows.values()):
            conn, app = flow.conn, flow.app
            d = conn.deadline()
            if d is not None and d <= now:
                conn.on_timer(now)
            if app is not None:
                app.pump(now)
            txs = conn.transmit(now)
            if txs or flow.outbox:
                busy = True
                self._send(flow, txs)
            flow.events.extend(conn.events())
            if conn.closed and not flow.outbox:
                self._retire(flow)
                continue
            d = (app or conn).deadline()
            if d is not None and (earliest is None or d < earliest):
                earliest = d
        self._want_out = any(f.outbox for f in flows.values())
        if busy:
            return
        wait = timeout if earliest is None else min(timeout, max(0.0, earliest - self.clock()))
        fd = self._fd
        select.select((fd,), (fd,) if self._want_out else (), (), wait)

    def _retire(self, flow: Flow) -> None:
        del self.flows[flow.key]
        if self.keep_finished:
            self.finished.append(flow)
        if flow.app is not None:
            flow.app.close()
        if self.on_retire is not None:
            self.on_retire(flow)
        if flow.conn.local[1] not in self.listeners:
            self._refresh_ports()

    def run(self, *, until: float | None = None, on_tick: Callable[[], None] | None = None,
            tick: float = 0.1) -> None:
        """Run until every flow has closed, or the clock passes `until`; call `on_tick` about
        every `tick` seconds (progress display)."""
        next_tick = self.clock() + tick
        while self.flows or self.listeners:
            self.step(min(tick, 0.05))
            now = self.clock()
            if on_tick is not None and now >= next_tick:
                on_tick()
                next_tick = now + tick
            if until is not None and now >= until:
                break


_PR_SET_TIMERSLACK = 29  # include/uapi/linux/prctl.h


def _tighten_timer_slack() -> None:
    """Let this thread's timed sleeps end within ~1 us of their deadline instead of the default
    50 us of slack the kernel may add to coalesce wake-ups (prctl(2) PR_SET_TIMERSLACK): the
    loop's sleeps are pacing gaps of a millisecond or less. Best effort: without it pacing is
    only coarser."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass
