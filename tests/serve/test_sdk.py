"""tests/serve/test_sdk.py - the AgentCore Python SDK (bedrock-agentcore's
CodeInterpreter) and plain boto3 against `codeq serve`, unmodified: pointed at codeq by
BEDROCK_AGENTCORE_DP_ENDPOINT and given a codeq key as AWS credentials."""
import os
import re
import signal
import time
import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from conftest import PYDEPS, REGION, REPO, results, sdk_module

BINARY = bytes(range(256)) * 64 + b"\xff\xfe\x00\x80"  # not UTF-8: must come back as bytes


@pytest.fixture(scope="module")
def sdk(server, keys):
    # The SDK reads its endpoint from the environment when it is imported.
    module = sdk_module(server.endpoint)

    def make(tenant):
        key_id, secret = keys[tenant]
        session = boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret,
                                region_name=REGION)
        return module.CodeInterpreter(REGION, session=session)
    return make


def result_of(response):
    events = results(response)
    assert len(events) == 1, events
    return events[0]


def text_of(result):
    return "".join(b.get("text", "") for b in result["content"] if b["type"] == "text")


def test_sdk_session_tools(sdk):
    ci = sdk("alpha")
    session_id = ci.start(name="sdk-test")
    assert re.fullmatch(r"[0-9A-Za-z_-]{1,40}", session_id)
    try:
        r = result_of(ci.execute_code("x = 41"))
        assert not r.get("isError"), r
        r = result_of(ci.execute_code("print(x + 1)"))
        assert r["structuredContent"]["stdout"] == "42\n"
        assert not r["isError"]

        r = result_of(ci.execute_command("echo out; echo err >&2; exit 3"))
        sc = r["structuredContent"]
        assert sc["exitCode"] == 3
        assert sc["stdout"] == "out\n" and sc["stderr"] == "err\n"

        r = result_of(ci.upload_file("data/blob.bin", BINARY))
        assert not r["isError"], r
        r = result_of(ci.upload_file("notes.txt", "héllo\n"))
        assert not r["isError"], r
        assert ci.download_file("data/blob.bin") == BINARY
        assert ci.download_file("notes.txt") == "héllo\n"
        # The same bytes seen from the code's side.
        r = result_of(ci.execute_code(
            "import hashlib; print(hashlib.sha256(open('data/blob.bin','rb').read()).hexdigest())"))
        import hashlib
        assert r["structuredContent"]["stdout"].strip() == hashlib.sha256(BINARY).hexdigest()

        r = result_of(ci.invoke("listFiles", {"directoryPath": "data"}))
        names = [b.get("name") for b in r["content"] if b["type"] == "resource_link"]
        assert "blob.bin" in names, r

        r = result_of(ci.invoke("startCommandExecution", {"command": "sleep 60"}))
        task = r["structuredContent"]["taskId"]
        assert task
        r = result_of(ci.invoke("getTask", {"taskId": task}))
        assert r["structuredContent"]["taskStatus"] in ("submitted", "working")
        r = result_of(ci.invoke("stopTask", {"taskId": task}))
        assert r["structuredContent"]["taskStatus"] == "canceled", r

        ci.clear_context()
        r = result_of(ci.execute_code("print(x)"))
        assert r["isError"] and "NameError" in str(r), r

        info = ci.get_session()
        assert info["status"] == "READY" and info["sessionId"] == session_id
        assert info["name"] == "sdk-test"
        assert info["codeInterpreterIdentifier"] == "aws.codeinterpreter.v1"
        listed = ci.list_sessions(status="READY", max_results=100)
        assert session_id in [s["sessionId"] for s in listed["items"]]
    finally:
        ci.stop()
    client = ci.data_plane_client
    info = client.get_code_interpreter_session(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                               sessionId=session_id)
    assert info["status"] == "TERMINATED"
    with pytest.raises(ClientError) as e:
        client.invoke_code_interpreter(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                       sessionId=session_id, name="executeCode",
                                       arguments={"code": "1"})
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_boto3_event_stream(alpha):
    s = alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default")
    assert s["codeInterpreterIdentifier"] == "codeq.default"
    sid = s["sessionId"]
    try:
        r = alpha.invoke_code_interpreter(codeInterpreterIdentifier="codeq.default",
                                          sessionId=sid, name="executeCode",
                                          arguments={"code": "6 * 7", "language": "python"})
        assert r["sessionId"] == sid
        events = list(r["stream"])
        assert [list(e) for e in events] == [["result"]]
        res = events[0]["result"]
        assert text_of(res) == "42"
        assert res["isError"] is False
        assert isinstance(res["structuredContent"]["executionTime"], float)
        # A tool error is a result, not an exception: the model reads it.
        r = alpha.invoke_code_interpreter(codeInterpreterIdentifier="codeq.default",
                                          sessionId=sid, name="readFiles",
                                          arguments={"paths": ["missing.txt"]})
        res = results(r)[0]
        assert res["isError"] is True
        # The session is the interpreter's it was started on.
        with pytest.raises(ClientError) as e:
            alpha.get_code_interpreter_session(codeInterpreterIdentifier="aws.codeinterpreter.v1",
                                               sessionId=sid)
        assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    finally:
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default", sessionId=sid)


def test_timeout_header(server, alpha):
    sid = alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default")["sessionId"]

    def add_timeout(request, **kwargs):
        request.headers["x-codeq-timeout-seconds"] = "1"
    alpha.meta.events.register_first("before-sign.bedrock-agentcore.InvokeCodeInterpreter", add_timeout)
    try:
        r = alpha.invoke_code_interpreter(codeInterpreterIdentifier="codeq.default", sessionId=sid,
                                          name="executeCode",
                                          arguments={"code": "import time; time.sleep(30)"})
        res = results(r)[0]
        assert res["isError"] is True
        assert "TIMED_OUT" in str(res) or "timed out" in str(res).lower(), res
    finally:
        alpha.meta.events.unregister("before-sign.bedrock-agentcore.InvokeCodeInterpreter", add_timeout)
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default", sessionId=sid)


def test_unknown_interpreter(alpha):
    with pytest.raises(ClientError) as e:
        alpha.start_code_interpreter_session(codeInterpreterIdentifier="no-such-interpreter")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_client_token_idempotent(alpha):
    token = "t" * 40
    a = alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default", clientToken=token)
    try:
        b = alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default", clientToken=token)
        assert a["sessionId"] == b["sessionId"] and a["createdAt"] == b["createdAt"]
        c = alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default",
                                                 clientToken="u" * 40)
        assert c["sessionId"] != a["sessionId"]
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default",
                                            sessionId=c["sessionId"])
    finally:
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default",
                                            sessionId=a["sessionId"])


def test_pagination_and_tenants(alpha, beta):
    mine = [alpha.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default")["sessionId"]
            for _ in range(3)]
    theirs = beta.start_code_interpreter_session(codeInterpreterIdentifier="codeq.default")["sessionId"]
    try:
        seen, token = [], None
        for _ in range(10):
            kw = {"nextToken": token} if token else {}
            page = alpha.list_code_interpreter_sessions(codeInterpreterIdentifier="codeq.default",
                                                        status="READY", maxResults=2, **kw)
            assert len(page["items"]) <= 2
            seen += [s["sessionId"] for s in page["items"]]
            token = page.get("nextToken")
            if not token:
                break
        assert sorted(seen) == sorted(mine), (seen, mine)
        listed = beta.list_code_interpreter_sessions(codeInterpreterIdentifier="codeq.default")
        assert [s["sessionId"] for s in listed["items"]] == [theirs]
        # Another tenant's session does not exist for beta, whatever the call.
        for call in (lambda: beta.get_code_interpreter_session(
                         codeInterpreterIdentifier="codeq.default", sessionId=mine[0]),
                     lambda: beta.stop_code_interpreter_session(
                         codeInterpreterIdentifier="codeq.default", sessionId=mine[0]),
                     lambda: beta.invoke_code_interpreter(
                         codeInterpreterIdentifier="codeq.default", sessionId=mine[0],
                         name="executeCode", arguments={"code": "1"})):
            with pytest.raises(ClientError) as e:
                call()
            assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert alpha.get_code_interpreter_session(codeInterpreterIdentifier="codeq.default",
                                                  sessionId=mine[0])["status"] == "READY"
    finally:
        for sid in mine:
            alpha.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default", sessionId=sid)
        beta.stop_code_interpreter_session(codeInterpreterIdentifier="codeq.default", sessionId=theirs)


def test_docs_snippet(server, keys):
    """The snippet of docs/agentcore.md, "codeq serve", runs as written."""
    text = open(os.path.join(REPO, "docs", "agentcore.md")).read()
    m = re.search(r"<!-- serve-snippet -->\s*```python\n(.*?)```", text, re.S)
    assert m, "docs/agentcore.md lost its serve snippet"
    env = dict(os.environ, BEDROCK_AGENTCORE_DP_ENDPOINT=server.endpoint,
               AWS_ACCESS_KEY_ID=keys["alpha"][0], AWS_SECRET_ACCESS_KEY=keys["alpha"][1],
               PYTHONPATH=PYDEPS)
    p = subprocess.run(["/usr/bin/python3", "-c", m.group(1)], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "42" in p.stdout


def test_sigterm_finishes_calls_in_progress():
    """SIGTERM: the call in progress still gets its result, then the server exits 0."""
    import http.client
    import json
    import threading
    from conftest import Server
    s = Server(["--no-auth", "--warm-pool", "0"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
        conn.request("PUT", "/code-interpreters/codeq.default/sessions/start", body=b"{}")
        sid = json.loads(conn.getresponse().read())["sessionId"]
        out = {}

        def call():
            c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
            c.request("POST", "/code-interpreters/codeq.default/tools/invoke",
                      body=json.dumps({"name": "executeCode",
                                       "arguments": {"code": "import time; time.sleep(2); print('done')"}}),
                      headers={"x-amzn-code-interpreter-session-id": sid})
            r = c.getresponse()
            out["status"], out["body"] = r.status, r.read()
        t = threading.Thread(target=call)
        t.start()
        time.sleep(1)
        s.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert out.get("status") == 200 and b"done" in out["body"], out
        assert s.proc.wait(60) == 0
    finally:
        s.stop()
