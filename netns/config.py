"""What a lab looks like: bottleneck, delays, loss, reordering, senders, MTU -- as plain data.

One `LabConfig` describes the network a lab emulates; the lab builder turns it into namespaces, a
TBF, a delay line (which also reorders) and loss, and every way a user can say what they want ends
up here: `usertcp lab up` flags, a TOML file (`-c path.toml`), and named presets
(netns/presets.toml). Keeping it a pure module (no root, no netlink, no I/O but reading TOML) means
configurations can be parsed, checked and printed anywhere -- in tests, in `--help`, before asking
for root -- and that a mistake is reported as one clear line before anything is built. That is also
why this module must not import netns.lab (pyroute2 costs ~0.2 s to import): the few constants and
the name rule it shares with lab.py are repeated here.

Units are explicit in text: "50mbit", "20ms", "0.1%", "1bdp". A bare number is refused where
it would be ambiguous (is "20" ms or s? tc-netem reads it as microseconds; is a loss of "1" one
percent or certain loss?).
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal
from importlib import resources
from os import PathLike
from typing import Any, Literal

#: Bytes of Ethernet header on every frame. TBF charges each packet its qdisc_pkt_len, which on
#: a veth includes this header, so a queue or bucket of N packets needs N * (mtu + 14) bytes.
#: (Same value as netns.lab.ETH_HLEN, repeated to keep pyroute2 out of this module.)
ETH_HLEN = 14

#: Rates the lab accepts. Below 1 Mbit/s a single 1500-byte frame takes 12 ms to send and the
#: lab's default queue and bucket rules stop making sense; above 10 Gbit/s a veth pair on one
#: host cannot forward that fast, so the TBF would no longer be the bottleneck.
MIN_RATE_BPS = 10**6
MAX_RATE_BPS = 10 * 10**9

#: The longest one-way delay. A geostationary satellite hop is ~0.27 s one way; the delay line
#: holds every packet in flight in memory, and 0.5 s at 10 Gbit/s is already 625 MB.
MAX_DELAY_S = 0.5

#: The largest fraction of packets the lab may hold back to reorder them. Above one half most
#: packets are held and the few that are not become the "reordered" ones: the path then mostly
#: has extra delay (and a smaller share of reordering), which is not what a reorder setting asks.
MAX_REORDER = 0.5

#: How long a reordered packet may be held on top of its direction's delay. A hold of a few
#: microseconds is likely lost in the delay line's release error (`lab status` shows it in us),
#: so the held packet would seldom be overtaken; the upper bound is MAX_DELAY_S's, for the same
#: memory reason.
MIN_REORDER_DELAY_S = 0.00001
MAX_REORDER_DELAY_S = 0.5

#: At most this many sender namespaces: enough for fairness experiments with many flows,
#: few enough that building the lab stays quick.
MAX_SENDERS = 64

#: TBF's limit and bucket are u32 byte counts (struct tc_tbf_qopt).
MAX_TBF_BYTES = 2**32 - 1

#: Delays are kept to the nanosecond: finer than any timer the delay line has, and a fixed
#: resolution makes `fmt_time` exact, so a config written out and read back compares equal.
_TIME_QUANTUM = Decimal("1e-9")

_NAME_RE = re.compile(r"[A-Za-z0-9]{1,8}")
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SI = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_RATE_RE = re.compile(_NUMBER + r"\s*([kmgt]?)(bit|bits|bit/s)?", re.IGNORECASE)
_SIZE = {"": 1, "k": 10**3, "m": 10**6, "ki": 2**10, "mi": 2**20}
_SIZE_RE = re.compile(_NUMBER + r"\s*(ki|mi|k|m)?(b|bytes)?", re.IGNORECASE)
_TIME = {"s": Decimal(1), "ms": Decimal("1e-3"), "us": Decimal("1e-6"), "µs": Decimal("1e-6")}
_TIME_RE = re.compile(_NUMBER + r"\s*(s|ms|us|µs)?", re.IGNORECASE)
_PERCENT_RE = re.compile(_NUMBER + r"\s*(%)?")
_BDP_RE = re.compile(_NUMBER + r"\s*bdp", re.IGNORECASE)
_PACKETS_RE = re.compile(_NUMBER + r"\s*(?:p|pkt|pkts|packet|packets)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Units


def validate_name(name: str) -> str:
    """A lab name: 1-8 ASCII letters or digits.

    Interface names are limited to 15 bytes (IFNAMSIZ 16 with the NUL); the longest one a lab
    builds is "{name}-s63", so 8 characters leave room, and a plain alphabet keeps names safe
    in paths and shell commands.
    """
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid lab name {name!r}: use 1 to 8 ASCII letters or digits (e.g. 'ut', 'lab2'), "
            f"so that interface names like '{{name}}-s0' fit in Linux's 15-character limit"
        )
    return name


def _dec(x: float) -> Decimal:
    """The decimal a float was written as (its shortest repr), not its binary expansion: 0.02 is
    Decimal("0.02"), so products like rate x RTT come out as a person would compute them."""
    return Decimal(repr(float(x)))


def _plain(d: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 20, 0.5, 250000."""
    return format(d.normalize(), "f")


def parse_rate(text: str) -> int:
    """A rate in bits/s from "100mbit", "1gbit", "50M", "1.5G", "800kbit" or plain "2000000".

    Prefixes are decimal (k = 1000), as for link rates. "bps" and "B" are refused because
    tc(8) reads "bps" as *bytes* per second while most people mean bits.
    """
    s = text.strip()
    m = _RATE_RE.fullmatch(s)
    if m is None:
        if re.search(r"bps|B", s):
            hint = "'bps'/'B' are ambiguous (tc reads bps as bytes/s); write 'mbit' or 'M'"
        else:
            hint = (
                "use a number with an optional k/m/g/t prefix and 'bit', "
                "e.g. 100mbit, 1gbit, 50M"
            )
        raise ValueError(f"invalid rate {text!r}: {hint}")
    bps = Decimal(m.group(1)) * _SI[m.group(2).lower()]
    if bps < 1 or bps != int(bps):
        raise ValueError(f"invalid rate {text!r}: must be a whole number of bits/s, at least 1")
    return int(bps)


def parse_bytes(text: str) -> int:
    """A size in bytes from "62500", "64k" (64 000), "1.25m", "64ki" (65 536) or "64kib"."""
    m = _SIZE_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"invalid size {text!r}: use bytes with an optional k/m (x1000) or ki/mi (x1024) "
            f"suffix, e.g. 62500, 64k, 64ki"
        )
    n = Decimal(m.group(1)) * _SIZE[(m.group(2) or "").lower()]
    if n < 1 or n != int(n):
        raise ValueError(f"invalid size {text!r}: must be a whole number of bytes, at least 1")
    return int(n)


def fmt_rate(bps: float) -> str:
    """A rate for people: "50 Mbit/s", "1.5 Gbit/s", "800 kbit/s"."""
    for unit, scale in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g} {unit}"
    return f"{bps:g} bit/s"


def _rate_text(bps: int) -> str:
    """A rate as parse_rate reads it back exactly: "50mbit", "1.5gbit", "999bit"."""
    for prefix, scale in (("g", 10**9), ("m", 10**6), ("k", 10**3)):
        if bps >= scale:
            return f"{_plain(Decimal(bps) / scale)}{prefix}bit"
    return f"{bps}bit"


def parse_time(text: str) -> float:
    """A duration in seconds from "20ms", "0.5s", "150us", "1.5 ms" or a bare "0".

    The unit is required (except for zero) because a bare number means different things to
    different tools: seconds to sleep(1), microseconds to tc-netem.
    """
    m = _TIME_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"invalid time {text!r}: use a non-negative number with a unit ms, s or us, "
            f"e.g. 20ms, 0.5s, 150us"
        )
    value = Decimal(m.group(1))
    if m.group(2) is None:
        if value != 0:
            raise ValueError(
                f"invalid time {text!r}: add a unit (ms, s or us), e.g. {_plain(value)}ms"
            )
        return 0.0
    return float(value * _TIME[m.group(2).lower()])


def fmt_time(seconds: float) -> str:
    """A duration as parse_time reads it, to the nanosecond: "20ms", "150us", "1.5s", "0"."""
    d = _dec(seconds).quantize(_TIME_QUANTUM, rounding=decimal.ROUND_HALF_EVEN)
    if d == 0:
        return "0"
    for unit, scale in (("s", Decimal(1)), ("ms", Decimal("1e-3"))):
        if abs(d) >= scale:
            return f"{_plain(d / scale)}{unit}"
    return f"{_plain(d / Decimal('1e-6'))}us"


def parse_percent(text: str) -> float:
    """A fraction from a percentage: "0.1%" -> 0.001, "1%" -> 0.01, "0%" (or "0") -> 0.0.

    The % sign is required: a bare "1" could be one percent or a probability of 1. Loss of
    100% or more would cut the path, so the range is 0% <= p < 100%.
    """
    m = _PERCENT_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(
            f"invalid percentage {text!r}: use a number from 0 to below 100 with a % sign, "
            f"e.g. 0.1%, 1%"
        )
    value = Decimal(m.group(1))
    if m.group(2) is None and value != 0:
        raise ValueError(
            f"invalid percentage {text!r}: a bare number is ambiguous (fraction or percent?); "
            f"write it with a % sign, e.g. {_plain(value)}%"
        )
    if value >= 100:
        raise ValueError(f"invalid percentage {text!r}: must be below 100%, e.g. 0.1%, 1%")
    return float(value / 100)


def fmt_percent(fraction: float) -> str:
    """A fraction as a percentage that parse_percent reads back exactly: 0.001 -> "0.1%"."""
    return f"{_plain(_dec(fraction) * 100)}%"


# --------------------------------------------------------------------------------------------
# Queue


QueueUnit = Literal["bdp", "packets", "bytes"]


@dataclasses.dataclass(frozen=True)
class QueueSpec:
    """The bottleneck queue limit as the user thinks of it: in BDPs, packets or bytes.

    Kept unresolved because its size in bytes depends on the rate, RTT and MTU: a preset's
    "1bdp" stays one BDP when the rate or delay is overridden.
    """

    amount: float
    unit: QueueUnit

    def __post_init__(self) -> None:
        if self.unit not in ("bdp", "packets", "bytes"):
            raise ValueError(f"queue unit must be 'bdp', 'packets' or 'bytes', got {self.unit!r}")
        if not _is_number(self.amount) or not self.amount > 0:
            raise ValueError(f"queue amount must be a number above 0, got {self.amount!r}")
        if self.unit != "bdp" and self.amount != int(self.amount):
            raise ValueError(
                f"queue of {self.amount!r} {self.unit}: must be a whole number of {self.unit}"
            )
        object.__setattr__(self, "amount", float(self.amount))

    def __str__(self) -> str:
        if self.unit == "bdp":
            return f"{_plain(_dec(self.amount))}bdp"
        if self.unit == "packets":
            return f"{int(self.amount)}p"
        return f"{int(self.amount)}B"

    def to_bytes(self, rate_bps: int, rtt_s: float, mtu: int) -> int:
        """The TBF limit in bytes for this queue on a link of `rate_bps` and base RTT `rtt_s`.

        A packet counts as mtu + 14 bytes: TBF counts qdisc_pkt_len, which includes the 14-byte
        Ethernet header on a veth. A BDP is rate/8 x RTT, rounded down to whole bytes.
        """
        frame = mtu + ETH_HLEN
        if self.unit == "bdp":
            if rtt_s == 0:
                raise ValueError(
                    f"queue {self} needs a delay: a BDP is rate x RTT and the RTT is 0; "
                    f"give a delay (e.g. delay = \"20ms\") or the queue in packets or bytes "
                    f"(e.g. 100p, 64k)"
                )
            size = int(_dec(self.amount) * Decimal(rate_bps) * _dec(rtt_s) / 8)
        elif self.unit == "packets":
            size = int(self.amount) * frame
        else:
            size = int(self.amount)
        if size < frame:
            raise ValueError(
                f"queue {self} = {size} B is smaller than one frame ({frame} B = mtu {mtu} + "
                f"{ETH_HLEN} B Ethernet header): the queue could not hold a full-size packet"
            )
        if size > MAX_TBF_BYTES:
            raise ValueError(
                f"queue {self} = {size} B is above TBF's 32-bit limit ({MAX_TBF_BYTES} B)"
            )
        return size


def parse_queue(text: str) -> QueueSpec:
    """A queue from "1bdp", "0.5bdp", "2.5 BDP"; "100p", "100pkt(s)", "100packets"; or bytes as
    parse_bytes reads them ("62500", "64k", "64ki", "1.5m", "256kb")."""
    s = text.strip()
    if m := _BDP_RE.fullmatch(s):
        return QueueSpec(float(Decimal(m.group(1))), "bdp")
    if m := _PACKETS_RE.fullmatch(s):
        n = Decimal(m.group(1))
        if n < 1 or n != int(n):
            raise ValueError(f"invalid queue {text!r}: a packet count must be a whole number >= 1")
        return QueueSpec(float(n), "packets")
    try:
        return QueueSpec(float(parse_bytes(s)), "bytes")
    except ValueError:
        raise ValueError(
            f"invalid queue {text!r}: use a multiple of the BDP (1bdp, 0.5bdp), a packet "
            f"count (100p) or bytes (62500, 64k, 64ki)"
        ) from None


# --------------------------------------------------------------------------------------------
# The configuration


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_int(what: str, value: object, lo: int, hi: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{what} must be an int from {lo} to {hi}{hint}, got {value!r}")


def _delay(what: str, value: Any) -> float:
    """A validated one-way delay in seconds, rounded to the nanosecond (see _TIME_QUANTUM)."""
    if not _is_number(value) or not 0 <= value <= MAX_DELAY_S:
        shown = fmt_time(value) if _is_number(value) else repr(value)
        raise ValueError(
            f"{what} must be from 0 to {fmt_time(MAX_DELAY_S)} (seconds as a float), got {shown}"
        )
    return round(float(value), 9)


def _loss(what: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value < 1:
        raise ValueError(
            f"{what} must be a fraction from 0 to below 1 (0.001 is 0.1%), got {value!r}"
        )
    return float(value)


def _reorder(what: str, value: Any) -> float:
    if not _is_number(value) or not 0 <= value <= MAX_REORDER:
        raise ValueError(
            f"{what} must be a fraction from 0 to {MAX_REORDER:g} (0.01 is 1%; above one half, "
            f"holding packets back is mostly extra delay, not reordering), got {value!r}"
        )
    return float(value)


def _reorder_delay(what: str, value: Any) -> float:
    """A validated extra hold in seconds, rounded to the nanosecond like a delay. Zero is
    refused: a held packet released at once would not be overtaken (use reorder = 0 instead)."""
    if not _is_number(value) or not MIN_REORDER_DELAY_S <= value <= MAX_REORDER_DELAY_S:
        shown = fmt_time(value) if _is_number(value) else repr(value)
        raise ValueError(
            f"{what} must be from {fmt_time(MIN_REORDER_DELAY_S)} to "
            f"{fmt_time(MAX_REORDER_DELAY_S)} (seconds as a float), got {shown}"
        )
    return round(float(value), 9)


@dataclasses.dataclass(frozen=True)
class SenderSpec:
    """One sender namespace's path to the receiver: its own one-way delays, so that flows with
    different RTTs can share the bottleneck (RTT-fairness experiments)."""

    delay: float  # one-way delay sender->receiver, seconds
    delay_rev: float  # one-way delay receiver->sender, seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "delay", _delay("sender delay", self.delay))
        object.__setattr__(self, "delay_rev", _delay("sender delay_rev", self.delay_rev))

    @property
    def rtt(self) -> float:
        """Base RTT (no queueing) in seconds."""
        return round(self.delay + self.delay_rev, 9)


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """The network a lab emulates. Validated on construction; immutable.

    `senders` may be given as a count N (N senders, all with the top-level delays) or as a tuple
    of SenderSpec (each sender with its own delays); it is always a tuple afterwards.
    `queue` and `burst_bytes` of None leave the choice to the lab (netns.lab.default_queue_bytes,
    default_burst_bytes). A `queue` in BDPs is resolved against sender 1's RTT.
    Reordering (like netem's reorder, done by the lab's delay line): a random `reorder` fraction
    of forward packets (`reorder_rev` of reverse ones) is held `reorder_delay` longer than its
    direction's delay, so packets sent after it overtake it. It needs no delay: with delay 0 a
    held packet is simply the only one delayed. `reorder_delay` is allowed but unused while both
    fractions are 0 (not an error: a preset or file may set the hold and a flag turn it on).
    """

    name: str = "ut"
    rate: int | None = None  # bottleneck bits/s; None = no bottleneck (unshaped)
    queue: QueueSpec | None = None  # None = lab default (netns.lab.default_queue_bytes)
    burst_bytes: int | None = None  # None = lab default
    delay: float = 0.0  # one-way forward delay (sender->receiver), s
    delay_rev: float | None = None  # one-way reverse delay; None = same as `delay`
    loss: float = 0.0  # random loss fraction, forward (data) direction
    loss_rev: float = 0.0  # random loss fraction, reverse (ACK) direction
    loss_seed: int | None = None  # a seed makes the loss pattern repeat by packet index (loss.py)
    reorder: float = 0.0  # fraction of forward (data) packets held back reorder_delay longer
    reorder_rev: float = 0.0  # the same for the reverse (ACK) direction
    reorder_delay: float = 0.001  # extra hold of a reordered packet on top of the delay, s
    senders: int | tuple[SenderSpec, ...] = 1  # normalised to a tuple of SenderSpec
    mtu: int = 1500

    def __post_init__(self) -> None:
        validate_name(self.name)
        _check_int("mtu", self.mtu, 68, 65535, " (68 is the IPv4 minimum)")
        self._check_bottleneck()
        object.__setattr__(self, "delay", _delay("delay", self.delay))
        if self.delay_rev is not None:
            object.__setattr__(self, "delay_rev", _delay("delay_rev", self.delay_rev))
        object.__setattr__(self, "loss", _loss("loss", self.loss))
        object.__setattr__(self, "loss_rev", _loss("loss_rev", self.loss_rev))
        if self.loss_seed is not None:
            _check_int("loss_seed", self.loss_seed, 1, 2**64 - 1, " (None: a fresh pattern every run)")
        object.__setattr__(self, "reorder", _reorder("reorder", self.reorder))
        object.__setattr__(self, "reorder_rev", _reorder("reorder_rev", self.reorder_rev))
        object.__setattr__(
            self, "reorder_delay", _reorder_delay("reorder_delay", self.reorder_delay)
        )
        object.__setattr__(self, "senders", self._normalise_senders(self.senders))
        self.queue_bytes()  # a queue that cannot be resolved is an error now, not at `lab up`

    def _check_bottleneck(self) -> None:
        if self.rate is None:
            if self.queue is not None or self.burst_bytes is not None:
                raise ValueError(
                    "queue and burst shape the bottleneck, so they need a rate "
                    "(e.g. rate = \"50mbit\")"
                )
            return
        if isinstance(self.rate, bool) or not isinstance(self.rate, int):
            raise ValueError(f"rate must be an int in bits/s (e.g. 50_000_000), got {self.rate!r}")
        if not MIN_RATE_BPS <= self.rate <= MAX_RATE_BPS:
            raise ValueError(
                f"rate {fmt_rate(self.rate)} is outside the lab's range, "
                f"{fmt_rate(MIN_RATE_BPS)} to {fmt_rate(MAX_RATE_BPS)}"
            )
        if self.queue is not None and not isinstance(self.queue, QueueSpec):
            raise ValueError(
                f"queue must be a QueueSpec (see parse_queue: '1bdp', '100p', '64k'), "
                f"got {self.queue!r}"
            )
        if self.burst_bytes is not None:
            frame = self.mtu + ETH_HLEN
            _check_int(
                "burst_bytes", self.burst_bytes, frame, MAX_TBF_BYTES,
                f" (at least one frame, mtu {self.mtu} + {ETH_HLEN} B, or TBF drops every "
                f"full-size packet)",
            )

    def _normalise_senders(self, senders: object) -> tuple[SenderSpec, ...]:
        if isinstance(senders, int) and not isinstance(senders, bool):
            _check_int("senders", senders, 1, MAX_SENDERS, "")
            return (SenderSpec(self.delay, self.effective_delay_rev),) * senders
        if isinstance(senders, (tuple, list)) and all(isinstance(s, SenderSpec) for s in senders):
            if not 1 <= len(senders) <= MAX_SENDERS:
                raise ValueError(f"give 1 to {MAX_SENDERS} senders, got {len(senders)}")
            return tuple(senders)
        raise ValueError(
            f"senders must be a count (1 to {MAX_SENDERS}) or a tuple of SenderSpec, "
            f"got {senders!r}"
        )

    # derived values ---------------------------------------------------------------------------

    @property
    def _specs(self) -> tuple[SenderSpec, ...]:
        """`senders` with its type after __post_init__ (always a tuple there)."""
        return self.senders  # type: ignore[return-value]

    @property
    def effective_delay_rev(self) -> float:
        """The reverse (receiver->sender) one-way delay: `delay_rev`, or `delay` if not given."""
        return self.delay if self.delay_rev is None else self.delay_rev

    @property
    def rtt(self) -> float:
        """Sender 1's base RTT (no queueing) in seconds: the RTT a BDP queue is sized for."""
        return self._specs[0].rtt

    def bdp_bytes(self) -> int | None:
        """rate/8 x RTT in whole bytes (sender 1's RTT); None without a rate."""
        if self.rate is None:
            return None
        return int(Decimal(self.rate) * _dec(self.rtt) / 8)

    def queue_bytes(self) -> int | None:
        """The TBF limit in bytes; None without a rate or a queue (the lab picks its default)."""
        if self.rate is None or self.queue is None:
            return None
        return self.queue.to_bytes(self.rate, self.rtt, self.mtu)

    def _senders_follow_delays(self) -> bool:
        """Whether every sender just has the top-level delays (as `senders=N` gives them)."""
        own = SenderSpec(self.delay, self.effective_delay_rev)
        return all(s == own for s in self._specs)

    # output -----------------------------------------------------------------------------------

    def describe(self) -> str:
        """One line for people, e.g. "50 Mbit/s, 20ms+20ms one-way (RTT 40ms), queue 1bdp =
        250000 B, loss 0.1%/0%, reorder 1%/0% (+1ms), 3 senders, mtu 1500". Reordering is
        shown only when it is on."""
        senders = self._specs
        parts = [fmt_rate(self.rate) if self.rate is not None else "unshaped"]
        if len(set(senders)) == 1:
            s = senders[0]
            if s.rtt == 0:
                parts.append("no delay")
            else:
                parts.append(
                    f"{fmt_time(s.delay)}+{fmt_time(s.delay_rev)} one-way (RTT {fmt_time(s.rtt)})"
                )
        else:
            one_way = ", ".join(f"{fmt_time(s.delay)}+{fmt_time(s.delay_rev)}" for s in senders)
            rtts = ", ".join(fmt_time(s.rtt) for s in senders)
            parts.append(f"one-way per sender {one_way} (RTT {rtts})")
        if self.rate is not None:
            if self.queue is None:
                parts.append("queue default")
            elif self.queue.unit == "bytes":
                parts.append(f"queue {self.queue_bytes()} B")
            else:
                parts.append(f"queue {self.queue} = {self.queue_bytes()} B")
            if self.burst_bytes is not None:
                parts.append(f"burst {self.burst_bytes} B")
        if self.loss == 0 and self.loss_rev == 0:
            parts.append("no loss")
        else:
            parts.append(f"loss {fmt_percent(self.loss)}/{fmt_percent(self.loss_rev)}"
                         + (f" (seed {self.loss_seed})" if self.loss_seed is not None else ""))
        if self.reorder > 0 or self.reorder_rev > 0:
            parts.append(
                f"reorder {fmt_percent(self.reorder)}/{fmt_percent(self.reorder_rev)} "
                f"(+{fmt_time(self.reorder_delay)})"
            )
        parts.append(f"{len(senders)} sender{'s' if len(senders) > 1 else ''}")
        parts.append(f"mtu {self.mtu}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """The config in the TOML schema (see from_dict), JSON-serialisable, values as text with
        units. Settings left to the lab (None) are omitted: TOML has no null."""
        d: dict[str, Any] = {"name": self.name}
        if self.rate is not None:
            d["rate"] = _rate_text(self.rate)
        if self.queue is not None:
            d["queue"] = str(self.queue)
        if self.burst_bytes is not None:
            d["burst"] = self.burst_bytes
        d["delay"] = fmt_time(self.delay)
        if self.delay_rev is not None:
            d["delay_rev"] = fmt_time(self.delay_rev)
        d["loss"] = fmt_percent(self.loss)
        d["loss_rev"] = fmt_percent(self.loss_rev)
        if self.loss_seed is not None:
            d["loss_seed"] = self.loss_seed
        d["reorder"] = fmt_percent(self.reorder)
        d["reorder_rev"] = fmt_percent(self.reorder_rev)
        d["reorder_delay"] = fmt_time(self.reorder_delay)
        d["mtu"] = self.mtu
        if self._senders_follow_delays():
            d["senders"] = len(self._specs)
        else:
            d["sender"] = [
                {"delay": fmt_time(s.delay), "delay_rev": fmt_time(s.delay_rev)}
                for s in self._specs
            ]
        return d

    # input ------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "config") -> "LabConfig":
        """A config from the TOML schema: text with units ("50mbit", "20ms", "0.1%", "1bdp"),
        ints for mtu and senders, and also for rate (bits/s), queue and burst (bytes).

        `sender` is a list of tables with `delay`/`delay_rev`. A sender's delay, like the
        top-level one, applies to both directions unless a delay_rev is given (its own, or else
        the top-level one); a sender without a delay takes the top-level delays.
        Every error names `source` (e.g. the file) and the key.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"{source}: expected a table of settings, got {d!r}")
        _reject_unknown(d, _KEYS, source, "")
        if "senders" in d and "sender" in d:
            raise ValueError(
                f"{source}: give either `senders = N` or [[sender]] tables, not both"
            )
        kw: dict[str, Any] = {}
        for key, (field, parse) in _PARSERS.items():
            if key in d:
                kw[field] = _parse(source, key, d[key], parse)
        if "sender" in d:
            kw["senders"] = _parse_senders(d["sender"], kw, source)
        try:
            return cls(**kw)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def from_toml(cls, path: str | PathLike[str]) -> "LabConfig":
        """A config from a TOML file (schema: see from_dict). Errors name the file and the key;
        a missing or unreadable file raises OSError."""
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: invalid TOML: {e}") from None
        return cls.from_dict(data, source=str(path))

    def replace(self, **overrides: Any) -> "LabConfig":
        """A copy with some settings changed, e.g. a preset with the CLI's flags on top.

        A value of None means "not given, keep" (what argparse leaves for a missing flag), so
        this cannot set a setting back to None. Senders that just follow the top-level delays
        keep following them (a new `delay` moves every sender); per-sender delays are kept.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(known))}"
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        if "senders" not in given and self._senders_follow_delays():
            given["senders"] = len(self._specs)
        return dataclasses.replace(self, **given)


def _reject_unknown(
    d: Mapping[str, Any], known: Mapping[str, Any], source: str, where: str
) -> None:
    for key in d:
        if key not in known:
            raise ValueError(
                f"{source}: {where}unknown key {key!r} (known keys: {', '.join(sorted(known))})"
            )


def _parse(source: str, key: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except ValueError as e:
        raise ValueError(f"{source}: {key}: {e}") from None


def _with_units(parse: Callable[[str], Any], example: str) -> Callable[[Any], Any]:
    """A TOML value for a setting with units: a string, or a number, which goes through the
    same parser as text so that `delay = 20` gets parse_time's "add a unit" message."""

    def parse_value(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value)
        if _is_number(value):
            return parse(str(value))
        raise ValueError(f"expected a string like {example}, got {value!r}")

    return parse_value


def _int_or(
    parse: Callable[[str], Any], to: Callable[[int], Any], example: str
) -> Callable[[Any], Any]:
    """A TOML value that is a string with units or a plain int (bits/s or bytes)."""

    def parse_value(value: Any) -> Any:
        if isinstance(value, str):
            return parse(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return to(value)
        raise ValueError(f"expected a string like {example} or an int, got {value!r}")

    return parse_value


def _exact(kind: type, example: str) -> Callable[[Any], Any]:
    """A TOML value that must already have the right type (no units to parse)."""

    def parse_value(value: Any) -> Any:
        if isinstance(value, kind) and not isinstance(value, bool):
            return value
        raise ValueError(f"expected {example}, got {value!r}")

    return parse_value


#: TOML key -> (LabConfig field, parser of the TOML value).
_PARSERS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "name": ("name", _exact(str, 'a string like "ut"')),
    "rate": ("rate", _int_or(parse_rate, int, '"50mbit"')),
    "queue": ("queue", _int_or(parse_queue, lambda n: QueueSpec(n, "bytes"), '"1bdp", "100p"')),
    "burst": ("burst_bytes", _int_or(parse_bytes, int, '"6k"')),
    "delay": ("delay", _with_units(parse_time, '"20ms"')),
    "delay_rev": ("delay_rev", _with_units(parse_time, '"20ms"')),
    "loss": ("loss", _with_units(parse_percent, '"0.1%"')),
    "loss_rev": ("loss_rev", _with_units(parse_percent, '"0.1%"')),
    "loss_seed": ("loss_seed", _exact(int, "an int like 42")),
    "reorder": ("reorder", _with_units(parse_percent, '"1%"')),
    "reorder_rev": ("reorder_rev", _with_units(parse_percent, '"1%"')),
    "reorder_delay": ("reorder_delay", _with_units(parse_time, '"1ms"')),
    "mtu": ("mtu", _exact(int, "an int like 1500")),
    "senders": ("senders", _exact(int, "a count like 3 (or [[sender]] tables)")),
}
_KEYS: dict[str, Any] = {**_PARSERS, "sender": None}
_SENDER_KEYS = {"delay": None, "delay_rev": None}


def _parse_senders(
    tables: Any, top: Mapping[str, Any], source: str
) -> tuple[SenderSpec, ...]:
    """[[sender]] tables -> SenderSpecs, defaults from the already parsed top-level `top`."""
    if not isinstance(tables, list) or not all(isinstance(t, Mapping) for t in tables):
        raise ValueError(f"{source}: sender: write one [[sender]] table per sender")
    top_delay = top.get("delay", 0.0)
    top_rev = top.get("delay_rev")
    specs = []
    for i, table in enumerate(tables, 1):
        where = f"sender #{i}"
        _reject_unknown(table, _SENDER_KEYS, source, f"{where}: ")
        delay = (
            _parse(source, f"{where}: delay", table["delay"], _PARSERS["delay"][1])
            if "delay" in table
            else top_delay
        )
        if "delay_rev" in table:
            rev = _parse(source, f"{where}: delay_rev", table["delay_rev"], _PARSERS["delay"][1])
        elif top_rev is not None:
            rev = top_rev
        else:
            rev = delay
        try:
            specs.append(SenderSpec(delay, rev))
        except ValueError as e:
            raise ValueError(f"{source}: {where}: {e}") from None
    return tuple(specs)


# --------------------------------------------------------------------------------------------
# Presets


@functools.cache
def _load_presets() -> dict[str, tuple[str, LabConfig]]:
    """netns/presets.toml, read once. It ships inside the package (package data), so it is
    found through importlib.resources also when usertcp is installed, not run from the repo."""
    source = "netns/presets.toml"
    text = resources.files(__package__).joinpath("presets.toml").read_text(encoding="utf-8")
    data = tomllib.loads(text)
    _reject_unknown(data, {"presets": None}, source, "")
    out: dict[str, tuple[str, LabConfig]] = {}
    for name, table in data["presets"].items():
        where = f"{source} [presets.{name}]"
        settings = dict(table)
        description = settings.pop("description", None)
        if not isinstance(description, str) or not description:
            raise ValueError(f"{where}: needs a description")
        out[name] = (description, LabConfig.from_dict(settings, source=where))
    return out


def presets() -> dict[str, tuple[str, LabConfig]]:
    """Every preset: name -> (description, config)."""
    return dict(_load_presets())


def preset(name: str, /, **overrides: Any) -> LabConfig:
    """The preset `name`, with `overrides` applied as by LabConfig.replace (None = keep).

    `name` is positional-only so that `name=` can override the lab name like any setting.
    """
    known = _load_presets()
    if name not in known:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(known))}")
    return known[name][1].replace(**overrides)
