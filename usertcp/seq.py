"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4).

Every comparison of sequence or acknowledgment numbers in the engine goes through these helpers
so that wrap-around is handled in one place.
"""

MOD = 1 << 32
HALF = 1 << 31


def add(a: int, n: int) -> int:
    """a + n modulo 2**32."""
    return (a + n) & 0xFFFFFFFF


def diff(a: int, b: int) -> int:
    """Signed distance a - b, in (-2**31, 2**31]."""
    d = (a - b) & 0xFFFFFFFF
    return d - MOD if d > HALF else d


def lt(a: int, b: int) -> bool:
    return diff(a, b) < 0


def le(a: int, b: int) -> bool:
    return diff(a, b) <= 0


def gt(a: int, b: int) -> bool:
    return diff(a, b) > 0


def ge(a: int, b: int) -> bool:
    return diff(a, b) >= 0
