"""Writing the per-ACK congestion-control log: one JSON object per line.

The engine hands `Connection.cc_log` a dict per ACK with news and per congestion event (see
`Connection._log_cc`): the controller's cwnd, ssthresh and pacing rate, its own `state()`, and
the engine's RTT, in-flight and recovery state. `CcLogWriter` puts them in a file for the trace
tool. Times are the engine's clock, which in the lab is ``time.monotonic()``: CLOCK_MONOTONIC,
the clock BPF's ``bpf_ktime_get_ns()`` and the ``tcp:tcp_probe`` tracepoint stamp with, so the
three sources line up without conversion.

JSON lines rather than CSV because each algorithm logs different variables; rather than a
binary format because a researcher will open it in an editor or pandas (``pd.read_json(path,
lines=True)``) before any tool of ours.
"""

from __future__ import annotations

import json
import os
from typing import IO


class CcLogWriter:
    """A callable for `Connection(cc_log=...)` that appends records to a JSON-lines file.

    Writes are buffered (1 MiB): a record costs a ``json.dumps`` and a buffer append, about
    10 µs, paid only when logging was asked for.
    """

    def __init__(self, path: str | os.PathLike, *, meta: dict | None = None) -> None:
        self.path = os.fspath(path)
        self._f: IO[str] = open(self.path, "w", buffering=1 << 20)
        self.records = 0
        if meta is not None:
            self._f.write(json.dumps({"meta": meta}) + "\n")

    def __call__(self, record: dict) -> None:
        self._f.write(json.dumps(record, default=str) + "\n")
        self.records += 1

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "CcLogWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_cc_log(path: str | os.PathLike) -> tuple[dict, list[dict]]:
    """The file's meta record (empty if none) and its per-ACK records, in order."""
    meta: dict = {}
    records: list[dict] = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if "meta" in obj and len(obj) == 1:
                meta = obj["meta"]
            else:
                records.append(obj)
    return meta, records
