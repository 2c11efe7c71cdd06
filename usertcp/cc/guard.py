"""Containing a congestion controller that misbehaves: the engine's side of the plugin contract.

A plugin is someone's experiment. Whatever it does -- raise, answer nonsense, or never return --
the connection must keep its data and keep moving. The engine calls every hook through
`Connection._cc_call`, which checks the answer (`check_answer`) and the time the hook took; on
any fault it replaces the plugin with NewReno carrying over a sane window (`fallback`), records a
``cc_error`` event, and logs one line per plugin, hook and kind of fault for the whole process
(`log_once`), so a server with a thousand connections running a broken plugin says so once.

A hook that never returns cannot be detected after the fact. `Watchdog` is a thread that watches
the deadline of the hook in progress and, once it has passed, sends the main thread a signal
whose handler raises `HookTimeout` inside the hook. That needs the engine to run in the main
thread (signal handlers run only there, and only there can a signal cut a blocking call short);
elsewhere the watchdog stays off and only the after-the-fact check applies.

The per-call cost is what the hot path pays for all this: two `perf_counter()` calls, one
attribute store and a few comparisons (about 0.2 µs).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from typing import Any

from .api import TCP_INFINITE_SSTHRESH, CongestionControl

__all__ = ["HookTimeout", "Watchdog", "WATCHDOG", "check_answer", "fallback", "log_once",
           "DEFAULT_TIME_LIMIT", "WINDOW_LIMIT", "RATE_LIMIT"]

log = logging.getLogger("usertcp.cc")

DEFAULT_TIME_LIMIT = 1.0
"""Seconds one hook call may take. Hooks normally take microseconds; the limit is loose so that
a garbage-collection pause or a stalled virtual machine never passes for a broken plugin."""

WINDOW_LIMIT = 1 << 40
"""cwnd and ssthresh must lie in [1, WINDOW_LIMIT) bytes (1 TiB: above any real window and
above Linux's TCP_INFINITE_SSTHRESH in bytes; excludes inf and NaN in one comparison)."""

RATE_LIMIT = 1e13
"""pacing_rate, when set, must lie in (0, RATE_LIMIT) bytes/s (80 Tbit/s)."""


class HookTimeout(BaseException):
    """Raised inside a hook that overran its time limit. A BaseException, so that a plugin's own
    ``except Exception`` cannot swallow it."""


def check_answer(cc: CongestionControl, hook: str) -> None:
    """Raise ValueError if the controller's outputs after `hook` are nonsense: a window that is
    not a finite number >= 1 byte (negative, zero, NaN, inf, not a number), or a pacing rate that
    is set but not a positive finite number. Called after every hook, so written for speed."""
    cwnd, ssthresh, rate = cc.cwnd, cc.ssthresh, cc.pacing_rate
    try:
        ok = 1 <= cwnd < WINDOW_LIMIT and 1 <= ssthresh < WINDOW_LIMIT
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"cwnd={cwnd!r} ssthresh={ssthresh!r} after {hook}")
    if rate is not None:
        try:
            ok = 0 < rate < RATE_LIMIT
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"pacing_rate={rate!r} after {hook}")
    quantum = cc.send_quantum
    if quantum is not None and not (isinstance(quantum, int) and quantum > 0):
        raise ValueError(f"send_quantum={quantum!r} after {hook}")


def _sane(value: Any, default: int, floor: int) -> int:
    """`value` as an int window if it is a finite number >= floor, else `default` (the clamp)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    if not math.isfinite(v) or v < floor:
        return default
    return int(min(v, TCP_INFINITE_SSTHRESH))


def fallback(failed: CongestionControl, mss: int, now: float) -> CongestionControl:
    """NewReno for the rest of the connection, starting from the failed controller's window
    when that window is sane (so a fault does not throw away what the path had shown), else
    from the initial window; its ssthresh likewise, else "infinite" (slow start again)."""
    from .newreno import NewReno

    nr = NewReno(mss, now)
    nr.cwnd = _sane(getattr(failed, "cwnd", None), nr.cwnd, mss)
    nr.ssthresh = _sane(getattr(failed, "ssthresh", None), nr.ssthresh, 2 * mss)
    return nr


_logged: set[tuple[str, str, str]] = set()


def log_once(name: str, hook: str, exc: BaseException) -> bool:
    """Log a plugin fault once per (plugin, hook, kind of fault) in this process. Returns whether
    this call logged."""
    key = (name, hook, type(exc).__name__)
    if key in _logged:
        return False
    _logged.add(key)
    log.warning("congestion control %r failed in %s: %s: %s; this connection falls back to newreno"
                " (further faults of this kind are not logged)", name, hook, type(exc).__name__, exc)
    return True


class Watchdog:
    """Interrupts a hook that overruns its deadline (see the module docstring).

    The engine stores the absolute `perf_counter()` deadline of the hook it is calling in
    `deadline` (0.0 when none runs). The thread checks it every `period` seconds.
    """

    SIGNAL = signal.SIGUSR2

    def __init__(self, period: float = 0.1) -> None:
        self.deadline = 0.0
        self.period = period
        self._thread: threading.Thread | None = None
        self._main = threading.main_thread()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> bool:
        """Install the signal handler and start the thread, once per process; only possible from
        the main thread. Returns whether the watchdog runs."""
        if self._thread is not None:
            return True
        if threading.current_thread() is not self._main:
            return False
        with self._lock:
            if self._thread is None:
                previous = signal.getsignal(self.SIGNAL)
                if previous not in (signal.SIG_DFL, None) and previous is not self._on_signal:
                    return False  # the application uses SIGUSR2 itself: leave it alone
                signal.signal(self.SIGNAL, self._on_signal)
                t = threading.Thread(target=self._watch, name="usertcp-cc-watchdog", daemon=True)
                t.start()
                self._thread = t
        return True

    def _watch(self) -> None:
        ident = self._main.ident
        while self._main.is_alive():
            time.sleep(self.period)
            d = self.deadline
            if d and time.perf_counter() > d:
                signal.pthread_kill(ident, self.SIGNAL)
                time.sleep(self.period)  # one signal per overrun is enough; give it time to land

    def _on_signal(self, signum, frame) -> None:
        # Runs in the main thread between two bytecodes. Raise only while the overrunning hook
        # is still the one running: a signal that lands after it returned must be ignored.
        d = self.deadline
        if d and time.perf_counter() > d:
            self.deadline = 0.0
            raise HookTimeout("hook ran past its time limit")


WATCHDOG = Watchdog()
