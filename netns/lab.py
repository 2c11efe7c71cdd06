"""The lab: three network namespaces in a line, sender -- router -- receiver.

    {name}-snd                 {name}-rtr                       {name}-rcv
    {name}-s0 198.18.1.1/24 -- {name}-r0 198.18.1.254/24
                               {name}-r1 198.18.2.254/24 -- {name}-c0 198.18.2.1/24
                               (TBF bottleneck on egress)

The router forwards between the two /24s; the sender and the receiver have default routes via
the router. Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range) and are the same in
every lab: labs are separate namespaces, so they never see each other. Nothing of a lab stays in
the root namespace but the three files under /run/netns.

Built with pyroute2 (0.9.7) over netlink; nothing here shells out to `ip` or `tc`. Sysctls
(forwarding, IPv6 off) are plain writes to /proc/sys from inside the namespace.

How pyroute2 is used, and why:
  * Namespaces: made without a fork. `pyroute2.netns.create` forks a child that unshares and
    bind-mounts its namespace; forking a multi-threaded Python process (an event loop, a test
    with server threads) risks a child stuck on a lock another thread held, and its child also
    runs `ldconfig -p` (ctypes.util.find_library) every time (~10 ms). Instead this thread
    unshares a fresh namespace, `pyroute2.netns.attach` bind-mounts it under /run/netns exactly
    as `create` would (same code path, `_create` with a pid), and the thread setns()es back.
    Removal is `pyroute2.netns.remove` (umount + unlink).
  * Netlink sockets *inside* a namespace are opened by entering the namespace on this thread
    (`netns.enter`) and creating a plain `IPRoute()` there: a netlink socket stays bound to the
    namespace it was created in. `IPRoute(netns=NAME)` would do the same by forking a child
    per socket, and with its default flags=O_CREAT it silently *creates* a missing namespace --
    wrong for `status()` and `down()`, which must never create anything.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from .ns import LabError, _setns, _unshare_net, current, enter, exists, path

log = logging.getLogger(__name__)

SENDER_IP = "198.18.1.1"
ROUTER_SENDER_IP = "198.18.1.254"
ROUTER_RECEIVER_IP = "198.18.2.254"
RECEIVER_IP = "198.18.2.1"
PREFIXLEN = 24

ETH_HLEN = 14
#: TBF's rate field is a u32 in bytes/s (struct tc_ratespec); faster needs TCA_TBF_RATE64,
#: which pyroute2 0.9.7's tbf module does not send.
MAX_RATE_BPS = (2**32 - 1) * 8
#: The largest GSO super-packet the kernel builds by default (gso_max_size, 64 KB).
GSO_MAX_BYTES = 65536
#: TBF's bucket travels as a time in psched ticks of 64 ns (PSCHED_SHIFT 6,
#: include/net/pkt_sched.h); the kernel turns it back into bytes rounding down.
PSCHED_TICK_NS = 64

_NAME_RE = re.compile(r"[A-Za-z0-9]{1,8}")


def validate_name(name: str) -> str:
    """A lab name: 1-8 ASCII letters or digits.

    Interface names are limited to 15 bytes (IFNAMSIZ 16 with the NUL); the longest one we build
    is "{name}-s0", so 8 characters leave room, and a plain alphabet keeps names safe in paths
    and shell commands.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid lab name {name!r}: use 1 to 8 ASCII letters or digits (e.g. 'ut', 'lab2'), "
            f"so that interface names like '{{name}}-s0' fit in Linux's 15-character limit"
        )
    return name


@dataclasses.dataclass(frozen=True)
class Names:
    """Every name a lab uses, derived from its name alone (so `down(name)` needs no object)."""

    name: str

    @property
    def ns_sender(self) -> str:
        return f"{self.name}-snd"

    @property
    def ns_router(self) -> str:
        return f"{self.name}-rtr"

    @property
    def ns_receiver(self) -> str:
        return f"{self.name}-rcv"

    @property
    def namespaces(self) -> tuple[str, str, str]:
        return (self.ns_sender, self.ns_router, self.ns_receiver)

    @property
    def sender_if(self) -> str:
        return f"{self.name}-s0"

    @property
    def router_sender_if(self) -> str:
        return f"{self.name}-r0"

    @property
    def router_receiver_if(self) -> str:
        return f"{self.name}-r1"

    @property
    def receiver_if(self) -> str:
        return f"{self.name}-c0"

    @property
    def interfaces(self) -> tuple[str, str, str, str]:
        return (self.sender_if, self.router_sender_if, self.router_receiver_if, self.receiver_if)

    def layout(self) -> list[tuple[str, str, str]]:
        """(namespace, interface, address/prefix) for every lab interface."""
        return [
            (self.ns_sender, self.sender_if, f"{SENDER_IP}/{PREFIXLEN}"),
            (self.ns_router, self.router_sender_if, f"{ROUTER_SENDER_IP}/{PREFIXLEN}"),
            (self.ns_router, self.router_receiver_if, f"{ROUTER_RECEIVER_IP}/{PREFIXLEN}"),
            (self.ns_receiver, self.receiver_if, f"{RECEIVER_IP}/{PREFIXLEN}"),
        ]


# --------------------------------------------------------------------------------------------
# Bottleneck parameters


def default_queue_bytes(rate: int, mtu: int = 1500) -> int:
    """The bottleneck queue when none is given: 10 ms at the rate, at least 20 full frames.

    10 ms is a BDP-sized buffer for the short RTTs of a lab without a delay line and a fraction
    of one with it (experiments that care pass queue_bytes = their BDP). The floor of 20 frames
    keeps slow links from holding fewer packets than a TCP initial window (10) plus room.
    At 50 Mbit/s: 62 500 B; at 1 Gbit/s: 1.25 MB; at 1 Mbit/s: 30 280 B (with mtu 1500).
    """
    return int(max(20 * (mtu + ETH_HLEN), rate / 8 * 0.010))


def default_burst_bytes(rate: int, mtu: int = 1500) -> int:
    """TBF bucket size: about 1 ms at the rate, at least two frames, below 64 KB up to ~1 Gbit/s.

    Why (net/sched/sch_tbf.c, tbf_enqueue/tbf_segment/tbf_dequeue):
      * A packet (or GSO segment) longer than the bucket never gets enough tokens, so TBF
        drops it: the bucket must hold one frame (mtu + 14 bytes of Ethernet header, what
        qdisc_pkt_len counts on a veth). Two frames is the floor.
      * TBF's watchdog is an hrtimer, but it fires late by the timer/softirq latency, and
        tokens beyond the bucket are lost while it is late: a bucket covering less time than
        that latency costs rate. One millisecond covers it (the classic "burst >= rate/HZ"
        with HZ=1000; this kernel has HZ=250 and high-resolution timers). Measured here with
        kernel TCP: 1 Gbit/s with a one-frame bucket gave 24% of the rate; 2 Gbit/s with a
        64 KB bucket (0.26 ms) gave 89.5%, with 1 ms 95.6% (the ceiling for 1448/1514).
      * A GSO super-packet longer than the bucket is segmented by TBF itself and each segment
        queued on its own; one that fits goes through whole. With a bucket below a 64 KB
        bundle the queue limit counts and tail-drops single packets, as on a real link;
        measured at 50 Mbit/s: a 6 KB bucket gave 11 drops and 10 retransmissions, a 64 KB
        bucket 12 drops (whole bundles) and 215 retransmissions.
    So: 1 ms at the rate, clamped to [2 frames, 64 KB - 1 frame] as long as that clamp still
    leaves at least 0.5 ms of bucket (rates up to ~1 Gbit/s); above that, rate accuracy wins
    and the bucket is 1 ms. At 50 Mbit/s: 6 250 B; at 1 Gbit/s: 64 022 B; at 2 Gbit/s: 250 kB.
    """
    frame = mtu + ETH_HLEN
    one_ms = rate / 8 / 1000
    below_bundle = GSO_MAX_BYTES - frame
    if one_ms / 2 <= below_bundle:
        return int(max(2 * frame, min(one_ms, below_bundle)))
    return int(one_ms)


@dataclasses.dataclass(frozen=True)
class Bottleneck:
    """TBF parameters on the router's egress toward the receiver."""

    rate: int  # bits/s
    queue_bytes: int  # TBF limit: bytes waiting in the queue before tail drop
    burst_bytes: int  # TBF bucket

    @classmethod
    def make(
        cls, rate: int | None, queue_bytes: int | None, burst_bytes: int | None, mtu: int
    ) -> "Bottleneck | None":
        if rate is None:
            if queue_bytes is not None or burst_bytes is not None:
                raise ValueError("queue_bytes and burst_bytes need a rate (bits/s)")
            return None
        if isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"rate must be a positive int in bits/s, got {rate!r}")
        if rate > MAX_RATE_BPS:
            raise ValueError(
                f"rate {rate} bit/s is above TBF's 32-bit limit ({MAX_RATE_BPS} bit/s)"
            )
        frame = mtu + ETH_HLEN
        burst = default_burst_bytes(rate, mtu) if burst_bytes is None else int(burst_bytes)
        if burst < frame:
            raise ValueError(
                f"burst_bytes {burst} is smaller than one frame ({frame} B): TBF would drop "
                f"every full-size packet"
            )
        queue = default_queue_bytes(rate, mtu) if queue_bytes is None else int(queue_bytes)
        if queue < frame:
            raise ValueError(
                f"queue_bytes {queue} is smaller than one frame ({frame} B): the queue could "
                f"not hold a single full-size packet"
            )
        return cls(rate=rate, queue_bytes=queue, burst_bytes=burst)


# --------------------------------------------------------------------------------------------
# Netlink plumbing


@contextmanager
def _ipr_in(ns: str | None) -> Iterator[IPRoute]:
    """An IPRoute whose socket lives in namespace `ns` (None: the caller's namespace).

    The socket is created while this thread is inside `ns` and closed on exit, so no netlink
    fds leak; the thread stays inside `ns` for the whole block, which also makes writes to
    /proc/sys/net apply to `ns` (net/sysctl_net.c resolves them by the opener's namespace).
    """
    if ns is None:
        with IPRoute() as ipr:
            yield ipr
        return
    with enter(ns):
        with IPRoute() as ipr:
            yield ipr


def _write_sysctl(key: str, value: str) -> None:
    """Write /proc/sys/<key> in the calling thread's current network namespace."""
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


def _require_index(ipr: IPRoute, ifname: str, ns: str) -> int:
    idx = _index(ipr, ifname)
    if idx is None:
        raise LabError(f"interface {ifname} is missing in namespace {ns}")
    return idx


# --------------------------------------------------------------------------------------------
# Building


def _create_netns(ns: str) -> None:
    """Create network namespace `ns` and name it /run/netns/NS, from this thread, without forking.

    The thread moves into a fresh namespace, pyroute2 bind-mounts /proc/thread-self/ns/net
    (the thread's own; /proc/self would name the main thread's), and the thread returns.
    """
    original = current()
    try:
        _unshare_net()
        try:
            pr_netns.attach(ns, "thread-self")
        finally:
            _setns(original)
    finally:
        os.close(original)


def _create_namespaces(names: Names) -> None:
    for ns in names.namespaces:
        _create_netns(ns)
        with enter(ns):
            # A quiet lab: no IPv6 link-local addresses, router solicitations or MLD reports on
            # the lab's interfaces (usertcp is IPv4), so traces show only the experiment.
            # Interfaces moved in later get the namespace's `default` conf when re-registered.
            _write_sysctl("net/ipv6/conf/all/disable_ipv6", "1")
            _write_sysctl("net/ipv6/conf/default/disable_ipv6", "1")
            # Forwarding only on the router; set explicitly on the ends too, because a new
            # namespace may inherit the root's value (net.core.devconf_inherit_init_net).
            _write_sysctl("net/ipv4/ip_forward", "1" if ns == names.ns_router else "0")


def _create_veths(names: Names, mtu: int) -> None:
    """Create both veth pairs in the caller's namespace and move each end to its namespace.

    They are created where we are (the root namespace) under names unique to this lab, so two
    labs being built at once cannot collide, then moved; they keep their names inside.
    """
    pairs = [
        (names.sender_if, names.router_sender_if),
        (names.router_receiver_if, names.receiver_if),
    ]
    home = {ifname: ns for ns, ifname, _ in names.layout()}
    with _ipr_in(None) as ipr:
        for a, b in pairs:
            ipr.link("add", ifname=a, kind="veth", peer={"ifname": b, "mtu": mtu}, mtu=mtu)
        for a, b in pairs:
            for ifname in (a, b):
                fd = os.open(path(home[ifname]), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ipr.link("set", index=_require_index(ipr, ifname, "root"), net_ns_fd=fd)
                finally:
                    os.close(fd)


def _configure_namespace(names: Names, ns: str) -> None:
    """Loopback up; this namespace's interfaces up with their addresses; routes."""
    with _ipr_in(ns) as ipr:
        ipr.link("set", index=_require_index(ipr, "lo", ns), state="up")
        for where, ifname, cidr in names.layout():
            if where != ns:
                continue
            idx = _require_index(ipr, ifname, ns)
            address, prefixlen = cidr.split("/")
            ipr.addr("add", index=idx, address=address, prefixlen=int(prefixlen))
            ipr.link("set", index=idx, state="up")
        if ns == names.ns_sender:
            ipr.route("add", dst="0.0.0.0/0", gateway=ROUTER_SENDER_IP)
        elif ns == names.ns_receiver:
            ipr.route("add", dst="0.0.0.0/0", gateway=ROUTER_RECEIVER_IP)


def _wait_until_running(names: Names, timeout: float = 3.0) -> None:
    """Return once every lab interface reports operstate UP; LabError after `timeout`.

    Setting a veth up is not the end: carrier-on is handled later by the kernel's linkwatch
    work (net/core/link_watch.c), which is what attaches the real qdisc (dev_activate) and
    sets operstate UP. Until then the device transmits into noop_qdisc, which drops
    everything -- a SYN sent right after up() would be lost and retried a second later.
    """
    deadline = time.monotonic() + timeout
    for ns in names.namespaces:
        wanted = {ifname for where, ifname, _ in names.layout() if where == ns}
        with _ipr_in(ns) as ipr:
            while True:
                states = {
                    link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_OPERSTATE")
                    for link in ipr.get_links()
                }
                if all(states.get(ifname) == "UP" for ifname in wanted):
                    break
                if time.monotonic() > deadline:
                    raise LabError(
                        f"interfaces in {ns} did not come up within {timeout:g} s: {states}"
                    )
                time.sleep(0.002)


def _add_bottleneck(names: Names, bn: Bottleneck) -> None:
    """TBF as the root qdisc of the router's interface toward the receiver.

    pyroute2's tbf module takes the rate as a string with a unit ("...bit"; a bare int would be
    read as bytes/s), the bucket as `burst` bytes and the queue as `limit` bytes, and builds
    tc_tbf_qopt plus the rate table the way tc(8) does. (It works in 0.9.7; no HTB fallback.)

    The bucket goes to the kernel as a time, not in bytes: pyroute2 (like tc) truncates
    burst/rate to whole microseconds before converting to 64 ns ticks, and the kernel rounds
    the bytes down again. That loses up to rate * (1 us + 64 ns) bytes -- 125 B at 1 Gbit/s,
    enough to make a one-frame bucket too small for a frame. Pad by that much and check what
    the kernel reports.
    """
    ns, ifname = names.ns_router, names.router_receiver_if
    rate_Bps = bn.rate // 8
    pad = -(-rate_Bps * (1000 + PSCHED_TICK_NS) // 10**9) + 1
    with _ipr_in(ns) as ipr:
        ipr.tc(
            "add",
            "tbf",
            index=_require_index(ipr, ifname, ns),
            handle="1:",
            rate=f"{rate_Bps * 8}bit",
            burst=bn.burst_bytes + pad,
            limit=bn.queue_bytes,
        )
    got = _read_qdisc(ns, ifname)
    if (
        got is None
        or got.get("kind") != "tbf"
        or got.get("rate_bps") != rate_Bps * 8
        or got.get("limit_bytes") != bn.queue_bytes
        or got.get("burst_bytes", 0) < bn.burst_bytes
    ):
        raise LabError(
            f"TBF on {ifname} in {ns} did not take as asked ({bn}): kernel reports {got!r}"
        )


# --------------------------------------------------------------------------------------------
# Tearing down


def _remove_namespace(ns: str) -> bool:
    """Unmount and unlink /run/netns/NS (also a stale file left by a crash). True if it was there.

    The kernel destroys the namespace, and with it its interfaces, once nothing else holds it;
    deleting a veth end also deletes its peer, so a pair whose ends are in two namespaces goes
    away as soon as either namespace does.
    """
    if not os.path.lexists(path(ns)):
        return False
    if exists(ns):
        # Delete the interfaces first, synchronously: a process still running in the namespace
        # (a stray iperf3, a thread inside `enter`) would otherwise keep it and its interfaces
        # alive after the unmount.
        try:
            with _ipr_in(ns) as ipr:
                for link in ipr.get_links():
                    if link.get_attr("IFLA_IFNAME") != "lo":
                        _delete_link(ipr, link["index"])
        except (OSError, NetlinkError) as e:  # removing the namespace file is what matters
            log.warning("lab namespace %s: deleting its interfaces failed: %s", ns, e)
            log.debug("cleaning interfaces of %s: %s", ns, e)
    try:
        pr_netns.remove(ns)
    except FileNotFoundError:
        pass
    return True


def _delete_link(ipr: IPRoute, index: int) -> None:
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        # ENODEV: already gone, e.g. deleted together with its veth peer a moment ago.
        if e.code != errno.ENODEV:
            raise


def down(name: str) -> list[str]:
    """Remove lab `name`: its three namespaces and any of its veths left in our namespace.

    Works without a Lab object (after a crash) and on a partly built or already removed lab.
    Returns what it removed (namespace and interface names), for messages.
    """
    names = Names(validate_name(name))
    removed = [ns for ns in names.namespaces if _remove_namespace(ns)]
    with _ipr_in(None) as ipr:
        for ifname in names.interfaces:
            idx = _index(ipr, ifname)
            if idx is not None:
                _delete_link(ipr, idx)
                removed.append(ifname)
    return removed


# --------------------------------------------------------------------------------------------
# Status


def _read_qdisc(ns: str, ifname: str) -> dict[str, Any] | None:
    """The root qdisc of `ifname` in `ns`, with its parameters and counters."""
    with _ipr_in(ns) as ipr:
        idx = _index(ipr, ifname)
        if idx is None:
            return None
        for q in ipr.get_qdiscs(index=idx):
            if q.get("parent") == 0xFFFFFFFF:  # TC_H_ROOT
                return _qdisc_dict(q)
    return None


def _qdisc_dict(q: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": q.get_attr("TCA_KIND"), "handle": q.get("handle")}
    opts = q.get_attr("TCA_OPTIONS")
    parms = opts.get_attr("TCA_TBF_PARMS") if opts is not None and out["kind"] == "tbf" else None
    if parms is not None:
        rate_Bps = parms["rate"]
        out["rate_bps"] = rate_Bps * 8
        out["limit_bytes"] = parms["limit"]
        # buffer is the bucket as a time in psched ticks: bytes = rate * time, rounded down
        # as the kernel does (psched_ns_t2l).
        out["burst_bytes"] = rate_Bps * parms["buffer"] * PSCHED_TICK_NS // 10**9
    stats = q.get_attr("TCA_STATS2")
    if stats is not None:
        basic = stats.get_attr("TCA_STATS_BASIC")
        queue = stats.get_attr("TCA_STATS_QUEUE")
        if basic is not None:
            out["sent_bytes"], out["sent_packets"] = basic["bytes"], basic["packets"]
        if queue is not None:
            out["drops"] = queue["drops"]
            out["overlimits"] = queue["overlimits"]
            out["backlog_bytes"] = queue["backlog"]
            out["qlen"] = queue["qlen"]
    return out


def _interfaces_in(ipr: IPRoute, ns: str | None, wanted: set[str]) -> list[dict[str, Any]]:
    addrs: dict[int, list[str]] = {}
    for a in ipr.get_addr(family=2):  # AF_INET
        addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
    out = []
    for link in ipr.get_links():
        ifname = link.get_attr("IFLA_IFNAME")
        if ifname not in wanted:
            continue
        out.append(
            {
                "namespace": ns,
                "ifname": ifname,
                "state": (link.get_attr("IFLA_OPERSTATE") or "UNKNOWN").lower(),
                "admin_up": bool(link["flags"] & 1),  # IFF_UP
                "mtu": link.get_attr("IFLA_MTU"),
                "addresses": addrs.get(link["index"], []),
            }
        )
    return out


def status(name: str) -> dict[str, Any]:
    """What exists of lab `name`, read from the kernel; never creates or changes anything.

    Keys: name; exists (any trace of the lab); up (all three namespaces and all four interfaces
    up with their addresses); namespaces {ns: present}; interfaces [{namespace, ifname, state,
    admin_up, mtu, addresses}]; root_leftovers [veth names left in our namespace by a crash];
    bottleneck (the root qdisc on {name}-r1: kind, rate_bps, burst_bytes, limit_bytes and
    counters, or None when the router is missing).
    """
    names = Names(validate_name(name))
    present = {ns: exists(ns) for ns in names.namespaces}
    wanted = set(names.interfaces)
    interfaces: list[dict[str, Any]] = []
    for ns, ok in present.items():
        if ok:
            with _ipr_in(ns) as ipr:
                interfaces += _interfaces_in(ipr, ns, wanted)
    with _ipr_in(None) as ipr:
        leftovers = [i["ifname"] for i in _interfaces_in(ipr, None, wanted)]
    bottleneck = None
    if present[names.ns_router]:
        bottleneck = _read_qdisc(names.ns_router, names.router_receiver_if)
    expected = {(ns, ifname, cidr) for ns, ifname, cidr in names.layout()}
    seen = {
        (i["namespace"], i["ifname"], cidr)
        for i in interfaces
        if i["admin_up"] and i["state"] == "up"
        for cidr in i["addresses"]
    }
    return {
        "name": name,
        "exists": any(present.values()) or bool(leftovers),
        "up": all(present.values()) and expected <= seen,
        "namespaces": present,
        "interfaces": interfaces,
        "root_leftovers": leftovers,
        "bottleneck": bottleneck,
    }


def require_up(name: str) -> None:
    """Raise LabError, saying what to run, unless lab `name`'s three namespaces exist.

    For code that needs a lab someone else built (a tool, a test run after `usertcp lab up`).
    """
    names = Names(validate_name(name))
    missing = [ns for ns in names.namespaces if not exists(ns)]
    if missing:
        flag = "" if name == "ut" else f" --name {name}"
        raise LabError(
            f"lab {name!r} is not up (missing namespaces: {', '.join(missing)}): "
            f"run `usertcp lab up{flag}`"
        )


# --------------------------------------------------------------------------------------------
# The object


class Lab:
    """A sender -- router -- receiver line of network namespaces, with an optional bottleneck.

    `rate` (bits/s) puts a TBF on the router's egress toward the receiver; `queue_bytes` is its
    queue limit (default: `default_queue_bytes`, 10 ms at the rate, at least 20 frames);
    `burst_bytes` its bucket (default: `default_burst_bytes`). `mtu` is set on all four veths.
    Use as a context manager (up on enter, down on exit, also on an exception), or call
    up()/down(). Offloads keep veth defaults (TSO/GSO on): the sender's 64 KB super-packets
    travel as such up to the bottleneck.
    """

    def __init__(
        self,
        name: str = "ut",
        rate: int | None = None,
        queue_bytes: int | None = None,
        mtu: int = 1500,
        *,
        burst_bytes: int | None = None,
    ) -> None:
        self._names = Names(validate_name(name))
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise ValueError(f"mtu must be an int from 68 (IPv4 minimum) to 65535, got {mtu!r}")
        self.mtu = mtu
        self.bottleneck = Bottleneck.make(rate, queue_bytes, burst_bytes, mtu)

    # names ----------------------------------------------------------------------------------
    name = property(lambda self: self._names.name)
    ns_sender = property(lambda self: self._names.ns_sender)
    ns_router = property(lambda self: self._names.ns_router)
    ns_receiver = property(lambda self: self._names.ns_receiver)
    namespaces = property(lambda self: self._names.namespaces)
    sender_if = property(lambda self: self._names.sender_if)
    router_sender_if = property(lambda self: self._names.router_sender_if)
    router_receiver_if = property(lambda self: self._names.router_receiver_if)
    receiver_if = property(lambda self: self._names.receiver_if)
    sender_ip = SENDER_IP
    receiver_ip = RECEIVER_IP
    router_sender_ip = ROUTER_SENDER_IP
    router_receiver_ip = ROUTER_RECEIVER_IP

    @property
    def rate(self) -> int | None:
        return self.bottleneck.rate if self.bottleneck else None

    @property
    def queue_bytes(self) -> int | None:
        return self.bottleneck.queue_bytes if self.bottleneck else None

    # lifecycle ------------------------------------------------------------------------------
    def up(self) -> "Lab":
        """Build the lab, first removing any leftovers of a lab with the same name.

        On any failure the partial lab is removed again and the error re-raised.
        """
        names = self._names
        leftovers = down(names.name)
        if leftovers:
            log.info("lab %s: removed leftovers of an earlier run: %s", names.name, leftovers)
        try:
            _create_namespaces(names)
            _create_veths(names, self.mtu)
            for ns in names.namespaces:
                _configure_namespace(names, ns)
            if self.bottleneck is not None:
                _add_bottleneck(names, self.bottleneck)
            _wait_until_running(names)
        except BaseException:
            try:
                down(names.name)
            except Exception:  # keep the original error; report the cleanup failure
                log.exception("lab %s: cleanup after a failed up() failed", names.name)
            raise
        return self

    def down(self) -> list[str]:
        """Remove the lab (see module-level `down`)."""
        return down(self._names.name)

    def status(self) -> dict[str, Any]:
        return status(self._names.name)

    def require_up(self) -> None:
        """Raise LabError with the command to run if the lab's namespaces are missing."""
        require_up(self._names.name)

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __repr__(self) -> str:
        bn = self.bottleneck
        extra = f", rate={bn.rate}, queue_bytes={bn.queue_bytes}" if bn else ""
        return f"Lab({self.name!r}{extra}, mtu={self.mtu})"
