"""The lab's delay line: holds forwarded packets in the router's kernel for a constant delay.

This kernel has no sch_netem (DESIGN.md), so propagation delay comes from the NFQUEUE target:
iptables rules in the router's mangle FORWARD chain send each direction of each sender's path to
its own queue number, and this process releases the packets after the delay with batch verdicts.
Packets never leave the kernel: we copy 40 header bytes per packet and keep (release time, id);
a constant delay keeps every queue FIFO, so one verdict message per wake-up releases all packets
that are due (nfqueue.batch_verdict). GSO bundles stay whole (the queue's GSO flag), which is
what keeps the per-packet Python work (one recv, one parse) under the budget at 1 Gbit/s.

A packet's arrival time is the kernel's receive timestamp of the skb (NFQA_TIMESTAMP, taken
when the router's interface received it, CLOCK_REALTIME), not the time this process read the
notification: so the hold time does not grow with our own wake-up latency. The kernel stamps
skbs only while some socket asks for timestamps (net_enable_timestamp), so we keep one UDP socket
with SO_TIMESTAMPNS open for our lifetime. The forwarding path clears skb->tstamp only after the
FORWARD hook (ip_forward_finish), so the stamp is still there when the packet is queued.

Timing on a VM: the process runs under SCHED_FIFO and, for its lifetime, holds a PM QoS request
that keeps idle CPUs polling instead of halting (/dev/cpu_dma_latency = 0, see _hold_cpu_awake):
a halted vCPU made wake-ups late by milliseconds at p99. It wakes for releases, not for each
arrival (see DelayLine.run).

If this process dies, its queues lose their listener and the kernel drops what arrives (the rules
have no --queue-bypass): forwarding stops, which is right — an experiment must never run silently
without its delay. `netns.lab` starts it, watches it, and reports it in `lab status`.

Run as: python -m netns.delayline --netns NS --state-dir DIR --queue NUM:DELAY_S [...] [--ready-fd FD]
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import errno
import gc
import itertools
import json
import math
import os
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .ns import LabError, _open_target, _setns, command, path
from .nfqueue import Packet, QueueSocket, batch_verdict, kernel_counters, parse, requeue, verdict

#: How often the stats file is rewritten and the namespace checked.
STATS_INTERVAL = 0.5
#: Release-error histogram: 10 us buckets from -1 ms (early) to +20 ms (late); errors beyond
#: are clipped into the end buckets (late_max/early_max keep the extremes). Small, because the
#: stats are computed inside the loop: a 10,000-bucket version cost ~5 ms per report, which
#: showed up as late releases twice a second.
BUCKET_US = 10
EARLIEST_US = -1000
BUCKETS = 2_100
LATEST_US = EARLIEST_US + BUCKETS * BUCKET_US
#: A report is put off while a release is due this soon (at most by one interval).
STATS_SLACK = 0.002
#: Read at most this many notifications before looking at the clock again, so a flood of
#: arrivals cannot delay releases that are due.
READ_BURST = 256
#: select() wakes up late by the timer and scheduler latency: tens of microseconds on bare
#: metal, 60-120 us in this VM (measured: p50 59 us, p90 122 us for a 2 ms sleep). We aim early
#: by a running estimate of that oversleep so the release error centres on zero instead of on
#: the platform's wake-up latency; samples are clipped so one long stall does not skew it.
OVERSLEEP_INIT = 50e-6
OVERSLEEP_CLIP = 300e-6
OVERSLEEP_GAIN = 1 / 16

PR_SET_TIMERSLACK = 29
#: The PM QoS device for the CPU wake-up latency limit (Documentation/power/pm_qos_interface.rst).
CPU_DMA_LATENCY = "/dev/cpu_dma_latency"
#: asm-generic/socket.h (SO_TIMESTAMPNS_OLD); Python's socket module does not export it.
SO_TIMESTAMPNS = 35


#: Reorder queues: the packets a queue holds back are moved (NF_QUEUE verdict) to queue
#: REORDER_QUEUE_BASE + its number, which holds them for the extra time. The lab's own queues
#: are 0..127 (two per sender), so the two ranges cannot meet.
REORDER_QUEUE_BASE = 32768


def reorder_queue(num: int) -> int:
    """The queue number that holds back the reordered packets of queue `num`."""
    return REORDER_QUEUE_BASE + num


@dataclass(frozen=True)
class Hold:
    """What one queue does: hold for `delay`; with `reorder` > 0, hold that random fraction of
    its packets `reorder_delay` longer, so that packets behind them overtake them."""

    num: int
    delay: float
    reorder: float = 0.0
    reorder_delay: float = 0.0

    def to_arg(self) -> str:
        text = f"{self.num}:{self.delay!r}"
        return text + (f":{self.reorder!r}:{self.reorder_delay!r}" if self.reorder else "")

    @classmethod
    def from_arg(cls, text: str) -> "Hold":
        parts = text.split(":")
        if len(parts) not in (2, 4):
            raise ValueError(f"--queue {text!r}: write NUM:DELAY_S or NUM:DELAY_S:REORDER:EXTRA_S")
        num, delay = int(parts[0]), float(parts[1])
        if len(parts) == 2:
            return cls(num, delay)
        return cls(num, delay, float(parts[2]), float(parts[3]))


def format_error_us(value: float | None) -> str:
    """A release-error quantile for people: the histogram's end buckets are open-ended, so a
    quantile that falls in one is shown as a bound ("≥20000"), not as the bucket's centre."""
    if value is None:
        return "-"
    if value >= LATEST_US - BUCKET_US:
        return f"≥{LATEST_US}"
    if value < EARLIEST_US + BUCKET_US:
        return f"≤{EARLIEST_US}"
    return f"{value:g}"


class DelayQueue:
    """One NFQUEUE queue number with its constant delay and its counters."""

    __slots__ = ("num", "delay", "pending", "packets", "bytes", "released", "no_tstamp",
                 "err_hist", "late_max", "early_max", "reorder", "reordered", "reorder_of")

    def __init__(self, num: int, delay: float, reorder: float = 0.0, reorder_of: int | None = None) -> None:
        self.num = num
        self.delay = delay
        self.reorder = reorder  # fraction of arrivals moved to reorder_queue(num)
        self.reordered = 0
        self.reorder_of = reorder_of  # set on a reorder queue: the queue its packets came from
        self.pending: deque[tuple[float, int]] = deque()  # (release time, packet id)
        self.packets = 0
        self.bytes = 0
        self.released = 0
        self.no_tstamp = 0
        self.err_hist = [0] * BUCKETS
        self.late_max = 0.0
        self.early_max = 0.0

    def record(self, err: float) -> None:
        """Count one release `err` seconds after its due time (negative: early)."""
        i = int((err * 1e6 - EARLIEST_US) // BUCKET_US)  # floor, also for early releases
        self.err_hist[0 if i < 0 else BUCKETS - 1 if i >= BUCKETS else i] += 1
        if err > self.late_max:
            self.late_max = err
        elif -err > self.early_max:
            self.early_max = -err

    def percentiles_us(self, qs: tuple[float, ...]) -> list[float | None]:
        """Quantiles of the release error in us (bucket centres, 10 us resolution), one pass."""
        cum = list(itertools.accumulate(self.err_hist))
        total = cum[-1]
        if not total:
            return [None] * len(qs)
        out = []
        for q in qs:
            i = bisect.bisect_left(cum, max(1, math.ceil(q * total)))
            out.append(EARLIEST_US + i * BUCKET_US + BUCKET_US / 2)
        return out

    def stats(self) -> dict:
        p01, p50, p99 = self.percentiles_us((0.01, 0.50, 0.99))
        return {
            "delay_s": self.delay,
            "packets": self.packets,
            "bytes": self.bytes,
            "released": self.released,
            "held": len(self.pending),
            "no_timestamp": self.no_tstamp,
            "err_p01_us": p01,
            "err_p50_us": p50,
            "err_p99_us": p99,
            "late_max_us": round(self.late_max * 1e6, 1),
            "early_max_us": round(self.early_max * 1e6, 1),
            "reorder": self.reorder,
            "reordered": self.reordered,
            "reorder_of": self.reorder_of,
        }


class DelayLine:
    """The event loop: read notifications, release what is due, sleep until the next release."""

    def __init__(self, holds: list[Hold], state_dir: Path, maxlen: int, netns: str | None,
                 seed: int | None = None) -> None:
        self.queues: dict[int, DelayQueue] = {}
        for h in sorted(holds, key=lambda h: h.num):
            self.queues[h.num] = DelayQueue(h.num, h.delay, h.reorder)
            if h.reorder:
                back = reorder_queue(h.num)
                self.queues[back] = DelayQueue(back, h.delay + h.reorder_delay, reorder_of=h.num)
        self.random = random.Random(seed).random
        self.state_dir = state_dir
        self.netns = netns
        self.started = time.time()
        self.running = True
        self._ns_ino = os.stat("/proc/self/ns/net").st_ino
        self.idle_poll = _hold_cpu_awake()
        self._stamper = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._stamper.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # The kernel flips its timestamping static key from a work item (net_enable_timestamp,
        # net/core/dev.c), not inside setsockopt: give it a moment before declaring ready, or
        # the first packets arrive unstamped (they are then timed from when we read them).
        time.sleep(0.05)
        # SIGTERM must end the wait at once (select is retried after a Python signal
        # handler otherwise, so `stop` took up to a stats interval): the wakeup fd is in the set.
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        self.qs = QueueSocket()
        for num, q in self.queues.items():
            # A reordering queue takes MTU-sized packets, not GSO bundles: holding back a 64 KB
            # bundle would reorder ~44 packets as one block, which no real path does. The
            # price is one notification per packet on that queue (see `lab up --reorder`).
            self.qs.bind(num, maxlen, gso=not q.reorder)

    # -- the hot loop ---------------------------------------------------------------------------
    def run(self) -> None:
        """Loop: read waiting arrivals, write a report if one is due, release what is due, sleep.

        Arrivals do not wake us while packets are held: a packet's arrival time is the kernel's
        stamp, not our read time, so it only has to be read before it can be due, i.e. within
        the shortest delay of the last read. Sleeping through arrivals halves the wake-ups at
        1 Gbit/s (one per release instead of one per release and one per arrival). Only while
        nothing is held do we wait on the socket itself. A packet without a kernel stamp is
        timed from when it is read, which can now be up to that shortest delay late; the
        per-queue `no_timestamp` counter shows whether any were.
        """
        buf = bytearray(1 << 16)
        view = memoryview(buf)
        sock = self.qs.sock
        watch_idle = (sock.fileno(), self.wake_r)
        watch_held = (self.wake_r,)
        arrivals: list[Packet] = []
        queues = self.queues
        # With a zero delay somewhere (a direction that only reorders), arrivals must be read
        # as they come: then the socket is always watched.
        min_delay = min(q.delay for q in queues.values())
        next_stats = 0.0
        clock = time.time
        oversleep = early = OVERSLEEP_INIT
        # The loop makes no reference cycles (tuples, ints, Packets): the cyclic collector would
        # only add pauses of its own, at random releases.
        gc.disable()
        while self.running:
            backlog = self._read_arrivals(sock, buf, view, arrivals)
            now = clock()
            if now >= next_stats and (now >= next_stats + STATS_INTERVAL or not self._due_within(now + STATS_SLACK)):
                self._write_stats()
                if not self._namespace_alive():
                    return
                next_stats = now + STATS_INTERVAL
            # Release everything due (FIFO per queue: one batch verdict each). A report that is
            # due but put off is retried on the next pass, which the next release brings: it must
            # not set the wake-up time, or the loop would spin until the report's deadline.
            wake = next_stats if next_stats > now else math.inf
            held = False
            for q in queues.values():
                pending = q.pending
                last = -1
                while pending and pending[0][0] <= now + early:
                    release, last = pending.popleft()
                    q.record(now - release)
                    q.released += 1
                if last >= 0:
                    sock.send(batch_verdict(q.num, last))
                if pending:
                    held = True
                    if pending[0][0] < wake:
                        wake = pending[0][0]
            early = oversleep
            if backlog:
                continue  # more notifications are waiting than one pass reads
            if held and min_delay > 0:
                # Unread arrivals can be due no sooner than the shortest delay after this read.
                wake = min(wake, now + min_delay)
                watch = watch_held
            else:
                watch = watch_idle
                if wake == math.inf:
                    wake = now + STATS_INTERVAL
            timeout = wake - oversleep - clock()
            if timeout <= 0:
                continue
            ready, _, _ = select.select(watch, (), (), timeout)
            if self.wake_r in ready:  # a signal arrived: see `running` now, not at timeout
                os.read(self.wake_r, 64)
            elif not ready:
                over = clock() - (wake - oversleep)
                over = over if over < OVERSLEEP_CLIP else OVERSLEEP_CLIP
                oversleep += (over - oversleep) * OVERSLEEP_GAIN

    def _read_arrivals(self, sock: socket.socket, buf: bytearray, view: memoryview,
                       arrivals: list[Packet]) -> bool:
        """Move up to READ_BURST waiting notifications into the queues' pending lists.

        True when the limit was reached (more may be waiting): the caller then releases what
        is due before reading on, so a flood of arrivals cannot delay releases.
        """
        more = True
        for _ in range(READ_BURST):
            try:
                n = sock.recv_into(buf, 0, socket.MSG_DONTWAIT)
            except BlockingIOError:
                more = False
                break
            except OSError as e:
                # ENOBUFS: notifications were lost; the kernel dropped those packets and
                # counts them ("user dropped"), which the stats report.
                if e.errno == errno.ENOBUFS:
                    continue
                raise
            parse(view, n, arrivals)
        if arrivals:
            t_read = time.time()
            queues = self.queues
            rand = self.random
            for p in arrivals:
                q = queues.get(p.queue)
                if q is None:
                    continue
                q.packets += 1
                q.bytes += p.length
                if q.reorder and rand() < q.reorder:
                    # Hand it to the reorder queue now; it keeps its kernel arrival stamp, and
                    # that queue's delay (ours + the extra) counts from it. Batch verdicts on this
                    # queue skip it: it is no longer in this queue.
                    sock.send(verdict(q.num, p.packet_id, requeue(reorder_queue(q.num))))
                    q.reordered += 1
                    continue
                arrived = p.tstamp
                if arrived is None:
                    q.no_tstamp += 1
                    arrived = t_read
                q.pending.append((arrived + q.delay, p.packet_id))
            arrivals.clear()
        return more

    # -- housekeeping ---------------------------------------------------------------------------
    def _due_within(self, t: float) -> bool:
        return any(q.pending and q.pending[0][0] <= t for q in self.queues.values())

    def _namespace_alive(self) -> bool:
        """False once the lab's router namespace is gone (down() without killing us, or a crash
        of whoever built it): a delay line must not outlive its lab."""
        if self.netns is None:
            return True
        try:
            return os.stat(path(self.netns)).st_ino == self._ns_ino
        except FileNotFoundError:
            return False

    def _write_stats(self) -> None:
        doc = {
            "pid": os.getpid(),
            "started": self.started,
            "heartbeat": time.time(),
            "idle_poll": self.idle_poll.held,
            "idle_poll_error": self.idle_poll.error,
            "queues": {str(n): q.stats() for n, q in self.queues.items()},
            "kernel": {str(n): c for n, c in kernel_counters().items() if n in self.queues},
        }
        tmp = self.state_dir / "delay.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_dir / "delay.json")

    def stop(self, *_: object) -> None:
        self.running = False


# -- control side: used by netns.lab in the process that builds the lab ----------------------

#: Priority of the delay line under SCHED_FIFO. The delay line is the lab's "wire": the
#: endpoints' processes must not be able to starve it on a two-core machine (measured here:
#: normal scheduling let single wake-ups slip by 3-6 ms while other work ran, SCHED_FIFO kept
#: them under 0.2 ms). The kernel's RT throttling still caps it at 95% of a core.
REALTIME_PRIORITY = 10
START_TIMEOUT = 10.0
#: A delay line whose stats file is older than this is reported as stalled.
HEARTBEAT_STALE = 3 * STATS_INTERVAL + 1.0
MODULE = "netns.delayline"


@dataclass(frozen=True)
class Route:
    """One direction of one sender's path through the router, and its delay."""

    queue: int  # NFQUEUE number
    in_if: str  # router interface the packets arrive on
    out_if: str  # router interface they leave by
    delay: float  # seconds
    reorder: float = 0.0  # fraction held back reorder_delay longer
    reorder_delay: float = 0.0  # seconds

    @property
    def hold(self) -> Hold:
        return Hold(self.queue, self.delay, self.reorder, self.reorder_delay)


def install_rules(router_ns: str, routes: list[Route]) -> None:
    """Send each route's forwarded packets to its queue (iptables mangle FORWARD, NFQUEUE target).

    No --queue-bypass: with no listener the kernel drops, so a dead delay line stops the lab
    instead of silently removing the delay. One iptables-restore call adds all rules at once.
    iptables is the one tool here without a maintained Python binding for the nft backend;
    native nft `queue` is absent on this kernel, the xt NFQUEUE target works (DESIGN.md).
    """
    lines = ["*mangle"]
    for r in routes:
        lines.append(f"-A FORWARD -i {r.in_if} -o {r.out_if} -j NFQUEUE --queue-num {r.queue}")
    lines.append("COMMIT\n")
    done = subprocess.run(
        command(router_ns, ["iptables-restore", "-w", "--noflush"]),
        input="\n".join(lines), text=True, capture_output=True,
    )
    if done.returncode != 0:
        raise LabError(
            f"iptables-restore in {router_ns} failed ({done.stderr.strip()}): is the iptables "
            f"package installed (run tools/bootstrap.sh) and the kernel's NFQUEUE target available?"
        )


def start(router_ns: str, state_dir: Path, routes: list[Route], maxlen: int) -> int:
    """Start the delay line for `routes` in `router_ns`; return its pid once its queues are bound.

    It runs in its own session (a Ctrl-C in the shell that built the lab does not kill the
    lab's wire) with stderr in state_dir/delay.log. Raises LabError with the reason if it does
    not come up.
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", MODULE, "--netns", router_ns, "--state-dir", str(state_dir),
            "--maxlen", str(maxlen), "--realtime", str(REALTIME_PRIORITY)]
    for r in routes:
        argv += ["--queue", r.hold.to_arg()]
    rfd, wfd = os.pipe()
    log_path = state_dir / "delay.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv + ["--ready-fd", str(wfd)], pass_fds=(wfd,), stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True,
        )
    os.close(wfd)
    try:
        ready, _, _ = select.select((rfd,), (), (), START_TIMEOUT)
        answer = os.read(rfd, 4096).decode(errors="replace").strip() if ready else ""
    finally:
        os.close(rfd)
    if answer != "ready":
        stop(proc.pid)
        reason = answer.removeprefix("error: ") or f"no answer within {START_TIMEOUT:g} s"
        raise LabError(f"the delay line in {router_ns} did not start: {reason} (log: {log_path})")
    (state_dir / "delay.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def is_delay_line(pid: int, router_ns: str | None = None) -> bool:
    """True if `pid` is a live delay line (of `router_ns`, if given): never signal a stranger
    that reused the pid."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if MODULE.encode() not in argv:
        return False
    if router_ns is None:
        return True
    try:
        return argv[argv.index(b"--netns") + 1] == router_ns.encode()
    except (ValueError, IndexError):
        return False


def processes(router_ns: str) -> list[int]:
    """Pids of every delay line running for `router_ns` (normally one; more after a crash)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and is_delay_line(int(entry), router_ns):
            pids.append(int(entry))
    return pids


def stop(pid: int, timeout: float = 2.0) -> None:
    """SIGTERM, wait, then SIGKILL. On exit the kernel drops the packets it still held."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
                if done:
                    return
            except ChildProcessError:  # not our child: poll for its exit
                if not os.path.exists(f"/proc/{pid}"):
                    return
            time.sleep(0.01)


def status(state_dir: Path, router_ns: str) -> dict | None:
    """The delay line's own report plus liveness: None if this lab has no delay line.

    `alive` is False when the process is gone (then the lab forwards nothing on delayed
    routes) and `stalled` when it lives but has not reported for HEARTBEAT_STALE seconds.
    """
    pid_file = state_dir / "delay.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    try:
        report = json.loads((state_dir / "delay.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        report = {}
    alive = is_delay_line(pid, router_ns)
    age = time.time() - report["heartbeat"] if "heartbeat" in report else None
    return {
        "pid": pid,
        "alive": alive,
        "stalled": alive and (age is None or age > HEARTBEAT_STALE),
        "heartbeat_age_s": age,
        "queues": report.get("queues", {}),
        "kernel": report.get("kernel", {}),
        "idle_poll": report.get("idle_poll"),
        "idle_poll_error": report.get("idle_poll_error"),
        "log": str(state_dir / "delay.log"),
    }


def _enter_netns(name: str) -> None:
    """Move this (still single-threaded) process into network namespace `name` for good."""
    fd = _open_target(name)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@dataclass
class IdlePoll:
    """Whether this process holds the CPUs out of halt, and why not if it does not."""

    held: bool
    error: str | None
    fd: int | None = None


def _hold_cpu_awake(path: str = CPU_DMA_LATENCY) -> IdlePoll:
    """Ask the kernel's PM QoS for a CPU wake-up latency of 0 us for as long as we live.

    Why: on a VM the idle CPU halts and the hypervisor deschedules it; a timer then fires only
    when the host runs the vCPU again. Measured on this 2-vCPU VM (cpuidle driver haltpoll),
    a SCHED_FIFO loop sleeping 1 ms woke late by p50 60 us / p99 1.3 ms / max 10 ms; with this
    request held, p50 30 us / p99 0.1 ms. The delay line's own CPU at 1 Gbit/s fell from 0.23
    to 0.15 of a core (schedstat runtime) because each wake-up no longer starts from a halted,
    cold vCPU. The cost is that idle CPUs poll instead of halting while the lab has a delay
    line; on bare metal it keeps the CPUs out of deep C-states, which is what cyclictest does
    for the same reason. The request is tied to the open file: the kernel drops it when this
    process exits, however it exits, so there is nothing to clean up.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        return IdlePoll(False, f"{path}: {e.strerror}")
    try:
        os.write(fd, struct.pack("=i", 0))
    except OSError as e:
        os.close(fd)
        return IdlePoll(False, f"{path}: {e.strerror}")
    return IdlePoll(True, None, fd)


def _low_timer_slack() -> None:
    """Ask for 1 ns of timer slack: the default 50 us would be added to every sleep."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m netns.delayline", description=__doc__.split("\n")[0])
    p.add_argument("--netns", help="router namespace to run in (default: the current one)")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--queue", type=Hold.from_arg, action="append", required=True,
                   metavar="NUM:DELAY_S[:REORDER:EXTRA_S]")
    p.add_argument("--maxlen", type=int, default=1_000_000, help="packets each queue may hold")
    p.add_argument("--ready-fd", type=int, help="write 'ready' or 'error: ...' here, then close it")
    p.add_argument("--realtime", type=int, default=0, metavar="PRIO",
                   help="run with SCHED_FIFO at this priority (0: normal scheduling)")
    args = p.parse_args(argv)

    def report(msg: str) -> None:
        if args.ready_fd is not None:
            os.write(args.ready_fd, (msg + "\n").encode())
            os.close(args.ready_fd)
            args.ready_fd = None

    try:
        if args.netns:
            _enter_netns(args.netns)
        _low_timer_slack()
        if args.realtime:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
            except OSError as e:  # e.g. in a container without CAP_SYS_NICE: slower, still right
                print(f"delay line: SCHED_FIFO refused ({e}); running with normal priority",
                      file=sys.stderr)
        line = DelayLine(args.queue, args.state_dir, args.maxlen, args.netns)
    except Exception as e:  # noqa: BLE001 - whatever stops start-up goes to the parent
        report(f"error: {e}")
        print(f"delay line: {e}", file=sys.stderr)
        return 1
    if not line.idle_poll.held:
        print(f"delay line: CPUs may halt between releases ({line.idle_poll.error}); on a VM "
              "expect wake-ups late by milliseconds", file=sys.stderr)
    signal.signal(signal.SIGTERM, line.stop)
    signal.signal(signal.SIGINT, line.stop)
    line._write_stats()
    report("ready")
    try:
        line.run()
    finally:
        line._write_stats()
        line.qs.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
