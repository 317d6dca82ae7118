"""tests/net/test_pip.py - `pip install` from a package index on the test internet.

Agents install packages: in mode PUBLIC pip reaches an index (here the test internet's
pypi.example.test, through the egress namespace) and installs into the sandbox's own
user site under /workspace (HOME), where Python then imports it; in mode NONE the same
command fails at once with a network error instead of hanging in retries. Needs root
and the built `codeq` (CODEQ_BIN_DIR).
"""
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CODEQ = os.path.join(os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin"),
                     "codeq")

# The index is plain HTTP on a test name; pip's user install into HOME (/workspace),
# since the runtime's own site-packages are read-only (and Debian marks them
# externally managed, PEP 668).
PIP_ENV = [f"PIP_INDEX_URL={internet.PYPI_URL}", f"PIP_TRUSTED_HOST={internet.PYPI_NAME}",
           "PIP_BREAK_SYSTEM_PACKAGES=1", "PIP_DISABLE_PIP_VERSION_CHECK=1",
           "PIP_RETRIES=1"]
INSTALL_AND_IMPORT = (
    f"python3 -m pip install --no-cache-dir {internet.TEST_PACKAGE} && "
    "python3 -c 'import cqtest_hello, sys; print(cqtest_hello.GREETING); "
    "print(cqtest_hello.__file__)'")


def sandbox(mode, net=None, egress=None):
    argv = [CODEQ, "sandbox", "--timeout", "60", "--network", mode]
    if mode != "none":
        argv += ["--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0]]
    for e in PIP_ENV:
        argv += ["--env", e]
    return subprocess.run(argv + ["--", "sh", "-c", INSTALL_AND_IMPORT], capture_output=True,
                          text=True, timeout=120)


def test_pip_installs_from_the_index_in_public_mode(net):
    r = sandbox("public", net, net.add_client())
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[-2] == internet.TEST_GREETING, r.stdout
    # Installed in the sandbox's own user site, below its workspace.
    assert lines[-1].startswith("/workspace/.local/lib/python3"), r.stdout
    assert lines[-1].endswith("/site-packages/cqtest_hello/__init__.py"), r.stdout


def test_pip_fails_at_once_without_network():
    r = sandbox("none")
    assert r.returncode != 0, r.stdout
    out = r.stdout + r.stderr
    # The cause is named (no resolver, no route), and nothing was installed.
    assert "Failed to establish a new connection" in out, out
    assert "name resolution" in out or "Network is unreachable" in out, out
    assert "hello from" not in out
