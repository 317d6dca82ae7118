"""tests/serve/test_http.py - what `codeq serve` refuses: bad signatures, unsigned
headers it acts on, hostile HTTP (path traversal, oversized, malformed and non-UTF-8
bodies), unsafe start-up settings; and that it keeps serving after each."""
import http.client
import json
import os
import signal
import socket
import subprocess
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import CODEQ, REGION, Server, client

ID = "codeq.default"


def signed(server, key, method, path, body=b"", headers=None, after_sign=None, send_body=None):
    """A request signed by botocore's SigV4 over exactly this path and body, sent as is."""
    url = server.endpoint + path
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(key[0], key[1]), "bedrock-agentcore", REGION).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    hdrs = dict(req.headers.items())
    hdrs.update(after_sign or {})
    conn.request(method, path, body=body if send_body is None else send_body, headers=hdrs)
    r = conn.getresponse()
    out = (r.status, r.getheader("x-amzn-ErrorType"), r.read())
    conn.close()
    return out


def raw(server, data):
    """What the server answers to these bytes; b"" when it closed the connection."""
    chunks = []
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # closed by the server: no answer
    return b"".join(chunks)


def still_serving(alpha):
    assert "items" in alpha.list_code_interpreter_sessions(codeInterpreterIdentifier=ID)


def test_wrong_secret_and_unknown_key(server, keys, alpha):
    for key in ((keys["alpha"][0], "0" * 64), ("cqk_00000000000000000000", keys["alpha"][1])):
        with pytest.raises(ClientError) as e:
            client(server, key).list_code_interpreter_sessions(codeInterpreterIdentifier=ID)
        assert e.value.response["Error"]["Code"] == "AccessDeniedException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    status, etype, body = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/sessions/list",
                                 b"{}", {"Content-Type": "application/json"})
    assert (status, etype) == (200, None), body
    # Unsigned, and signed but changed afterwards.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
    r = conn.getresponse()
    assert (r.status, r.getheader("x-amzn-ErrorType")) == (403, "AccessDeniedException")
    r.read()
    status, etype, _ = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/sessions/list",
                              b'{"maxResults": 1}', {"Content-Type": "application/json"},
                              send_body=b'{"maxResults": 2}')
    assert (status, etype) == (403, "AccessDeniedException")
    status, etype, _ = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/sessions/list?x=1",
                              b'{}', {"Content-Type": "application/json"})
    assert (status, etype) == (200, None)
    still_serving(alpha)


def test_unsigned_payload_refused(server, keys, alpha):
    req = AWSRequest(method="POST", url=server.endpoint + f"/code-interpreters/{ID}/sessions/list",
                     data=b"{}")
    req.context["payload_signing_enabled"] = False
    req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
    SigV4Auth(Credentials(*keys["alpha"]), "bedrock-agentcore", REGION).add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}",
                 headers=dict(req.headers.items()))
    r = conn.getresponse()
    body = r.read()
    assert (r.status, r.getheader("x-amzn-ErrorType")) == (403, "AccessDeniedException"), body
    assert b"UNSIGNED-PAYLOAD" in body


def test_connection_flood(keys):
    """More connections than --max-connections, held open: refused, and the server
    serves again once they are gone."""
    s = Server(["--no-auth", "--warm-pool", "0", "--max-connections", "8"])
    try:
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(40)]
        for sock in socks:
            try:
                sock.sendall(b"POST /code-interpreters/codeq.default/sessions/list HTTP/1.1\r\n")
            except OSError:
                pass  # refused past the limit
        for sock in socks:
            sock.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
                conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
                r = conn.getresponse()
                assert r.status == 200
                break
            except (ConnectionError, OSError):
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        assert s.stop() == 0


def test_session_header_must_be_signed(server, keys, alpha):
    sid = alpha.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]
    try:
        body = json.dumps({"name": "executeCode", "arguments": {"code": "1"}}).encode()
        status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                    body, {"Content-Type": "application/json"},
                                    after_sign={"x-amzn-code-interpreter-session-id": sid})
        assert (status, etype) == (403, "AccessDeniedException"), out
        assert b"must be signed" in out
        status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                    body, {"Content-Type": "application/json",
                                           "x-amzn-code-interpreter-session-id": sid})
        assert status == 200, out
    finally:
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier=ID, sessionId=sid)


@pytest.mark.parametrize("path", [
    "/code-interpreters/../sessions/list",
    "/code-interpreters/%2e%2e/sessions/list",
    "/code-interpreters/./sessions/list",
    "/code-interpreters//sessions/list",
    "/code-interpreters/a%2Fb/sessions/list",
    "/code-interpreters/codeq.default/sessions/../sessions/list",
    "/code-interpreters/codeq.default/sessions/list/",
    "/code-interpreters/codeq%00/sessions/list",
    "/code-interpreters/%zz/sessions/list",
])
def test_path_traversal_refused(server, keys, alpha, path):
    status, etype, out = signed(server, keys["alpha"], "POST", path, b"{}")
    assert status in (400, 404), (status, out)
    assert etype in ("ResourceNotFoundException", "ValidationException")
    still_serving(alpha)


def test_ids_through_boto3(alpha):
    for bad in ("..", "a/b", "x" * 101):
        with pytest.raises(ClientError) as e:
            alpha.list_code_interpreter_sessions(codeInterpreterIdentifier=bad)
        assert e.value.response["Error"]["Code"] in ("ResourceNotFoundException", "ValidationException")


@pytest.mark.parametrize("body, reason", [
    (b'{"name": "executeCode", "arguments": {"code": "\xff\xfe"}}', "CannotParse"),
    (b'{"name": "executeCode", "arguments": {"code": ', "CannotParse"),
    (b'[1, 2]', "CannotParse"),
    (b'{"name": "executeCode", "arguments": {"code": "1", "sessionId": "x"}}', "FieldValidationFailed"),
    (b'{"name": "rm -rf", "arguments": {}}', "FieldValidationFailed"),
    (b'{"name": "executeCode", "arguments": {"code": 5}}', "FieldValidationFailed"),
])
def test_bad_invoke_bodies(server, keys, alpha, body, reason):
    sid = "doesnotmatter"
    status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                body, {"Content-Type": "application/json",
                                       "x-amzn-code-interpreter-session-id": sid})
    assert (status, etype) == (400, "ValidationException"), out
    assert json.loads(out)["reason"] == reason
    still_serving(alpha)


def test_bad_start_bodies(server, keys, alpha):
    for body in (b'{"sessionTimeoutSeconds": 0}', b'{"sessionTimeoutSeconds": 99999}',
                 b'{"name": ""}', b'{"clientToken": "short"}', b'{"name": "\xc3"}'):
        status, etype, out = signed(server, keys["alpha"], "PUT", f"/code-interpreters/{ID}/sessions/start",
                                    body, {"Content-Type": "application/json"})
        assert (status, etype) == (400, "ValidationException"), (body, out)
    still_serving(alpha)


def test_oversized_body(server, keys, alpha):
    body = b'{"name": "' + b"a" * (9 << 20) + b'"}'  # the server's --max-body is 8M
    status, _, _ = signed(server, keys["alpha"], "PUT", f"/code-interpreters/{ID}/sessions/start", body)
    assert status == 413
    still_serving(alpha)


def test_malformed_http(server, alpha):
    for data in (b"GARBAGE\r\n\r\n", b"POST /code-interpreters/x/sessions/list HTTP/1.1\r\n"
                 b"Host: a\r\nContent-Length: -5\r\n\r\n", b"\x00\xff" * 100 + b"\r\n\r\n"):
        answer = raw(server, data)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:100]
    still_serving(alpha)


def test_wrong_method(server, keys):
    status, etype, _ = signed(server, keys["alpha"], "GET", f"/code-interpreters/{ID}/sessions/list")
    assert status == 405


def test_start_refusals(tmp_path, keys):
    def run(*args):
        return subprocess.run([CODEQ, "serve", "--warm-pool", "0", *args], capture_output=True,
                              text=True, timeout=30)
    p = run("--listen", "127.0.0.1:0")
    assert p.returncode == 2 and "--keys" in p.stderr
    p = run("--no-auth", "--listen", "0.0.0.0:0")
    assert p.returncode == 2 and "loopback" in p.stderr
    p = run("--no-auth", "--listen", ":0")
    assert p.returncode == 2
    open_keys = tmp_path / "keys"
    open_keys.write_text(open(keys["path"]).read())
    open_keys.chmod(0o644)
    p = run("--keys", str(open_keys), "--listen", "127.0.0.1:0")
    assert p.returncode == 2 and "644" in p.stderr, p.stderr
    p = run("--tls-cert", "/nonexistent", "--keys", keys["path"])
    assert p.returncode == 2


def test_no_auth_loopback_and_sigterm(keys):
    s = Server(["--no-auth", "--warm-pool", "0"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read()) == {"items": []}
    finally:
        t = time.monotonic()
        assert s.stop() == 0
    assert time.monotonic() - t < 30


def test_tls(tmp_path, keys):
    """--tls-cert/--tls-key: boto3 verifies the certificate and talks HTTPS."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", "server.key", "-out", "server.crt"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)
    (tmp_path / "server.key").chmod(0o644)
    p = subprocess.run([CODEQ, "serve", "--warm-pool", "0", "--keys", keys["path"], "--listen",
                        "127.0.0.1:0", "--tls-cert", str(tmp_path / "server.crt"), "--tls-key",
                        str(tmp_path / "server.key")], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "644" in p.stderr, p.stderr  # a readable key is refused
    (tmp_path / "server.key").chmod(0o600)
    s = Server(["--warm-pool", "0", "--keys", keys["path"], "--tls-cert",
                str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key")])
    try:
        assert "https://" in s.text()
        import boto3
        c = boto3.client("bedrock-agentcore", region_name=REGION,
                         endpoint_url=f"https://127.0.0.1:{s.port}", verify=str(tmp_path / "server.crt"),
                         aws_access_key_id=keys["alpha"][0], aws_secret_access_key=keys["alpha"][1])
        assert c.list_code_interpreter_sessions(codeInterpreterIdentifier=ID)["items"] == []
        # Plain HTTP on the TLS port gets no answer it could take for one.
        answer = raw(s, b"POST /code-interpreters/codeq.default/sessions/list HTTP/1.1\r\nHost: a\r\n\r\n")
        assert not answer.startswith(b"HTTP/1.1 200")
    finally:
        assert s.stop() == 0


def test_rate_limit():
    """--max-rate N: at most N a second per tenant (bursts of N), ThrottlingException past it."""
    s = Server(["--no-auth", "--warm-pool", "0", "--max-rate", "5"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        answers = []
        t0 = time.monotonic()
        for _ in range(40):
            conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
            r = conn.getresponse()
            r.read()
            answers.append((r.status, r.getheader("x-amzn-ErrorType")))
        elapsed = time.monotonic() - t0
        ok = sum(1 for a in answers if a[0] == 200)
        assert set(answers) <= {(200, None), (429, "ThrottlingException")}, answers
        assert ok <= 5 + 5 * elapsed + 1, (ok, elapsed)
        time.sleep(1.2)
        conn.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
        assert conn.getresponse().status == 200
    finally:
        assert s.stop() == 0
