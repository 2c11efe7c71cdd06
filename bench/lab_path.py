#!/usr/bin/env python3
"""Re-measure the lab path's acceptance figures: delay accuracy, throughput, loss accuracy.

    sudo .venv/bin/python bench/lab_path.py [--quick] [--json out.json] [--only NAME ...]

Measurements (each builds its own lab, removes leftovers of an earlier run first and always
removes the lab again, also on Ctrl-C):

  rtt-accuracy   20 ms each way. Per-pass hold time in the router (netns.holdtime, kernel
                 timestamps on both router interfaces) against 20 ms: idle (ICMP probes at
                 200 Hz), under a saturating kernel cubic flow at 50 Mbit/s and at 1 Gbit/s
                 (queue 1 BDP). Also the delay line's own release error, its CPU, and the
                 end-to-end probe RTT while idle.
  throughput     kernel cubic and bbr, 40 ms RTT, 1 BDP queue, 50 Mbit/s and 1 Gbit/s: goodput
                 as a fraction of the rate, retransmits, mean RTT, delay-line and machine CPU.
  unshaped       no rate, 20 ms each way: kernel cubic through the delay line alone.
  loss-accuracy  1% forward loss, no delay, no rate: >= 1,000,000 full-size UDP packets
                 (200,000 with --quick) and the loss program's own counters.
  reorder        1% of forward packets held back 1 ms, 50 Mbit/s, 20 ms each way: 300,000
                 UDP datagrams (60,000 with --quick); the share held back (1% within 5 sigma)
                 and the receiver's out-of-order count (97-100% of it); then kernel cubic.

CPU: the delay line's on-CPU time from /proc/PID/schedstat over the measured part of a run, as
a fraction of one core (utime and stime from /proc/PID/stat are shown as a split; this kernel
samples them per tick). Its stime includes kernel work done in its context: each batch verdict
re-injects the released packets, so forwarding, the bottleneck's qdisc and any softirq work the
kernel runs on the way back (the receiver's TCP, the sender's ACK processing) is charged to it.
Machine CPU is /proc/stat's busy share of all cores (steal is recorded in the JSON: on a shared
VM it explains many outliers). While a delay line runs, idle CPUs poll instead of halting (its
PM QoS request); /proc/stat still counts that polling as idle.

Prints a table (PASS/FAIL against the targets) and, with --json, writes every figure with the
machine's details. A missed target is reported, not an error: the exit status is 0 unless a
measurement could not be made (then 1; 130 on Ctrl-C). Needs root.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rich.console import Console  # noqa: E402
from rich.logging import RichHandler  # noqa: E402
from rich.table import Table  # noqa: E402

import netns  # noqa: E402
from netns import delayline  # noqa: E402
from netns import lab as netlab  # noqa: E402
from netns import loss as netloss  # noqa: E402
from netns.config import LabConfig, fmt_rate, parse_queue  # noqa: E402
from netns.holdtime import HoldTimes, summarize  # noqa: E402
from netns.probe import rtt_probe  # noqa: E402

#: Progress goes to stderr, the table to stdout; both stay wide when not on a terminal.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 130)
out_console = Console(width=None if sys.stdout.isatty() else 150)

MEASUREMENTS = ("rtt-accuracy", "throughput", "unshaped", "loss-accuracy", "reorder")
LAB_NAMES = {"rtt-accuracy": "bp1", "throughput": "bp2", "unshaped": "bp3", "loss-accuracy": "bp4",
             "reorder": "bp5"}

ONE_WAY = 0.020  # s, each direction
MBIT50 = 50_000_000
GBIT1 = 1_000_000_000
OMIT_S = 2  # iperf3 -O: slow start is not counted
IPERF_PORT = 5201
IDLE_PROBE_HZ = 200
UDP_PAYLOAD = 1472  # + 8 UDP + 20 IP = 1500 = MTU: every datagram a full-size frame
LOSS = 0.01
LOSS_TOLERANCE = 0.001

# Targets
RTT_MEDIAN_MS = 0.2
RTT_P99_MS = 0.5
GOODPUT_FRACTION = 0.92
DELAY_CPU_1G = 0.25
UNSHAPED_BPS = 4e9

CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Row:
    """One line of the table: a figure, how it compares with its target (ok None: no target)."""

    measurement: str
    condition: str
    figure: str
    value: float | int | None
    unit: str = ""
    target: str = ""
    ok: bool | None = None

    def text(self) -> str:
        v = self.value
        if v is None:
            return "—"
        if isinstance(v, int):
            return f"{v:,}{self.unit}"
        if self.unit in ("", " (fraction)"):
            return f"{v:.3f}"
        if self.unit == "%":
            return f"{v:.3f}%"
        if self.unit == " bit/s":
            return fmt_rate(v)
        return f"{v:.3f}{self.unit}"


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.details: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        mark = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: ""}[row.ok]
        console.log(f"  {row.condition}: {row.figure} = {row.text()} {row.target} {mark}")

    def at_most(self, m: str, cond: str, fig: str, value, limit: float, unit: str = "") -> None:
        ok = None if value is None else value <= limit
        self.add(Row(m, cond, fig, value, unit, f"≤ {limit:g}{unit}", False if ok is None else ok))

    def at_least(self, m: str, cond: str, fig: str, value, limit: float, unit: str = "") -> None:
        ok = None if value is None else value >= limit
        if unit == " bit/s":
            target = f"≥ {fmt_rate(limit)}"
        elif isinstance(value, int):
            target = f"≥ {limit:,}{unit}"
        else:
            target = f"≥ {limit:g}{unit}"
        self.add(Row(m, cond, fig, value, unit, target, False if ok is None else ok))

    def below(self, m: str, cond: str, fig: str, value, limit: float, unit: str = "") -> None:
        ok = None if value is None else value < limit
        self.add(Row(m, cond, fig, value, unit, f"< {limit:g}{unit}", False if ok is None else ok))

    def info(self, m: str, cond: str, fig: str, value, unit: str = "") -> None:
        self.add(Row(m, cond, fig, value, unit))

    def table(self) -> Table:
        t = Table(title="usertcp lab path: acceptance figures")
        for col in ("measurement", "condition", "figure", "value", "target", "result"):
            t.add_column(col, justify="right" if col == "value" else "left")
        for r in self.rows:
            verdict = {True: "[green]PASS[/]", False: "[bold red]FAIL[/]", None: ""}[r.ok]
            t.add_row(r.measurement, r.condition, r.figure, r.text(), r.target, verdict)
        for m, err in self.errors.items():
            t.add_row(m, "", "[bold red]error[/]", "", "", err.splitlines()[-1][:80])
        return t


# --------------------------------------------------------------------------------------------
# Child processes: every one is registered so it can be killed on any exit


_children: set[subprocess.Popen] = set()


def spawn(argv: list[str], **kw: Any) -> subprocess.Popen:
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("stdout", subprocess.DEVNULL)
    kw.setdefault("stderr", subprocess.DEVNULL)
    # Own session: a Ctrl-C reaches only this script, which then stops the children itself
    # (an iperf3 dying first would otherwise look like a failed measurement).
    proc = subprocess.Popen(argv, start_new_session=True, **kw)
    _children.add(proc)
    return proc


def reap(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Let `proc` exit within `timeout` s, else SIGTERM, then SIGKILL (by its own pid)."""
    try:
        if proc.poll() is None:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=2)
    finally:
        _children.discard(proc)


def kill_children() -> None:
    for proc in list(_children):
        with contextlib.suppress(Exception):
            reap(proc, timeout=0.1)


def run(argv: list[str], timeout: float = 10.0) -> str:
    """A short command's stdout; raises on failure or timeout."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


# --------------------------------------------------------------------------------------------
# CPU accounting


def proc_cpu(pid: int | None) -> tuple[float, float, float] | None:
    """(user, system, on-CPU) seconds of process `pid`'s main thread, or None if it is gone.

    user and system come from /proc/PID/stat, which this kernel fills by sampling at each tick
    (CONFIG_TICK_CPU_ACCOUNTING, HZ 250): a process that wakes on its own timers can be
    over- or under-sampled, so they are shown only as a split. The total is the scheduler's
    own runtime from /proc/PID/schedstat, in nanoseconds, which is exact.
    """
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
        with open(f"/proc/{pid}/schedstat") as f:
            runtime_ns = int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2:].split()  # fields from 3 (state) on
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK, runtime_ns / 1e9  # utime, stime


def machine_cpu() -> list[int]:
    """/proc/stat's aggregate line: user nice system idle iowait irq softirq steal (jiffies)."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:9]]


class CpuMeter:
    """CPU of one process (the delay line) and of the whole machine between start() and stop()."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._p0 = proc_cpu(self.pid)
        self._m0 = machine_cpu()

    def stop(self) -> dict[str, Any]:
        if self._t0 is None:
            return {}
        wall = time.monotonic() - self._t0
        p1, m1 = proc_cpu(self.pid), machine_cpu()
        dm = [b - a for a, b in zip(self._m0, m1)]
        total = sum(dm) or 1
        out: dict[str, Any] = {
            "wall_s": round(wall, 3),
            "machine_busy": (total - dm[3] - dm[4]) / total,  # fraction of all cores
            "machine_softirq": dm[6] / total,
            "machine_steal": dm[7] / total,
            "delay_user": None, "delay_sys": None, "delay_total": None,
        }
        if self._p0 is not None and p1 is not None and wall > 0:
            user, sys_, run = ((b - a) / wall for a, b in zip(self._p0, p1))
            out.update(delay_user=user, delay_sys=sys_, delay_total=run)  # of one core
        return out


# --------------------------------------------------------------------------------------------
# Labs


def _down_uninterrupted(name: str) -> list[str]:
    """netns.lab.down(name) with SIGINT/SIGTERM held off, so a second Ctrl-C cannot leave
    half a lab behind."""
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        return netlab.down(name)
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@contextlib.contextmanager
def lab_up(name: str, **settings: Any) -> Iterator[netlab.Lab]:
    """A fresh lab `name` with `settings` (LabConfig fields), removed again on any exit."""
    leftovers = _down_uninterrupted(name)
    if leftovers:
        console.log(f"lab {name}: removed leftovers {leftovers}")
    lab = netlab.Lab.from_config(LabConfig(name=name, **settings))
    console.log(f"lab {name}: up — {lab.config.describe()}")
    try:
        t0 = time.monotonic()
        lab.up()
        st = lab.status()
        if not st["up"]:
            raise netns.LabError(f"lab {name} is not up after up(): {json.dumps(st, default=str)}")
        console.log(f"lab {name}: ready in {time.monotonic() - t0:.1f} s")
        yield lab
    finally:
        kill_children()
        _down_uninterrupted(name)
        console.log(f"lab {name}: removed")


def lab_info(lab: netlab.Lab) -> dict[str, Any]:
    """The lab as built: its description and the bottleneck's parameters."""
    bn = lab.bottleneck
    return {"description": lab.config.describe(),
            "bottleneck": None if bn is None else asdict(bn)}


def delay_pid(lab: netlab.Lab) -> int | None:
    d = lab.status()["delay"]
    return d["pid"] if d else None


DELAY_KEYS = ("sender", "direction", "delay_s", "packets", "bytes", "released", "held",
              "no_timestamp", "err_p01_us", "err_p50_us", "err_p99_us", "late_max_us",
              "early_max_us", "waiting", "queue_dropped", "user_dropped", "reorder",
              "reordered", "reorder_of")


#: A SCHED_FIFO loop of 1 ms sleeps, at the delay line's priority, printing its lateness
#: quantiles in us: the floor under any userspace delay element on this machine right now.
_WAKEUP_PROBE = """
import os, sys, time
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(sys.argv[2])))
late, clock, end = [], time.perf_counter, time.perf_counter() + float(sys.argv[1])
while clock() < end:
    t = clock(); time.sleep(0.001); late.append(clock() - t - 0.001)
late.sort(); n = len(late)
print(n, *(late[min(n - 1, int(q * n))] * 1e6 for q in (0.5, 0.99, 0.999)), late[-1] * 1e6)
"""


def platform_wakeup(seconds: float) -> dict[str, Any]:
    """How late a SCHED_FIFO process wakes from a 1 ms sleep on this machine, now (p50, p99,
    p99.9, max in us). Run while a lab's delay line is up, so the same PM QoS request holds.
    When hold-time p99 misses its target, compare: if this p99 is as large, the machine (on a
    VM, the hypervisor) and not the delay line is what was late."""
    done = subprocess.run(
        [sys.executable, "-c", _WAKEUP_PROBE, f"{seconds:g}", str(delayline.REALTIME_PRIORITY)],
        capture_output=True, text=True, timeout=seconds + 30,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-300:]}
    n, p50, p99, p999, worst = done.stdout.split()
    return {"samples": int(n), "p50_us": float(p50), "p99_us": float(p99),
            "p999_us": float(p999), "max_us": float(worst)}


def delay_report(lab: netlab.Lab) -> dict[str, Any] | None:
    """The delay line's report (cumulative since lab up), after its next stats write."""
    time.sleep(0.6)  # STATS_INTERVAL is 0.5 s: let it write what the run just did
    d = lab.status()["delay"]
    if d is None:
        return None
    return {
        "pid": d["pid"], "alive": d["alive"], "stalled": d["stalled"],
        "queues": {num: {k: q.get(k) for k in DELAY_KEYS} for num, q in d["queues"].items()},
    }


def worst_delay_error(report: dict[str, Any] | None, key: str) -> float | None:
    """The largest `key` (err_p50_us / err_p99_us) over the delay line's queues, in ms."""
    if not report:
        return None
    values = [q[key] for q in report["queues"].values() if q.get(key) is not None]
    return max(values, key=abs) / 1e3 if values else None


def delay_drops(report: dict[str, Any] | None) -> int | None:
    if not report:
        return None
    return sum((q.get("queue_dropped") or 0) + (q.get("user_dropped") or 0)
               for q in report["queues"].values())


def bottleneck_drops(lab: netlab.Lab) -> int | None:
    b = lab.status()["bottleneck"]
    return b.get("drops") if b else None


# --------------------------------------------------------------------------------------------
# iperf3 in a lab


def _wait_listening(ns: str, port: int, server: subprocess.Popen, stderr: Any,
                    timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            stderr.seek(0)
            raise RuntimeError(f"iperf3 server in {ns} exited ({server.returncode}) before "
                               f"listening: {stderr.read().decode(errors='replace').strip()}")
        out = run(netns.command(ns, ["ss", "-Hltn", f"sport = :{port}"]), timeout=5)
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"iperf3 server in {ns} is not listening on port {port} after {timeout:g} s")


def iperf(
    lab: netlab.Lab,
    label: str,
    *,
    cc: str = "cubic",
    duration: float = 20,
    omit: float = OMIT_S,
    udp_packets: int | None = None,
    udp_rate: str = "0",
    tick: Callable[[], None] | None = None,
    on_measure: Callable[[], None] | None = None,
    progress: Callable[[], str] | None = None,
) -> dict[str, Any]:
    """Run one iperf3 test from the lab's sender to its receiver; measure CPU meanwhile.

    TCP: `cc` for `duration` s after `omit` s of warm-up. UDP (udp_packets set): that many
    full-size datagrams at `udp_rate` (iperf3 -b; "0" is as fast as iperf3 can), with the
    receiver's own report (out-of-order datagrams) under iperf["server_output_json"]. CPU (delay line and machine) is
    measured from the end of the warm-up to the end of the test; `on_measure` is called then
    too. `tick` is called in the wait loop (it should block briefly, ~0.1 s); `progress` adds
    text to the status line. Returns iperf3's JSON under "iperf" plus "cpu".
    """
    ns_rx, ns_tx = lab.ns_receiver, lab.ns_sender
    with tempfile.TemporaryFile() as s_err, tempfile.TemporaryFile() as out, \
            tempfile.TemporaryFile() as c_err:
        server = spawn(netns.command(ns_rx, ["iperf3", "-s", "-1", "-J", "-B", lab.receiver_ip,
                                              "-p", str(IPERF_PORT)]), stderr=s_err)
        client = None
        try:
            _wait_listening(ns_rx, IPERF_PORT, server, s_err)
            argv = ["iperf3", "-c", lab.receiver_ip, "-p", str(IPERF_PORT), "-J",
                    "--connect-timeout", "5000"]
            if udp_packets is not None:
                omit = 0
                argv += ["-u", "-b", udp_rate, "-l", str(UDP_PAYLOAD), "-k", str(udp_packets),
                         "--get-server-output"]
                limit = max(120.0, udp_packets / 5_000)  # even 5 kpps finishes in time
            else:
                argv += ["-C", cc, "-t", f"{duration:g}", "-O", f"{omit:g}"]
                limit = duration + omit + 30
            meter = CpuMeter(delay_pid(lab))
            client = spawn(netns.command(ns_tx, argv), stdout=out, stderr=c_err)
            t0 = time.monotonic()
            measuring = False
            with console.status(label) as status:
                while client.poll() is None:
                    elapsed = time.monotonic() - t0
                    if not measuring and elapsed >= omit:
                        meter.start()
                        if on_measure:
                            on_measure()
                        measuring = True
                    if elapsed > limit:
                        raise TimeoutError(f"{label}: iperf3 still running after {limit:g} s")
                    total = "" if udp_packets is not None else f"/{duration + omit:g}"
                    extra = f" — {progress()}" if progress else ""
                    status.update(f"{label}: {elapsed:.0f}{total} s{extra}")
                    if tick:
                        tick()
                    else:
                        time.sleep(0.2)
            cpu = meter.stop() if measuring else {}
            reap(client)
            out.seek(0)
            text = out.read().decode(errors="replace")
            try:
                result = json.loads(text)
            except json.JSONDecodeError:
                c_err.seek(0)
                raise RuntimeError(f"{label}: iperf3 gave no JSON (exit {client.returncode}): "
                                   f"{c_err.read().decode(errors='replace').strip()[:500]}") from None
            if "error" in result or client.returncode != 0:
                raise RuntimeError(f"{label}: iperf3 failed (exit {client.returncode}): "
                                   f"{result.get('error')}")
            return {"iperf": result, "cpu": cpu}
        finally:
            if client is not None:
                reap(client, timeout=0)
            reap(server, timeout=5)


def tcp_figures(result: dict[str, Any]) -> dict[str, Any]:
    """Goodput, retransmits and RTT from an iperf3 TCP JSON result."""
    end = result["iperf"]["end"]
    sender = end["streams"][0]["sender"] if end.get("streams") else {}
    us = lambda k: sender[k] / 1e3 if k in sender else None  # noqa: E731
    return {
        "goodput_bps": end["sum_received"]["bits_per_second"],
        "bytes_received": end["sum_received"]["bytes"],
        "retransmits": end["sum_sent"].get("retransmits"),
        "mean_rtt_ms": us("mean_rtt"), "min_rtt_ms": us("min_rtt"), "max_rtt_ms": us("max_rtt"),
        "cc": end.get("sender_tcp_congestion"),
        "receiver_cc": end.get("receiver_tcp_congestion"),
    }


def cpu_rows(report: Report, m: str, cond: str, cpu: dict[str, Any], target: float | None) -> None:
    report.info(m, cond, "delay line CPU user (cores)", cpu.get("delay_user"))
    report.info(m, cond, "delay line CPU sys (cores)", cpu.get("delay_sys"))
    if target is None:
        report.info(m, cond, "delay line CPU total (cores)", cpu.get("delay_total"))
    else:
        report.below(m, cond, "delay line CPU total (cores)", cpu.get("delay_total"), target)
    report.info(m, cond, "machine CPU busy (all cores)", cpu.get("machine_busy"))
    report.info(m, cond, "machine CPU steal (all cores)", cpu.get("machine_steal"))


# --------------------------------------------------------------------------------------------
# 1. rtt-accuracy


def measure_rtt_accuracy(args: argparse.Namespace, report: Report) -> None:
    m = "rtt-accuracy"
    name = LAB_NAMES[m]
    names = netlab.Names(name)
    pairs = [(names.router_sender_if(0), names.router_receiver_if),
             (names.router_receiver_if, names.router_sender_if(0))]
    duration = 5 if args.quick else 20
    conditions = [("idle", MBIT50, False), ("cubic 50 Mbit/s", MBIT50, True),
                  ("cubic 1 Gbit/s", GBIT1, True)]
    details: dict[str, Any] = {}
    report.details[m] = details
    _down_uninterrupted(name)  # before the tracepoints go on: no strays of an old lab
    console.log(f"{m}: compiling the hold-time instrument (bcc) …")
    with HoldTimes(pairs) as h:
        console.log(f"{m}: compiled in {h.compile_s:.1f} s")
        for cond, rate, loaded in conditions:
            with lab_up(name, rate=rate, delay=ONE_WAY, queue=parse_queue("1bdp")) as lab:
                # Warm up: ARP on both router legs, so no sample includes a neighbour lookup.
                rtt_probe(lab.ns_sender, lab.receiver_ip, count=5, interval=0.01, timeout=1.0)
                h.poll()
                h.clear()
                before = h.stats()
                d: dict[str, Any] = {"lab": lab_info(lab)}
                if loaded:
                    res = iperf(lab, f"{m} {cond}", cc="cubic", duration=duration,
                                tick=lambda: h.poll(100), on_measure=h.clear,
                                progress=lambda: f"{sum(len(h.samples(i)) for i in (0, 1)):,} samples")
                    d["tcp"] = tcp_figures(res)
                    cpu = res["cpu"]
                else:
                    meter = CpuMeter(delay_pid(lab))
                    meter.start()
                    count = int(IDLE_PROBE_HZ * duration)
                    with console.status(f"{m} idle: {count} ICMP probes at {IDLE_PROBE_HZ} Hz"):
                        probe = rtt_probe(lab.ns_sender, lab.receiver_ip, count=count,
                                          interval=1 / IDLE_PROBE_HZ, timeout=1.0)
                    cpu = meter.stop()
                    with console.status(f"{m} idle: this machine's own timer wake-up latency"):
                        d["platform_wakeup"] = platform_wakeup(min(duration, 5.0))
                    d["probe"] = {"sent": probe.sent, "received": probe.received,
                                  "min_ms": probe.min and probe.min * 1e3,
                                  "median_ms": probe.median and probe.median * 1e3,
                                  "p99_ms": probe.p99 and probe.p99 * 1e3,
                                  "max_ms": probe.max and probe.max * 1e3,
                                  "tx_kernel_timestamps": probe.tx_kernel}
                time.sleep(0.3)
                h.poll(100)
                after = h.stats()
                d["holdtime_counters"] = {k: after[k] - before[k] for k in after}
                fwd, rev = h.samples(0), h.samples(1)
                d["hold_forward"] = summarize(fwd, ONE_WAY)
                d["hold_reverse"] = summarize(rev, ONE_WAY)
                both = summarize(fwd + rev, ONE_WAY)
                d["hold_both"] = both
                d["cpu"] = cpu
                d["delay_line"] = delay_report(lab)
            details[cond] = d

            report.info(m, cond, "hold samples (fwd+rev)", both["count"])
            if d["holdtime_counters"]["lost"]:
                report.info(m, cond, "hold samples LOST (ring full)", d["holdtime_counters"]["lost"])
            report.at_most(m, cond, "median |hold − 20 ms|", both["abs_median_ms"], RTT_MEDIAN_MS, " ms")
            report.at_most(m, cond, "p99 |hold − 20 ms|", both["abs_p99_ms"], RTT_P99_MS, " ms")
            report.info(m, cond, "max |hold − 20 ms|", both["abs_max_ms"], " ms")
            report.info(m, cond, "median (hold − 20 ms)", both["median_ms"], " ms")
            report.info(m, cond, "p99 (hold − 20 ms)", both["p99_ms"], " ms")
            report.info(m, cond, "delay line err p50 (own, worst queue)",
                        worst_delay_error(d["delay_line"], "err_p50_us"), " ms")
            report.info(m, cond, "delay line err p99 (own, worst queue)",
                        worst_delay_error(d["delay_line"], "err_p99_us"), " ms")
            report.info(m, cond, "delay line drops (queue+user)", delay_drops(d["delay_line"]))
            cpu_rows(report, m, cond, cpu, None)
            if "platform_wakeup" in d:
                w = d["platform_wakeup"]
                report.info(m, cond, "machine's own wake-up lateness p50 (1 ms sleeps)", w.get("p50_us"), " us")
                report.info(m, cond, "machine's own wake-up lateness p99 (1 ms sleeps)", w.get("p99_us"), " us")
            if "probe" in d:
                p = d["probe"]
                report.info(m, cond, "probe RTT min", p["min_ms"], " ms")
                report.info(m, cond, "probe RTT median", p["median_ms"], " ms")
                report.info(m, cond, "probes lost", p["sent"] - p["received"])
            if "tcp" in d:
                report.info(m, cond, "goodput", d["tcp"]["goodput_bps"], " bit/s")


# --------------------------------------------------------------------------------------------
# 2. throughput and 3. unshaped


def _tcp_rows(report: Report, m: str, cond: str, rate: int | None, f: dict[str, Any],
              cpu: dict[str, Any], cpu_target: float | None) -> None:
    if rate is not None:
        report.at_least(m, cond, "goodput / rate", f["goodput_bps"] / rate, GOODPUT_FRACTION)
        report.info(m, cond, "goodput", f["goodput_bps"], " bit/s")
    else:
        report.at_least(m, cond, "goodput", f["goodput_bps"], UNSHAPED_BPS, " bit/s")
    report.info(m, cond, "retransmits", f["retransmits"])
    report.info(m, cond, "mean RTT", f["mean_rtt_ms"], " ms")
    cpu_rows(report, m, cond, cpu, cpu_target)


def measure_throughput(args: argparse.Namespace, report: Report) -> None:
    m = "throughput"
    name = LAB_NAMES[m]
    duration = 5 if args.quick else 20
    details: dict[str, Any] = {}
    report.details[m] = details
    for rate in (MBIT50, GBIT1):
        with lab_up(name, rate=rate, delay=ONE_WAY, queue=parse_queue("1bdp")) as lab:
            for cc in ("cubic", "bbr"):
                cond = f"{cc} {fmt_rate(rate)}"
                drops0 = bottleneck_drops(lab)
                res = iperf(lab, f"{m} {cond}", cc=cc, duration=duration)
                f = tcp_figures(res)
                drops1 = bottleneck_drops(lab)
                d = {"lab": lab_info(lab), "tcp": f, "cpu": res["cpu"],
                     "bottleneck_drops": None if drops0 is None or drops1 is None else drops1 - drops0,
                     "delay_line": delay_report(lab)}
                details[cond] = d
                if f["cc"] and f["cc"] != cc:
                    console.log(f"[yellow]{cond}: iperf3 reports congestion control {f['cc']!r}[/]")
                _tcp_rows(report, m, cond, rate, f, res["cpu"],
                          DELAY_CPU_1G if rate == GBIT1 else None)
                report.info(m, cond, "bottleneck (TBF) drops", d["bottleneck_drops"])
                report.info(m, cond, "delay line drops (queue+user)", delay_drops(d["delay_line"]))
                time.sleep(1.0)  # let the queue drain before the next flow


def measure_unshaped(args: argparse.Namespace, report: Report) -> None:
    m = "unshaped"
    name = LAB_NAMES[m]
    duration = 5 if args.quick else 20
    cond = "cubic, no rate, 40 ms RTT"
    with lab_up(name, delay=ONE_WAY) as lab:
        res = iperf(lab, f"{m} {cond}", cc="cubic", duration=duration)
        f = tcp_figures(res)
        d = {"lab": lab_info(lab), "tcp": f, "cpu": res["cpu"], "delay_line": delay_report(lab)}
    report.details[m] = {cond: d}
    _tcp_rows(report, m, cond, None, f, res["cpu"], None)
    report.info(m, cond, "delay line err p99 (own, worst queue)",
                worst_delay_error(d["delay_line"], "err_p99_us"), " ms")
    report.info(m, cond, "delay line drops (queue+user)", delay_drops(d["delay_line"]))


# --------------------------------------------------------------------------------------------
# 4. loss-accuracy


def measure_loss_accuracy(args: argparse.Namespace, report: Report) -> None:
    m = "loss-accuracy"
    name = LAB_NAMES[m]
    target = 200_000 if args.quick else 1_000_000
    cond = f"1% forward, UDP {UDP_PAYLOAD} B, no delay, no rate"
    with lab_up(name, loss=LOSS) as lab:
        ns, ifname = lab.ns_receiver, lab.receiver_if
        info = lab_info(lab)

        def now() -> dict[str, int]:
            c = netloss.counters(ns, ifname)
            if c is None:
                raise RuntimeError(f"no loss program on {ifname} in {ns}")
            return c

        base = now()

        def delta() -> dict[str, int]:
            c = now()
            return {k: c[k] - base[k] for k in netloss.STATS}

        runs = []
        last_poll = [0.0, delta()]

        def progress() -> str:  # counters are read through bpffs pins: once a second is plenty
            if time.monotonic() - last_poll[0] > 1.0:
                last_poll[:] = [time.monotonic(), delta()]
            return f"{last_poll[1]['full_packets']:,}/{target:,} full-size packets"

        for attempt in range(3):  # top up if packets were lost before the receiver
            missing = target - delta()["full_packets"]
            if missing <= 0:
                break
            send = int(missing * 1.02) + 1000
            res = iperf(lab, f"{m} round {attempt + 1}: {send:,} datagrams", udp_packets=send,
                        progress=progress)
            s = res["iperf"]["end"].get("sum", {})
            runs.append({"sent": send, "cpu": res["cpu"],
                         "iperf_packets": s.get("packets"), "iperf_lost": s.get("lost_packets"),
                         "iperf_bps": s.get("bits_per_second")})
        c = delta()
        c["probability"] = now()["probability"]
    fraction = c["full_dropped"] / c["full_packets"] if c["full_packets"] else None
    report.details[m] = {cond: {"lab": info, "counters": c, "fraction": fraction, "runs": runs,
                                "target_packets": target}}
    report.at_least(m, cond, "full-size packets seen", c["full_packets"], target)
    report.info(m, cond, "full-size packets dropped", c["full_dropped"])
    report.info(m, cond, "drop fraction (all IP packets)",
                None if not c["packets"] else c["dropped"] / c["packets"] * 100, "%")
    within = fraction is not None and abs(fraction - LOSS) <= LOSS_TOLERANCE
    report.add(Row(m, cond, "drop fraction (full-size)", None if fraction is None else fraction * 100,
                   "%", f"{LOSS * 100:g}% ± {LOSS_TOLERANCE * 100:g}%", within))


# --------------------------------------------------------------------------------------------
# 5. reorder


REORDER = 0.01
REORDER_EXTRA = 0.001
OOO_SHARE = 0.97


def measure_reorder(args: argparse.Namespace, report: Report) -> None:
    """1% of forward packets held back 1 ms, 50 Mbit/s, 20 ms each way: the share the delay
    line held back against 1% (5-sigma binomial bounds), the datagrams the receiver saw out of
    order (iperf3's own count: at 40 Mbit/s packets are 0.3 ms apart, so each held one is
    overtaken and counted once, unless the sender paused for the whole extra hold), the
    release error of both queues, the CPU; then
    kernel cubic through the same lab, for the goodput and retransmits reordering costs it."""
    m = "reorder"
    name = LAB_NAMES[m]
    packets = 60_000 if args.quick else 300_000
    duration = 5 if args.quick else 20
    cond = "1% held 1 ms, 50 Mbit/s, 40 ms RTT"
    with lab_up(name, rate=MBIT50, delay=ONE_WAY, queue=parse_queue("1bdp"), reorder=REORDER,
                reorder_delay=REORDER_EXTRA) as lab:
        info = lab_info(lab)
        before = delay_report(lab)
        res = iperf(lab, f"{m} UDP: {packets:,} datagrams at 40 Mbit/s", udp_packets=packets,
                    udp_rate="40M")
        time.sleep(2 * delayline.STATS_INTERVAL + REORDER_EXTRA + ONE_WAY)
        after = delay_report(lab)
        server = res["iperf"].get("server_output_json", {}).get("end", {})
        counts = [st.get("udp", {}).get("out_of_order") for st in server.get("streams", [])]
        out_of_order = None if not counts or None in counts else sum(counts)
        tcp = iperf(lab, f"{m} cubic", cc="cubic", duration=duration)
        tcp_f = tcp_figures(tcp)
        final = delay_report(lab)
    queues = {q["direction"]: q for q in (after or {}).get("queues", {}).values()}
    start = {q["direction"]: q for q in (before or {}).get("queues", {}).values()}
    fwd, back = queues.get("forward", {}), queues.get("forward held back", {})
    n = fwd.get("packets", 0) - start.get("forward", {}).get("packets", 0)
    held = fwd.get("reordered", 0) - start.get("forward", {}).get("reordered", 0)
    share = held / n if n else None
    sigma = (REORDER * (1 - REORDER) / n) ** 0.5 if n else 0.0
    report.details[m] = {cond: {"lab": info, "udp_cpu": res["cpu"], "forward_packets": n,
                                "held_back": held, "share": share, "receiver_out_of_order": out_of_order,
                                "delay_line": final, "tcp": tcp_f, "tcp_cpu": tcp["cpu"]}}
    report.info(m, cond, "UDP packets through the forward queue", n)
    report.add(Row(m, cond, "share held back", None if share is None else share * 100, "%",
                   f"{REORDER * 100:g}% ± {5 * sigma * 100:.2f}% (5σ)",
                   share is not None and abs(share - REORDER) <= 5 * sigma))
    # Each held datagram is overtaken unless iperf3 sent nothing for the whole extra hold
    # (it paces in bursts, and a VM stalls it now and then): a few per cent may arrive in order.
    # More out-of-order datagrams than held ones would mean reordering the lab did not ask for.
    report.add(Row(m, cond, "receiver's out-of-order datagrams", out_of_order, "",
                   f"{OOO_SHARE:.0%}–100% of held back ({held})",
                   out_of_order is not None and OOO_SHARE * held <= out_of_order <= held))
    for label, q in (("forward", fwd), ("held back", back)):
        report.info(m, cond, f"delay line err p99 ({label})",
                    None if q.get("err_p99_us") is None else q["err_p99_us"] / 1e3, " ms")
    cpu_rows(report, m, cond, res["cpu"], None)
    # No target for TCP here: how much reordering costs a sender is what the lab is for.
    tcond = "kernel cubic, same lab"
    report.info(m, tcond, "goodput / rate", tcp_f["goodput_bps"] / MBIT50)
    report.info(m, tcond, "retransmits", tcp_f["retransmits"])
    report.info(m, tcond, "mean RTT", tcp_f["mean_rtt_ms"], " ms")
    report.info(m, tcond, "delay line CPU total (cores)", tcp["cpu"].get("delay_total"))


# --------------------------------------------------------------------------------------------
# Main


def machine_info() -> dict[str, Any]:
    def read(path: str) -> str | None:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return None

    try:
        iperf_version = run(["iperf3", "--version"]).splitlines()[0]
    except Exception as e:  # noqa: BLE001 - informational
        iperf_version = f"unknown ({e})"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": os.uname().nodename,
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
        "cpu_model": next((line.split(":", 1)[1].strip() for line in
                           (read("/proc/cpuinfo") or "").splitlines()
                           if line.startswith("model name")), None),
        "loadavg_start": read("/proc/loadavg"),
        "python": sys.version.split()[0],
        "iperf3": iperf_version,
        "root_default_cc": read("/proc/sys/net/ipv4/tcp_congestion_control"),
    }


MEASURE = {
    "rtt-accuracy": measure_rtt_accuracy,
    "throughput": measure_throughput,
    "unshaped": measure_unshaped,
    "loss-accuracy": measure_loss_accuracy,
    "reorder": measure_reorder,
}


def _sigterm(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--quick", action="store_true",
                   help="5 s flows and 200,000 loss packets instead of 20 s and 1,000,000")
    p.add_argument("--json", metavar="OUT", type=Path, help="write every figure to this file")
    p.add_argument("--only", nargs="+", choices=MEASUREMENTS, metavar="NAME",
                   help=f"run only these measurements ({', '.join(MEASUREMENTS)})")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        console.print("[red]needs root: namespaces, NFQUEUE and BPF[/]")
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    signal.signal(signal.SIGTERM, _sigterm)
    # Also when started with SIGINT ignored (e.g. `cmd &` from a script): Ctrl-C must clean up.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    report = Report()
    info = machine_info()
    console.log(f"{info['kernel']}, {info['cpus']} CPUs, load {info['loadavg_start']}"
                f"{' (quick)' if args.quick else ''}")
    interrupted = False
    t_start = time.monotonic()
    try:
        for name in args.only or MEASUREMENTS:
            console.rule(name)
            t0 = time.monotonic()
            try:
                MEASURE[name](args, report)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - report it, go on with the next one
                report.errors[name] = "".join(traceback.format_exception(e))
                console.log(f"[bold red]{name} failed:[/] {e}")
                console.print_exception(show_locals=False)
            console.log(f"{name}: {time.monotonic() - t0:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: labs removed, partial results below[/]")
    finally:
        kill_children()

    out_console.print(report.table())
    info["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    info["duration_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        doc = {
            "machine": info,
            "args": {"quick": args.quick, "only": args.only},
            "interrupted": interrupted,
            "rows": [asdict(r) for r in report.rows],
            "details": report.details,
            "errors": report.errors,
        }
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        console.log(f"wrote {args.json}")
    failed = [r for r in report.rows if r.ok is False]
    console.log(f"{len(failed)} target(s) missed, {len(report.errors)} error(s)"
                f" — numbers from a possibly busy shared machine ({info['cpus']} CPUs)")
    if interrupted:
        return 130
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
