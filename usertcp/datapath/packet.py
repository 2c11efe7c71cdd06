"""AF_PACKET datapath: one packet socket on one interface, both directions.

Send: frames carry a virtio_net_hdr (PACKET_VNET_HDR), so the kernel finishes the TCP checksum
and cuts GSO super-segments of up to 64 KB — one sendmsg() per 64 KB, header and payload as two
buffers (the payload is a view of the source: no copy in Python).

Receive: the socket is bound with ETH_P_ALL, which is what lets it see the flow's incoming
packets even though the gate's TC ingress program then drops them (packet taps run before TC
ingress; an ETH_P_IP-bound socket would not see them — DESIGN.md). A classic BPF socket filter
keeps only incoming IPv4 TCP packets for our address and ports, so the rest of the interface's
traffic costs nothing in Python.

This module knows nothing of TCP rules: it moves frames.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import struct

from .frame import VNET_HDR_LEN, FrameBuilder, parse_frame

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
SO_COOKIE = 57
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
PACKET_OUTGOING = 4

# Classic BPF opcodes (include/uapi/linux/filter.h, bpf_common.h).
_LD_W_ABS, _LD_H_ABS, _LD_B_ABS = 0x20, 0x28, 0x30
_LDX_B_MSH, _LD_H_IND = 0xB1, 0x48
_JEQ_K, _JSET_K, _RET_K = 0x15, 0x45, 0x06
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
_MAX_PORTS_IN_FILTER = 200


class DatapathError(RuntimeError):
    pass


def socket_filter(local_ip: str, ports: list[int]) -> list[tuple[int, int, int, int]]:
    """Classic BPF: accept incoming, unfragmented IPv4 TCP to `local_ip` and one of `ports`.

    With no ports, nothing is accepted; with very many, any port (the loop demultiplexes).
    """
    ip = struct.unpack("!I", socket.inet_aton(local_ip))[0]
    head = [
        (_LD_W_ABS, 0, 0, _SKF_AD_PKTTYPE),
        (_JEQ_K, 0, 0, PACKET_OUTGOING),  # -> drop (patched below)
        (_LD_H_ABS, 0, 0, 12),
        (_JEQ_K, 0, 0, 0x0800),  # else drop
        (_LD_B_ABS, 0, 0, 23),
        (_JEQ_K, 0, 0, 6),  # else drop
        (_LD_W_ABS, 0, 0, 30),
        (_JEQ_K, 0, 0, ip),  # else drop
        (_LD_H_ABS, 0, 0, 20),
        (_JSET_K, 0, 0, 0x3FFF),  # MF or fragment offset -> drop
        (_LDX_B_MSH, 0, 0, 14),
        (_LD_H_IND, 0, 0, 16),  # TCP destination port
    ]
    if not ports:
        return [(_RET_K, 0, 0, 0)]
    any_port = len(ports) > _MAX_PORTS_IN_FILTER
    checks = [] if any_port else [(_JEQ_K, 0, 0, p) for p in ports]
    prog = head + checks + [(_RET_K, 0, 0, 0), (_RET_K, 0, 0, 0x40000)]
    drop = len(prog) - 2
    accept = len(prog) - 1
    out = []
    for i, (code, jt, jf, k) in enumerate(prog):
        if i == 1:
            jt, jf = drop - i - 1, 0
        elif i in (3, 5, 7):
            jt, jf = 0, drop - i - 1
        elif i == 9:
            jt, jf = drop - i - 1, 0
            if any_port:
                jf = accept - i - 1
        elif i >= len(head) and code == _JEQ_K:
            jt, jf = accept - i - 1, 0
        out.append((code, jt, jf, k))
    return out


def _attach_filter(sock: socket.socket, prog: list[tuple[int, int, int, int]]) -> None:
    raw = b"".join(struct.pack("HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


class PacketDatapath:
    """One AF_PACKET socket on `ifname`, sending and receiving for the flows of `local_ip`."""

    def __init__(self, ifname: str, local_ip: str, *, rcvbuf: int = 32 << 20, sndbuf: int = 8 << 20):
        self.ifname = ifname
        self.local_ip = local_ip
        self.ports: list[int] = []
        try:
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError as exc:
            raise DatapathError("packet sockets need root (CAP_NET_RAW): run as root") from exc
        # Attach a reject-all filter before binding so nothing queues up unfiltered.
        _attach_filter(self.sock, socket_filter(local_ip, []))
        self.sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, sndbuf)
        try:
            self.sock.bind((ifname, ETH_P_ALL))
        except OSError as exc:
            self.sock.close()
            raise DatapathError(f"cannot bind a packet socket to {ifname!r}: {exc.strerror}") from exc
        self.sock.setblocking(False)
        self.cookie = struct.unpack("=Q", self.sock.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]
        self.sent = 0
        self.send_errors = 0  # sendmsg refused: ENOBUFS means the gate or a qdisc dropped it
        self.received = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def set_ports(self, ports: list[int]) -> None:
        """The local ports whose incoming packets we want (one per owned flow)."""
        self.ports = sorted(set(ports))
        _attach_filter(self.sock, socket_filter(self.local_ip, self.ports))

    def send(self, builder: FrameBuilder, tx) -> bool:
        """Hand one transmission to the kernel. False if the socket buffer is full (try again
        later); a drop by the gate or a qdisc (ENOBUFS) counts as sent and lost, as on a wire."""
        hdr = builder.headers(tx)
        try:
            if tx.length:
                self.sock.sendmsg([hdr, tx.payload()])
            else:
                self.sock.send(hdr)
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.send_errors += 1
                return True
            raise
        self.sent += 1
        return True

    def receive(self, limit: int = 512) -> list:
        """Up to `limit` waiting packets as (saddr, daddr, Segment); never blocks."""
        out = []
        recv = self.sock.recv
        for _ in range(limit):
            try:
                frame = recv(262144)
            except BlockingIOError:
                break
            parsed = parse_frame(frame, VNET_HDR_LEN)
            if parsed is not None:
                out.append(parsed)
        self.received += len(out)
        return out

    def close(self) -> None:
        self.sock.close()
