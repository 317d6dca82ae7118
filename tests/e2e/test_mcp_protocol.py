"""`codeq mcp`'s protocol handling, over stdio with raw JSON-RPC and with the official MCP
Python SDK: cancellation (notifications/cancelled interrupts a cell, keeping its
variables, or kills a command, and the request gets no response), progress
notifications carrying output for a request with a progressToken (and none without),
argument type errors as isError results, protocol version negotiation, and tool
schemas: every argument described, outputSchema present from 2025-06-18 on and every
successful result's structuredContent valid against it.

The SDK and jsonschema are not in Debian 12's packages we use: scripts/setup installs
them into build/pydeps-mcp (or $CODEQ_MCP_PYDEPS), and tests/e2e/mcp_pydeps.py runs
their checks in a process of its own; their absence fails these tests rather than
skipping them.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from mcp_client import (
    CODEQ,
    McpServer,
    all_text,
    error_code,
    final_value,
    processes_of,
    start_session,
    wait_until,
)
from mcp_fixtures import host, new_server, sc, server, session  # noqa: F401 (fixtures)


SUPPORTED = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = "2025-11-25"


def pydeps_check(*args, stdin=None, timeout=300):
    """Runs mcp_pydeps.py (the checks that need build/pydeps-mcp, in a process of their
    own); fails with its output unless it passed."""
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_pydeps.py")
    p = subprocess.run([sys.executable, helper, *args], input=stdin, capture_output=True,
                       text=True, timeout=timeout)
    assert p.returncode == 0, f"mcp_pydeps.py {args[0]}: {p.stdout[-4000:]} {p.stderr[-4000:]}"
    return p.stdout


# ---- helpers ---------------------------------------------------------------------------


def progress_of(srv, token):
    """The notifications/progress received so far for token (removed from the queue)."""
    out = []
    while True:
        with srv._cond:
            index = next((i for i, m in enumerate(srv._messages)
                          if m.get("method") == "notifications/progress" and
                          m.get("params", {}).get("progressToken") == token), None)
            if index is None:
                return out
            out.append(srv._messages.pop(index))


def lines_for(srv, id):
    """Raw lines received that answer id (its response) so far."""
    found = []
    for line in list(srv.lines):
        msg = json.loads(line)
        if "method" not in msg and msg.get("id") == id and type(msg.get("id")) is type(id):
            found.append(msg)
    return found


def wait_progress_text(srv, token, text, timeout=60):
    """Waits until the progress messages for token contain text; returns them."""
    got = []

    def seen():
        got.extend(progress_of(srv, token))
        return text in "".join(m["params"].get("message", "") for m in got)

    wait_until(seen, timeout, f"progress with {text!r}")
    return got


def call_with_token(srv, name, arguments, token):
    return srv.send_request("tools/call", {"name": name, "arguments": arguments,
                                           "_meta": {"progressToken": token}})


# ---- version negotiation ---------------------------------------------------------------


@pytest.mark.parametrize("asked, answered", [(v, v) for v in SUPPORTED] +
                         [("1999-01-01", LATEST), ("2026-07-28", LATEST), (None, LATEST)])
def test_protocol_version_negotiation(host, asked, answered):
    """initialize answers the client's version when codeq speaks it, else codeq's latest;
    tools/list gives outputSchema from 2025-06-18 on only."""
    srv = McpServer("--warm-pool", "0")
    host.pids.append(srv.pid)
    try:
        params = {"capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
        if asked is not None:
            params["protocolVersion"] = asked
        init = srv.result("initialize", params)
        assert init["protocolVersion"] == answered, init
        tools = srv.result("tools/list")["tools"]
        with_schema = [t["name"] for t in tools if "outputSchema" in t]
        if answered >= "2025-06-18":
            assert "executeCode" in with_schema and "listSessions" in with_schema, with_schema
        else:
            assert with_schema == [], with_schema
    finally:
        srv.close()


# ---- schemas ---------------------------------------------------------------------------


def test_every_argument_is_described_and_schemas_are_valid(server):
    """Every property of every inputSchema has a type and a description; enums where
    the values are fixed; no deno runtime (it is not installed); the schemas and
    outputSchemas are valid JSON Schema (2020-12, MCP's default dialect)."""
    tools = {t["name"]: t for t in server.result("tools/list")["tools"]}
    schemas = []
    for name, t in tools.items():
        schemas.append(t["inputSchema"])
        for prop, schema in t["inputSchema"]["properties"].items():
            assert "type" in schema and schema.get("description"), (name, prop, schema)
        if "outputSchema" in t:
            schemas.append(t["outputSchema"])
            assert t["outputSchema"]["type"] == "object", t
    pydeps_check("validate", stdin=json.dumps({"schemas": schemas, "pairs": []}))
    code = tools["executeCode"]["inputSchema"]["properties"]
    assert code["runtime"]["enum"] == ["python", "nodejs"], code["runtime"]
    assert code["language"]["enum"] == ["python", "javascript", "typescript"]
    assert tools["listSessions"]["inputSchema"]["properties"]["status"]["enum"] == [
        "READY", "TERMINATED"]
    for name in ("readFiles", "writeFiles", "listFiles", "removeFiles"):
        assert "outputSchema" not in tools[name], name  # results in content only


def test_results_validate_against_output_schema(server):
    """Successful results of every tool with an outputSchema carry structuredContent
    valid against it (the SDKs reject results that do not)."""
    schemas = {t["name"]: t["outputSchema"] for t in server.result("tools/list")["tools"]
               if "outputSchema" in t}
    pairs = []

    def check(name, args):
        r = server.call(name, args)
        assert r["isError"] is False, (name, r)
        pairs.append((name, r["structuredContent"]))
        return r

    sid = check("startSession", {"name": "schema"})["structuredContent"]["sessionId"]
    check("getSession", {"sessionId": sid})
    check("listSessions", {})
    check("executeCode", {"sessionId": sid, "code": "print('hi')\n1 + 1"})
    check("executeCode", {"sessionId": sid, "code": "1 + 1", "language": "javascript"})
    check("executeCommand", {"sessionId": sid, "command": "echo hi"})
    task = check("startCommandExecution", {"sessionId": sid, "command": "sleep 30"})
    tid = task["structuredContent"]["taskId"]
    check("getTask", {"sessionId": sid, "taskId": tid})
    check("stopTask", {"sessionId": sid, "taskId": tid})
    check("stopSession", {"sessionId": sid})
    assert {name for name, _ in pairs} == set(schemas), set(schemas)
    out = pydeps_check("validate", stdin=json.dumps({
        "schemas": list(schemas.values()),
        "pairs": [[schemas[name], sc] for name, sc in pairs]}))
    assert f"{len(pairs)} instances" in out, out
    # And the check can fail: a result without its required fields does not pass.
    bad = json.dumps({"schemas": [], "pairs": [[schemas["executeCode"], {"stdout": 1}]]})
    helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mcp_pydeps.py")
    p = subprocess.run([sys.executable, helper, "validate"], input=bad, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 1 and "invalid" in p.stdout, (p.stdout, p.stderr)


# ---- argument type errors --------------------------------------------------------------


def test_type_errors_are_tool_results(server):
    """Wrong argument types are isError results the model can act on: the tool, the
    argument, what it must be and what was given; an unknown tool and an unknown method
    stay JSON-RPC errors. Nothing runs: no default session is started."""
    before = len(server.call("listSessions", {})["structuredContent"]["items"])
    for tool, args, text in (
        ("executeCode", {"code": 5}, "executeCode: argument 'code' must be a string, not an "
                                     "integer"),
        ("executeCode", {"code": "1", "clearContext": "yes"},
         "argument 'clearContext' must be a boolean, not a string"),
        ("readFiles", {"paths": "a.txt"},
         "readFiles: argument 'paths' must be an array of strings, not a string"),
        ("readFiles", {"paths": ["a", None]},
         "argument 'paths' must be an array of strings; item 1 is null"),
        ("executeCommand", {"command": {"sh": "ls"}},
         "argument 'command' must be a string, not an object"),
        ("writeFiles", {"content": {"path": "a"}}, "argument 'content' must be an array"),
        ("startSession", {"env": {"A": 1}}, "environment variable 'A' must be a string"),
        ("listFiles", [], "arguments must be an object, not an array"),
    ):
        msg = server.call_raw(tool, args)
        assert "error" not in msg, (tool, args, msg)
        r = msg["result"]
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (tool, r)
        assert text in all_text(r), (tool, text, r)
    assert server.call_error("noSuchTool", {})["code"] == -32602
    assert server.request("tools/nope")["error"]["code"] == -32601
    after = len(server.call("listSessions", {})["structuredContent"]["items"])
    assert after == before


# ---- cancellation ----------------------------------------------------------------------


def test_cancel_interrupts_a_cell_and_keeps_variables(server, session):
    """notifications/cancelled for a `while True` cell: the cell is interrupted (as on
    timeout, so the kernel keeps its variables), no response is ever sent for the
    request, and the session answers the next calls."""
    session.ok("kept = 41")
    args = {"sessionId": session.id, "timeout": 600,
            "code": "import time\nprint('started', flush=True)\nwhile True:\n    pass"}
    id = call_with_token(server, "executeCode", args, "cell-1")
    wait_progress_text(server, "cell-1", "started")
    server.notify("notifications/cancelled", {"requestId": id, "reason": "test"})
    # The kernel runs one cell at a time: this one runs once the loop has stopped.
    assert session.value("kept + 1", timeout=60) == "42"
    assert server.result("ping") == {}
    time.sleep(0.5)  # a response sent late would be here by now
    assert lines_for(server, id) == [], lines_for(server, id)


def test_cancel_kills_a_command(server, session):
    """notifications/cancelled for `sleep 100`: the command is killed (its process
    gone from the host), no response is sent, the session goes on."""
    marker = "sleep 100.0417"
    id = call_with_token(server, "executeCommand",
                         {"sessionId": session.id, "command": f"echo go; {marker}"}, "cmd-1")
    wait_progress_text(server, "cmd-1", "go")
    wait_until(lambda: processes_of(server.pid, marker), 30, "the sleep to start")
    server.notify("notifications/cancelled", {"requestId": id})
    wait_until(lambda: not processes_of(server.pid, marker), 30, "the sleep to be killed")
    assert session.sh("echo still") == "still\n"
    assert server.result("ping") == {}
    assert lines_for(server, id) == []


def test_cancel_of_a_finished_or_unknown_request_is_ignored(server, session):
    """A cancellation that crosses the response, or names no request in progress, has
    no effect: the response already sent stands, the server serves on."""
    r = session.ok("'done'")
    assert final_value(r) == "'done'"
    server.notify("notifications/cancelled", {"requestId": 1})
    server.notify("notifications/cancelled", {"requestId": "nope"})
    server.notify("notifications/cancelled", {})
    assert server.result("ping") == {}
    assert session.value("2 * 21") == "42"


def test_cancel_queued_cell_never_runs(server, session):
    """A cell cancelled while it waits for the kernel (another cell runs) never runs."""
    first = call_with_token(server, "executeCode", {
        "sessionId": session.id, "code": "import time\nprint('one', flush=True)\n"
                                         "time.sleep(2)"}, "q-1")
    wait_progress_text(server, "q-1", "one")
    second = server.send_call("executeCode", {"sessionId": session.id,
                                              "code": "ran_second = True"})
    server.notify("notifications/cancelled", {"requestId": second})
    r = server.response(first)["result"]
    assert r["isError"] is False, r
    assert session.value("'ran_second' in globals()") == "False"
    assert lines_for(server, second) == []


def test_cells_sent_at_once_run_in_order(server, session):
    """executeCode calls sent back to back without waiting run in the order sent, per
    session and kernel, while other tools do not wait behind them."""
    session.ok("order = []")
    ids = [server.send_call("executeCode", {"sessionId": session.id,
                                            "code": f"import time\ntime.sleep(0.05)\n"
                                                    f"order.append({i})"})
           for i in range(12)]
    ping = server.send_request("ping")
    assert server.response(ping)["result"] == {}
    for id in ids:
        assert server.response(id)["result"]["isError"] is False
    assert session.value("order") == str(list(range(12)))


# ---- progress --------------------------------------------------------------------------


def test_progress_carries_output(server, session):
    """With a progressToken, output arrives as notifications/progress while the cell
    runs (progress increasing, message the text), all before the response; without a
    token, no progress."""
    code = ("import sys, time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n"
            "    time.sleep(0.4)\nprint('oops', file=sys.stderr, flush=True)")
    id = call_with_token(server, "executeCode", {"sessionId": session.id, "code": code},
                         "tok-a")
    got = wait_progress_text(server, "tok-a", "line 0", timeout=30)
    r = server.response(id)["result"]
    got += progress_of(server, "tok-a")
    text = "".join(m["params"]["message"] for m in got)
    for s in ("line 0\n", "line 1\n", "line 2\n", "oops\n"):
        assert s in text, (s, got)
    values = [m["params"]["progress"] for m in got]
    assert values == sorted(set(values)) and len(values) >= 2, values
    assert sc(r)["stdout"] == "line 0\nline 1\nline 2\n", r
    # Every progress line precedes the response's.
    order = [json.loads(line) for line in server.lines]
    resp_at = next(i for i, m in enumerate(order) if m.get("id") == id and "result" in m)
    last_progress = max(i for i, m in enumerate(order)
                        if m.get("params", {}).get("progressToken") == "tok-a")
    assert last_progress < resp_at

    # The same with an integer token, for a command.
    id = call_with_token(server, "executeCommand",
                         {"sessionId": session.id, "command": "echo a; sleep 0.3; echo b"}, 7)
    server.response(id)
    got = progress_of(server, 7)
    assert "a\n" in "".join(m["params"]["message"] for m in got), got

    # No token: no progress at all.
    before = len(server.lines)
    session.ok("print('quiet'); 1")
    session.cmd("echo quiet")
    assert not any(json.loads(line).get("method") == "notifications/progress"
                   for line in server.lines[before:])


def test_progress_heartbeat_while_silent(server, session):
    """A cell that prints nothing for over 10 s still gets progress ("running for N s"),
    so clients that reset their timeout on progress keep waiting."""
    id = call_with_token(server, "executeCode", {"sessionId": session.id,
                                                 "code": "import time\ntime.sleep(11.5)"},
                         "beat")
    r = server.response(id, timeout=60)["result"]
    assert r["isError"] is False, r
    got = progress_of(server, "beat")
    assert any(m["params"]["message"].startswith("running for ") for m in got), got


# ---- the official MCP Python SDK -------------------------------------------------------


def test_python_sdk_cancel_progress_and_schemas():
    """The official MCP Python SDK over stdio (tests/e2e/mcp_pydeps.py sdk): negotiation,
    outputSchema validation of results, progress through its callback, cancellation on
    its read timeout keeping the variables, type errors as isError results."""
    out = pydeps_check("sdk", CODEQ)
    assert "ok: mcp " in out, out
