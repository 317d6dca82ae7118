"""`codeq serve --brokers`: AgentCore's REST API as a gateway to the fleet. The sessions
live on the fleet's workers (checked in Redis), state is kept across invokes, and the
sessions outlive the gateway (its replicas share them: test_serve_replicas.py)."""
import http.client
import json
import os
import re
import signal
import struct
import subprocess
import tempfile
import time

from test_cli_fleet import CODEQ, cli_env, fleet_sessions

ID = "aws.codeinterpreter.v1"


def result_event(data):
    """The JSON payload of the one event of an AWS event stream answer."""
    total, headers_len = struct.unpack(">II", data[:8])
    assert total == len(data), (total, len(data))
    assert b":event-type" in data[12:12 + headers_len] and b"result" in data[12:12 + headers_len]
    return json.loads(data[12 + headers_len:total - 4])


def events(data):
    """The JSON payloads of every event of an AWS event stream answer, in order."""
    out = []
    while data:
        total, headers_len = struct.unpack(">II", data[:8])
        out.append(json.loads(data[12 + headers_len:total - 4]))
        data = data[total:]
    return out


def start_serve(fleet, *args):
    """codeq serve in front of the fleet, on a free port: (process, port, log file)."""
    log = tempfile.NamedTemporaryFile(prefix="codeq-serve-fleet-", delete=False)
    p = subprocess.Popen([CODEQ, "serve", *args, "--listen", "127.0.0.1:0", "--brokers",
                          fleet.env["CODEQ_BROKERS"], "--request-topic", fleet.request_topic],
                         env=cli_env(fleet), stderr=log)
    for _ in range(600):
        m = re.search(r"\(port (\d+)\)", open(log.name, errors="replace").read())
        if m:
            return p, int(m.group(1)), log
        assert p.poll() is None, open(log.name, errors="replace").read()
        time.sleep(0.05)
    p.kill()
    raise AssertionError(open(log.name, errors="replace").read())


def test_serve_gateway_on_the_fleet(fleet, redis_client):
    before = fleet_sessions(redis_client, fleet)
    p, port, log = start_serve(fleet, "--no-auth")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)

        def call(method, path, body=None, headers=None):
            conn.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                         headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()

        status, out = call("PUT", f"/code-interpreters/{ID}/sessions/start", {"name": "fleet-serve"})
        assert status == 200, out
        sid = json.loads(out)["sessionId"]
        owner = redis_client.hget(f"{fleet.prefix}session:{sid}", "owner").decode()
        assert owner in fleet.workers
        hdr = {"x-amzn-code-interpreter-session-id": sid}
        status, out = call("POST", f"/code-interpreters/{ID}/tools/invoke",
                           {"name": "executeCode", "arguments": {"code": "counter = 41"}}, hdr)
        assert status == 200, out
        status, out = call("POST", f"/code-interpreters/{ID}/tools/invoke",
                           {"name": "executeCode", "arguments": {"code": "print(counter + 1)"}}, hdr)
        assert status == 200, out
        assert result_event(out)["structuredContent"]["stdout"] == "42\n"
        status, out = call("GET", f"/code-interpreters/{ID}/sessions/get?sessionId={sid}")
        assert status == 200 and json.loads(out)["status"] == "READY", out
        # A second session left running: it outlives the gateway (below).
        status, out = call("PUT", f"/code-interpreters/{ID}/sessions/start", {})
        assert status == 200, out
        left = json.loads(out)["sessionId"]
        status, out = call("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}", {})
        assert status == 200, out
        status, out = call("GET", f"/code-interpreters/{ID}/sessions/get?sessionId={sid}")
        assert json.loads(out)["status"] == "TERMINATED", out
        assert left in fleet_sessions(redis_client, fleet)
        # The fleet's interpreters live in its Redis, which the gateway does not reach:
        # the control plane says so rather than serving the local store's.
        status, out = call("POST", "/code-interpreters", {})
        assert status == 400 and b"codeq interpreter --fleet" in out, out
        conn.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
        os.unlink(log.name)
    # The session left running outlives the gateway (other replicas may serve it, and a
    # gateway started again does: tests/fleet/test_serve_replicas.py); stopped here.
    assert left in fleet_sessions(redis_client, fleet)
    p, port, log = start_serve(fleet, "--no-auth")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
        conn.request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={left}", body=b"{}")
        r = conn.getresponse()
        assert r.status == 200, r.read()
        conn.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
        os.unlink(log.name)
    assert fleet_sessions(redis_client, fleet) == before


def test_serve_streams_output_from_the_fleet(fleet):
    """x-codeq-stream: output in front of the fleet: the workers' output chunks come as
    chunk events before the final result."""
    p, port, log = start_serve(fleet, "--no-auth")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=180)
        conn.request("PUT", f"/code-interpreters/{ID}/sessions/start", body=b"{}")
        r = conn.getresponse()
        sid = json.loads(r.read())["sessionId"]
        code = "import time, sys\nprint('a', flush=True)\ntime.sleep(2)\nprint('b')\nsys.stderr.write('e')\n"
        conn.request("POST", f"/code-interpreters/{ID}/tools/invoke",
                     body=json.dumps({"name": "executeCode", "arguments": {"code": code}}).encode(),
                     headers={"x-amzn-code-interpreter-session-id": sid, "x-codeq-stream": "output"})
        r = conn.getresponse()
        assert r.status == 200
        *chunks, final = events(r.read())
        assert final["isError"] is False and final["structuredContent"]["stdout"] == "a\nb\n", final
        assert all("isError" not in c for c in chunks), chunks
        assert len(chunks) >= 3, chunks  # a, b (two seconds later) and e
        assert "".join(c["structuredContent"].get("stdout", "") for c in chunks) == "a\nb\n"
        assert "".join(c["structuredContent"].get("stderr", "") for c in chunks) == "e"
        conn.request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}", body=b"{}")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
        os.unlink(log.name)


def _signed(port, key_id, secret, path, body=b"{}"):
    """A SigV4-signed POST (Debian's botocore signs it) and its status."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    url = f"http://127.0.0.1:{port}{path}"
    req = AWSRequest(method="POST", url=url, data=body,
                     headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(key_id, secret), "bedrock-agentcore", "us-east-1").add_auth(req)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", path, body=body, headers=dict(req.headers.items()))
    r = conn.getresponse()
    out = r.status, r.read()
    conn.close()
    return out


def test_serve_verifies_against_the_fleets_keyring(fleet):
    """--keys redis: the keys the fleet's own tools keep in its Redis, revocation
    included, with no keys file on the gateway's machine."""
    env = cli_env(fleet)
    subprocess.run([CODEQ, "tenant", "create", "gw", "--keys", "redis"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([CODEQ, "key", "create", "gw", "--keys", "redis"], env=env, check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    key_id, secret = fields["key_id"], fields["secret"]
    p, port, log = start_serve(fleet, "--keys", "redis")
    try:
        path = f"/code-interpreters/{ID}/sessions/list"
        status, body = _signed(port, key_id, secret, path)
        assert status == 200 and json.loads(body)["items"] == [], body
        status, body = _signed(port, key_id, "not" + secret[3:], path)
        assert status == 403, body
        subprocess.run([CODEQ, "key", "revoke", key_id, "--keys", "redis"], env=env, check=True,
                       capture_output=True)
        deadline = time.time() + 10
        while True:
            status, body = _signed(port, key_id, secret, path)
            if status == 403 or time.time() > deadline:
                break
            time.sleep(0.2)
        # A revoked key is answered as one that never existed.
        assert status == 403 and b"unknown access key" in body, body
        assert secret not in open(log.name, errors="replace").read()
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(120) == 0
        os.unlink(log.name)
