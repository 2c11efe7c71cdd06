"""Shared fixtures for the tests that need root, namespaces and BPF.

A lab plus a gate is built once per module that asks for it, under a name only that module uses,
and removed afterwards — also when a test fails. Set-up first removes leftovers under the same
name, so a crashed earlier run cannot break this one.
"""

from __future__ import annotations

import os
import time

import pytest

from usertcp.demo import tcp_out_rsts  # noqa: F401 - re-exported for the tests
from usertcp.sink import SinkProcess as _Sink

ROOT = os.geteuid() == 0


def _missing_capability() -> str | None:
    if not ROOT:
        return "needs root (network namespaces, packet sockets, BPF)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "needs bcc (Debian python3-bpfcc): run `make setup`"
    return None


def pytest_collection_modifyitems(config, items):
    missing = _missing_capability()
    if missing is None:
        return
    for item in items:
        if "root" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=missing))


def root_test(fn):
    """Mark a test that needs root only (namespaces, no BPF): the `root` marker plus a skip that
    names the missing capability when not root."""
    fn = pytest.mark.root(fn)
    return pytest.mark.skipif(not ROOT, reason="needs root (network namespaces)")(fn)


def make_gated_lab(name: str):
    import netns.lab

    from usertcp import gate

    lab = netns.lab.Lab(name)
    gate.down(lab.ns_sender, lab.sender_if)  # leftovers of a crashed run, by name
    lab.up()
    try:
        gate.up(lab.ns_sender, lab.sender_if)
    except BaseException:
        lab.down()
        raise
    return lab


def teardown_gated_lab(lab) -> None:
    from usertcp import gate

    gate.down(lab.ns_sender, lab.sender_if)
    lab.down()


class SinkProcess(_Sink):
    """The sink in the lab's receiver namespace."""

    def __init__(self, lab, port: int, count: int = 1):
        super().__init__(lab.ns_receiver, port, count)


def kernel_transfer(lab, port: int, data: bytes) -> None:
    """Send `data` with a kernel TCP socket (cubic) from the sender namespace, until EOF."""
    import netns

    from usertcp.demo import kernel_send
    from usertcp.sources import BytesSource

    with netns.enter(lab.ns_sender):
        kernel_send((lab.receiver_ip, port), BytesSource(data), "cubic")


def wait_for(pred, timeout: float = 5.0, step: float = 0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()
