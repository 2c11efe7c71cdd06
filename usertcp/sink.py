"""A plain kernel-socket sink: accept, read to EOF, count and hash, report one JSON line.

This is the receiver every transfer is checked against: it is the kernel's TCP, untouched, so a
matching SHA-256 says the Python sender delivered every byte in order.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import subprocess
import sys
import time


def serve(port: int, host: str = "0.0.0.0", count: int = 0, out=sys.stdout, ready=None,
          rcvbuf: int = 0) -> None:
    """Accept `count` connections one after another (0: forever), one report line each."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ls.bind((host, port))
        except OSError as exc:
            raise SystemExit(f"sink: cannot listen on {host}:{port}: {exc.strerror} (port taken? try --port)")
        ls.listen(8)
        if ready is not None:
            ready()
        print(json.dumps({"listening": f"{host}:{port}"}), file=out, flush=True)
        served = 0
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        while count == 0 or served < count:
            conn, peer = ls.accept()
            with conn:
                if rcvbuf:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
                h = hashlib.sha256()
                n = 0
                first = last = None
                error = None
                while True:
                    try:
                        k = conn.recv_into(view)
                    except ConnectionResetError:
                        error = "reset"  # the sender aborted: report what arrived before
                        break
                    if not k:
                        break
                    now = time.monotonic()
                    if first is None:
                        first = now
                    last = now
                    h.update(view[:k])
                    n += k
                report = {
                    "peer": f"{peer[0]}:{peer[1]}",
                    "bytes": n,
                    "sha256": h.hexdigest(),
                    "seconds": (last - first) if first is not None else 0.0,
                }
                if error:
                    report["error"] = error
            print(json.dumps(report), file=out, flush=True)
            served += 1


class SinkProcess:
    """`usertcp sink` as a child process in namespace `ns`, its reports read line by line."""

    def __init__(self, ns: str, port: int, count: int = 1):
        import netns

        argv = [sys.executable, "-m", "usertcp", "sink", "--netns", "-", "--port", str(port), "--count", str(count)]
        self.proc = subprocess.Popen(netns.command(ns, argv), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if "listening" not in line:
            self.close()
            raise RuntimeError(f"the sink did not start in {ns} (port {port} taken?)")

    def report(self, timeout: float = 60.0) -> dict:
        """The next connection's report; raises TimeoutError if none comes in `timeout` s."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the sink reported nothing: the transfer did not finish")
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
