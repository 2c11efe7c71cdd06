"""The gate's Python side: load `bpf/gate.c` with bcc, attach it with pyroute2, manage flows.

`gate up` compiles the program, attaches its egress and ingress classifiers to a clsact qdisc on
one interface of one network namespace, and pins the two maps (flows, verdict counters) in a
bpffs that usertcp mounts at /run/usertcp/bpf. The attached programs keep themselves alive (TC
holds them), so `up` can exit; any later process — the sender registering its flow, `gate
status`, a test — opens the pinned maps by path. /run rather than /sys/fs/bpf because
`ip netns exec` remounts /sys and would hide the pins from a sender started that way.

Map access from Python goes through libbcc's thin bpf(2) wrappers with ctypes structs that mirror
the C structs in bpf/gate.c.
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
)
FLOW_STATES = {0: "syn-sent", 1: "synchronized", 2: "reset"}

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
    ]


def _lib():
    from bcc.libbcc import lib

    lib.bpf_obj_get.restype = ct.c_int
    lib.bpf_obj_get.argtypes = [ct.c_char_p]
    lib.bpf_obj_pin.restype = ct.c_int
    lib.bpf_obj_pin.argtypes = [ct.c_int, ct.c_char_p]
    return lib


def _key(local: tuple[str, int], remote: tuple[str, int]) -> FlowKey:
    """Network byte order, as the packet carries it (the map key is raw bytes)."""
    k = FlowKey()
    k.saddr = struct.unpack("=I", socket.inet_aton(local[0]))[0]
    k.daddr = struct.unpack("=I", socket.inet_aton(remote[0]))[0]
    k.sport = struct.unpack("=H", struct.pack("!H", local[1]))[0]
    k.dport = struct.unpack("=H", struct.pack("!H", remote[1]))[0]
    return k


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

    @classmethod
    def open(cls, netns: str | None, ifname: str) -> "GateMaps":
        path = pin_dir(netns, ifname)
        lib = _lib()
        fds = []
        for name in ("flows", "verdicts"):
            fd = lib.bpf_obj_get(str(path / name).encode())
            if fd < 0:
                for f in fds:
                    os.close(f)
                where = f"interface {ifname}" + (f" in namespace {netns}" if netns else "")
                raise GateError(
                    f"the gate is not up on {where}: run `usertcp gate up`"
                    + (f" --netns {netns} --dev {ifname}" if netns else f" --dev {ifname}")
                )
            fds.append(fd)
        return cls(path, fds[0], fds[1])

    def close(self) -> None:
        for fd in (self.flows_fd, self.verdicts_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "GateMaps":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def register(self, local: tuple[str, int], remote: tuple[str, int], owner_cookie: int, isn: int) -> None:
        """Admit one flow: only the socket with `owner_cookie` may send on it, starting with a
        SYN at `isn`. Everything else about the flow the gate learns from the peer."""
        v = FlowValue(owner=owner_cookie, isn=isn & 0xFFFFFFFF, snd_una=isn & 0xFFFFFFFF,
                      snd_max=isn & 0xFFFFFFFF, state=0)
        k = _key(local, remote)
        if _lib().bpf_update_elem(self.flows_fd, ct.byref(k), ct.byref(v), 0) != 0:
            e = ct.get_errno() or errno.ENOSPC
            raise GateError(f"cannot register flow {local}->{remote}: {os.strerror(e)}")

    def revoke(self, local: tuple[str, int], remote: tuple[str, int]) -> bool:
        k = _key(local, remote)
        return _lib().bpf_delete_elem(self.flows_fd, ct.byref(k)) == 0

    def flow(self, local: tuple[str, int], remote: tuple[str, int]) -> dict | None:
        k = _key(local, remote)
        v = FlowValue()
        if _lib().bpf_lookup_elem(self.flows_fd, ct.byref(k), ct.byref(v)) != 0:
            return None
        return _flow_dict(v)

    def flows(self) -> list[tuple[tuple[str, int], tuple[str, int], dict]]:
        lib = _lib()
        out = []
        prev, nxt = None, FlowKey()
        while lib.bpf_get_next_key(self.flows_fd, ct.byref(prev) if prev else None, ct.byref(nxt)) == 0:
            v = FlowValue()
            if lib.bpf_lookup_elem(self.flows_fd, ct.byref(nxt), ct.byref(v)) == 0:
                out.append((*_unkey(nxt), _flow_dict(v)))
            prev, nxt = nxt, FlowKey()
        return out

    def verdicts(self) -> dict[str, int]:
        lib = _lib()
        out = {}
        for i, name in enumerate(REASONS):
            k, v = ct.c_uint32(i), ct.c_uint64()
            lib.bpf_lookup_elem(self.verdicts_fd, ct.byref(k), ct.byref(v))
            out[name] = v.value
        return out


def _flow_dict(v: FlowValue) -> dict:
    d = {name: getattr(v, name) for name, _ in FlowValue._fields_}
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


def up(netns: str | None, ifname: str) -> dict:
    """Load and attach the gate on `ifname` (replacing one already there) and pin its maps."""
    if os.geteuid() != 0:
        raise GateError("the gate needs root (BPF and tc): run as root")
    from bcc import BPF

    with _ipr(netns) as ipr:
        index = _ifindex(ipr, ifname, netns)
        _detach(ipr, index)
        _unpin(netns, ifname)
        _ensure_bpffs()
        bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=["-Wno-unused-function"])
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
        for name in ("flows", "verdicts"):
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
