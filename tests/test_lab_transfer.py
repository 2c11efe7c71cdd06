"""Real transfers in the lab: the Python sender, through the gate, to the kernel's TCP."""

from __future__ import annotations

import hashlib

import pytest

import netns
from usertcp import gate
from usertcp.sender import send
from usertcp.sources import FileSource, PatternSource

from conftest import SinkProcess, kernel_transfer, make_gated_lab, tcp_out_rsts, teardown_gated_lab

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def lab():
    lab = make_gated_lab("tx1")
    yield lab
    teardown_gated_lab(lab)


def verdicts(lab):
    return gate.status(lab.ns_sender, lab.sender_if)["verdicts"]


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


def transfer(lab, port, src, cc, **engine):
    """Send `src` with the Python stack to a fresh sink; returns (SendResult, sink report)."""
    sink = SinkProcess(lab, port)
    try:
        with netns.enter(lab.ns_sender):
            result = send((lab.receiver_ip, port), src, cc, **engine)
        return result, sink.report()
    finally:
        sink.close()


def test_256_mib_through_the_gate_matches_sha256(lab):
    src = PatternSource(256 << 20, seed=7)
    before = verdicts(lab)
    rsts = tcp_out_rsts(lab.ns_sender)
    result, report = transfer(lab, 5101, src, "cubic")
    assert result.conn.error is None
    assert report["bytes"] == src.size
    assert report["sha256"] == src.sha256()
    d = delta(verdicts(lab), before)
    assert d["pass_flow"] > 0 and d["in_owned"] > 0
    for reason in ("drop_no_flow", "drop_not_owner", "drop_window", "drop_flags", "drop_ack", "drop_malformed"):
        assert d[reason] == 0, (reason, d)
    # The kernel never answered the flow's packets with RST: it never saw them.
    assert tcp_out_rsts(lab.ns_sender) == rsts
    assert result.send_errors == 0
    # The flow is gone from the gate after the transfer.
    assert gate.status(lab.ns_sender, lab.sender_if)["flows"] == []
    # References, not bytes: the send queue stayed tiny while megabytes were in flight.
    assert result.conn.scoreboard.peak_memory < 256 * 1024


def test_file_source(lab, tmp_path):
    path = tmp_path / "payload.bin"
    data = hashlib.sha256(b"seed").digest() * 200_000  # 6.4 MB
    path.write_bytes(data)
    src = FileSource(path)
    try:
        result, report = transfer(lab, 5102, src, "newreno")
    finally:
        src.close()
    assert result.conn.error is None
    assert report["sha256"] == hashlib.sha256(data).hexdigest()


def test_ecn_and_pacing_with_the_kernel_receiver(lab):
    """The kernel (net.ipv4.tcp_ecn=2: accept when asked) agrees to ECN in its SYN-ACK; our
    ECT(0) data, paced at Linux's default rate, passes the gate and arrives intact."""
    src = PatternSource(16 << 20, seed=5)
    result, report = transfer(lab, 5103, src, "cubic", ecn=True, pacing=True)
    assert result.conn.error is None and result.conn.ecn_ok
    assert result.conn.pacer.sends > 0
    assert report["sha256"] == src.sha256()


def test_kernel_tcp_on_the_same_interface_is_untouched(lab):
    data = PatternSource(20 << 20, seed=3).read(0, 1 << 20).tobytes() * 20
    sink = SinkProcess(lab, 5103)
    before = verdicts(lab)
    try:
        kernel_transfer(lab, 5103, data)
        report = sink.report()
    finally:
        sink.close()
    assert report["sha256"] == hashlib.sha256(data).hexdigest()
    d = delta(verdicts(lab), before)
    assert d["pass_kernel"] > 0
    assert all(v == 0 for k, v in d.items() if k.startswith("drop_")), d
