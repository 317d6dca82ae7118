"""tests/net/test_network_metrics.py - `codeq_sandbox_network_bytes_total{direction}` of
`codeq mcp --metrics-listen` (the worker core's metrics, docs/operations.md), scraped
with a real Prometheus text parser (Debian's prometheus_client), against the test
internet (tests/net/internet.py) through `--egress-netns`: no packet leaves the machine.

A session with network (PUBLIC, and ALLOWLIST listing the two hosts used) downloads a
body of known size from the test HTTP host and uploads a block to the TCP echo, which
sends it back. The counter must move by exactly what the call's result says it sent and
received (structuredContent networkBytesSent / networkBytesReceived), and these must
cover the payloads in the right direction. Calls that use no network move nothing: one
in the same session before any traffic, and one in a NONE session. Needs root and the
built `codeq` (CODEQ_BIN_DIR).
"""
import os
import re
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import internet  # noqa: E402
from mcp_client import HostWatch, McpServer, wait_until  # noqa: E402

FAMILY = "codeq_sandbox_network_bytes"  # the parser's name: without "_total"
SAMPLE = FAMILY + "_total"
HTTP_HOST = internet.HTTP_HOSTS["files.example.test"][0]
ECHO_HOST = internet.ECHO_HOST[0]
DOWNLOAD = 200_000  # GET /bytes/N answers N bytes
UPLOAD = 50_000  # sent to the TCP echo, which sends it back

TRAFFIC = f"""
import socket, urllib.request
body = urllib.request.urlopen('http://{HTTP_HOST}/bytes/{DOWNLOAD}', timeout=10).read()
with socket.create_connection(('{ECHO_HOST}', 7), timeout=10) as s:
    s.sendall(b'u' * {UPLOAD})
    s.shutdown(socket.SHUT_WR)
    back = b''
    while chunk := s.recv(65536):
        back += chunk
print(len(body), len(back))
"""


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


@pytest.fixture(scope="module")
def host():
    watch = HostWatch()
    yield watch
    watch.assert_clean()


@pytest.fixture(scope="module")
def server(host, net, egress):
    srv = McpServer("--warm-pool", "0", "--warm-pool-public", "0",
                    "--network-modes", "NONE,PUBLIC,ALLOWLIST",
                    "--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0],
                    "--metrics-listen", "127.0.0.1:0")
    host.pids.append(srv.pid)
    srv.initialize()
    found = wait_until(lambda: re.search(r"metrics on port (\d+)", srv.stderr_text()), 30,
                       "the metrics port on stderr")
    srv.metrics_port = int(found.group(1))
    yield srv
    srv.close()


def scrape(server):
    """The family's samples: {direction: bytes}; its type and label names checked."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families[FAMILY]
    assert family.type == "counter", family
    got = {}
    for s in family.samples:
        assert s.name == SAMPLE and set(s.labels) == {"direction"}, s
        got[s.labels["direction"]] = s.value
    # Both children exist from the start, at 0 before any traffic.
    assert set(got) == {"sent", "received"}, got
    return got


def call(server, sid, code):
    r = server.call("executeCode", {"sessionId": sid, "code": code})
    assert r["isError"] is False, r
    return r["structuredContent"]


def moved(before, after):
    return {d: after[d] - before[d] for d in ("sent", "received")}


@pytest.mark.parametrize("mode,allow", [("PUBLIC", None),
                                        ("ALLOWLIST", [HTTP_HOST, f"{ECHO_HOST}:7"])])
def test_counter_moves_by_what_the_call_reports(server, mode, allow):
    args = {"networkMode": mode}
    if allow is not None:
        args["networkAllow"] = allow
    r = server.call("startSession", args)
    assert r["isError"] is False, r
    sid = r["structuredContent"]["sessionId"]
    try:
        # A call that uses no network, in a session that has some: nothing moves.
        before = scrape(server)
        sc = call(server, sid, "1 + 1")
        assert (sc["networkBytesSent"], sc["networkBytesReceived"]) == (0, 0), sc
        assert moved(before, scrape(server)) == {"sent": 0, "received": 0}

        # Twice: each call's share, not the sandbox's total so far.
        for _ in range(2):
            before = scrape(server)
            sc = call(server, sid, TRAFFIC)
            assert sc["stdout"].split() == [str(DOWNLOAD), str(UPLOAD)], sc
            sent, received = sc["networkBytesSent"], sc["networkBytesReceived"]
            # The counter and the result read the same counters of the sandbox's filter.
            assert moved(before, scrape(server)) == {"sent": sent, "received": received}, sc
            # Bytes of IP packets: the payloads and their headers, each way. What went
            # out is the upload, a request, headers and ACKs: far below what came in.
            assert received >= DOWNLOAD + UPLOAD, sc
            assert UPLOAD <= sent < DOWNLOAD, sc
    finally:
        server.call("stopSession", {"sessionId": sid})


def test_calls_without_network_move_nothing(server):
    r = server.call("startSession", {"networkMode": "NONE"})
    assert r["isError"] is False, r
    sid = r["structuredContent"]["sessionId"]
    try:
        before = scrape(server)
        sc = call(server, sid, "import urllib.request\n"
                               "try:\n"
                               f"    urllib.request.urlopen('http://{HTTP_HOST}/', timeout=5)\n"
                               "except OSError as e:\n"
                               "    print('failed', e)\n")
        assert sc["stdout"].startswith("failed"), sc
        assert "networkBytesSent" not in sc and "networkBytesReceived" not in sc, sc
        assert moved(before, scrape(server)) == {"sent": 0, "received": 0}
    finally:
        server.call("stopSession", {"sessionId": sid})



def test_overlapping_calls_count_the_traffic_once(server):
    """Each call reports all of its sandbox's traffic while it ran, also another call's;
    the counter takes each byte once: here, what the call that spans the other saw."""
    r = server.call("startSession", {"networkMode": "PUBLIC"})
    assert r["isError"] is False, r
    sid = r["structuredContent"]["sessionId"]
    try:
        before = scrape(server)
        spanning = server.send_call("executeCommand", {
            "sessionId": sid, "timeout": 120,
            "command": "touch started; while [ ! -e done ]; do sleep 0.05; done"})

        def started():
            r = server.call("listFiles", {"sessionId": sid})
            return "started" in str(r["content"])
        wait_until(started, 60, "the spanning command started", interval=0.1)
        inner = call(server, sid, TRAFFIC)
        assert inner["networkBytesReceived"] >= DOWNLOAD + UPLOAD, inner
        r = server.call("writeFiles", {"sessionId": sid,
                                       "content": [{"path": "done", "text": ""}]})
        assert r["isError"] is False, r
        outer = server.response(spanning)["result"]
        assert outer["isError"] is False, outer
        outer = outer["structuredContent"]
        assert outer["networkBytesReceived"] >= inner["networkBytesReceived"], (outer, inner)
        assert moved(before, scrape(server)) == {"sent": outer["networkBytesSent"],
                                                 "received": outer["networkBytesReceived"]}
    finally:
        server.call("stopSession", {"sessionId": sid})
