"""tests/net/test_installs.py - `pip install` and `npm install` inside sessions (issue 14),
through `codeq mcp`, against the test internet's package index (pypi.example.test) and
npm registry (registry.example.test), tests/net/internet.py; no packet leaves the machine.

In a PUBLIC session an install reaches the index and lands in the session's own
workspace (pip's user site below HOME=/workspace, npm's /workspace/node_modules), where
the session's running kernel imports it in the next cell; it is done the ways agents do
it: executeCommand with the command line the AgentCore SDK's install_packages sends
(`pip install [--upgrade] PKG...`), and from code (a subprocess of a Python cell,
child_process in a JavaScript cell), and then in the same cell. An ALLOWLIST session
installs from what its list names. Where the network refuses the index (NONE, or an
ALLOWLIST without it) both fail at once with their network error instead of retrying
for a minute. Needs root and the built `codeq` (CODEQ_BIN_DIR).
"""
import os
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import internet  # noqa: E402
from mcp_client import CODEQ, HostWatch, McpServer  # noqa: E402

# Where the session finds the test's index and registry: the standard variables of pip
# and npm, in the session's env (codeq sets neither: their defaults are pip's and npm's).
INDEXES = {"PIP_INDEX_URL": internet.PYPI_URL, "PIP_TRUSTED_HOST": internet.PYPI_NAME,
           "npm_config_registry": internet.REGISTRY_URL}
PY_MODULE = internet.TEST_PACKAGE.replace("-", "_")
# Only to catch a hang: an offline install that retries with back-off takes over a
# minute (npm: about 70 s measured); the tests assert no speed.
OFFLINE_BOUND_S = 30


@pytest.fixture(scope="module")
def server(net):
    watch = HostWatch()
    egress = net.add_client()
    env = dict(os.environ, CODEQ_EGRESS_NETNS=net.netns_path(egress),
               CODEQ_DNS=internet.DNS_SERVER[0])
    srv = McpServer("--warm-pool", "1", "--warm-pool-public", "1",
                    "--network-modes", "NONE,PUBLIC,ALLOWLIST", env=env)
    watch.pids.append(srv.pid)
    srv.initialize()
    yield srv
    srv.close()
    watch.assert_clean()


def start(server, **args):
    r = server.call("startSession", dict(args, env=INDEXES))
    assert r["isError"] is False, r
    return r["structuredContent"]["sessionId"]


def run(server, sid, code, language="python"):
    """A cell's stdout; the cell must succeed."""
    r = server.call("executeCode", {"sessionId": sid, "code": code, "language": language})
    assert r["isError"] is False, r
    return r["structuredContent"]["stdout"].strip()


def command(server, sid, line, ok=True):
    """The command's structured result; it must succeed unless ok is False."""
    r = server.call("executeCommand", {"sessionId": sid, "command": line, "timeout": 120})
    assert r["isError"] is (not ok), r
    return r["structuredContent"]


def test_npm_install_then_require_in_the_next_cell(server):
    sid = start(server, networkMode="PUBLIC")
    # The kernel runs before the package exists, and looks for it in vain once.
    missing = server.call("executeCode", {"sessionId": sid, "language": "javascript",
                                          "code": f"require('{internet.NPM_PACKAGE}')"})
    assert missing["isError"] is True, missing
    assert "Cannot find module" in missing["structuredContent"]["stderr"], missing

    sc = command(server, sid, f"npm install {internet.NPM_PACKAGE}")
    assert sc["exitCode"] == 0, sc
    assert "added 1 package" in sc["stdout"], sc
    got = run(server, sid, f"console.log(require('{internet.NPM_PACKAGE}').GREETING)",
              "javascript")
    assert got == internet.NPM_GREETING
    where = run(server, sid, f"console.log(require.resolve('{internet.NPM_PACKAGE}'))",
                "javascript")
    assert where == f"/workspace/node_modules/{internet.NPM_PACKAGE}/index.js", where
    # ES module syntax and TypeScript cells resolve it the same way.
    got = run(server, sid, f"import {{ GREETING }} from '{internet.NPM_PACKAGE}';\n"
                           "console.log(GREETING.length)", "typescript")
    assert got == str(len(internet.NPM_GREETING))
    r = server.call("executeCode", {"sessionId": sid, "language": "javascript", "code":
                                    f"const m = await import('{internet.NPM_PACKAGE}');\n"
                                    "console.log(m.default.GREETING)"})
    assert r["isError"] is False, r
    sc = r["structuredContent"]
    assert sc["stdout"].strip() == internet.NPM_GREETING and sc["stderr"] == "", sc
    # What npm wrote is the session's (saved with its files); its cache is not.
    got = run(server, sid, "import os\nprint(sorted(os.listdir('/workspace')))")
    assert got == "['node_modules', 'package-lock.json', 'package.json']", got
    server.call("stopSession", {"sessionId": sid})


def test_npm_install_from_a_javascript_cell(server):
    """The install and the require in one cell, and in the next."""
    sid = start(server, networkMode="PUBLIC")
    got = run(server, sid, "const { execSync } = require('child_process');\n"
                           f"execSync('npm install {internet.NPM_PACKAGE}', {{ stdio: 'pipe' }});\n"
                           f"console.log(require('{internet.NPM_PACKAGE}').GREETING)",
              "javascript")
    assert got == internet.NPM_GREETING
    got = run(server, sid, f"const hello = require('{internet.NPM_PACKAGE}');\n"
                           "console.log(hello.GREETING)", "javascript")
    assert got == internet.NPM_GREETING
    server.call("stopSession", {"sessionId": sid})


def test_pip_install_as_the_agentcore_sdk_does(server):
    sid = start(server, networkMode="PUBLIC")
    assert run(server, sid, "print('kernel up')") == "kernel up"
    # CodeInterpreter.install_packages(packages, upgrade): executeCommand
    # "pip install [--upgrade ]" + " ".join(packages).
    sc = command(server, sid, f"pip install {internet.TEST_PACKAGE}")
    assert sc["exitCode"] == 0, sc
    assert f"Successfully installed {internet.TEST_PACKAGE}-1.0" in sc["stdout"], sc
    sc = command(server, sid, f"pip install --upgrade {internet.TEST_PACKAGE}")
    assert sc["exitCode"] == 0, sc
    got = run(server, sid, f"import {PY_MODULE}\nprint({PY_MODULE}.GREETING)")
    assert got == internet.TEST_GREETING
    where = run(server, sid, f"print({PY_MODULE}.__file__)")
    assert where.startswith("/workspace/.local/lib/python3"), where
    server.call("stopSession", {"sessionId": sid})


def test_pip_install_from_a_python_cell(server):
    sid = start(server, networkMode="PUBLIC")
    run(server, sid, "import subprocess, sys\n"
                     "subprocess.run([sys.executable, '-m', 'pip', 'install', "
                     f"'{internet.TEST_PACKAGE}'], check=True, capture_output=True)")
    got = run(server, sid, f"import {PY_MODULE}\nprint({PY_MODULE}.GREETING)")
    assert got == internet.TEST_GREETING
    server.call("stopSession", {"sessionId": sid})


def timed_command(server, sid, line):
    began = time.monotonic()
    sc = command(server, sid, line, ok=False)
    return sc, time.monotonic() - began


def test_installs_fail_at_once_without_network(server):
    sid = start(server)  # the policy's default: NONE
    sc, took = timed_command(server, sid, f"pip install {internet.TEST_PACKAGE}")
    out = sc["stdout"] + sc["stderr"]
    assert sc["exitCode"] != 0, sc
    assert "Failed to establish a new connection" in out, out
    assert "name resolution" in out or "Network is unreachable" in out, out
    assert took < OFFLINE_BOUND_S, (took, out)

    sc, took = timed_command(server, sid, f"npm install {internet.NPM_PACKAGE}")
    out = sc["stdout"] + sc["stderr"]
    assert sc["exitCode"] != 0, sc
    # npm names the request and why it failed: no resolver in a NONE sandbox.
    assert f"request to {internet.REGISTRY_URL}{internet.NPM_PACKAGE} failed" in out, out
    assert "EAI_AGAIN" in out or "ENOTFOUND" in out, out
    assert took < OFFLINE_BOUND_S, (took, out)
    # Nothing half-installed.
    got = run(server, sid, "import os\nprint(sorted(os.listdir('/workspace')))")
    assert "node_modules" not in got and ".npm" not in got, got
    server.call("stopSession", {"sessionId": sid})


def test_pip_install_and_import_in_one_python_cell(server):
    """As in a notebook: the install and the import in the same cell. The kernel (from
    the warm pool) started before the user site existed."""
    sid = start(server, networkMode="PUBLIC")
    got = run(server, sid, "import subprocess, sys\n"
                           "subprocess.run([sys.executable, '-m', 'pip', 'install', "
                           f"'{internet.TEST_PACKAGE}'], check=True, capture_output=True)\n"
                           f"import {PY_MODULE}\nprint({PY_MODULE}.GREETING)")
    assert got == internet.TEST_GREETING
    server.call("stopSession", {"sessionId": sid})



def test_an_allowlist_installs_from_what_it_lists(server):
    """ALLOWLIST: installs reach the index and the registry when the list names them;
    when it does not, the names do not resolve and both fail with that, at once (npm
    waited 10 s and 60 s between its retries by default: 70 s)."""
    sid = start(server, networkMode="ALLOWLIST",
                networkAllow=[internet.PYPI_NAME, internet.REGISTRY_NAME])
    sc = command(server, sid, f"pip install {internet.TEST_PACKAGE} && "
                              f"npm install {internet.NPM_PACKAGE}")
    assert sc["exitCode"] == 0, sc
    assert run(server, sid, f"import {PY_MODULE}\nprint({PY_MODULE}.GREETING)") == \
        internet.TEST_GREETING
    assert run(server, sid, f"console.log(require('{internet.NPM_PACKAGE}').GREETING)",
               "javascript") == internet.NPM_GREETING
    server.call("stopSession", {"sessionId": sid})

    sid = start(server, networkMode="ALLOWLIST", networkAllow=["files.example.test"])
    sc, took = timed_command(server, sid, f"pip install {internet.TEST_PACKAGE}")
    out = sc["stdout"] + sc["stderr"]
    assert sc["exitCode"] != 0 and "Name or service not known" in out, out
    assert took < OFFLINE_BOUND_S, (took, out)
    sc, took = timed_command(server, sid, f"npm install {internet.NPM_PACKAGE}")
    out = sc["stdout"] + sc["stderr"]
    assert sc["exitCode"] != 0, sc
    assert f"getaddrinfo ENOTFOUND {internet.REGISTRY_NAME}" in out, out
    assert took < OFFLINE_BOUND_S, (took, out)
    server.call("stopSession", {"sessionId": sid})
