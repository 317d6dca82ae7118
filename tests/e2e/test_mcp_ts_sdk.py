"""The official MCP TypeScript SDK (@modelcontextprotocol/sdk, from npm, installed by
scripts/setup into build/npm-mcp or $CODEQ_MCP_NPM) against codeq: over stdio (`codeq
mcp`: tools, state, a command's exit code), over Streamable HTTP (`codeq serve`'s
/mcp: two clients share the tenant's default session), and a cell longer than the
request timeout that the SDK waits for only because codeq's progress notifications
reset it (without resetTimeoutOnProgress it times out: the TS SDK's 60 s default
would kill long cells)."""

import json
import os
import subprocess
import sys

import pytest

from mcp_client import CODEQ, REPO

NPM = os.environ.get("CODEQ_MCP_NPM") or os.path.join(REPO, "build", "npm-mcp")
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_ts_client.mjs")

sys.path.insert(0, os.path.join(REPO, "tests", "serve"))
from serve_process import Server  # noqa: E402


def run(*args, timeout=180):
    assert os.path.isdir(os.path.join(NPM, "node_modules", "@modelcontextprotocol", "sdk")), \
        f"no @modelcontextprotocol/sdk in {NPM}: run scripts/setup"
    p = subprocess.run(["node", SCRIPT, *args], capture_output=True, text=True,
                       timeout=timeout, env=dict(os.environ, CODEQ_MCP_NPM=NPM))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_stdio_tools_state_and_exit_codes():
    out = run("stdio", CODEQ)
    assert {"executeCode", "executeCommand", "readFiles", "startSession"} <= set(out["tools"])
    assert out["versions"]["name"] == "codeq"
    assert out["kept"] == "42\n"
    assert out["command"] == {"isError": True, "exitCode": 3}


def test_streamable_http_shares_the_default_session():
    server = Server(["--no-auth", "--warm-pool", "0"])
    try:
        out = run("http", f"{server.endpoint}/mcp")
        assert out["shared"] == "from the first\n"
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("reset", ["1", "0"])
def test_a_long_cell_outlives_the_request_timeout_through_progress(reset):
    out = run("long", CODEQ, reset)
    if reset == "1":
        assert out.get("stdout") == "0\n1\n2\n3\n4\n5\n", out
        assert out["progress"] >= 3, out
    else:
        assert "timed out" in out.get("error", "").lower(), out
