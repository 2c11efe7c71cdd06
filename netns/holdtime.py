"""Per-pass hold time inside the lab's router, kernel-timestamped on both router interfaces.

The delay line holds every forwarded packet for a configured one-way delay. This instrument
checks it packet by packet: a bcc program on two tracepoints stamps each skb when it arrives on
a router ingress interface and again when it is queued for transmit on the paired egress
interface, and reports the difference through a BPF ring buffer (two more tracepoints, on skb
free, keep the bookkeeping honest: see "Stale entries").

- `net:netif_receive_skb` fires at the start of `__netif_receive_skb_core`, i.e. for every
  receive path: veth's default (non-NAPI) path, where `veth_xmit` hands the skb to `__netif_rx`
  and the backlog softirq passes it on, as well as NAPI/GRO (veth with XDP or GRO enabled). With
  GRO the tracepoint sees the merged skb, so one sample covers a GRO/GSO bundle (`len` says how
  big). Time the skb spent in the ingress backlog queue before this point is not counted.
- `net:net_dev_queue` fires in `__dev_queue_xmit` *before* the egress qdisc. So the sample is
  the delay element's hold plus forwarding (routing, netfilter, neighbour output, including an
  ARP resolution if one is pending); a rate limiter's queue (TBF/HTB on the egress interface)
  is **excluded** on purpose: that is bottleneck queueing, not delay-line error.

Matching is by `skbaddr` (an skb keeps its address from receive to transmit when forwarded,
also through NFQUEUE: the verdict re-injects the same skb; a GSO skb queued to NFQUEUE without
the queue's GSO flag is segmented into new skbs and then gives no sample). Devices are matched by
name, not ifindex, because tracepoints are global across namespaces while ifindexes repeat per
namespace; lab interface names are unique because they start with the lab's name.

Stale entries. An skb that arrives on an ingress interface and is not forwarded (addressed to
the router: ARP, IPv6 ND/MLD, a ping of the router; or dropped: TTL, full NFQUEUE) would leave
its entry behind, and slab allocators hand a just-freed skb address to the next allocation on
that CPU: seen here right after link-up, the router's own MLDv2 report (a 90-byte frame) left
`tprb-ra` in an skb whose address had just carried b's MLD report in on `tprb-rb`, and came out
as a "96 ms hold". So the program also hooks `skb:kfree_skb` and `skb:consume_skb` and forgets
an address when its skb is freed (`stats()["freed"]` counts stamped skbs that never left: local
deliveries and drops). That costs one hash delete per freed skb, machine-wide. Residual risk
of a bogus sample: free paths without a tracepoint (direct `__kfree_skb`, used by the kernel's
own TCP receive path, i.e. only for TCP connections that end *in* the router). If more than
`max_entries` skbs are held at once, the LRU map evicts the oldest: those give no sample (a
missing sample, never a wrong one).

Other limits (say so when reporting numbers):
- An skb that passes the ingress tracepoint twice (e.g. redirected through an IFB) is timed
  from the second pass.
- Events are dropped, not blocked, when the ring buffer is full; `lost()` counts them.
- Every packet on the machine (all namespaces) passes the two `net:` tracepoints, which read
  the device name and compare it with the configured ones (cost per packet not measured).
"""

from __future__ import annotations

import ctypes
import math
import statistics
import struct
import time

#: Most (ingress, egress) pairs one program can watch.
MAX_PAIRS = 8
IFNAMSIZ = 16

_EVENT = struct.Struct("=QII")  # hold_ns, len, idx — must match struct event below

_BPF_TEMPLATE = r"""
#include <uapi/linux/ptrace.h>

union ifname {
    char c[16];
    u64 w[2];
};

struct start {
    u64 ts;
    u32 idx;
    u32 len;
};

struct event {
    u64 hold_ns;
    u32 len;       /* skb->len at net_dev_queue: includes the link-layer header */
    u32 idx;       /* direction: index of the (ingress, egress) pair */
};

BPF_TABLE("lru_hash", u64, struct start, starts, MAX_ENTRIES);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
/* 0: events lost (ring buffer full), 1: events sent, 2: arrivals stamped,
   3: stamped skbs freed before reaching their egress (delivered locally or dropped) */
BPF_PERCPU_ARRAY(counters, u64, 4);

static __always_inline void count(int i) {
    u64 *c = counters.lookup(&i);
    if (c)
        (*c)++;
}

static __always_inline int ingress_index(const union ifname *n) {
INGRESS_MATCH
    return -1;
}

static __always_inline int egress_is(u32 idx, const union ifname *n) {
    switch (idx) {
EGRESS_MATCH
    }
    return 0;
}

static __always_inline int any_egress(const union ifname *n) {
ANY_EGRESS_MATCH
    return 0;
}

TRACEPOINT_PROBE(net, netif_receive_skb) {
    union ifname n = {};
    TP_DATA_LOC_READ_STR(n.c, name, sizeof(n.c));
    int idx = ingress_index(&n);
    if (idx < 0)
        return 0;
    u64 key = (u64)args->skbaddr;
    struct start s = {};
    s.ts = bpf_ktime_get_ns();
    s.idx = idx;
    s.len = args->len;
    starts.update(&key, &s);
    count(2);
    return 0;
}

TRACEPOINT_PROBE(net, net_dev_queue) {
    u64 now = bpf_ktime_get_ns();
    union ifname n = {};
    TP_DATA_LOC_READ_STR(n.c, name, sizeof(n.c));
    if (!any_egress(&n))
        return 0;
    u64 key = (u64)args->skbaddr;
    struct start *s = starts.lookup(&key);
    if (!s)
        return 0;
    u32 idx = s->idx;
    if (!egress_is(idx, &n))
        return 0;
    u64 hold = now - s->ts;
    starts.delete(&key);
    struct event *e = events.ringbuf_reserve(sizeof(struct event));
    if (!e) {
        count(0);
        return 0;
    }
    e->hold_ns = hold;
    e->len = args->len;
    e->idx = idx;
    events.ringbuf_submit(e, 0);
    count(1);
    return 0;
}

/* A freed skb's address will be reused: never let a later skb inherit its arrival stamp.
   Attached by hand (not TRACEPOINT_PROBE): bcc would build the kfree_skb context from the
   format file, whose `enum skb_drop_reason` the build headers may not define. Both events
   start with the 8 bytes of common fields, then skbaddr. */
struct skb_free_args {
    u64 common;
    u64 skbaddr;
};

int on_skb_free(struct skb_free_args *args) {
    u64 key = args->skbaddr;
    if (starts.delete(&key) == 0)
        count(3);
    return 0;
}
"""


def _words(name: str) -> tuple[int, int]:
    raw = name.encode().ljust(IFNAMSIZ, b"\0")
    return struct.unpack("<QQ", raw)


def _eq(name: str) -> str:
    w0, w1 = _words(name)
    return f"(n->w[0] == {w0:#x}ULL && n->w[1] == {w1:#x}ULL)"


def _source(pairs: list[tuple[str, str]], ringbuf_pages: int, max_entries: int) -> str:
    ingress = "\n".join(f"    if {_eq(i)} return {k};" for k, (i, _) in enumerate(pairs))
    egress = "\n".join(f"    case {k}: return {_eq(e)};" for k, (_, e) in enumerate(pairs))
    any_eg = "\n".join(f"    if {_eq(e)} return 1;" for e in dict.fromkeys(e for _, e in pairs))
    return (
        _BPF_TEMPLATE.replace("INGRESS_MATCH", ingress)
        .replace("ANY_EGRESS_MATCH", any_eg)
        .replace("EGRESS_MATCH", egress)
        .replace("RINGBUF_PAGES", str(ringbuf_pages))
        .replace("MAX_ENTRIES", str(max_entries))
    )


def _check_name(name) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"interface name must be a non-empty string, not {name!r}")
    if len(name.encode()) >= IFNAMSIZ or "\0" in name:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")


class HoldTimes:
    """Hold times of packets forwarded from each `pairs[i][0]` to `pairs[i][1]`, in ns.

    A context manager: the program is compiled and attached on enter (a few seconds with bcc),
    detached on exit. Call `poll()` from time to time (the ring buffer holds
    `ringbuf_pages` pages, ~170 events per 4 KB page) and read `samples(i)` / `lengths(i)`.
    Needs root. The interfaces need not exist yet: names are matched as packets pass.
    """

    def __init__(
        self,
        pairs: list[tuple[str, str]],
        *,
        ringbuf_pages: int = 1024,
        max_entries: int = 65536,
    ):
        pairs = [tuple(p) for p in pairs]
        if not 1 <= len(pairs) <= MAX_PAIRS:
            raise ValueError(f"need 1..{MAX_PAIRS} (ingress, egress) pairs, got {len(pairs)}")
        for p in pairs:
            if len(p) != 2:
                raise ValueError(f"each pair is (ingress_ifname, egress_ifname), not {p!r}")
            _check_name(p[0])
            _check_name(p[1])
        ingress = [i for i, _ in pairs]
        if len(set(ingress)) != len(ingress):
            raise ValueError(f"an ingress interface may appear in one pair only: {ingress}")
        if ringbuf_pages < 1 or ringbuf_pages & (ringbuf_pages - 1):
            raise ValueError(f"ringbuf_pages must be a power of two, not {ringbuf_pages}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, not {max_entries}")
        self.pairs: list[tuple[str, str]] = pairs
        self._ringbuf_pages = ringbuf_pages
        self._max_entries = max_entries
        self._holds: list[list[int]] = [[] for _ in pairs]
        self._lens: list[list[int]] = [[] for _ in pairs]
        self._bpf = None
        #: seconds bcc took to compile and load the program (set on enter)
        self.compile_s: float | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> HoldTimes:
        from bcc import BPF  # Debian's python3-bpfcc; heavy, so imported only here

        src = _source(self.pairs, self._ringbuf_pages, self._max_entries)
        t0 = time.monotonic()
        self._bpf = BPF(text=src.encode(), cflags=["-Wno-unused-function"])
        self.compile_s = time.monotonic() - t0
        try:
            for tp in (b"skb:kfree_skb", b"skb:consume_skb"):
                self._bpf.attach_tracepoint(tp=tp, fn_name=b"on_skb_free")
            holds, lens, unpack = self._holds, self._lens, _EVENT.unpack

            def on_event(_ctx, data, size):
                hold, length, idx = unpack(ctypes.string_at(data, _EVENT.size))
                holds[idx].append(hold)
                lens[idx].append(length)
                return 0

            self._bpf[b"events"].open_ring_buffer(on_event)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Detach the tracepoints and free the maps (idempotent). Samples stay readable."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            try:
                bpf.ring_buffer_consume()  # what is already in the ring
            finally:
                bpf.cleanup()

    # -- reading --------------------------------------------------------------------------

    def _need(self):
        if self._bpf is None:
            raise RuntimeError("HoldTimes is not running: use it as a context manager")
        return self._bpf

    def poll(self, timeout_ms: int = 0) -> None:
        """Drain the ring buffer into the per-direction lists; wait up to `timeout_ms` for the
        first event if none is there (0: do not wait)."""
        bpf = self._need()
        if timeout_ms > 0:
            bpf.ring_buffer_poll(int(timeout_ms))
        bpf.ring_buffer_consume()

    def samples(self, index: int) -> list[int]:
        """Hold times in ns of the packets of pair `index`, in the order they left."""
        return list(self._holds[index])

    def lengths(self, index: int) -> list[int]:
        """skb lengths (bytes, link-layer header included; a GSO bundle counts as one) of the
        samples of pair `index`, position for position."""
        return list(self._lens[index])

    def clear(self) -> None:
        """Forget the samples collected so far (e.g. after a warm-up)."""
        for lst in (*self._holds, *self._lens):
            lst.clear()

    def _counter(self, i: int) -> int:
        bpf = self._need()
        return sum(bpf[b"counters"][ctypes.c_int(i)])

    def lost(self) -> int:
        """Events dropped because the ring buffer was full (counted by the BPF program itself:
        bcc reports no loss for ring buffers). Poll more often or raise `ringbuf_pages`."""
        return self._counter(0)

    def stats(self) -> dict:
        """Kernel-side counters: arrivals stamped on an ingress interface, samples emitted,
        samples lost (ring buffer full), and stamped skbs freed before they reached the paired
        egress (delivered to the router itself, or dropped: a delay line that drops shows
        here)."""
        return {
            "stamped": self._counter(2),
            "emitted": self._counter(1),
            "lost": self._counter(0),
            "freed": self._counter(3),
        }


def _nearest_rank(sorted_values: list[float], q: float) -> float:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(samples_ns: list[int], expected_s: float) -> dict:
    """How far hold times are from `expected_s`: error = hold − expected, in ms.

    Returns count, min/median/p99 (nearest-rank)/max of the error and median/p99/max of
    |error| (`abs_*`). With no samples every statistic is None.
    """
    keys = ("min_ms", "median_ms", "p99_ms", "max_ms", "abs_median_ms", "abs_p99_ms", "abs_max_ms")
    out: dict = {"count": len(samples_ns), "expected_ms": expected_s * 1e3}
    if not samples_ns:
        out.update(dict.fromkeys(keys))
        return out
    err = sorted(s / 1e6 - expected_s * 1e3 for s in samples_ns)
    absr = sorted(abs(e) for e in err)
    out.update(
        min_ms=err[0],
        median_ms=statistics.median(err),
        p99_ms=_nearest_rank(err, 0.99),
        max_ms=err[-1],
        abs_median_ms=statistics.median(absr),
        abs_p99_ms=_nearest_rank(absr, 0.99),
        abs_max_ms=absr[-1],
    )
    return out
