"""`usertcp lab up|down|status`: build, remove and inspect a lab from the shell.

A lab outlives the command that built it (its namespaces are bind mounts under /run/netns),
so `usertcp lab up` leaves it standing for experiments and `usertcp lab down` removes it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .config import (
    LabConfig, fmt_rate, parse_bytes, parse_percent, parse_queue, parse_rate, parse_time, preset,
    presets,
)

DEFAULT_NAME = "ut"


def _arg(parse):
    """An argparse `type=` from a config parser: argparse would print only "invalid <name> value"
    for a ValueError, and the parsers' messages say what to write instead."""

    def convert(text: str):
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")
    return convert


def _name_arg(p: argparse.ArgumentParser, default: str | None = DEFAULT_NAME) -> None:
    p.add_argument(
        "--name",
        default=default,
        help=f"lab name, 1-8 letters/digits (default: {DEFAULT_NAME}); "
        "namespaces are NAME-snd[N], NAME-rtr, NAME-rcv",
    )


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `lab up|down|status|presets` to a top-level argparse subparsers object."""
    lab = subparsers.add_parser(
        "lab",
        help="build, remove or inspect a sender(s)-router-receiver lab (needs root)",
        description="Network namespaces NAME-snd[2..N] -- NAME-rtr -- NAME-rcv: per-direction "
        "delay and reordering (NFQUEUE delay line), a TBF bottleneck toward the receiver, "
        "random loss (XDP).",
    )
    sub = lab.add_subparsers(dest="lab_command", metavar="{up,down,status,presets}", required=True)

    up = sub.add_parser(
        "up", help="build the lab (removing leftovers of one with that name)",
        description="Build a lab. A --preset or a -c TOML file gives a base configuration; "
        "flags override it. Delays are one-way: --delay 20ms gives a 40 ms RTT.",
    )
    _name_arg(up, default=None)
    up.add_argument("-c", "--config", metavar="FILE", help="lab configuration in TOML (see `usertcp lab presets`)")
    up.add_argument("--preset", help="a named configuration (list: `usertcp lab presets`)")
    up.add_argument("--rate", type=_arg(parse_rate), help="bottleneck rate: 50mbit, 1gbit, 50M (default: none)")
    up.add_argument("--delay", type=_arg(parse_time), help="one-way delay, each direction: 20ms, 150us")
    up.add_argument("--delay-rev", type=_arg(parse_time), help="one-way delay receiver->sender (default: --delay)")
    up.add_argument("--queue", type=_arg(parse_queue),
                    help="bottleneck queue: 1bdp, 100p (packets), 256k (bytes) (default: 1 BDP with a "
                    "delay, else 10 ms at the rate)")
    up.add_argument("--burst", type=_arg(parse_bytes), metavar="BYTES",
                    help="TBF bucket (default: ~1 ms at the rate; see netns/lab.py)")
    up.add_argument("--loss", type=_arg(parse_percent), help="random loss of data packets: 0.1%%")
    up.add_argument("--loss-rev", type=_arg(parse_percent), help="random loss of packets to the senders (ACKs)")
    up.add_argument("--loss-seed", type=int, help="repeat the same loss pattern, packet by packet, "
                    "in every run with this seed (default: a fresh random pattern)")
    up.add_argument("--reorder", type=_arg(parse_percent), metavar="PCT",
                    help="fraction of data packets held back by --reorder-delay so later ones "
                    "overtake them: 1%%")
    up.add_argument("--reorder-rev", type=_arg(parse_percent), metavar="PCT",
                    help="the same for packets to the senders (ACKs)")
    up.add_argument("--reorder-delay", type=_arg(parse_time), metavar="TIME",
                    help="extra hold of a reordered packet, on top of the delay (default: 1ms)")
    up.add_argument("--senders", type=int, help="sender namespaces sharing the bottleneck (default: 1)")
    up.add_argument("--mtu", type=int, help="MTU of the lab's veths (default: 1500)")
    up.add_argument("--json", action="store_true", help="print the lab's status as JSON")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="remove the lab (also after a crash)")
    _name_arg(down)
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="show the lab and its measured base RTT; exit 0 if it is up, 1 if not")
    _name_arg(status)
    status.add_argument("--no-probe", action="store_true", help="skip the ICMP base-RTT probe")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    pre = sub.add_parser("presets", help="list the named lab configurations")
    pre.add_argument("--json", action="store_true")
    pre.set_defaults(func=cmd_presets)
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


def config_from_args(args: argparse.Namespace) -> LabConfig:
    """The lab configuration a command line asks for: preset or file, then flags on top."""
    if args.config and args.preset:
        raise ValueError("give either --preset or -c/--config, not both")
    overrides = {
        "name": args.name, "rate": args.rate, "delay": args.delay, "delay_rev": args.delay_rev,
        "queue": args.queue, "burst_bytes": args.burst, "loss": args.loss,
        "loss_rev": args.loss_rev, "loss_seed": args.loss_seed, "reorder": args.reorder, "reorder_rev": args.reorder_rev,
        "reorder_delay": args.reorder_delay, "senders": args.senders, "mtu": args.mtu,
    }
    if args.preset:
        return preset(args.preset, **overrides)
    base = LabConfig.from_toml(args.config) if args.config else LabConfig()
    return base.replace(**overrides)


def cmd_up(args: argparse.Namespace) -> int:
    if _not_root("up"):
        return 1
    from .lab import Lab, reorder_warning

    try:
        lab = Lab.from_config(config_from_args(args))
    except (ValueError, OSError) as e:
        print(f"usertcp lab up: {e}", file=sys.stderr)
        return 2
    warning = reorder_warning(lab.config)
    if warning:
        print(f"usertcp lab up: warning: {warning}", file=sys.stderr)
    try:
        lab.up()
    except Exception as e:  # LabError, OSError, NetlinkError: say what failed, not a traceback
        print(f"usertcp lab up: building lab {lab.name!r} failed: {e}", file=sys.stderr)
        return 1
    st = lab.status(probe=True)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    senders = ", ".join(f"{ns} {ip}" for ns, _, ip in (lab.sender(i) for i in range(len(lab.config.senders))))
    print(f"lab {lab.name!r} is up: {senders} -> {lab.ns_router} -> {lab.ns_receiver} {lab.receiver_ip}")
    print(f"path: {lab.config.describe()}")
    bn = st["bottleneck"]
    if bn and bn.get("kind") == "tbf":
        print(
            f"bottleneck on {lab.router_receiver_if}: tbf {fmt_rate(bn['rate_bps'])}, "
            f"queue {bn['limit_bytes']} B, burst {bn['burst_bytes']} B"
        )
    _print_rtt(st)
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

    st, code = _lab_call("status", "reading", lambda n: status(n, probe=not args.no_probe), args.name)
    if code is not None:
        return code
    if args.json:
        print(json.dumps(st, indent=1))
        return 0 if st["up"] else 1
    if not st["exists"]:
        print(f"lab {args.name!r} is down")
        return 1
    _print_status(st)
    return 0 if st["up"] else 1


def cmd_presets(args: argparse.Namespace) -> int:
    table = presets()
    if args.json:
        print(json.dumps({n: {"description": d, **c.to_dict()} for n, (d, c) in table.items()}, indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title="lab presets: usertcp lab up --preset NAME [flags override]", title_justify="left")
    for col in ("name", "path", "what it models"):
        t.add_column(col)
    for name, (description, config) in table.items():
        t.add_row(name, config.describe(), description)
    Console().print(t)
    return 0


def _print_rtt(st: dict[str, Any]) -> None:
    for r in st.get("base_rtt") or []:
        conf = f" (configured {r['configured_ms']:g} ms)" if r["configured_ms"] is not None else ""
        if r["min_ms"] is None:
            print(f"base RTT from {r['namespace']}: no reply to {r['sent']} probes{conf}")
        else:
            print(
                f"base RTT from {r['namespace']}: min {r['min_ms']:.3f} / median {r['median_ms']:.3f} "
                f"/ max {r['max_ms']:.3f} ms, {r['lost']}/{r['sent']} lost{conf}"
            )


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
    if st["description"]:
        console.print(f"path: {st['description']}")
    bn = st["bottleneck"]
    if bn and bn.get("kind") == "tbf":
        console.print(
            f"bottleneck {name}-rc: tbf {fmt_rate(bn['rate_bps'])}, queue {bn['limit_bytes']} B, "
            f"burst {bn['burst_bytes']} B; sent {bn.get('sent_packets', 0)} pkts, "
            f"dropped {bn.get('drops', 0)}, backlog {bn.get('backlog_bytes', 0)} B"
        )
    elif bn:
        console.print(f"bottleneck {name}-rc: none (qdisc {bn.get('kind')})")
    _print_delay(console, st["delay"])
    for direction, c in (st["loss"] or {}).items():
        if c:
            rate = c["dropped"] / c["packets"] if c["packets"] else 0.0
            console.print(
                f"{direction} loss: p={c['probability']:.4%}, dropped {c['dropped']} of "
                f"{c['packets']} packets ({rate:.4%})"
                + (f", pattern of seed {c['seed']}" if c.get("seed") else "")
            )
    _print_rtt(st)
    if not st["up"]:
        console.print(
            f"the lab is incomplete: rebuild with `usertcp lab up --name {name}` "
            f"or remove it with `usertcp lab down --name {name}`"
        )


def _print_delay(console: Any, delay: dict[str, Any] | None) -> None:
    """The delay line's queues, and loudly whether it is dead or stalled."""
    if delay is None:
        return
    from rich.table import Table

    from . import delayline

    if not delay["alive"]:
        console.print(
            f"[red]delay line DEAD[/red] (pid {delay['pid']}): delayed routes forward nothing; "
            f"see {delay['log']}, then rebuild with `usertcp lab up`"
        )
    elif delay["stalled"]:
        console.print(f"[red]delay line STALLED[/red] (pid {delay['pid']}): no report for "
                      f"{delay['heartbeat_age_s'] or 0:.1f} s")
    t = Table(title=f"delay line (pid {delay['pid']})", title_justify="left")
    for col in ("sender", "direction", "delay", "packets", "held", "release error p50/p99/max us",
                "reordered", "queue drops", "undelivered drops"):
        t.add_column(col)
    for q in delay["queues"].values():
        err = "/".join(delayline.format_error_us(q.get(k)) for k in ("err_p50_us", "err_p99_us"))
        err += "/" + ("-" if q.get("late_max_us") is None else f"{q['late_max_us']:g}")
        t.add_row(
            str(q["sender"]), q["direction"], f"{q['delay_s'] * 1e3:g} ms", str(q["packets"]),
            str(q["held"]), err, str(q["reordered"]) if q.get("reorder") else "-",
            str(q.get("queue_dropped", "-")), str(q.get("user_dropped", "-")),
        )
    console.print(t)
    if delay.get("idle_poll") is False:
        console.print(f"[yellow]CPUs may halt between releases[/yellow] ({delay.get('idle_poll_error')}): "
                      "on a VM, releases can be late by milliseconds")
