"""Network modes as a normal user: PUBLIC and ALLOWLIST through codeq's own egress
namespace and pasta (sandbox/uplink.c), and a clear refusal where pasta cannot work.

As in tests/net/test_uplink.py, codeq runs in a client namespace of the test internet
(tests/net/internet.py), which stands in for the host, so no packet leaves the machine.
pasta needs /dev/net/tun open to the user: most distributions make it 0666, some (this
machine) 0600. So each test gives codeq a private mount namespace in which a tun node
of a fresh tmpfs, 0666 or 0600 as the test needs, is bound over /dev/net/tun (nothing
of the host's /dev changes).
"""

import importlib.util
import json
import os
import subprocess

import pytest

from conftest import CODEQ, user_env

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_internet():
    path = os.path.join(HERE, "..", "net", "internet.py")
    spec = importlib.util.spec_from_file_location("codeq_test_internet", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


internet = _load_internet()

PROBE = r"""
import errno, json, os, socket, sys, urllib.request
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

# Binds a tun node of mode $0 over /dev/net/tun in this (private) mount namespace, then
# runs the rest of the command line.
_BIND_TUN = ('set -e; d=$(mktemp -d); mount -t tmpfs -o mode=755 tmpfs "$d"; '
             'mknod -m "$0" "$d/tun" c 10 200; mount --bind "$d/tun" /dev/net/tun; exec "$@"')


@pytest.fixture(scope="module")
def net():
    assert os.access("/usr/bin/pasta", os.X_OK), "pasta (Debian package passt) is missing"
    with internet.Internet() as n:
        yield n


@pytest.fixture(scope="module")
def host(net):
    return net.add_client()


def codeq_as_user(net, host, user, args, tun_mode="666"):
    argv = ["nsenter", f"--net={net.netns_path(host)}", "env", "-i"]
    argv += [f"{k}={v}" for k, v in user_env(user, {"CODEQ_ALLOW_UNLIMITED": "1"}).items()]
    argv += ["setpriv", "--reuid", str(user.pw_uid), "--regid", str(user.pw_gid),
             "--init-groups", CODEQ, "sandbox", "--timeout", "30"]
    if "--network" in args:
        argv += ["--dns", internet.DNS_SERVER[0]]
    argv += args
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BIND_TUN, tun_mode,
            *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


CHECKS = {
    "name": "http('http://files.example.test/as-a-user')",
    "v4": f"tcp('{internet.ECHO_HOST[0]}', 7)",
    "v6": f"tcp('{internet.ECHO_HOST[1]}', 7)",
    "loopback": "tcp('127.0.0.1', 22)",
    "private": "tcp('10.0.0.1', 80)",
    "metadata": "tcp('169.254.169.254', 80)",
    "uid": "os.getuid()",
}


@pytest.mark.parametrize("ids", ["own", "subordinate"])
def test_public_through_pasta(request, ids, net, host):
    user = request.getfixturevalue("no_subids" if ids == "own" else "subids")
    r = codeq_as_user(net, host, user, ["--network", "public", "--", "python3", "-c", PROBE,
                                        json.dumps(CHECKS)])
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["name"].startswith("ok codeq test internet: 198.51.100.80 files.example.test"), out
    assert out["v4"] == "ok ping" and out["v6"] == "ok ping", out
    for key in ("loopback", "private", "metadata"):
        assert out[key] in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"), (key, out)
    assert out["uid"] == 1000


def test_allowlist_through_pasta(subids, net, host):
    checks = {"listed": "http('http://files.example.test/listed')",
              "unlisted": "http('http://api.example.test/unlisted')",
              "echo": f"tcp('{internet.ECHO_HOST[0]}', 7)"}
    r = codeq_as_user(net, host, subids, ["--network", "allowlist", "--allow",
                                          "files.example.test", "--", "python3", "-c", PROBE,
                                          json.dumps(checks)])
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["listed"].startswith("ok codeq test internet"), out
    assert not out["unlisted"].startswith("ok"), out
    assert out["echo"] in ("ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH"), out


def test_public_refused_where_tun_is_roots(no_subids, net, host):
    """/dev/net/tun 0600 and root's: a clear refusal; NONE still works."""
    r = codeq_as_user(net, host, no_subids, ["--network", "public", "--", "true"],
                      tun_mode="600")
    assert r.returncode == 125, (r.stdout, r.stderr)
    assert "/dev/net/tun" in r.stderr and "0666" in r.stderr and "NONE" in r.stderr, r.stderr
    r = codeq_as_user(net, host, no_subids, ["--", "python3", "-c", PROBE,
                                             json.dumps({"v4": CHECKS["v4"]})], tun_mode="600")
    assert r.returncode == 0 and json.loads(r.stdout)["v4"] == "ENETUNREACH", (r.stdout, r.stderr)
