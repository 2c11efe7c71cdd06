"""The lab: sender namespaces -- one router -- one receiver, with delay, a bottleneck and loss.

    {name}-snd   {name}-s0 198.18.1.1/24 -- {name}-r0 198.18.1.254/24   {name}-rtr
    {name}-snd2  {name}-s1 198.18.2.1/24 -- {name}-r1 198.18.2.254/24   (one per sender, up to 64)
    ...                                     {name}-rc 198.19.0.254/24 -- {name}-c0 198.19.0.1/24  {name}-rcv

Every sender has its own namespace, veth and /24; all of them share the router's one egress
toward the receiver, so they share one bottleneck. Addresses come from 198.18.0.0/15 (RFC 2544
benchmarking range) and are the same in every lab: labs are separate namespaces.

The path, in the order a data packet meets it (netem's knobs, built from what this kernel has):
  * delay: the router's mangle FORWARD chain sends each direction of each sender's path to its
    own NFQUEUE, and the delay line process (netns/delayline.py) releases the packets after the
    configured one-way delay. Packets stay in the kernel; per-sender queues allow per-sender RTTs.
  * bottleneck: TBF on the router's egress toward the receiver ({name}-rc); its queue limit
    is the bottleneck buffer (bytes, packets or BDPs; netns/config.py).
  * loss: an XDP program (bpf/loss.c, netns/loss.py) on the receiver's interface drops data
    packets at random, after TBF has cut GSO bundles into MTU-sized packets; reverse loss (ACKs)
    is the same program on the router's interface toward the receiver.

State that must outlive the process that built the lab -- the delay line's pid, its stats, the
configuration -- lives in /run/usertcp/labs/{name}/. Nothing else of a lab stays in the root
namespace but the namespace files under /run/netns.

Built with pyroute2 (0.9.7) over netlink; `iptables-restore` adds the NFQUEUE rules. Sysctls
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
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns
from pyroute2.netlink.exceptions import NetlinkError

from . import delayline, loss
from .config import ETH_HLEN, LabConfig, QueueSpec, fmt_rate, validate_name
from .ns import NETNS_DIR, LabError, _setns, _unshare_net, current, enter, exists, iproute, path

log = logging.getLogger(__name__)

#: Sender i (0-based) is 198.18.{i+1}.1/24 behind router address 198.18.{i+1}.254.
SENDER_NET = "198.18.{}"
RECEIVER_IP = "198.19.0.1"
ROUTER_RECEIVER_IP = "198.19.0.254"
SENDER_IP = SENDER_NET.format(1) + ".1"
ROUTER_SENDER_IP = SENDER_NET.format(1) + ".254"
PREFIXLEN = 24
MAX_SENDERS = 64

#: TBF's rate field is a u32 in bytes/s (struct tc_ratespec); faster needs TCA_TBF_RATE64,
#: which pyroute2 0.9.7's tbf module does not send.
MAX_RATE_BPS = (2**32 - 1) * 8
#: The largest GSO super-packet the kernel builds by default (gso_max_size, 64 KB).
GSO_MAX_BYTES = 65536
#: TBF's bucket travels as a time in psched ticks of 64 ns (PSCHED_SHIFT 6,
#: include/net/pkt_sched.h); the kernel turns it back into bytes rounding down.
PSCHED_TICK_NS = 64
#: Packets each delay queue may hold. The kernel allocates nothing up front; what bounds the
#: real number is the senders' windows. The kernel's default (1024) would drop at ~12 Mbit/s
#: x 1 s, silently as far as the sender can tell; this covers 10 Gbit/s x 500 ms of bundles.
DELAY_QUEUE_MAXLEN = 1_000_000
#: Where a lab keeps what outlives the process that built it (pid, stats, configuration).
STATE_ROOT = Path(os.environ.get("USERTCP_RUN_DIR", "/run/usertcp")) / "labs"

def state_dir(name: str) -> Path:
    """Where lab `name` keeps its configuration and the delay line's pid, stats and log."""
    return STATE_ROOT / validate_name(name)


@dataclasses.dataclass(frozen=True)
class Names:
    """Every name a lab uses, derived from its name and sender count (so `down(name)` needs no
    object: it finds the count from what exists)."""

    name: str
    senders: int = 1

    def ns_sender(self, i: int = 0) -> str:
        return f"{self.name}-snd" if i == 0 else f"{self.name}-snd{i + 1}"

    @property
    def ns_senders(self) -> tuple[str, ...]:
        return tuple(self.ns_sender(i) for i in range(self.senders))

    @property
    def ns_router(self) -> str:
        return f"{self.name}-rtr"

    @property
    def ns_receiver(self) -> str:
        return f"{self.name}-rcv"

    @property
    def namespaces(self) -> tuple[str, ...]:
        return (*self.ns_senders, self.ns_router, self.ns_receiver)

    def sender_if(self, i: int = 0) -> str:
        return f"{self.name}-s{i}"

    def router_sender_if(self, i: int = 0) -> str:
        return f"{self.name}-r{i}"

    @property
    def router_receiver_if(self) -> str:
        return f"{self.name}-rc"

    @property
    def receiver_if(self) -> str:
        return f"{self.name}-c0"

    @property
    def interfaces(self) -> tuple[str, ...]:
        out: list[str] = []
        for i in range(self.senders):
            out += [self.sender_if(i), self.router_sender_if(i)]
        return (*out, self.router_receiver_if, self.receiver_if)

    def veth_pairs(self) -> list[tuple[str, str]]:
        pairs = [(self.sender_if(i), self.router_sender_if(i)) for i in range(self.senders)]
        return pairs + [(self.router_receiver_if, self.receiver_if)]

    def layout(self) -> list[tuple[str, str, str]]:
        """(namespace, interface, address/prefix) for every lab interface."""
        out = []
        for i in range(self.senders):
            net = SENDER_NET.format(i + 1)
            out.append((self.ns_sender(i), self.sender_if(i), f"{net}.1/{PREFIXLEN}"))
            out.append((self.ns_router, self.router_sender_if(i), f"{net}.254/{PREFIXLEN}"))
        out.append((self.ns_router, self.router_receiver_if, f"{ROUTER_RECEIVER_IP}/{PREFIXLEN}"))
        out.append((self.ns_receiver, self.receiver_if, f"{RECEIVER_IP}/{PREFIXLEN}"))
        return out

    def is_ours(self, ifname: str) -> bool:
        """True for any interface name this lab could have made, whatever its sender count."""
        return re.fullmatch(rf"{re.escape(self.name)}-(s\d+|r\d+|rc|c0)", ifname) is not None

    @classmethod
    def discover(cls, name: str) -> "Names":
        """The names of lab `name` as it exists now: the sender count is read off /run/netns."""
        validate_name(name)
        count = 1
        try:
            entries = os.listdir(NETNS_DIR)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            m = re.fullmatch(rf"{re.escape(name)}-snd(\d+)", entry)
            if m and 2 <= int(m.group(1)) <= MAX_SENDERS:
                count = max(count, int(m.group(1)))
        return cls(name, count)


# --------------------------------------------------------------------------------------------
# Bottleneck parameters


def default_queue_bytes(rate: int, mtu: int = 1500, rtt: float = 0.0) -> int:
    """The bottleneck queue when none is given: one BDP on a path with delay, else 10 ms at the
    rate; at least 20 full frames either way.

    One BDP (rate x base RTT) is the classic buffer for a single long flow and what most CC
    papers configure; without a delay line the lab's RTT is tens of microseconds, so 10 ms at
    the rate stands in. The floor of 20 frames keeps slow links from holding fewer packets than
    a TCP initial window (10) plus room. At 50 Mbit/s: 62 500 B (40 ms RTT: 250 000 B); at
    1 Gbit/s: 1.25 MB; at 1 Mbit/s: 30 280 B (with mtu 1500).
    """
    span = rtt if rtt > 0 else 0.010
    return int(max(20 * (mtu + ETH_HLEN), rate / 8 * span))


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
      * A bucket below a 64 KB bundle makes TBF cut every bundle into ~44 skbs, and all of that
        per-packet work -- plus the receiver's TCP, which a veth runs in the sender's softirq --
        lands inside the delay line's release verdict when the lab has a delay: at 1 Gbit/s
        with a 64,022 B bucket the delay line spent ~0.9 core and held packets 15-55 ms too long;
        with bundles passing whole it held 20.02 ms median at ~0.4 core (bench/lab_path.py).
    So: 1 ms at the rate, clamped to [2 frames, 64 KB - 1 frame] while 1 ms fits below a bundle
    (up to ~500 Mbit/s), where per-packet tail drops matter most; above that the bucket is 1 ms
    and bundles pass whole (tail drops may then take a whole bundle, rare with a BDP of buffer).
    At 50 Mbit/s: 6 250 B; at 1 Gbit/s: 125 000 B; at 2 Gbit/s: 250 000 B.
    """
    frame = mtu + ETH_HLEN
    one_ms = rate / 8 / 1000
    below_bundle = GSO_MAX_BYTES - frame
    if one_ms <= below_bundle:
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


def tcp_buffer_max(config: LabConfig) -> int:
    """The largest TCP socket buffer (tcp_rmem/tcp_wmem max) the lab's end hosts may grow to.

    A new namespace starts with the kernel's defaults (6 MB receive, 4 MB send), which cap a
    kernel TCP flow at buffer / RTT: ~600 Mbit/s at 40 ms (measured here: 250-600 Mbit/s on a
    1 Gbit/s, 40 ms lab). The lab is for filling its pipe, so the ends may grow buffers to four
    times the largest BDP any sender has (rate unknown: 10 Gbit/s), as any long-fat-network
    tuning guide advises, at least the defaults and at most 1 GiB.
    """
    rtt = max(s.delay + s.delay_rev for s in config.senders)
    bdp = (config.rate or 10**10) / 8 * rtt
    return int(min(2**30, max(6 << 20, 4 * bdp)))


def _create_namespaces(names: Names, buffer_max: int) -> None:
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
            if ns != names.ns_router:  # per-namespace since Linux 4.15
                _write_sysctl("net/ipv4/tcp_rmem", f"4096 131072 {buffer_max}")
                _write_sysctl("net/ipv4/tcp_wmem", f"4096 16384 {buffer_max}")


def _create_veths(names: Names, mtu: int) -> None:
    """Create every veth pair in the caller's namespace and move each end to its namespace.

    They are created where we are (the root namespace) under names unique to this lab, so two
    labs being built at once cannot collide, then moved; they keep their names inside.
    """
    pairs = names.veth_pairs()
    home = {ifname: ns for ns, ifname, _ in names.layout()}
    with iproute(None) as ipr:
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
    with iproute(ns) as ipr:
        ipr.link("set", index=_require_index(ipr, "lo", ns), state="up")
        for where, ifname, cidr in names.layout():
            if where != ns:
                continue
            idx = _require_index(ipr, ifname, ns)
            address, prefixlen = cidr.split("/")
            ipr.addr("add", index=idx, address=address, prefixlen=int(prefixlen))
            ipr.link("set", index=idx, state="up")
        if ns in names.ns_senders:
            i = names.ns_senders.index(ns)
            ipr.route("add", dst="0.0.0.0/0", gateway=SENDER_NET.format(i + 1) + ".254")
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
        with iproute(ns) as ipr:
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
    with iproute(ns) as ipr:
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
            with iproute(ns) as ipr:
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


def _delete_link(ipr: IPRoute, index: int) -> bool:
    """Delete a link; False if it was already gone (e.g. deleted with its veth peer just now)."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code != errno.ENODEV:
            raise
        return False
    return True


def _loss_points(names: Names) -> dict[str, tuple[str, str]]:
    """Where each direction's loss program sits: (namespace, interface).

    Forward (data) loss on the receiver's ingress, after TBF has cut GSO bundles into packets
    (XDP there also sees every packet singly: veth turns off GSO toward an XDP peer); reverse
    (ACK) loss on the router's ingress from the receiver, before the delay line.
    """
    return {
        "forward": (names.ns_receiver, names.receiver_if),
        "reverse": (names.ns_router, names.router_receiver_if),
    }


def _loss_attached(names: Names) -> bool:
    """Whether a loss program of this lab has pins (a stat per point, no bcc import): reading or
    detaching one needs libbcc, which labs without loss should not load."""
    return any(loss.pin_dir(ns, ifname).exists() for ns, ifname in _loss_points(names).values())


def down(name: str) -> list[str]:
    """Remove lab `name`: its delay line, loss programs, namespaces, leftover veths and state.

    Works without a Lab object (after a crash), whatever its sender count, and on a partly built
    or already removed lab. The delay line goes first: it lives inside the router namespace and
    would keep it alive. Returns what it removed (for messages).
    """
    names = Names.discover(name)
    removed: list[str] = []
    for pid in delayline.processes(names.ns_router):
        delayline.stop(pid)
        removed.append(f"delay line (pid {pid})")
    if _loss_attached(names):
        for direction, (ns, ifname) in _loss_points(names).items():
            if loss.detach(ns, ifname):
                removed.append(f"{direction} loss on {ifname}")
    removed += [ns for ns in names.namespaces if _remove_namespace(ns)]
    with iproute(None) as ipr:
        for link in ipr.get_links():
            ifname = link.get_attr("IFLA_IFNAME")
            if names.is_ours(ifname) and _delete_link(ipr, link["index"]):
                removed.append(ifname)
    shutil.rmtree(state_dir(name), ignore_errors=True)
    return removed


# --------------------------------------------------------------------------------------------
# Status


def _read_qdisc(ns: str, ifname: str) -> dict[str, Any] | None:
    """The root qdisc of `ifname` in `ns`, with its parameters and counters."""
    with iproute(ns) as ipr:
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


def _read_config(name: str) -> LabConfig | None:
    try:
        doc = json.loads((state_dir(name) / "config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return LabConfig.from_dict(doc, source=str(state_dir(name) / "config.json"))


#: Above this rate a reordering direction can outrun the delay line. Measured on the 2-vCPU
#: development VM, kernel cubic, 10 ms each way, 1% reordering (MTU-sized packets in the
#: forward queue): 100 Mbit/s used 0.34 of a core with release error p99 0.17 ms; 200 Mbit/s
#: used 0.74 with p99 3.8 ms; 300 Mbit/s saturated a core. Most of it is kernel work done in
#: the delay line's verdict calls: each released packet is forwarded and delivered one by one.
REORDER_RATE_LIMIT = 100_000_000


def reorder_warning(config: LabConfig) -> str | None:
    """A warning when reordering is on at a rate where it may cost accuracy, else None."""
    if not (config.reorder or config.reorder_rev):
        return None
    if config.rate is not None and config.rate <= REORDER_RATE_LIMIT:
        return None
    at = "without a rate limit" if config.rate is None else f"at {fmt_rate(config.rate)}"
    return (f"reordering {at}: a reordering direction is handled per MTU-sized packet, which "
            f"this delay line keeps accurate up to about {fmt_rate(REORDER_RATE_LIMIT)} on the "
            f"development VM; watch the release error in `usertcp lab status`")


def _delay_routes(names: Names, config: LabConfig) -> list[delayline.Route]:
    """One NFQUEUE per direction per sender (queue 2i forward, 2i+1 reverse), only where the
    delay or reordering is not zero: a direction with neither is plain forwarding, at no cost.

    A reordering direction's queue takes MTU-sized packets (the delay line binds it without the
    GSO flag, so the kernel segments bundles before queueing): holding back one packet, not a
    64 KB bundle, is what reordering on a real path looks like. Its cost is one notification
    per packet in the delay line, so such a direction carries less than a GSO one does
    (bench/lab_path.py measures it).
    """
    routes = []
    for i, spec in enumerate(config.senders):
        fwd = (names.router_sender_if(i), names.router_receiver_if, spec.delay, config.reorder)
        rev = (names.router_receiver_if, names.router_sender_if(i), spec.delay_rev, config.reorder_rev)
        for queue, (in_if, out_if, delay, reorder) in ((2 * i, fwd), (2 * i + 1, rev)):
            if delay > 0 or reorder > 0:
                routes.append(delayline.Route(queue, in_if, out_if, delay, reorder,
                                              config.reorder_delay if reorder else 0.0))
    return routes


def _label_queues(report: dict[str, Any]) -> None:
    """Name each queue by sender and direction; a reorder queue (delayline.reorder_queue) is
    the direction's "held back" part."""
    for num, q in report["queues"].items():
        base = q["reorder_of"] if q.get("reorder_of") is not None else int(num)
        q["sender"] = base // 2
        q["direction"] = "forward" if base % 2 == 0 else "reverse"
        if q.get("reorder_of") is not None:
            q["direction"] += " held back"
        q.update({k: v for k, v in report["kernel"].get(num, {}).items() if k != "portid"})


def status(name: str, probe: bool = False) -> dict[str, Any]:
    """What exists of lab `name`, read from the kernel and the lab's state; changes nothing.

    Keys: name; exists (any trace of the lab); up (every namespace and interface up with its
    address, and the delay line alive if the lab has one); config (the LabConfig as a dict, or
    None if the lab was not built by this version or the state is gone); namespaces {ns:
    present}; interfaces [{namespace, ifname, state, admin_up, mtu, addresses}]; root_leftovers
    [veth names left in our namespace by a crash]; bottleneck (the root qdisc on {name}-rc:
    kind, rate_bps, burst_bytes, limit_bytes and counters, or None when the router is missing);
    delay (netns.delayline.status with each queue labelled by sender and direction, or None);
    loss {forward, reverse: the loss program's counters or None}; base_rtt (with probe=True:
    per sender, an ICMP echo probe's min/median/max RTT in ms and how many were lost).
    """
    config = _read_config(validate_name(name))
    names = Names(name, len(config.senders)) if config else Names.discover(name)
    present = {ns: exists(ns) for ns in names.namespaces}
    interfaces: list[dict[str, Any]] = []
    for ns, ok in present.items():
        if ok:
            with iproute(ns) as ipr:
                interfaces += _interfaces_in(ipr, ns, set(names.interfaces))
    with iproute(None) as ipr:
        leftovers = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()
                     if names.is_ours(link.get_attr("IFLA_IFNAME"))]
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
    delay = delayline.status(state_dir(name), names.ns_router)
    if delay is not None:
        _label_queues(delay)
    loss_counters: dict[str, Any] = {"forward": None, "reverse": None}
    if _loss_attached(names):
        for direction, (ns, ifname) in _loss_points(names).items():
            loss_counters[direction] = loss.counters(ns, ifname)
    up = all(present.values()) and expected <= seen and (delay is None or delay["alive"])
    out = {
        "name": name,
        "exists": any(present.values()) or bool(leftovers),
        "up": up,
        "config": config.to_dict() if config else None,
        "description": config.describe() if config else None,
        "namespaces": present,
        "interfaces": interfaces,
        "root_leftovers": leftovers,
        "bottleneck": bottleneck,
        "delay": delay,
        "loss": loss_counters,
        "base_rtt": None,
    }
    if probe and up:
        out["base_rtt"] = _probe_base_rtt(names, config)
    return out


def _probe_base_rtt(names: Names, config: LabConfig | None, count: int = 5) -> list[dict[str, Any]]:
    """ICMP echo from each sender to the receiver: the RTT the path really has, idle."""
    from .probe import rtt_probe

    out = []
    for i, ns in enumerate(names.ns_senders):
        configured = None
        timeout = 1.0
        if config is not None:
            spec = config.senders[i]
            configured = spec.delay + spec.delay_rev
            timeout += 2 * configured
        r = rtt_probe(ns, RECEIVER_IP, count=count, interval=0.01, timeout=timeout)
        ms = (lambda v: None if v is None else round(v * 1e3, 3))
        out.append({
            "sender": i, "namespace": ns, "configured_ms": ms(configured), "sent": r.sent,
            "lost": r.lost, "min_ms": ms(r.min), "median_ms": ms(r.median), "max_ms": ms(r.max),
        })
    return out


def require_up(name: str) -> None:
    """Raise LabError, saying what to run, unless lab `name`'s namespaces exist.

    For code that needs a lab someone else built (a tool, a test run after `usertcp lab up`).
    """
    names = Names.discover(name)
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
    """Sender namespaces -- a router -- a receiver, with delay, a bottleneck and loss on the path.

    Configure with keywords or a `LabConfig` (`Lab.from_config`, also built from TOML files and
    presets, netns/config.py): `rate` (bits/s) puts a TBF on the router's egress toward the
    receiver, `queue` its limit (bytes, "100p", "1bdp"; `queue_bytes` is the same in bytes;
    default: one BDP with a delay, else 10 ms at the rate), `burst_bytes` its bucket; `delay`
    and `delay_rev` the one-way delays (s) of each direction; `loss`/`loss_rev` random loss
    fractions; `reorder`/`reorder_rev` the fractions of packets held `reorder_delay` (s) longer
    than the rest, so later ones overtake them (per MTU-sized packet: see _delay_routes);
    `senders` how many sender namespaces share the bottleneck; `mtu` for all veths.
    Use as a context manager (up on enter, down on exit, also on an exception), or call
    up()/down(). Offloads keep veth defaults (TSO/GSO on): 64 KB super-packets travel as such up
    to the bottleneck, and through the delay line.
    """

    def __init__(
        self,
        name: str = "ut",
        rate: int | None = None,
        queue_bytes: int | None = None,
        mtu: int = 1500,
        *,
        burst_bytes: int | None = None,
        queue: str | QueueSpec | None = None,
        delay: float = 0.0,
        delay_rev: float | None = None,
        loss: float = 0.0,
        loss_rev: float = 0.0,
        reorder: float = 0.0,
        reorder_rev: float = 0.0,
        reorder_delay: float = 0.001,
        senders: int = 1,
    ) -> None:
        if queue_bytes is not None and queue is not None:
            raise ValueError("give the queue once: queue_bytes (bytes) or queue ('1bdp', '100p', ...)")
        if isinstance(queue, str):
            from .config import parse_queue

            queue = parse_queue(queue)
        elif queue_bytes is not None:
            queue = QueueSpec(queue_bytes, "bytes")
        if isinstance(rate, bool) or not (rate is None or isinstance(rate, int)):
            raise ValueError(f"rate must be an int in bits/s, got {rate!r}")
        if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
            raise ValueError(f"mtu must be an int from 68 (IPv4 minimum) to 65535, got {mtu!r}")
        self._init(LabConfig(
            name=name, rate=rate, queue=queue, burst_bytes=burst_bytes, delay=delay,
            delay_rev=delay_rev, loss=loss, loss_rev=loss_rev, reorder=reorder,
            reorder_rev=reorder_rev, reorder_delay=reorder_delay, senders=senders, mtu=mtu,
        ))

    @classmethod
    def from_config(cls, config: LabConfig) -> "Lab":
        lab = cls.__new__(cls)
        lab._init(config)
        return lab

    def _init(self, config: LabConfig) -> None:
        self.config = config
        self.mtu = config.mtu
        self._names = Names(config.name, len(config.senders))
        queue = None
        if config.rate is not None:
            queue = config.queue_bytes() or default_queue_bytes(config.rate, config.mtu, config.rtt)
        self.bottleneck = Bottleneck.make(config.rate, queue, config.burst_bytes, config.mtu)

    # names ----------------------------------------------------------------------------------
    name = property(lambda self: self._names.name)
    names = property(lambda self: self._names)
    ns_sender = property(lambda self: self._names.ns_sender(0))
    ns_senders = property(lambda self: self._names.ns_senders)
    ns_router = property(lambda self: self._names.ns_router)
    ns_receiver = property(lambda self: self._names.ns_receiver)
    namespaces = property(lambda self: self._names.namespaces)
    sender_if = property(lambda self: self._names.sender_if(0))
    router_sender_if = property(lambda self: self._names.router_sender_if(0))
    router_receiver_if = property(lambda self: self._names.router_receiver_if)
    receiver_if = property(lambda self: self._names.receiver_if)
    sender_ip = SENDER_IP
    receiver_ip = RECEIVER_IP
    router_sender_ip = ROUTER_SENDER_IP
    router_receiver_ip = ROUTER_RECEIVER_IP

    def sender(self, i: int) -> tuple[str, str, str]:
        """(namespace, interface, address) of sender i (0-based)."""
        if not 0 <= i < len(self.config.senders):
            raise IndexError(f"lab {self.name!r} has {len(self.config.senders)} sender(s); no sender {i}")
        return self._names.ns_sender(i), self._names.sender_if(i), SENDER_NET.format(i + 1) + ".1"

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
            _create_namespaces(names, tcp_buffer_max(self.config))
            _create_veths(names, self.mtu)
            for ns in names.namespaces:
                _configure_namespace(names, ns)
            if self.bottleneck is not None:
                _add_bottleneck(names, self.bottleneck)
            _wait_until_running(names)
            state = state_dir(names.name)
            state.mkdir(parents=True, exist_ok=True)
            (state / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1) + "\n")
            routes = _delay_routes(names, self.config)
            if routes:
                delayline.install_rules(names.ns_router, routes)
                delayline.start(names.ns_router, state, routes, DELAY_QUEUE_MAXLEN)
            points = _loss_points(names)
            for direction, p in (("forward", self.config.loss), ("reverse", self.config.loss_rev)):
                if p > 0:
                    loss.attach(*points[direction], p, mtu=self.mtu, seed=self.config.loss_seed)
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

    def status(self, probe: bool = False) -> dict[str, Any]:
        return status(self._names.name, probe=probe)

    def require_up(self) -> None:
        """Raise LabError with the command to run if the lab's namespaces are missing."""
        require_up(self._names.name)

    def __enter__(self) -> "Lab":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def __repr__(self) -> str:
        return f"Lab({self.name!r}: {self.config.describe()})"
