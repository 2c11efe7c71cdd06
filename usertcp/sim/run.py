"""Run a sender engine against a `Receiver` over two `Link`s, in virtual time.

The loop is deterministic: the same engine, receiver, links (and seeds) give the same run, event
for event. There are only four sources of future events — the two links' next arrivals and the
two endpoints' deadlines — so instead of a heap of scheduled events (whose timer entries would go
stale every time an endpoint re-arms a timer) the loop asks each source for its next time and
jumps to the earliest. At each instant it runs steps until nothing more is due: deliver forward
arrivals to the receiver and reverse arrivals to the sender, fire due timers, then pump both
endpoints' output into the links.

Arrivals due at the same instant reach the sender as one batch before it is asked to transmit
(as a datapath reading a burst from its socket would); the receiver builds its reply to each
segment as it processes it, so its per-packet ACK behaviour does not depend on batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .link import HEADER_BYTES, Link, segments_from
from .receiver import Receiver


@dataclass
class SimResult:
    """What a run produced.

    `reason` is "completed" (both ends closed, links drained), "until" (time limit), "stall"
    (nothing scheduled anywhere but not finished: a deadlock, e.g. a lost packet with no timer),
    or "max_events". `events` are the sender's events in order; `timed_events` the same with the
    virtual time they were drained at. `trace`, when asked for, holds one
    `(time, direction, seq, ack, flags, payload_len)` per packet offered to a link, direction
    "fwd"/"rev", or "fwd-drop"/"rev-drop" when the link dropped it.
    """

    end: float
    reason: str
    events: list[tuple]
    timed_events: list[tuple[float, tuple]]
    receiver: Receiver
    fwd: Link
    rev: Link
    steps: int
    trace: list[tuple] | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.reason == "completed"

    @property
    def stalled(self) -> bool:
        return self.reason == "stall"

    @property
    def goodput(self) -> float:
        """In-order bytes delivered to the receiver, in bits/s over the run."""
        return self.receiver.bytes_received * 8 / self.end if self.end > 0 else 0.0


def simulate(
    conn,
    receiver: Receiver,
    fwd: Link,
    rev: Link,
    *,
    until: float,
    max_events: int = 10**7,
    trace: bool = False,
    connect: bool = True,
    start: float = 0.0,
) -> SimResult:
    """Drive `conn` (the sender engine) and `receiver` over `fwd` (sender→receiver) and `rev`.

    Calls `conn.connect(start)` first unless `connect=False` (the caller already started it).
    Ports for the wire segments come from `conn.local` / `conn.remote`. `max_events` bounds the
    number of loop steps (an instant that never quiesces — a timer that re-arms in the past —
    ends the run instead of hanging it).
    """
    sport = conn.local[1]
    dport = conn.remote[1]
    tr: list[tuple] | None = [] if trace else None
    events: list[tuple] = []
    timed: list[tuple[float, tuple]] = []

    now = start
    if connect:
        conn.connect(now)

    fwd_send, rev_send = fwd.send, rev.send
    fwd_deliver, rev_deliver = fwd.deliver, rev.deliver
    c_transmit, c_receive, c_deadline, c_timer, c_events = (
        conn.transmit, conn.receive, conn.deadline, conn.on_timer, conn.events)
    r_transmit, r_receive, r_deadline, r_timer = (
        receiver.transmit, receiver.receive, receiver.deadline, receiver.on_timer)

    steps = 0
    reason = ""
    first = True
    while True:
        # One step at instant `now`: what arrived, then what fell due, then what either end
        # sends in answer. Transmitting last means each step calls transmit once, after every
        # input that could have opened the window; arrivals that a zero-delay link makes due at
        # this same instant are taken by the next step.
        steps += 1
        arrivals = fwd_deliver(now)
        r_touched = first
        if arrivals:
            r_touched = True
            for seg in arrivals:
                r_receive(seg, now)
        arrivals = rev_deliver(now)
        c_touched = first
        if arrivals:
            c_touched = True
            for seg in arrivals:
                c_receive(seg, now)
        d = c_deadline()
        if d is not None and d <= now:
            c_timer(now)
            c_touched = True
        d = r_deadline()
        if d is not None and d <= now:
            r_timer(now)
            r_touched = True
        first = False
        # An endpoint changes only through its inputs, so one that got none this step has
        # nothing new to send (what it held back for pacing comes due as a deadline).
        if c_touched:
            for tx in c_transmit(now):
                hdr = HEADER_BYTES + len(tx.options)
                for seg in segments_from(tx, sport, dport):
                    ok = fwd_send(seg, now, hdr + len(seg.payload))
                    if tr is not None:
                        tr.append((now, "fwd" if ok else "fwd-drop", seg.seq, seg.ack,
                                   int(seg.flags), len(seg.payload)))
        if r_touched:
            for seg in r_transmit(now):
                ok = rev_send(seg, now)
                if tr is not None:
                    tr.append((now, "rev" if ok else "rev-drop", seg.seq, seg.ack,
                               int(seg.flags), len(seg.payload)))
        evs = c_events()
        if evs:
            events.extend(evs)
            timed.extend((now, ev) for ev in evs)

        nxt = None
        for t in (fwd.next_arrival(), rev.next_arrival(), c_deadline(), r_deadline()):
            if t is not None and (nxt is None or t < nxt):
                nxt = t
        if steps >= max_events:
            reason = "max_events"
            break
        if nxt is not None and nxt <= now:
            continue  # something is still due at this instant
        # Quiet at `now`.
        if conn.closed and receiver.closed and fwd.empty and rev.empty:
            reason = "completed"
            break
        if nxt is None:
            reason = "stall"
            break
        if nxt > until:
            now = max(now, until)
            reason = "until"
            break
        now = nxt

    return SimResult(
        end=now,
        reason=reason,
        events=events,
        timed_events=timed,
        receiver=receiver,
        fwd=fwd,
        rev=rev,
        steps=steps,
        trace=tr,
        stats={"fwd": fwd.counters(), "rev": rev.counters()},
    )
