"""tests/net/test_uplink.py - network mode PUBLIC without --egress-netns: codeq's own
egress namespace, joined to the host's network by pasta (sandbox/uplink.c).

So that no packet leaves this machine, codeq runs here inside a client namespace of the
test internet (tests/net/internet.py), entered with nsenter (which, unlike `ip netns
exec`, keeps the host's /sys and with it the cgroups): that namespace is "the host"
whose network pasta lends the sandboxes. What must work works (test hosts by name and
address, IPv4 and IPv6), the host's own addresses and the usual ranges are refused, and
pasta and the namespace's keeper end with codeq, also when codeq is killed with SIGKILL.
Needs root, pasta (Debian package passt) and the built `codeq` (CODEQ_BIN_DIR).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODEQ = os.path.join(os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin"),
                     "codeq")

PROBE = r"""
import errno, json, socket, sys, urllib.request
def tcp(host, port):
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"ping")
            return "ok " + s.recv(16).decode()
    except OSError as e:
        return errno.errorcode.get(e.errno, repr(e))
def http(url):
    try:
        return "ok " + urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError as e:
        return repr(e)
print(json.dumps({k: eval(v) for k, v in json.loads(sys.argv[1]).items()}))
"""


@pytest.fixture(scope="module", autouse=True)
def _preconditions():
    assert os.geteuid() == 0, "the network tests need root"
    assert os.access(CODEQ, os.X_OK), f"{CODEQ} is not built"
    assert os.access("/usr/bin/pasta", os.X_OK), "pasta (Debian package passt) is missing"


@pytest.fixture(scope="module")
def host(net):
    """A client namespace of the test internet, standing in for the host."""
    return net.add_client()


def codeq_in(net, ns, *args):
    return ["nsenter", f"--net={net.netns_path(ns)}", CODEQ, "sandbox", "--timeout", "30",
            "--network", "public", "--dns", internet.DNS_SERVER[0], *args]


def uplink_processes(codeq_pid):
    """pids of the guard, keeper and pasta of one codeq process (its descendants that
    are not sandboxes)."""
    table = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if fields[0] != "Z":
                table[int(pid)] = (int(fields[1]), cmd)
    guards = [p for p, (pp, _) in table.items() if pp == codeq_pid and
              not table[p][1].endswith("codeq-sandbox-init")]
    found = set(guards)
    for g in guards:
        found |= {p for p, (pp, cmd) in table.items() if pp == g}
    return found, {p: table[p][1] for p in found}


def running(pid):
    """Whether pid is a process that has not ended (a zombie has ended). It may end
    between any two looks at /proc: then it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # ENOENT, or ESRCH when it ends while the file is read
        return False


def wait_gone(pids, timeout=10):
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if running(p)}
        time.sleep(0.05)
    return alive


def test_public_without_an_egress_namespace_goes_through_pasta(net, host):
    (_, _), (host4, host6) = internet.link_addresses(int(host.rsplit("-c", 1)[1]))
    checks = {
        "name": "http('http://files.example.test/via-pasta')",
        "v4": f"tcp('{internet.ECHO_HOST[0]}', 7)",
        "v6": f"tcp('{internet.ECHO_HOST[1]}', 7)",
        "host4": f"tcp('{host4}', 22)",
        "host6": f"tcp('{host6}', 22)",
        "loopback": "tcp('127.0.0.1', 22)",
        "private": "tcp('10.0.0.1', 80)",
        "metadata": "tcp('169.254.169.254', 80)",
    }
    r = subprocess.run(codeq_in(net, host, "--", "python3", "-c", PROBE, json.dumps(checks)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["name"].startswith("ok codeq test internet: 198.51.100.80 files.example.test"), out
    assert out["v4"] == "ok ping" and out["v6"] == "ok ping", out
    # The host's own addresses (those of the namespace codeq runs in) and the ranges
    # refused in every mode: refused at once, by the egress filter, before pasta.
    for key in ("host4", "host6", "loopback", "private", "metadata"):
        assert out[key] in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"), (key, out)


@pytest.mark.parametrize("how", ["exit", "SIGKILL"])
def test_pasta_and_the_namespace_end_with_codeq(net, host, how):
    p = subprocess.Popen(codeq_in(net, host, "--", "sleep", "30"), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        pids, names = set(), {}
        while time.monotonic() < deadline:
            pids, names = uplink_processes(p.pid)
            if any(cmd.endswith("pasta") or cmd == "pasta" for cmd in names.values()) and \
                    len(pids) >= 3:
                break
            time.sleep(0.05)
        assert len(pids) == 3 and "pasta" in names.values(), names  # guard, keeper, pasta
        if how == "SIGKILL":
            os.kill(p.pid, signal.SIGKILL)
        else:
            os.kill(p.pid, signal.SIGTERM)  # codeq sandbox passes it on and exits
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
        p.stderr.close()
    assert wait_gone(pids) == set(), names
