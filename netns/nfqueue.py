"""The userspace end of the kernel's NFQUEUE target (nfnetlink_queue), hand-written.

This is the delay line's hot path, so it is written against the wire format directly with
precompiled `struct`s instead of a general netlink library: pyroute2 has no nfnetlink_queue
module, and a generic attribute decoder would cost more per packet than the whole delay element
may spend (DESIGN.md: ~20% of a core at 1 Gbit/s is the budget). Only what the delay line needs
is here: bind a queue with its parameters, decode packet notifications, and send batch verdicts.

Message layout (include/uapi/linux/netlink.h, netfilter/nfnetlink.h, nfnetlink_queue.h):
    struct nlmsghdr  { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }     host order
    struct nfgenmsg  { u8 family; u8 version; be16 res_id; }                 res_id = queue number
    then attributes  { u16 len; u16 type; payload padded to 4 bytes }         (NLA_ALIGN)
The message type is (subsystem << 8) | message: NFNL_SUBSYS_QUEUE is 3.

Verdicts: a batch verdict (NFQNL_MSG_VERDICT_BATCH) applies one verdict to every packet of the
queue whose id is at most the given id (net/netfilter/nfnetlink_queue.c, nfqnl_recv_verdict_batch).
Ids grow by one per packet per queue, so for a constant delay (FIFO) one message releases every
packet that is due.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4

# Packet attributes (enum nfqnl_attr_type)
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_TIMESTAMP = 4
NFQA_PAYLOAD = 10
NFQA_CAP_LEN = 13
NFQA_SKB_INFO = 14
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED and NLA_F_NET_BYTEORDER

# Config attributes (enum nfqnl_attr_config) and values
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
#: Queue GSO packets whole instead of segmenting them first (nfqnl_enqueue_packet): the delay
#: line then handles one message per 64 KB bundle, which is what lets it keep up at 1 Gbit/s+.
NFQA_CFG_F_GSO = 4

NF_DROP = 0
NF_ACCEPT = 1
NF_QUEUE = 3
#: A queue verdict carries the target queue number in its upper 16 bits (NF_VERDICT_QBITS,
#: include/uapi/linux/netfilter.h); nf_reinject then queues the packet again at the same hook.
NF_VERDICT_QBITS = 16


def requeue(target: int) -> int:
    """The verdict that moves a packet to queue `target` (it is then that queue's packet)."""
    if not 0 <= target <= 0xFFFF:
        raise ValueError(f"queue number {target} is not a u16")
    return NF_QUEUE | (target << NF_VERDICT_QBITS)

#: Bytes of each packet copied to us: the IPv4 and TCP headers without options, enough to tell
#: flows apart in a trace. The kernel adds NFQA_CAP_LEN (the full length) when it truncates.
COPY_RANGE = 40

_NLMSGHDR = struct.Struct("=IHHII")
_NFGENMSG = struct.Struct("!BBH")
_NLATTR = struct.Struct("=HH")
_U32BE = struct.Struct("!I")
_PACKET_ID = struct.Struct("!I")  # first field of struct nfqnl_msg_packet_hdr
_TIMESTAMP = struct.Struct("!QQ")  # struct nfqnl_msg_packet_timestamp {sec; usec}
_HDR_LEN = _NLMSGHDR.size + _NFGENMSG.size


class NfqueueError(OSError):
    """The kernel refused a queue operation (errno set), e.g. the queue is bound elsewhere."""


@dataclass(slots=True)
class Packet:
    """One queued packet, as the delay line needs it (no payload is kept)."""

    queue: int
    packet_id: int
    length: int  # skb length: a GSO bundle counts whole
    tstamp: float | None  # kernel receive time (CLOCK_REALTIME, s), if the skb had one
    headers: bytes  # first COPY_RANGE bytes of the IP packet


def _attr(atype: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, atype) + payload + b"\0" * (-length % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int, seq: int = 0) -> bytes:
    mtype = (NFNL_SUBSYS_QUEUE << 8) | msg
    body = _NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body


def _verdict(msg: int, queue: int, value: int, packet_id: int) -> bytes:
    return _message(msg, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", value, packet_id)), NLM_F_REQUEST)


def batch_verdict(queue: int, last_id: int, verdict: int = NF_ACCEPT) -> bytes:
    """The message that gives `verdict` to every packet of `queue` with id <= last_id."""
    return _verdict(NFQNL_MSG_VERDICT_BATCH, queue, verdict, last_id)


def verdict(queue: int, packet_id: int, value: int) -> bytes:
    """The message that gives verdict `value` to the one packet `packet_id` of `queue`."""
    return _verdict(NFQNL_MSG_VERDICT, queue, value, packet_id)


def parse(buf: memoryview, n: int, out: list[Packet]) -> int:
    """Decode the packet notifications in buf[:n] into `out`; return how many other messages
    (errors, acks) were skipped. One recv usually holds one message: the kernel unicasts each
    packet as its own skb (nfqnl_enqueue_packet)."""
    skipped = 0
    off = 0
    unpack_hdr = _NLMSGHDR.unpack_from
    unpack_attr = _NLATTR.unpack_from
    while off + _HDR_LEN <= n:
        mlen, mtype, _flags, _seq, _pid = unpack_hdr(buf, off)
        if mlen < _NLMSGHDR.size or off + mlen > n:
            break  # malformed or cut short: never decode past what was received
        end = off + mlen
        if mtype != (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            skipped += 1
            off = end + (-mlen % 4)
            continue
        queue = _NFGENMSG.unpack_from(buf, off + _NLMSGHDR.size)[2]
        packet_id = None
        tstamp = None
        cap_len = None
        headers = b""
        a = off + _HDR_LEN
        while a + 4 <= end:
            alen, atype = unpack_attr(buf, a)
            if alen < 4 or a + alen > end:
                break
            atype &= NLA_TYPE_MASK
            if atype == NFQA_PACKET_HDR:
                packet_id = _PACKET_ID.unpack_from(buf, a + 4)[0]
            elif atype == NFQA_TIMESTAMP:
                sec, usec = _TIMESTAMP.unpack_from(buf, a + 4)
                tstamp = sec + usec * 1e-6
            elif atype == NFQA_CAP_LEN:
                cap_len = _U32BE.unpack_from(buf, a + 4)[0]
            elif atype == NFQA_PAYLOAD:
                headers = bytes(buf[a + 4 : a + alen])
            a += (alen + 3) & ~3
        if packet_id is not None:
            out.append(Packet(queue, packet_id, cap_len or len(headers), tstamp, headers))
        off = end + (-mlen % 4)
    return skipped


class QueueSocket:
    """One nfnetlink socket bound to one or more queue numbers (in the caller's namespace)."""

    def __init__(self, rcvbuf: int = 64 << 20) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        # A deep receive buffer: a packet whose notification does not fit is dropped by the
        # kernel (counted as "user dropped" in /proc/net/netfilter/nfnetlink_queue). FORCE
        # ignores net.core.rmem_max (we are root).
        SO_RCVBUFFORCE = 33
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        self.sock.bind((0, 0))
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _request(self, queue: int, attrs: bytes) -> None:
        """Send one config message and wait for its acknowledgement (NLMSG_ERROR, errno 0)."""
        self._seq += 1
        self.sock.send(_message(NFQNL_MSG_CONFIG, queue, attrs, NLM_F_REQUEST | NLM_F_ACK, self._seq))
        while True:
            data = self.sock.recv(65536)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                mlen, mtype, _f, seq, _p = _NLMSGHDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR and seq == self._seq:
                    err = -struct.unpack_from("=i", data, off + _NLMSGHDR.size)[0]
                    if err:
                        raise NfqueueError(err, f"nfqueue {queue}: {os.strerror(err)}")
                    return
                off += max(mlen, _NLMSGHDR.size) + (-mlen % 4)

    def bind(self, queue: int, maxlen: int, gso: bool = True) -> None:
        """Bind `queue`: copy COPY_RANGE bytes of each packet, hold up to `maxlen` packets,
        and keep GSO bundles whole (`gso`), or have the kernel segment them before queueing so
        that every MTU-sized packet is its own entry (skb_gso_segment in nfqnl_enqueue_packet).
        The kernel answers EPERM when another socket holds the queue
        (nfqnl_recv_config: peer portid mismatch) and EBUSY when this socket bound it already."""
        try:
            self._request(queue, _attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        except NfqueueError as e:
            # EPERM is also what a missing CAP_NET_ADMIN gives: a queue listed in /proc is held.
            if e.errno == errno.EBUSY or (e.errno == errno.EPERM and queue in kernel_counters()):
                raise NfqueueError(
                    e.errno, f"nfqueue {queue} is already bound by another process "
                    "(a delay line of an earlier run still alive?)"
                ) from None
            raise
        self._request(queue, _attr(NFQA_CFG_PARAMS, struct.pack("!IB", COPY_RANGE, NFQNL_COPY_PACKET)))
        self._request(queue, _attr(NFQA_CFG_QUEUE_MAXLEN, _U32BE.pack(maxlen)))
        self._request(
            queue,
            _attr(NFQA_CFG_FLAGS, _U32BE.pack(NFQA_CFG_F_GSO if gso else 0))
            + _attr(NFQA_CFG_MASK, _U32BE.pack(NFQA_CFG_F_GSO)),
        )


def kernel_counters(proc_file: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, dict[str, int]]:
    """The kernel's own per-queue counters, by queue number, in the reader's namespace.

    Columns (nfnetlink_queue.c, seq_show): queue number, peer portid, packets waiting for a
    verdict, copy mode, copy range, dropped because the queue was full, dropped because the
    notification could not be delivered to us ("user dropped"), last packet id, 1.
    """
    out: dict[int, dict[str, int]] = {}
    try:
        with open(proc_file) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return out
    for line in lines:
        cols = line.split()
        if len(cols) < 8:
            continue
        num, portid, total, _mode, _range, dropped, user_dropped, id_seq = map(int, cols[:8])
        out[num] = {
            "portid": portid, "waiting": total, "queue_dropped": dropped,
            "user_dropped": user_dropped, "id_sequence": id_seq,
        }
    return out
