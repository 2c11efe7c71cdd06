"""`usertcp demo`: the whole path once, end to end, and a summary a user can check.

Builds a lab (sender — router — receiver), brings the gate up on the sender's interface, starts a
kernel-socket sink in the receiver namespace, captures the flow with dumpcap on the sender's
interface, sends N bytes with the Python stack, then (unless --no-kernel) the same bytes with a
kernel TCP socket using the same congestion control over the same path, so the two goodputs come
from one run. Both are measured by the same sink (first to last byte received). The lab comes
down at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import netns
from netns.lab import Lab

from . import gate
from .cli import UserError, fmt_bps, fmt_bytes, run_send, send_summary
from .sink import SinkProcess
from .sources import PatternSource

SINK_PORT = 5001


def tcp_out_rsts(ns: str) -> int:
    """Tcp OutRsts of namespace `ns` (RFC 1213 tcpOutRsts): read through /proc/thread-self,
    because /proc/net follows the main thread's namespace, not the one `enter` moved us to."""
    with netns.enter(ns), open("/proc/thread-self/net/snmp") as f:
        lines = [line.split() for line in f if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutRsts")])


class Capture:
    """dumpcap on one interface of a namespace, headers only (snaplen 128), classic pcap."""

    def __init__(self, ns: str, ifname: str, bpf_filter: str, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        argv = ["dumpcap", "-q", "-i", ifname, "-f", bpf_filter, "-s", "128", "-P", "-w", str(path)]
        self.proc = subprocess.Popen(netns.command(ns, argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not (path.exists() and path.stat().st_size >= 24):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.poll() is not None else ""
                self.stop()
                raise UserError(f"dumpcap did not start on {ifname} in {ns}: {err or 'timeout'}")
            time.sleep(0.02)
        time.sleep(0.2)  # the capture filter is attached just after the file header is written

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def check(self) -> tuple[bool, int, str]:
        """Open the file with tshark; returns (ok, packets, tshark's complaint)."""
        r = subprocess.run(["tshark", "-r", str(self.path), "-T", "fields", "-e", "frame.number"],
                           capture_output=True, text=True)
        # tshark warns on stderr whenever it runs as root; that is not a complaint about the file.
        complaint = "\n".join(line for line in r.stderr.splitlines()
                              if line.strip() and "Running as user" not in line)
        ok = r.returncode == 0 and not complaint
        return ok, len(r.stdout.split()), complaint


def _report(sink: SinkProcess) -> dict:
    try:
        return sink.report(timeout=30)
    except TimeoutError as exc:
        raise UserError(str(exc)) from None


def kernel_send(remote: tuple[str, int], source, cc: str) -> tuple[float, str]:
    """Send `source` with a kernel TCP socket using congestion control `cc`; returns (seconds,
    the algorithm the kernel actually used)."""
    start = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
        except OSError:
            pass  # the kernel lacks that algorithm: it uses its default, the summary says which
        s.connect(remote)
        chunk = 1 << 20
        for off in range(0, source.size, chunk):
            s.sendall(source.read(off, min(chunk, source.size - off)))
        s.shutdown(socket.SHUT_WR)
        while s.recv(4096):
            pass
        used = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
    return time.monotonic() - start, used


def run_demo(args) -> int:
    from netns.config import parse_rate

    try:
        rate = parse_rate(args.rate) if args.rate else None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    lab = Lab(args.lab, rate=rate)
    source = PatternSource(args.bytes)
    pcap = Path(args.pcap).resolve()
    summary: dict = {}
    print(f"building lab {lab.name!r}: {lab.ns_sender} — {lab.ns_router} — {lab.ns_receiver}"
          + (f", bottleneck {fmt_bps(rate)}" if rate else ""))
    lab.up()
    sink = cap = None
    try:
        gate.up(lab.ns_sender, lab.sender_if)
        print(f"gate up on {lab.sender_if} in {lab.ns_sender}")
        try:
            sink = SinkProcess(lab.ns_receiver, SINK_PORT, 1 if args.no_kernel else 2)
        except RuntimeError as exc:
            raise UserError(str(exc)) from None
        expected = source.sha256()
        rsts_before = tcp_out_rsts(lab.ns_sender)
        cap = Capture(lab.ns_sender, lab.sender_if, f"tcp port {SINK_PORT}", pcap)
        remote = (lab.receiver_ip, SINK_PORT)
        result = run_send(remote, source, args.cc, lab.ns_sender)
        ours = _report(sink)
        cap.stop()
        rsts = tcp_out_rsts(lab.ns_sender) - rsts_before
        st = gate.status(lab.ns_sender, lab.sender_if)
        ok, packets, complaint = cap.check()
        summary["usertcp"] = send_summary(result)
        summary["usertcp"].update({
            "cc": args.cc,
            "receiver_bytes": ours["bytes"],
            "receiver_goodput_bps": round(ours["bytes"] * 8 / max(ours["seconds"], 1e-9)),
            "sha256_match": ours["sha256"] == expected and ours["bytes"] == source.size,
        })
        summary["gate"] = st.get("verdicts", {})
        summary["kernel_rsts_from_sender_ns"] = rsts
        summary["pcap"] = {"path": str(pcap), "packets": packets, "tshark_ok": ok, "tshark_stderr": complaint}
        if not args.no_kernel:
            with netns.enter(lab.ns_sender):
                secs, used = kernel_send(remote, source, args.cc)
            theirs = _report(sink)
            summary["kernel"] = {
                "cc": used,
                "bytes": theirs["bytes"],
                "receiver_goodput_bps": round(theirs["bytes"] * 8 / max(theirs["seconds"], 1e-9)),
                "sender_seconds": round(secs, 6),
                "sha256_match": theirs["sha256"] == expected,
            }
    finally:
        if cap is not None:
            cap.stop()
        if sink is not None:
            sink.close()
        if not args.keep:
            gate.down(lab.ns_sender, lab.sender_if)
            lab.down()
    _print_summary(summary, lab, args)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    good = summary["usertcp"]["sha256_match"] and summary["pcap"]["tshark_ok"] and not summary["usertcp"]["error"]
    return 0 if good else 1


def _print_summary(s: dict, lab: Lab, args) -> None:
    from rich.console import Console
    from rich.table import Table

    u = s["usertcp"]
    t = Table(title="usertcp demo", show_header=False)
    t.add_row("path", f"{lab.sender_ip} → {lab.receiver_ip}:{SINK_PORT} via router"
              + (f", bottleneck {args.rate}" if args.rate else ", no bottleneck"))
    t.add_row("bytes delivered", f"{u['bytes']:,} ({fmt_bytes(u['bytes'])})")
    t.add_row("goodput (sender: SYN → last ACK)", fmt_bps(u["goodput_bps"]))
    t.add_row("goodput (receiver: first → last byte)", fmt_bps(u["receiver_goodput_bps"]))
    t.add_row("retransmitted", f"{fmt_bytes(u['retransmitted_bytes'])} "
              f"({u['fast_retransmits']} fast retransmits, {u['timeouts']} timeouts)")
    t.add_row("srtt / min rtt", f"{u['srtt_ms']} ms / {u['min_rtt_ms']} ms")
    t.add_row("send-queue memory at peak", fmt_bytes(u["sendq_peak_bytes"]))
    t.add_row("SHA-256 at receiver", "[green]match[/green]" if u["sha256_match"] else "[red]MISMATCH[/red]")
    g = s["gate"]
    t.add_row("gate verdicts", ", ".join(f"{k} {v}" for k, v in g.items() if v) or "none")
    t.add_row("kernel RSTs from sender namespace", str(s["kernel_rsts_from_sender_ns"]))
    p = s["pcap"]
    t.add_row("pcap", f"{p['path']} ({p['packets']} packets, "
              + ("tshark opens it cleanly)" if p["tshark_ok"] else f"tshark: {p['tshark_stderr']})"))
    if "kernel" in s:
        k = s["kernel"]
        ratio = u["receiver_goodput_bps"] / max(k["receiver_goodput_bps"], 1)
        t.add_row(f"kernel TCP ({k['cc']}) same path", f"{fmt_bps(k['receiver_goodput_bps'])}"
                  + ("" if k["sha256_match"] else " [red](hash mismatch)[/red]"))
        t.add_row("usertcp / kernel goodput", f"{ratio:.2f}")
    Console().print(t)
    if os.environ.get("USERTCP_DEMO_JSON"):
        print(json.dumps(s))
