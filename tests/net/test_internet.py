"""tests/net/test_internet.py - the test internet itself (tests/net/internet.py).

Before any network mode is tested against it, it must be shown to be what the tests
assume: its hosts answer over TCP, UDP, DNS and HTTP, on IPv4 and IPv6, from a second
namespace joined by a veth; its DNS server rebinds the name meant to; nothing in it
routes further; and it leaves nothing behind, also when a test fails inside it or it
fails half-way through being built. Needs root (network namespaces); missing root is a
failure, not a skip.
"""
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402

# Run inside a client namespace: every check the hosts must pass, one JSON line out.
CLIENT_CHECKS = r"""
import json, socket, sys, urllib.request
sys.path.insert(0, sys.argv[1])
import internet as net
out = {}
for fam, echo in zip(("v4", "v6"), net.ECHO_HOST):
    af = socket.AF_INET6 if fam == "v6" else socket.AF_INET
    with socket.create_connection((echo, net.ECHO_PORT), timeout=3) as s:
        s.sendall(b"hello tcp " + fam.encode())
        out["tcp_" + fam] = s.recv(100).decode()
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"hello udp " + fam.encode(), (echo, net.ECHO_PORT))
        out["udp_" + fam] = s.recv(100).decode()
for fam, server in zip(("v4", "v6"), net.DNS_SERVER):
    out["dns_" + fam] = {name: [net.dns_query(name, t, server) for t in (1, 28)]
                         for name in ("files.example.test", "API.example.test",
                                      "echo.example.test", "missing.example.test")}
out["rebind"] = [net.dns_query(net.REBIND_NAME, 1, net.DNS_SERVER[0])[1] for _ in range(3)]
out["rebind_v6"] = [net.dns_query(net.REBIND_NAME, 28, net.DNS_SERVER[1])[1] for _ in range(2)]
for fam, qtype in (("v4", 1), ("v6", 28)):
    addr = net.dns_query("api.example.test", qtype, net.DNS_SERVER[0])[1][0]
    host = "[%s]" % addr if ":" in addr else addr
    req = urllib.request.Request("http://%s/data.csv" % host, headers={"Host": "api.example.test"})
    out["http_" + fam] = urllib.request.urlopen(req, timeout=3).read().decode()
print(json.dumps(out))
"""


def _ip(*args):
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def _host_links():
    return sorted(line.split(":")[1].strip() for line in _ip("-o", "link").splitlines())


@pytest.fixture(scope="module", autouse=True)
def _root():
    assert os.geteuid() == 0, "the network tests need root (network namespaces)"


@pytest.fixture(scope="module")
def client(net):
    return net.add_client()


def test_hosts_answer_tcp_udp_dns_http(net, client):
    r = net.run_in(client, [sys.executable, "-c", CLIENT_CHECKS, os.path.dirname(internet.__file__)])
    out = json.loads(r.stdout)
    assert out["tcp_v4"] == "hello tcp v4" and out["tcp_v6"] == "hello tcp v6"
    assert out["udp_v4"] == "hello udp v4" and out["udp_v6"] == "hello udp v6"
    for fam in ("v4", "v6"):
        dns = out["dns_" + fam]
        assert dns["files.example.test"] == [[0, ["198.51.100.80"]], [0, ["2001:db8::80"]]]
        assert dns["API.example.test"] == [[0, ["203.0.113.10"]], [0, ["2001:db8::10"]]]
        assert dns["echo.example.test"] == [[0, ["198.51.100.7"]], [0, ["2001:db8::7"]]]
        assert dns["missing.example.test"] == [[3, []], [3, []]]  # NXDOMAIN
    assert out["rebind"] == [["198.51.100.80"], ["127.0.0.1"], ["127.0.0.1"]]
    assert out["rebind_v6"] == [["2001:db8::80"], ["::1"]]
    assert out["http_v4"] == "codeq test internet: 203.0.113.10 api.example.test /data.csv\n"
    assert out["http_v6"] == "codeq test internet: 2001:db8::10 api.example.test /data.csv\n"


def test_nothing_routes_further(net, client):
    # The internet namespace: loopback and the veths to its clients, no default route.
    links = net.run_in(net.ns, ["ip", "-o", "link"]).stdout.splitlines()
    names = {line.split(":")[1].strip().split("@")[0] for line in links}
    assert "lo" in names and all(n.startswith("cqi") for n in names - {"lo"}), names
    for family in ("-4", "-6"):
        routes = net.run_in(net.ns, ["ip", family, "route"]).stdout
        assert [r.split()[:2] for r in routes.splitlines() if "default" in r] == [["unreachable", "default"]], routes
    # So an address beyond it (here a private one, which exists nowhere in it) fails at
    # once rather than leaving: the internet namespace answers "unreachable".
    probe = ("import errno, socket\n"
             "try:\n socket.create_connection(('10.255.255.1', 80), timeout=3)\n"
             "except OSError as e:\n print(errno.errorcode.get(e.errno, repr(e)))")
    r = net.run_in(client, [sys.executable, "-c", probe])
    assert r.stdout.strip() in ("ENETUNREACH", "EHOSTUNREACH"), r.stdout

def test_two_clients_coexist(net, client):
    second = net.add_client()
    for ns in (client, second):
        r = net.run_in(ns, [sys.executable, os.path.join(os.path.dirname(internet.__file__),
                                                         "internet.py"),
                            "query", "echo.example.test", "A", internet.DNS_SERVER[0]])
        assert json.loads(r.stdout) == {"rcode": 0, "addresses": ["198.51.100.7"]}


def test_teardown_leaves_nothing():
    links_before = _host_links()
    with internet.Internet() as n:
        n.add_client()
        n.add_client()
        server = n.server.pid
        assert len(n.leftovers()) == 3
    assert n.leftovers() == []
    assert not os.path.exists(f"/proc/{server}")
    assert _host_links() == links_before


def test_teardown_after_a_failure_inside():
    n = internet.Internet()
    with pytest.raises(RuntimeError, match="a test failed"):
        with n:
            n.add_client()
            raise RuntimeError("a test failed")
    assert n.leftovers() == []


def test_teardown_after_a_failure_while_building(monkeypatch):
    def broken(self):
        raise RuntimeError("servers broke")

    monkeypatch.setattr(internet.Internet, "_start_servers", broken)
    n = internet.Internet()
    with pytest.raises(RuntimeError, match="servers broke"):
        with n:
            pass
    assert n.leftovers() == []


def test_sweep_removes_what_a_killed_run_left():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{internet.PREFIX}{dead.pid}-abcdef-inet"
    _ip("netns", "add", stale)
    try:
        assert stale in internet.sweep()
        assert stale not in _ip("netns", "list")
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
