"""tests/net/test_mcp_allowlist.py - ALLOWLIST sessions through `codeq mcp` (issue 13),
cold and from the warm pool of ALLOWLIST sandboxes (`--warm-pool-allowlist`), against the
test internet (tests/net/internet.py) through `--egress-netns`: no packet leaves the
machine.

Every test runs twice: with no ALLOWLIST pool (each session starts cold, its list given
when its sandbox is made) and with a pool of one (the session takes a sandbox made ahead
with an empty list, which refuses everything, and gives it its own list then). Both must
behave the same: a session reaches what it lists, by name and address, TCP and UDP, and
is refused the rest at once, including what another session lists and has pinned; a
PUBLIC session of the same server reaches all of it, so each refusal is the allowlist's.
Needs root and the built `codeq` (CODEQ_BIN_DIR).
"""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import internet  # noqa: E402
from mcp_client import CODEQ, HostWatch, McpServer, wait_until  # noqa: E402
from test_sandbox_public import PROBE  # noqa: E402

# The probe's functions (tcp, udp, resolve, http), run in a session's kernel.
PROBE_DEFS = PROBE.split("out = {}")[0]
REFUSED = {"ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EACCES"}
NO_NAME = "[Errno -2] Name or service not known"
NO_ADDRESS = "[Errno -5] No address associated with hostname"
ALLOW = ["files.example.test", "198.51.100.7:7"]
# A listener on the echo host's port 80, which the test internet does not serve: a
# refusal of 198.51.100.7:80 is then the filter's, not the host's own reset.
PORT80 = ("import socket\n"
          "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
          "s.bind(('198.51.100.7', 80)); s.listen(16); print('ready', flush=True)\n"
          "while True:\n"
          "    c, _ = s.accept(); c.sendall(b'port80'); c.close()\n")


@pytest.fixture(scope="module")
def net():
    with internet.Internet() as n:
        port80 = subprocess.Popen(["ip", "netns", "exec", n.ns, sys.executable, "-c", PORT80],
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            assert port80.stdout.readline() == "ready\n"
            yield n
        finally:
            port80.kill()
            port80.wait()
            port80.stdout.close()


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


@pytest.fixture(scope="module")
def host():
    watch = HostWatch()
    yield watch
    watch.assert_clean()


@pytest.fixture(scope="module", params=[0, 1], ids=["cold", "pooled"])
def server(request, host, net, egress):
    """A server that allows every mode, with no NONE or PUBLIC pool and an ALLOWLIST
    pool of 0 or 1 (the setting from the environment here, CODEQ_WARM_POOL_ALLOWLIST)."""
    env = dict(os.environ, CODEQ_WARM_POOL_ALLOWLIST=str(request.param))
    srv = McpServer("--warm-pool", "0", "--warm-pool-public", "0",
                    "--network-modes", "NONE,PUBLIC,ALLOWLIST",
                    "--egress-netns", net.netns_path(egress),
                    "--dns", internet.DNS_SERVER[0], env=env)
    host.pids.append(srv.pid)
    srv.initialize()
    srv.pool = request.param
    yield srv
    srv.close()


def preloaded(server, sid):
    """Whether the session's Python kernel came from a pool (numpy imported ahead)."""
    r = server.call("executeCode", {"sessionId": sid,
                                    "code": "import sys\n'numpy' in sys.modules"})
    assert r["isError"] is False, r
    return "True" in str(r["content"])


def start(server, allow=ALLOW):
    """An ALLOWLIST session, warm when the server has an ALLOWLIST pool and cold when
    not. The pool fills in the background: until it has, sessions start cold, and are
    stopped and started again."""
    def one():
        r = server.call("startSession", {"networkMode": "ALLOWLIST", "networkAllow": allow})
        assert r["isError"] is False, r
        s = r["structuredContent"]
        assert s["networkMode"] == "ALLOWLIST" and s["networkAllow"] == allow, s
        if preloaded(server, s["sessionId"]) == bool(server.pool):
            return s["sessionId"]
        assert server.pool, "a session started warm without an ALLOWLIST pool"
        server.call("stopSession", {"sessionId": s["sessionId"]})
        return None
    return wait_until(one, 120, "an ALLOWLIST session from the warm pool", interval=1)


def probe(server, sid, checks):
    code = PROBE_DEFS + f"print(json.dumps({{k: eval(c) for k, c in {list(checks.items())!r}}}))"
    r = server.call("executeCode", {"sessionId": sid, "code": code, "timeout": 120})
    assert r["isError"] is False, r
    return json.loads(r["structuredContent"]["stdout"])


# Refused in an ALLOWLIST session of ALLOW, each for its own reason.
NOT_LISTED = {
    "api_name": "resolve('api.example.test')",           # a name not listed: no answer
    "api_addr": "http('http://203.0.113.10/')",           # an IP literal not listed
    "echo_port80": "tcp('198.51.100.7', 80)",             # a listed address, another port
    "echo_udp_port53": "udp('198.51.100.7', 53, 3)",
    "files_port7": "tcp('198.51.100.80', 7)",             # a listed name, another host's port
    "rebind": "resolve('rebind.example.test')",          # the rebinding name
    "metadata": "tcp('169.254.169.254', 80)",
    "private": "tcp('10.0.0.1', 80)",
    "api_addr6": "http('http://[2001:db8::10]/')",
}


def test_an_allowlist_session_reaches_exactly_its_list(server):
    sid = start(server)
    out = probe(server, sid, {
        "files": "http('http://files.example.test/a')",
        "files_addr": "resolve('files.example.test')",
        "echo_tcp": "tcp('198.51.100.7', 7)",
        "echo_udp": "udp('198.51.100.7', 7)",
        **NOT_LISTED,
    })
    assert out.pop("files") == "ok codeq test internet: 198.51.100.80 files.example.test /a\n"
    assert out.pop("files_addr") == ["198.51.100.80"]
    assert out.pop("echo_tcp") == "ok ping" and out.pop("echo_udp") == "ok ping"
    assert out.pop("api_name") == NO_NAME and out.pop("rebind") == NO_NAME
    for key, got in out.items():
        assert got in REFUSED, (key, got)
    got = server.call("getSession", {"sessionId": sid})["structuredContent"]
    assert got["networkMode"] == "ALLOWLIST" and got["networkAllow"] == ALLOW, got
    listed = server.call("listSessions", {})["structuredContent"]["items"]
    assert [(i["networkMode"], i["networkAllow"]) for i in listed if i["sessionId"] == sid] \
        == [("ALLOWLIST", ALLOW)]
    server.call("stopSession", {"sessionId": sid})


def test_a_public_session_reaches_what_the_allowlist_refused(server):
    # The control: everything refused above that the test internet serves is there.
    r = server.call("startSession", {"networkMode": "PUBLIC"})
    assert r["isError"] is False, r
    sid = r["structuredContent"]["sessionId"]
    out = probe(server, sid, {"api_name": NOT_LISTED["api_name"],
                              "api_addr": NOT_LISTED["api_addr"],
                              "echo_port80": NOT_LISTED["echo_port80"],
                              "api_addr6": NOT_LISTED["api_addr6"],
                              "metadata": NOT_LISTED["metadata"]})
    assert out["api_name"] == ["203.0.113.10"], out
    assert out["api_addr"].startswith("ok codeq test internet: 203.0.113.10 "), out
    assert out["api_addr6"].startswith("ok codeq test internet: 2001:db8::10 "), out
    assert out["echo_port80"] == "ok port80", out
    assert out["metadata"] in REFUSED, out  # refused in every mode
    server.call("stopSession", {"sessionId": sid})


def test_a_listed_rebinding_name_never_answers_loopback(server):
    sid = start(server, ["rebind.example.test"])
    out = probe(server, sid, {"first": "resolve('rebind.example.test')",
                              "second": "resolve('rebind.example.test')"})
    # The internet's DNS server answers a test host once per run (to whichever asked
    # first), 127.0.0.1 after: that answer is stripped, nothing to follow.
    assert out["first"] in (["198.51.100.80"], NO_ADDRESS), out
    assert out["second"] == NO_ADDRESS, out
    server.call("stopSession", {"sessionId": sid})


def test_two_sessions_lists_do_not_leak(server):
    a = start(server)
    b = start(server, ["api.example.test"])
    # Each uses its list first, so that its resolver has pinned the name's address.
    got_a = probe(server, a, {"files": "http('http://files.example.test/')"})
    got_b = probe(server, b, {"api": "http('http://api.example.test/')"})
    assert got_a["files"].startswith("ok codeq test internet: 198.51.100.80 "), got_a
    assert got_b["api"].startswith("ok codeq test internet: 203.0.113.10 "), got_b
    in_a = probe(server, a, {"b_pinned": "http('http://203.0.113.10/')",
                             "b_name": "resolve('api.example.test')",
                             "own": "http('http://198.51.100.80/')"})
    in_b = probe(server, b, {"a_pinned": "http('http://198.51.100.80/')",
                             "a_name": "resolve('files.example.test')",
                             "a_listed": "tcp('198.51.100.7', 7)",
                             "own": "http('http://203.0.113.10/')"})
    assert in_a["b_pinned"] in REFUSED and in_a["b_name"] == NO_NAME, in_a
    assert in_a["own"].startswith("ok codeq test internet: 198.51.100.80 "), in_a
    assert in_b["a_pinned"] in REFUSED and in_b["a_name"] == NO_NAME, in_b
    assert in_b["a_listed"] in REFUSED, in_b
    assert in_b["own"].startswith("ok codeq test internet: 203.0.113.10 "), in_b
    for sid in (a, b):
        server.call("stopSession", {"sessionId": sid})


def test_a_session_with_its_own_limits_starts_cold_with_its_list(server):
    # Own limits: never from the pool, whatever its size; the list holds the same.
    r = server.call("startSession", {"networkMode": "ALLOWLIST", "networkAllow": ALLOW,
                                     "memory": "384M"})
    assert r["isError"] is False, r
    sid = r["structuredContent"]["sessionId"]
    assert not preloaded(server, sid)
    out = probe(server, sid, {"files": "http('http://files.example.test/')",
                              "api_addr": NOT_LISTED["api_addr"]})
    assert out["files"].startswith("ok codeq test internet: 198.51.100.80 "), out
    assert out["api_addr"] in REFUSED, out
    server.call("stopSession", {"sessionId": sid})
