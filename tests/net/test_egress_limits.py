"""tests/net/test_egress_limits.py - a PUBLIC sandbox's byte counters and the
operator's limits (`--network-max-rate`, `--network-max-connections`), against the test
internet (tests/net/internet.py). Needs root and the built `codeq`.
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402
from test_sandbox_public import CODEQ  # noqa: E402

ECHO = internet.ECHO_HOST[0]
HTTP = internet.HTTP_HOSTS["files.example.test"][0]

# Opens N TCP connections to the echo server, each used once, then one more; prints
# what each did (the echo, or the errno's name), and the time the download took.
CONNECT = r"""
import errno, json, socket, sys, time
n = int(sys.argv[1])
held, out = [], []
for i in range(n + 1):
    try:
        s = socket.create_connection((sys.argv[2], 7), timeout=5)
        s.sendall(b"x")
        out.append("ok " + s.recv(1).decode())
        held.append(s)
    except OSError as e:
        out.append(errno.errorcode.get(e.errno, repr(e)))
# A closed connection frees its place.
held.pop(0).close()
time.sleep(0.5)
try:
    s = socket.create_connection((sys.argv[2], 7), timeout=5)
    s.sendall(b"y")
    out.append("ok " + s.recv(1).decode())
except OSError as e:
    out.append(errno.errorcode.get(e.errno, repr(e)))
print(json.dumps(out))
"""

DOWNLOAD = r"""
import json, sys, time, urllib.request
t0 = time.monotonic()
got = len(urllib.request.urlopen(sys.argv[1], timeout=60).read())
print(json.dumps({"bytes": got, "seconds": time.monotonic() - t0}))
"""


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


def run(net, egress, *cmd, limits=(), report=None, network="public"):
    argv = [CODEQ, "sandbox", "--timeout", "60", "--network", network]
    if network != "none":
        argv += ["--egress-netns", net.netns_path(egress)]
    argv += list(limits)
    if report is not None:
        argv += ["--report", report]
    r = subprocess.run(argv + ["--", *cmd], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_report_counts_the_bytes_of_a_download(net, egress, tmp_path):
    size = 3 << 20
    report = str(tmp_path / "report.json")
    out = run(net, egress, "python3", "-c", DOWNLOAD, f"http://{HTTP}/bytes/{size}",
              report=report)
    assert out["bytes"] == size
    with open(report) as f:
        rep = json.load(f)
    # At least the body (plus the headers of every packet); the request went out, and
    # the sandbox's acknowledgements with it: more than nothing, far less than received.
    assert rep["network_bytes_received"] >= size, rep
    assert 0 < rep["network_bytes_sent"] < size // 4, rep
    # Refused traffic is not counted: a refused connection sends nothing past the filter.
    report2 = str(tmp_path / "refused.json")
    out = run(net, egress, "python3", "-c",
              "import socket, json\ntry:\n socket.create_connection(('10.1.2.3', 80), timeout=5)\n"
              "except OSError as e: print(json.dumps(e.errno))", report=report2)
    with open(report2) as f:
        rep = json.load(f)
    assert rep["network_bytes_sent"] == 0 and rep["network_bytes_received"] == 0, rep


def test_no_network_no_counters_in_the_report(net, egress, tmp_path):
    report = str(tmp_path / "report.json")
    run(net, egress, "python3", "-c", "print(1)", report=report, network="none")
    with open(report) as f:
        rep = json.load(f)
    assert "network_bytes_sent" not in rep and "network_bytes_received" not in rep


def test_max_connections_refuses_the_next_at_once(net, egress):
    out = run(net, egress, "python3", "-c", CONNECT, "3", ECHO,
              limits=["--network-max-connections", "3"])
    assert out == ["ok x", "ok x", "ok x", "ECONNREFUSED", "ok y"]
    # Without the limit, the same program gets all its connections.
    out = run(net, egress, "python3", "-c", CONNECT, "3", ECHO)
    assert out == ["ok x", "ok x", "ok x", "ok x", "ok y"]


def test_max_rate_holds_a_download_back(net, egress):
    rate, size = 256 << 10, 3 << 19
    out = run(net, egress, "python3", "-c", DOWNLOAD, f"http://{HTTP}/bytes/{size}",
              limits=["--network-max-rate", "256K"])
    assert out["bytes"] == size
    # A lower bound only: what passes at once (the kernel's bucket starts full, with a
    # second's worth of the rate plus the burst of 64 KiB, see sandbox/egress.c), then
    # the rest at the rate, less some slack.
    assert out["seconds"] >= 0.8 * (size - rate - (64 << 10)) / rate, out
    # Without the limit, the same download works (no bound on its time).
    out = run(net, egress, "python3", "-c", DOWNLOAD, f"http://{HTTP}/bytes/{size}")
    assert out["bytes"] == size


def test_limits_need_a_network(net, egress):
    r = subprocess.run([CODEQ, "sandbox", "--network-max-rate", "1M", "--", "true"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "need a network" in r.stderr
    r = subprocess.run([CODEQ, "sandbox", "--network", "public", "--network-max-connections",
                        "0", "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "--network-max-connections" in r.stderr
