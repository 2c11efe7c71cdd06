"""`usertcp`: the command line. One sub-command per job; each error is one line saying what to do.

    usertcp lab up|down|status           the namespace lab (netns/)
    usertcp gate up|down|status          the eBPF gate on the sender's interface
    usertcp send HOST:PORT --bytes N | --file F [--cc NAME]
    usertcp sink --port P                a kernel-socket receiver that hashes what it gets
    usertcp serve --port P --root DIR    HTTP/1.1 static files from the Python stack (GET/HEAD, Range)
    usertcp demo                         the whole path, end to end, with a summary and a pcap
    usertcp cc list                      congestion-control plugins available
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

DEFAULT_LAB = "ut"
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from "1000", "64k", "256MiB", "1G", "1.5GB": k/M/G are decimal, Ki/Mi/Gi binary."""
    m = _SIZE_RE.fullmatch(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: e.g. 1000, 64k, 256MiB, 1GiB")
    num, prefix, binary = float(m.group(1)), m.group(2).lower(), bool(m.group(3))
    power = " kmgt".index(prefix) if prefix else 0
    n = num * ((1024 if binary else 1000) ** power)
    if n != int(n) or n < 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be a whole number of bytes")
    return int(n)


def parse_hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    try:
        import socket

        socket.inet_aton(host)
    except OSError:
        raise argparse.ArgumentTypeError(f"HOST must be an IPv4 address, got {host!r}") from None
    return host, int(port)


def fmt_bps(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.2f} {unit}"
    return f"{bps:.0f} bit/s"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f} B"


class UserError(Exception):
    """Printed as one line, exit status 2."""


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("this needs root (namespaces, packet sockets, BPF): run it with sudo or as root")


def _namespace(args, role: str) -> str | None:
    """The namespace a command runs in: --netns wins ('-' = the current one), else the lab's."""
    import netns

    if args.netns == "-":
        return None
    name = args.netns or f"{args.lab}-{role}"
    if not netns.exists(name):
        if args.netns:
            raise UserError(f"network namespace {name!r} does not exist")
        raise UserError(f"lab {args.lab!r} is not up (no namespace {name}): run `usertcp lab up --name {args.lab}`")
    return name


def _ns_args(p: argparse.ArgumentParser, role: str) -> None:
    p.add_argument("--lab", default=DEFAULT_LAB, help=f"lab name (default {DEFAULT_LAB}); runs in LAB-{role}")
    p.add_argument("--netns", help="run in this network namespace instead ('-' = the current one)")


# ---------------------------------------------------------------------------------------- gate


def cmd_gate(args) -> int:
    from . import gate

    _require_root()
    ns = _namespace(args, "snd")
    dev = args.dev or (f"{args.lab}-s0" if not args.netns else None)
    if dev is None:
        raise UserError("with --netns, name the interface too: --dev IFNAME")
    try:
        if args.action == "up":
            meta = gate.up(ns, dev)
            print(f"gate up on {dev}" + (f" in {ns}" if ns else "") + f" (maps pinned at {meta['pins']})")
        elif args.action == "down":
            gate.down(ns, dev)
            print(f"gate down on {dev}" + (f" in {ns}" if ns else ""))
        else:
            st = gate.status(ns, dev)
            if args.json:
                print(json.dumps(st, indent=2))
            elif not st["pinned"]:
                print(f"gate is down on {dev}" + (f" in {ns}" if ns else ""))
            else:
                _print_gate_status(st)
    except gate.GateError as exc:
        raise UserError(str(exc)) from None
    return 0


def _print_gate_status(st: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"gate on {st['ifname']}" + (f" in {st['netns']}" if st["netns"] else "")
                  + ("" if st["attached"] else " [red](maps pinned but programs not attached)[/red]"))
    t = Table("verdict", "count")
    for k, v in st["verdicts"].items():
        t.add_row(k, str(v))
    console.print(t)
    if st["flows"]:
        ft = Table("local", "remote", "state", "snd_una", "snd_wnd", "pkts out", "drops")
        for f in st["flows"]:
            ft.add_row(f["local"], f["remote"], f["state"], str(f["snd_una"]), str(f["snd_wnd"]),
                       str(f["pkts_out"]), str(f["drops"]))
        console.print(ft)


# ---------------------------------------------------------------------------------------- send


def make_source(args):
    from .sources import FileSource, PatternSource

    if args.file:
        try:
            return FileSource(args.file)
        except OSError as exc:
            raise UserError(f"cannot read {args.file}: {exc.strerror}") from None
    return PatternSource(args.bytes, seed=args.seed)


def run_send(remote, source, cc: str, ns: str | None, *, quiet: bool = False, sport: int = 0, **engine):
    """Send with a progress bar, in namespace `ns`; returns the SendResult."""
    import netns

    from .gate import GateError
    from .sender import SendError, send

    def go():
        if quiet:
            return send(remote, source, cc, sport=sport, netns=ns, **engine)
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("[bold]usertcp[/bold] {task.description}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), transient=False) as progress:
            task = progress.add_task(f"{cc} → {remote[0]}:{remote[1]}", total=source.size)
            result = send(remote, source, cc, sport=sport, netns=ns, **engine,
                          on_tick=lambda conn: progress.update(task, completed=conn.delivered))
            progress.update(task, completed=result.conn.delivered)
            return result

    try:
        if ns is None:
            return go()
        with netns.enter(ns):
            return go()
    except (SendError, GateError) as exc:
        raise UserError(str(exc)) from None


def send_summary(result) -> dict:
    conn = result.conn
    st = conn.stats()
    return {
        "bytes": conn.delivered,
        "seconds": round(result.seconds, 6),
        "goodput_bps": round(result.goodput_bps),
        "retransmitted_bytes": st["bytes_retrans"],
        "fast_retransmits": st["fast_retransmits"],
        "timeouts": st["timeouts"],
        "srtt_ms": round(st["srtt"] * 1e3, 3) if st["srtt"] else None,
        "min_rtt_ms": round(st["min_rtt"] * 1e3, 3) if st["min_rtt"] else None,
        "sendq_peak_bytes": st["sendq_peak_bytes"],
        "ecn": st["ecn"],
        "tlp_probes": st["tlp_probes"],
        "undos": st["undos"],
        "error": conn.error,
        "gate_drops_seen_by_sender": result.send_errors,
    }


def cc_params(args) -> dict[str, str]:
    """``--cc-param k=v`` options as a dict, checked against the controller's parameters now,
    so a typo fails before the lab is touched."""
    from .cc import registry

    params: dict[str, str] = {}
    for item in args.cc_param or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--cc-param {item!r}: expected NAME=VALUE (see `usertcp cc show {args.cc}`)")
        params[key.strip()] = value.strip()
    try:
        registry.load(args.cc, 1448, 0.0, params)
    except registry.CCLoadError as exc:
        raise UserError(f"{exc} (see `usertcp cc show {args.cc}`)" if params else str(exc)) from None
    return params


def cmd_send(args) -> int:
    _require_root()
    from .cc.log import CcLogWriter

    params = cc_params(args)
    ns = _namespace(args, "snd")
    source = make_source(args)
    log = None
    if args.cc_log:
        try:
            log = CcLogWriter(args.cc_log, meta={"cc": args.cc, "params": params, "remote": list(args.remote)})
        except OSError as exc:
            raise UserError(f"cannot write --cc-log {args.cc_log}: {exc.strerror}") from None
    try:
        result = run_send(args.remote, source, args.cc, ns, quiet=args.quiet or args.json, sport=args.sport,
                          ecn=args.ecn, pacing=args.pacing, cc_params=params, cc_log=log)
    finally:
        if log is not None:
            log.close()
    summary = send_summary(result)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"sent {fmt_bytes(summary['bytes'])} in {summary['seconds']:.3f} s: {fmt_bps(summary['goodput_bps'])}, "
              f"retransmitted {fmt_bytes(summary['retransmitted_bytes'])}, srtt {summary['srtt_ms']} ms")
    if result.conn.error:
        msg = {"refused": f"peer {args.remote[0]}:{args.remote[1]} refused the connection: is a sink listening?",
               "connect timeout": f"unreachable peer {args.remote[0]}:{args.remote[1]}: no answer to SYN",
               }.get(result.conn.error, f"connection failed: {result.conn.error}")
        raise UserError(msg)
    return 0


# ---------------------------------------------------------------------------------------- sink


def cmd_sink(args) -> int:
    import netns

    from .sink import serve

    ns = _namespace(args, "rcv")
    if ns is None:
        serve(args.port, count=args.count)
    else:
        with netns.enter(ns):
            serve(args.port, count=args.count)
    return 0


# ---------------------------------------------------------------------------------------- serve


def cmd_serve(args) -> int:
    """Serve files over HTTP/1.1 with the Python stack until interrupted (or --duration)."""
    _require_root()
    import signal

    import netns

    from .gate import GateError
    from .server import Server, ServeError

    ns = _namespace(args, "snd")

    def go() -> int:
        try:
            server = Server(args.root, args.port, ip=args.bind, cc=args.cc, cc_params=cc_params(args), netns=ns,
                            idle_timeout=args.idle_timeout, ecn=args.ecn, pacing=args.pacing)
        except (ServeError, GateError) as exc:
            raise UserError(str(exc)) from None
        with server:
            signal.signal(signal.SIGTERM, lambda *_: server.stop())
            print(f"usertcp serve: http://{server.ip}:{server.port}/ from {args.root} ({args.cc})", flush=True)
            st = server.stats

            def tick() -> None:
                if not args.quiet:
                    print(f"  {len(server.loop.flows)} open, {st.accepted} accepted, {st.requests} requests, "
                          f"{fmt_bytes(st.bytes_sent)} sent", flush=True)

            until = time.monotonic() + args.duration if args.duration else None
            try:
                server.run(until=until, on_tick=tick, tick=5.0)
            except KeyboardInterrupt:
                pass
            summary = {"accepted": st.accepted, "closed": st.closed, "requests": st.requests,
                       "bytes_sent": st.bytes_sent, "bytes_retrans": st.bytes_retrans,
                       "errors": st.errors, "syn_without_flow": st.syn_without_flow}
            print(json.dumps(summary) if args.json else
                  f"usertcp serve: {st.accepted} connections, {st.requests} requests, "
                  f"{fmt_bytes(st.bytes_sent)} sent ({fmt_bytes(st.bytes_retrans)} again), errors {st.errors or 'none'}",
                  flush=True)
        return 0

    if ns is None:
        return go()
    with netns.enter(ns):
        return go()


# ---------------------------------------------------------------------------------------- cc


def cmd_cc(args) -> int:
    from .cc import registry

    if args.action == "list":
        rows = []
        for name in registry.available():
            try:
                cls = registry.resolve(name)
                rows.append((name, _first_line(cls.__doc__)))
            except registry.CCLoadError as exc:
                rows.append((name, f"(cannot load: {exc})"))
        width = max(len(n) for n, _ in rows)
        for name, doc in rows:
            print(f"{name:<{width}}  {doc}")
        return 0
    if not args.name:
        raise UserError("usertcp cc show NAME: which controller? (`usertcp cc list`)")
    try:
        cls = registry.resolve(args.name)
    except registry.CCLoadError as exc:
        raise UserError(str(exc)) from None
    info = {
        "name": cls.name,
        "class": f"{cls.__module__}:{cls.__qualname__}",
        "api_version": cls.api_version,
        "owns_window": callable(getattr(cls, "cong_control", None)),
        "summary": _first_line(cls.__doc__),
        "params": [{"name": p.name, "type": p.type.__name__, "default": p.default, "min": p.min,
                    "max": p.max, "choices": list(p.choices) if p.choices else None, "help": p.help}
                   for p in cls.params.values()],
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['name']}  ({info['class']}, API {info['api_version']})")
    print(f"  {info['summary']}")
    if info["owns_window"]:
        print("  owns the window (cong_control): sees every ACK, recovery included")
    if not info["params"]:
        print("  no parameters")
        return 0
    print("  parameters (--cc-param NAME=VALUE):")
    for p in info["params"]:
        bounds = []
        if p["min"] is not None:
            bounds.append(f">= {p['min']}")
        if p["max"] is not None:
            bounds.append(f"<= {p['max']}")
        if p["choices"]:
            bounds.append("one of " + ", ".join(map(str, p["choices"])))
        extra = f" ({'; '.join(bounds)})" if bounds else ""
        print(f"    {p['name']} = {p['default']!r}  [{p['type']}]{extra}")
        print(f"        {p['help']}")
    return 0


def _first_line(doc: str | None) -> str:
    """A docstring's first paragraph, on one line."""
    para = (doc or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in para.splitlines())


def cmd_demo(args) -> int:
    from .demo import run_demo

    _require_root()
    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    import netns.cli

    p = argparse.ArgumentParser(prog="usertcp", description="A Python TCP sender behind an eBPF gate, in a namespace lab.")
    sub = p.add_subparsers(dest="command", required=True)
    netns.cli.register(sub)

    g = sub.add_parser("gate", help="the eBPF gate on the sender's interface")
    g.add_argument("action", choices=["up", "down", "status"])
    _ns_args(g, "snd")
    g.add_argument("--dev", help="interface (default: the lab's sender interface LAB-s0)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gate)

    s = sub.add_parser("send", help="send data with the Python stack through the gate")
    s.add_argument("remote", type=parse_hostport, metavar="HOST:PORT")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", help="send this file (memory-mapped)")
    what.add_argument("--bytes", type=parse_size, help="send N bytes of a deterministic pattern (e.g. 256MiB)")
    s.add_argument("--seed", type=int, default=0, help="pattern seed (with --bytes)")
    s.add_argument("--cc", default="cubic", help="congestion control: a name (`usertcp cc list`) or path/to/plugin.py[:Class]")
    _cc_param_arg(s)
    s.add_argument("--cc-log", metavar="FILE", help="write the controller's state per ACK as JSON lines")
    s.add_argument("--sport", type=int, default=0, help="local port (default: any free one)")
    s.add_argument("--ecn", action="store_true", help="request ECN (RFC 3168) in the handshake")
    s.add_argument("--pacing", action="store_true",
                   help="pace at Linux's default rate when the controller sets none (tcp_update_pacing_rate)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the summary as JSON")
    _ns_args(s, "snd")
    s.set_defaults(func=cmd_send)

    k = sub.add_parser("sink", help="kernel TCP receiver: count and SHA-256 what arrives")
    k.add_argument("--port", type=int, default=5001)
    k.add_argument("--count", type=int, default=0, help="exit after N connections (0: never)")
    _ns_args(k, "rcv")
    k.set_defaults(func=cmd_sink)

    v = sub.add_parser("serve", help="serve files over HTTP/1.1 with the Python stack, through the gate")
    v.add_argument("--port", type=int, default=8080)
    v.add_argument("--root", required=True, help="directory to serve (GET/HEAD, Range, keep-alive)")
    v.add_argument("--bind", help="address to serve on (default: the namespace's only IPv4 address)")
    v.add_argument("--cc", default="cubic", help="congestion control for every connection")
    _cc_param_arg(v)
    v.add_argument("--ecn", action="store_true", help="accept ECN (RFC 3168) when a client asks for it")
    v.add_argument("--pacing", action="store_true", help="pace at Linux's default rate (tcp_update_pacing_rate)")
    v.add_argument("--idle-timeout", type=float, default=60.0, help="close keep-alive connections idle this long (s)")
    v.add_argument("--duration", type=float, default=0, help="stop after this many seconds (0: until interrupted)")
    v.add_argument("--quiet", action="store_true", help="no periodic status lines")
    v.add_argument("--json", action="store_true", help="print the final summary as JSON")
    _ns_args(v, "snd")
    v.set_defaults(func=cmd_serve)

    d = sub.add_parser("demo", help="lab + gate + 256 MiB transfer + summary + pcap, then tear down")
    d.add_argument("--lab", default="demo", help="lab name for the demo (default: demo)")
    d.add_argument("--bytes", type=parse_size, default=256 << 20)
    d.add_argument("--cc", default="cubic")
    d.add_argument("--rate", help="bottleneck rate on the router, e.g. 1gbit (default: none)")
    d.add_argument("--pcap", default="out/demo.pcap", help="where to write the flow's capture")
    d.add_argument("--no-kernel", action="store_true", help="skip the kernel TCP comparison run")
    d.add_argument("--keep", action="store_true", help="leave the lab and gate up afterwards")
    d.add_argument("--json", help="also write the summary as JSON to this file")
    d.set_defaults(func=cmd_demo)

    c = sub.add_parser("cc", help="congestion-control plugins")
    c.add_argument("action", choices=["list", "show"])
    c.add_argument("name", nargs="?", help="with show: a name, module:Class or path/to/file.py[:Class]")
    c.add_argument("--json", action="store_true", help="with show: as JSON")
    c.set_defaults(func=cmd_cc)
    return p


def _cc_param_arg(parser) -> None:
    parser.add_argument("--cc-param", action="append", metavar="NAME=VALUE",
                        help="set a parameter of the controller (repeatable; `usertcp cc show NAME` lists them)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as exc:
        print(f"usertcp: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("usertcp: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        import netns

        if isinstance(exc, netns.LabError):
            print(f"usertcp: {exc}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
