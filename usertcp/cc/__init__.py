"""Congestion control: the plugin API (`api`), the algorithms, and the registry that loads them.

    from usertcp.cc import load
    cc = load("cubic", mss=1448, now=0.0)          # or "newreno", an entry point, "my_cc.py:MyCC"

Write an algorithm by subclassing `CongestionControl`; see `usertcp.cc.api` for the hooks.
"""

from .api import (
    API_VERSION,
    INITIAL_WINDOW_SEGMENTS,
    TCP_INFINITE_SSTHRESH,
    AckSample,
    CongestionControl,
    CongestionEvent,
    Param,
    UndoEvent,
    param,
)
from .registry import CCLoadError, UnknownCC, available, load, resolve

__all__ = [
    "API_VERSION",
    "INITIAL_WINDOW_SEGMENTS",
    "TCP_INFINITE_SSTHRESH",
    "AckSample",
    "CongestionControl",
    "CongestionEvent",
    "Param",
    "UndoEvent",
    "param",
    "CCLoadError",
    "UnknownCC",
    "available",
    "load",
    "resolve",
]
