"""Small helpers for running code inside a named network namespace.

Every other module of usertcp uses these to reach the lab: a gate attaches to the sender's
interface from inside the sender namespace, a test opens a kernel TCP socket in the receiver
namespace, a tool runs `tc` or `tshark` in the router namespace.

Why a thread-level `setns` and not `ip netns exec`: `ip netns exec` also unshares the *mount*
namespace and remounts /sys for the target namespace, which hides bpffs pins and anything else
mounted by the caller. `setns(fd, CLONE_NEWNET)` changes only the network namespace, and only of
the calling thread (namespaces are per task in Linux: setns(2) "reassociate thread with a
namespace"), so /run, /sys/fs/bpf and the rest stay as they are, and other threads of the
process are not disturbed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator, Sequence

#: Where iproute2 (and pyroute2) keep the bind mounts that name network namespaces.
NETNS_DIR = "/run/netns"

#: From <sched.h>; os.CLONE_NEWNET exists only from Python 3.12 on.
CLONE_NEWNET = 0x40000000

#: The calling thread's own namespace. /proc/self is the thread-group leader, which is the
#: wrong task as soon as a non-main thread has moved: always use thread-self.
_THREAD_NETNS = "/proc/thread-self/ns/net"


class LabError(RuntimeError):
    """A lab is missing or broken; the message says what to run to fix it."""


def path(name: str) -> str:
    """The file that names network namespace `name` (an nsfs bind mount)."""
    return os.path.join(NETNS_DIR, name)


def exists(name: str) -> bool:
    """True if network namespace `name` exists.

    A plain `os.path.exists` is not enough: a crash between creating the file and bind-mounting
    the namespace onto it leaves an empty regular file behind. A real namespace file lives on
    nsfs, the same filesystem as our own /proc/thread-self/ns/net, so compare the devices.
    """
    try:
        st = os.stat(path(name))
    except (FileNotFoundError, NotADirectoryError):
        return False
    return st.st_dev == os.stat(_THREAD_NETNS).st_dev


_libc = None


def _libc_call(fn_name: str, *args: int) -> None:
    """Call libc `fn_name(*args)` (int arguments, int result), raising OSError on -1."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)  # the already-loaded libc; no ldconfig run
    fn = getattr(_libc, fn_name)
    if fn(*[ctypes.c_int(a) for a in args]) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{fn_name}(CLONE_NEWNET): {os.strerror(err)}")


def _setns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread; os.setns exists from Python 3.12 on."""
    if hasattr(os, "setns"):
        os.setns(fd, CLONE_NEWNET)
    else:
        _libc_call("setns", fd, CLONE_NEWNET)


def _unshare_net() -> None:
    """unshare(CLONE_NEWNET): a fresh network namespace for the calling thread only.

    Allowed in a multi-threaded process (unlike CLONE_NEWUSER or CLONE_FS): unshare(2).
    """
    if hasattr(os, "unshare"):
        os.unshare(CLONE_NEWNET)
    else:
        _libc_call("unshare", CLONE_NEWNET)


def current() -> int:
    """An O_RDONLY fd of the calling thread's network namespace (the caller closes it)."""
    return os.open(_THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)


def _open_target(name: str) -> int:
    try:
        return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(
            f"network namespace {name!r} does not exist ({path(name)} is missing): "
            f"is the lab up? run `usertcp lab up`"
        ) from None


@contextlib.contextmanager
def enter(name: str) -> Iterator[None]:
    """Move the calling thread into network namespace `name`; move it back on exit.

    Sockets (including netlink sockets) created inside the block belong to `name` for their whole
    life, also after the block ends. Other threads are unaffected. Nesting works (each level
    restores the namespace it found). If restoring fails, the thread would be stranded in the
    wrong namespace, so that error propagates rather than being swallowed.

    Inside the block, netlink and /proc/sys/net/... follow the thread's namespace, but two
    views do not: /proc/net is /proc/self/net, the *thread-group leader's* namespace (read
    /proc/thread-self/net/... instead, e.g. .../netstat for TCP counters), and /sys/class/net
    shows the namespace /sys was mounted in (the reason `ip netns exec` remounts it).
    """
    target = _open_target(name)
    try:
        original = current()
    except BaseException:
        os.close(target)
        raise
    try:
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(original)


def iproute(name: str | None):
    """A pyroute2 IPRoute whose netlink socket lives in namespace `name` (None: the caller's).

    The socket is created while this thread is briefly inside `name`; a netlink socket stays in
    the namespace it was made in, so the thread can return at once. `IPRoute(netns=NAME)`
    would fork a helper per socket (risky in a threaded process) and, with its default
    O_CREAT, silently create a missing namespace. Use it as a context manager to close it.
    LabError if the namespace does not exist. pyroute2 is imported here, on first use.
    """
    from pyroute2 import IPRoute

    if name is None:
        return IPRoute()
    with enter(name):
        return IPRoute()


def command(name: str, argv: Sequence[str]) -> list[str]:
    """`argv` prefixed so that it runs in namespace `name`'s network namespace only.

    nsenter --net joins only the network namespace (unlike `ip netns exec`, which also
    remounts /sys), so the command sees the same filesystem as the caller.
    """
    return ["nsenter", f"--net={path(name)}", "--", *argv]
