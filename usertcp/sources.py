"""Regenerable data sources.

The sender keeps no copy of bytes in flight: the send queue holds (source, offset, length) and
reads the source again to retransmit. So a source must return the same bytes for the same range
every time, and `read` should be cheap (a memoryview slice, not a copy) because the datapath calls
it for every transmission.
"""

from __future__ import annotations

import functools
import hashlib
import mmap
import os
import random
from typing import Protocol


class Source(Protocol):
    size: int

    def read(self, offset: int, length: int) -> bytes | memoryview: ...

    def sha256(self) -> str: ...


def _check_range(size: int, offset: int, length: int) -> None:
    if offset < 0 or length < 0 or offset + length > size:
        raise ValueError(f"read [{offset}, {offset + length}) outside source of {size} bytes")


def _hash_in_chunks(src: Source, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    for off in range(0, src.size, chunk):
        h.update(src.read(off, min(chunk, src.size - off)))
    return h.hexdigest()


class BytesSource:
    """An in-memory buffer (tests, small payloads)."""

    def __init__(self, data: bytes):
        self._view = memoryview(bytes(data))
        self.size = len(data)

    def read(self, offset: int, length: int) -> memoryview:
        _check_range(self.size, offset, length)
        return self._view[offset : offset + length]

    def sha256(self) -> str:
        return hashlib.sha256(self._view).hexdigest()

    def __repr__(self) -> str:
        return f"BytesSource({self.size} B)"


class FileSource:
    """A file, mapped read-only: the page cache is the send buffer, shared with every other reader."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            self.size = os.fstat(f.fileno()).st_size
            # mmap of an empty file is an error; an empty source needs no mapping.
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if self.size else None
        self._view = memoryview(self._map) if self._map is not None else memoryview(b"")

    def read(self, offset: int, length: int) -> memoryview:
        _check_range(self.size, offset, length)
        return self._view[offset : offset + length]

    def sha256(self) -> str:
        return _hash_in_chunks(self)

    def close(self) -> None:
        self._view.release()
        if self._map is not None:
            self._map.close()

    def __repr__(self) -> str:
        return f"FileSource({self.path!r}, {self.size} B)"


@functools.lru_cache(maxsize=16)
def _pattern_block(seed: int, period: int) -> memoryview:
    """The seeded block, twice in a row, shared by every PatternSource of that seed: making it
    costs ~2.5 ms, which thousands of short simulated transfers would otherwise pay each."""
    block = random.Random(seed).randbytes(period)
    return memoryview(block + block)


class PatternSource:
    """`size` bytes of a deterministic pseudo-random pattern, generated once per process.

    Byte i is `block[i % PERIOD]` for a seeded random block whose PERIOD is prime, so that no
    power-of-two misplacement of data (a segment sent at the wrong offset) can go unnoticed by a
    hash. The block is stored twice in a row so any read of up to PERIOD bytes is one zero-copy
    slice.
    """

    PERIOD = 1_048_573  # the largest prime below 2**20

    def __init__(self, size: int, seed: int = 0):
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self.seed = seed
        self._double = _pattern_block(seed, self.PERIOD)

    def read(self, offset: int, length: int) -> memoryview:
        _check_range(self.size, offset, length)
        if length > self.PERIOD:
            return memoryview(b"".join(self.read(o, min(self.PERIOD, offset + length - o))
                                       for o in range(offset, offset + length, self.PERIOD)))
        start = offset % self.PERIOD
        return self._double[start : start + length]

    def sha256(self) -> str:
        return _hash_in_chunks(self, self.PERIOD)

    def __repr__(self) -> str:
        return f"PatternSource({self.size} B, seed={self.seed})"
