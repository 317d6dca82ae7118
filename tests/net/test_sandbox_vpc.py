"""tests/net/test_sandbox_vpc.py - codeq's "VPC" mode: the operator's `network_private`
(`codeq sandbox --network-private CIDR`) with ALLOWLIST and PUBLIC, against the private
hosts of the test internet (tests/net/internet.py: 10.99.0.10 and 10.99.0.11, fd99::10
and fd99::11, and the name db.internal.test; they exist only in the internet namespace
the test makes, so no packet to a private range goes anywhere else).

ALLOWLIST reaches exactly the private entries and internal names it lists, inside
network_private and on their ports, and nothing else of the private range; a private
entry without network_private is refused before anything runs, and a listed name's
private answers outside network_private are stripped. PUBLIC reaches all of what
network_private opens, and still no other private address. Needs root and the built
`codeq` (CODEQ_BIN_DIR).
"""
import json
import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402
from test_sandbox_allowlist import NO_ADDRESS, NO_NAME, REFUSED  # noqa: E402
from test_sandbox_public import CODEQ, PROBE, gone_after, leftovers  # noqa: E402

(DB4, DB6), (OTHER4, OTHER6) = internet.INTERNAL_HOSTS
NET4, NET6 = internet.INTERNAL_NET
DB = internet.INTERNAL_NAME


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


def sandbox_argv(net, egress, mode, private, allow, *cmd):
    argv = [CODEQ, "sandbox", "--timeout", "30", "--network", mode, "--egress-netns",
            net.netns_path(egress), "--dns", internet.DNS_SERVER[0]]
    for p in private:
        argv += ["--network-private", p]
    for a in allow:
        argv += ["--allow", a]
    return argv + ["--", *cmd]


def probe(net, egress, mode, private, allow, checks):
    argv = sandbox_argv(net, egress, mode, private, allow, "python3", "-c", PROBE,
                        json.dumps(list(checks.items())))
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), time.monotonic() - t0


def test_the_private_hosts_are_there(net, egress):
    # Without codeq in between: so that a refusal below is the filter's, not an absence.
    checks = {"db": f"tcp('{DB4}', 7)", "db_http": f"http('http://{DB4}/')",
              "other": f"tcp('{OTHER4}', 7)", "db6": f"tcp('{DB6}', 7)",
              "other6": f"tcp('{OTHER6}', 7)"}
    r = net.run_in(egress, [sys.executable, "-c", PROBE, json.dumps(list(checks.items()))])
    out = json.loads(r.stdout)
    assert out["db"] == out["other"] == out["db6"] == out["other6"] == "ok ping", out
    assert out["db_http"].startswith(f"ok codeq test internet: {DB4} "), out


def test_private_entries_need_network_private(net, egress):
    for entry, private in ((f"{DB4}:7", []), (f"{DB4}:7", ["10.98.0.0/24"]),
                           (f"[{DB6}]:7", [NET4]), (f"{NET4}", [f"{NET4}:7"])):
        r = subprocess.run(sandbox_argv(net, egress, "allowlist", private, [entry], "true"),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and "network_private" in r.stderr, (entry, private, r.stderr)
    assert gone_after(net, egress) == []


def test_network_private_names_private_ranges_only(net, egress):
    for private, mode, message in (("198.51.100.0/24", "public", "not inside one private range"),
                                   ("10.0.0.0/7", "public", "not inside one private range"),
                                   ("fc00::/6", "allowlist", "not inside one private range"),
                                   ("db.internal.test", "public", "not inside one private range"),
                                   (NET4, "none", "need a network")):
        argv = sandbox_argv(net, egress, mode, [private], [DB] if mode == "allowlist" else [],
                            "true")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 2 and message in r.stderr, (private, mode, r.stderr)


def test_a_private_entry_reaches_what_it_lists(net, egress):
    out, took = probe(net, egress, "allowlist", [NET4, NET6], [f"{DB4}:7", f"[{DB6}]:7"], {
        "listed": f"tcp('{DB4}', 7)",
        "listed6": f"tcp('{DB6}', 7)",
        "other_port": f"http('http://{DB4}/')",
        "other_port6": f"http('http://[{DB6}]/')",
        "other_host": f"tcp('{OTHER4}', 7)",
        "other_host6": f"tcp('{OTHER6}', 7)",
        "outside": "tcp('10.1.2.3', 80)",
        "public": "tcp('198.51.100.7', 7)",
        "name": f"resolve('{DB}')",
    })
    assert out["listed"] == "ok ping" and out["listed6"] == "ok ping", out
    for key in ("other_port", "other_port6", "other_host", "other_host6", "outside", "public"):
        assert out[key] in REFUSED, (key, out[key])
    assert out["name"] == NO_NAME  # not listed: codeq's resolver answers no name
    assert took < 20  # refusals are at once


def test_a_cidr_entry_inside_network_private(net, egress):
    out, _ = probe(net, egress, "allowlist", [NET4], [f"{NET4}:7"], {
        "db": f"tcp('{DB4}', 7)",
        "other": f"tcp('{OTHER4}', 7)",
        "db_http": f"http('http://{DB4}/')",
    })
    assert out["db"] == out["other"] == "ok ping", out
    assert out["db_http"] in REFUSED, out


def test_an_internal_name_reaches_its_private_answer(net, egress):
    out, took = probe(net, egress, "allowlist", [NET4, NET6], [DB], {
        "addr": f"resolve('{DB}')",
        "addr6": f"resolve('{DB}', socket.AF_INET6)",
        "tcp": f"tcp('{DB}', 7)",
        "http": f"http('http://{DB}/x')",
        "tcp6": f"tcp('{DB6}', 7)",
        "other_host": f"tcp('{OTHER4}', 7)",
        "other_host6": f"tcp('{OTHER6}', 7)",
        "public": "tcp('198.51.100.7', 7)",
    })
    assert out["addr"] == [DB4] and out["addr6"] == [DB6], out
    assert out["tcp"] == "ok ping" and out["tcp6"] == "ok ping", out
    # By name over either family (getaddrinfo's order), each pinned.
    assert out["http"] in (f"ok codeq test internet: {a} {DB} /x\n" for a in (DB4, DB6)), out
    for key in ("other_host", "other_host6", "public"):
        assert out[key] in REFUSED, (key, out[key])
    assert took < 20


def test_an_internal_name_takes_the_port_network_private_opens(net, egress):
    out, _ = probe(net, egress, "allowlist", [f"{NET4}:7"], [DB], {
        "addr": f"resolve('{DB}')",
        "tcp": f"tcp('{DB}', 7)",
        "http": f"http('http://{DB}/')",
    })
    assert out["addr"] == [DB4] and out["tcp"] == "ok ping", out
    assert out["http"] in REFUSED, out


def test_private_answers_outside_network_private_are_stripped(net, egress):
    out, took = probe(net, egress, "allowlist", ["10.98.0.0/24"], [DB], {
        "addr": f"resolve('{DB}')",
        "tcp": f"tcp('{DB4}', 7)",
    })
    assert out["addr"] in (NO_ADDRESS, NO_NAME), out
    assert out["tcp"] in REFUSED, out
    assert took < 20


def test_public_reaches_what_network_private_opens(net, egress):
    out, _ = probe(net, egress, "public", [NET4], [], {
        "db": f"tcp('{DB4}', 7)",
        "db_http": f"http('http://{DB4}/')",
        "other": f"tcp('{OTHER4}', 7)",
        "name": f"resolve('{DB}')",
        "db6": f"tcp('{DB6}', 7)",
        "outside": "tcp('10.1.2.3', 80)",
        "public": "tcp('198.51.100.7', 7)",
    })
    assert out["db"] == out["other"] == out["public"] == "ok ping", out
    assert out["db_http"].startswith(f"ok codeq test internet: {DB4} "), out
    assert out["name"] == [DB4], out
    assert out["db6"] in REFUSED and out["outside"] in REFUSED, out


def test_the_filter_keeps_private_pins_apart(net, egress):
    proc = subprocess.Popen(
        sandbox_argv(net, egress, "allowlist", [NET4], [DB, f"{OTHER4}:7", "198.51.100.7:7"],
                     "python3", "-c",
                     f"import socket, time\nsocket.getaddrinfo('{DB}', 80, socket.AF_INET)\n"
                     "print('resolved', flush=True)\ntime.sleep(20)"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "resolved", proc.stderr.read()
        table = next(t for t in leftovers(net, egress) if t.startswith("cq_s"))
        r = net.run_in(egress, ["nft", "-j", "list", "table", "inet", table])
        sets = {}
        for obj in json.loads(r.stdout)["nftables"]:
            if "set" in obj:
                sets[obj["set"]["name"]] = json.dumps(obj["set"].get("elem", []))
        # The private entry and the private answer are in the vpc chain's sets only; the
        # public entry in the allow sets only.
        assert f'"{OTHER4}"' in sets["vpc4p"] and OTHER4 not in sets["allow4p"], sets
        assert DB4 in sets["vpin4"] and DB4 not in sets["pin4"], sets
        assert "198.51.100.7" in sets["allow4p"] and "198.51.100.7" not in sets["vpc4p"], sets
        assert "10.99.0.0" in sets["open4"], sets
        rules = net.run_in(egress, ["nft", "list", "table", "inet", table]).stdout
        forward = rules[rules.index("chain forward"):]
        # The gate into the vpc chain comes after the host's addresses are rejected and
        # before the private ranges are.
        assert forward.index("@host reject") < forward.index("@open4 jump vpc") \
            < forward.index("@refused"), forward
    finally:
        proc.terminate()
        proc.wait()
    assert gone_after(net, egress) == []


# A TCP echo from inside a session: "ok <reply>" or the errno's name.
TCP = """
import errno, socket
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"ping")
            return "ok " + s.recv(16).decode()
    except OSError as e:
        return errno.errorcode.get(e.errno, repr(e))
"""


def test_a_session_in_vpc_mode(net, egress):
    # AgentCore's VPC mode as docs/agentcore.md promises it: ALLOWLIST, with the
    # operator's network_private, limits a session to named destinations inside it.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "e2e"))
    from mcp_client import HostWatch, McpServer, error_code  # noqa: E402
    host = HostWatch()
    srv = McpServer("--warm-pool", "0", "--egress-netns", net.netns_path(egress),
                    "--dns", internet.DNS_SERVER[0], "--network-modes", "NONE,ALLOWLIST",
                    "--network-private", NET4)
    host.pids.append(srv.pid)
    try:
        srv.initialize()
        r = srv.call("startSession", {"networkMode": "ALLOWLIST",
                                      "networkAllow": [f"{NET4}:7", f"{DB}:80"]})
        assert r["isError"] is False, r
        sid = r["structuredContent"]["sessionId"]
        code = TCP + ("import json, urllib.request\n"
                      f"print(json.dumps([tcp('{DB4}', 7), tcp('{OTHER4}', 7), "
                      f"urllib.request.urlopen('http://{DB}/vpc', timeout=5).read().decode(), "
                      f"tcp('{DB4}', 22), tcp('198.51.100.7', 7), tcp('{DB6}', 7)]))")
        r = srv.call("executeCode", {"sessionId": sid, "code": code})
        assert r["isError"] is False, r
        out = json.loads(r["structuredContent"]["stdout"])
        assert out[0] == out[1] == "ok ping", out
        assert out[2] == f"codeq test internet: {DB4} {DB} /vpc\n", out
        for refused in out[3:]:
            assert refused in REFUSED, out
        srv.call("stopSession", {"sessionId": sid})
        r = srv.call("startSession", {"networkMode": "ALLOWLIST",
                                      "networkAllow": ["10.98.0.10:7"]})
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert "network_private" in r["_codeq_error"]["message"]
    finally:
        srv.close()
    host.assert_clean()
