"""TCP segments as the engine sees them: parsed headers in, header fields plus data references out.

`Segment` is what arrives (from any datapath or the simulator): header fields, decoded options,
and a payload view. `Transmission` is what the engine asks a datapath to send: header fields,
pre-encoded options, and a reference (source, offset, length) to the payload, which the datapath
reads from the source only when it builds the frame. A transmission may be a GSO super-segment:
`gso_size` is the payload per wire segment; the kernel (or the simulated link) cuts it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntFlag
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .sources import Source


class Flags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


# The same bits as plain ints, for per-segment paths: `IntFlag.__and__` costs about a microsecond
# a call, an int's `&` a few tens of nanoseconds.
F_FIN, F_SYN, F_RST, F_ACK, F_ECE, F_CWR = (int(f) for f in (Flags.FIN, Flags.SYN, Flags.RST, Flags.ACK,
                                                            Flags.ECE, Flags.CWR))


# Option kinds (IANA "TCP Option Kind Numbers"; RFC 9293 §3.2, RFC 7323, RFC 2018).
OPT_EOL, OPT_NOP, OPT_MSS, OPT_WSCALE, OPT_SACK_PERMITTED, OPT_SACK, OPT_TIMESTAMP = 0, 1, 2, 3, 4, 5, 8


@dataclass(slots=True)
class Options:
    """Decoded TCP options. `ts` is (TSval, TSecr); `sack` is a tuple of (left, right) edges."""

    mss: int | None = None
    wscale: int | None = None
    sack_permitted: bool = False
    ts: tuple[int, int] | None = None
    sack: tuple[tuple[int, int], ...] = ()

    def encode(self) -> bytes:
        """Encode in the order Linux uses, padded with NOPs to a multiple of 4 bytes."""
        out = bytearray()
        if self.mss is not None:
            out += struct.pack("!BBH", OPT_MSS, 4, self.mss)
        if self.sack_permitted and self.ts is not None:
            out += struct.pack("!BBBBII", OPT_SACK_PERMITTED, 2, OPT_TIMESTAMP, 10, *self.ts)
        else:
            if self.ts is not None:
                out += struct.pack("!BBBBII", OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10, *self.ts)
            if self.sack_permitted:
                out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2)
        if self.wscale is not None:
            out += struct.pack("!BBBB", OPT_NOP, OPT_WSCALE, 3, self.wscale)
        if self.sack:
            out += struct.pack("!BBBB", OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(self.sack))
            for left, right in self.sack:
                out += struct.pack("!II", left, right)
        if len(out) > 40:
            raise ValueError(f"TCP options too long ({len(out)} bytes > 40)")
        return bytes(out)


def parse_options(buf: bytes | memoryview) -> Options:
    """Decode an options area; unknown kinds are skipped, a malformed length ends parsing
    (as Linux's tcp_parse_options does)."""
    opts = Options()
    i, n = 0, len(buf)
    while i < n:
        kind = buf[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            break
        size = buf[i + 1]
        if size < 2 or i + size > n:
            break
        if kind == OPT_MSS and size == 4:
            opts.mss = (buf[i + 2] << 8) | buf[i + 3]
        elif kind == OPT_WSCALE and size == 3:
            opts.wscale = min(buf[i + 2], 14)  # RFC 7323 §2.3: larger values are treated as 14
        elif kind == OPT_SACK_PERMITTED and size == 2:
            opts.sack_permitted = True
        elif kind == OPT_TIMESTAMP and size == 10:
            opts.ts = struct.unpack_from("!II", buf, i + 2)
        elif kind == OPT_SACK and size >= 10 and (size - 2) % 8 == 0:
            opts.sack = tuple(
                struct.unpack_from("!II", buf, i + 2 + 8 * k) for k in range((size - 2) // 8)
            )
        i += size
    return opts


@dataclass(slots=True)
class Segment:
    """A received TCP segment (the IP layer already stripped)."""

    sport: int
    dport: int
    seq: int
    ack: int
    flags: Flags
    window: int  # raw 16-bit field; scaling is the connection's business
    options: Options = field(default_factory=Options)
    payload: bytes | memoryview = b""
    ecn: int = 0  # the IP header's ECN field (RFC 3168 §5): 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE

    @property
    def seg_len(self) -> int:
        """Sequence space consumed (RFC 9293 §3.4: SYN and FIN count one each)."""
        flags = int(self.flags)
        return len(self.payload) + (1 if flags & F_SYN else 0) + (1 if flags & F_FIN else 0)


@dataclass(slots=True)
class Transmission:
    """A segment the engine wants sent. Payload is by reference: `source.read(offset, length)`.

    `gso_size` is the payload of each wire segment when `length` exceeds it (a GSO super-segment);
    every wire segment repeats the header and options, and only the last carries FIN/PSH.
    """

    seq: int
    ack: int
    flags: Flags
    window: int
    options: bytes
    source: "Source | None" = None
    offset: int = 0
    length: int = 0
    gso_size: int = 0
    retransmit: bool = False
    ecn: int = 0  # ECN field for the IP header: ECT(0) = 2 on new data of an ECN connection

    @property
    def seg_len(self) -> int:
        return self.length + bool(self.flags & Flags.SYN) + bool(self.flags & Flags.FIN)

    def payload(self) -> bytes | memoryview:
        return self.source.read(self.offset, self.length) if self.length else b""
