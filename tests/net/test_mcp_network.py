"""tests/net/test_mcp_network.py - sessions' network modes through `codeq mcp` (issue 13):
startSession's networkMode and networkAllow, the operator's policy given as flags and
environment, the warm pool of PUBLIC sandboxes, and what getSession shows, against the
test internet (tests/net/internet.py) through `--egress-netns`: no packet leaves the
machine. Needs root and the built `codeq` (CODEQ_BIN_DIR).
"""
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import internet  # noqa: E402
from mcp_client import CODEQ, HostWatch, McpServer, error_code, wait_until  # noqa: E402

# An HTTP GET from inside a session: the body, or the reason it failed.
FETCH = """
import urllib.request
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception as e:
        return "failed: " + repr(getattr(e, "reason", e))
"""


@pytest.fixture(scope="module")
def egress(net):
    return net.add_client()


@pytest.fixture(scope="module")
def host():
    watch = HostWatch()
    yield watch
    watch.assert_clean()


def serve(host, *args, env=None):
    server = McpServer(*args, env=env)
    host.pids.append(server.pid)
    server.initialize()
    return server


@pytest.fixture(scope="module")
def server(host, net, egress):
    """A server whose policy allows NONE and PUBLIC, with a pool of PUBLIC sandboxes;
    the egress namespace and the resolver come from the environment (CODEQ_*), the
    modes from a flag."""
    env = dict(os.environ, CODEQ_EGRESS_NETNS=net.netns_path(egress),
               CODEQ_DNS=internet.DNS_SERVER[0], CODEQ_NETWORK_MODES="NONE")
    srv = serve(host, "--warm-pool", "0", "--warm-pool-public", "1",
                "--network-modes", "NONE,PUBLIC", env=env)
    yield srv
    srv.close()


def start(server, **args):
    r = server.call("startSession", args)
    assert r["isError"] is False, r
    return r["structuredContent"]


def value(server, sid, code):
    r = server.call("executeCode", {"sessionId": sid, "code": FETCH + code})
    assert r["isError"] is False, r
    return r["structuredContent"]["stdout"].strip()


def test_public_session_reaches_the_test_internet(server):
    s = start(server, networkMode="PUBLIC")
    assert s["networkMode"] == "PUBLIC" and s["networkAllow"] == []
    sid = s["sessionId"]
    by_name = value(server, sid, "print(fetch('http://files.example.test/data.csv'))")
    assert by_name == "codeq test internet: 198.51.100.80 files.example.test /data.csv"
    by_addr = value(server, sid, "print(fetch('http://203.0.113.10/x'))")
    assert by_addr.startswith("codeq test internet: 203.0.113.10 ")
    got = server.call("getSession", {"sessionId": sid})["structuredContent"]
    assert got["networkMode"] == "PUBLIC" and got["networkAllow"] == []
    listed = server.call("listSessions", {})["structuredContent"]["items"]
    assert [i["networkMode"] for i in listed if i["sessionId"] == sid] == ["PUBLIC"]
    server.call("stopSession", {"sessionId": sid})


def test_none_session_cannot(server):
    # No networkMode: the policy's default, NONE.
    s = start(server)
    assert s["networkMode"] == "NONE"
    out = value(server, s["sessionId"], "print(fetch('http://203.0.113.10/'))")
    assert out.startswith("failed: "), out
    out = value(server, s["sessionId"], "print(fetch('http://files.example.test/'))")
    assert out.startswith("failed: "), out
    server.call("stopSession", {"sessionId": s["sessionId"]})


def test_requests_beyond_policy_name_the_rule(server):
    r = server.call("startSession", {"networkMode": "ALLOWLIST",
                                     "networkAllow": ["files.example.test"]})
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    assert "network_modes = NONE,PUBLIC" in r["_codeq_error"]["message"]
    r = server.call("startSession", {"networkMode": "SANDBOX"})
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    r = server.call("startSession", {"networkMode": "PUBLIC", "networkAllow": ["10.0.0.0/8"]})
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    assert "only for network mode ALLOWLIST" in r["_codeq_error"]["message"]
    r = server.call("startSession", {"networkAllow": "files.example.test"})
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    assert "networkAllow" in r["_codeq_error"]["message"]


def test_private_allow_entries_need_network_private(host, net, egress):
    srv = serve(host, "--warm-pool", "0", "--egress-netns", net.netns_path(egress),
                "--network-modes", "NONE,PUBLIC,ALLOWLIST", "--network-private", "10.20.0.0/16")
    try:
        r = srv.call("startSession", {"networkMode": "ALLOWLIST",
                                      "networkAllow": ["192.168.1.0/24:443"]})
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert "network_private" in r["_codeq_error"]["message"]
        r = srv.call("startSession", {"networkMode": "ALLOWLIST",
                                      "networkAllow": ["169.254.169.254"]})
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert "refused in every mode" in r["_codeq_error"]["message"]
    finally:
        srv.close()


def test_warm_public_sessions_come_from_the_pool(server):
    # A pooled sandbox's Python kernel has numpy imported already; a cold one has not.
    # The pool fills in the background: the first sessions may start cold.
    def warm():
        s = start(server, networkMode="PUBLIC")
        r = server.call("executeCode", {"sessionId": s["sessionId"],
                                        "code": "import sys\n'numpy' in sys.modules"})
        pooled = "True" in str(r["content"])
        if pooled:
            return s
        server.call("stopSession", {"sessionId": s["sessionId"]})
        return None
    s = wait_until(warm, 90, "a PUBLIC session from the warm pool", interval=1)
    out = value(server, s["sessionId"], "print(fetch('http://api.example.test/'))")
    assert out.startswith("codeq test internet: 203.0.113.10 "), out
    # NONE sessions have no pool here (--warm-pool 0): they start cold.
    n = start(server, networkMode="NONE")
    r = server.call("executeCode", {"sessionId": n["sessionId"],
                                    "code": "import sys\n'numpy' in sys.modules"})
    assert "False" in str(r["content"]), r
    for sid in (s["sessionId"], n["sessionId"]):
        server.call("stopSession", {"sessionId": sid})


def test_network_is_the_operators_choice(host):
    """By default a service lets its clients ask only for NONE: PUBLIC is refused, naming
    the setting that would allow it (and no uplink is made)."""
    srv = serve(host, "--warm-pool", "0", env={k: v for k, v in os.environ.items()
                                               if not k.startswith(("CODEQ_EGRESS", "CODEQ_NETWORK", "CODEQ_DNS"))})
    try:
        r = srv.call("startSession", {"networkMode": "PUBLIC"})
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert "network_modes = NONE" in r["_codeq_error"]["message"], r
    finally:
        srv.close()


def test_bad_settings_are_usage_errors(net, egress):
    import subprocess
    for args in (["--network-modes", "NONE,VPC"], ["--network-private", "8.8.8.0/24"],
                 ["--dns", "resolver"], ["--network-default", "PUBLIC", "--network-modes",
                                         "NONE"]):
        r = subprocess.run([CODEQ, "mcp", "--warm-pool", "0", *args], input="",
                           capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, (args, r.stderr)
        assert "network" in r.stderr or "dns" in r.stderr, (args, r.stderr)
    h = subprocess.run([CODEQ, "mcp", "--help"], capture_output=True, text=True).stdout
    for flag in ("--network-modes", "--network-default", "--network-private",
                 "--network-allow-bounds", "--network-deny", "--network-max-allow",
                 "--network-max-pinned", "--network-max-rate", "--network-max-connections",
                 "--dns", "--egress-netns", "--warm-pool-public", "--warm-pool-allowlist"):
        assert flag in h, flag


def test_codeq_exec_takes_a_mode_within_the_policy(net, egress):
    import subprocess
    base = [CODEQ, "exec", "--egress-netns", net.netns_path(egress),
            "--dns", internet.DNS_SERVER[0]]
    code = FETCH + "print(fetch('http://files.example.test/exec'))"
    r = subprocess.run(base + ["--network", "PUBLIC", "-c", code], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "codeq test internet: 198.51.100.80 files.example.test /exec"
    r = subprocess.run(base + ["-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("failed: "), (r.stdout, r.stderr)
    r = subprocess.run(base + ["--network-modes", "NONE,PUBLIC", "--network", "allowlist",
                               "--allow", "files.example.test", "-c", code],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "network_modes = NONE,PUBLIC" in r.stderr, r.stderr


def test_pip_install_in_a_public_session_is_importable(server):
    """pip reaches the test package index and installs into the session's own user site
    (below its workspace); the kernel, started before, imports it at once. In a NONE
    session the same install fails at once with pip's network error."""
    env = {"PIP_INDEX_URL": internet.PYPI_URL, "PIP_TRUSTED_HOST": internet.PYPI_NAME}
    s = start(server, networkMode="PUBLIC", env=env)
    sid = s["sessionId"]
    assert value(server, sid, "print('kernel up')") == "kernel up"
    r = server.call("executeCommand", {"sessionId": sid,
                                       "command": f"pip install {internet.TEST_PACKAGE}"})
    assert r["isError"] is False and r["structuredContent"]["exitCode"] == 0, r
    assert value(server, sid, "import cqtest_hello\nprint(cqtest_hello.GREETING)") == \
        internet.TEST_GREETING
    where = value(server, sid, "print(cqtest_hello.__file__)")
    assert where.startswith("/workspace/.local/lib/python3"), where
    listed = server.call("listFiles", {"sessionId": sid, "directoryPath": ".local/lib"})
    assert listed["isError"] is False, listed
    server.call("stopSession", {"sessionId": sid})

    offline = start(server, env=env)
    assert offline["networkMode"] == "NONE"
    r = server.call("executeCommand", {"sessionId": offline["sessionId"], "timeout": 60,
                                       "command": f"pip install {internet.TEST_PACKAGE}"})
    sc = r["structuredContent"]
    assert sc["exitCode"] != 0, r
    assert "Failed to establish a new connection" in sc["stdout"] + sc["stderr"], sc
    server.call("stopSession", {"sessionId": offline["sessionId"]})


def test_results_count_the_calls_traffic(server):
    """A session with network reports the bytes its sandbox sent and received during
    each call; a NONE session's results have no such fields."""
    s = start(server, networkMode="PUBLIC")
    sid = s["sessionId"]
    r = server.call("executeCode", {"sessionId": sid, "code": FETCH +
                                    "print(len(fetch('http://files.example.test/bytes/3000000')))"})
    sc = r["structuredContent"]
    assert r["isError"] is False and sc["stdout"].strip() == "3000000", r
    assert sc["networkBytesReceived"] >= 3_000_000, sc
    assert 0 < sc["networkBytesSent"] < 1_000_000, sc
    # A call that sends nothing: zero both ways, and present.
    r = server.call("executeCode", {"sessionId": sid, "code": "1 + 1"})
    sc = r["structuredContent"]
    assert (sc["networkBytesSent"], sc["networkBytesReceived"]) == (0, 0), sc
    r = server.call("executeCommand", {"sessionId": sid, "command":
                                       "python3 -c \"import urllib.request as u; "
                                       "u.urlopen('http://198.51.100.80/bytes/100000').read()\""})
    assert r["structuredContent"]["networkBytesReceived"] >= 100_000, r
    server.call("stopSession", {"sessionId": sid})
    offline = start(server)
    r = server.call("executeCode", {"sessionId": offline["sessionId"], "code": "1 + 1"})
    assert "networkBytesSent" not in r["structuredContent"], r
    server.call("stopSession", {"sessionId": offline["sessionId"]})


def test_the_operators_limits_hold_in_sessions(host, net, egress):
    """network_max_connections from the operator's settings holds in every session of
    the service: the next connection is refused at once, and a closed one frees a place."""
    srv = serve(host, "--warm-pool", "0", "--warm-pool-public", "0",
                "--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0],
                "--network-modes", "NONE,PUBLIC", "--network-max-connections", "2")
    try:
        sid = start(srv, networkMode="PUBLIC")["sessionId"]
        out = value(srv, sid, (
            "import socket\n"
            "def conn():\n"
            "    try:\n"
            "        return socket.create_connection(('198.51.100.7', 7), timeout=5)\n"
            "    except OSError as e:\n"
            "        return e.errno\n"
            "held = [conn(), conn()]\n"
            "third = conn()\n"
            "held[0].close()\n"
            "import time; time.sleep(0.5)\n"
            "again = conn()\n"
            "print([isinstance(h, socket.socket) for h in held], third,"
            " isinstance(again, socket.socket))\n"))
        assert out == "[True, True] 111 True", out  # 111: ECONNREFUSED
        srv.call("stopSession", {"sessionId": sid})
    finally:
        srv.close()
