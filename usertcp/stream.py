"""The send side of one TCP connection as a growing chain of regenerable sources.

The engine keeps no copy of bytes in flight (see `sources`): it reads its source again to
retransmit. A server connection does not send one source, though; it sends whatever the
application queues, response after response. `SendStream` is that queue: a concatenation of
pieces, each a byte range of a `Source` (a file range for a body, possibly a Range response) or
a small owned `bytes` (response headers). It satisfies the `Source` protocol itself, so the
engine can read it like any source, with stream-absolute offsets:

    stream offset k  <->  relative sequence number 1 + k  (our SYN takes sequence 0)

Two things differ from a plain source:

* `size` grows as the application appends. `finish()` says it will not grow any more, so the
  engine may place its FIN at sequence 1 + size.
* The engine calls `release(upto)` when the peer has cumulatively acknowledged every byte below
  stream offset `upto` (`snd.una - 1` in relative sequence). Pieces wholly below it are dropped
  and the files the stream owns are closed, so an idle keep-alive connection holds nothing but
  this object. Acknowledged data can never be needed again (RFC 9293 §3.10.7.4: the sender
  removes acknowledged data from the retransmission queue), so reading below `upto` is a bug
  and raises ValueError.

Memory: per live piece one small object and one int; `append_bytes` merges into the previous
owned bytes piece while that stays under `COALESCE` bytes, so a burst of small writes (headers,
error pages, pipelined 304s) is one piece, not hundreds. Bodies are never copied: a file piece
is a slice of the page cache through `FileSource`'s mapping.
"""

from __future__ import annotations

import hashlib
import os
import sys
from bisect import bisect_right

from .sources import FileSource, Source

_HASH_CHUNK = 1 << 20


class _Piece:
    """One contiguous range of the stream: `length` bytes of `data` from `offset`.

    `data` is a `Source`, or a `bytes` the stream owns (then `offset` is 0 and `length` is
    `len(data)`). `owned` marks a source the stream must close when the piece is dropped.
    """

    __slots__ = ("data", "offset", "length", "owned")

    def __init__(self, data: Source | bytes, offset: int, length: int, owned: bool):
        self.data = data
        self.offset = offset
        self.length = length
        self.owned = owned

    def read(self, within: int, length: int) -> bytes | memoryview:
        if type(self.data) is bytes:
            return memoryview(self.data)[within : within + length]
        return self.data.read(self.offset + within, length)


class SendStream:
    """Everything one connection sends, as (source, offset, length) pieces. See the module doc.

    Reads are zero-copy when they fall inside one piece (the piece's own `read`, a memoryview
    slice for every source in `sources`); a read that spans pieces returns a joined `bytes`.
    Pieces are found by bisection over their start offsets, O(log n) per read.
    """

    COALESCE = 4096  # bytes: small appends merge into the previous bytes piece up to this size
    _COMPACT = 64  # drop released slots from the front of the lists once this many accumulate

    def __init__(self) -> None:
        # Parallel lists; slots [0, _head) are released and will be compacted away.
        self._starts: list[int] = []
        self._pieces: list[_Piece | None] = []
        self._head = 0
        self._size = 0
        self._released = 0
        self._finished = False
        # Sources the stream must close: id -> [source, number of live pieces that use it].
        self._owned: dict[int, list] = {}

    # --- the Source protocol -------------------------------------------------------------

    @property
    def size(self) -> int:
        """Bytes appended so far (stream offsets [0, size) exist, [0, released) are gone)."""
        return self._size

    def read(self, offset: int, length: int) -> bytes | memoryview:
        """Bytes [offset, offset + length) of the stream.

        A memoryview slice when the range lies in one piece, else a joined `bytes`. Raises
        ValueError outside [0, size) and for any byte below `released`.
        """
        end = offset + length
        if offset < 0 or length < 0 or end > self._size:
            raise ValueError(f"read [{offset}, {end}) outside stream of {self._size} bytes")
        if length == 0:
            return b""
        if offset < self._released:
            raise ValueError(
                f"read [{offset}, {end}) reaches below offset {self._released}: those bytes "
                "were acknowledged and released (the engine must not read acknowledged data)")
        i = bisect_right(self._starts, offset, self._head) - 1
        start = self._starts[i]
        piece = self._pieces[i]
        within = offset - start
        if within + length <= piece.length:
            return piece.read(within, length)
        parts = []
        while offset < end:
            take = min(piece.length - within, end - offset)
            parts.append(piece.read(within, take))
            offset += take
            i += 1
            if offset < end:
                piece = self._pieces[i]
                within = 0
        return b"".join(parts)

    def sha256(self) -> str:
        """SHA-256 of every byte appended so far.

        Needs all of them: raises ValueError once anything was released. (Tests and tools hash
        before releasing; a running server has nothing to hash with.)
        """
        if self._released:
            raise ValueError(f"sha256 needs the whole stream; [0, {self._released}) was released")
        h = hashlib.sha256()
        for piece in self._live():
            for within in range(0, piece.length, _HASH_CHUNK):
                h.update(piece.read(within, min(_HASH_CHUNK, piece.length - within)))
        return h.hexdigest()

    # --- appending -----------------------------------------------------------------------

    def append(self, source: Source, offset: int = 0, length: int | None = None, *,
               owned: bool = False) -> int:
        """Queue `length` bytes of `source` from `offset` (default: to its end); return length.

        Nothing is read or copied now: the engine reads the source when it transmits. The source
        must return the same bytes for the range until the piece is released (a file must not
        be rewritten in place while it is being served). With `owned=True` the stream calls
        `source.close()` once no live piece uses it any more (after `release` or `close`).
        """
        self._check_open()
        if length is None:
            length = source.size - offset
        if offset < 0 or length < 0 or offset + length > source.size:
            raise ValueError(f"range [{offset}, {offset + length}) outside {source!r}")
        if length == 0:
            if owned and id(source) not in self._owned:
                _close(source)
            return 0
        if owned:
            self._owned.setdefault(id(source), [source, 0])[1] += 1
        self._push(_Piece(source, offset, length, owned))
        return length

    def append_file(self, path: str | os.PathLike, offset: int = 0,
                    length: int | None = None) -> int:
        """Queue a range of a file (default: all of it), mapped by a `FileSource` the stream
        owns and closes when the range is released; return the number of bytes queued."""
        return self.append(FileSource(path), offset, length, owned=True)

    def append_bytes(self, data: bytes | bytearray | memoryview) -> int:
        """Queue a copy of `data` (headers, small bodies); return its length.

        Merged into the previous piece when that is an owned bytes piece and the result stays
        within COALESCE bytes. The merge builds a new `bytes`, so views handed out earlier
        stay valid (bytes are immutable) and the cost per append is bounded by COALESCE.
        """
        self._check_open()
        data = bytes(data)
        n = len(data)
        if not n:
            return 0
        if self._head < len(self._pieces):
            last = self._pieces[-1]
            if type(last.data) is bytes and last.length + n <= self.COALESCE:
                last.data += data
                last.length += n
                self._size += n
                return n
        self._push(_Piece(data, 0, n, False))
        return n

    def finish(self) -> None:
        """No more appends: `size` is final and the FIN goes at relative sequence 1 + size."""
        self._finished = True

    @property
    def finished(self) -> bool:
        return self._finished

    # --- acknowledgement and teardown ----------------------------------------------------

    def release(self, upto: int) -> None:
        """The peer acknowledged every byte below stream offset `upto`: drop what is wholly
        below it and close the sources the stream owns that no live piece needs any more.

        Idempotent and monotonic (a smaller `upto` than before is ignored: cumulative ACKs do
        not go back). `upto` may not exceed `size`; the FIN is not a stream byte.
        """
        if upto > self._size:
            raise ValueError(f"release({upto}) beyond the stream's {self._size} bytes")
        if upto <= self._released:
            return
        self._released = upto
        starts, pieces = self._starts, self._pieces
        head = self._head
        while head < len(pieces) and starts[head] + pieces[head].length <= upto:
            self._drop(pieces[head])
            pieces[head] = None
            head += 1
        self._head = head
        if head == len(pieces):  # all acknowledged (an idle keep-alive connection): hold nothing
            starts.clear()
            pieces.clear()
            self._head = 0
        elif head >= self._COMPACT and 2 * head >= len(pieces):
            del starts[:head], pieces[:head]
            self._head = 0

    @property
    def released(self) -> int:
        """Stream offset below which everything was acknowledged and dropped."""
        return self._released

    @property
    def pending(self) -> int:
        """Bytes appended but not yet acknowledged (in flight or still to be sent)."""
        return self._size - self._released

    @property
    def piece_count(self) -> int:
        """Live pieces (each may hold an open file mapping)."""
        return len(self._pieces) - self._head

    def close(self) -> None:
        """The connection is gone (reset, timeout, fully closed): drop every piece now and close
        what the stream owns. Further reads raise; further appends raise."""
        for piece in self._live():
            self._drop(piece)
        self._starts.clear()
        self._pieces.clear()
        self._head = 0
        self._released = self._size
        self._finished = True

    def memory_bytes(self) -> int:
        """Python memory this stream holds: the object, its piece bookkeeping and owned bytes.

        File data is not counted: it lives in the page cache, shared with every other reader.
        """
        total = (sys.getsizeof(self) + sys.getsizeof(self._starts) + sys.getsizeof(self._pieces)
                 + sys.getsizeof(self._owned))
        for i in range(self._head, len(self._pieces)):
            piece = self._pieces[i]
            total += sys.getsizeof(piece) + sys.getsizeof(self._starts[i])
            if type(piece.data) is bytes:
                total += sys.getsizeof(piece.data)
        return total

    def __repr__(self) -> str:
        state = ", finished" if self._finished else ""
        return (f"SendStream({self._size} B, released {self._released}, "
                f"{self.piece_count} pieces{state})")

    # --- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._finished:
            raise ValueError("append to a finished SendStream (its FIN position is fixed)")

    def _push(self, piece: _Piece) -> None:
        self._starts.append(self._size)
        self._pieces.append(piece)
        self._size += piece.length

    def _live(self):
        return (self._pieces[i] for i in range(self._head, len(self._pieces)))

    def _drop(self, piece: _Piece) -> None:
        if not piece.owned:
            return
        entry = self._owned[id(piece.data)]
        entry[1] -= 1
        if entry[1] == 0:
            del self._owned[id(piece.data)]
            _close(piece.data)


def _close(source) -> None:
    """Close a source the stream owns. A view of it may still be alive (a transmission the
    datapath has not let go of): then the mapping is unmapped when the last view dies."""
    close = getattr(source, "close", None)
    if close is not None:
        try:
            close()
        except BufferError:
            pass
