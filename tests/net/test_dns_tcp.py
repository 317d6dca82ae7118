"""tests/net/test_dns_tcp.py - codeq's resolver over TCP (RFC 7766), against the test
internet (tests/net/internet.py), leaving through `--egress-netns`.

many.example.test has 100 addresses, an answer past any UDP size codeq takes: over UDP
the sandbox gets TC, its stub asks again over TCP and gets them all (PUBLIC), or the
ones it may reach, pinned, within network_max_pinned (ALLOWLIST). A sandbox that holds
TCP connections open without finishing a query, or opens them as fast as it can, keeps
its own slots and nothing else: another sandbox resolves meanwhile, over UDP and TCP.
TCP port 53 anywhere in the egress namespace but the sandbox's own resolver is refused.
Needs root and the built `codeq` (CODEQ_BIN_DIR).
"""
import json
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import internet  # noqa: E402
from mcp_client import McpServer  # noqa: E402
from test_sandbox_allowlist import REFUSED, allowlist_argv  # noqa: E402
from test_sandbox_public import CODEQ, PROBE, gone_after, leftovers, sandbox_argv  # noqa: E402

MANY = sorted(internet.MANY_HOSTS)

# Adds to the public tests' probe: DNS queries over UDP and over TCP (several on one
# connection), answered as (rcode, TC, [addresses], reply length).
DNS = r'''
import random, struct
def question(name, qtype=1):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    return q + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
def answer(q, data):
    assert data[:2] == q[:2], "another id"
    rcode, an = data[3] & 15, struct.unpack(">H", data[6:8])[0]
    off, addrs = len(q), []
    for _ in range(an):
        while data[off] and data[off] < 0xc0:
            off += 1 + data[off]
        off += 2 if data[off] >= 0xc0 else 1
        t, _, _, n = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if t in (1, 28):
            addrs.append(socket.inet_ntop(socket.AF_INET if t == 1 else socket.AF_INET6, data[off:off + n]))
        off += n
    return [rcode, bool(data[2] & 2), sorted(addrs), len(data)]
def udpq(name, server="100.126.255.53"):
    q = question(name)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(q, (server, 53))
            return answer(q, s.recv(65535))
    except OSError as e:
        return err(e)
def exactly(s, n):
    data = b""
    while len(data) < n:
        more = s.recv(n - len(data))
        if not more:
            raise EOFError("closed")
        data += more
    return data
def tcpq(names, server="100.126.255.53", split=False):
    qs = [question(n) for n in names]
    try:
        with socket.create_connection((server, 53), timeout=5) as s:
            wire = b"".join(struct.pack(">H", len(q)) + q for q in qs)
            if split:  # a byte at a time: partial reads
                for b in wire:
                    s.send(bytes([b]))
            else:  # all at once: pipelined
                s.sendall(wire)
            return [answer(q, exactly(s, struct.unpack(">H", exactly(s, 2))[0])) for q in qs]
    except (OSError, EOFError) as e:
        return err(e) if isinstance(e, OSError) else repr(e)
def getent(name):
    r = subprocess.run(["getent", "ahostsv4", name], capture_output=True, text=True)
    return sorted({line.split()[0] for line in r.stdout.splitlines()}) if r.returncode == 0 else r.returncode
import subprocess
def near(delta):
    """The sandbox's own IPv4 address plus delta (-1: its gateway, +3: the next slot's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("100.126.255.53", 53))
        return socket.inet_ntoa((int.from_bytes(socket.inet_aton(s.getsockname()[0]), "big") + delta).to_bytes(4, "big"))
def near6():
    """The sandbox's gateway's IPv6 address (::1 of its /64)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.connect(("2001:db8::53", 53))
        return s.getsockname()[0].rsplit(":", 1)[0] + ":1"
'''
TCP_PROBE = PROBE.replace("out = {}", DNS + "out = {}")


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


def run(argv, checks):
    r = subprocess.run(argv + ["python3", "-c", TCP_PROBE, json.dumps(list(checks.items()))],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def public(net, egress, checks):
    return run(sandbox_argv(net, egress)[:-1] + ["--"], checks)


def allowlist(net, egress, allow, checks, extra=()):
    argv = allowlist_argv(net, egress, allow)
    return run(argv[:-1] + list(extra) + ["--"], checks)


def test_the_test_server_truncates_over_udp_and_answers_over_tcp(net, egress):
    # The premise: the answer does not fit a UDP reply, from the server itself either.
    server = internet.DNS_SERVER[0]
    out = public(net, egress, {"udp": f"udpq('many.example.test', '{server}')",
                               "tcp": f"tcpq(['many.example.test'], '{server}')"})
    assert out["udp"] == [0, True, [], out["udp"][3]]
    assert out["tcp"][0][:3] == [0, False, MANY] and out["tcp"][0][3] > 1232


def test_public_large_answer_over_tcp(net, egress):
    out = public(net, egress, {
        "udp": "udpq('many.example.test')",
        "tcp": "tcpq(['many.example.test'])",
        "pipelined": "tcpq(['many.example.test', 'files.example.test', 'nope.example.test'])",
        "split": "tcpq(['files.example.test', 'many.example.test'], split=True)",
        "getaddrinfo": "resolve('many.example.test')",
        "getent": "getent('many.example.test')",
        "reach": f"tcp('{internet.MANY_ECHO[1]}', 7)",
    })
    assert out["udp"][:3] == [0, True, []]  # too large for UDP: TC, no records
    assert out["tcp"][0][:3] == [0, False, MANY] and out["tcp"][0][3] > 1232
    assert [a[:3] for a in out["pipelined"]] == [[0, False, MANY],
                                                 [0, False, ["198.51.100.80"]],
                                                 [3, False, []]]
    assert [a[:3] for a in out["split"]] == [[0, False, ["198.51.100.80"]], [0, False, MANY]]
    assert out["getaddrinfo"] == MANY  # glibc asked again over TCP after TC
    assert out["getent"] == MANY
    assert out["reach"] == "ok ping"


def test_allowlist_pins_a_large_answer(net, egress):
    out = allowlist(net, egress, ["many.example.test"], {
        "getaddrinfo": "resolve('many.example.test')",
        "first": f"tcp('{internet.MANY_ECHO[0]}', 7)",
        "last": f"tcp('{internet.MANY_ECHO[1]}', 7)",
        "unlisted": "tcpq(['files.example.test'])",
    })
    assert out["getaddrinfo"] == MANY
    assert out["first"] == "ok ping" and out["last"] == "ok ping"
    assert out["unlisted"][0][:3] == [3, False, []]  # NXDOMAIN over TCP as over UDP


def test_allowlist_pins_within_max_pinned(net, egress):
    # network_max_pinned 40 (an operator's setting: through `codeq mcp`): the answer
    # holds 40 of the addresses, which are reachable; the rest are neither answered
    # nor reachable.
    env = dict(os.environ, CODEQ_WARM_POOL_ALLOWLIST="0")
    srv = McpServer("--warm-pool", "0", "--warm-pool-public", "0",
                    "--network-modes", "NONE,PUBLIC,ALLOWLIST",
                    "--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0],
                    "--network-max-pinned", "40", env=env)
    try:
        srv.initialize()
        r = srv.call("startSession", {"networkMode": "ALLOWLIST",
                                      "networkAllow": ["many.example.test"]})
        assert r["isError"] is False, r
        sid = r["structuredContent"]["sessionId"]
        checks = {"getaddrinfo": "resolve('many.example.test')",
                  "first": f"tcp('{internet.MANY_ECHO[0]}', 7)",
                  "last": f"tcp('{internet.MANY_ECHO[1]}', 7)"}
        code = (TCP_PROBE.split("out = {}")[0] +
                f"print(json.dumps({{k: eval(c) for k, c in {list(checks.items())!r}}}))")
        r = srv.call("executeCode", {"sessionId": sid, "code": code, "timeout": 60})
        assert r["isError"] is False, r
        out = json.loads(r["structuredContent"]["stdout"])
    finally:
        srv.close()
    got = out["getaddrinfo"]
    assert len(got) == 40 and set(got) <= set(MANY), got
    # The test server answers in order: the first 40 are pinned.
    assert internet.MANY_ECHO[0] in got and internet.MANY_ECHO[1] not in got
    assert out["first"] == "ok ping"
    assert out["last"] in REFUSED


# One sandbox holds every TCP slot it has with queries it never finishes (the length
# prefix and one byte), and opens connections as fast as it can for 4 s; its extra
# connections are closed (reset) at once, its held ones after the idle timeout (10 s), never
# before 8 s, not past 20 s.
LORIS = r'''
import socket, time, json
held = []
for i in range(4):
    s = socket.create_connection(("100.126.255.53", 53), timeout=30)
    s.sendall(b"\x00\x20\x12")
    held.append(s)
time.sleep(0.3)
# The fifth is closed at once; the reset can come before connect() returns.
try:
    extra = socket.create_connection(("100.126.255.53", 53), timeout=5)
    extra_closed = extra.recv(16) == b""
except ConnectionResetError:
    extra_closed = True
t0 = time.monotonic()
n = 0
while time.monotonic() - t0 < 4:
    try:
        c = socket.create_connection(("100.126.255.53", 53), timeout=1)
        c.send(b"\x00")
        c.close()
        n += 1
    except OSError:
        pass
closed_after = []
for s in held:
    try:
        closed_after.append(s.recv(16) == b"" and time.monotonic() - t0 + 4.3)
    except OSError as e:
        closed_after.append(repr(e))
print(json.dumps({"extra_closed": extra_closed, "flood": n, "closed_after": closed_after}))
'''


def test_slow_loris_and_a_connection_flood_stop_nobody_else(net, egress):
    a = subprocess.Popen(sandbox_argv(net, egress, "python3", "-c", LORIS),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # its slots held, its flood under way
        assert a.poll() is None, a.communicate()
        out = allowlist(net, egress, ["*.example.test"], {
            "udp": "resolve('files.example.test')",
            "tcp": "tcpq(['many.example.test', 'echo.example.test'])",
            "getaddrinfo": "resolve('many.example.test')",
        })
        assert out["udp"] == ["198.51.100.80"]
        assert [x[:3] for x in out["tcp"]] == [[0, False, MANY], [0, False, ["198.51.100.7"]]]
        assert out["getaddrinfo"] == MANY
    finally:
        stdout, stderr = a.communicate(timeout=60)
    assert a.returncode == 0, stderr
    got = json.loads(stdout)
    assert got["extra_closed"] is True
    assert got["flood"] > 0
    assert all(isinstance(t, float) and 8 < t < 20 for t in got["closed_after"]), got


def test_tcp_53_elsewhere_is_refused(net, egress):
    out = public(net, egress, {
        "resolver": "tcpq(['files.example.test'])",
        # Its own gateway's port 53 is the resolver too (as over UDP).
        "gateway": "tcpq(['files.example.test'], near(-1))",
        "gateway6": "tcp(near6(), 53)",
        "egress_other": "tcp('100.126.255.54', 53)",
        "other_gateway": "tcp(near(3), 53)",
        "gateway_other_port": "tcp(near(-1), 54)",
    })
    assert out.pop("resolver")[0][:3] == [0, False, ["198.51.100.80"]]
    assert out.pop("gateway")[0][:3] == [0, False, ["198.51.100.80"]]
    for key, got in out.items():
        assert got in REFUSED, (key, got)
    assert gone_after(net, egress) == []
