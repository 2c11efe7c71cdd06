#!/usr/bin/env python3
"""Congestion-control fidelity: usertcp's CUBIC and BBR against the kernel's, on one lab path.

    sudo .venv/bin/python bench/cc_fidelity.py [--duration 60] [--rate 50mbit] [--rtt 40ms]
        [--only fidelity|fairness] [--algos cubic,bbr] [--losses 0,0.5%] [--loss-seed N] [--no-reference]
        [--json out.json] [--plots DIR] [--prefix ccf]
    sudo .venv/bin/python bench/cc_fidelity.py --cc SPEC [--cc-param K=V ...] --kernel-cc NAME ...

--cc puts any controller on the usertcp side (a name of `usertcp cc list`, module:Class, or
path/to/file.py[:Class]; --cc-param sets its parameters) and --kernel-cc any algorithm of the
kernel's on the other (one of /proc/sys/net/ipv4/tcp_available_congestion_control, after a
`modprobe tcp_NAME` attempt; otherwise the run stops before building anything, exit 2): for
example `--cc examples/cc/scalable.py:Scalable --kernel-cc reno`. That pair replaces the
default cubic,bbr, or runs after the pairs of an explicit --algos. Both parts run as below;
the targets apply only to the issue's own pairs (usertcp cubic or bbr against the kernel's, no
parameters), any other pair is a comparison and its ratios and Jain's indexes carry no target.
--kernel-cc may be left out when the usertcp side is a built-in the kernel also has (newreno
is the kernel's reno).

Issue 5's targets, measured as ratios against the kernel in the same lab, back to back:

  fidelity   for each algorithm and each forward loss (0 and 0.5%): one lab (rate, RTT/2 each
             way, 1 BDP queue, the loss on the data path), the gate up; the kernel's flow, then
             usertcp's. usertcp/kernel goodput within ±5% and p95 RTT within ±10% PASS. Plots
             of both cwnd curves (plus RTT and goodput) go to --plots. With loss, both flows
             start from packet 0 of one seeded loss pattern (--loss-seed, netns/loss.py), so
             they lose the same packets by index rather than two independent random draws.
  fairness   two usertcp flows of the same algorithm (BBR: different `seed=`) started together
             in a two-sender lab, then usertcp CUBIC against kernel CUBIC: Jain's index over the
             flows' goodputs >= 0.95 PASS. Kernel-only pairs are run as references (no target;
             --no-reference skips them) so that an algorithm's own unfairness is not blamed on
             usertcp.

How each figure is measured, and why so:

  Goodput  one receiver for every flow: a kernel TCP socket in the receiver namespace (this
           script's `_sink` mode) records, per connection, cumulative bytes read against
           CLOCK_MONOTONIC every 10 ms. `usertcp send` has no time limit (and this benchmark may
           not add one), and a transfer sized to rate x duration would last five times longer
           under 0.5% loss, so the kernel goes first and sets the size: its flow (a kernel
           socket, this script's `_ksend` mode, TCP_CONGESTION set to the algorithm) writes for
           duration + 3 s; B = the bytes the receiver had from it `duration` s after its first
           byte (the flow is still running then, so no tail is counted). usertcp then sends
           exactly B bytes (`usertcp send --bytes B`); its goodput is B over first to last byte
           at the same receiver. Kernel goodput = B / duration. Both therefore include slow
           start, both are measured by the same instrument, and the ratio is the ratio of the
           times the two senders need for the same B bytes on the same path. (usertcp's tail —
           its last bytes and a possible tail loss — is in its figure; the kernel's is not.)
  RTT      the quantity both sides expose per ACK is the smoothed RTT: `tcp:tcp_probe` carries
           only srtt (tp->srtt_us >> 3, i.e. microseconds, unscaled: include/trace/events/tcp.h;
           the tracepoint fires at the top of tcp_rcv_established for every incoming segment,
           before that ACK is processed), and usertcp's CC log has `srtt` (RFC 6298, gain 1/8,
           as Linux) next to `rtt`, the latest sample. So the target compares p95 of per-ACK
           srtt on both sides: the kernel's tcp_probe events of its data socket (filtered on its
           local port) whose snd_una covers the first B bytes, and usertcp's CC-log records of
           event "ack". usertcp's latest-sample p95 is shown too, without target.
  cwnd     kernel: tcp_probe snd_cwnd (segments) x the socket's MSS (TCP_MAXSEG); usertcp: the
           CC log's `window` (the window in force: the controller's cwnd, or PRR's during
           recovery, which is what the kernel's snd_cwnd is), with its `cwnd` drawn thinly.
           Time axis: seconds since the flow's first byte at the receiver.
  Fairness per-flow goodput over the interval all flows were delivering (the latest first byte
           to the earliest last byte at the receiver); each flow sends
           0.95 x rate x duration / flows bytes, so fair flows overlap for about `duration`.

tcp_probe is read through a tracefs instance of its own (usertcp_ccf, trace_clock mono:
CLOCK_MONOTONIC like the CC log and the receiver), its buffer sized for the flow and its overrun
counters checked; the instance is removed at the end. The tracepoint is global and filtered on
the kernel flow's port, which another lab on the machine may use at the same moment (every lab
has the same addresses), so only the events whose sock_cookie is the flow's own SO_COOKIE are
kept (the JSON counts the others as probe_foreign). Leftovers of a crashed run (labs ccf1 and
ccf2, their gates, the tracefs instance, this script's helper processes and usertcp senders in
those labs) are removed first, by name; --prefix renames all of them, so that two runs (say, the
test suite's smoke run and a benchmark) do not remove each other's. Everything is removed again
on any exit, Ctrl-C too. Path counters are recorded per flow as evidence: the bottleneck's (TBF)
drops, the random-loss drops, the D-SACKs the receiver sent (duplicates it got) and the kernel
sender's TcpExt recovery and undo counters; usertcp's come from its CC log and --json summary.

Raw data stay next to the plots: per fidelity run the kernel's tcp_probe events (CSV), usertcp's
CC log (JSON lines) and both receiver series (JSON); per fairness run the receiver series.

Prints a table (PASS/FAIL against the targets) and, with --json, writes every figure, the
machine's details and every command run. A missed target is reported, not an error: the exit
status is 0 unless a measurement could not be made (then 1; 130 on Ctrl-C). Needs root.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import csv
import json
import os
import queue
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# --------------------------------------------------------------------------------------------
# Helper modes. `_sink` and `_ksend` run as child processes inside the lab's namespaces; they
# need nothing but the standard library, so they start fast and do not import the benchmark.

SERIES_STEP = 0.010  # s between the receiver's (time, bytes) points


def sink_main(argv: Sequence[str]) -> int:
    """Accept `--count` connections at once on `--port`, read each to EOF, and print one JSON
    line per connection: peer, bytes, first/last data read (CLOCK_MONOTONIC), and the
    cumulative bytes read every SERIES_STEP s (the last point exact)."""
    import selectors

    p = argparse.ArgumentParser(prog="cc_fidelity.py _sink")
    p.add_argument("--tag", help="the run's prefix, so leftovers can be found")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=1)
    a = p.parse_args(argv)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", a.port))
    ls.listen(64)
    ls.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(ls, selectors.EVENT_READ, None)
    print(json.dumps({"listening": a.port}), flush=True)
    view = memoryview(bytearray(4 << 20))
    done = 0
    while done < a.count:
        for key, _ in sel.select(timeout=1.0):
            if key.data is None:
                try:
                    conn, peer = ls.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                st = {"peer": f"{peer[0]}:{peer[1]}", "port": peer[1], "accepted": time.monotonic(),
                      "bytes": 0, "first": None, "last": None, "series": [], "error": None}
                sel.register(conn, selectors.EVENT_READ, st)
                continue
            conn, st = key.fileobj, key.data
            try:
                k = conn.recv_into(view)
            except BlockingIOError:
                continue
            except OSError as e:  # a reset: report what arrived before it
                st["error"], k = e.__class__.__name__, 0
            now = time.monotonic()
            if k:
                st["bytes"] += k
                if st["first"] is None:
                    st["first"] = now
                st["last"] = now
                s = st["series"]
                if len(s) >= 2 and now - s[-2][0] < SERIES_STEP:
                    s[-1] = [now, st["bytes"]]  # keep the latest point exact, thin the rest
                else:
                    s.append([now, st["bytes"]])
                continue
            sel.unregister(conn)
            conn.close()
            st["closed"] = now
            st["series"] = [[round(t, 6), b] for t, b in st["series"]]
            print(json.dumps(st), flush=True)
            done += 1
    return 0


# struct tcp_info offsets (include/uapi/linux/tcp.h): 8 bytes of u8 fields, then u32s from rto.
_TI_U32 = {"snd_mss": 2, "lost": 6, "retrans": 7, "rtt_us": 15, "snd_ssthresh": 17,
           "snd_cwnd": 18, "total_retrans": 23}
_TI_U64 = {"bytes_acked": 120, "bytes_retrans": 208}


def tcp_info(sock: socket.socket) -> dict[str, int]:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    out = {k: struct.unpack_from("I", raw, 8 + 4 * i)[0] for k, i in _TI_U32.items()}
    out.update({k: struct.unpack_from("Q", raw, off)[0] for k, off in _TI_U64.items()
                if len(raw) >= off + 8})
    return out


def ksend_main(argv: Sequence[str]) -> int:
    """A kernel TCP sender: congestion control `--cc`, bound to `--src:--sport`, writing for
    `--seconds` s or `--bytes` bytes, then FIN and wait for the peer's EOF. One JSON line."""
    p = argparse.ArgumentParser(prog="cc_fidelity.py _ksend")
    p.add_argument("--tag", help="the run's prefix, so leftovers can be found")
    p.add_argument("--src", required=True)
    p.add_argument("--sport", type=int, required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cc", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--seconds", type=float)
    g.add_argument("--bytes", type=int)
    a = p.parse_args(argv)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, a.cc.encode())
    except OSError as e:
        print(json.dumps({"error": f"TCP_CONGESTION {a.cc!r}: {e.strerror}"}), flush=True)
        return 3
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((a.src, a.sport))
    t_syn = time.monotonic()
    s.connect((a.dst, a.port))
    t_est = time.monotonic()
    used = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    try:  # SO_COOKIE (57): tcp_probe's sock_cookie, unique to this socket across namespaces
        cookie = struct.unpack("Q", s.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_COOKIE", 57), 8))[0]
    except OSError:
        cookie = None
    mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    chunk = memoryview(os.urandom(1 << 20))
    sent = 0
    if a.bytes is not None:
        while sent < a.bytes:
            n = min(len(chunk), a.bytes - sent)
            s.sendall(chunk[:n])
            sent += n
    else:
        end = t_est + a.seconds
        while time.monotonic() < end:
            s.sendall(chunk)
            sent += len(chunk)
    t_written = time.monotonic()
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    info = tcp_info(s)
    s.close()
    print(json.dumps({"cc": used, "mss": mss, "sock_cookie": cookie, "sent": sent, "t_syn": t_syn, "t_established": t_est,
                      "t_written": t_written, "t_eof": time.monotonic(), "tcp_info": info}),
          flush=True)
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] in ("_sink", "_ksend"):
    sys.exit((sink_main if sys.argv[1] == "_sink" else ksend_main)(sys.argv[2:]))

# --------------------------------------------------------------------------------------------
# The benchmark proper

from rich.logging import RichHandler  # noqa: E402
from rich.table import Table  # noqa: E402

import netns  # noqa: E402
from bench.lab_path import (  # noqa: E402
    CpuMeter,
    Report,
    Row,
    _down_uninterrupted,
    _sigterm,
    console,
    delay_pid,
    kill_children,
    lab_info,
    lab_up,
    machine_info,
    out_console,
    proc_cpu,
    reap,
    spawn,
)
from netns.config import fmt_percent, fmt_rate, fmt_time, parse_percent, parse_queue, parse_rate, parse_time  # noqa: E402

PARTS = ("fidelity", "fairness")
PREFIX = "ccf"  # --prefix: labs PREFIX1 (fidelity) and PREFIX2 (fairness), tracefs usertcp_PREFIX
LAB_NAMES = {"fidelity": "ccf1", "fairness": "ccf2"}
SINK_PORT = 5301
KERNEL_SPORT = 41000  # kernel flows use 41001, 41002, ...: no 4-tuple is used twice in a lab
USERTCP_SPORT = 42000
TRACE_INSTANCE = "usertcp_ccf"
KERNEL_TAIL_S = 3.0  # the kernel flow writes this much longer than measured
PAUSE_S = 1.0  # between flows: let the queue drain
LOSS_SEED = 20261123  # fidelity: the default loss pattern (see _restart_loss_pattern)
BULK_FRACTION = 0.95  # fairness flows: share of rate x duration they send, together

# Targets (issue 5)
GOODPUT_TOL = 0.05
RTT_TOL = 0.10
JAIN_MIN = 0.95

DEFAULT_PLOTS = REPO / "out" / "cc_fidelity"


# --------------------------------------------------------------------------------------------
# Pure figures (tests/test_cc_fidelity.py)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation between closest ranks (numpy's
    default); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def jain_index(xs: Sequence[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2): 1 when all equal, 1/n when one takes
    all. None for no flows or when none got anything."""
    if not xs:
        return None
    sq = sum(x * x for x in xs)
    if sq == 0:
        return None
    return sum(xs) ** 2 / (len(xs) * sq)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def within(r: float | None, tol: float) -> bool:
    return r is not None and abs(r - 1) <= tol + 1e-12


# --------------------------------------------------------------------------------------------
# What is compared: a usertcp controller and a kernel algorithm (tests/test_cc_fidelity.py)

#: The issue's own pairs: usertcp's implementation of the kernel algorithm of the same name.
TARGET_ALGOS = ("cubic", "bbr")
#: usertcp built-ins whose kernel counterpart is known: --cc NAME needs no --kernel-cc.
KERNEL_COUNTERPART = {"newreno": "reno", "cubic": "cubic", "bbr": "bbr", "vegas": "vegas",
                      "dctcp": "dctcp"}
AVAILABLE_CC = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
_KERNEL_CC_RE = re.compile(r"[a-z0-9_]{1,15}")  # TCP_CA_NAME_MAX = 16, with the NUL


@dataclass(frozen=True)
class Pair:
    """One comparison: usertcp running controller `spec` with `params` ("NAME=VALUE" each)
    against the kernel running algorithm `kernel`. `arg` is the spec as `usertcp send` gets it
    (a file's path made absolute: the senders run from the repository); `name` is the
    controller's own name, for file names."""

    spec: str
    kernel: str
    params: tuple[str, ...] = ()
    arg: str = ""
    name: str = ""

    @property
    def targets(self) -> bool:
        """Issue 5's targets apply: usertcp's CUBIC or BBR, untuned, against the kernel's."""
        return self.spec in TARGET_ALGOS and self.kernel == self.spec and not self.params

    @property
    def usertcp_spec(self) -> str:
        """The usertcp side in full: its spec and parameters (plots, the table's title)."""
        return self.spec + (f" ({', '.join(self.params)})" if self.params else "")

    @property
    def usertcp_label(self) -> str:
        """The usertcp side in short: the controller's name (a file's class is named by its
        `name`, not its path) and parameters (the table's conditions, flow labels)."""
        return (self.name or self.spec) + (f" ({', '.join(self.params)})" if self.params else "")

    @property
    def label(self) -> str:
        """'cubic' when both sides run the same untuned algorithm, else 'NAME (K=V) vs kernel NAME'."""
        if self.spec == self.kernel and not self.params:
            return self.spec
        return f"{self.usertcp_label} vs kernel {self.kernel}"

    @property
    def title(self) -> str:
        """'cubic', or 'usertcp SPEC (K=V) vs kernel NAME' (plots)."""
        if self.spec == self.kernel and not self.params:
            return self.spec
        return f"usertcp {self.usertcp_spec} vs kernel {self.kernel}"

    @property
    def slug(self) -> tuple[str, ...]:
        """Parts of file names: ('cubic',) or ('scalable', 'ai_cnt=50', 'vs', 'reno')."""
        if self.spec == self.kernel and not self.params:
            return (self.spec,)
        return (self.name or self.spec, *self.params, "vs", self.kernel)

    @classmethod
    def same(cls, algo: str) -> "Pair":
        """The issue's pair for `algo`: usertcp's built-in against the kernel's."""
        return cls(algo, algo, arg=algo, name=algo)


def usertcp_spec_arg(spec: str, base: Path | None = None) -> str:
    """`spec` with the path of a file made absolute from `base` (default: the current
    directory); names and module:Class specs unchanged. The same test as the registry's for
    "this is a file": ends in .py, has a slash or starts with a dot."""
    path, sep, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if path.endswith(".py") or "/" in path or path.startswith("."):
        return str(((base or Path.cwd()) / path).resolve()) + sep + attr
    return spec


def make_pair(spec: str, kernel: str | None, params: Sequence[str] = ()) -> Pair:
    """The pair --cc SPEC [--cc-param NAME=VALUE ...] [--kernel-cc NAME] asks for, after
    checking that the controller loads with those parameters (ValueError saying why, before any
    lab is built). Without `kernel`, a built-in's counterpart (KERNEL_COUNTERPART)."""
    from usertcp.cc.registry import load

    spec = spec.strip()
    values: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--cc-param {item!r}: expected NAME=VALUE")
        values[key.strip()] = value.strip()
    arg = usertcp_spec_arg(spec)
    cc = load(arg, 1448, 0.0, params=values)  # CCLoadError (a ValueError) says what is wrong
    if kernel is None:
        kernel = KERNEL_COUNTERPART.get(spec)
        if kernel is None:
            raise ValueError(f"{spec!r} has no kernel counterpart this script knows: name the kernel's "
                             f"algorithm with --kernel-cc (available: {', '.join(kernel_available())})")
    kernel = kernel.strip()
    if not _KERNEL_CC_RE.fullmatch(kernel):
        raise ValueError(f"--kernel-cc {kernel!r}: not a kernel congestion-control name "
                         f"(available: {', '.join(kernel_available())})")
    return Pair(spec, kernel, tuple(f"{k}={v}" for k, v in values.items()), arg, type(cc).name)


def kernel_available(path: Path = AVAILABLE_CC) -> list[str]:
    """The kernel's loaded congestion-control algorithms ([] if it cannot be read)."""
    try:
        return path.read_text().split()
    except OSError:
        return []


def kernel_cc_error(wanted: Sequence[str], available: Sequence[str],
                    modprobe: Sequence[dict[str, Any]] = ()) -> str | None:
    """None if the kernel has every algorithm in `wanted`, else the error to print: which are
    missing, which the kernel has, and what modprobe said."""
    missing = [k for k in dict.fromkeys(wanted) if k not in available]
    if not missing:
        return None
    what = ", ".join(repr(k) for k in missing)
    msg = (f"kernel congestion control {what} not available: this kernel has "
           f"{', '.join(available) or 'none'} ({AVAILABLE_CC})")
    tried = [m for m in modprobe if m["module"] in {f"tcp_{k}" for k in missing}]
    for m in tried:
        why = (m.get("stderr") or "").strip().splitlines()
        if m["exit"] is None:  # modprobe itself could not run
            msg += f"; modprobe {m['module']} did not run: {why[-1] if why else 'not found'}"
        else:
            msg += f"; modprobe {m['module']}: exit {m['exit']}" + (f" ({why[-1]})" if why else "")
    return msg


_PROBE_RE = re.compile(r"\s(\d+\.\d+):\s+tcp_probe:\s+(.*)$")
_PROBE_HEX = {"mark", "snd_nxt", "snd_una", "sock_cookie"}
_PROBE_INT = {"data_len", "snd_cwnd", "ssthresh", "snd_wnd", "srtt", "rcv_wnd"}


def parse_tcp_probe(line: str) -> dict[str, Any] | None:
    """One line of a tracefs `trace` file holding a `tcp:tcp_probe` event, as a dict: t (s, the
    trace clock), src/dst ("ip:port"), sport/dport, the integer fields (snd_nxt, snd_una as
    numbers; srtt in us, as the tracepoint gives it) — or None for other lines."""
    m = _PROBE_RE.search(line.rstrip("\n"))
    if m is None:
        return None
    ev: dict[str, Any] = {"t": float(m.group(1))}
    for item in m.group(2).split():
        key, sep, value = item.partition("=")
        if not sep:
            continue
        try:
            if key in _PROBE_HEX:
                ev[key] = int(value, 16)
            elif key in _PROBE_INT:
                ev[key] = int(value)
            elif key in ("src", "dest"):
                host, _, port = value.rpartition(":")
                name = "src" if key == "src" else "dst"
                ev[name] = value
                ev["sport" if key == "src" else "dport"] = int(port)
                ev[name + "_ip"] = host.strip("[]")
            elif key == "family":
                ev[key] = value
        except ValueError:
            return None
    if "snd_cwnd" not in ev or "srtt" not in ev:
        return None
    return ev


def bytes_at(series: Sequence[Sequence[float]], t: float) -> float:
    """Cumulative bytes at time t from a receiver series [(t, bytes)], linearly interpolated
    (0 before the first point, the total after the last)."""
    if not series or t < series[0][0]:
        return 0.0
    if t >= series[-1][0]:
        return float(series[-1][1])
    times = [p[0] for p in series]
    i = bisect.bisect_right(times, t)
    (t0, b0), (t1, b1) = series[i - 1], series[i]
    return b0 + (b1 - b0) * (t - t0) / (t1 - t0) if t1 > t0 else float(b1)


def interval_goodput(series: Sequence[Sequence[float]], t0: float, t1: float) -> float | None:
    """Bits/s delivered between t0 and t1."""
    if t1 <= t0:
        return None
    return (bytes_at(series, t1) - bytes_at(series, t0)) * 8 / (t1 - t0)


def binned_rate(series: Sequence[Sequence[float]], start: float, step: float) -> tuple[list[float], list[float]]:
    """(bin centres relative to `start`, bits/s per bin) over the series' span."""
    if not series:
        return [], []
    xs, ys = [], []
    t = start
    end = series[-1][0]
    while t < end:
        xs.append(t - start + step / 2)
        ys.append((bytes_at(series, t + step) - bytes_at(series, t)) * 8 / step)
        t += step
    return xs, ys


def overlap(flows: Sequence[dict[str, Any]]) -> tuple[float, float] | None:
    """The interval every flow was delivering: (latest first byte, earliest last byte)."""
    if not flows or any(f.get("first") is None or f.get("last") is None for f in flows):
        return None
    t0 = max(f["first"] for f in flows)
    t1 = min(f["last"] for f in flows)
    return (t0, t1) if t1 > t0 else None


def rtt_summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    return {"samples": len(samples_ms), "p50_ms": percentile(samples_ms, 50),
            "p95_ms": percentile(samples_ms, 95), "max_ms": max(samples_ms) if samples_ms else None}


def kernel_srtt_ms(events: Sequence[dict[str, Any]], nbytes: float | None) -> list[float]:
    """Per-ACK srtt (ms) of a kernel flow's tcp_probe events, up to the ACKs that cover its
    first `nbytes` bytes (all when None). The first event's snd_una is the ISN + 1: the
    tracepoint records the socket before it processes the ACK, and the handshake does not pass
    through tcp_rcv_established."""
    if not events:
        return []
    base = events[0]["snd_una"]
    out = []
    for ev in events:
        acked = (ev["snd_una"] - base) & 0xFFFFFFFF
        if nbytes is not None and acked > nbytes:
            break
        if ev["srtt"] > 0:
            out.append(ev["srtt"] / 1e3)
    return out


def own_events(events: Sequence[dict[str, Any]], cookie: int | None) -> tuple[list[dict[str, Any]], int]:
    """The tcp_probe events of the socket with SO_COOKIE `cookie`, and how many others there
    were. The tracepoint is global and the filter is on the source port, but every lab uses the
    same addresses and this script the same ports: a second lab on the machine (another run, the
    test suite) can have a socket with the same port at the same time. Without a cookie (or a
    tracepoint without sock_cookie) every event is kept."""
    if cookie is None or not any("sock_cookie" in e for e in events):
        return list(events), 0
    mine = [e for e in events if e.get("sock_cookie") == cookie]
    return mine, len(events) - len(mine)


def usertcp_rtt_ms(records: Sequence[dict[str, Any]], key: str = "srtt") -> list[float]:
    """Per-ACK `key` (srtt or rtt, seconds in the log) of a CC log, in ms."""
    return [r[key] * 1e3 for r in records if r.get("event") == "ack" and r.get(key)]


@dataclass
class CcRow(Row):
    """lab_path's Row, whose value may also be a text (two counts: "12 / 345")."""

    def text(self) -> str:
        return self.value if isinstance(self.value, str) else super().text()


def _pair(a: Any, b: Any) -> str:
    f = lambda x: "—" if x is None else f"{x:,}"  # noqa: E731
    return f"{f(a)} / {f(b)}"


def _shown_path(path: str | None) -> str | None:
    """A file name for the table: relative to the current directory when inside it."""
    if not path:
        return None
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def fidelity_rows(cond: str, fig: dict[str, Any]) -> list[Row]:
    """The table's rows for one fidelity run (see measure_fidelity for `fig`)."""
    m = "fidelity"
    k, u = fig.get("kernel", {}), fig.get("usertcp", {})
    g, r = fig.get("goodput_ratio"), fig.get("rtt_p95_ratio")
    if fig.get("targets", True):
        ratios = [
            CcRow(m, cond, "goodput usertcp/kernel", g, "", f"1 ± {GOODPUT_TOL:.0%}", within(g, GOODPUT_TOL)),
            CcRow(m, cond, "p95 srtt usertcp/kernel", r, "", f"1 ± {RTT_TOL:.0%}", within(r, RTT_TOL)),
        ]
    else:  # two different algorithms: a comparison, not a fidelity figure
        ratios = [CcRow(m, cond, "goodput usertcp/kernel", g, "", "(no target)"),
                  CcRow(m, cond, "p95 srtt usertcp/kernel", r, "", "(no target)")]
    rows = [
        *ratios,
        CcRow(m, cond, "goodput kernel", k.get("goodput_bps"), " bit/s"),
        CcRow(m, cond, "goodput usertcp", u.get("goodput_bps"), " bit/s"),
        CcRow(m, cond, "p95 srtt kernel", k.get("srtt", {}).get("p95_ms"), " ms"),
        CcRow(m, cond, "p95 srtt usertcp", u.get("srtt", {}).get("p95_ms"), " ms"),
        CcRow(m, cond, "p95 latest RTT sample usertcp", u.get("rtt", {}).get("p95_ms"), " ms"),
        CcRow(m, cond, "bytes each (B)", fig.get("bytes")),
        CcRow(m, cond, "retransmitted bytes kernel", k.get("retrans_bytes")),
        CcRow(m, cond, "retransmitted bytes usertcp", u.get("retrans_bytes")),
        CcRow(m, cond, "bottleneck drops kernel / usertcp", _pair(k.get("tbf_drops"), u.get("tbf_drops"))),
        CcRow(m, cond, "duplicates at receiver (D-SACKs) kernel / usertcp",
            _pair(k.get("receiver_dsacks"), u.get("receiver_dsacks"))),
        CcRow(m, cond, "recoveries / undos kernel", _pair(k.get("kernel_recoveries"), k.get("kernel_undos"))),
        CcRow(m, cond, "congestion events / undos usertcp",
            _pair(u.get("cc_events", {}).get("on_congestion_event"), u.get("cc_events", {}).get("on_undo"))),
        CcRow(m, cond, "usertcp sender CPU (cores)", u.get("cpu_cores")),
    ]
    if fig.get("loss"):
        rows.insert(-1, CcRow(m, cond, "random-loss drops kernel / usertcp",
                            _pair(k.get("loss_dropped"), u.get("loss_dropped"))))
    rows.append(CcRow(m, cond, "cwnd plot", _shown_path(fig.get("plot")) or fig.get("plot_error")))
    if k.get("probe_lost"):
        rows.append(CcRow(m, cond, "tcp_probe events LOST (ring full)", k["probe_lost"]))
    if u.get("incomplete"):
        rows.append(CcRow(m, cond, "usertcp transfer INCOMPLETE (bytes)", u.get("bytes")))
    return rows


def fairness_rows(cond: str, fig: dict[str, Any], reference: bool = False) -> list[Row]:
    """The table's rows for one fairness run: Jain's index (target unless a reference run),
    the overlap and each flow's goodput over it."""
    m = "fairness"
    j = fig.get("jain")
    if reference:
        rows = [CcRow(m, cond, "Jain's index (reference, no target)", j)]
    else:
        rows = [CcRow(m, cond, "Jain's index", j, "", f"≥ {JAIN_MIN:g}", j is not None and j >= JAIN_MIN)]
    rows.append(CcRow(m, cond, "overlap", fig.get("overlap_s"), " s"))
    if "plot" in fig:
        rows.append(CcRow(m, cond, "goodput plot", _shown_path(fig.get("plot")) or fig.get("plot_error")))
    for f in fig.get("flows", []):
        rows.append(CcRow(m, cond, f"goodput {f['label']}", f.get("goodput_bps"), " bit/s"))
    for f in fig.get("flows", []):
        summ = f.get("summary") or {}
        if "undos" in summ:  # usertcp's own summary
            rows.append(CcRow(m, cond, f"retransmitted bytes / undos {f['label']}",
                              _pair(summ.get("retransmitted_bytes"), summ.get("undos"))))
        else:
            rows.append(CcRow(m, cond, f"retransmitted bytes {f['label']}", f.get("retrans_bytes")))
    return rows


def result_table(rows: Sequence[Row], errors: dict[str, str] | None = None,
                 title: str = "usertcp congestion control: fidelity with the kernel") -> Table:
    """The rich table: one line per figure, PASS/FAIL where there is a target, errors last."""
    t = Table(title=title)
    for col in ("measurement", "condition", "figure", "value", "target", "result"):
        t.add_column(col, justify="right" if col == "value" else "left")
    for r in rows:
        verdict = {True: "[green]PASS[/]", False: "[bold red]FAIL[/]", None: ""}[r.ok]
        t.add_row(r.measurement, r.condition, r.figure, r.text(), r.target, verdict)
    for m, err in (errors or {}).items():
        t.add_row(m, "", "[bold red]error[/]", "", "", err.strip().splitlines()[-1][:80])
    return t


class CcReport(Report):
    def __init__(self, pairs: Sequence[Pair] = ()) -> None:
        super().__init__()
        self.pairs = list(pairs)

    def table(self) -> Table:
        if self.pairs and not all(p.targets for p in self.pairs):
            return result_table(self.rows, self.errors, title="usertcp congestion control against the kernel: "
                                + "; ".join(p.title for p in self.pairs))
        return result_table(self.rows, self.errors)


# --------------------------------------------------------------------------------------------
# Leftovers, kernel algorithms


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def set_prefix(prefix: str) -> None:
    """Name this run's labs and tracefs instance (so a second run with another prefix, e.g.
    the test suite's smoke run, leaves this one alone)."""
    global PREFIX, TRACE_INSTANCE
    if not re.fullmatch(r"[A-Za-z0-9]{1,7}", prefix):
        raise ValueError(f"prefix {prefix!r}: 1 to 7 letters or digits (lab names are PREFIX1, PREFIX2)")
    PREFIX = prefix
    LAB_NAMES.update(fidelity=f"{prefix}1", fairness=f"{prefix}2")
    TRACE_INSTANCE = f"usertcp_{prefix}"


def _arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv and argv.index(flag) + 1 < len(argv) else None


def _is_ours(argv: list[str]) -> bool:
    """A helper of this script run with our prefix, or a `usertcp send` into one of our labs."""
    if not argv:
        return False
    if any(a.endswith("cc_fidelity.py") for a in argv) and ("_sink" in argv or "_ksend" in argv):
        return _arg(argv, "--tag") == PREFIX
    if "usertcp" in argv and "send" in argv and "--netns" in argv:
        ns = _arg(argv, "--netns") or ""
        return any(ns.startswith(name + "-") for name in LAB_NAMES.values())
    return False


def stray_processes() -> list[int]:
    """Processes a crashed earlier run left behind (found by their command lines)."""
    me = os.getpid()
    kids = {p.pid for p in _children_snapshot()}
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and int(entry) not in kids and _is_ours(_cmdline(int(entry))):
            out.append(int(entry))
    return out


def _children_snapshot() -> list[subprocess.Popen]:
    from bench import lab_path

    return list(lab_path._children)


def remove_leftovers() -> list[str]:
    """By name: stray helper processes, the tracefs instance, gates and labs of this script."""
    from usertcp import gate

    removed = []
    for pid in stray_processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            removed.append(f"process {pid}")
    deadline = time.monotonic() + 3
    for pid in stray_processes():
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)
    if TcpProbe.remove_instance():
        removed.append(f"tracefs instance {TRACE_INSTANCE}")
    for ns, dev in gate.leftovers():
        if ns and any(ns.startswith(name + "-") for name in LAB_NAMES.values()):
            with contextlib.suppress(Exception):
                gate.down(ns, dev)
                removed.append(f"gate on {dev} in {ns}")
    for name in LAB_NAMES.values():
        removed += [f"lab {name}: {x}" for x in _down_uninterrupted(name)]
    return removed


def kernel_algorithms(algos: Sequence[str]) -> dict[str, Any]:
    """Make sure the kernel has each algorithm (modprobe tcp_NAME if not); say what was done."""
    before = kernel_available()
    loaded = []
    for a in dict.fromkeys(algos):
        if a not in kernel_available():
            try:
                done = subprocess.run(["modprobe", f"tcp_{a}"], capture_output=True, text=True)
                loaded.append({"module": f"tcp_{a}", "exit": done.returncode, "stderr": done.stderr.strip()})
            except OSError as e:  # no modprobe on this machine
                loaded.append({"module": f"tcp_{a}", "exit": None, "stderr": f"{e.strerror}: modprobe"})
    return {"available_before": before, "available": kernel_available(), "modprobe": loaded}


# --------------------------------------------------------------------------------------------
# tcp:tcp_probe through a tracefs instance of our own


class TcpProbe:
    """`tcp:tcp_probe` events of one local port, recorded in tracefs instance TRACE_INSTANCE
    with the mono trace clock (CLOCK_MONOTONIC). start(sport) clears and arms it; stop()
    disarms it and returns (events, events lost to a full ring)."""

    ROOTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))

    def __init__(self) -> None:
        self.dir: Path | None = None

    @classmethod
    def tracefs(cls) -> Path:
        for root in cls.ROOTS:
            if (root / "instances").is_dir():
                return root
        # A fresh machine may not have tracefs mounted (systemd mounts it on demand, a container
        # or a minimal VM not at all); mount it where the kernel provides the mount point, as
        # perf and bpftrace do. It stays mounted: other tools expect it there.
        root = cls.ROOTS[0]
        if root.is_dir():
            done = subprocess.run(["mount", "-t", "tracefs", "nodev", str(root)],
                                  capture_output=True, text=True)
            if (root / "instances").is_dir():
                return root
            why = done.stderr.strip() or f"exit {done.returncode}"
        else:
            why = f"{root} does not exist (kernel without CONFIG_TRACING?)"
        raise RuntimeError(f"tracefs is not mounted and mounting it failed: {why}")

    @classmethod
    def remove_instance(cls) -> bool:
        try:
            d = cls.tracefs() / "instances" / TRACE_INSTANCE
        except RuntimeError:
            return False
        if not d.exists():
            return False
        with contextlib.suppress(OSError):
            (d / "events/tcp/tcp_probe/enable").write_text("0")
        with contextlib.suppress(OSError):
            (d / "tracing_on").write_text("0")
        for _ in range(20):
            try:
                d.rmdir()
                return True
            except OSError:
                time.sleep(0.1)
        return False

    def __enter__(self) -> "TcpProbe":
        self.remove_instance()
        self.dir = self.tracefs() / "instances" / TRACE_INSTANCE
        self.dir.mkdir()
        (self.dir / "tracing_on").write_text("0")
        (self.dir / "trace_clock").write_text("mono")
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_instance()
        self.dir = None

    def _w(self, rel: str, value: str) -> None:
        assert self.dir is not None
        (self.dir / rel).write_text(value)

    def start(self, sport: int, seconds: float) -> None:
        # Sized for 10,000 events/s (~150 B each) on one CPU: several times what a 50 Mbit/s
        # flow's ACKs make; overruns are counted and reported anyway.
        kb = int(min(512 << 10, max(8 << 10, seconds * 10_000 * 160 / 1024)))
        self._w("events/tcp/tcp_probe/enable", "0")
        self._w("buffer_size_kb", str(kb))
        self._w("trace", "")
        self._w("events/tcp/tcp_probe/filter", f"sport == {int(sport)}")
        self._w("events/tcp/tcp_probe/enable", "1")
        self._w("tracing_on", "1")

    def stop(self) -> tuple[list[dict[str, Any]], int]:
        assert self.dir is not None
        self._w("tracing_on", "0")
        self._w("events/tcp/tcp_probe/enable", "0")
        lost = 0
        for stats in (self.dir / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("overrun", "dropped events"):
                    with contextlib.suppress(ValueError):
                        lost += int(value)
        events = []
        with open(self.dir / "trace") as f:
            for line in f:
                ev = parse_tcp_probe(line)
                if ev is not None:
                    events.append(ev)
        self._w("trace", "")
        self._w("buffer_size_kb", "7")
        events.sort(key=lambda e: e["t"])
        return events, lost


# --------------------------------------------------------------------------------------------
# Flows in the lab


@dataclass
class Flow:
    """One flow: usertcp or the kernel, an algorithm, from sender namespace `sender`."""

    kind: str  # "usertcp" | "kernel"
    algo: str
    sender: int = 0
    params: tuple[str, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = f"{self.kind} {self.algo}" + (f" ({', '.join(self.params)})" if self.params else "")


@dataclass
class Bench:
    """What every run shares: settings, the log of commands, port counters, output dir."""

    rate: int
    rtt: float
    duration: float
    plots: Path
    commands: list[dict[str, Any]] = field(default_factory=list)
    next_kernel_sport: int = KERNEL_SPORT
    next_usertcp_sport: int = USERTCP_SPORT
    loss_seed: int | None = None  # fidelity: the loss pattern each flow starts from (None: random)

    def sport(self, kind: str) -> int:
        if kind == "kernel":
            self.next_kernel_sport += 1
            return self.next_kernel_sport
        self.next_usertcp_sport += 1
        return self.next_usertcp_sport

    def note(self, what: str, argv: Sequence[str] | str) -> None:
        cmd = argv if isinstance(argv, str) else shlex.join(argv)
        self.commands.append({"t": round(time.monotonic(), 3), "what": what, "command": cmd})


class Sink:
    """The receiver (`_sink` mode) in the lab's receiver namespace; its reports, one per
    connection, are read by a thread into a queue."""

    def __init__(self, bench: Bench, lab, count: int) -> None:
        argv = netns.command(lab.ns_receiver, [sys.executable, str(SCRIPT), "_sink", "--tag", PREFIX,
                                               "--port", str(SINK_PORT), "--count", str(count)])
        bench.note("receiver", argv)
        self._err = tempfile.TemporaryFile()
        self.proc = spawn(argv, stdout=subprocess.PIPE, stderr=self._err, text=True)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        first = self._get(10.0)
        if first is None or "listening" not in first:
            raise RuntimeError(f"the receiver did not start in {lab.ns_receiver}: {self._stderr()}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def _stderr(self) -> str:
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip()[-500:]

    def _get(self, timeout: float) -> dict[str, Any] | None:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def reports(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            rep = self._get(max(0.0, deadline - time.monotonic()))
            if rep is None:
                break
            out.append(rep)
        return out

    def close(self) -> None:
        reap(self.proc, timeout=0.5)
        self._err.close()


def _flow_argv(bench: Bench, lab, flow: Flow, sport: int, *, nbytes: int | None = None,
               seconds: float | None = None, cc_log: Path | None = None) -> list[str]:
    ns, _, src = lab.sender(flow.sender)
    if flow.kind == "kernel":
        what = ["--seconds", f"{seconds:g}"] if seconds is not None else ["--bytes", str(nbytes)]
        return netns.command(ns, [sys.executable, str(SCRIPT), "_ksend", "--tag", PREFIX, "--src", src, "--sport",
                                  str(sport), "--dst", lab.receiver_ip, "--port", str(SINK_PORT),
                                  "--cc", flow.algo, *what])
    argv = [sys.executable, "-m", "usertcp", "send", f"{lab.receiver_ip}:{SINK_PORT}",
            "--bytes", str(nbytes), "--cc", flow.algo, "--sport", str(sport), "--netns", ns, "--json"]
    for p in flow.params:
        argv += ["--cc-param", p]
    if cc_log is not None:
        argv += ["--cc-log", str(cc_log)]
    return argv


def run_flows(bench: Bench, lab, label: str, flows: Sequence[Flow], *, nbytes: int | None = None,
              seconds: float | None = None, cc_logs: Sequence[Path | None] | None = None,
              limit: float) -> list[dict[str, Any]]:
    """Start `flows` together against one receiver, wait for all (SIGINT after `limit` s), and
    return per flow: the command, its exit, its JSON output, the receiver's report, its CPU
    (usertcp: the sender process's on-CPU time, in cores) and the machine's CPU meanwhile."""
    sink = Sink(bench, lab, len(flows))
    started: list[dict[str, Any]] = []
    finished = False
    try:
        before = path_counters(lab)
        meter = CpuMeter(delay_pid(lab))
        meter.start()
        for i, flow in enumerate(flows):
            sport = bench.sport(flow.kind)
            argv = _flow_argv(bench, lab, flow, sport, nbytes=nbytes, seconds=seconds,
                              cc_log=cc_logs[i] if cc_logs else None)
            bench.note(label, argv)
            out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
            proc = spawn(argv, stdout=out, stderr=err, cwd=str(REPO))
            started.append({"flow": flow, "sport": sport, "argv": argv, "proc": proc, "out": out,
                            "err": err, "t0": time.monotonic(), "cpu0": None, "cpu1": None})
        t0 = time.monotonic()
        stopped = False
        with console.status(label) as status:
            while any(s["proc"].poll() is None for s in started):
                now = time.monotonic()
                for s in started:
                    if s["flow"].kind == "usertcp" and s["proc"].poll() is None:
                        c = proc_cpu(s["proc"].pid)
                        if c is not None:
                            if s["cpu0"] is None:
                                s["cpu0"] = (now, c[2])
                            s["cpu1"] = (now, c[2])
                if now - t0 > limit and not stopped:
                    console.log(f"[yellow]{label}: still running after {limit:g} s: stopping (SIGINT)[/]")
                    for s in started:
                        if s["proc"].poll() is None:
                            s["proc"].send_signal(signal.SIGINT)
                    stopped = True
                status.update(f"{label}: {now - t0:.0f} s"
                              + (f" of ~{bench.duration:g}" if not stopped else " (stopping)"))
                time.sleep(0.2)
        cpu = meter.stop()
        reports = sink.reports(len(flows), timeout=30)
        path = counters_delta(before, path_counters(lab))
        finished = True
    finally:
        for s in started:  # on an error or Ctrl-C: stop them now
            reap(s["proc"], timeout=5 if finished else 0)
        sink.close()
    by_port = {r["port"]: r for r in reports}
    results = []
    for s in started:
        s["out"].seek(0)
        s["err"].seek(0)
        text = s["out"].read().decode(errors="replace")
        err = s["err"].read().decode(errors="replace").strip()
        s["out"].close()
        s["err"].close()
        parsed = None
        for line in reversed(text.strip().splitlines()):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                break
        c0, c1 = s["cpu0"], s["cpu1"]
        cores = (c1[1] - c0[1]) / (c1[0] - c0[0]) if c0 and c1 and c1[0] > c0[0] else None
        results.append({
            "label": s["flow"].label, "kind": s["flow"].kind, "algo": s["flow"].algo,
            "params": list(s["flow"].params), "sender": s["flow"].sender, "sport": s["sport"],
            "command": shlex.join(s["argv"]), "exit": s["proc"].returncode, "output": parsed,
            "stderr": err[-800:], "stopped_at_limit": stopped, "rx": by_port.get(s["sport"]),
            "cpu_cores": cores, "machine_cpu": cpu, "path": path,
        })
    return results


def _check_flow(res: dict[str, Any]) -> None:
    """Raise if a flow did not run at all (no data at the receiver)."""
    rx = res["rx"]
    if rx is None or not rx.get("bytes"):
        why = res["stderr"].splitlines()[-1] if res["stderr"] else f"exit {res['exit']}"
        if res["output"] and res["output"].get("error"):
            why = res["output"]["error"]
        raise RuntimeError(f"{res['label']}: nothing arrived at the receiver ({why})")


#: TcpExt/Tcp counters kept per flow: the receiver's duplicates (D-SACKs it sent) and the
#: kernel sender's loss-recovery decisions (its namespace holds no other TCP socket).
NETSTAT_KEYS = ("TCPDSACKOldSent", "TCPDSACKOfoSent", "TCPFastRetrans", "TCPSlowStartRetrans",
                "TCPLostRetransmit", "TCPLossProbes", "TCPTimeouts", "TCPSpuriousRTOs", "TCPFullUndo",
                "TCPPartialUndo", "TCPDSACKUndo", "TCPLossUndo", "TCPSackRecovery", "TCPSACKReorder",
                "TCPDSACKRecv", "TCPDSACKOfoRecv", "RetransSegs", "OutSegs", "InSegs")


def parse_netstat(text: str) -> dict[str, int]:
    """/proc/net/netstat or /proc/net/snmp: pairs of 'Prefix: names' / 'Prefix: values' lines."""
    out: dict[str, int] = {}
    lines = text.splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        names, values = head.split()[1:], vals.split()[1:]
        for n, v in zip(names, values):
            with contextlib.suppress(ValueError):
                out.setdefault(n, int(v))
    return out


def ns_counters(ns: str) -> dict[str, int]:
    """NETSTAT_KEYS of namespace `ns` (read through /proc/thread-self inside it)."""
    with netns.enter(ns):
        with open("/proc/thread-self/net/netstat") as f, open("/proc/thread-self/net/snmp") as g:
            allc = {**parse_netstat(g.read()), **parse_netstat(f.read())}
    return {k: allc.get(k, 0) for k in NETSTAT_KEYS}


def path_counters(lab) -> dict[str, Any]:
    """What the path did: TBF drops and queue backlog, random-loss drops, and the TCP counters
    of the receiver and of every sender namespace."""
    from netns import loss as netloss

    st = lab.status()
    bn = st.get("bottleneck") or {}
    out: dict[str, Any] = {"tbf_drops": bn.get("drops"), "loss_dropped": None,
                           "receiver": ns_counters(lab.ns_receiver),
                           "senders": [ns_counters(ns) for ns in lab.ns_senders]}
    if lab.config.loss:
        c = netloss.counters(lab.ns_receiver, lab.receiver_if)
        out["loss_dropped"] = c.get("dropped") if c else None
    return out


def counters_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """b - a, recursively, for the numbers path_counters returns (None stays None)."""
    if isinstance(a, dict):
        return {k: counters_delta(a.get(k), b.get(k)) for k in b}
    if isinstance(a, list):
        return [counters_delta(x, y) for x, y in zip(a, b)]
    return None if a is None or b is None else b - a


def path_figures(path: dict[str, Any], kernel_sender: int | None = None) -> dict[str, Any]:
    """The few path counters the table shows for one flow run alone in the lab."""
    rx = path.get("receiver") or {}
    out = {"tbf_drops": path.get("tbf_drops"), "loss_dropped": path.get("loss_dropped"),
           "receiver_dsacks": (rx.get("TCPDSACKOldSent") or 0) + (rx.get("TCPDSACKOfoSent") or 0)}
    if kernel_sender is not None:
        tx = path["senders"][kernel_sender]
        out["kernel_undos"] = sum(tx.get(k) or 0 for k in ("TCPFullUndo", "TCPPartialUndo", "TCPDSACKUndo", "TCPLossUndo"))
        out["kernel_recoveries"] = tx.get("TCPSackRecovery")
    return out


def cc_event_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How often each CC-log event other than "ack" occurred (congestion events, undos, ...)."""
    out: dict[str, int] = {}
    for r in records:
        e = r.get("event")
        if e != "ack":
            out[e] = out.get(e, 0) + 1
    return out


# --------------------------------------------------------------------------------------------
# Labs with gates


@contextlib.contextmanager
def gated_lab(name: str, **settings: Any) -> Iterator[Any]:
    """lab_path.lab_up plus the gate on every sender's interface; all removed on any exit
    (the children first, so no sender outlives its gate)."""
    from usertcp import gate

    with lab_up(name, **settings) as lab:
        ifs = [lab.sender(i)[:2] for i in range(len(lab.config.senders))]
        try:
            for ns, dev in ifs:
                gate.down(ns, dev)
                t0 = time.monotonic()
                gate.up(ns, dev)
                console.log(f"gate up on {dev} in {ns} ({time.monotonic() - t0:.1f} s)")
            yield lab
        finally:
            kill_children()
            for ns, dev in ifs:
                with contextlib.suppress(Exception):
                    gate.down(ns, dev)


def lab_command(lab) -> str:
    """The `usertcp lab up` line that builds the same lab (for the JSON's record)."""
    c = lab.config
    argv = ["usertcp", "lab", "up", "--name", c.name]
    if c.rate:
        argv += ["--rate", fmt_rate(c.rate).replace(" ", "").replace("/s", "").lower()]
    argv += ["--delay", fmt_time(c.delay), "--queue", str(c.queue)]
    if c.loss:
        argv += ["--loss", fmt_percent(c.loss)]
    if len(c.senders) > 1:
        argv += ["--senders", str(len(c.senders))]
    return shlex.join(argv)


# --------------------------------------------------------------------------------------------
# 1. fidelity


def _slug(*parts: Any) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9.]+", "", str(p)) for p in parts)


def measure_fidelity(args: argparse.Namespace, bench: Bench, report: Report) -> None:
    m = "fidelity"
    details: dict[str, Any] = report.details.setdefault(m, {})
    with TcpProbe() as probe:
        for loss in args.losses:
            settings = dict(rate=bench.rate, delay=bench.rtt / 2, queue=parse_queue("1bdp"), loss=loss)
            with gated_lab(LAB_NAMES[m], **settings) as lab:
                bench.note("lab", lab_command(lab))
                bench.note("gate", f"usertcp gate up --lab {lab.name}")
                for pair in args.pairs:
                    cond = f"{pair.label}, loss {fmt_percent(loss)}"
                    console.rule(f"{m}: {cond}")
                    try:
                        fig = fidelity_run(bench, lab, probe, pair, loss)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:  # noqa: BLE001 - report it, go on
                        report.errors[f"{m} {cond}"] = "".join(traceback.format_exception(e))
                        console.log(f"[bold red]{m} {cond} failed:[/] {e}")
                        continue
                    details[cond] = fig
                    for row in fidelity_rows(cond, fig):
                        report.add(row)


def _restart_loss_pattern(bench: Bench, lab, loss: float) -> None:
    """Start the forward loss pattern again from packet 0 of `bench.loss_seed` (netns/loss.py),
    so that the kernel's flow and usertcp's lose the same packets by index. With unseeded random
    loss, a 30 s CUBIC flow at 0.5% sees about 70 losses, so two runs differ by +-12% in loss
    count, and so by about +-6% in goodput (which goes as 1/sqrt(p)), by chance alone: more than
    the target's +-5%."""
    if not loss:
        return
    from netns import loss as netloss

    netloss.reseed(lab.ns_receiver, lab.receiver_if, bench.loss_seed)
    bench.note("loss", f"netns.loss.reseed({lab.ns_receiver!r}, {lab.receiver_if!r}, {bench.loss_seed})")


def fidelity_run(bench: Bench, lab, probe: TcpProbe, pair: Pair | str, loss: float) -> dict[str, Any]:
    if isinstance(pair, str):
        pair = Pair.same(pair)
    D = bench.duration
    slug = _slug("fidelity", *pair.slug, f"loss{loss * 100:g}")
    bench.plots.mkdir(parents=True, exist_ok=True)
    algo = pair.kernel  # the kernel's side; usertcp's is pair.arg
    fig: dict[str, Any] = {"lab": lab_info(lab), "algo": pair.spec, "usertcp_cc": pair.spec,
                           "cc_params": list(pair.params), "kernel_cc": pair.kernel,
                           "targets": pair.targets, "label": pair.label, "loss": loss, "duration_s": D}

    # The kernel's flow, time-limited; tcp_probe on its port.
    kflow = Flow("kernel", algo)
    sport = bench.next_kernel_sport + 1  # the one run_flows will take
    probe.start(sport, D + KERNEL_TAIL_S + 30)
    bench.note("tracepoint", f"tracefs instances/{TRACE_INSTANCE}: tcp:tcp_probe filter 'sport == {sport}'")
    try:
        _restart_loss_pattern(bench, lab, loss)
        k = run_flows(bench, lab, f"kernel {algo}", [kflow], seconds=D + KERNEL_TAIL_S,
                      limit=D + KERNEL_TAIL_S + 120)[0]
    finally:
        events, lost = probe.stop()
    assert k["sport"] == sport
    _check_flow(k)
    kout = k["output"] or {}
    if kout.get("cc") and kout["cc"] != algo:
        raise RuntimeError(f"the kernel flow ran {kout['cc']!r}, not {algo!r}")
    events, foreign = own_events(events, kout.get("sock_cookie"))
    if foreign:
        console.log(f"[yellow]kernel {algo}: {foreign:,} tcp_probe events of another socket with port {sport} "
                    f"(another lab on this machine) left out[/]")
    rx = k["rx"]
    end = rx["first"] + D
    if rx["last"] < end:  # it stopped early (an error): take what it delivered
        console.log(f"[yellow]kernel {algo}: delivered for only {rx['last'] - rx['first']:.1f} s[/]")
        end = rx["last"]
    nbytes = int(bytes_at(rx["series"], end))
    k_secs = end - rx["first"]
    mss = kout.get("mss") or 1448
    ti = kout.get("tcp_info", {})
    fig["bytes"] = nbytes
    fig["kernel"] = {
        "command": k["command"], "cc": kout.get("cc"), "mss": mss, "sport": sport,
        "goodput_bps": nbytes * 8 / k_secs if k_secs > 0 else None, "seconds": k_secs,
        "bytes_total": rx["bytes"], "retrans_bytes": ti.get("bytes_retrans"),
        "retrans_segments": ti.get("total_retrans"), "srtt": rtt_summary(kernel_srtt_ms(events, nbytes)),
        "probe_events": len(events), "probe_lost": lost, "probe_foreign": foreign,
        "sock_cookie": kout.get("sock_cookie"), "machine_cpu": k["machine_cpu"],
        "path": k["path"], **path_figures(k["path"], kernel_sender=0),
    }
    kpath = bench.plots / f"{slug}-kernel-tcp_probe.csv"
    with open(kpath, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "snd_cwnd", "ssthresh", "srtt_us", "snd_una", "snd_nxt", "snd_wnd", "data_len"])
        for ev in events:
            w.writerow([f"{ev['t']:.6f}", ev["snd_cwnd"], ev["ssthresh"], ev["srtt"], ev["snd_una"],
                        ev.get("snd_nxt"), ev.get("snd_wnd"), ev.get("data_len")])
    fig["kernel"]["tcp_probe_csv"] = str(kpath)
    console.log(f"kernel {algo}: {nbytes:,} B in {k_secs:.1f} s = {fmt_rate(nbytes * 8 / k_secs)}, "
                f"{len(events):,} tcp_probe events ({lost} lost)")
    time.sleep(PAUSE_S)

    # usertcp's flow: the same bytes.
    from usertcp.cc.log import read_cc_log

    log = bench.plots / f"{slug}-usertcp-cclog.jsonl"
    uflow = Flow("usertcp", pair.arg or pair.spec, params=pair.params, label=f"usertcp {pair.usertcp_spec}")
    _restart_loss_pattern(bench, lab, loss)
    u = run_flows(bench, lab, uflow.label, [uflow], nbytes=nbytes, cc_logs=[log],
                  limit=4 * D + 120)[0]
    _check_flow(u)
    urx = u["rx"]
    _, records = read_cc_log(log)
    uout = u["output"] or {}
    u_secs = urx["last"] - urx["first"]
    fig["usertcp"] = {
        "command": u["command"], "sport": u["sport"], "exit": u["exit"], "summary": uout,
        "stderr": u["stderr"] if u["exit"] else "",
        "bytes": urx["bytes"], "incomplete": urx["bytes"] < nbytes, "seconds": u_secs,
        "goodput_bps": urx["bytes"] * 8 / u_secs if u_secs > 0 else None,
        "retrans_bytes": uout.get("retransmitted_bytes"), "fast_retransmits": uout.get("fast_retransmits"),
        "timeouts": uout.get("timeouts"), "srtt": rtt_summary(usertcp_rtt_ms(records, "srtt")),
        "rtt": rtt_summary(usertcp_rtt_ms(records, "rtt")), "cc_log": str(log),
        "cc_log_records": len(records), "cpu_cores": u["cpu_cores"], "machine_cpu": u["machine_cpu"],
        "cc_events": cc_event_counts(records), "path": u["path"], **path_figures(u["path"]),
    }
    fig["goodput_ratio"] = ratio(fig["usertcp"]["goodput_bps"], fig["kernel"]["goodput_bps"])
    fig["rtt_p95_ratio"] = ratio(fig["usertcp"]["srtt"]["p95_ms"], fig["kernel"]["srtt"]["p95_ms"])
    rxpath = bench.plots / f"{slug}-receiver.json"
    rxpath.write_text(json.dumps({"kernel": rx, "usertcp": urx}) + "\n")
    fig["receiver_series"] = str(rxpath)
    try:
        fig["plot"] = str(plot_fidelity(bench.plots / f"{slug}.png", f"{pair.title}, loss {fmt_percent(loss)}",
                                        fig, events, mss, records, rx, urx))
    except ImportError as e:
        fig["plot"] = None
        fig["plot_error"] = f"no plot: {e} (pip install matplotlib)"
        console.log(f"[yellow]{fig['plot_error']}[/]")
    time.sleep(PAUSE_S)
    return fig


# --------------------------------------------------------------------------------------------
# 2. plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fidelity(path: Path, title: str, fig: dict[str, Any], events: list[dict[str, Any]], mss: int,
                  records: list[dict[str, Any]], krx: dict[str, Any], urx: dict[str, Any]) -> Path:
    """cwnd (both on one axes), srtt and receiver goodput over time since each flow's first byte."""
    plt = _pyplot()
    f, (ax_w, ax_r, ax_g) = plt.subplots(3, 1, figsize=(12, 10), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1.5, 1.5]})
    k0, u0 = krx["first"], urx["first"]
    kend = k0 + fig["kernel"]["seconds"] + 0.5
    kev = [e for e in events if e["t"] <= kend]
    ack = [r for r in records if r.get("event") == "ack"]
    kname = fig.get("kernel_cc") or fig["algo"]
    uname = fig.get("usertcp_cc") or fig["algo"]
    if fig.get("cc_params"):
        uname += f" ({', '.join(fig['cc_params'])})"
    ax_w.plot([e["t"] - k0 for e in kev], [e["snd_cwnd"] * mss / 1e3 for e in kev],
              lw=0.8, color="tab:blue", label=f"kernel {kname} (tcp_probe snd_cwnd × {mss} B)")
    ax_w.plot([r["t"] - u0 for r in ack], [(r.get("window") or r["cwnd"]) / 1e3 for r in ack],
              lw=0.8, color="tab:red", label=f"usertcp {uname} (CC log window in force)")
    ax_w.plot([r["t"] - u0 for r in ack], [r["cwnd"] / 1e3 for r in ack], lw=0.4, ls="--",
              color="tab:orange", alpha=0.7, label="usertcp controller cwnd")
    q = (fig["lab"].get("bottleneck") or {}).get("queue_bytes")
    if q:  # the queue is 1 BDP: the pipe holds q in flight, pipe + queue 2q
        ax_w.axhline(q / 1e3, color="grey", lw=0.6, ls=":", label=f"1 BDP = queue = {q / 1e3:.0f} KB")
        ax_w.axhline(2 * q / 1e3, color="black", lw=0.6, ls=":", label="BDP + queue")
    ax_w.set_ylabel("cwnd (KB)")
    ax_w.legend(loc="upper right", fontsize=8)
    g, r = fig.get("goodput_ratio"), fig.get("rtt_p95_ratio")
    ax_w.set_title(f"{title}: goodput usertcp/kernel {g:.3f}, p95 srtt usertcp/kernel {r:.3f}"
                   if g is not None and r is not None else title)
    ax_r.plot([e["t"] - k0 for e in kev], [e["srtt"] / 1e3 for e in kev], lw=0.8, color="tab:blue",
              label=f"kernel {kname} srtt")
    ax_r.plot([r["t"] - u0 for r in ack if r.get("srtt")], [r["srtt"] * 1e3 for r in ack if r.get("srtt")],
              lw=0.8, color="tab:red", label=f"usertcp {uname} srtt")
    ax_r.set_ylabel("srtt (ms)")
    ax_r.legend(loc="upper right", fontsize=8)
    for rx, color, who in ((krx, "tab:blue", "kernel"), (urx, "tab:red", "usertcp")):
        xs, ys = binned_rate(rx["series"], rx["first"], 0.5)
        if who == "kernel":
            keep = [i for i, x in enumerate(xs) if x <= fig["kernel"]["seconds"]]
            xs, ys = [xs[i] for i in keep], [ys[i] for i in keep]
        ax_g.plot(xs, [y / 1e6 for y in ys], lw=0.8, color=color,
                  label=f"{who} {kname if who == 'kernel' else uname} (receiver, 0.5 s bins)")
    ax_g.set_ylabel("goodput (Mbit/s)")
    ax_g.set_xlabel("seconds since the flow's first byte at the receiver")
    ax_g.legend(loc="lower right", fontsize=8)
    for ax in (ax_w, ax_r, ax_g):
        ax.grid(alpha=0.3)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)
    return path


def plot_fairness(path: Path, title: str, flows: list[dict[str, Any]], window: tuple[float, float] | None) -> Path:
    plt = _pyplot()
    f, ax = plt.subplots(figsize=(12, 4.5))
    start = min(r["rx"]["first"] for r in flows)
    for r in flows:
        xs, ys = binned_rate(r["rx"]["series"], start, 1.0)
        ax.plot(xs, [y / 1e6 for y in ys], lw=1, label=r["label"])
    if window:
        ax.axvspan(window[0] - start, window[1] - start, color="grey", alpha=0.1, label="overlap")
    ax.set_xlabel("seconds since the first flow's first byte at the receiver")
    ax.set_ylabel("goodput (Mbit/s, 1 s bins)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    f.tight_layout()
    f.savefig(path, dpi=110)
    plt.close(f)
    return path


# --------------------------------------------------------------------------------------------
# 3. fairness


def fairness_cases(pairs: Sequence[Pair | str], reference: bool) -> list[tuple[str, list[Flow], bool]]:
    """(condition, flows, is_reference) for each fairness run. For each pair: two usertcp flows
    (BBR: different seeds), the kernel's two as a reference, and for CUBIC or a pair of two
    different algorithms one of each. A pair outside the issue's has no target (is_reference)."""
    cases: list[tuple[str, list[Flow], bool]] = []
    mixed: list[tuple[str, list[Flow], bool]] = []
    for pair in pairs:
        if isinstance(pair, str):
            pair = Pair.same(pair)
        spec, arg, kernel = pair.spec, pair.arg or pair.spec, pair.kernel
        params = [pair.params + ("seed=1",), pair.params + ("seed=2",)] if spec == "bbr" else [pair.params] * 2
        cases.append((f"usertcp {pair.usertcp_label} × 2", [
            Flow("usertcp", arg, i, params[i], f"usertcp {pair.name or spec} #{i + 1}"
                 + (f" ({', '.join(params[i])})" if params[i] else "")) for i in (0, 1)], not pair.targets))
        if reference:
            cases.append((f"kernel {kernel} × 2", [Flow("kernel", kernel, i, (), f"kernel {kernel} #{i + 1}")
                                                   for i in (0, 1)], True))
        if not pair.targets or spec == "cubic":  # (the mixed pair is CUBIC's only)
            mixed.append((f"usertcp {pair.usertcp_label} vs kernel {kernel}",
                          [Flow("usertcp", arg, 0, pair.params, f"usertcp {pair.usertcp_label}"),
                           Flow("kernel", kernel, 1)], not pair.targets))
    return cases + mixed


def fairness_figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Jain's index over the flows' goodputs in their overlap (receiver reports in results)."""
    rxs = [r["rx"] for r in results]
    win = overlap(rxs)
    flows = []
    for r in results:
        g = interval_goodput(r["rx"]["series"], *win) if win else None
        flows.append({"label": r["label"], "command": r["command"], "sport": r["sport"],
                      "goodput_bps": g, "bytes": r["rx"]["bytes"], "first": r["rx"]["first"],
                      "last": r["rx"]["last"], "cpu_cores": r["cpu_cores"], "exit": r["exit"],
                      "summary": r["output"],
                      "retrans_bytes": (r["output"] or {}).get("retransmitted_bytes",
                                        (r["output"] or {}).get("tcp_info", {}).get("bytes_retrans"))})
    goodputs = [f["goodput_bps"] for f in flows]
    return {"overlap": win, "overlap_s": (win[1] - win[0]) if win else None, "flows": flows,
            "path": results[0].get("path") if results else None,
            "jain": jain_index(goodputs) if None not in goodputs else None,
            "total_bps": sum(goodputs) if None not in goodputs else None}


def measure_fairness(args: argparse.Namespace, bench: Bench, report: Report) -> None:
    m = "fairness"
    details: dict[str, Any] = report.details.setdefault(m, {})
    D = bench.duration
    cases = fairness_cases(args.pairs, args.reference)
    bench.plots.mkdir(parents=True, exist_ok=True)
    with gated_lab(LAB_NAMES[m], rate=bench.rate, delay=bench.rtt / 2, queue=parse_queue("1bdp"),
                   senders=2) as lab:
        bench.note("lab", lab_command(lab))
        bench.note("gate", f"usertcp gate up --lab {lab.name}; usertcp gate up --netns {lab.ns_senders[1]} --dev {lab.sender(1)[1]}")
        for cond, flows, is_ref in cases:
            console.rule(f"{m}: {cond}")
            nbytes = int(bench.rate / 8 * D * BULK_FRACTION / len(flows))
            try:
                results = run_flows(bench, lab, cond, flows, nbytes=nbytes, limit=4 * D + 120)
                for r in results:
                    _check_flow(r)
                fig = fairness_figures(results)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001
                report.errors[f"{m} {cond}"] = "".join(traceback.format_exception(e))
                console.log(f"[bold red]{m} {cond} failed:[/] {e}")
                continue
            fig.update({"lab": lab_info(lab), "bytes_each": nbytes, "reference": is_ref})
            slug = _slug("fairness", cond.replace("×", "x"))
            (bench.plots / f"{slug}-receiver.json").write_text(
                json.dumps({r["label"]: r["rx"] for r in results}) + "\n")
            try:
                fig["plot"] = str(plot_fairness(bench.plots / f"{slug}.png",
                                                f"{cond}: Jain {fig['jain']:.3f}" if fig["jain"] else cond,
                                                results, fig["overlap"]))
            except ImportError as e:
                fig["plot"], fig["plot_error"] = None, f"no plot: {e} (pip install matplotlib)"
            details[cond] = fig
            for row in fairness_rows(cond, fig, reference=is_ref):
                report.add(row)
            time.sleep(PAUSE_S)


# --------------------------------------------------------------------------------------------
# Main


MEASURE = {"fidelity": measure_fidelity, "fairness": measure_fairness}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 2)[2])
    p.add_argument("--duration", type=float, default=60.0, help="seconds per flow (default 60)")
    p.add_argument("--rate", default="50mbit", help="bottleneck rate (default 50mbit)")
    p.add_argument("--rtt", default="40ms", help="base RTT, half each way (default 40ms)")
    p.add_argument("--only", choices=PARTS, help="run only this part")
    p.add_argument("--algos", default=None,
                   help="comma-separated: usertcp's and the kernel's of each (default cubic,bbr)")
    p.add_argument("--cc", metavar="SPEC",
                   help="usertcp runs this controller (a name, module:Class or path/to/file.py[:Class]) "
                        "against --kernel-cc; after --algos' pairs if --algos is given too")
    p.add_argument("--cc-param", metavar="NAME=VALUE", action="append", default=[],
                   help="with --cc: a parameter of the controller (repeatable)")
    p.add_argument("--kernel-cc", metavar="NAME",
                   help="with --cc: the kernel's algorithm to compare with (one of "
                        f"{AVAILABLE_CC}; default: a built-in's counterpart, newreno -> reno)")
    p.add_argument("--losses", default="0,0.5%", help="fidelity: forward losses (default 0,0.5%%)")
    p.add_argument("--loss-seed", type=int, default=LOSS_SEED,
                   help="fidelity: both flows of a pair lose the same packets by index, from this "
                        f"seed's pattern (default {LOSS_SEED}); 0 draws fresh random losses per flow")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="fairness: skip the kernel-only reference pairs")
    p.add_argument("--json", metavar="OUT", type=Path, help="write every figure to this file")
    p.add_argument("--prefix", default=PREFIX,
                   help=f"name the labs PREFIX1, PREFIX2 and the tracefs instance usertcp_PREFIX (default {PREFIX})")
    p.add_argument("--plots", metavar="DIR", type=Path, default=DEFAULT_PLOTS,
                   help=f"plots and raw traces (default {DEFAULT_PLOTS.relative_to(REPO)}/)")
    args = p.parse_args(argv)
    try:
        args.rate_bps = parse_rate(args.rate)
        args.rtt_s = parse_time(args.rtt)
        args.losses = [parse_percent(x) for x in args.losses.split(",") if x.strip()]
    except ValueError as e:
        p.error(str(e))
    try:
        set_prefix(args.prefix)
    except ValueError as e:
        p.error(str(e))
    if args.cc is None and (args.kernel_cc is not None or args.cc_param):
        p.error("--kernel-cc and --cc-param go with --cc SPEC")
    # --algos' pairs (by default cubic,bbr, but none when --cc is given alone), then --cc's.
    algos = [a.strip() for a in (args.algos if args.algos is not None else "" if args.cc else "cubic,bbr")
             .split(",") if a.strip()]
    for a in algos:
        if a not in TARGET_ALGOS:
            p.error(f"--algos: {a!r} is not one of {', '.join(TARGET_ALGOS)} (any other pair: --cc SPEC --kernel-cc NAME)")
    args.pairs = [Pair.same(a) for a in algos]
    if args.cc is not None:
        try:
            args.pairs.append(make_pair(args.cc, args.kernel_cc, args.cc_param))
        except ValueError as e:
            p.error(f"--cc: {e}")
    args.algos = [pair.spec for pair in args.pairs]
    if args.duration <= 0:
        p.error("--duration must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        console.print("[red]needs root: namespaces, BPF, tracefs[/]")
        return 2
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    info = machine_info()
    # The kernel's algorithms first: a missing one ends the run before any lab is built.
    info["kernel_cc"] = kernel_algorithms([pair.kernel for pair in args.pairs])
    for mod in info["kernel_cc"]["modprobe"]:
        if mod["exit"] == 0:
            console.log(f"loaded {mod['module']} (modprobe)")
    err = kernel_cc_error([pair.kernel for pair in args.pairs], info["kernel_cc"]["available"],
                          info["kernel_cc"]["modprobe"])
    if err:
        console.print(f"[red]{err}[/]", highlight=False)
        return 2

    report = CcReport(args.pairs)
    bench = Bench(rate=args.rate_bps, rtt=args.rtt_s, duration=args.duration, plots=args.plots.resolve(),
                  loss_seed=args.loss_seed or None)
    interrupted = False
    t_start = time.monotonic()
    try:
        removed = remove_leftovers()
        if removed:
            console.log(f"removed leftovers of an earlier run: {removed}")
        console.log(f"{info['kernel']}, {info['cpus']} CPUs, load {info['loadavg_start']}; "
                    f"{fmt_rate(bench.rate)}, RTT {fmt_time(bench.rtt)}, {bench.duration:g} s flows; "
                    + ", ".join(f"usertcp {p.usertcp_spec} vs kernel {p.kernel}" for p in args.pairs))
        for name in [args.only] if args.only else PARTS:
            console.rule(name)
            t0 = time.monotonic()
            try:
                MEASURE[name](args, bench, report)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - report it, go on with the next part
                report.errors[name] = "".join(traceback.format_exception(e))
                console.log(f"[bold red]{name} failed:[/] {e}")
                console.print_exception(show_locals=False)
            console.log(f"{name}: {time.monotonic() - t0:.0f} s")
    except KeyboardInterrupt:
        interrupted = True
        console.log("[yellow]interrupted: labs, gates and tracepoints removed, partial results below[/]")
    finally:
        kill_children()
        TcpProbe.remove_instance()

    out_console.print(report.table())
    info["loadavg_end"] = Path("/proc/loadavg").read_text().strip()
    info["duration_s"] = round(time.monotonic() - t_start, 1)
    if args.json:
        doc = {
            "machine": info,
            "args": {"duration": args.duration, "rate": args.rate, "rtt": args.rtt, "only": args.only,
                     "algos": args.algos, "losses": args.losses, "loss_seed": bench.loss_seed, "reference": args.reference,
                     "pairs": [{"usertcp": pair.spec, "usertcp_arg": pair.arg, "cc_params": list(pair.params),
                                "kernel": pair.kernel, "targets": pair.targets} for pair in args.pairs],
                     "plots": str(bench.plots)},
            "targets": {"goodput_ratio": f"1 ± {GOODPUT_TOL}", "p95_srtt_ratio": f"1 ± {RTT_TOL}",
                        "jain_min": JAIN_MIN},
            "interrupted": interrupted,
            "rows": [asdict(r) for r in report.rows],
            "details": report.details,
            "commands": bench.commands,
            "errors": report.errors,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        console.log(f"wrote {args.json}")
    failed = [r for r in report.rows if r.ok is False]
    passed = [r for r in report.rows if r.ok is True]
    console.log(f"{len(passed)} target(s) met, {len(failed)} missed, {len(report.errors)} error(s); "
                f"plots and traces in {bench.plots} — numbers from a possibly busy shared machine "
                f"({info['cpus']} CPUs)")
    if interrupted:
        return 130
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
