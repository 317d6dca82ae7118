"""tests/net/test_sandbox_public.py - `codeq sandbox --network public` against the test
internet (tests/net/internet.py), leaving through `--egress-netns`.

What must work works from inside a sandbox (TCP, UDP, DNS and HTTP to the test hosts, by
name and address, IPv4 and IPv6); what must not is refused at once, never a hang: private
ranges and ULAs, the metadata address, the egress namespace itself and the sandbox's
gateway, the host's own addresses and loopback listeners, another sandbox, inbound
connections, NAT64, 6to4 and Teredo addresses, raw sockets. (That nothing is left behind in the egress namespace, also after the
supervisor is killed with SIGKILL: tests/net/test_egress_teardown.py.) Needs root and the built `codeq` (CODEQ_BIN_DIR).
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

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODEQ = os.path.join(os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin"),
                     "codeq")

# Run inside a sandbox: `python3 -c PROBE JSON` tries each check and prints one JSON
# object: "ok <reply>" or the errno's name.
PROBE = r"""
import errno, json, socket, sys, urllib.request
def err(e):
    return errno.errorcode.get(e.errno, repr(e)) if getattr(e, "errno", None) else repr(e)
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"ping")
            return "ok " + s.recv(16).decode()
    except OSError as e:
        return err(e)
def udp(host, port, timeout=5):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, port))
            s.send(b"ping")
            return "ok " + s.recv(16).decode()
    except OSError as e:
        return err(e)
def resolve(name, family=socket.AF_INET):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, family)})
    except OSError as e:
        return str(e)
def http(url):
    try:
        return "ok " + urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError as e:
        return err(getattr(e, "reason", e))
def raw():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        return "ok"
    except OSError as e:
        return err(e)
out = {}
for key, call in json.loads(sys.argv[1]):
    out[key] = eval(call)
print(json.dumps(out))
"""


def _host_ipv4():
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]


@pytest.fixture(scope="module")
def egress(net):
    """The egress namespace: a client of the test internet, its only way out."""
    return net.add_client()


def sandbox_argv(net, egress, *cmd, dns=True):
    argv = [CODEQ, "sandbox", "--timeout", "30", "--network", "public",
            "--egress-netns", net.netns_path(egress)]
    if dns:
        argv += ["--dns", internet.DNS_SERVER[0]]
    return argv + ["--", *cmd]


def probe(net, egress, checks):
    argv = sandbox_argv(net, egress, "python3", "-c", PROBE, json.dumps(list(checks.items())))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def leftovers(net, egress):
    tables = net.run_in(egress, ["nft", "list", "tables"]).stdout
    links = net.run_in(egress, ["ip", "-o", "link"]).stdout
    return ([t for t in tables.split() if t.startswith("cq_")] +
            [line.split(":")[1].strip() for line in links.splitlines() if ": cqe" in line])


def gone_after(net, egress, timeout=10):
    """What a finished sandbox left in the egress namespace, once the kernel had time to
    finish: its table is deleted before codeq returns (so none may be left at once), its
    link goes with its network namespace, which the kernel cleans up asynchronously a
    moment later (docs/security.md), so that is polled for, with a bound."""
    tables = [t for t in leftovers(net, egress) if t.startswith("cq_")]
    assert tables == [], f"tables left when codeq returned: {tables}"
    deadline = time.monotonic() + timeout
    left = leftovers(net, egress)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers(net, egress)
    return left


def test_public_reaches_the_test_hosts(net, egress):
    echo4, echo6 = internet.ECHO_HOST
    out = probe(net, egress, {
        "tcp": f"tcp('{echo4}', 7)",
        "udp": f"udp('{echo4}', 7)",
        "tcp6": f"tcp('{echo6}', 7)",
        "udp6": f"udp('{echo6}', 7)",
        "files6": "resolve('files.example.test', socket.AF_INET6)",
        "http6": "http('http://[2001:db8::10]/')",
        "files": "resolve('files.example.test')",
        "api": "resolve('api.example.test')",
        "http_name": "http('http://files.example.test/report.csv')",
        "http_addr": "http('http://203.0.113.10/')",
    })
    assert out["tcp"] == "ok ping" and out["udp"] == "ok ping"
    assert out["tcp6"] == "ok ping" and out["udp6"] == "ok ping"
    assert out["files6"] == ["2001:db8::80"]
    assert out["http6"].startswith("ok codeq test internet: 2001:db8::10 ")
    assert out["files"] == ["198.51.100.80"] and out["api"] == ["203.0.113.10"]
    assert out["http_name"] == "ok codeq test internet: 198.51.100.80 files.example.test /report.csv\n"
    assert out["http_addr"].startswith("ok codeq test internet: 203.0.113.10 ")


def test_public_refuses_what_is_not_public(net, egress):
    (gw4, _), (egress4, egress6) = internet.link_addresses(0)
    checks = {
        "10/8": "tcp('10.1.2.3', 80)",
        "172.16/12": "tcp('172.16.0.1', 5432)",
        "192.168/16": "tcp('192.168.1.1', 80)",
        "100.64/10": "tcp('100.64.0.1', 80)",
        "metadata": "tcp('169.254.169.254', 80)",
        "metadata_udp": "udp('169.254.169.254', 53)",
        "private_udp": "udp('10.0.0.1', 53)",
        "egress_itself": f"tcp('{egress4}', 22)",
        "egress_itself_udp": f"udp('{egress4}', 53)",
        "gateway": "tcp('100.127.0.1', 54)",  # its port 53 is the resolver: test_dns_tcp.py
        "broadcast": "udp('255.255.255.255', 67)",
        "ula": "tcp('fd00::1', 80)",
        "ula_udp": "udp('fd12:3456::1', 53)",
        "other_sandbox6": "tcp('fd63:6f64:6571:1::2', 80)",
        "gateway6": "tcp('fd63:6f64:6571:0::1', 53)",
        "egress_itself6": f"tcp('{egress6}', 22)",
        "nat64_private": "tcp('64:ff9b::a00:1', 80)",
        "nat64_metadata": "tcp('64:ff9b::a9fe:a9fe', 80)",
        "6to4": "tcp('2002:a00:1::1', 80)",
        "teredo": "tcp('2001::1', 80)",
        "mapped_private": "tcp('::ffff:10.0.0.1', 80)",
        "raw": "raw()",
    }
    for i, addr in enumerate(_host_ipv4()):
        checks[f"host{i}"] = f"tcp('{addr}', 22)"
    t0 = time.monotonic()
    out = probe(net, egress, checks)
    refused = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES", "EPERM"}
    for key, got in out.items():
        assert got in refused, f"{key}: {got}"
    assert out["raw"] == "EPERM"
    # Refused at once: nothing waited for a timeout (5 s each).
    assert time.monotonic() - t0 < 10
    # Multicast stays on the sandbox's link, where the egress namespace drops it (no
    # ICMP error is ever sent for multicast, so the sender only sees no answer).
    silent = probe(net, egress, {"m": "udp('224.0.0.251', 5353, 1)", "m6": "udp('ff0e::1', 5353, 1)"})
    assert silent == {"m": "TimeoutError('timed out')", "m6": "TimeoutError('timed out')"}


def test_host_loopback_and_the_fleets_ports_are_out_of_reach(net, egress):
    # A listener on the host's loopback, on the port the fleet's Kafka uses in tests.
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 26092))
        listener.listen(1)
        out = probe(net, egress, {"kafka": "tcp('127.0.0.1', 26092)",
                                  "redis": "tcp('127.0.0.1', 26379)"})
    assert out == {"kafka": "ECONNREFUSED", "redis": "ECONNREFUSED"}


def test_a_rebinding_name_reaches_nothing_of_the_host(net, egress):
    # rebind.example.test answers a test host first, then 127.0.0.1: codeq's resolver
    # strips the second answer (a name of the internet never resolves to an address the
    # sandbox may not reach), and a sandbox that connects to 127.0.0.1 anyway reaches
    # its own loopback, never the host's listener.
    accepted = []
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 26093))
        listener.listen(1)
        listener.settimeout(0.1)
        out = probe(net, egress, {
            "first": "resolve('rebind.example.test')",
            "second": "resolve('rebind.example.test')",
            "follow": "tcp('127.0.0.1', 26093)",
        })
        try:
            accepted.append(listener.accept())
        except socket.timeout:
            pass
    assert out["first"] == ["198.51.100.80"]
    assert out["second"] == "[Errno -5] No address associated with hostname"
    assert out["follow"] == "ECONNREFUSED" and accepted == []


def test_names_resolve_through_codeqs_resolver(net, egress):
    # The sandbox's resolv.conf names codeq's resolver, never the upstream (--dns); the
    # resolver answers on the sandbox's gateway (UDP here, TCP in test_dns_tcp.py; its
    # other ports are refused at once) and asks the upstream from the egress namespace.
    out = probe(net, egress, {
        "conf": "open('/etc/resolv.conf').read().split()[:2]",
        "files": "resolve('files.example.test')",
        "missing": "resolve('nowhere.example.test')",
        "tcp54": "tcp('100.126.255.53', 54)",
    })
    assert out["conf"] == ["nameserver", "100.126.255.53"]
    assert out["files"] == ["198.51.100.80"]
    assert out["missing"] == "[Errno -2] Name or service not known"
    assert out["tcp54"] == "ECONNREFUSED"
    # An upstream that does not answer (nothing listens on the echo host's port 53):
    # SERVFAIL at once, not a hang.
    argv = [CODEQ, "sandbox", "--timeout", "30", "--network", "public", "--egress-netns",
            net.netns_path(egress), "--dns", internet.ECHO_HOST[0], "--", "python3", "-c",
            PROBE, json.dumps([["files", "resolve('files.example.test')"]])]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"] == "[Errno -3] Temporary failure in name resolution"
    assert time.monotonic() - t0 < 4


def test_host_addresses_are_in_the_filter(net, egress):
    # The host is not routable from this egress namespace at all, so show the rule
    # itself: while a sandbox runs, its table refuses the host's own addresses.
    proc = subprocess.Popen(sandbox_argv(net, egress, "sleep", "20"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        # (wait for its table: links of earlier sandboxes may still be going away)
        while (not any(t.startswith("cq_s") for t in leftovers(net, egress))
               and time.monotonic() < deadline):
            time.sleep(0.05)
        table = next(t for t in leftovers(net, egress) if t.startswith("cq_s"))
        rules = net.run_in(egress, ["nft", "list", "table", "inet", table]).stdout
        for addr in _host_ipv4():
            assert addr in rules, rules
        assert "169.254.0.0/16" in rules and "10.0.0.0/8" in rules
    finally:
        proc.terminate()  # codeq destroys the sandbox on SIGTERM
        proc.wait()


def test_sandboxes_cannot_reach_each_other_nor_be_reached(net, egress):
    server = (
        "import socket, sys, time\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 8080)); s.listen(5)\n"
        "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(('198.51.100.7', 7))\n"
        "print(u.getsockname()[0], flush=True)\n"
        "s.settimeout(20)\n"
        "try:\n c, _ = s.accept(); print('accepted', flush=True)\n"
        "except OSError: pass\n")
    a = subprocess.Popen(sandbox_argv(net, egress, "python3", "-c", server),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = a.stdout.readline().strip()
        assert address.startswith("100.127."), (address, a.stderr.read() if a.poll() else "")
        out = probe(net, egress, {"other_sandbox": f"tcp('{address}', 8080)"})
        assert out["other_sandbox"] in ("ECONNREFUSED", "EHOSTUNREACH"), out
        # Inbound, from the egress namespace and from the internet: never accepted.
        for ns in (egress, net.ns):
            r = net.run_in(ns, [sys.executable, "-c",
                                "import socket\ntry:\n socket.create_connection("
                                f"('{address}', 8080), timeout=1); print('connected')\n"
                                "except OSError as e: print('refused', e)"])
            assert r.stdout.startswith("refused"), (ns, r.stdout)
    finally:
        a.terminate()
        rest = a.communicate()[0]
    assert "accepted" not in rest


def test_code_cannot_rewire_its_own_link(net, egress):
    """Sandboxed code has no capabilities: it cannot change its addresses, routes or
    link. It may bind a socket to a device (SO_BINDTODEVICE needs no privilege on this
    kernel), but eth0 is its only way out and leads to the filter, which sits in the
    egress namespace: a bound socket is refused like any other."""
    script = (
        "import errno, socket, subprocess\n"
        "s = socket.socket()\n"
        "s.settimeout(5)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n"
        "for dest in (('169.254.169.254', 80), ('10.0.0.1', 80)):\n"
        "    try:\n"
        "        s.connect(dest); print('connected')\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode.get(e.errno, repr(e)))\n"
        "    s = socket.socket(); s.settimeout(5)\n"
        "    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n"
        "for cmd in (['ip', 'route', 'add', '10.0.0.0/8', 'dev', 'eth0'],\n"
        "            ['ip', 'addr', 'add', '203.0.113.200/32', 'dev', 'eth0'],\n"
        "            ['ip', 'route', 'replace', 'default', 'dev', 'eth0'],\n"
        "            ['ip', 'link', 'set', 'eth0', 'down']):\n"
        "    r = subprocess.run(cmd, capture_output=True, text=True)\n"
        "    print(r.returncode, r.stderr.strip())\n"
        "print(subprocess.run(['ip', '-4', 'route'], capture_output=True, text=True).stdout)\n")
    r = subprocess.run(sandbox_argv(net, egress, "python3", "-c", script), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] in ("ECONNREFUSED", "EHOSTUNREACH") and lines[1] == lines[0], r.stdout
    for line in lines[2:6]:
        assert line.startswith("2 ") and "Operation not permitted" in line, r.stdout
    assert "10.0.0.0/8" not in r.stdout and "default via 100.127." in r.stdout, r.stdout


def test_none_is_still_loopback_only_and_bad_options_are_refused(net, egress):
    r = subprocess.run([CODEQ, "sandbox", "--network", "none", "--", "python3", "-c", PROBE,
                        json.dumps([["tcp", "tcp('198.51.100.7', 7)"]])],
                       capture_output=True, text=True, timeout=60)
    assert json.loads(r.stdout) == {"tcp": "ENETUNREACH"}
    bad = [
        (["--network", "public", "--egress-netns", net.netns_path(egress), "--dns", "224.0.0.1"],
         "resolver 224.0.0.1 is a multicast address"),
        (["--network", "public", "--egress-netns", net.netns_path(egress), "--dns", "dns.test"],
         "is not an IP address"),
        (["--network", "allowlist"], "needs at least one --allow DEST"),
        (["--network", "vpc"], "'vpc' is not NONE, PUBLIC or ALLOWLIST"),
        (["--egress-netns", net.netns_path(egress)], "for network modes PUBLIC and ALLOWLIST, not NONE"),
    ]
    for flags, message in bad:
        r = subprocess.run([CODEQ, "sandbox", *flags, "--", "true"], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (flags, r.returncode, r.stderr)
    r = subprocess.run([CODEQ, "sandbox", "--network", "public", "--egress-netns", "/tmp", "--",
                        "true"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 125 and "/tmp is not a network namespace" in r.stderr, r.stderr
    # Never the host's own namespace: codeq would turn on forwarding and add rules there.
    host_rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    r = subprocess.run([CODEQ, "sandbox", "--network", "public", "--egress-netns",
                        f"/proc/{os.getpid()}/ns/net", "--", "true"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 125 and "codeq's own network namespace" in r.stderr, r.stderr
    assert subprocess.run(["nft", "list", "ruleset"], capture_output=True,
                          text=True).stdout == host_rules
