"""The congestion-control plugin API, version 3. The reference page is docs/cc-api.md.

A congestion controller is one subclass of `CongestionControl`. The engine owns everything that
is not a congestion decision -- loss detection, the retransmission timer, fast recovery -- and
calls the controller's hooks with what it measured. The controller answers by setting
attributes: `cwnd` and `ssthresh` (bytes), `pacing_rate` (bytes/s, or None for no pacing).

The split follows Linux's `struct tcp_congestion_ops`, which most people studying congestion
control already know, so each hook names the member (and the RFC step) it stands for:

- ``__init__``: ``init``. cwnd = the initial window (RFC 6928), ssthresh "arbitrarily high"
  (RFC 5681 §3.1).
- ``on_ack``: ``cong_avoid`` (Linux calls it from tcp_cong_control() with the segments acked;
  the RTT sample that ``pkts_acked`` would deliver rides along). RFC 5681 §3.1 slow start and
  congestion avoidance.
- ``on_congestion_event``: ``ssthresh``, called on ``set_state(TCP_CA_Recovery)``. RFC 5681
  §3.2 step 2, RFC 6582 §3.2 step 1.
- ``on_recovery_exit``: no member of its own; what tcp_end_cwnd_reduction() does when Linux
  returns to TCP_CA_Open. RFC 6582 §3.2 step 3 ("full acknowledgments"), option (2).
- ``on_rto``: ``ssthresh``, called from tcp_enter_loss() (``set_state(TCP_CA_Loss)``).
  RFC 5681 §3.1 equation (4) and the loss window.
- ``on_undo``: ``undo_cwnd``, called from tcp_undo_cwnd_reduction() when a loss episode
  turns out spurious (RFC 3708 D-SACK, RFC 3522 timestamps, RFC 5682 F-RTO). API version 2.
- ``on_mss_change``: no member; tcp_sync_mss(). Linux counts cwnd in segments, so an MSS change
  rescales nothing there; in bytes we must.
- ``state``: ``get_info`` (what ``ss -ti`` shows).

Units: every window is in bytes. The RFCs mostly speak in segments; an algorithm converts with
``self.mss`` (the sender's SMSS, RFC 5681 §2), which `on_mss_change` keeps current.

Contract with the engine
------------------------
- ``on_ack`` sees only ACKs that advance snd_una outside fast recovery. During recovery the
  engine runs NewReno's window inflation itself, starting from the ``ssthresh`` that
  ``on_congestion_event`` chose, and the effective window is the engine's, not ``cwnd``;
  ``on_recovery_exit`` then sets ``cwnd`` for the next congestion-avoidance stage.
- ``on_rto`` runs on every expiry of the retransmission timer, including backed-off re-expiries
  and expiries during fast recovery; ``bytes_in_flight`` is RFC 5681's FlightSize
  (snd_nxt - snd_una), which during recovery includes what the inflated window sent. The base
  default applies RFC 5681 §3.1 every time. NewReno and CUBIC here follow Linux's
  tcp_enter_loss() instead and set ssthresh at most once per window: a re-expiry with no ACK
  in between, or a timeout during the fast recovery they entered, does not set it afresh.
- A hook that raises, leaves ``cwnd``/``ssthresh`` outside [1, 2**40) (NaN, inf, zero...),
  sets a bad ``pacing_rate``/``send_quantum``, or overruns the time limit makes the engine
  replace the controller with NewReno carrying its window over (`usertcp.cc.guard`): a bug in
  an experiment never costs data.

Widening the API without breaking v1 plugins
--------------------------------------------
Later versions add, never change: new hooks get a default in this base class that does what v1
implied (usually nothing), and new measurements become fields with defaults at the end of
`AckSample`/`CongestionEvent` (the engine always builds them by keyword). Version 2 added
`AckSample.rate`, the delivery-rate sample in the manner of Linux's ``struct rate_sample``;
`AckSample.ece` and ``CongestionEvent.cause == "ecn"`` (RFC 3168); `on_undo` with `UndoEvent`
(Linux ``undo_cwnd``); and the engine calls ``on_ack`` after it has run loss detection for the
ACK, as Linux calls tcp_cong_control() after tcp_fastretrans_alert(), so an ACK that starts a
recovery reaches ``on_congestion_event`` and not ``on_ack``. Version 3 added ``cong_control``
(a controller that owns the window and sees every ACK with news, in recovery too: BBR),
`AckSample.sacked_bytes`/``lost_bytes``/``in_recovery``/``delivered_total``,
``on_idle_restart`` (``CA_EVENT_TX_START``), ``send_quantum``, tunables declared with `param`,
a time limit on hooks, and the per-ACK log (see `usertcp.cc.guard` and `usertcp.cc.log`).
`CongestionControl.api_version` says which version a plugin was written against.
"""

from __future__ import annotations

import difflib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..engine.rate import RateSample

__all__ = [
    "Param",
    "param",
    "AckSample",
    "CongestionEvent",
    "UndoEvent",
    "CongestionControl",
    "API_VERSION",
    "INITIAL_WINDOW_SEGMENTS",
    "TCP_INFINITE_SSTHRESH",
]

API_VERSION = 3  # 2: AckSample.rate, the delivery-rate sample; 3: cong_control, params, idle restart

# RFC 6928 §2 raises the initial window to ten segments; Linux's TCP_INIT_CWND is 10 as well.
INITIAL_WINDOW_SEGMENTS = 10

# Linux starts every connection with snd_ssthresh = TCP_INFINITE_SSTHRESH (include/net/tcp.h):
# "arbitrarily high", as RFC 5681 §3.1 asks of the initial ssthresh.
TCP_INFINITE_SSTHRESH = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Param:
    """A tunable of an algorithm: what ``usertcp cc show`` lists and ``--cc-param k=v`` sets.

    Declared in the class body with `param`; the class attribute is then the plain default (so
    reading ``self.beta`` on the per-ACK path costs an attribute lookup, nothing more), and
    ``cls.params`` maps each name to its `Param`. A value given for one connection becomes an
    instance attribute of that connection's controller before its ``__init__`` runs.
    """

    name: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    def parse(self, text: str) -> Any:
        """A value from the command line, converted to the default's type and checked."""
        kind = self.type
        try:
            if kind is bool:
                low = text.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                value: Any = low in ("1", "true", "yes", "on")
            elif kind is int:
                value = int(text, 0)
            elif kind is float:
                value = float(text)
            else:
                value = text
        except ValueError:
            raise ValueError(f"{self.name}: {text!r} is not a valid {kind.__name__}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """`value` if it is within this parameter's bounds, else ValueError saying which."""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type in (int, float) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{self.name}: {value!r} is not finite")
            if self.min is not None and value < self.min:
                raise ValueError(f"{self.name}: {value!r} is below the minimum {self.min}")
            if self.max is not None and value > self.max:
                raise ValueError(f"{self.name}: {value!r} is above the maximum {self.max}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(map(str, self.choices))}")
        if not isinstance(value, self.type):
            raise ValueError(f"{self.name}: {value!r} is not a {self.type.__name__}")
        return value


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None) -> Any:
    """Declare a tunable in a `CongestionControl` subclass body::

        class Cubic(CongestionControl):
            beta_cubic = param(0.7, "multiplicative decrease factor (RFC 9438 §4.6)", min=0.0, max=1.0)

    The type is the default's (bool, int, float or str)."""
    return Param("", default, help, min, max, choices)


@dataclass(frozen=True, slots=True)
class AckSample:
    """One ACK: for `on_ack`, one that advanced snd_una outside loss recovery; for
    `cong_control`, any ACK that delivered data (cumulatively or by SACK) or marked a loss."""

    now: float
    """Seconds, virtual or monotonic; only differences matter."""
    acked_bytes: int
    """Bytes newly acknowledged cumulatively by this ACK (RFC 3465's bytes_acked for this
    ACK); 0 for an ACK that only SACKed (which only `cong_control` sees)."""
    rtt: float | None
    """The RTT sample this ACK produced (s), or None when Karn's rule allowed none."""
    srtt: float | None
    """Smoothed RTT (RFC 6298) after this ACK."""
    min_rtt: float | None
    """Lowest RTT seen on the connection."""
    bytes_in_flight: int
    """Bytes still in flight after processing this ACK."""
    mss: int
    """The sender's SMSS (payload bytes per full-sized segment)."""
    app_limited: bool
    """The sender had no data to fill cwnd before this ACK: the ACK says nothing about whether
    the network could carry a larger window (RFC 7661's "rate-limited")."""
    rate: RateSample | None = None
    """This ACK's delivery-rate sample (Linux ``struct rate_sample``; see
    `usertcp.engine.rate.RateSample` for every field): what BBR-style controllers need. Added
    in API version 2; None only from engines older than that."""
    ece: bool = False
    """The ACK carried ECE (RFC 3168 §6.1.3): the receiver saw a CE mark. A controller that
    counts marks per byte acknowledged (DCTCP, RFC 8257 §3.3) reads it here; the window
    reduction itself arrives once per window as ``on_congestion_event(cause="ecn")``. API 2."""
    sacked_bytes: int = 0
    """Bytes this ACK newly SACKed (above snd_una). With `acked_bytes` it is what the ACK
    delivered (RFC 6937's DeliveredData). API 3."""
    lost_bytes: int = 0
    """Bytes the loss detector marked lost while processing this ACK (Linux ``rs->losses``). API 3."""
    in_recovery: bool = False
    """The engine is in loss recovery (fast recovery or after a timeout) after this ACK; only
    `cong_control` sees such ACKs. API 3."""
    delivered_total: int = 0
    """Bytes delivered (cumulatively or by SACK) over the connection so far (Linux
    ``tp->delivered``, in bytes): the clock BBR counts rounds with. API 3."""


@dataclass(frozen=True, slots=True)
class CongestionEvent:
    """The engine has detected congestion and is entering loss recovery."""

    now: float
    bytes_in_flight: int
    """RFC 5681 FlightSize at detection (snd_nxt - snd_una)."""
    mss: int
    cause: str
    """``"dupack"``: loss detected while sending (fast retransmit, RFC 5681 §3.2; with SACK, by
    RACK or DupThresh) and recovery starts. ``"tlp"``: a tail loss probe turned out to have
    repaired a loss (RFC 8985 §7.4.1); nothing is resent and `on_recovery_exit` follows at once,
    so the window is reduced in one step. ``"ecn"``: an ACK carried ECE (RFC 3168 §6.1.2), at
    most once per window; `on_recovery_exit` follows at once, and the reduction is never undone."""


@dataclass(frozen=True, slots=True)
class UndoEvent:
    """The engine found that the last window reduction was for nothing: the data it took for
    lost had arrived (API version 2)."""

    now: float
    prior_cwnd: int
    """cwnd just before the reduction (Linux ``tp->prior_cwnd``)."""
    prior_ssthresh: int
    """max(ssthresh, 3/4 cwnd) just before it (Linux ``tcp_current_ssthresh()`` into
    ``tp->prior_ssthresh``)."""
    cause: str
    """``"dsack"``: every retransmission of the episode came back D-SACKed (RFC 3708 §3, RFC
    2883). ``"timestamp"``: an ACK echoed the timestamp of an original transmission, not of its
    retransmission (the Eifel detection, RFC 3522 §3.2). ``"frto"``: after a timeout, data that
    was never retransmitted was acknowledged (F-RTO, RFC 5682 §3)."""


class CongestionControl(ABC):
    """Base class of every congestion controller; subclass it once per algorithm.

    A subclass must implement `on_ack` and `on_congestion_event`; the other hooks default to
    RFC 5681/6582 behaviour. It reads and writes ``self.cwnd``, ``self.ssthresh`` and
    ``self.pacing_rate``; the engine reads them after every hook.
    """

    name: ClassVar[str]
    """What `usertcp.cc.load` and the traces call the algorithm. Defaults to the class name in
    lower case when a subclass does not set it."""

    api_version: ClassVar[int] = API_VERSION

    send_quantum: int | None = None  # class default: plugins written before API 3 lack the attribute
    params: ClassVar[dict[str, Param]] = {}
    """The algorithm's tunables by name, inherited ones included (see `param`)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__.lower()
        params = dict(cls.params)
        for attr, value in list(cls.__dict__.items()):
            if isinstance(value, Param):
                declared = Param(attr, value.default, value.help, value.min, value.max, value.choices)
                declared.check(declared.default)
                params[attr] = declared
                setattr(cls, attr, value.default)  # reads on the hot path see a plain value
        cls.params = params

    @classmethod
    def create(cls, mss: int, now: float = 0.0, params: dict[str, Any] | None = None) -> "CongestionControl":
        """A controller with some parameters set for this connection only. Values may be strings
        (from ``--cc-param``), parsed by each `Param`, or values of the parameter's type. They
        are in place before ``__init__`` runs, so an algorithm may derive its state from them."""
        obj = cls.__new__(cls)
        for key, value in (params or {}).items():
            p = cls.params.get(key)
            if p is None:
                known = ", ".join(sorted(cls.params)) or "none"
                close = difflib.get_close_matches(key, cls.params, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ValueError(f"{cls.name} has no parameter {key!r}{hint} (it has: {known})")
            setattr(obj, key, p.parse(value) if isinstance(value, str) else p.check(value))
        obj.__init__(mss, now)
        return obj

    def __init__(self, mss: int, now: float = 0.0) -> None:
        """``tcp_congestion_ops.init``: the state of a new connection.

        cwnd starts at the initial window of RFC 6928 §2, ten segments. (RFC 6928 also caps it
        at 14600 bytes when the MSS exceeds 1460; Linux does not, and neither do we, so that a
        jumbo-frame path starts like the kernel it is compared with.) ssthresh starts
        "arbitrarily high" (RFC 5681 §3.1) at Linux's TCP_INFINITE_SSTHRESH.
        """
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss!r}")
        self.mss: int = mss
        self.cwnd: int = INITIAL_WINDOW_SEGMENTS * mss
        self.ssthresh: int = TCP_INFINITE_SSTHRESH
        self.pacing_rate: float | None = None
        self.send_quantum: int | None = None
        """Largest burst (GSO super-segment) in bytes the engine may send at once, or None to
        let the engine choose (about 1 ms at the pacing rate, Linux's tcp_tso_autosize).
        Linux: ``tso_segs_goal`` / ``min_tso_segs``. API 3."""

    # ------------------------------------------------------------------ hooks

    @abstractmethod
    def on_ack(self, ack: AckSample) -> None:
        """``cong_avoid``: grow the window for an ACK that advanced snd_una outside recovery.

        Slow start while ``cwnd < ssthresh``, congestion avoidance otherwise (RFC 5681 §3.1).
        `slow_start` implements the former for subclasses that want the standard one.
        """

    @abstractmethod
    def on_congestion_event(self, ev: CongestionEvent) -> None:
        """``ssthresh`` (with ``set_state(TCP_CA_Recovery)``): fast retransmit is starting.

        Set ``self.ssthresh`` (RFC 5681 §3.2 step 2) and any algorithm state. The engine then
        runs NewReno fast recovery (RFC 6582 §3.2) from that ssthresh; until `on_recovery_exit`
        the window in force is the engine's inflated one, whatever ``cwnd`` says.
        """

    cong_control: ClassVar[Any] = None
    """``tcp_congestion_ops.cong_control``: a controller that defines a method
    ``cong_control(self, ack: AckSample) -> None`` takes the window over entirely (API 3).

    The engine then calls it for every ACK that delivered data or marked losses -- in recovery
    too, with ``ack.in_recovery`` set -- instead of `on_ack`, and the window in force is always
    ``cwnd``: the engine's own recovery windows (PRR, NewReno's inflation) step aside, as Linux's
    tcp_cong_control() skips tcp_cwnd_reduction() when cong_control is set. Loss detection and
    what to resend stay the engine's; `on_congestion_event`, `on_recovery_exit`, `on_rto` and
    `on_undo` still mark the episodes. Model-based algorithms (BBR) need this; window-based ones
    use `on_ack`."""

    def on_idle_restart(self, now: float, idle: float, rto: float) -> None:
        """``cwnd_event(CA_EVENT_TX_START)`` with the restart of RFC 5681 §4.1: the sender is
        about to send new data after ``idle`` seconds with nothing in flight (API 3).

        Called on every such restart, once per idle period (as Linux raises CA_EVENT_TX_START
        whenever it sends with nothing in flight); the window restart below applies only when
        ``idle`` exceeds ``rto``, the retransmission timeout in force. Default, as Linux's
        tcp_cwnd_restart() with tcp_slow_start_after_idle=1: ssthresh keeps the current window's
        worth (max(ssthresh, 3/4 cwnd)), and cwnd halves for every RTO of idleness, not below
        the restart window min(IW, cwnd). CUBIC also moves its epoch on by the idle time; BBR
        restarts from its bandwidth estimate instead.
        """
        restart = min(INITIAL_WINDOW_SEGMENTS * self.mss, self.cwnd)
        self.ssthresh = max(self.ssthresh, self.cwnd * 3 // 4)
        cwnd, left = self.cwnd, idle - rto
        while left > 0 and cwnd > restart and rto > 0:
            cwnd //= 2
            left -= rto
        self.cwnd = max(cwnd, restart)

    def on_recovery_exit(self, now: float, bytes_in_flight: int) -> None:
        """Fast recovery ended with a full acknowledgment (RFC 6582 §3.2 step 3).

        That step offers "(1) min(ssthresh, max(FlightSize, SMSS) + SMSS) or (2) ssthresh".
        Default: option (2), ``cwnd = ssthresh``, which is what Linux does when it leaves
        recovery (tcp_end_cwnd_reduction). The RFC asks an implementation choosing (2) to guard
        against a burst when little is outstanding; that is the engine's sending side. The
        engine passes FlightSize so that an algorithm can choose option (1) instead.
        """
        self.cwnd = self.ssthresh

    def on_rto(self, now: float, bytes_in_flight: int) -> None:
        """``ssthresh`` (with ``set_state(TCP_CA_Loss)``): the retransmission timer expired.

        Default, RFC 5681 §3.1: ssthresh = max(FlightSize / 2, 2*SMSS) (equation 4), and cwnd
        to the loss window, one full-sized segment. The engine calls this on every expiry; see
        `NewReno.on_rto` for the once-per-window rule an algorithm may want on top.
        """
        self.ssthresh = max(bytes_in_flight // 2, 2 * self.mss)
        self.cwnd = self.mss

    def on_undo(self, ev: UndoEvent) -> None:
        """``undo_cwnd``: the reduction of the last loss episode was spurious; take it back.

        Default, as Linux's tcp_undo_cwnd_reduction() with tcp_reno_undo_cwnd():
        cwnd = max(cwnd, prior_cwnd), ssthresh = max(ssthresh, prior_ssthresh). RFC 5682 §4
        and RFC 3708 leave the response open; an algorithm with more state restores it too
        (CUBIC, RFC 9438 §4.9). The engine has already ended the recovery, so the restored
        window is in force at once.
        """
        self.cwnd = max(self.cwnd, ev.prior_cwnd)
        self.ssthresh = max(self.ssthresh, ev.prior_ssthresh)

    def on_mss_change(self, mss: int) -> None:
        """The engine learnt the effective SMSS (after the handshake, or from PMTUD).

        Linux keeps cwnd in segments, so a new MSS changes the window in bytes and keeps its
        segment count. We do the same: cwnd (and ssthresh, unless still "infinite") are scaled
        by new/old MSS. An algorithm with more windows in bytes scales them too (`_rescale`).
        """
        if mss <= 0:
            raise ValueError(f"mss must be positive, got {mss!r}")
        old, self.mss = self.mss, mss
        if old == mss:
            return
        self.cwnd = max(int(self._rescale(self.cwnd, old)), mss)
        if self.ssthresh < TCP_INFINITE_SSTHRESH:
            self.ssthresh = max(int(self._rescale(self.ssthresh, old)), 2 * mss)

    def state(self) -> dict[str, Any]:
        """``get_info``: the algorithm's own variables for traces (numbers, strings or None).

        cwnd, ssthresh and pacing_rate are traced by the engine; return what else explains
        the algorithm's decisions (CUBIC's W_max, K, epoch...).
        """
        return {}

    # ------------------------------------------------------------------ helpers for subclasses

    abc_limit_segments: ClassVar[int | None] = None
    """Per-ACK cap on slow-start growth, in segments (RFC 3465 §2.2's limit L).

    None (the default) follows Linux's tcp_slow_start(): every acknowledged byte counts, however
    many segments one (stretch) ACK covers. 1 gives the standard's own rule, RFC 5681 §3.1
    equation (2), cwnd += min(N, SMSS); 2 gives RFC 3465's L = 2*SMSS, which RFC 5681 mentions
    as experimental."""

    def slow_start(self, acked: int) -> int:
        """RFC 5681 §3.1 slow start, the way Linux's tcp_slow_start() does it in bytes.

        cwnd grows by the bytes acknowledged (capped at L segments when `abc_limit_segments`
        is set) but not past ssthresh; what the ACK acknowledged beyond the point where cwnd
        reached ssthresh is returned, for the caller to spend in congestion avoidance, so that
        one large ACK at the boundary is not half lost.
        """
        if self.abc_limit_segments is not None:
            acked = min(acked, self.abc_limit_segments * self.mss)
        grown = min(self.cwnd + acked, max(self.ssthresh, self.cwnd))
        left = acked - (grown - self.cwnd)
        self.cwnd = grown
        return left

    def in_slow_start(self) -> bool:
        """RFC 5681 §3.1: slow start when cwnd < ssthresh. At equality either is allowed; we
        choose congestion avoidance, like Linux's tcp_in_slow_start()."""
        return self.cwnd < self.ssthresh

    def _rescale(self, window: float, old_mss: int) -> float:
        """A window of ``window`` bytes at ``old_mss``, as the same number of segments now."""
        return window * self.mss / old_mss

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name} mss={self.mss} cwnd={self.cwnd} "
            f"ssthresh={self.ssthresh}>"
        )
