"""Our own engine as the *passive* end of a simulation: a listener that accepts one connection.

`simulate` drives a sender engine against a peer with the `Receiver` interface (`receive`,
`transmit` returning wire segments, `deadline`, `on_timer`, `closed`). `AcceptingPeer` offers that
interface around an application that `accept`s the first SYN — for `usertcp serve` that is
`app.HttpConnection` — so a client engine can exchange requests and responses with a server
engine in virtual time, losses and reordering included, before either meets a real kernel.
"""

from __future__ import annotations

from collections.abc import Callable

from ..segment import Flags, Segment
from .link import segments_from


class AcceptingPeer:
    """Accept one connection: `factory(syn, now)` returns the application object, which has
    `conn` (the engine), `pump(now)`, `deadline()` (including the engine's) and `close()`. Segments before the first SYN
    are ignored, as a listener without a matching connection would have dropped them."""

    def __init__(self, factory: Callable[[Segment, float], object]):
        self.factory = factory
        self.app = None

    @property
    def conn(self):
        return self.app.conn if self.app is not None else None

    @property
    def closed(self) -> bool:
        return self.app is not None and self.app.conn.closed

    def receive(self, seg: Segment, now: float) -> None:
        if self.app is None:
            if seg.flags & Flags.SYN and not seg.flags & Flags.ACK:
                self.app = self.factory(seg, now)
            return
        self.app.conn.receive(seg, now)
        self.app.pump(now)

    def transmit(self, now: float) -> list[Segment]:
        if self.app is None:
            return []
        conn = self.app.conn
        self.app.pump(now)
        out = []
        for tx in conn.transmit(now):
            out.extend(segments_from(tx, conn.local[1], conn.remote[1]))
        if conn.closed:
            self.app.close()
        return out

    def deadline(self) -> float | None:
        return self.app.deadline() if self.app is not None else None

    def on_timer(self, now: float) -> None:
        conn = self.app.conn
        d = conn.deadline()
        if d is not None and d <= now:
            conn.on_timer(now)
        self.app.pump(now)
