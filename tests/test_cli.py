"""The command line: one clear line for each thing a user can get wrong, and `send` working."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

import pytest

import netns
from usertcp.cli import parse_hostport, parse_size

from conftest import SinkProcess, make_gated_lab, teardown_gated_lab

USERTCP = [sys.executable, "-m", "usertcp"]


def cli(*args, user=None, timeout=60):
    argv = USERTCP + list(args)
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          cwd=os.path.dirname(os.path.dirname(__file__)))


def one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("usertcp: ")
    return lines[0]


def test_parse_size():
    assert parse_size("256MiB") == 256 << 20
    assert parse_size("1G") == 10**9
    assert parse_size("64k") == 64000
    assert parse_size("1000") == 1000
    with pytest.raises(argparse.ArgumentTypeError):
        parse_size("lots")


def test_parse_hostport():
    assert parse_hostport("198.18.2.1:5001") == ("198.18.2.1", 5001)
    for bad in ("198.18.2.1", "host:80", "1.2.3.4:0", "1.2.3.4:99999"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_hostport(bad)


def test_unknown_cc_lists_the_known_ones():
    r = cli("send", "198.18.2.1:5001", "--bytes", "1k", "--cc", "vegasx", "--lab", "nolab")
    if os.geteuid() != 0:
        assert "root" in one_line_error(r)
        return
    msg = one_line_error(r)
    assert "vegasx" in msg and "cubic" in msg and "newreno" in msg


@pytest.mark.root
def test_no_root():
    r = cli("send", "198.18.2.1:5001", "--bytes", "1k", user=65534)
    assert "root" in one_line_error(r)


@pytest.mark.root
def test_no_lab():
    r = cli("send", "198.18.2.1:5001", "--bytes", "1k", "--lab", "nolab")
    msg = one_line_error(r)
    assert "not up" in msg and "usertcp lab up --name nolab" in msg


@pytest.fixture(scope="module")
def lab():
    lab = make_gated_lab("tc1")
    yield lab
    teardown_gated_lab(lab)


@pytest.mark.root
def test_send_through_the_cli(lab):
    sink = SinkProcess(lab, 5301)
    try:
        r = cli("send", f"{lab.receiver_ip}:5301", "--bytes", "3MiB", "--lab", "tc1", "--json")
        report = sink.report()
    finally:
        sink.close()
    assert r.returncode == 0, r.stderr
    assert report["bytes"] == 3 << 20
    from usertcp.sources import PatternSource

    assert report["sha256"] == PatternSource(3 << 20).sha256()


@pytest.mark.root
def test_refused_when_nobody_listens(lab):
    msg = one_line_error(cli("send", f"{lab.receiver_ip}:5399", "--bytes", "1k", "--lab", "tc1", "--quiet"))
    assert "refused" in msg and "sink" in msg


@pytest.mark.root
def test_port_taken(lab):
    with netns.enter(lab.ns_sender):
        s = socket.socket()
        s.bind((lab.sender_ip, 0))
    with s:
        port = s.getsockname()[1]
        msg = one_line_error(cli("send", f"{lab.receiver_ip}:5301", "--bytes", "1k", "--lab", "tc1",
                                 "--sport", str(port), "--quiet"))
    assert f"port {port}" in msg and "taken" in msg


@pytest.mark.root
def test_unreachable_peer(lab):
    # Nobody has this address: the router's ARP for it goes unanswered, our SYNs too.
    msg = one_line_error(cli("send", "198.19.0.77:5001", "--bytes", "1k", "--lab", "tc1", "--quiet", timeout=60))
    assert "unreachable" in msg and "198.19.0.77" in msg


@pytest.mark.root
def test_gate_not_up():
    lab = make_gated_lab("tc2")
    try:
        from usertcp import gate

        gate.down(lab.ns_sender, lab.sender_if)
        msg = one_line_error(cli("send", f"{lab.receiver_ip}:5001", "--bytes", "1k", "--lab", "tc2", "--quiet"))
        assert "gate is not up" in msg and "usertcp gate up" in msg
    finally:
        teardown_gated_lab(lab)


@pytest.mark.root
def test_gate_status_and_lab_status(lab):
    r = cli("gate", "status", "--lab", "tc1", "--json")
    assert r.returncode == 0, r.stderr
    assert '"attached": true' in r.stdout
    r = cli("lab", "status", "--name", "tc1")
    assert r.returncode == 0 and "tc1-snd" in r.stdout
