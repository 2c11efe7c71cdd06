"""End-to-end RTT probe: ICMP echo from a raw socket inside a lab namespace.

`usertcp lab status` shows the measured base RTT of the path with it, and the tests use it to
check that the lab's delay is what was asked for. It is a measuring instrument, so both ends of
every sample are kernel timestamps where the kernel can give them:

- receive: `SO_TIMESTAMPNS`, the time the reply skb entered the stack of the probing namespace
  (stamped at `netif_rx`/`netif_receive_skb`, not when Python got round to `recvmsg`);
- send: a software TX timestamp (`SO_TIMESTAMPING` with `SOF_TIMESTAMPING_TX_SOFTWARE`), taken
  by the driver when the request left the interface (veth stamps in `veth_xmit`, after the
  sender's qdisc), read back from the socket's error queue. Each request carries its own
  timestamp key (`SCM_TS_OPT_ID`, Linux 6.13+), so a timestamp can never be paired with the
  wrong request. On an older kernel (or a device that does not stamp) the send time falls back
  to `time.time()` just before `sendmsg`, which adds the syscall's cost (tens of µs, a few
  hundred on a cold first call) to that sample; `ProbeResult.tx_kernel` says how many samples
  had a kernel send time.

Both timestamps are CLOCK_REALTIME (so is `time.time()`): a clock step during a probe distorts
the samples that straddle it.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import math
import os
import select
import socket
import statistics
import struct
import time
from dataclasses import dataclass, field

from .ns import enter

# Linux values (asm-generic/socket.h, linux/net_tstamp.h, linux/errqueue.h); the socket module
# of Python 3.11 has none of them.
SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS
SO_TIMESTAMPING = 37  # == SCM_TIMESTAMPING
SCM_TS_OPT_ID = 81
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SO_EE_ORIGIN_TIMESTAMPING = 4
IP_RECVERR = 11  # the cmsg type of a struct sock_extended_err at level SOL_IP

ICMP_ECHOREPLY = 0
ICMP_ECHO = 8

#: Largest ICMP payload in one IPv4 datagram (65535 - 20 IP - 8 ICMP).
MAX_SIZE = 65507
#: Sequence numbers are 16 bits and each must identify one request.
MAX_COUNT = 65536

_calls = itertools.count(1)


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _echo_request(ident: int, seq: int, payload: bytes) -> bytes:
    hdr = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq)
    return hdr[:2] + struct.pack("!H", _checksum(hdr + payload)) + hdr[4:] + payload


def _timespec(data: bytes) -> float:
    sec, nsec = struct.unpack_from("qq", data)
    return sec + nsec * 1e-9


@dataclass
class ProbeResult:
    """What one probe saw. `samples` are RTTs in seconds, in sequence order of the requests."""

    sent: int
    received: int
    samples: list[float] = field(default_factory=list)
    #: how many samples have a kernel TX timestamp as their send time (the rest: time.time())
    tx_kernel: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.received

    def _sorted(self) -> list[float]:
        return sorted(self.samples)

    @property
    def min(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def p99(self) -> float | None:
        """The 99th percentile, nearest-rank: the smallest sample >= 99% of the samples."""
        if not self.samples:
            return None
        s = self._sorted()
        return s[max(0, math.ceil(0.99 * len(s)) - 1)]

    def __str__(self) -> str:
        if not self.samples:
            return f"{self.sent} sent, {self.received} received, all lost"
        ms = lambda v: f"{v * 1e3:.3f}"  # noqa: E731
        return (
            f"{self.sent} sent, {self.received} received; rtt min/median/p99/max "
            f"{ms(self.min)}/{ms(self.median)}/{ms(self.p99)}/{ms(self.max)} ms"
        )


def _validate(ns, dst, count, interval, timeout, size) -> str:
    if not isinstance(ns, str) or not ns:
        raise ValueError(f"namespace must be a non-empty string, not {ns!r}")
    try:
        addr = ipaddress.IPv4Address(dst)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise ValueError(f"dst must be an IPv4 address, not {dst!r}") from None
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be an int in 1..{MAX_COUNT}, not {count!r}")
    for name, v in (("interval", interval), ("timeout", timeout)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
            raise ValueError(f"{name} must be a finite number of seconds >= 0, not {v!r}")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE:
        raise ValueError(f"size must be an int in 0..{MAX_SIZE} (ICMP payload bytes), not {size!r}")
    return str(addr)


def rtt_probe(
    ns: str,
    dst: str,
    count: int = 10,
    interval: float = 0.01,
    timeout: float = 1.0,
    size: int = 56,
) -> ProbeResult:
    """Send `count` ICMP echo requests from namespace `ns` to `dst`, `interval` s apart.

    Replies are collected while sending; after the last request the probe waits up to `timeout`
    s for stragglers (less if every reply is in). Replies are matched by ICMP id (unique per
    call) and sequence number; duplicates, other ICMP and replies of other probes are ignored.
    A request the kernel refuses to send (e.g. no route) counts as sent and lost: an unreachable
    `dst` gives a result with every request lost, not an exception.

    Raises `LabError` if `ns` does not exist, `ValueError` for bad arguments, `PermissionError`
    if not root (raw sockets need CAP_NET_RAW).
    """
    dst = _validate(ns, dst, count, interval, timeout, size)
    ident = (os.getpid() ^ next(_calls)) & 0xFFFF
    payload = bytes(i & 0xFF for i in range(size))

    with enter(ns):  # the socket belongs to `ns` for its whole life
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    with sock:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        kernel_tx = True
        try:
            sock.setsockopt(
                socket.SOL_SOCKET, SO_TIMESTAMPING,
                SOF_TIMESTAMPING_TX_SOFTWARE | SOF_TIMESTAMPING_SOFTWARE
                | SOF_TIMESTAMPING_OPT_ID | SOF_TIMESTAMPING_OPT_TSONLY,
            )
        except OSError:
            kernel_tx = False

        user_tx: dict[int, float] = {}  # seq -> time.time() before sendmsg
        kern_tx: dict[int, float] = {}  # seq -> kernel TX timestamp
        rx: dict[int, float] = {}  # seq -> kernel RX timestamp of the first reply
        bufsize = size + 8 + 60 + 64  # payload + ICMP + largest IP header + slack

        def send(seq: int) -> None:
            nonlocal kernel_tx
            pkt = _echo_request(ident, seq, payload)
            while True:
                anc = [(socket.SOL_SOCKET, SCM_TS_OPT_ID, struct.pack("I", seq))] if kernel_tx else []
                user_tx[seq] = time.time()
                try:
                    sock.sendmsg([pkt], anc, 0, (dst, 0))
                    return
                except OSError as e:
                    if e.errno == errno.EINVAL and kernel_tx:
                        # A kernel older than 6.13 has no SCM_TS_OPT_ID: without a per-packet
                        # key a TX timestamp could be paired with the wrong request, so use
                        # time.time() and stop the kernel from queueing timestamps.
                        kernel_tx = False
                        try:
                            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, 0)
                        except OSError:
                            pass
                        continue
                    # No route, neighbour failed, buffer full...: this request is lost.
                    return

        def drain_errqueue() -> None:
            while True:
                try:
                    _, anc, _, _ = sock.recvmsg(0, 512, socket.MSG_ERRQUEUE)
                except (BlockingIOError, InterruptedError):
                    return
                ts = key = None
                for level, ctype, data in anc:
                    if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPING and len(data) >= 16:
                        ts = _timespec(data)  # ts[0]: the software timestamp
                    elif level == socket.SOL_IP and ctype == IP_RECVERR and len(data) >= 16:
                        # struct sock_extended_err: errno, origin, type, code, pad, info, data
                        _, origin, _, _, _, _, ee_data = struct.unpack_from("IBBBBII", data)
                        if origin == SO_EE_ORIGIN_TIMESTAMPING:
                            key = ee_data
                if ts and key is not None and key in user_tx and key not in kern_tx:
                    kern_tx[key] = ts

        def drain_replies() -> None:
            while True:
                try:
                    data, anc, _, _ = sock.recvmsg(bufsize, 512)
                except (BlockingIOError, InterruptedError):
                    return
                now = time.time()
                if len(data) < 20:
                    continue
                ihl = (data[0] & 0x0F) * 4
                if len(data) < ihl + 8:
                    continue
                icmp_type, code, _, rid, seq = struct.unpack_from("!BBHHH", data, ihl)
                if icmp_type != ICMP_ECHOREPLY or code != 0 or rid != ident:
                    continue
                if seq not in user_tx or seq in rx:
                    continue  # not one of ours (yet), or a duplicate
                ts = None
                for level, ctype, cdata in anc:
                    if level == socket.SOL_SOCKET and ctype == SO_TIMESTAMPNS and len(cdata) >= 16:
                        ts = _timespec(cdata)
                rx[seq] = ts if ts else now

        start = time.monotonic()
        seq = 0
        deadline = math.inf
        while True:
            now = time.monotonic()
            if seq < count and now >= start + seq * interval:
                send(seq)
                seq += 1
                now = time.monotonic()
                if seq == count:
                    deadline = now + timeout
            if now >= deadline or len(rx) == count:
                break
            # Late on schedule (slow machine, interval 0): the timeout is 0 and requests go
            # out back to back, but whatever has arrived is still read between them.
            wake = deadline if seq == count else start + seq * interval
            r, _, _ = select.select([sock], [], [], max(0.0, wake - now))
            if r:
                drain_errqueue()
                drain_replies()
        drain_errqueue()  # TX timestamps of replies that came in at the very end

    samples = []
    tx_kernel = 0
    for s in sorted(rx):
        t_send = kern_tx.get(s)
        if t_send is not None and user_tx[s] <= t_send <= rx[s]:
            tx_kernel += 1
        else:
            t_send = user_tx[s]
        samples.append(rx[s] - t_send)
    return ProbeResult(sent=count, received=len(rx), samples=samples, tx_kernel=tx_kernel)
