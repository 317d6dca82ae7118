"""tests/net/test_sandbox_allowlist.py - `codeq sandbox --network allowlist --allow DEST`
against the test internet (tests/net/internet.py), leaving through `--egress-netns`.

An allowlist reaches exactly what it lists - names (through codeq's resolver, which pins
what it answered), `*.suffix`, IP addresses and CIDRs, with and without a port, TCP and
UDP, IPv4 and IPv6 - and everything else is refused at once: names it does not list
(NXDOMAIN), IP literals it does not list, a listed name's traffic to another host's
address, a listed port's neighbours, the rebinding name's second answer, private ranges,
the metadata address, the host's loopback, another sandbox. Asking another resolver
directly (plain DNS here; DoH or DoT to an allowed address alike) learns addresses the
sandbox still cannot reach. Needs root and the built `codeq` (CODEQ_BIN_DIR).
"""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402
from test_sandbox_public import CODEQ, PROBE, gone_after, leftovers  # noqa: E402

# Adds to the public tests' probe: a raw DNS query to a server of the sandbox's choice.
DNSQ = r'''
import random, struct
def dnsq(name, server, qtype=1):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    q += struct.pack(">HH", qtype, 1)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(q, (server, 53))
            data = s.recv(4096)
    except OSError as e:
        return err(e)
    rcode, an = data[3] & 15, struct.unpack(">H", data[6:8])[0]
    off = len(q)  # the answers follow the question, as long as ours
    addrs = []
    for _ in range(an):
        while data[off] and data[off] < 0xc0:
            off += 1 + data[off]
        off += 2 if data[off] >= 0xc0 else 1
        t, _, _, n = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        if t in (1, 28):
            addrs.append(socket.inet_ntop(socket.AF_INET if t == 1 else socket.AF_INET6,
                                          data[off:off + n]))
        off += n
    return [rcode, addrs]
'''
ALLOW_PROBE = PROBE.replace("out = {}", DNSQ + "out = {}")
REFUSED = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES"}
NO_NAME = "[Errno -2] Name or service not known"
NO_ADDRESS = "[Errno -5] No address associated with hostname"


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


def allowlist_argv(net, egress, allow, *cmd):
    argv = [CODEQ, "sandbox", "--timeout", "30", "--network", "allowlist", "--egress-netns",
            net.netns_path(egress), "--dns", internet.DNS_SERVER[0]]
    for a in allow:
        argv += ["--allow", a]
    return argv + ["--", *cmd]


def probe(net, egress, allow, checks):
    argv = allowlist_argv(net, egress, allow, "python3", "-c", ALLOW_PROBE,
                          json.dumps(list(checks.items())))
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), time.monotonic() - t0


def test_names_with_and_without_port(net, egress):
    out, took = probe(net, egress, ["files.example.test", "echo.example.test:7"], {
        "files": "resolve('files.example.test')",
        "files6": "resolve('files.example.test', socket.AF_INET6)",
        "http": "http('http://files.example.test/a')",
        "http6": "http('http://[' + resolve('files.example.test', socket.AF_INET6)[0] + ']/b')",
        "tcp": "tcp('echo.example.test', 7)",
        "udp": "udp(resolve('echo.example.test')[0], 7)",
        "tcp6": "tcp(resolve('echo.example.test', socket.AF_INET6)[0], 7)",
        "udp6": "udp(resolve('echo.example.test', socket.AF_INET6)[0], 7)",
        # Not listed: no name, no address, and not by the back door of a listed name.
        "api": "resolve('api.example.test')",
        "api_addr": "http('http://203.0.113.10/')",
        "api_addr6": "http('http://[2001:db8::10]/')",
        "files_name_to_api": "tcp('203.0.113.10', 80)",
        "example": "resolve('example.test')",
        "outside": "resolve('pypi.org')",
    })
    assert out["files"] == ["198.51.100.80"] and out["files6"] == ["2001:db8::80"]
    assert out["http"] == "ok codeq test internet: 198.51.100.80 files.example.test /a\n"
    assert out["http6"].startswith("ok codeq test internet: 2001:db8::80 ")
    for key in ("tcp", "udp", "tcp6", "udp6"):
        assert out[key] == "ok ping", (key, out[key])
    assert out["api"] == NO_NAME and out["example"] == NO_NAME and out["outside"] == NO_NAME
    for key in ("api_addr", "api_addr6", "files_name_to_api"):
        assert out[key] in REFUSED, (key, out[key])
    assert took < 20  # nothing waited for a timeout


def test_suffix_and_ports_hold(net, egress):
    out, _ = probe(net, egress, ["*.example.test:80"], {
        "files": "http('http://files.example.test/')",
        "api": "http('http://api.example.test/')",
        # echo resolves (it is below example.test) but only port 80 was listed: its TCP
        # and UDP echo on port 7 are refused; so is the suffix itself.
        "echo_addr": "resolve('echo.example.test')",
        "echo_tcp": "tcp('echo.example.test', 7)",
        "echo_udp": "udp(resolve('echo.example.test')[0], 7)",
        "base": "resolve('example.test')",
    })
    assert out["files"].startswith("ok codeq test internet: 198.51.100.80 files.example.test")
    assert out["api"].startswith("ok codeq test internet: 203.0.113.10 api.example.test")
    assert out["echo_addr"] == ["198.51.100.7"]
    assert out["echo_tcp"] in REFUSED and out["echo_udp"] in REFUSED, out
    assert out["base"] == NO_NAME


def test_addresses_and_cidrs(net, egress):
    allow = ["198.51.100.0/24:7", "2001:db8::10", "[2001:db8::7]:7", "203.0.113.10/32"]
    out, took = probe(net, egress, allow, {
        "cidr_tcp": "tcp('198.51.100.7', 7)",
        "cidr_udp": "udp('198.51.100.7', 7)",
        "cidr_other_port": "tcp('198.51.100.80', 80)",
        "ip": "http('http://203.0.113.10/')",
        "ip6": "http('http://[2001:db8::10]/')",
        "ip6_port_tcp": "tcp('2001:db8::7', 7)",
        "ip6_port_udp": "udp('2001:db8::7', 7)",
        "unlisted6": "http('http://[2001:db8::80]/')",
        # No name is listed: codeq's resolver answers none.
        "name": "resolve('files.example.test')",
    })
    assert out["cidr_tcp"] == "ok ping" and out["cidr_udp"] == "ok ping"
    assert out["ip"].startswith("ok codeq test internet: 203.0.113.10 ")
    assert out["ip6"].startswith("ok codeq test internet: 2001:db8::10 ")
    assert out["ip6_port_tcp"] == "ok ping" and out["ip6_port_udp"] == "ok ping"
    assert out["cidr_other_port"] in REFUSED and out["unlisted6"] in REFUSED, out
    assert out["name"] == NO_NAME
    assert took < 20


def test_hostile_destinations_are_refused_at_once(net, egress):
    accepted = []
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 26092))
        listener.listen(1)
        listener.settimeout(0.1)
        out, took = probe(net, egress, ["files.example.test", "rebind.example.test"], {
            "rebind_first": "resolve('rebind.example.test')",
            "rebind_second": "resolve('rebind.example.test')",
            # The first answer had a TTL of 0; its pin lasts as long as the sandbox.
            "pinned_after_ttl0": "http('http://198.51.100.80/')",
            "host_loopback": "tcp('127.0.0.1', 26092)",
            "private": "tcp('10.1.2.3', 80)",
            "private_udp": "udp('192.168.1.1', 53)",
            "cgnat": "tcp('100.64.0.1', 80)",
            "metadata": "tcp('169.254.169.254', 80)",
            "metadata_udp": "udp('169.254.169.254', 53)",
            "ula": "tcp('fd00::1', 80)",
            "other_sandbox": "tcp('100.127.0.6', 8080)",
            "other_sandbox6": "tcp('fd63:6f64:6571:1::2', 80)",
            "resolver_tcp_other_port": "tcp('100.126.255.53', 54)",
            "gateway_tcp": "tcp('100.127.0.1', 22)",
        })
        try:
            accepted.append(listener.accept())
        except socket.timeout:
            pass
    # The rebinding name's first answer is a test host; its second, 127.0.0.1, is
    # stripped: nothing to follow.
    assert out.pop("rebind_first") == ["198.51.100.80"]
    assert out.pop("rebind_second") == NO_ADDRESS
    assert out.pop("pinned_after_ttl0").startswith("ok codeq test internet: 198.51.100.80 ")
    assert accepted == []
    for key, got in out.items():
        assert got in REFUSED, (key, got)
    assert took < 20


def test_another_resolver_teaches_nothing_reachable(net, egress):
    # The DNS server's address is listed (as a DoH or DoT server's would be): the sandbox
    # may ask it anything, and learns addresses it still cannot reach.
    out, _ = probe(net, egress, [internet.DNS_SERVER[0], "files.example.test"], {
        "direct": f"dnsq('api.example.test', '{internet.DNS_SERVER[0]}')",
        "follow": "http('http://203.0.113.10/')",
        "via_codeq": "dnsq('api.example.test', '100.126.255.53')",
        "allowed_via_codeq": "dnsq('files.example.test', '100.126.255.53')",
    })
    assert out["direct"] == [0, ["203.0.113.10"]]
    assert out["follow"] in REFUSED
    assert out["via_codeq"] == [3, []]  # NXDOMAIN
    assert out["allowed_via_codeq"] == [0, ["198.51.100.80"]]


def test_resolver_survives_a_flood_and_serves_others(net, egress):
    # One sandbox floods codeq's resolver with 20000 queries for listed and unlisted
    # names; another resolves meanwhile, and the flooder itself still gets answers.
    flood = ("import socket, struct, random\n"
             "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
             "s.setblocking(False)\n"
             "for i in range(20000):\n"
             "    name = random.choice([b'files', b'x%d' % i, b'echo'])\n"
             "    q = struct.pack('>HHHHHH', i & 0xffff, 0x100, 1, 0, 0, 0)\n"
             "    q += bytes([len(name)]) + name + b'\\x07example\\x04test\\x00' + b'\\x00\\x01\\x00\\x01'\n"
             "    try: s.sendto(q, ('100.126.255.53', 53))\n"
             "    except BlockingIOError: pass\n"
             "import time; time.sleep(4)\n"
             "print(sorted({a[4][0] for a in socket.getaddrinfo('files.example.test', 80, socket.AF_INET)}))\n")
    a = subprocess.Popen(allowlist_argv(net, egress, ["*.example.test"], "python3", "-c", flood),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        out, _ = probe(net, egress, ["files.example.test"],
                       {"files": "resolve('files.example.test')"})
        assert out["files"] == ["198.51.100.80"]
    finally:
        stdout, stderr = a.communicate(timeout=60)
    assert a.returncode == 0, stderr
    assert stdout.strip() == "['198.51.100.80']"


def test_the_filter_holds_the_lists_and_goes_with_the_sandbox(net, egress):
    proc = subprocess.Popen(
        allowlist_argv(net, egress, ["files.example.test:80", "198.51.100.0/24", "[2001:db8::7]:7"],
                       "python3", "-c",
                       "import socket, time\nsocket.getaddrinfo('files.example.test', 80)\n"
                       "print('resolved', flush=True)\ntime.sleep(20)"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "resolved", proc.stderr.read()
        table = next(t for t in leftovers(net, egress) if t.startswith("cq_s"))
        rules = net.run_in(egress, ["nft", "list", "table", "inet", table]).stdout
        # The CIDR entry, the IPv6 address with its port, and the name's pinned answer.
        assert "198.51.100.0/24" in rules and "2001:db8::7 . 7" in rules, rules
        assert "198.51.100.80 . 80" in rules, rules
        assert "dnat ip to" in rules and "th dport 53 accept" in rules
    finally:
        proc.terminate()
        proc.wait()
    assert gone_after(net, egress) == []


def test_bad_allowlists_are_refused(net, egress):
    ns = ["--egress-netns", net.netns_path(egress)]
    bad = [
        (["--network", "allowlist", *ns], "needs at least one --allow DEST"),
        (["--network", "public", *ns, "--allow", "files.example.test"],
         "an allowlist is for network mode ALLOWLIST, not PUBLIC"),
        (["--allow", "files.example.test"], "an allowlist is for network mode ALLOWLIST, not NONE"),
        (["--network", "allowlist", *ns, "--allow", "127.0.0.1"], "127.0.0.1"),
        (["--network", "allowlist", *ns, "--allow", "169.254.169.254:80"], "169.254.169.254"),
        (["--network", "allowlist", *ns, "--allow", "10.0.0.0/8"], "network_private"),
        (["--network", "allowlist", *ns, "--allow", "0x7f.0.0.1"], "0x7f.0.0.1"),
        (["--network", "allowlist", *ns, "--allow", "198.51.100.1/24"], "198.51.100.1/24"),
    ]
    for flags, message in bad:
        r = subprocess.run([CODEQ, "sandbox", *flags, "--", "true"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (flags, r.returncode, r.stderr)
