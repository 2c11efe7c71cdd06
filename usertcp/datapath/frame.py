"""Building and parsing Ethernet/IPv4/TCP frames — the hot path, hand-written on purpose.

scapy takes ~0.5 ms per frame (DESIGN.md); this module packs headers with precompiled `struct`s
into one reusable buffer per flow, in about a microsecond. The TCP checksum is left to the kernel:
frames go out with a virtio_net_hdr asking for NEEDS_CSUM (and GSO_TCPV4 for super-segments),
and the checksum field is seeded with the pseudo-header sum, as Linux's tcp_v4_send_check does
for CHECKSUM_PARTIAL. Only the 20-byte IPv4 header checksum is computed here.

Parsing is the mirror image for the peer's packets: a few `unpack_from` calls, with a fast path
for the common options layout (NOP NOP TS), and the general decoder otherwise.
"""

from __future__ import annotations

import socket
import struct

from ..segment import Flags, Options, Segment, Transmission, parse_options

ETH_P_IP = 0x0800
ETH_HLEN = 14
IP_HLEN = 20
TCP_HLEN = 20
IPPROTO_TCP = 6

# struct virtio_net_hdr (include/uapi/linux/virtio_net.h), little-endian on the hosts we run on.
VNET_HDR = struct.Struct("<BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1

_ETH = struct.Struct("!6s6sH")
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIHHHH")
_TS_FAST = b"\x01\x01\x08\x0a"


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(b: bytes) -> int:
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


class FrameBuilder:
    """Frames for one flow: constant Ethernet and IP fields prepared once."""

    def __init__(self, src_mac: str, dst_mac: str, src: tuple[str, int], dst: tuple[str, int], ttl: int = 64):
        self.eth = _ETH.pack(mac_bytes(dst_mac), mac_bytes(src_mac), ETH_P_IP)
        self.saddr = socket.inet_aton(src[0])
        self.daddr = socket.inet_aton(dst[0])
        self.sport, self.dport = src[1], dst[1]
        self.ttl = ttl
        self.ip_id = 0
        # Constant parts of the IPv4 header sum (version/IHL/TOS, flags DF, TTL/proto, addresses)
        # and of the TCP pseudo-header sum (addresses, protocol).
        addr_sum = _sum16(self.saddr) + _sum16(self.daddr)
        self._ip_const = 0x4500 + 0x4000 + ((ttl << 8) | IPPROTO_TCP) + addr_sum
        self._pseudo_const = addr_sum + IPPROTO_TCP
        self.buf = bytearray(VNET_HDR_LEN + ETH_HLEN + IP_HLEN + TCP_HLEN + 40)

    def headers(self, tx: Transmission) -> memoryview:
        """virtio_net_hdr + Ethernet + IPv4 + TCP (+ options) for `tx`; the payload goes
        alongside it in the same sendmsg() as a second buffer (no copy here)."""
        opt = tx.options
        tcp_len = TCP_HLEN + len(opt)
        hdr_len = ETH_HLEN + IP_HLEN + tcp_len
        total_ip = IP_HLEN + tcp_len + tx.length
        buf = self.buf
        gso = tx.length > tx.gso_size > 0
        VNET_HDR.pack_into(
            buf, 0,
            VIRTIO_NET_HDR_F_NEEDS_CSUM,
            VIRTIO_NET_HDR_GSO_TCPV4 if gso else VIRTIO_NET_HDR_GSO_NONE,
            hdr_len,
            tx.gso_size if gso else 0,
            ETH_HLEN + IP_HLEN,  # csum_start: the TCP header
            16,  # csum_offset: TCP checksum field
        )
        o = VNET_HDR_LEN
        buf[o : o + ETH_HLEN] = self.eth
        o += ETH_HLEN
        ip_id = self.ip_id
        # A GSO packet's segments take consecutive IDs from this one (inet_gso_segment).
        self.ip_id = (ip_id + (-(-tx.length // tx.gso_size) if gso else 1)) & 0xFFFF
        ecn = tx.ecn  # the TOS byte's low two bits (RFC 3168 §5); DSCP stays 0
        csum = (~_fold(self._ip_const + ecn + total_ip + ip_id)) & 0xFFFF
        _IP.pack_into(buf, o, 0x45, ecn, total_ip, ip_id, 0x4000, self.ttl, IPPROTO_TCP, csum, self.saddr, self.daddr)
        o += IP_HLEN
        seed = _fold(self._pseudo_const + tcp_len + tx.length)
        _TCP.pack_into(
            buf, o, self.sport, self.dport, tx.seq, tx.ack, ((tcp_len // 4) << 12) | int(tx.flags), tx.window, seed, 0
        )
        o += TCP_HLEN
        buf[o : o + len(opt)] = opt
        return memoryview(buf)[: o + len(opt)]


def parse_frame(buf: bytes | bytearray | memoryview, offset: int = 0, length: int | None = None):
    """Parse an Ethernet/IPv4/TCP frame starting at `offset`.

    Returns (saddr, daddr, Segment) with addresses as 4-byte strings, or None if the frame is not
    an unfragmented IPv4 TCP packet. The payload is a view into `buf`: copy it if `buf` is reused.
    """
    end = len(buf) if length is None else offset + length
    if end - offset < ETH_HLEN + IP_HLEN + TCP_HLEN:
        return None
    if buf[offset + 12] != 0x08 or buf[offset + 13] != 0x00:
        return None
    ip = offset + ETH_HLEN
    vihl = buf[ip]
    if vihl >> 4 != 4 or buf[ip + 9] != IPPROTO_TCP:
        return None
    ihl = (vihl & 0x0F) * 4
    tot_len, frag = struct.unpack_from("!H2xH", buf, ip + 2)
    if frag & 0x3FFF or ihl < IP_HLEN:
        return None
    ip_end = min(end, ip + tot_len)
    th = ip + ihl
    if ip_end - th < TCP_HLEN:
        return None
    sport, dport, seq, ack, off_flags, window = struct.unpack_from("!HHIIHH", buf, th)
    doff = (off_flags >> 12) * 4
    if doff < TCP_HLEN or th + doff > ip_end:
        return None
    olen = doff - TCP_HLEN
    if olen == 12 and bytes(buf[th + 20 : th + 24]) == _TS_FAST:
        opts = Options(ts=struct.unpack_from("!II", buf, th + 24))
    elif olen:
        opts = parse_options(memoryview(buf)[th + 20 : th + doff])
    else:
        opts = Options()
    seg = Segment(
        sport=sport,
        dport=dport,
        seq=seq,
        ack=ack,
        flags=Flags(off_flags & 0xFF),
        window=window,
        options=opts,
        payload=memoryview(buf)[th + doff : ip_end] if ip_end > th + doff else b"",
        ecn=buf[ip + 1] & 3,
    )
    saddr = bytes(buf[ip + 12 : ip + 16])
    daddr = bytes(buf[ip + 16 : ip + 20])
    return saddr, daddr, seg
