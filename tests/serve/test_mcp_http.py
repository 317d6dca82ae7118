"""tests/serve/test_mcp_http.py - MCP over HTTP at `codeq serve`'s /mcp, driven by the
official MCP Python SDK's Streamable HTTP client (build/pydeps-mcp) and by
langchain-mcp-adapters (build/pydeps-lcmcp), each client in processes of its own, and by
raw HTTP for what the SDKs never send: missing or wrong credentials and session ids, a
foreign Origin, a client that hangs up in the middle of a call."""
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from conftest import CODEQ, client, make_key

HERE = os.path.dirname(os.path.abspath(__file__))
ID = "codeq.default"


@pytest.fixture(scope="module")
def mcp_keys(keys):
    """Tenants of these tests' own on the shared server: what they start over /mcp (the
    tenant's default session too) is listed by AgentCore's routes for its tenant, and
    the AgentCore tests count their tenants' sessions."""
    return {"path": keys["path"], "alpha": make_key(keys["path"], "mcp-alpha"),
            "beta": make_key(keys["path"], "mcp-beta")}


@pytest.fixture(scope="module")
def mcp_alpha(server, mcp_keys):
    return client(server, mcp_keys["alpha"])


@pytest.fixture(scope="module")
def mcp_beta(server, mcp_keys):
    return client(server, mcp_keys["beta"])


def token(key):
    return f"{key[0]}:{key[1]}"


def sdk(server, key, scenario, *args, timeout=180):
    """One client process of the MCP SDK: the scenario's JSON answer."""
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, "mcp_http_client.py"), server.endpoint + "/mcp",
         token(key) if key else "-", scenario, *args],
        capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{scenario} {args}: {p.stdout}\n{p.stderr[-4000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def post(server, body, key=None, sid=None, headers=None, timeout=60):
    """A raw POST to /mcp: (status, headers, body text)."""
    h = {"Content-Type": "application/json",
         "Accept": "application/json, text/event-stream"}
    if key:
        h["Authorization"] = f"Bearer {token(key)}"
    if sid:
        h["Mcp-Session-Id"] = sid
    h.update(headers or {})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("POST", "/mcp", body=json.dumps(body) if not isinstance(body, bytes) else body,
                 headers=h)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    conn.close()
    return out


def request(server, method, key=None, sid=None, headers=None):
    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {token(key)}"
    if sid:
        h["Mcp-Session-Id"] = sid
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request(method, "/mcp", headers=h)
    r = conn.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read().decode())
    conn.close()
    return out


INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}}}


def initialize(server, key):
    status, headers, body = post(server, INIT, key)
    assert status == 200, (status, body)
    assert json.loads(body)["result"]["protocolVersion"] == "2025-11-25", body
    sid = headers["mcp-session-id"]
    status, _, _ = post(server, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        key, sid)
    assert status == 202
    return sid


def messages(body):
    """The JSON-RPC messages of an answer: one JSON object, or an SSE stream's events."""
    if body.lstrip().startswith("{"):
        return [json.loads(body)]
    return [json.loads(line[len("data: "):]) for line in body.splitlines()
            if line.startswith("data: ")]


def call(server, key, sid, name, arguments, rid=7, timeout=60):
    status, _, body = post(server, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                                    "params": {"name": name, "arguments": arguments}},
                           key, sid, timeout=timeout)
    assert status == 200, (status, body)
    return [m for m in messages(body) if m.get("id") == rid][0]["result"]


def test_sdk_tools_state_and_progress(server, mcp_keys):
    """initialize, tools/list, executeCode keeping state within one client, and progress
    notifications that carry a cell's output as it comes."""
    out = sdk(server, mcp_keys["alpha"], "basic")
    assert out["progress"] >= 2, out


def test_default_session_shared_by_client_processes(server, mcp_keys):
    """Two client processes with the same key share the tenant's default session; another
    tenant's processes do not see it."""
    var = "shared_" + uuid.uuid4().hex[:8]
    sdk(server, mcp_keys["alpha"], "set", var, "from-process-one")
    out = sdk(server, mcp_keys["alpha"], "get", var)
    assert out == {"is_error": False, "text": "'from-process-one'\n"}, out
    out = sdk(server, mcp_keys["beta"], "get", var)
    assert out["is_error"] and "NameError" in out["text"], out


def test_explicit_session_shared_by_id_and_isolated(server, mcp_keys):
    """A session started by one process is reached by another through its sessionId, and
    its state is its own (not the default session's)."""
    sid = sdk(server, mcp_keys["alpha"], "start")["sessionId"]
    var = "own_" + uuid.uuid4().hex[:8]
    sdk(server, mcp_keys["alpha"], "set", var, "in-my-session", sid)
    out = sdk(server, mcp_keys["alpha"], "get", var, sid)
    assert out == {"is_error": False, "text": "'in-my-session'\n"}, out
    out = sdk(server, mcp_keys["alpha"], "get", var)
    assert out["is_error"] and "NameError" in out["text"], out
    sdk(server, mcp_keys["alpha"], "call", "stopSession", json.dumps({"sessionId": sid}))


def test_cancel_keeps_variables(server, mcp_keys):
    out = sdk(server, mcp_keys["alpha"], "cancel")
    assert out["waited"] < 45, out


def test_another_tenants_session_is_not_found(server, mcp_keys, mcp_alpha, mcp_beta):
    """Sessions started over /mcp belong to the key's tenant, in the same namespace as
    AgentCore's routes: the owner reaches them both ways, another tenant neither."""
    sid = sdk(server, mcp_keys["alpha"], "start")["sessionId"]
    for name, args in (("getSession", {"sessionId": sid}),
                       ("executeCode", {"code": "1", "sessionId": sid}),
                       ("stopSession", {"sessionId": sid})):
        out = sdk(server, mcp_keys["beta"], "call", name, json.dumps(args))
        assert out["is_error"] and "not found" in out["text"], (name, out)
    assert mcp_alpha.get_code_interpreter_session(
        codeInterpreterIdentifier=ID, sessionId=sid)["status"] == "READY"
    try:
        mcp_beta.get_code_interpreter_session(codeInterpreterIdentifier=ID, sessionId=sid)
        raise AssertionError("beta reached alpha's session over AgentCore's API")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "ResourceNotFoundException", e.response
    listed = sdk(server, mcp_keys["beta"], "call", "listSessions", json.dumps({"maxResults": 100}))
    assert sid not in json.dumps(listed), listed
    listed = sdk(server, mcp_keys["alpha"], "call", "listSessions", json.dumps({"maxResults": 100}))
    assert sid in json.dumps(listed["structured"]), listed
    out = sdk(server, mcp_keys["alpha"], "call", "stopSession", json.dumps({"sessionId": sid}))
    assert not out["is_error"], out


def test_bearer_required(server, mcp_keys):
    status, headers, body = post(server, INIT)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer"), (status, body)
    assert "Bearer KEY_ID:SECRET" in json.loads(body)["error"]["message"]
    for bad in ((mcp_keys["alpha"][0], "0" * 64), ("cqk_00000000000000000000", mcp_keys["alpha"][1]),
                (mcp_keys["alpha"][0], mcp_keys["alpha"][1][:-1])):
        status, headers, body = post(server, INIT, bad)
        assert status == 401 and "www-authenticate" in headers, (bad[0], status, body)
    status, _, body = post(server, INIT, headers={"Authorization": "Basic eDp5"})
    assert status == 401, body
    # A revoked key is refused (the keys file is read again within a second).
    gamma = make_key(mcp_keys["path"], "mcp-gamma")
    assert post(server, INIT, gamma)[0] == 200
    subprocess.run([CODEQ, "key", "revoke", gamma[0], "--keys", mcp_keys["path"]], check=True,
                   capture_output=True)
    for _ in range(50):
        if post(server, INIT, gamma)[0] == 401:
            break
        time.sleep(0.1)
    assert post(server, INIT, gamma)[0] == 401
    # The SDK with a wrong secret fails to connect.
    p = subprocess.run(
        [sys.executable, os.path.join(HERE, "mcp_http_client.py"), server.endpoint + "/mcp",
         f"{mcp_keys['alpha'][0]}:{'0' * 64}", "start"], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    # The secret never reaches the log.
    assert mcp_keys["alpha"][1] not in server.text()


def test_bearer_with_text_after_the_secret_is_refused(server, mcp_keys):
    """The token is KEY_ID:SECRET and nothing else: text after the secret (after a space,
    a tab, a comma) is not ignored but makes the token another one, refused."""
    key_id, secret = mcp_keys["alpha"]
    good = f"Bearer {key_id}:{secret}"
    assert post(server, INIT, headers={"Authorization": good})[0] == 200
    for bad in (f"{good} extra", f"{good}\textra", f"{good},Bearer x", f"{good}x",
                f"{good} {secret}"):
        status, headers, body = post(server, INIT, headers={"Authorization": bad})
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), \
            (bad[len(good):], status, body)
    # The server goes on serving the right token.
    assert post(server, INIT, headers={"Authorization": good})[0] == 200


def test_transport_rules(server, mcp_keys):
    key = mcp_keys["alpha"]
    sid = initialize(server, key)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    # Every request after initialize carries the session id.
    status, _, body = post(server, ping, key)
    assert status == 400 and "Mcp-Session-Id" in body, (status, body)
    status, _, body = post(server, ping, key, "no-such-session")
    assert status == 404, (status, body)
    # Another tenant's session id is not found either.
    status, _, body = post(server, ping, mcp_keys["beta"], sid)
    assert status == 404, (status, body)
    status, _, body = post(server, ping, key, sid)
    assert status == 200 and json.loads(body)["result"] == {}, (status, body)
    # DNS rebinding: a browser page of another origin is refused; loopback ones are not.
    status, _, body = post(server, ping, key, sid, {"Origin": "http://evil.example"})
    assert status == 403, (status, body)
    status, _, body = post(server, ping, key, sid, {"Origin": "http://127.0.0.1.evil.example"})
    assert status == 403, (status, body)
    status, _, body = post(server, ping, key, sid, {"Origin": "http://localhost:6274"})
    assert status == 200, (status, body)
    # Protocol versions: those of this transport only.
    for version, want in (("2025-06-18", 200), ("2025-11-25", 200), ("2024-11-05", 400),
                          ("1900-01-01", 400)):
        status, _, body = post(server, ping, key, sid, {"MCP-Protocol-Version": version})
        assert status == want, (version, status, body)
    # What the body and Accept must be.
    assert post(server, ping, key, sid, {"Content-Type": "text/plain"})[0] == 415
    assert post(server, ping, key, sid, {"Accept": "application/json"})[0] == 406
    status, _, body = post(server, b"{not json", key, sid)
    assert status == 400 and json.loads(body)["error"]["code"] == -32700, body
    # A notification: 202, no body.
    status, _, body = post(server, {"jsonrpc": "2.0", "method": "notifications/progress",
                                    "params": {}}, key, sid)
    assert (status, body) == (202, "")
    # No server-to-client stream.
    status, headers, _ = request(server, "GET", key, sid, {"Accept": "text/event-stream"})
    assert status == 405 and "POST" in headers["allow"]
    # DELETE ends the session.
    assert request(server, "DELETE", mcp_keys["beta"], sid)[0] == 404
    assert request(server, "DELETE", key, sid)[0] == 204
    assert post(server, ping, key, sid)[0] == 404
    assert request(server, "DELETE", key, sid)[0] == 404


def test_tools_call_streams_progress_then_result(server, mcp_keys):
    key = mcp_keys["alpha"]
    sid = initialize(server, key)
    status, headers, body = post(server, {
        "jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "executeCode", "_meta": {"progressToken": "tok"},
                   "arguments": {"code": "import time\nprint('a', flush=True)\n"
                                         "time.sleep(0.5)\nprint('b')"}}}, key, sid)
    assert status == 200 and headers["content-type"] == "text/event-stream", (status, headers)
    msgs = messages(body)
    progress = [m for m in msgs if m.get("method") == "notifications/progress"]
    assert progress and all(m["params"]["progressToken"] == "tok" for m in progress), msgs
    assert "a\n" in "".join(m["params"]["message"] for m in progress), msgs
    assert msgs[-1]["id"] == 5 and msgs[-1]["result"]["structuredContent"]["stdout"] == "a\nb\n"
    assert request(server, "DELETE", key, sid)[0] == 204


def test_client_gone_mid_call_does_not_wedge(server, mcp_keys):
    """A client that hangs up while its call streams output: the call runs on (the
    transport does not take a disconnect for a cancellation), its output is dropped, and
    the MCP session answers its next requests at once, while the cell still runs."""
    key = mcp_keys["alpha"]
    sid = initialize(server, key)
    marker = "gone_" + uuid.uuid4().hex[:8]
    call(server, key, sid, "executeCode", {"code": f"{marker} = 'running'"})
    code = ("import time\n"
            "for i in range(1500):\n"
            "    print('x' * 10000, flush=True)\n"
            "    time.sleep(0.01)\n"
            f"{marker} = 'finished'")
    body = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                       "params": {"name": "executeCode", "arguments": {"code": code},
                                  "_meta": {"progressToken": 1}}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nAuthorization: Bearer {token(key)}"
            f"\r\nMcp-Session-Id: {sid}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(head + body)
    got = b""
    while b"notifications/progress" not in got:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    s.close()  # the output keeps coming: gigabytes would pile up if nothing noticed
    # The same MCP session answers at once: another tool, tools/list, ping.
    r = call(server, key, sid, "executeCommand", {"command": "echo still here"}, rid=10,
             timeout=20)
    assert r["structuredContent"]["stdout"] == "still here\n", r
    status, _, body = post(server, {"jsonrpc": "2.0", "id": 11, "method": "tools/list"}, key,
                           sid, timeout=20)
    assert status == 200 and "executeCode" in body
    # The abandoned cell was not cancelled: it still runs now, and ends on its own.
    r = call(server, key, sid, "executeCode", {"code": f"print({marker})"}, rid=12, timeout=120)
    assert r["structuredContent"]["stdout"] == "finished\n", r
    assert request(server, "DELETE", key, sid)[0] == 204


def test_langchain_mcp_adapters_default_mode_keeps_state(server, mcp_keys):
    """langchain-mcp-adapters' default mode opens an MCP session per tool call: the
    tenant's shared default session keeps the state between them."""
    p = subprocess.run([sys.executable, os.path.join(HERE, "lcmcp_client.py"),
                        server.endpoint + "/mcp", token(mcp_keys["alpha"])],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr[-4000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["sessions"] >= 3, out  # get_tools, then one per call
    assert "lc_state is 42" in out["second"], out


def test_docs_snippet(server, mcp_keys):
    """The snippet of docs/agentcore.md, "MCP over HTTP", runs as written."""
    import re
    text = open(os.path.join(os.path.dirname(os.path.dirname(HERE)), "docs",
                             "agentcore.md")).read()
    m = re.search(r"<!-- mcp-http-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/agentcore.md lost its MCP over HTTP snippet"
    repo = os.path.dirname(os.path.dirname(HERE))
    pydeps = os.environ.get("CODEQ_MCP_PYDEPS") or os.path.join(repo, "build", "pydeps-mcp")
    env = dict(os.environ, CODEQ_MCP_URL=server.endpoint + "/mcp",
               CODEQ_TOKEN=token(mcp_keys["alpha"]), PYTHONPATH=pydeps)
    p = subprocess.run(["/usr/bin/python3", "-c", m.group(1)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.strip() == "42", p.stdout


def test_session_limit_and_idle_timeout():
    """--mcp-max-sessions per tenant (429 past it, room again after a DELETE);
    --mcp-idle-timeout ends an unused MCP session (404 afterwards) but not one whose call
    is still running, and stops the tenant's default session once unused that long."""
    from conftest import Server
    s = Server(["--no-auth", "--warm-pool", "0", "--mcp-max-sessions", "2",
                "--mcp-idle-timeout", "3"])
    try:
        first, second = initialize(s, None), initialize(s, None)
        status, _, body = post(s, INIT)
        assert status == 429 and "too many MCP sessions" in body, (status, body)
        assert request(s, "DELETE", None, second)[0] == 204
        third = initialize(s, None)
        # A call longer than the idle timeout keeps its session.
        r = call(s, None, third, "executeCode",
                 {"code": "import time\nidle_kept = 1\ntime.sleep(5)\nprint('slept')"})
        assert r["structuredContent"]["stdout"] == "slept\n", r
        assert post(s, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, None, third)[0] == 200
        # first has been unused all along: ended.
        assert post(s, {"jsonrpc": "2.0", "id": 3, "method": "ping"}, None, first)[0] == 404
        # The default session outlives its MCP sessions until it is unused that long.
        time.sleep(5)
        fourth = initialize(s, None)
        r = call(s, None, fourth, "executeCode", {"code": "print(idle_kept)"})
        assert r["isError"] and "NameError" in r["content"][0]["text"], r
    finally:
        assert s.stop() == 0
