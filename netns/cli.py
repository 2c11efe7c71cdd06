"""`usertcp lab up|down|status`: build, remove and inspect a lab from the shell.

A lab outlives the command that built it (its namespaces are bind mounts under /run/netns),
so `usertcp lab up` leaves it standing for experiments and `usertcp lab down` removes it.
"""

from __future__ import annotations

import argparse
import decimal
import os
import re
import sys
from typing import Any

DEFAULT_NAME = "ut"

_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_RATE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(bit|bits|bit/s)?", re.IGNORECASE)
_SIZE = {"": 1, "k": 10**3, "m": 10**6, "ki": 2**10, "mi": 2**20}
_SIZE_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ki|mi|k|m)?(b|bytes)?", re.IGNORECASE)


def parse_rate(text: str) -> int:
    """A rate in bits/s from "100mbit", "1gbit", "50M", "1.5G", "800kbit" or plain "2000000".

    Prefixes are decimal (k = 1000), as for link rates. "bps" and "B" are refused because
    tc(8) reads "bps" as *bytes* per second while most people mean bits.
    """
    s = text.strip()
    m = _RATE_RE.fullmatch(s)
    if m is None:
        if re.search(r"bps|B", s):
            hint = "'bps'/'B' are ambiguous (tc reads bps as bytes/s); write 'mbit' or 'M'"
        else:
            hint = "use a number with an optional k/m/g/t prefix and 'bit', e.g. 100mbit, 1gbit, 50M"
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: {hint}")
    bps = decimal.Decimal(m.group(1)) * _SI[m.group(2).lower()]
    if bps < 1 or bps != int(bps):
        raise argparse.ArgumentTypeError(
            f"invalid rate {text!r}: must be a whole number of bits/s, at least 1"
        )
    return int(bps)


def parse_bytes(text: str) -> int:
    """A size in bytes from "62500", "64k" (64 000), "1.25m", "64ki" (65 536) or "64kib"."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: use bytes with an optional k/m (x1000) or ki/mi (x1024) "
            f"suffix, e.g. 62500, 64k, 64ki"
        )
    n = decimal.Decimal(m.group(1)) * _SIZE[(m.group(2) or "").lower()]
    if n < 1 or n != int(n):
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: must be a whole number of bytes, at least 1"
        )
    return int(n)


def fmt_rate(bps: float) -> str:
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bit/s"


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help=f"lab name, 1-8 letters/digits (default: {DEFAULT_NAME}); "
        "namespaces are NAME-snd, NAME-rtr, NAME-rcv",
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lab up|down|status` to a top-level argparse subparsers object."""
    lab = subparsers.add_parser(
        "lab",
        help="build, remove or inspect a sender-router-receiver lab (needs root)",
        description="A line of three network namespaces, NAME-snd -- NAME-rtr -- NAME-rcv, "
        "with an optional TBF bottleneck on the router's egress toward the receiver.",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="{up,down,status}", required=True)

    up = sub.add_parser("up", help="build the lab (removing leftovers of one with that name)")
    _name_arg(up)
    up.add_argument(
        "--rate",
        type=parse_rate,
        help="bottleneck rate in bits/s: 100mbit, 1gbit, 50M, or plain bits/s (default: none)",
    )
    up.add_argument(
        "--queue",
        type=parse_bytes,
        metavar="BYTES",
        help="bottleneck queue limit in bytes (default: 10 ms at the rate, >= 20 frames)",
    )
    up.add_argument(
        "--burst",
        type=parse_bytes,
        metavar="BYTES",
        help="TBF bucket in bytes (default: ~1 ms at the rate; see netns/lab.py)",
    )
    up.add_argument("--mtu", type=int, default=1500, help="MTU of the lab's veths (default: 1500)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the lab (also after a crash)")
    _name_arg(down)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="show the lab; exit 0 if it is up, 1 if not")
    _name_arg(status)
    status.set_defaults(func=cmd_status)
    return lab


def _not_root(action: str) -> bool:
    if os.geteuid() == 0:
        return False
    print(
        f"usertcp lab {action}: needs root (it creates network namespaces and veths): "
        f"run `sudo usertcp lab {action}`",
        file=sys.stderr,
    )
    return True


def cmd_up(args: argparse.Namespace) -> int:
    if _not_root("up"):
        return 1
    from .lab import Lab

    try:
        lab = Lab(
            args.name, rate=args.rate, queue_bytes=args.queue, mtu=args.mtu,
            burst_bytes=args.burst,
        )
    except ValueError as e:
        print(f"usertcp lab up: {e}", file=sys.stderr)
        return 2
    try:
        lab.up()
    except Exception as e:  # LabError, OSError, NetlinkError: say what failed, not a traceback
        print(f"usertcp lab up: building lab {lab.name!r} failed: {e}", file=sys.stderr)
        return 1
    path = f"{lab.ns_sender} {lab.sender_ip} -> {lab.ns_router} -> {lab.ns_receiver} {lab.receiver_ip}"
    print(f"lab {lab.name!r} is up: {path}")
    bn = lab.status()["bottleneck"]
    if bn and bn.get("kind") == "tbf":
        print(
            f"bottleneck on {lab.router_receiver_if}: tbf {fmt_rate(bn['rate_bps'])}, "
            f"queue {bn['limit_bytes']} B, burst {bn['burst_bytes']} B"
        )
    print(f"run a command inside: nsenter --net=/run/netns/{lab.ns_sender} -- COMMAND")
    return 0


def _lab_call(verb: str, doing: str, fn, name: str):
    """Run `fn(name)`; on failure print one line and return (None, exit code): 2 for a bad
    name, 1 for a system error (OSError, or pyroute2's NetlinkError, which is not an OSError)."""
    try:
        return fn(name), None
    except ValueError as e:
        print(f"usertcp lab {verb}: {e}", file=sys.stderr)
        return None, 2
    except Exception as e:  # noqa: BLE001
        print(f"usertcp lab {verb}: {doing} lab {name!r} failed: {e}", file=sys.stderr)
        return None, 1


def cmd_down(args: argparse.Namespace) -> int:
    if _not_root("down"):
        return 1
    from .lab import down

    removed, code = _lab_call("down", "removing", down, args.name)
    if code is not None:
        return code
    if removed:
        print(f"lab {args.name!r} removed ({', '.join(removed)})")
    else:
        print(f"lab {args.name!r} was not up; nothing to remove")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if _not_root("status"):
        return 1
    from .lab import status

    st, code = _lab_call("status", "reading", status, args.name)
    if code is not None:
        return code
    if not st["exists"]:
        print(f"lab {args.name!r} is down")
        return 1
    _print_status(st)
    return 0 if st["up"] else 1


def _print_status(st: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    name = st["name"]
    state = "up" if st["up"] else "INCOMPLETE"
    table = Table(title=f"lab {name!r}: {state}", title_justify="left")
    for col in ("namespace", "interface", "state", "mtu", "addresses"):
        table.add_column(col)
    for ns, present in st["namespaces"].items():
        rows = [i for i in st["interfaces"] if i["namespace"] == ns]
        if not present:
            table.add_row(ns, "-", "[red]missing[/red]", "", "")
        for i in rows:
            table.add_row(ns, i["ifname"], i["state"], str(i["mtu"]), ", ".join(i["addresses"]))
    for ifname in st["root_leftovers"]:
        table.add_row("(root)", ifname, "[red]leftover[/red]", "", "")
    console.print(table)
    bn = st["bottleneck"]
    if bn and bn.get("kind") == "tbf":
        console.print(
            f"bottleneck {name}-r1: tbf {fmt_rate(bn['rate_bps'])}, queue {bn['limit_bytes']} B, "
            f"burst {bn['burst_bytes']} B; sent {bn.get('sent_packets', 0)} pkts, "
            f"dropped {bn.get('drops', 0)}, backlog {bn.get('backlog_bytes', 0)} B"
        )
    elif bn:
        console.print(f"bottleneck {name}-r1: none (qdisc {bn.get('kind')})")
    if not st["up"]:
        console.print(
            f"the lab is incomplete: rebuild with `usertcp lab up --name {name}` "
            f"or remove it with `usertcp lab down --name {name}`"
        )
