"""HttpSession: a sans-I/O static-file server appending responses to a SendStream.

Responses are parsed back with h11 as a client, so framing (Content-Length, HEAD without a
body, Connection: close, pipelined order) is checked the way a real client would see it.
"""

from __future__ import annotations

import email.utils
import os

import h11
import pytest

from usertcp.http import HttpSession
from usertcp.sources import FileSource
from usertcp.stream import SendStream

NOW = 1_700_000_000.0
HELLO = b"hello world\n"


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "www"
    r.mkdir()
    (r / "hello.txt").write_bytes(HELLO)
    (r / "big.bin").write_bytes(os.urandom(300_000))
    (r / "empty.txt").write_bytes(b"")
    (r / "page.html").write_bytes(b"<p>hi</p>")
    (r / "sp ace.txt").write_bytes(b"space")
    (r / "sub").mkdir()
    (r / "sub" / "index.html").write_bytes(b"<h1>sub</h1>")
    (r / "nodir").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"secret")
    (r / "link_out").symlink_to(tmp_path / "secret.txt")
    (r / "link_in").symlink_to(r / "hello.txt")
    (r / "dirlink_out").symlink_to(tmp_path)
    os.mkfifo(r / "fifo")
    os.utime(r / "hello.txt", (NOW - 86400, NOW - 86400))
    return r


def session(root, **kw) -> HttpSession:
    return HttpSession(SendStream(), root, clock=lambda: NOW, **kw)


def req(target: str | bytes, method: str = "GET", headers: dict | None = None,
        version: str = "1.1", body: bytes = b"") -> bytes:
    if isinstance(target, str):
        target = target.encode()
    lines = [method.encode() + b" " + target + b" HTTP/" + version.encode()]
    fields = {"Host": "example"} | (headers or {})
    lines += [f"{k}: {v}".encode() for k, v in fields.items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def responses(stream: SendStream, methods: list[str]) -> list[tuple[h11.Response, bytes]]:
    """Parse the stream's bytes as the responses to `methods`, with h11 as the client; check
    that nothing follows the last one."""
    client = h11.Connection(h11.CLIENT)
    client.receive_data(bytes(stream.read(stream.released, stream.pending)))
    out = []
    for method in methods:
        client.send(h11.Request(method=method, target="/", headers=[("Host", "example")]))
        client.send(h11.EndOfMessage())
        resp, body = None, bytearray()
        while True:
            event = client.next_event()
            if type(event) is h11.Response:
                resp = event
            elif type(event) is h11.Data:
                body += event.data
            elif type(event) is h11.EndOfMessage:
                break
            else:
                raise AssertionError(f"incomplete response: {event}")
        out.append((resp, bytes(body)))
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
    assert client.trailing_data[0] == b"", "bytes after the last expected response"
    return out


def one(root, data: bytes, method: str = "GET", **kw):
    s = session(root, **kw)
    s.receive_data(data)
    [(resp, body)] = responses(s.stream, [method])
    return s, resp, body


def hdr(resp: h11.Response) -> dict[bytes, bytes]:
    return dict(resp.headers)


# --- plain GET and HEAD -----------------------------------------------------------------------


def test_get_whole_file(root):
    s, resp, body = one(root, req("/hello.txt"))
    assert resp.status_code == 200 and body == HELLO
    h = hdr(resp)
    assert h[b"content-length"] == b"12"
    assert h[b"content-type"] == b"text/plain"
    assert h[b"accept-ranges"] == b"bytes"
    assert h[b"server"] == b"usertcp"
    assert h[b"date"] == email.utils.formatdate(NOW, usegmt=True).encode()
    assert h[b"last-modified"] == email.utils.formatdate(NOW - 86400, usegmt=True).encode()
    assert h[b"etag"].startswith(b'"') and b"connection" not in h
    assert not s.should_close and not s.stream.finished
    [ex] = s.events()
    assert (ex.method, ex.target, ex.status, ex.body_bytes, ex.error) == (
        "GET", "/hello.txt", 200, 12, None)


def test_get_big_file_is_a_file_range_not_a_copy(root):
    s, resp, body = one(root, req("/big.bin"))
    assert body == (root / "big.bin").read_bytes()
    assert hdr(resp)[b"content-type"] == b"application/octet-stream"
    sources = [p.data for p in s.stream._live() if isinstance(p.data, FileSource)]
    assert len(sources) == 1 and sources[0].size == 300_000
    assert s.stream.memory_bytes() < 2000  # headers and bookkeeping only
    s.stream.release(s.stream.size)  # all acknowledged: the stream closes the mapping
    assert sources[0]._map.closed and s.stream.piece_count == 0


def test_head_has_the_get_headers_and_no_body(root):
    _, get, _ = one(root, req("/big.bin"))
    s, head, body = one(root, req("/big.bin", "HEAD"), "HEAD")
    assert head.status_code == 200 and body == b""
    assert head.headers == get.headers
    assert s.stream.piece_count == 1  # headers only: no file range was queued
    s.stream.release(s.stream.size)


def test_empty_file(root):
    s, resp, body = one(root, req("/empty.txt"))
    assert resp.status_code == 200 and body == b"" and hdr(resp)[b"content-length"] == b"0"


def test_content_types(root):
    assert hdr(one(root, req("/page.html"))[1])[b"content-type"] == b"text/html"
    assert hdr(one(root, req("/sub/"))[1])[b"content-type"] == b"text/html"


# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [
    "/sp%20ace.txt", "/hello.txt?x=1&y=/../..", "/./hello.txt", "/sub/../hello.txt",
    "//hello.txt", "/%68ello.txt", "http://example/hello.txt", "/link_in",
])
def test_paths_that_reach_a_file(root, target):
    _, resp, body = one(root, req(target))
    assert resp.status_code == 200, target
    assert body in (HELLO, b"space")


@pytest.mark.parametrize("target", [
    "/../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E%2Fetc%2Fpasswd", "/..%2f..%2fetc/passwd",
    "/sub/../../etc/passwd", "/../secret.txt", "/link_out", "/dirlink_out/secret.txt",
    "/missing", "/nodir/", "/hello.txt/", "/fifo",
])
def test_not_found_and_no_escape_from_root(root, target):
    s, resp, body = one(root, req(target))
    assert resp.status_code == 404, target
    assert b"secret" not in body and b"root:" not in body
    assert not s.should_close  # a 404 keeps the connection


def test_directory_index_and_redirect(root):
    _, resp, body = one(root, req("/sub/"))
    assert resp.status_code == 200 and body == b"<h1>sub</h1>"
    _, resp, _ = one(root, req("/sub?q=1"))
    assert resp.status_code == 301 and hdr(resp)[b"location"] == b"/sub/?q=1"
    _, resp, _ = one(root, req("/"))
    assert resp.status_code == 404  # the root has no index.html; no listings


def test_bad_targets_are_400_and_keep_the_connection(root):
    s, resp, _ = one(root, req("/hello%00.txt"))
    assert resp.status_code == 400 and not s.should_close
    assert s.events()[0].error == "NUL byte in path"
    _, resp, _ = one(root, req("*"))
    assert resp.status_code == 400


def test_long_target_is_414(root):
    _, resp, _ = one(root, req("/" + "a" * 9000))
    assert resp.status_code == 414


# --- Range ---------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, status, body, content_range", [
    ("bytes=0-4", 206, b"hello", b"bytes 0-4/12"),
    ("bytes=6-", 206, b"world\n", b"bytes 6-11/12"),
    ("bytes=-6", 206, b"world\n", b"bytes 6-11/12"),
    ("bytes=-100", 206, HELLO, b"bytes 0-11/12"),  # suffix longer than the file: all of it
    ("bytes=3-3", 206, b"l", b"bytes 3-3/12"),
    ("bytes=10-999", 206, b"d\n", b"bytes 10-11/12"),  # last-pos clipped
    ("BYTES = 1-2", 206, b"el", b"bytes 1-2/12"),  # unit is case-insensitive, OWS around "="
    ("bytes=,0-1,", 206, b"he", b"bytes 0-1/12"),  # empty list elements are allowed
    ("bytes=12-", 416, None, b"bytes */12"),
    ("bytes=100-200", 416, None, b"bytes */12"),
    ("bytes=-0", 416, None, b"bytes */12"),
    ("bytes=5-2", 200, HELLO, None),  # invalid: the field is ignored
    ("bytes=abc", 200, HELLO, None),
    ("bytes=", 200, HELLO, None),
    ("items=0-1", 200, HELLO, None),
    ("bytes=0-1,4-5", 200, HELLO, None),  # multiple ranges: the whole file (RFC 9110 §14.2)
    ("bytes=0-" + "9" * 5000, 200, HELLO, None),  # absurd number: ignored, not a crash
])
def test_range(root, spec, status, body, content_range):
    _, resp, got = one(root, req("/hello.txt", headers={"Range": spec}))
    h = hdr(resp)
    assert resp.status_code == status, spec
    assert h.get(b"content-range") == content_range
    if body is not None:
        assert got == body and h[b"content-length"] == str(len(body)).encode()


def test_range_on_big_file_is_a_file_range(root):
    s, resp, body = one(root, req("/big.bin", headers={"Range": "bytes=100000-199999"}))
    assert resp.status_code == 206
    assert body == (root / "big.bin").read_bytes()[100_000:200_000]
    [src_piece] = [p for p in s.stream._live() if isinstance(p.data, FileSource)]
    assert (src_piece.offset, src_piece.length) == (100_000, 100_000)


def test_range_on_empty_file_is_416(root):
    _, resp, _ = one(root, req("/empty.txt", headers={"Range": "bytes=0-"}))
    assert resp.status_code == 416 and hdr(resp)[b"content-range"] == b"bytes */0"


def test_head_with_range(root):
    _, resp, body = one(root, req("/hello.txt", "HEAD", {"Range": "bytes=-5"}), "HEAD")
    assert resp.status_code == 206 and body == b""
    assert hdr(resp)[b"content-range"] == b"bytes 7-11/12"
    assert hdr(resp)[b"content-length"] == b"5"


def test_if_range(root):
    _, full, _ = one(root, req("/hello.txt"))
    etag = hdr(full)[b"etag"].decode()
    lm = hdr(full)[b"last-modified"].decode()
    rng = {"Range": "bytes=0-0"}
    assert one(root, req("/hello.txt", headers=rng | {"If-Range": etag}))[1].status_code == 206
    assert one(root, req("/hello.txt", headers=rng | {"If-Range": lm}))[1].status_code == 206
    for stale in ('"other"', "W/" + etag, email.utils.formatdate(NOW - 99999, usegmt=True)):
        _, resp, body = one(root, req("/hello.txt", headers=rng | {"If-Range": stale}))
        assert resp.status_code == 200 and body == HELLO, stale


# --- conditional GET -------------------------------------------------------------------------


def test_conditional_get(root):
    _, full, _ = one(root, req("/hello.txt"))
    etag = hdr(full)[b"etag"].decode()
    lm = hdr(full)[b"last-modified"].decode()
    for headers in ({"If-None-Match": etag}, {"If-None-Match": f'"x", W/{etag}'},
                    {"If-None-Match": "*"}, {"If-Modified-Since": lm}):
        _, resp, body = one(root, req("/hello.txt", headers=headers))
        assert resp.status_code == 304 and body == b"", headers
        assert hdr(resp)[b"etag"] == etag.encode()
    earlier = email.utils.formatdate(NOW - 2 * 86400, usegmt=True)
    for headers in ({"If-None-Match": '"x"'}, {"If-Modified-Since": earlier},
                    {"If-Modified-Since": "yesterday"},
                    {"If-None-Match": '"x"', "If-Modified-Since": lm}):  # INM wins (§13.2.2)
        _, resp, body = one(root, req("/hello.txt", headers=headers))
        assert resp.status_code == 200 and body == HELLO, headers


# --- connection management -------------------------------------------------------------------


def test_pipelined_requests_answered_in_order(root):
    s = session(root)
    s.receive_data(req("/hello.txt") + req("/sub/", "HEAD") + req("/missing") + req("/big.bin"))
    got = responses(s.stream, ["GET", "HEAD", "GET", "GET"])
    assert [r.status_code for r, _ in got] == [200, 200, 404, 200]
    assert got[0][1] == HELLO and got[1][1] == b""
    assert got[3][1] == (root / "big.bin").read_bytes()
    assert not s.should_close
    s.stream.release(s.stream.size)  # the client acknowledged all four
    s.receive_data(req("/sp%20ace.txt"))  # and the connection is still usable
    assert responses(s.stream, ["GET"])[0][1] == b"space"
    assert s.requests == 5


def test_request_split_across_segments(root):
    s = session(root)
    data = req("/hello.txt") + req("/page.html")
    for i in range(0, len(data), 7):
        s.receive_data(data[i : i + 7])
    assert [b for _, b in responses(s.stream, ["GET", "GET"])] == [HELLO, b"<p>hi</p>"]


def test_connection_close_is_honoured(root):
    s = session(root)
    s.receive_data(req("/hello.txt", headers={"Connection": "close"}) + req("/page.html"))
    [(resp, body)] = responses(s.stream, ["GET"])  # the pipelined second request is not served
    assert body == HELLO and hdr(resp)[b"connection"] == b"close"
    assert s.should_close and s.stream.finished
    s.receive_data(req("/page.html"))  # ignored after the close decision
    responses(s.stream, ["GET"])


def test_http10_closes(root):
    s, resp, body = one(root, req("/hello.txt", version="1.0"))
    assert body == HELLO and hdr(resp)[b"connection"] == b"close" and s.should_close


def test_upgrade_is_ignored(root):
    s = session(root)
    s.receive_data(req("/hello.txt", headers={"Upgrade": "h2c", "Connection": "Upgrade"})
                   + req("/page.html"))
    assert [r.status_code for r, _ in responses(s.stream, ["GET", "GET"])] == [200, 200]
    assert not s.should_close


def test_eof_after_requests_answers_then_closes(root):
    s = session(root)
    s.receive_data(req("/hello.txt") + req("/page.html"))
    s.receive_eof()
    assert len(responses(s.stream, ["GET", "GET"])) == 2
    assert s.should_close and s.stream.finished and s.error is None


def test_eof_mid_request_closes_without_response(root):
    s = session(root)
    s.receive_data(req("/hello.txt")[:-2])
    s.receive_eof()
    assert s.should_close and s.stream.size == 0
    [ex] = s.events()
    assert ex.status is None and "middle of a request" in ex.error


def test_eof_on_idle_connection(root):
    s = session(root)
    s.receive_eof()
    assert s.should_close and s.events() == [] and s.error is None


# --- errors --------------------------------------------------------------------------------


def test_other_methods_are_405(root):
    s = session(root)
    s.receive_data(req("/hello.txt", "POST", {"Content-Length": "5"}, body=b"abcde")
                   + req("/hello.txt", "DELETE") + req("/hello.txt"))
    got = responses(s.stream, ["POST", "DELETE", "GET"])
    assert [r.status_code for r, _ in got] == [405, 405, 200]
    assert hdr(got[0][0])[b"allow"] == b"GET, HEAD"
    assert got[2][1] == HELLO  # the POST body was discarded, not parsed as a request
    assert not s.should_close


def test_405_to_expect_100_continue_closes(root):
    s = session(root)
    s.receive_data(req("/x", "PUT", {"Content-Length": "100", "Expect": "100-continue"}))
    [(resp, _)] = responses(s.stream, ["PUT"])
    assert resp.status_code == 405 and hdr(resp)[b"connection"] == b"close"
    assert s.should_close


@pytest.mark.parametrize("data, status", [
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\n\r\n", 400),  # HTTP/1.1 without Host (RFC 9112 §3.2)
    (b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n", 400),
    (b"GET /hello.txt HTTP/1.1\r\nHost: a\r\nX: " + b"y" * 20000, 431),
])
def test_malformed_request_gets_error_and_close(root, data, status):
    s = session(root)
    s.receive_data(req("/hello.txt") + data)  # a good request first: it is still answered
    got = responses(s.stream, ["GET", "GET"])
    assert got[0][1] == HELLO
    assert got[1][0].status_code == status and hdr(got[1][0])[b"connection"] == b"close"
    assert s.should_close and s.stream.finished and s.error
    assert s.events()[-1].error == s.error


# --- resources ---------------------------------------------------------------------------------


def test_backpressure_holds_pipelined_requests(root):
    s = session(root, high_water=1000)
    s.receive_data(req("/big.bin") + req("/hello.txt") + req("/big.bin", headers={
        "Range": "bytes=0-9"}))
    assert s.paused and s.requests == 1  # the first response is over the high-water mark
    s.pump()
    assert s.requests == 1  # nothing acknowledged yet: still paused
    expect = [(root / "big.bin").read_bytes(), HELLO, (root / "big.bin").read_bytes()[:10]]
    bodies = []
    while s.requests < 3 or s.stream.pending:
        methods = ["GET"] * (s.requests - len(bodies))
        bodies += [b for _, b in responses(s.stream, methods)]
        s.stream.release(s.stream.size)
        s.pump()
    assert bodies == expect


def test_many_keepalive_requests_hold_no_memory(root):
    s = session(root)
    for i in range(500):
        s.receive_data(req("/hello.txt" if i % 2 else "/missing"))
        s.stream.release(s.stream.size)
    assert s.requests == 500 and s.stream.piece_count == 0
    assert s.stream.memory_bytes() < 500


def test_pipelined_error_responses_coalesce(root):
    s = session(root)
    s.receive_data(b"".join(req(f"/missing{i}") for i in range(50)))
    assert s.requests == 50
    assert s.stream.piece_count < 50 // 10  # ~150-byte responses merge into 4 KiB pieces


def test_unreadable_file_is_403(root, monkeypatch):
    def refuse(path):
        raise PermissionError(13, "Permission denied", path)
    monkeypatch.setattr("usertcp.http.FileSource", refuse)  # root could read a chmod 0 file
    s, resp, _ = one(root, req("/hello.txt"))
    assert resp.status_code == 403 and not s.should_close


def test_a_bug_costs_one_connection_with_a_500(root, monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")
    monkeypatch.setattr("usertcp.http._content_type", broken)
    s, resp, _ = one(root, req("/hello.txt"))
    assert resp.status_code == 500 and hdr(resp)[b"connection"] == b"close"
    assert s.should_close and "boom" in s.error
    assert s.stream.piece_count == 1  # the file opened for the response was closed, not queued
