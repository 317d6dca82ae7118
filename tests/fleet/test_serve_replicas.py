"""Replicas of `codeq serve --brokers` behind a load balancer: who owns a session is in
the fleet's Redis, not in one gateway's memory, so a session started through one replica
is used, listed, read and stopped through another, outlives a gateway killed and
restarted, stays another tenant's ResourceNotFoundException, and a clientToken makes one
session whichever replica each try reaches."""
import http.client
import json
import os
import secrets
import signal
import sys
import tempfile

import pytest

from test_cli_fleet import fleet_sessions
from test_serve_fleet import result_event, start_serve

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "serve"))
from serve_process import make_key  # noqa: E402

ID = "aws.codeinterpreter.v1"


class Gateway:
    """One replica: `codeq serve --brokers --keys FILE` on a port of its own."""

    def __init__(self, fleet, keys):
        self.fleet, self.keys = fleet, keys
        self.proc, self.port, self.log = start_serve(fleet, "--keys", keys)

    def call(self, key, method, path, body=None, headers=None):
        """A SigV4-signed request (Debian's botocore signs it): (status, body bytes)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        data = json.dumps(body).encode() if body is not None else b""
        h = {"Content-Type": "application/json", **(headers or {})}
        req = AWSRequest(method=method, url=f"http://127.0.0.1:{self.port}{path}", data=data,
                         headers=h)
        SigV4Auth(Credentials(*key), "bedrock-agentcore", "us-east-1").add_auth(req)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)
        conn.request(method, path, body=data, headers=dict(req.headers.items()))
        r = conn.getresponse()
        out = r.status, r.read()
        conn.close()
        return out

    def start(self, key, interp=ID, **body):
        status, out = self.call(key, "PUT", f"/code-interpreters/{interp}/sessions/start", body)
        assert status == 200, (status, out)
        return json.loads(out)["sessionId"]

    def run(self, key, sid, code):
        """(status, stdout or the error body) of executeCode in sid."""
        status, out = self.call(key, "POST", f"/code-interpreters/{ID}/tools/invoke",
                                {"name": "executeCode", "arguments": {"code": code}},
                                {"x-amzn-code-interpreter-session-id": sid})
        if status != 200:
            return status, out
        return status, result_event(out)["structuredContent"]["stdout"]

    def get(self, key, sid):
        status, out = self.call(key, "GET", f"/code-interpreters/{ID}/sessions/get?sessionId={sid}")
        return status, json.loads(out)

    def stop(self, key, sid):
        return self.call(key, "PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}", {})

    def list(self, key, **body):
        status, out = self.call(key, "POST", f"/code-interpreters/{ID}/sessions/list", body)
        assert status == 200, (status, out)
        return json.loads(out)

    def mcp_run(self, key, sid, code):
        """executeCode in sid over /mcp (a new MCP session, the key as bearer token): the
        tool's result."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=180)
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "Authorization": f"Bearer {key[0]}:{key[1]}"}
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "replicas", "version": "1"}}}
        conn.request("POST", "/mcp", body=json.dumps(init), headers=h)
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        h["Mcp-Session-Id"] = r.getheader("Mcp-Session-Id")
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "executeCode", "arguments": {"sessionId": sid, "code": code}}}
        conn.request("POST", "/mcp", body=json.dumps(call), headers=h)
        r = conn.getresponse()
        body = r.read().decode()
        conn.close()
        assert r.status == 200, body
        events = [json.loads(line[len("data: "):]) for line in body.splitlines()
                  if line.startswith("data: ")] or [json.loads(body)]
        return [e for e in events if e.get("id") == 2][0]["result"]

    def kill(self):
        self.proc.kill()
        self.proc.wait(60)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(120) == 0, open(self.log.name, errors="replace").read()
        if os.path.exists(self.log.name):
            os.unlink(self.log.name)


@pytest.fixture
def replicas(fleet, redis_client):
    """Replicas sharing a keys file with two tenants (of this test alone: the fleet and
    its Redis are the module's); every session the fleet has at the end that it did not
    have before is stopped, and must be."""
    before = fleet_sessions(redis_client, fleet)
    keys = os.path.join(tempfile.mkdtemp(prefix="codeq-replicas-"), "keys")
    run = secrets.token_hex(3)
    alpha, beta = make_key(keys, f"alpha-{run}"), make_key(keys, f"beta-{run}")
    made = []

    def gateway():
        g = Gateway(fleet, keys)
        made.append(g)
        return g

    yield gateway, alpha, beta
    for g in made:
        g.close()
    assert fleet_sessions(redis_client, fleet) == before


def test_a_session_is_every_replicas(replicas, redis_client, fleet):
    gateway, alpha, beta = replicas
    a, b = gateway(), gateway()
    sid = a.start(alpha, name="shared")
    assert a.run(alpha, sid, "x = 41") == (200, "")
    # Used, read and listed through the other replica.
    assert b.run(alpha, sid, "print(x + 1)") == (200, "42\n")
    status, got = b.get(alpha, sid)
    assert status == 200 and got["status"] == "READY" and got["sessionId"] == sid, got
    assert [s["sessionId"] for s in b.list(alpha)["items"]] == [sid]
    # /mcp is in the same namespace, on every replica.
    assert b.mcp_run(alpha, sid, "print(x)")["structuredContent"]["stdout"] == "41\n"
    assert "not found" in json.dumps(b.mcp_run(beta, sid, "print(x)"))
    # The record is the fleet's Redis', with the tenant that started it.
    record = redis_client.hgetall(f"{fleet.prefix}gateway:session:{sid}")
    assert record[b"tenant"].startswith(b"alpha-") and record[b"interpreter"] == ID.encode(), record
    # It lives as the fleet's session:<sid> does: the session's time to live (900 s by
    # default) and an hour.
    assert redis_client.pttl(f"{fleet.prefix}gateway:session:{sid}") > 3600 * 1000
    # Another tenant finds nothing, through either replica, and can stop nothing.
    for g in (a, b):
        status, got = g.get(beta, sid)
        assert status == 404, got
        status, out = g.run(beta, sid, "print(x)")
        assert status == 404, out
        assert g.list(beta)["items"] == []
        assert g.stop(beta, sid)[0] == 404
    # The session is the interpreter's it was started on: under another id it is none.
    status, out = b.call(alpha, "GET", f"/code-interpreters/codeq.default/sessions/get?sessionId={sid}")
    assert status == 404, out
    # Stopped through B: A runs nothing more in it, and reads it TERMINATED.
    status, out = b.stop(alpha, sid)
    assert status == 200, out
    assert 0 < redis_client.pttl(f"{fleet.prefix}gateway:session:{sid}") <= 3600 * 1000
    status, out = a.run(alpha, sid, "print(x)")
    assert status == 404 and b"no running session" in out, (status, out)
    status, got = a.get(alpha, sid)
    assert status == 200 and got["status"] == "TERMINATED", got
    assert [s["sessionId"] for s in a.list(alpha, status="READY")["items"]] == []
    assert [s["sessionId"] for s in a.list(alpha, status="TERMINATED")["items"]] == [sid]


def test_pages_of_a_tenants_sessions_across_replicas(replicas, redis_client, fleet):
    gateway, alpha, beta = replicas
    a, b = gateway(), gateway()
    mine = [a.start(alpha) for _ in range(3)]
    other = b.start(beta)
    try:
        first = b.list(alpha, maxResults=2)
        assert len(first["items"]) == 2 and "nextToken" in first, first
        second = a.list(alpha, maxResults=2, nextToken=first["nextToken"])
        assert len(second["items"]) == 1 and "nextToken" not in second, second
        listed = [s["sessionId"] for s in first["items"] + second["items"]]
        # Newest first, each once, only alpha's.
        assert listed == mine[::-1], (listed, mine)
        assert [s["sessionId"] for s in a.list(beta)["items"]] == [other]
        # A token that is not one of these pages' is refused, not taken as a place.
        for junk in ("zzz", "0" * 200, first["nextToken"] + "x" * 41, "%015d:a/b" % 1):
            status, out = a.call(alpha, "POST", f"/code-interpreters/{ID}/sessions/list",
                                 {"nextToken": junk})
            assert status == 400 and b"nextToken" in out, (junk, status, out)
        # A record gone (expired) is listed no more, and its index entry goes with it.
        assert a.stop(alpha, mine[0])[0] == 200
        redis_client.delete(f"{fleet.prefix}gateway:session:{mine[0]}")
        index = f"{fleet.prefix}gateway:sessions:" + \
            redis_client.hget(f"{fleet.prefix}gateway:session:{mine[1]}", "tenant").decode()
        assert redis_client.zcard(index) == 3
        assert [s["sessionId"] for s in b.list(alpha)["items"]] == mine[:0:-1]
        assert redis_client.zcard(index) == 2
        mine.pop(0)
    finally:
        for sid in mine:
            assert a.stop(alpha, sid)[0] == 200
        assert b.stop(beta, other)[0] == 200


def test_a_gateway_killed_and_restarted_keeps_its_sessions(replicas):
    gateway, alpha, beta = replicas
    a = gateway()
    sid = a.start(alpha)
    assert a.run(alpha, sid, "kept = 'yes'") == (200, "")
    a.kill()  # kill -9: nothing of it runs at its end
    again = gateway()
    assert again.run(alpha, sid, "print(kept)") == (200, "yes\n")
    status, got = again.get(alpha, sid)
    assert status == 200 and got["status"] == "READY", got
    assert again.get(beta, sid)[0] == 404
    # Stopped by SIGTERM, a replica leaves the sessions to the others: the next finds it.
    again.close()
    third = gateway()
    assert third.run(alpha, sid, "print(kept)") == (200, "yes\n")
    assert third.stop(alpha, sid)[0] == 200


def test_client_token_makes_one_session_across_replicas(replicas):
    gateway, alpha, beta = replicas
    a, b = gateway(), gateway()
    token = "t" * 40
    sid = a.start(alpha, clientToken=token)
    assert b.start(alpha, clientToken=token) == sid
    assert a.start(alpha, clientToken=token) == sid
    # The token is the tenant's: beta's same token is another session of beta's.
    theirs = b.start(beta, clientToken=token)
    assert theirs != sid
    assert a.get(alpha, theirs)[0] == 404
    # Used again on another interpreter: refused, the session left alone.
    status, out = b.call(alpha, "PUT", "/code-interpreters/codeq.default/sessions/start",
                         {"clientToken": token})
    assert status == 400 and b"IdempotentParameterMismatchException" in out, (status, out)
    assert b.get(alpha, sid)[1]["status"] == "READY"
    assert a.stop(alpha, sid)[0] == 200
    assert a.stop(beta, theirs)[0] == 200
