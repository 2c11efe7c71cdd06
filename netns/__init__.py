"""The lab: network namespaces, veths, addresses and the bottleneck (see netns/lab.py).

The namespace helpers (`enter`, `command`, `exists`, `LabError`) import nothing heavy; `Lab`,
`down`, `status` and `require_up` load pyroute2 (~0.2 s) on first use, so code that only enters namespaces
does not pay for it.
"""

from .ns import NETNS_DIR, LabError, command, enter, exists

__all__ = [
    "NETNS_DIR", "Lab", "LabError", "command", "down", "enter", "exists", "require_up", "status",
]

_LAZY = {"Lab", "down", "require_up", "status"}


def __getattr__(name: str):
    if name in _LAZY:
        from . import lab

        return getattr(lab, name)
    raise AttributeError(f"module 'netns' has no attribute {name!r}")
