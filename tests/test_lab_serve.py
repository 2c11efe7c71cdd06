"""`usertcp serve` in the lab: real clients (curl, wget, wrk) in the receiver namespace download
from the Python stack in the sender namespace, through the gate's passive-open path."""

from __future__ import annotations

import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import make_gated_lab, teardown_gated_lab

pytestmark = pytest.mark.root

PORT = 8080
BIG = 8 << 20


@pytest.fixture(scope="module")
def lab():
    lab = make_gated_lab("sv1")
    yield lab
    teardown_gated_lab(lab)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "index.html").write_bytes(b"<!doctype html><h1>usertcp serve</h1>\n")
    (root / "small.txt").write_bytes(b"x" * 1000)
    return root


@pytest.fixture(scope="module")
def server(lab, site):
    """`usertcp serve` as users start it; stopped with SIGTERM at the end, and its summary read."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "usertcp", "serve", "--lab", lab.name, "--port", str(PORT),
         "--root", str(site), "--quiet", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("usertcp serve: http://"):
        proc.kill()
        pytest.fail(f"server did not start: {line!r} {proc.stderr.read()}")
    url = f"http://{lab.sender_ip}:{PORT}"
    info = {"url": url, "proc": proc}
    yield info
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    info["summary"] = json.loads(out.strip().splitlines()[-1])
    info["returncode"] = proc.returncode
    info["stderr"] = err


def client(lab, *cmd, timeout=60):
    return subprocess.run(["ip", "netns", "exec", lab.ns_receiver, *cmd], capture_output=True,
                          timeout=timeout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_curl_downloads_the_file_intact(lab, site, server, tmp_path):
    out = tmp_path / "big.bin"
    r = client(lab, "curl", "-sS", "--fail", "-o", str(out), f"{server['url']}/big.bin")
    assert r.returncode == 0, r.stderr
    assert sha(out.read_bytes()) == sha((site / "big.bin").read_bytes())


def test_curl_range_and_head(lab, site, server):
    r = client(lab, "curl", "-sS", "--fail", "-r", "1000000-1999999", f"{server['url']}/big.bin")
    assert r.returncode == 0, r.stderr
    assert r.stdout == (site / "big.bin").read_bytes()[1000000:2000000]
    r = client(lab, "curl", "-sS", "--fail", "-I", f"{server['url']}/big.bin")
    head = r.stdout.decode()
    assert r.returncode == 0 and head.startswith("HTTP/1.1 200")
    assert re.search(rf"(?im)^content-length: {BIG}\r$", head) and re.search(r"(?im)^accept-ranges: bytes", head)


def test_curl_reuses_one_connection_for_several_requests(lab, site, server, tmp_path):
    """keep-alive: curl fetches three URLs over one connection (it says so with -v)."""
    r = client(lab, "curl", "-sS", "-v", "--fail",
               "-o", str(tmp_path / "a"), f"{server['url']}/small.txt",
               "-o", str(tmp_path / "b"), f"{server['url']}/index.html",
               "-o", str(tmp_path / "c"), f"{server['url']}/big.bin")
    assert r.returncode == 0, r.stderr
    log = r.stderr.decode()
    assert log.count("Connected to") == 1 and re.search(r"Re-?using existing connection", log), log
    assert (tmp_path / "a").read_bytes() == (site / "small.txt").read_bytes()
    assert (tmp_path / "b").read_bytes() == (site / "index.html").read_bytes()
    assert sha((tmp_path / "c").read_bytes()) == sha((site / "big.bin").read_bytes())


def test_wget_download_and_resume(lab, site, server, tmp_path):
    """wget fetches the file, then resumes a partial copy with a Range request (wget -c)."""
    full = tmp_path / "full.bin"
    r = client(lab, "wget", "-q", "-O", str(full), f"{server['url']}/big.bin")
    assert r.returncode == 0, r.stderr
    assert sha(full.read_bytes()) == sha((site / "big.bin").read_bytes())
    part = tmp_path / "dir"
    part.mkdir()
    (part / "big.bin").write_bytes((site / "big.bin").read_bytes()[:3_000_000])
    r = client(lab, "wget", "-c", "-S", "-P", str(part), f"{server['url']}/big.bin")
    assert r.returncode == 0, r.stderr
    assert b"206 Partial Content" in r.stderr
    assert sha((part / "big.bin").read_bytes()) == sha((site / "big.bin").read_bytes())


def test_wrk_100_connections_20_s_without_errors(lab, server):
    if shutil.which("wrk") is None:
        pytest.fail("wrk is not installed: run tools/bootstrap.sh (Debian package wrk)")
    r = client(lab, "wrk", "-t", "2", "-c", "100", "-d", "20s", "--latency", f"{server['url']}/index.html",
               timeout=120)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    print(out)
    assert requests > 1000, out
    assert "Socket errors" not in out, out
    assert "Non-2xx" not in out, out


def test_server_summary_after_sigterm(server, lab):
    """Stopping the server (SIGTERM) ends it cleanly, and the gate holds no flow or listener of it."""
    from usertcp import gate

    proc = server["proc"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["accepted"] >= 100 and summary["requests"] > 1000
    st = gate.status(lab.ns_sender, lab.sender_if)
    assert st["listeners"] == [] and st["flows"] == []
