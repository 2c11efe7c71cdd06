"""Random packet loss per direction of the lab's path: `bpf/loss.c` in XDP.

The program goes on the interface that *receives* the lossy direction: forward loss on the
receiver's interface (after the router's egress has segmented GSO bundles, so every verdict is
about one MTU-sized packet), reverse loss on the router's interface toward the receiver (the
ACKs). Only IP packets are dropped; ARP and IPv6 neighbour discovery always pass.

`attach` compiles the program with bcc, attaches it with pyroute2 from inside the namespace and
pins its two maps (and the program) in usertcp's bpffs at /run/usertcp/bpf, in a directory
named `<ns>--<ifname>--loss` (see `pin_dir`). The attached program keeps itself alive, so the
process that attached it may exit; any later process changes the probability or reads the
counters through the pins (libbcc's bpf(2) wrappers and ctypes structs mirroring bpf/loss.c).

    attach("lab-rcv", "rcv0", 0.01)          # 1% loss on data arriving at the receiver
    set_probability("lab-rcv", "rcv0", 0.02)  # live, from the next packet on
    counters("lab-rcv", "rcv0")               # {"probability": 0.02, "packets": ..., ...}
    detach("lab-rcv", "rcv0")
"""

from __future__ import annotations

import ctypes as ct
import errno
import math
import os
import shutil
from pathlib import Path

from .ns import exists, iproute

REPO = Path(__file__).resolve().parent.parent
BPF_SOURCE = REPO / "bpf" / "loss.c"

#: The XDP program's name as the kernel reports it (bcc names programs after the function).
PROG_NAME = "lab_loss"

#: Counter names, in the order of `struct loss_stats` in bpf/loss.c.
STATS = ("packets", "dropped", "bytes", "bytes_dropped", "full_packets", "full_dropped")

_PIN_SUFFIX = "--loss"
_PINS = ("config", "stats", "prog")
_ETH_HLEN = 14


class LossError(RuntimeError):
    """A loss-emulation problem the user can act on; the message says what to run."""


class _Config(ct.Structure):
    _fields_ = [("threshold", ct.c_uint32), ("full_len", ct.c_uint32), ("seed", ct.c_uint64),
                ("next", ct.c_uint64)]


class _Stats(ct.Structure):
    _fields_ = [(name, ct.c_uint64) for name in STATS]


# --- naming ----------------------------------------------------------------------------------

def _escape(name: str) -> str:
    # bpffs rejects dots in names (kernel/bpf/inode.c, bpf_lookup); interface names may have
    # them (VLANs: eth0.100). Reversible, so that leftovers() can recover the names.
    return name.replace("%", "%25").replace(".", "%2E")


def _unescape(name: str) -> str:
    return name.replace("%2E", ".").replace("%25", "%")


def pin_dir(ns: str, ifname: str) -> Path:
    """Where the maps of the loss program on `ifname` in namespace `ns` are pinned."""
    from usertcp.gate import BPFFS

    return BPFFS / f"{_escape(ns)}--{_escape(ifname)}{_PIN_SUFFIX}"


def _where(ns: str, ifname: str) -> str:
    return f"interface {ifname!r} in namespace {ns!r}"


# --- validation ------------------------------------------------------------------------------

def _threshold(probability: float) -> int:
    """p as the u32 the program compares bpf_get_prandom_u32() with (p = threshold / 2^32)."""
    if isinstance(probability, bool) or not isinstance(probability, (int, float)):
        raise ValueError(f"loss probability must be a number in [0, 1), got {probability!r}")
    p = float(probability)
    if not math.isfinite(p) or not 0.0 <= p < 1.0:
        raise ValueError(
            f"loss probability must be in [0, 1) (0 = no loss; 1 would cut the path), got {probability!r}"
        )
    return min(round(p * 2**32), 2**32 - 1)


def _check_mtu(mtu: int) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535:
        raise ValueError(f"mtu must be an integer in [68, 65535], got {mtu!r}")
    return mtu


# --- bpf(2) through libbcc -------------------------------------------------------------------

def _libbpf():
    from usertcp.gate import _lib

    lib = _lib()
    lib.bpf_prog_get_fd_by_id.restype = ct.c_int
    lib.bpf_prog_get_fd_by_id.argtypes = [ct.c_uint32]
    lib.bpf_obj_get_info.restype = ct.c_int
    lib.bpf_obj_get_info.argtypes = [ct.c_int, ct.c_void_p, ct.POINTER(ct.c_uint32)]
    return lib


def _prog_name(prog_id: int) -> str | None:
    """The name of BPF program `prog_id` (struct bpf_prog_info: name[16] at offset 64)."""
    lib = _libbpf()
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        buf = ct.create_string_buffer(256)  # zeroed: the kernel accepts a longer, zero tail
        size = ct.c_uint32(len(buf))
        if lib.bpf_obj_get_info(fd, buf, ct.byref(size)) != 0 or size.value < 80:
            return None
        return buf.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    finally:
        os.close(fd)


class _Pins:
    """The pinned maps of one loss program, opened by path (any process, any namespace)."""

    def __init__(self, ns: str, ifname: str):
        from usertcp.gate import _lib

        if not exists(ns):
            raise LossError(f"network namespace {ns!r} does not exist: run `usertcp lab up`")
        self.lib = _lib()
        path = pin_dir(ns, ifname)
        self.config_fd = self.lib.bpf_obj_get(str(path / "config").encode())
        self.stats_fd = self.lib.bpf_obj_get(str(path / "stats").encode()) if self.config_fd >= 0 else -1
        if self.stats_fd < 0:
            self.close()
            raise LossError(
                f"no loss program on {_where(ns, ifname)} (nothing pinned at {path}): "
                f"attach one first (netns.loss.attach({ns!r}, {ifname!r}, p), or bring the lab up with loss)"
            )

    def close(self) -> None:
        for fd in (self.config_fd, self.stats_fd):
            if fd >= 0:
                os.close(fd)
        self.config_fd = self.stats_fd = -1

    def __enter__(self) -> "_Pins":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def config(self) -> _Config:
        k, v = ct.c_uint32(0), _Config()
        if self.lib.bpf_lookup_elem(self.config_fd, ct.byref(k), ct.byref(v)) != 0:
            raise LossError(f"cannot read the loss config map: {os.strerror(ct.get_errno() or errno.EIO)}")
        return v

    def stats(self) -> dict[str, int]:
        from bcc.utils import get_possible_cpus

        # A per-CPU array answers one value per possible CPU (each rounded up to 8 bytes; ours is 48).
        k, v = ct.c_uint32(0), (_Stats * len(get_possible_cpus()))()
        if self.lib.bpf_lookup_elem(self.stats_fd, ct.byref(k), ct.byref(v)) != 0:
            raise LossError(f"cannot read the loss counters: {os.strerror(ct.get_errno() or errno.EIO)}")
        return {name: sum(getattr(cpu, name) for cpu in v) for name in STATS}


def _write_config(lib, fd: int, cfg: _Config) -> None:
    k = ct.c_uint32(0)
    if lib.bpf_update_elem(fd, ct.byref(k), ct.byref(cfg), 0) != 0:
        raise LossError(f"cannot write the loss config map: {os.strerror(ct.get_errno() or errno.EIO)}")


# --- netlink, inside the namespace ------------------------------------------------------------

def _ifindex(ipr, ns: str, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise LossError(
            f"no interface {ifname!r} in namespace {ns!r}: check `ip -n {ns} link`, or run `usertcp lab up`"
        )
    return idx[0]


def _xdp_prog_id(ipr, index: int) -> int:
    xdp = ipr.get_links(index)[0].get_attr("IFLA_XDP")
    return (xdp.get_attr("IFLA_XDP_PROG_ID") or 0) if xdp is not None else 0


def xdp_program(ns: str, ifname: str) -> tuple[int, str | None] | None:
    """(id, name) of the XDP program on `ifname` in `ns`, or None (no program, no such place)."""
    if not exists(ns):
        return None
    with iproute(ns) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            return None
        prog_id = _xdp_prog_id(ipr, idx[0])
    return (prog_id, _prog_name(prog_id)) if prog_id else None


def _require(ns: str) -> None:
    if os.geteuid() != 0:
        raise LossError("loss emulation needs root (BPF and netlink): run as root")
    if not exists(ns):
        raise LossError(f"network namespace {ns!r} does not exist: run `usertcp lab up`")


# --- the API ---------------------------------------------------------------------------------

def attach(ns: str, ifname: str, probability: float, mtu: int = 1500, seed: int | None = None) -> None:
    """Drop IP packets arriving on `ifname` in namespace `ns` with `probability` (in [0, 1)).

    With `seed` (a positive integer) the pattern is deterministic: the n-th packet's fate is a
    function of (seed, n), so every run from the same seed loses the same packets by index
    (`reseed` starts the numbering again). Without, each packet draws bpf_get_prandom_u32().

    Replaces a loss program attached earlier (its counters start again from zero); refuses to
    replace anyone else's XDP program. Packets of at least `mtu` + 14 bytes count as full-size.
    Compiling takes 0.5-0.9 s (bcc/clang); changing the probability later costs nothing.

    On a veth, while the program is attached the kernel turns TSO off on the peer (so packets
    cross one by one: what makes the loss per packet) and caps the peer's MTU at about 3.5 KB
    (no multi-buffer XDP): fine for the lab's 1500.
    """
    threshold = _threshold(probability)
    full_len = _check_mtu(mtu) + _ETH_HLEN
    seed_value = _seed(seed)
    _require(ns)
    try:
        from bcc import BPF
    except ImportError:
        raise LossError("loss emulation needs bcc (Debian python3-bpfcc): run `make setup`") from None
    from usertcp.gate import GateError, _ensure_bpffs, _lib

    with iproute(ns) as ipr:
        index = _ifindex(ipr, ns, ifname)
        old = _xdp_prog_id(ipr, index)
        if old and _prog_name(old) != PROG_NAME:
            raise LossError(
                f"{_where(ns, ifname)} already has XDP program {_prog_name(old)!r} (id {old}), which is "
                f"not a loss program: put loss on another interface, or remove it with "
                f"`ip -n {ns} link set dev {ifname} xdp off`"
            )
        try:
            _ensure_bpffs()
        except GateError as exc:
            raise LossError(str(exc)) from exc
        try:
            bpf = BPF(src_file=str(BPF_SOURCE).encode(), cflags=["-Wno-unused-function"])
        except Exception as exc:  # noqa: BLE001 - bcc raises a bare Exception; clang printed why
            raise LossError(
                f"cannot compile {BPF_SOURCE} ({exc}; the compiler's messages are above): are the "
                f"kernel headers linked at /lib/modules/{os.uname().release}/build? run `make setup`"
            ) from exc
        try:
            fn = bpf.load_func(PROG_NAME.encode(), BPF.XDP)
            lib = _lib()
            # Configure before attaching, so the first packet already sees p and full_len.
            _write_config(lib, bpf[b"loss_config"].map_fd, _Config(threshold=threshold, full_len=full_len,
                                                                         seed=seed_value))
            try:
                ipr.link("set", index=index, xdp_fd=fn.fd)
            except Exception as exc:  # noqa: BLE001 - NetlinkError; say where and why
                raise LossError(f"cannot attach XDP to {_where(ns, ifname)}: {exc}") from exc
            path = pin_dir(ns, ifname)
            shutil.rmtree(path, ignore_errors=True)  # an earlier program's pins (now replaced)
            path.mkdir(parents=True)
            for name, fd in (("config", bpf[b"loss_config"].map_fd), ("stats", bpf[b"loss_stats"].map_fd),
                             ("prog", fn.fd)):
                if lib.bpf_obj_pin(fd, str(path / name).encode()) != 0:
                    err = os.strerror(ct.get_errno() or errno.EPERM)
                    _xdp_off(ipr, index)
                    shutil.rmtree(path, ignore_errors=True)
                    raise LossError(f"cannot pin the loss map {name} at {path}: {err}")
        finally:
            bpf.cleanup()  # closes our fds; the interface holds the program, the pins the maps


def set_probability(ns: str, ifname: str, probability: float) -> None:
    """Change the drop probability of the loss program on `ifname` in `ns`, live."""
    threshold = _threshold(probability)
    with _Pins(ns, ifname) as pins:
        cfg = pins.config()
        cfg.threshold = threshold
        _write_config(pins.lib, pins.config_fd, cfg)


def reseed(ns: str, ifname: str, seed: int | None) -> None:
    """Start the loss pattern of the program on `ifname` in `ns` again: from packet 0 of `seed`'s
    pattern, or (None) back to bpf_get_prandom_u32(). Call it between two runs that should see
    the same losses."""
    value = _seed(seed)
    with _Pins(ns, ifname) as pins:
        cfg = pins.config()
        cfg.seed, cfg.next = value, 0
        _write_config(pins.lib, pins.config_fd, cfg)


def _seed(seed: int | None) -> int:
    """The program's seed field: 0 means "not seeded", so a seed must be in [1, 2^64)."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 < seed < 2**64:
        raise LossError(f"loss seed must be an integer in [1, 2^64), got {seed!r}")
    return seed


def counters(ns: str, ifname: str) -> dict | None:
    """Probability and counters since `attach`, or None if no loss program is attached there.

    packets/bytes: IP packets (Ethernet frame bytes) that reached the program; dropped and
    bytes_dropped: those it dropped; full_packets/full_dropped: the same for frames of at least
    MTU + 14 bytes. ARP and IPv6 neighbour discovery are neither dropped nor counted.
    """
    if not exists(ns):
        return None
    try:
        pins = _Pins(ns, ifname)
    except LossError:
        return None
    with pins:
        cfg = pins.config()
        out: dict = {"probability": cfg.threshold / 2**32, "seed": cfg.seed or None}
        out.update(pins.stats())
        return out


def _xdp_off(ipr, index: int) -> None:
    ipr.link("set", index=index, xdp_fd=-1)


def detach(ns: str, ifname: str) -> bool:
    """Remove the loss program from `ifname` in `ns` and its pins; True if anything was there.

    Leaves another program's XDP alone. Safe when the namespace or interface is gone (then
    only the pins are removed).
    """
    found = False
    if exists(ns):
        with iproute(ns) as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if idx:
                prog = _xdp_prog_id(ipr, idx[0])
                if prog and _prog_name(prog) == PROG_NAME:
                    _xdp_off(ipr, idx[0])
                    found = True
    path = pin_dir(ns, ifname)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
        found = True
    return found


def leftovers() -> list[tuple[str, str]]:
    """(ns, ifname) of loss pins whose namespace is gone (remove them with `detach`)."""
    from usertcp.gate import BPFFS

    out = []
    try:
        entries = sorted(BPFFS.iterdir())
    except OSError:
        return out
    for p in entries:
        name = p.name
        if not (p.is_dir() and name.endswith(_PIN_SUFFIX)):
            continue
        ns, sep, ifname = name[: -len(_PIN_SUFFIX)].partition("--")
        if not sep:
            continue
        ns, ifname = _unescape(ns), _unescape(ifname)
        if not exists(ns):
            out.append((ns, ifname))
    return out
