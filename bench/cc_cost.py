#!/usr/bin/env python3
"""What each congestion controller costs per ACK, on top of the engine, in virtual time.

    .venv/bin/python bench/cc_cost.py [--size 20MB] [--loss 0.005] [--json out.json]

Each algorithm runs its own transfer in the simulator (50 Mbit/s, 40 ms RTT, 1 BDP drop-tail
queue, random loss `--loss`), so it is measured on the ACK stream its own window produces. Every
hook call of the controller is timed with `perf_counter_ns`; the figure is the controller's
total hook time divided by the ACKs the engine received, i.e. what the algorithm adds to each
ACK. The timer's own cost (a timed call of an empty method, measured in the same run) is taken
off every call. Separately, the guard's cost per hook call (`Connection._cc_call` around an empty
hook, minus the bare call) is what the engine pays for containing plugins.

The target of issue 5: NewReno and CUBIC add <= 2 µs per ACK. Python 3.11, one core; the
figures vary by about 10% from run to run on a shared VM, so each is the median of `--repeat`
runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from usertcp.cc import load, registry  # noqa: E402
from usertcp.cc.newreno import NewReno  # noqa: E402
from usertcp.engine.connection import Connection  # noqa: E402
from usertcp.sim.link import Link  # noqa: E402
from usertcp.sim.receiver import Receiver  # noqa: E402
from usertcp.sim.run import simulate  # noqa: E402
from usertcp.sources import PatternSource  # noqa: E402

HOOKS = ("on_ack", "cong_control", "on_congestion_event", "on_recovery_exit", "on_rto", "on_undo",
         "on_idle_restart", "on_mss_change")
LOCAL, REMOTE = ("198.18.1.1", 40000), ("198.19.0.1", 5201)
RATE, DELAY = 50e6, 0.020


def parse_size(text: str) -> int:
    from usertcp.cli import parse_size as ps

    return ps(text)


class _Timer:
    """Wraps one bound method; accumulates nanoseconds and calls."""

    __slots__ = ("fn", "ns", "calls")

    def __init__(self, fn):
        self.fn, self.ns, self.calls = fn, 0, 0

    def __call__(self, *args):
        t0 = time.perf_counter_ns()
        try:
            return self.fn(*args)
        finally:
            self.ns += time.perf_counter_ns() - t0
            self.calls += 1


def timer_overhead_ns(n: int = 200_000) -> float:
    class Empty:
        def hook(self, a):
            pass

    t = _Timer(Empty().hook)
    for _ in range(n):
        t(None)
    return t.ns / t.calls


def guard_overhead_ns(n: int = 200_000) -> float:
    """`_cc_call` around a hook that does nothing, minus calling it bare."""

    class Idle(NewReno):
        def on_ack(self, ack):
            pass

    conn = Connection(LOCAL, REMOTE, Idle(1448), PatternSource(1), iss=1)
    cc = conn.cc
    t0 = time.perf_counter_ns()
    for _ in range(n):
        conn._cc_call("on_ack", None)
    guarded = time.perf_counter_ns() - t0
    t0 = time.perf_counter_ns()
    for _ in range(n):
        getattr(cc, "on_ack")(None)
    bare = time.perf_counter_ns() - t0
    return (guarded - bare) / n


def measure(name: str, size: int, loss: float, seed: int) -> dict:
    cc = load(name, 1448, 0.0)
    timers = {}
    for hook in HOOKS:
        fn = getattr(cc, hook, None)
        if callable(fn):
            timers[hook] = _Timer(fn)
            setattr(cc, hook, timers[hook])
    src = PatternSource(size, seed=seed)
    conn = Connection(LOCAL, REMOTE, cc, src, iss=seed, time_wait=0.5)
    bdp = int(RATE / 8 * 2 * DELAY)
    fwd = Link(delay=DELAY, rate=RATE, queue_bytes=bdp, loss=loss, seed=seed, name="fwd")
    rev = Link(delay=DELAY, name="rev")
    acks = 0
    receive = conn.receive

    def counting(seg, now):
        nonlocal acks
        acks += 1
        receive(seg, now)

    conn.receive = counting
    res = simulate(conn, Receiver(port=REMOTE[1], iss=777), fwd, rev, until=3600.0)
    if not res.completed or conn.cc is not cc:
        raise RuntimeError(f"{name}: run did not complete cleanly ({res.reason}, cc now {conn.cc.name})")
    return {"acks": acks, "goodput_bps": res.goodput,
            "hooks": {h: {"calls": t.calls, "ns": t.ns} for h, t in timers.items() if t.calls}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    ap.add_argument("--size", type=parse_size, default=20 << 20)
    ap.add_argument("--loss", type=float, default=0.005)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--algos", default=",".join(n for n in registry.available()))
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    timer_ns = timer_overhead_ns()
    guard_ns = statistics.median(guard_overhead_ns() for _ in range(args.repeat))
    rows = {}
    for name in args.algos.split(","):
        per_ack = []
        last = None
        for k in range(args.repeat):
            r = measure(name, args.size, args.loss, seed=1)
            net = sum(h["ns"] - timer_ns * h["calls"] for h in r["hooks"].values())
            per_ack.append(net / r["acks"] / 1000)
            last = r
        rows[name] = {"us_per_ack": statistics.median(per_ack), "runs_us_per_ack": per_ack,
                      "acks": last["acks"], "goodput_bps": last["goodput_bps"], "hooks": last["hooks"]}

    t = Table(title=f"controller cost per ACK: 50 Mbit/s, 40 ms, 1 BDP, loss {args.loss:.2%}, "
                    f"{args.size / 2**20:.0f} MiB, median of {args.repeat}")
    for col in ("algorithm", "µs per ACK", "ACKs", "hook calls", "goodput"):
        t.add_column(col, justify="right")
    for name, r in rows.items():
        calls = sum(h["calls"] for h in r["hooks"].values())
        t.add_row(name, f"{r['us_per_ack']:.2f}", f"{r['acks']:,}", f"{calls:,}", f"{r['goodput_bps'] / 1e6:.1f} Mbit/s")
    con = Console()
    con.print(t)
    con.print(f"guard per hook call: {guard_ns:.0f} ns (timer overhead taken off each call: {timer_ns:.0f} ns); "
              f"Python {platform.python_version()} on {platform.machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "size": args.size,
                                               "loss": args.loss, "guard_ns_per_call": guard_ns,
                                               "timer_ns_per_call": timer_ns, "algorithms": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
