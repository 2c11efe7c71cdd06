"""The gate's Python side: load `bpf/gate.c` with bcc, attach it with pyroute2, manage flows.

`gate up` compiles the program, attaches its egress and ingress classifiers to a clsact qdisc on
one interface of one network namespace, and pins the three maps (flows, listeners, verdict
counters) in a bpffs that usertcp mounts at /run/usertcp/bpf. The attached programs keep
themselves alive (TC holds them), so `up` can exit; any later process — the sender registering
its flow, a server registering its listener, `gate status`, a test — opens the pinned maps by
path. /run rather than /sys/fs/bpf because `ip netns exec` remounts /sys and would hide the pins
from a sender started that way.

Map access from Python goes through libbcc's thin bpf(2) wrappers with ctypes structs that mirror
the C structs in bpf/gate.c.

Active open (a client): `register()` the 4-tuple with the sending socket's cookie and the ISN
before the SYN leaves; `revoke()` it when the connection is over.

Passive open (a server), without a round trip per connection:
  * reserve the port with a bound, never listening, kernel TCP socket (sender.reserve_port) and
    keep it open while serving; open the packet socket that will send (its cookie owns the flows);
  * `add_listener((ip, port), cookie)` — ip "0.0.0.0" means any local address of the interface;
  * each client SYN then creates its flow in the gate (state "syn-rcvd", owner = the listener's
    cookie, rcv_max = the client's ISN + 1, its MSS, window scale and window); the server sees the
    SYN on its packet socket (ETH_P_ALL, before the gate keeps it from the kernel). If
    `flow(local, remote)` is None for a SYN the server sees, the gate's table was full: drop the SYN
    as a full backlog would (the client retries);
  * the SYN-ACK must: come from the owner's socket, acknowledge exactly rcv_max, carry no data, no
    FIN or RST; the first one fixes the ISN, retransmissions must repeat it. Only with a window
    scale option in the SYN-ACK (and one in the client's SYN) are the client's windows scaled;
  * the client's ACK of the SYN-ACK makes the flow "synchronized": from then on as an active flow;
  * `revoke()` each flow when its connection is over (after TIME-WAIT if the server closed first),
    `reap_embryonic(max_age)` now and then for SYNs that never became connections, and on shutdown
    `remove_listener()` then `revoke_all(cookie)`.
"""

from __future__ import annotations

import ctypes as ct
import errno
import json
import os
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BPF_SOURCE = REPO / "bpf" / "gate.c"
RUN_DIR = Path(os.environ.get("USERTCP_RUN_DIR", "/run/usertcp"))
BPFFS = RUN_DIR / "bpf"

# Counter indices: keep in the order of `enum reason` in bpf/gate.c.
REASONS = (
    "pass_kernel",
    "pass_flow",
    "drop_no_flow",
    "drop_not_owner",
    "drop_window",
    "drop_flags",
    "drop_ack",
    "drop_malformed",
    "in_owned",
    "in_ignored",
    "in_malformed",
    "in_syn_new_flow",
    "in_syn_table_full",
    "in_listen_stray",
)
FLOW_STATES = {0: "syn-sent", 1: "synchronized", 2: "reset", 3: "syn-rcvd"}
STATE_CODES = {v: k for k, v in FLOW_STATES.items()}
MAP_NAMES = ("flows", "verdicts", "listeners")

TC_H_CLSACT_EGRESS = "ffff:fff3"
TC_H_CLSACT_INGRESS = "ffff:fff2"
PROG_NAMES = {"egress": "usertcp_gate_eg", "ingress": "usertcp_gate_in"}


class GateError(RuntimeError):
    """A gate problem the user can act on; the message says what to run."""


class FlowKey(ct.Structure):
    _fields_ = [("saddr", ct.c_uint32), ("daddr", ct.c_uint32), ("sport", ct.c_uint16), ("dport", ct.c_uint16)]


class FlowValue(ct.Structure):
    _fields_ = [
        ("owner", ct.c_uint64),
        ("isn", ct.c_uint32),
        ("snd_una", ct.c_uint32),
        ("snd_max", ct.c_uint32),
        ("snd_wnd", ct.c_uint32),
        ("rcv_max", ct.c_uint32),
        ("mss", ct.c_uint16),
        ("state", ct.c_uint8),
        ("snd_wscale", ct.c_uint8),
        ("pkts_out", ct.c_uint64),
        ("bytes_out", ct.c_uint64),
        ("pkts_in", ct.c_uint64),
        ("drops", ct.c_uint64),
        ("born_ns", ct.c_uint64),
        ("passive", ct.c_uint8),
        ("isn_known", ct.c_uint8),
        ("pad", ct.c_uint8 * 6),
    ]


class ListenKey(ct.Structure):
    _fields_ = [("addr", ct.c_uint32), ("port", ct.c_uint16), ("pad", ct.c_uint16)]


class ListenerValue(ct.Structure):
    _fields_ = [("owner", ct.c_uint64), ("syns", ct.c_uint64), ("table_full", ct.c_uint64)]


class MapInfo(ct.Structure):
    """The head of struct bpf_map_info (include/uapi/linux/bpf.h)."""

    _fields_ = [("type", ct.c_uint32), ("id", ct.c_uint32), ("key_size", ct.c_uint32),
                ("value_size", ct.c_uint32), ("max_entries", ct.c_uint32), ("map_flags", ct.c_uint32),
                ("rest", ct.c_uint8 * 64)]


def _lib():
    from bcc.libbcc import lib

    lib.bpf_obj_get.restype = ct.c_int
    lib.bpf_obj_get.argtypes = [ct.c_char_p]
    lib.bpf_obj_pin.restype = ct.c_int
    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    lib.bpf_obj_get_info.restype = ct.c_int
    lib.bpf_obj_get_info.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    return lib


def _key(local: tuple[str, int], remote: tuple[str, int]) -> FlowKey:
    """Network byte order, as the packet carries it (the map key is raw bytes)."""
    k = FlowKey()
    k.saddr = struct.unpack("=I", socket.inet_aton(local[0]))[0]
    k.daddr = struct.unpack("=I", socket.inet_aton(remote[0]))[0]
    k.sport = struct.unpack("=H", struct.pack("!H", local[1]))[0]
    k.dport = struct.unpack("=H", struct.pack("!H", remote[1]))[0]
    return k


def _listen_key(local: tuple[str, int]) -> ListenKey:
    k = ListenKey()
    k.addr = struct.unpack("=I", socket.inet_aton(local[0]))[0]
    k.port = struct.unpack("=H", struct.pack("!H", local[1]))[0]
    return k


def _listen_unkey(k: ListenKey) -> tuple[str, int]:
    return socket.inet_ntoa(struct.pack("=I", k.addr)), struct.unpack("!H", struct.pack("=H", k.port))[0]


def _unkey(k: FlowKey) -> tuple[tuple[str, int], tuple[str, int]]:
    def port(v: int) -> int:
        return struct.unpack("!H", struct.pack("=H", v))[0]

    return (
        (socket.inet_ntoa(struct.pack("=I", k.saddr)), port(k.sport)),
        (socket.inet_ntoa(struct.pack("=I", k.daddr)), port(k.dport)),
    )


def pin_dir(netns: str | None, ifname: str) -> Path:
    # bpffs rejects dots in names (kernel/bpf/inode.c, bpf_lookup), hence "--".
    return BPFFS / f"{netns or 'root'}--{ifname}"


def _ensure_bpffs() -> None:
    """Mount a bpffs instance at /run/usertcp/bpf unless one is there (pyroute2 has no mount
    helper and os has no mount(2); util-linux's mount is always on Debian)."""
    BPFFS.mkdir(parents=True, exist_ok=True)
    with open("/proc/self/mounts") as f:
        mounted = any(line.split()[1] == str(BPFFS) and line.split()[2] == "bpf" for line in f)
    if not mounted:
        r = subprocess.run(["mount", "-t", "bpf", "usertcp-bpf", str(BPFFS)], capture_output=True, text=True)
        if r.returncode != 0:
            raise GateError(f"cannot mount a bpf filesystem at {BPFFS}: {r.stderr.strip()} (are you root?)")


@dataclass
class GateMaps:
    """The pinned maps of one gate, opened by path (any process, any network namespace)."""

    path: Path
    flows_fd: int
    verdicts_fd: int
    listeners_fd: int = -1  # -1: a gate loaded before listeners existed (`gate up` again)

    @classmethod
    def open(cls, netns: str | None, ifname: str) -> "GateMaps":
        path = pin_dir(netns, ifname)
        lib = _lib()
        fds = []
        for name in MAP_NAMES:
            fd = lib.bpf_obj_get(str(path / name).encode())
            if fd < 0:
                if name == "listeners":
                    fds.append(-1)
                    continue
                for f in fds:
                    os.close(f)
                where = f"interface {ifname}" + (f" in namespace {netns}" if netns else "")
                raise GateError(
                    f"the gate is not up on {where}: run `usertcp gate up`"
                    + (f" --netns {netns} --dev {ifname}" if netns else f" --dev {ifname}")
                )
            fds.append(fd)
        return cls(path, fds[0], fds[1], fds[2])

    def close(self) -> None:
        for fd in (self.flows_fd, self.verdicts_fd, self.listeners_fd):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "GateMaps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- flows -------------------------------------------------------------------------------

    def register(self, local: tuple[str, int], remote: tuple[str, int], owner_cookie: int, isn: int) -> None:
        """Admit one flow: only the socket with `owner_cookie` may send on it, starting with a
        SYN at `isn`. Everything else about the flow the gate learns from the peer."""
        v = FlowValue(owner=owner_cookie, isn=isn & 0xFFFFFFFF, snd_una=isn & 0xFFFFFFFF,
                      snd_max=isn & 0xFFFFFFFF, state=0, born_ns=time.monotonic_ns(), isn_known=1)
        k = _key(local, remote)
        if _lib().bpf_update_elem(self.flows_fd, ct.byref(k), ct.byref(v), 0) != 0:
            e = ct.get_errno() or errno.ENOSPC
            if e == errno.E2BIG:
                raise GateError(f"cannot register flow {local}->{remote}: the gate's flow table is full "
                                f"({self.capacity()} flows); revoke finished flows (`usertcp gate status`)")
            raise GateError(f"cannot register flow {local}->{remote}: {os.strerror(e)}")

    def revoke(self, local: tuple[str, int], remote: tuple[str, int]) -> bool:
        k = _key(local, remote)
        return _lib().bpf_delete_elem(self.flows_fd, ct.byref(k)) == 0

    def revoke_all(self, owner_cookie: int) -> int:
        """Remove every flow owned by `owner_cookie` (a server shutting down); returns how many."""
        return self._revoke_where(lambda v: v.owner == owner_cookie)

    def reap_embryonic(self, max_age: float, owner_cookie: int | None = None) -> int:
        """Remove flows still in "syn-rcvd" (a SYN the gate admitted, the handshake never
        completed) created more than `max_age` seconds ago — of one owner, or of all. Returns how
        many. Pick `max_age` beyond the server's SYN-ACK retransmission budget: a flow whose
        handshake completes between the look and the removal would be lost with it."""
        limit = time.monotonic_ns() - int(max_age * 1e9)
        syn_rcvd = STATE_CODES["syn-rcvd"]
        return self._revoke_where(lambda v: v.state == syn_rcvd and v.born_ns <= limit
                                  and (owner_cookie is None or v.owner == owner_cookie))

    def _revoke_where(self, pred) -> int:
        lib = _lib()
        doomed = [k for k, v in self._items() if pred(v)]  # deleting while walking restarts the walk
        return sum(lib.bpf_delete_elem(self.flows_fd, ct.byref(k)) == 0 for k in doomed)

    def flow(self, local: tuple[str, int], remote: tuple[str, int]) -> dict | None:
        k = _key(local, remote)
        v = FlowValue()
        if _lib().bpf_lookup_elem(self.flows_fd, ct.byref(k), ct.byref(v)) != 0:
            return None
        return _flow_dict(v)

    def flows(self) -> list[tuple[tuple[str, int], tuple[str, int], dict]]:
        return [(*_unkey(k), _flow_dict(v)) for k, v in self._items()]

    def _items(self):
        lib = _lib()
        prev, nxt = None, FlowKey()
        while lib.bpf_get_next_key(self.flows_fd, ct.byref(prev) if prev else None, ct.byref(nxt)) == 0:
            v = FlowValue()
            if lib.bpf_lookup_elem(self.flows_fd, ct.byref(nxt), ct.byref(v)) == 0:
                yield nxt, v
            prev, nxt = nxt, FlowKey()

    def capacity(self) -> int:
        """The most flows the gate holds (active and passive together)."""
        info = MapInfo()
        n = ct.c_uint32(ct.sizeof(info))
        if _lib().bpf_obj_get_info(self.flows_fd, ct.byref(info), ct.byref(n)) != 0:
            raise GateError(f"cannot read the flow table's size: {os.strerror(ct.get_errno() or errno.EINVAL)}")
        return info.max_entries

    # -- listeners ---------------------------------------------------------------------------

    def _listeners_fd(self) -> int:
        if self.listeners_fd < 0:
            raise GateError(f"the gate pinned at {self.path} predates listeners: run `usertcp gate up` again")
        return self.listeners_fd

    def add_listener(self, local: tuple[str, int], owner_cookie: int) -> None:
        """Let SYNs to `local` = (ip, port) create flows owned by `owner_cookie` (ip "0.0.0.0":
        any local address). Replaces a listener already there (and zeroes its counters); flows
        already created keep their owner."""
        if not 0 < local[1] < 65536:
            raise GateError(f"cannot listen on port {local[1]}: pick a port in 1..65535")
        k, v = _listen_key(local), ListenerValue(owner=owner_cookie)
        if _lib().bpf_update_elem(self._listeners_fd(), ct.byref(k), ct.byref(v), 0) != 0:
            e = ct.get_errno() or errno.ENOSPC
            raise GateError(f"cannot add listener {local[0]}:{local[1]}: {os.strerror(e)}"
                            + (" (too many listeners: remove unused ones)" if e == errno.E2BIG else ""))

    def remove_listener(self, local: tuple[str, int]) -> bool:
        """Stop creating flows for `local`; existing flows stay (revoke them). SYNs to it then
        reach the kernel again, which refuses them with RST."""
        k = _listen_key(local)
        return _lib().bpf_delete_elem(self._listeners_fd(), ct.byref(k)) == 0

    def listeners(self) -> list[tuple[tuple[str, int], dict]]:
        """((ip, port), {"owner", "syns", "table_full"}) for every listener."""
        if self.listeners_fd < 0:
            return []
        lib = _lib()
        out = []
        prev, nxt = None, ListenKey()
        while lib.bpf_get_next_key(self.listeners_fd, ct.byref(prev) if prev else None, ct.byref(nxt)) == 0:
            v = ListenerValue()
            if lib.bpf_lookup_elem(self.listeners_fd, ct.byref(nxt), ct.byref(v)) == 0:
                out.append((_listen_unkey(nxt), {"owner": v.owner, "syns": v.syns, "table_full": v.table_full}))
            prev, nxt = nxt, ListenKey()
        return out

    # -- counters ----------------------------------------------------------------------------

    def verdicts(self) -> dict[str, int]:
        lib = _lib()
        out = {}
        for i, name in enumerate(REASONS):
            k, v = ct.c_uint32(i), ct.c_uint64()
            lib.bpf_lookup_elem(self.verdicts_fd, ct.byref(k), ct.byref(v))
            out[name] = v.value
        return out


def _flow_dict(v: FlowValue) -> dict:
    d = {name: getattr(v, name) for name, _ in FlowValue._fields_ if name != "pad"}
    d["passive"], d["isn_known"] = bool(v.passive), bool(v.isn_known)
    d["state"] = FLOW_STATES.get(v.state, str(v.state))
    return d


def _ipr(netns: str | None):
    from netns.ns import iproute

    if netns and not os.path.exists(f"/run/netns/{netns}"):
        raise GateError(f"network namespace {netns!r} does not exist: run `usertcp lab up`")
    return iproute(netns)


def _ifindex(ipr, ifname: str, netns: str | None) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        where = f" in namespace {netns}" if netns else ""
        raise GateError(f"no interface {ifname!r}{where}: run `usertcp lab up` or pass --dev")
    return idx[0]


def up(netns: str | None, ifname: str, max_flows: int | None = None) -> dict:
    """Load and attach the gate on `ifname` (replacing one already there) and pin its maps.
    `max_flows` bounds the flow table (default: MAX_FLOWS in bpf/gate.c, allocated on demand)."""
    if max_flows is not None and not 1 <= max_flows <= 1 << 22:
        raise GateError(f"max_flows must be in 1..{1 << 22}, not {max_flows}")
    if os.geteuid() != 0:
        raise GateError("the gate needs root (BPF and tc): run as root")
    from bcc import BPF

    with _ipr(netns) as ipr:
        index = _ifindex(ipr, ifname, netns)
        _detach(ipr, index)
        _unpin(netns, ifname)
        _ensure_bpffs()
        cflags = ["-Wno-unused-function"] + ([f"-DMAX_FLOWS={max_flows}"] if max_flows else [])
        bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=cflags)
        eg = bpf.load_func(b"gate_tc_egress", BPF.SCHED_CLS)
        ing = bpf.load_func(b"gate_tc_ingress", BPF.SCHED_CLS)
        learn = bpf.load_func(b"gate_xdp_ingress", BPF.XDP)
        ipr.tc("add", "clsact", index)
        ipr.tc("add-filter", "bpf", index, ":1", fd=eg.fd, name=PROG_NAMES["egress"],
               parent=TC_H_CLSACT_EGRESS, classid=1, direct_action=True)
        ipr.tc("add-filter", "bpf", index, ":1", fd=ing.fd, name=PROG_NAMES["ingress"],
               parent=TC_H_CLSACT_INGRESS, classid=1, direct_action=True)
        # Learning runs in XDP so it happens before the packet taps (see bpf/gate.c).
        ipr.link("set", index=index, xdp_fd=learn.fd)
        path = pin_dir(netns, ifname)
        path.mkdir(parents=True, exist_ok=True)
        lib = _lib()
        for name in MAP_NAMES:
            if lib.bpf_obj_pin(bpf[name.encode()].map_fd, str(path / name).encode()) != 0:
                _detach(ipr, index)
                raise GateError(f"cannot pin map {name} at {path}: {os.strerror(ct.get_errno() or errno.EPERM)}")
        (RUN_DIR / "gates").mkdir(parents=True, exist_ok=True)
        meta = {"netns": netns, "ifname": ifname, "ifindex": index, "pins": str(path)}
        _meta_path(netns, ifname).write_text(json.dumps(meta))
        bpf.cleanup()
        return meta


def _meta_path(netns: str | None, ifname: str) -> Path:
    return RUN_DIR / "gates" / f"{netns or 'root'}.{ifname}.json"


def _detach(ipr, index: int) -> None:
    """Remove the XDP program and the clsact qdisc (and with it both classifiers)."""
    try:
        ipr.link("set", index=index, xdp_fd=-1)
    except Exception:  # noqa: BLE001 - nothing attached
        pass
    try:
        ipr.tc("del", "clsact", index)
    except Exception as exc:  # noqa: BLE001 - absent qdisc is the normal case
        if "No such file" not in str(exc) and "Invalid argument" not in str(exc) and getattr(exc, "code", None) not in (2, 22):
            raise


def _unpin(netns: str | None, ifname: str) -> None:
    path = pin_dir(netns, ifname)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    _meta_path(netns, ifname).unlink(missing_ok=True)


def down(netns: str | None, ifname: str) -> None:
    """Detach the gate and remove its pins; also works when the namespace is already gone."""
    if netns is None or os.path.exists(f"/run/netns/{netns}"):
        try:
            with _ipr(netns) as ipr:
                idx = ipr.link_lookup(ifname=ifname)
                if idx:
                    _detach(ipr, idx[0])
        except GateError:
            pass
    _unpin(netns, ifname)


def attached(netns: str | None, ifname: str) -> bool:
    """Whether our classifiers are on the interface (looked up by name in tc's filter dump)."""
    try:
        with _ipr(netns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                return False
            names = set()
            for parent in (TC_H_CLSACT_EGRESS, TC_H_CLSACT_INGRESS):
                for msg in ipr.get_filters(index=idx[0], parent=parent):
                    opts = msg.get_attr("TCA_OPTIONS")
                    if opts is not None and opts.get_attr("TCA_BPF_NAME"):
                        names.add(opts.get_attr("TCA_BPF_NAME"))
            return {PROG_NAMES["egress"], PROG_NAMES["ingress"]} <= {n.split(":")[0] for n in names}
    except Exception:  # noqa: BLE001
        return False


def status(netns: str | None, ifname: str) -> dict:
    out = {"netns": netns, "ifname": ifname, "attached": attached(netns, ifname), "pinned": False}
    try:
        with GateMaps.open(netns, ifname) as maps:
            out["pinned"] = True
            out["verdicts"] = maps.verdicts()
            out["flows"] = [
                {"local": f"{l[0]}:{l[1]}", "remote": f"{r[0]}:{r[1]}", **v} for l, r, v in maps.flows()
            ]
            out["listeners"] = [{"local": f"{a[0]}:{a[1]}", **v} for a, v in maps.listeners()]
    except GateError:
        pass
    return out


def leftovers() -> list[tuple[str | None, str]]:
    """Gates this machine has pins or metadata for (to clean up after a crash)."""
    out = []
    gates = RUN_DIR / "gates"
    if gates.is_dir():
        for p in gates.glob("*.json"):
            try:
                meta = json.loads(p.read_text())
                out.append((meta["netns"], meta["ifname"]))
            except (OSError, ValueError, KeyError):
                p.unlink(missing_ok=True)
    return out
