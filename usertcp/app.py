"""One server connection of `usertcp serve`: the TCP engine, its send stream and the HTTP session.

This is the glue between the sans-I/O pieces, and sans-I/O itself, so that the same object runs
under the real event loop (`server.Server`) and in virtual time (`sim.peer.AcceptingPeer`):

- the engine (`engine.connection.Connection`, opened passively with `accept`) reads and resends
  its data from a `stream.SendStream` and releases from it what the peer acknowledged;
- the session (`http.HttpSession`) reads the peer's in-order bytes from the engine and appends
  whole responses to the stream, file bodies as file ranges;
- `pump` moves bytes from the first to the second and lets a paused session go on once the
  stream drained; the engine sends the FIN by itself after the session calls `stream.finish()`.

Nothing here keeps a copy of a response: a server with thousands of clients holds, per
connection, the stream's few pieces and the engine's scoreboard records.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from .cc.api import CongestionControl
from .engine.connection import Connection
from .http import HttpSession
from .segment import Segment
from .stream import SendStream


class HttpConnection:
    """An accepted TCP connection serving files from `root` over HTTP/1.1."""

    def __init__(self, conn: Connection, root: str | os.PathLike, *, clock: Callable[[], float] = time.time,
                 idle_timeout: float | None = 60.0):
        if not isinstance(conn.source, SendStream):
            raise TypeError("an HttpConnection's engine must send from a SendStream")
        self.conn = conn
        self.stream: SendStream = conn.source
        self.session = HttpSession(self.stream, root, clock=clock)
        self.idle_timeout = idle_timeout
        self._eof_given = False
        self._last_activity: float | None = None

    @classmethod
    def accept(cls, syn: Segment, now: float, local: tuple[str, int], remote: tuple[str, int],
               cc: CongestionControl, root: str | os.PathLike, *, iss: int,
               clock: Callable[[], float] = time.time, idle_timeout: float | None = 60.0,
               **engine) -> HttpConnection:
        """A new connection for the peer's SYN: the engine answers it with a SYN-ACK."""
        conn = Connection(local, remote, cc, SendStream(), iss=iss, now=now, close_at_end=False, **engine)
        conn.accept(syn, now)
        app = cls(conn, root, clock=clock, idle_timeout=idle_timeout)
        app._last_activity = now
        return app

    def pump(self, now: float) -> None:
        """Hand what the peer sent to the session; resume a session the stream held back.

        Call after the engine took segments in, before it transmits. A connection quiet for
        `idle_timeout` with no response outstanding is closed from our side, as servers close
        idle keep-alive connections (nginx's keepalive_timeout)."""
        conn, session = self.conn, self.session
        data = conn.read()
        if data and not self.stream.finished:  # after our FIN is decided, requests are discarded
            self._last_activity = now
            session.receive_data(data)
        if conn.fin_received and not self._eof_given:
            self._eof_given = True
            session.receive_eof()
        if self.stream.pending or session.paused:
            self._last_activity = now
            session.pump()
        if (
            self.idle_timeout is not None
            and self._last_activity is not None
            and now - self._last_activity >= self.idle_timeout
            and not self.stream.pending
        ):
            self.stream.finish()
        if self.stream.finished or session.should_close:
            conn.shutdown()

    def close_when_idle(self) -> None:
        """Finish the response in progress, if any, then close (a server shutting down)."""
        self.idle_timeout = 0.0

    def deadline(self) -> float | None:
        """When this connection must run even if nothing arrives: the engine's own deadline or
        the idle timeout, whichever is first."""
        d = self.conn.deadline()
        if self.idle_timeout is None or self._last_activity is None or self.stream.finished:
            return d
        idle = self._last_activity + self.idle_timeout
        return idle if d is None or idle < d else d

    def close(self) -> None:
        """The connection is gone: drop the stream's pieces and the files it opened."""
        self.stream.close()
