"""A sans-I/O HTTP/1.1 static-file responder: bytes in, responses appended to a `SendStream`.

`HttpSession` is the application side of one server connection of `usertcp serve`. It is fed
what the peer sent (`receive_data`, `receive_eof`) and appends each response to the connection's
`SendStream`: headers as small owned bytes, bodies as ranges of a `FileSource`, so no file byte
is copied into Python and the engine regenerates any segment from the page cache. It never
touches a socket or (except through the injectable `clock`, for `Date`) a clock.

HTTP framing is h11's: request parsing, keep-alive and pipelining (its state machine and
`start_next_cycle`), `Connection: close` on the last response, and HEAD responses without a body
(RFC 9112 §6.3, §9). What this module adds is the resource semantics of a static server:

* Target (RFC 9112 §3.2): origin-form or absolute-form; the path is percent-decoded, the query
  ignored, dot-segments resolved (RFC 3986 §5.2.4). A path that climbs above the root, or whose
  real path (symlinks resolved) lies outside the root, is answered 404 — the same answer as a
  missing file, so probing reveals nothing about the rest of the file system. A file the server
  may not read is 403. A directory is served by its `index.html` (else 404; no listings); a
  directory named without its trailing slash is redirected (301) to the slash form so relative
  links in its index resolve, as nginx and http.server do.
* Methods (RFC 9110 §9.1, §15.5.6): GET and HEAD; anything else is 405 with `Allow: GET, HEAD`.
  HEAD gets exactly the header fields GET would get (§9.3.2), Range included.
* Validators and conditional requests (RFC 9110 §8.8, §13): `Last-Modified`, a strong `ETag`
  made of mtime and size (as nginx does), `If-None-Match` / `If-Modified-Since` → 304 (§13.2.2
  order), `If-Range` (§13.1.5: a strong entity-tag or exact date match, else the Range is
  ignored).
* Range (RFC 9110 §14): one `bytes=a-b`, `a-` or `-n` range → 206 with `Content-Range`; a
  syntactically valid range set that nothing in the file satisfies → 416 with
  `Content-Range: bytes */size` (§15.5.17). A multi-range request is answered with the whole
  file (200): a server MAY ignore Range (§14.2), and a multipart/byteranges body would be a
  generated body, not a file range. An invalid Range field is ignored (200), as §14.2 requires.
* Errors: an unparsable request (h11's RemoteProtocolError) gets its status hint (400, or 431
  when the header section exceeds `max_header_bytes`) and the connection closes (RFC 9112 §9.6:
  the framing can no longer be trusted). A request target longer than `max_target` gets 414.
  A request rejected while the client waits on `Expect: 100-continue` closes the connection
  (RFC 9110 §10.1.1): otherwise the body the client might or might not send would be parsed as
  the next request. Other rejected request bodies are read and discarded, keeping the
  connection.

h11 closes every HTTP/1.0 connection after one response (it does not implement the optional
1.0 keep-alive, RFC 9112 Appendix C.2.2); that is allowed and what we do.

Backpressure: a client can pipeline hundreds of requests in one segment. The session stops
taking requests out of h11's buffer while the stream holds more than `high_water` unacknowledged
bytes or `max_pieces` live pieces (each may be an open file mapping), and continues in `pump()`,
which the integrator calls after `SendStream.release`. Responses stay in request order
(RFC 9112 §9.3.2) because each is appended whole before the next request is looked at.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import posixpath
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote_from_bytes, unquote_to_bytes, urlsplit

import h11

from .sources import FileSource
from .stream import SendStream

SERVER_NAME = b"usertcp"
ALLOWED = b"GET, HEAD"
MAX_TARGET = 8192  # bytes of request target before 414 (nginx's large_client_header_buffers)
MAX_HEADER_BYTES = 16 * 1024  # an incomplete request head larger than this is 431 (h11's hint)

_REASONS = {200: b"OK", 206: b"Partial Content", 301: b"Moved Permanently", 304: b"Not Modified",
            400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found",
            405: b"Method Not Allowed", 414: b"URI Too Long",
            416: b"Range Not Satisfiable", 431: b"Request Header Fields Too Large",
            500: b"Internal Server Error", 501: b"Not Implemented",
            505: b"HTTP Version Not Supported"}

# Built-in table only, so that a file's type does not depend on the host's /etc/mime.types.
_MIME = mimetypes.MimeTypes(filenames=())
_MIME.add_type("application/wasm", ".wasm")
_MIME.add_type("text/javascript", ".mjs")
_ENCODED_TYPES = {"gzip": "application/gzip", "bzip2": "application/x-bzip2",
                  "xz": "application/x-xz", "compress": "application/x-compress",
                  "br": "application/x-brotli"}

_RANGE_SPEC = re.compile(r"(\d*)-(\d*)")
_ETAG = re.compile(r'(?:W/)?"[^"]*"')
_MAX_DIGITS = 1000  # int() of a longer string is refused (and no file is that large)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One line of the access/error log: what was asked and what was answered.

    `method` and `target` are empty when the request could not be parsed; `status` is None when
    nothing was sent (the peer closed mid-request); `body_bytes` is the content appended to the
    stream (0 for HEAD, 304, ...); `error` says why a request was refused or the connection
    dropped, None for a normal exchange.
    """

    method: str
    target: str
    status: int | None
    body_bytes: int = 0
    error: str | None = None


class HttpSession:
    """The HTTP/1.1 server side of one connection, serving regular files under `root`.

    `stream` is the connection's `SendStream`; the session appends responses to it and calls
    `stream.finish()` when it has decided to close, after which `should_close` is True: the
    integrator sends FIN once the stream's bytes are out. `clock` gives the wall-clock time for
    `Date` (RFC 9110 §6.6.1); tests pass a fixed one.
    """

    def __init__(self, stream: SendStream, root: str | os.PathLike, *,
                 clock: Callable[[], float] = time.time,
                 high_water: int = 256 * 1024, max_pieces: int = 64,
                 max_target: int = MAX_TARGET, max_header_bytes: int = MAX_HEADER_BYTES):
        self.stream = stream
        self.root = os.path.realpath(os.fspath(root))
        self.clock = clock
        self.high_water = high_water
        self.max_pieces = max_pieces
        self.max_target = max_target
        self.error: str | None = None  # the last protocol error, for a log line
        self.requests = 0  # requests answered
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes)
        self._eof = False
        self._closing = False
        self._events: list[Exchange] = []

    # --- input ---------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes the peer sent, in order. Responses for every complete request are appended
        (unless paused by backpressure: see `pump`)."""
        if self._closing or self._eof or not data:
            return  # after our close decision the rest is discarded (lingering close)
        self._conn.receive_data(data)
        self.pump()

    def receive_eof(self) -> None:
        """The peer's FIN: complete requests already received are still answered (a client may
        half-close after its last request); then the session closes."""
        if self._eof:
            return
        self._eof = True
        self.pump()

    def pump(self) -> None:
        """Answer buffered requests until h11 needs more data, the session closes, or the
        stream is over its high-water marks. Call it after `stream.release()`."""
        conn = self._conn
        while not self._closing and not self.paused:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._protocol_error(exc)
                return
            if event is h11.NEED_DATA:
                if self._eof:
                    self._peer_closed()
                return
            if event is h11.PAUSED:
                if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                    conn.start_next_cycle()
                    continue
                self._close()  # e.g. a protocol switch we never agreed to: nothing to say
                return
            if type(event) is h11.Request:
                try:
                    self._answer(event)
                except Exception as exc:  # a bug must cost one connection, not the server
                    self._internal_error(event, exc)
                    return
            elif type(event) is h11.ConnectionClosed:
                self._close()
            # Data (a request body we do not use) and EndOfMessage need nothing.
            self._close_if_done()

    # --- output state --------------------------------------------------------------------

    @property
    def should_close(self) -> bool:
        """True once no further response will be appended: send FIN after the stream's last
        byte (`stream.finished` is then True as well)."""
        return self._closing

    @property
    def paused(self) -> bool:
        """True while backpressure holds requests in h11's buffer: stop reading from the peer
        (or let the receive window close) until `pump()` after a `release` resumes."""
        s = self.stream
        return s.pending > self.high_water or s.piece_count > self.max_pieces

    def events(self) -> list[Exchange]:
        """Exchanges (responses sent, errors) since the last call, oldest first."""
        out, self._events = self._events, []
        return out

    # --- request handling ----------------------------------------------------------------

    def _answer(self, req: h11.Request) -> None:
        method = req.method.decode("ascii", "replace")
        target = req.target.decode("ascii", "replace")
        self.requests += 1
        if req.method not in (b"GET", b"HEAD"):
            close = _expects_continue(req)
            self._simple(method, target, 405, [(b"allow", ALLOWED)], close=close)
            return
        if len(req.target) > self.max_target:
            self._simple(method, target, 414)
            return
        try:
            path, query, trailing_slash = _split_target(req.target)
        except _Refused as refused:
            self._simple(method, target, refused.status, error=refused.reason)
            return
        self._serve(req, method, target, path, query, trailing_slash)

    def _lookup(self, method, target, path, outside: str):
        """(real path, stat) of `path` under the root, or None once the error is answered."""
        real = self._resolve(path)
        if real is None:
            self._simple(method, target, 404, error=outside)
            return None
        try:
            return real, os.stat(real)
        except OSError as exc:
            self._simple(method, target, _status_for(exc))
            return None

    def _serve(self, req, method, target, path, query, trailing_slash) -> None:
        found = self._lookup(method, target, path, "outside the root")
        if found is None:
            return
        real, st = found
        if stat.S_ISDIR(st.st_mode):
            if not trailing_slash:
                # From the normalised path: a raw "//host" must not become a Location.
                location = (quote_from_bytes(os.fsencode(path)).encode() + b"/"
                            + (b"?" + query if query else b""))
                self._simple(method, target, 301, [(b"location", location)])
                return
            found = self._lookup(method, target, posixpath.join(path, "index.html"), "index.html outside the root")
            if found is None:
                return
            real, st = found
        elif trailing_slash:
            self._simple(method, target, 404)  # "file.txt/" names no file (ENOTDIR)
            return
        if not stat.S_ISREG(st.st_mode):
            self._simple(method, target, 404)  # FIFOs, devices, sockets are not served
            return
        try:
            src = FileSource(real)  # stat said regular; the mapping's size is authoritative
        except OSError as exc:
            self._simple(method, target, _status_for(exc))
            return
        handed_over = False
        try:
            handed_over = self._file_response(req, method, target, real, src, st)
        finally:
            if not handed_over:
                src.close()

    def _file_response(self, req, method, target, real, src: FileSource, st) -> bool:
        """Answer from an open file; True if the stream took `src` over (it closes it)."""
        size = src.size
        mtime = int(st.st_mtime)
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'.encode()
        headers = self._base_headers() + [
            (b"last-modified", _http_date(mtime)),
            (b"etag", etag),
            (b"accept-ranges", b"bytes"),
        ]
        if _not_modified(req, etag, mtime):
            return self._send(method, target, 304, headers)
        content_type = _content_type(real).encode()
        rng = _range(req, etag, mtime, size)
        if rng == "unsatisfiable":
            body = b"416 Range Not Satisfiable\n"
            return self._send(method, target, 416, headers + [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-range", b"bytes */%d" % size),
                (b"content-length", b"%d" % len(body))], body)
        if rng is None:
            status, first, length = 200, 0, size
            extra = []
        else:
            first, last = rng
            status, length = 206, last - first + 1
            extra = [(b"content-range", b"bytes %d-%d/%d" % (first, last, size))]
        headers += [(b"content-type", content_type), (b"content-length", b"%d" % length)] + extra
        return self._send(method, target, status, headers, (src, first, length))

    # --- writing responses ---------------------------------------------------------------

    def _base_headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"server", SERVER_NAME), (b"date", _http_date(self.clock()))]

    def _simple(self, method: str, target: str, status: int,
                extra: list[tuple[bytes, bytes]] | None = None, *, close: bool = False,
                error: str | None = None) -> None:
        """A short text/plain response for a status without a file."""
        body = b"%d %s\n" % (status, _REASONS[status])
        headers = self._base_headers() + (extra or []) + [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body))]
        if close:
            headers.append((b"connection", b"close"))
        self._send(method, target, status, headers, body, error=error)

    def _send(self, method: str, target: str, status: int, headers, body=None, *,
              error: str | None = None) -> bool:
        """Headers through h11, then the body: owned bytes, or a (FileSource, offset, length)
        range that h11 frames (its Content-Length accounting) but never copies: the Data event
        carries a view, `send_with_data_passthrough` hands that very object back (its
        documented sendfile hook), and the stream gets the file range in its place.

        Returns True when the stream took ownership of the FileSource.
        """
        conn, stream = self._conn, self.stream
        resp = h11.Response(status_code=status, headers=headers, reason=_REASONS[status])
        stream.append_bytes(conn.send(resp))
        sent, handed_over = 0, False
        if body and method != "HEAD" and status not in (204, 304):
            if isinstance(body, tuple):
                src, first, length = body
                if length:
                    view = src.read(first, length)
                    try:
                        for item in conn.send_with_data_passthrough(h11.Data(data=view)):
                            if item is view:
                                stream.append(src, first, length, owned=True)
                                handed_over = True
                            else:
                                stream.append_bytes(item)
                    finally:
                        view.release()
                    sent = length
            else:
                stream.append_bytes(conn.send(h11.Data(data=body)))
                sent = len(body)
        stream.append_bytes(conn.send(h11.EndOfMessage()))
        self._events.append(Exchange(method, target, status, sent, error))
        return handed_over

    # --- connection state ----------------------------------------------------------------

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        """RFC 9112 §9.6 / h11 error handling: answer with the hinted status if no response is
        under way, then close."""
        reason = str(exc) or type(exc).__name__
        self.error = reason
        if self._conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            status = exc.error_status_hint if exc.error_status_hint in _REASONS else 400
            try:
                self._simple("", "", status, close=True, error=reason)
            except h11.LocalProtocolError:
                self._events.append(Exchange("", "", None, 0, reason))
        else:
            self._events.append(Exchange("", "", None, 0, reason))
        self._close()

    def _internal_error(self, req: h11.Request, exc: Exception) -> None:
        """500 (RFC 9110 §15.6.1) if no response is under way, then close either way: a
        response cut short can only be signalled by closing (RFC 9112 §9.6)."""
        self.error = f"internal error: {exc!r}"
        method = req.method.decode("ascii", "replace")
        target = req.target.decode("ascii", "replace")
        if self._conn.our_state is h11.SEND_RESPONSE:
            try:
                self._simple(method, target, 500, close=True, error=self.error)
            except h11.LocalProtocolError:
                self._events.append(Exchange(method, target, None, 0, self.error))
        else:
            self._events.append(Exchange(method, target, None, 0, self.error))
        self._close()

    def _peer_closed(self) -> None:
        """The peer's FIN with everything buffered processed: clean if between requests."""
        trailing, _ = self._conn.trailing_data
        if trailing or self._conn.their_state not in (h11.IDLE, h11.DONE):
            self.error = "peer closed the connection in the middle of a request"
            self._events.append(Exchange("", "", None, 0, self.error))
        self._close()

    def _close_if_done(self) -> None:
        if self._conn.our_state in (h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._close()

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self.stream.finish()

    def __repr__(self) -> str:
        return (f"HttpSession(root={self.root!r}, {self.requests} requests, "
                f"{'closing' if self._closing else 'open'}, {self.stream!r})")

    # --- path resolution -----------------------------------------------------------------

    def _resolve(self, path: str) -> str | None:
        """The real path of `path` (already normalised, relative to the root), or None when it
        lies outside the root once symlinks are resolved."""
        candidate = os.path.join(self.root, path.lstrip("/"))
        real = os.path.realpath(candidate)
        if os.path.commonpath([self.root, real]) != self.root:
            return None
        return real


# --- helpers: pure functions of the request --------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _split_target(target: bytes) -> tuple[str, bytes, bool]:
    """(normalised path, query, trailing slash) of a request target (RFC 9112 §3.2).

    The path is percent-decoded (so "%2e%2e" is "..", and a decoded "/" separates segments
    too), decoded to str the way the OS decodes file names, and its dot-segments removed
    (RFC 3986 §5.2.4). Raises _Refused: 400 for authority/asterisk-form or a NUL byte, 404 for
    a path that climbs above the root.
    """
    if target.startswith(b"/"):
        raw, _, query = target.partition(b"#")[0].partition(b"?")
    elif target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        parts = urlsplit(target)
        raw, query = parts.path or b"/", parts.query
    else:
        raise _Refused(400, "request target is not a path")
    decoded = os.fsdecode(unquote_to_bytes(raw))
    if "\x00" in decoded:
        raise _Refused(400, "NUL byte in path")
    stack: list[str] = []
    for seg in decoded.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not stack:
                raise _Refused(404, "path climbs above the root")
            stack.pop()
        else:
            stack.append(seg)
    trailing = decoded.endswith(("/", "/.", "/.."))
    return "/" + "/".join(stack), query, trailing


def _status_for(exc: OSError) -> int:
    return 403 if isinstance(exc, PermissionError) else 404


def _expects_continue(req: h11.Request) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue"
               for name, value in req.headers)


def _http_date(ts: float) -> bytes:
    """IMF-fixdate (RFC 9110 §5.6.7)."""
    return email.utils.formatdate(ts, usegmt=True).encode()


def _parse_date(value: bytes) -> int | None:
    try:
        dt = email.utils.parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return int(dt.timestamp())


def _header(req: h11.Request, name: bytes) -> bytes | None:
    """The field's value; repeated fields are joined with commas (RFC 9110 §5.3)."""
    values = [v for n, v in req.headers if n == name]
    return b", ".join(values) if values else None


def _content_type(path: str) -> str:
    ctype, encoding = _MIME.guess_type(path, strict=False)
    if encoding:  # a .tar.gz is a gzip file to the client: we send no Content-Encoding
        return _ENCODED_TYPES.get(encoding, "application/octet-stream")
    return ctype or "application/octet-stream"


def _not_modified(req: h11.Request, etag: bytes, mtime: int) -> bool:
    """RFC 9110 §13.2.2 steps 3-4 for GET/HEAD: If-None-Match (weak comparison, §13.1.2),
    else If-Modified-Since (§13.1.3, ignored when not a valid date)."""
    inm = _header(req, b"if-none-match")
    if inm is not None:
        if inm.strip() == b"*":
            return True
        ours = etag.removeprefix(b"W/")
        return any(tag.removeprefix("W/").encode() == ours
                   for tag in _ETAG.findall(inm.decode("latin-1")))
    ims = _header(req, b"if-modified-since")
    if ims is not None:
        since = _parse_date(ims)
        return since is not None and mtime <= since
    return False


def _range(req: h11.Request, etag: bytes, mtime: int, size: int):
    """The single range to serve as (first, last) inclusive, "unsatisfiable", or None for the
    whole file (no Range, If-Range mismatch, invalid or multi-range field).

    RFC 9110 §14.1.1 grammar; §14.1.2: a last-pos past the end is clipped, a suffix longer
    than the file is the whole file; a range is satisfiable when first-pos < size, a suffix
    when its length is > 0.
    """
    value = _header(req, b"range")
    if value is None:
        return None
    if_range = _header(req, b"if-range")
    if if_range is not None and not _if_range_matches(if_range.strip(), etag, mtime):
        return None
    unit, eq, spec_list = value.decode("latin-1").partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s.strip() for s in spec_list.split(",") if s.strip()]  # §5.6.1: empty elements
    if not specs:
        return None
    parsed = []
    for spec in specs:
        m = _RANGE_SPEC.fullmatch(spec)
        if not m or not (m[1] or m[2]) or len(m[1]) > _MAX_DIGITS or len(m[2]) > _MAX_DIGITS:
            return None
        first = int(m[1]) if m[1] else None
        last = int(m[2]) if m[2] else None
        if first is not None and last is not None and last < first:
            return None  # invalid range-spec: the whole field is ignored (§14.1.1)
        parsed.append((first, last))
    if len(parsed) > 1:
        return None  # multiple ranges: whole representation (§14.2 lets us ignore Range)
    first, last = parsed[0]
    if first is None:  # suffix-range "-n"
        if last == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - last), size - 1
    if first >= size:
        return "unsatisfiable"
    return first, size - 1 if last is None else min(last, size - 1)


def _if_range_matches(value: bytes, etag: bytes, mtime: int) -> bool:
    """§13.1.5: an entity-tag must match strongly (a weak tag never does); a date must equal
    Last-Modified exactly."""
    if value.startswith(b"W/"):
        return False
    if value.startswith(b'"'):
        return value == etag
    date = _parse_date(value)
    return date is not None and date == mtime
