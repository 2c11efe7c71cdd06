"""SendStream: a growing concatenation of regenerable sources, read by stream offset."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usertcp.sources import BytesSource, FileSource, PatternSource
from usertcp.stream import SendStream


class Closable(BytesSource):
    """A BytesSource that records close() calls, standing in for FileSource."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def datafile(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(100_000))
    return path


# A piece layout: each element appends one range of one kind of source.
_piece = st.one_of(
    st.tuples(st.just("bytes"), st.binary(min_size=0, max_size=300)),
    st.tuples(st.just("big"), st.binary(min_size=4000, max_size=6000)),
    st.tuples(st.just("pattern"), st.integers(0, 3000), st.integers(0, 3000)),
    st.tuples(st.just("file"), st.integers(0, 100_000), st.integers(0, 5000)),
    st.tuples(st.just("source"), st.binary(min_size=0, max_size=500), st.integers(0, 500)),
)


def _build(layout, path):
    """Append `layout` to a fresh stream; return it and the bytes it should hold."""
    stream, expect = SendStream(), bytearray()
    pattern = PatternSource(10_000, seed=3)
    filedata = path.read_bytes()
    for item in layout:
        kind = item[0]
        if kind in ("bytes", "big"):
            stream.append_bytes(item[1])
            expect += item[1]
        elif kind == "pattern":
            off, n = item[1], min(item[2], pattern.size - item[1])
            stream.append(pattern, off, n)
            expect += pattern.read(off, n)
        elif kind == "file":
            off = min(item[1], len(filedata))
            n = min(item[2], len(filedata) - off)
            stream.append_file(path, off, n)
            expect += filedata[off : off + n]
        else:
            data, off = item[1], min(item[2], len(item[1]))
            stream.append(BytesSource(data), off)
            expect += data[off:]
    return stream, bytes(expect)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(layout=st.lists(_piece, max_size=12), reads=st.lists(st.tuples(st.floats(0, 1),
                                                                        st.integers(0, 20_000)),
                                                              max_size=20))
def test_reads_equal_the_concatenation(datafile, layout, reads):
    stream, expect = _build(layout, datafile)
    assert stream.size == len(expect)
    assert stream.read(0, len(expect)) == expect
    for frac, n in reads:
        off = int(frac * len(expect))
        n = min(n, len(expect) - off)
        assert bytes(stream.read(off, n)) == expect[off : off + n]
    assert stream.sha256() == hashlib.sha256(expect).hexdigest()
    stream.close()


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture],
          deadline=None)
@given(layout=st.lists(_piece, min_size=1, max_size=12),
       cuts=st.lists(st.floats(0, 1), min_size=1, max_size=6),
       reads=st.lists(st.tuples(st.floats(0, 1), st.integers(1, 5000)), max_size=10))
def test_release_then_read(datafile, layout, cuts, reads):
    """After release(upto): everything at or above upto still reads right; anything below
    raises; pieces wholly below are gone."""
    stream, expect = _build(layout, datafile)
    upto = 0
    for cut in sorted(cuts):
        upto = max(upto, int(cut * len(expect)))
        stream.release(upto)
        assert stream.released == upto and stream.pending == len(expect) - upto
        for frac, n in reads:
            off = upto + int(frac * (len(expect) - upto))
            n = min(n, len(expect) - off)
            assert bytes(stream.read(off, n)) == expect[off : off + n]
        if upto > 0:
            with pytest.raises(ValueError, match="released"):
                stream.read(upto - 1, 1)
    stream.release(len(expect))
    assert stream.piece_count == 0
    stream.close()


def test_single_piece_read_is_zero_copy(datafile):
    stream = SendStream()
    stream.append_bytes(b"HTTP/1.1 200 OK\r\n\r\n")
    stream.append_file(datafile)
    view = stream.read(100, 1000)
    assert isinstance(view, memoryview)  # a slice of the mapping, not a copy
    assert isinstance(stream.read(0, 30), bytes)  # spans headers and file: joined
    view.release()
    stream.close()


def test_small_appends_coalesce_into_one_piece():
    stream = SendStream()
    for i in range(100):
        stream.append_bytes(b"x" * 30)
    assert stream.piece_count == 1
    first = stream.read(0, 30)
    stream.append_bytes(b"y" * 30)  # merging builds a new bytes: the old view stays valid
    assert bytes(first) == b"x" * 30
    stream.append_bytes(b"z" * SendStream.COALESCE)  # too big to merge
    assert stream.piece_count == 2
    stream.append(PatternSource(10))
    stream.append_bytes(b"after")  # a source piece in between: a new bytes piece
    assert stream.piece_count == 4
    assert bytes(stream.read(stream.size - 5, 5)) == b"after"


def test_release_closes_owned_sources_once_no_piece_uses_them():
    stream = SendStream()
    shared = Closable(b"a" * 100)
    stream.append(shared, 0, 50, owned=True)
    stream.append_bytes(b"-")
    stream.append(shared, 50, 50, owned=True)  # the same source twice: closed after both
    borrowed = Closable(b"b" * 10)
    stream.append(borrowed)  # not owned: never closed by the stream
    stream.release(51)
    assert shared.closed == 0
    stream.release(101)
    assert shared.closed == 1
    stream.release(111)
    assert borrowed.closed == 0
    empty = Closable(b"")
    stream.append(empty, owned=True)  # nothing to send: closed at once
    assert empty.closed == 1


def test_release_rules():
    stream = SendStream()
    stream.append_bytes(b"0123456789")
    stream.release(4)
    stream.release(2)  # an older cumulative ACK: ignored
    assert stream.released == 4
    assert bytes(stream.read(4, 6)) == b"456789"
    assert stream.read(2, 0) == b""  # no byte is read
    with pytest.raises(ValueError, match="released"):
        stream.read(3, 2)
    with pytest.raises(ValueError, match="beyond"):
        stream.release(11)
    with pytest.raises(ValueError, match="outside"):
        stream.read(8, 3)
    with pytest.raises(ValueError, match="sha256 needs"):
        stream.sha256()


def test_finish_fixes_the_size_and_close_drops_everything(datafile):
    stream = SendStream()
    stream.append_file(datafile)
    stream.finish()
    assert stream.finished
    with pytest.raises(ValueError, match="finished"):
        stream.append_bytes(b"more")
    src = stream._pieces[0].data
    stream.close()
    assert src._map.closed
    assert stream.piece_count == 0
    with pytest.raises(ValueError, match="released"):
        stream.read(0, 1)


def test_close_with_a_live_view_defers_the_unmap(datafile):
    """The datapath may still hold a view when the stream lets go: no error, the mapping goes
    with the last view."""
    stream = SendStream()
    stream.append_file(datafile)
    view = stream.read(0, 10)
    stream.release(stream.size)
    assert bytes(view) == datafile.read_bytes()[:10]
    view.release()


def test_memory_stays_bounded_over_many_responses(datafile):
    """A keep-alive connection that sends 5000 responses (headers + a file range each) and gets
    them acknowledged holds about as much as one that sent one."""
    stream = SendStream()
    src = FileSource(datafile)
    peak = 0
    for i in range(5000):
        stream.append_bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        stream.append(src, i, 1000)
        if i % 3 == 0:  # ACKs lag a little, and land mid-piece
            stream.release(stream.size - 500)
        peak = max(peak, stream.memory_bytes())
    stream.release(stream.size)
    assert stream.piece_count == 0
    assert peak < 20_000, peak
    assert stream.memory_bytes() < 2_000
    assert len(stream._pieces) < 2 * SendStream._COMPACT + 4  # released slots are compacted
    src.close()


def test_repr():
    stream = SendStream()
    stream.append_bytes(b"abc")
    assert repr(stream) == "SendStream(3 B, released 0, 1 pieces)"
