"""The hand-written frame codec, checked against scapy's dissection and checksums."""

from __future__ import annotations

import struct

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from usertcp.datapath.frame import VNET_HDR, VNET_HDR_LEN, FrameBuilder, parse_frame
from usertcp.datapath.packet import socket_filter
from usertcp.segment import Flags, Options, Transmission, parse_options
from usertcp.sources import BytesSource, FileSource, PatternSource

SRC, DST = ("198.18.1.1", 40000), ("198.18.2.1", 5001)
MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def complete_checksum(frame: bytes, csum_start: int, csum_offset: int) -> bytes:
    """What the kernel does for CHECKSUM_PARTIAL: one's-complement sum from csum_start to the
    end (the seeded field included), folded and inverted, written at csum_offset."""
    data = frame[csum_start:] + (b"\0" if (len(frame) - csum_start) % 2 else b"")
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    out = bytearray(frame)
    struct.pack_into("!H", out, csum_start + csum_offset, ~s & 0xFFFF)
    return bytes(out)


@pytest.mark.parametrize("length, opts", [(0, b""), (100, b""), (1448, Options(ts=(1, 2)).encode()),
                                          (777, Options(ts=(0xFFFFFFFF, 5)).encode())])
def test_built_frame_has_correct_checksums_once_the_kernel_completes_them(length, opts):
    payload = bytes(range(256)) * 8
    b = FrameBuilder(*MACS, SRC, DST)
    tx = Transmission(seq=0xFFFFFF00, ack=12345, flags=Flags.ACK | Flags.PSH, window=501, options=opts,
                      source=BytesSource(payload), offset=3, length=length, gso_size=1448)
    hdr = bytes(b.headers(tx))
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(hdr)
    assert flags == 1 and gso_type == 0 and csum_offset == 16
    frame = hdr[VNET_HDR_LEN:] + payload[3 : 3 + length]
    assert hdr_len == len(hdr) - VNET_HDR_LEN
    frame = complete_checksum(frame, csum_start, csum_offset)
    pkt = Ether(frame)
    ref = Ether(frame)
    del ref[IP].chksum
    del ref[TCP].chksum
    ref = Ether(bytes(ref))
    assert pkt[IP].chksum == ref[IP].chksum
    assert pkt[TCP].chksum == ref[TCP].chksum
    assert pkt[IP].flags == "DF" and pkt[IP].ttl == 64
    assert (pkt[TCP].sport, pkt[TCP].dport, pkt[TCP].seq, pkt[TCP].ack) == (40000, 5001, 0xFFFFFF00, 12345)
    assert pkt[TCP].window == 501 and bytes(pkt[TCP].payload) == payload[3 : 3 + length]


def test_gso_super_segment_header():
    b = FrameBuilder(*MACS, SRC, DST)
    src = PatternSource(1 << 20)
    tx = Transmission(seq=1, ack=2, flags=Flags.ACK, window=1, options=Options(ts=(1, 2)).encode(),
                      source=src, offset=0, length=45 * 1448, gso_size=1448)
    hdr = bytes(b.headers(tx))
    _flags, gso_type, _hl, gso_size, _cs, _co = VNET_HDR.unpack_from(hdr)
    assert gso_type == 1 and gso_size == 1448  # VIRTIO_NET_HDR_GSO_TCPV4
    ip = Ether(hdr[VNET_HDR_LEN:])[IP]
    assert ip.len == 20 + 32 + 45 * 1448
    # The next packet's IP ID follows the 45 the kernel will use for this one.
    b.headers(Transmission(seq=1, ack=2, flags=Flags.ACK, window=1, options=b""))
    assert Ether(bytes(b.buf[VNET_HDR_LEN:]))[IP].id == 45


def test_parse_frame_matches_scapy():
    pkt = (Ether(src=MACS[1], dst=MACS[0]) / IP(src=DST[0], dst=SRC[0]) /
           TCP(sport=5001, dport=40000, seq=7, ack=8, flags="SA", window=64240,
               options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (11, 0)), ("NOP", None), ("WScale", 7)]))
    saddr, daddr, seg = parse_frame(bytes(pkt))
    assert (saddr, daddr) == (bytes([198, 18, 2, 1]), bytes([198, 18, 1, 1]))
    assert (seg.sport, seg.dport, seg.seq, seg.ack, seg.window) == (5001, 40000, 7, 8, 64240)
    assert seg.flags == Flags.SYN | Flags.ACK
    o = seg.options
    assert (o.mss, o.sack_permitted, o.ts, o.wscale) == (1460, True, (11, 0), 7)


def test_parse_frame_sack_blocks_and_payload():
    pkt = (Ether() / IP(src=DST[0], dst=SRC[0]) /
           TCP(sport=5001, dport=40000, flags="A", options=[("NOP", None), ("NOP", None), ("Timestamp", (5, 6)),
                                                            ("NOP", None), ("NOP", None), ("SAck", (100, 200, 300, 400))])
           / b"hello")
    _, _, seg = parse_frame(bytes(pkt))
    assert seg.options.ts == (5, 6) and seg.options.sack == ((100, 200), (300, 400))
    assert bytes(seg.payload) == b"hello"


def _udp():
    raw = bytearray(bytes(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / (b"\0" * 30)))
    raw[23] = 17  # protocol UDP
    return bytes(raw)


@pytest.mark.parametrize("raw", [
    bytes(Ether() / IP(src="1.2.3.4", dst="5.6.7.8", flags="MF") / TCP()),  # a fragment
    _udp(),
    bytes(Ether(type=0x86DD) / (b"\0" * 60)),  # not IPv4
    bytes(Ether() / IP(src="1.2.3.4", dst="5.6.7.8") / TCP())[:40],  # truncated TCP header
])
def test_parse_frame_rejects_what_is_not_unfragmented_ipv4_tcp(raw):
    assert parse_frame(raw) is None


def test_options_round_trip():
    for o in [Options(mss=1460, wscale=7, sack_permitted=True, ts=(1, 2)), Options(ts=(3, 4), sack=((1, 2),)),
              Options(mss=536), Options(sack_permitted=True)]:
        assert parse_options(o.encode()) == o


def test_socket_filter_shape():
    prog = socket_filter("198.18.1.1", [5001, 5002])
    assert prog[-1] == (0x06, 0, 0, 0x40000) and prog[-2] == (0x06, 0, 0, 0)
    # Every conditional jump lands inside the program.
    for i, (code, jt, jf, _k) in enumerate(prog):
        if code in (0x15, 0x45):
            assert i + 1 + jt < len(prog) and i + 1 + jf < len(prog)
    assert socket_filter("198.18.1.1", []) == [(0x06, 0, 0, 0)]


def test_sources_read_the_same_bytes_every_time(tmp_path):
    p = PatternSource(3 << 20, seed=4)
    whole = bytes(p.read(0, p.size))
    assert len(whole) == p.size
    for off, n in [(0, 10), (p.PERIOD - 5, 10), (2 * p.PERIOD + 1, 65_000), (p.size - 7, 7)]:
        assert bytes(p.read(off, n)) == whole[off : off + n]
    assert PatternSource(3 << 20, seed=5).sha256() != p.sha256()
    f = tmp_path / "f.bin"
    f.write_bytes(whole[:100_000])
    fs = FileSource(f)
    assert bytes(fs.read(500, 1000)) == whole[500:1500]
    assert fs.sha256() == BytesSource(whole[:100_000]).sha256()
    with pytest.raises(ValueError):
        fs.read(99_999, 2)
    fs.close()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert FileSource(empty).size == 0
