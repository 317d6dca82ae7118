#!/usr/bin/env python3
"""Invoke round trip through `codeq serve` against `codeq mcp` (issue 16's goal: no more
than 0.3 ms extra at p50).

Both run executeCode `1+1` in a live session of their own embedded worker (no warm pool,
whose refilling would compete for the CPU while the calls are timed), one call at a
time:
  mcp    JSON-RPC tools/call on codeq mcp's stdin, until its response line is read
  serve  InvokeCodeInterpreter over one keep-alive HTTP/1.1 connection, SigV4-signed
         (the server verifies every request), until the whole event stream is read
Requests to serve are signed before the clock starts (botocore's signer costs the client,
not the server), so the difference is what HTTP, SigV4 verification, the routing and the
event stream framing add on the server's side.

usage: bench/serve_bench.py [--codeq build/bin/codeq] [--runs 500]
Needs root (codeq) and build/pydeps-agentcore (scripts/setup: botocore).
"""
import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ.get("CODEQ_AGENTCORE_PYDEPS") or os.path.join(REPO, "build", "pydeps-agentcore"))
from botocore.auth import SigV4Auth  # noqa: E402
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

CODE = "1+1"
ID = "codeq.default"


def summary(name, samples):
    s = sorted(samples)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"{name:<8} p50 {statistics.median(s):8.3f}  mean {statistics.mean(s):8.3f}  p95 {p95:8.3f}  min {s[0]:8.3f} ms  ({len(s)} calls)"


def bench_mcp(codeq, runs, warmup):
    p = subprocess.Popen([codeq, "mcp", "--warm-pool", "0"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    n = 0

    def rpc(method, params):
        nonlocal n
        n += 1
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}) + "\n")
        return json.loads(p.stdout.readline())

    rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "bench", "version": "1"}})
    sid = rpc("tools/call", {"name": "startSession", "arguments": {}})["result"]["structuredContent"]["sessionId"]
    samples = []
    for i in range(warmup + runs):
        t = time.perf_counter()
        r = rpc("tools/call", {"name": "executeCode", "arguments": {"code": CODE, "sessionId": sid}})
        dt = (time.perf_counter() - t) * 1000
        assert not r["result"]["isError"], r
        if i >= warmup:
            samples.append(dt)
    p.stdin.close()
    p.wait(timeout=60)
    return samples


def bench_serve(codeq, runs, warmup):
    tmp = tempfile.mkdtemp(prefix="codeq-serve-bench-")
    keys = os.path.join(tmp, "keys")
    subprocess.run([codeq, "tenant", "create", "bench", "--keys", keys], check=True, capture_output=True)
    out = subprocess.run([codeq, "key", "create", "bench", "--keys", keys], check=True,
                         capture_output=True, text=True).stdout
    f = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    creds = Credentials(f["key_id"], f["secret"])
    log = open(os.path.join(tmp, "log"), "w+")
    p = subprocess.Popen([codeq, "serve", "--listen", "127.0.0.1:0", "--keys", keys, "--warm-pool", "0"],
                         stderr=log)
    port = None
    for _ in range(600):
        log.seek(0)
        m = re.search(r"\(port (\d+)\)", log.read())
        if m:
            port = int(m.group(1))
            break
        time.sleep(0.05)
    assert port, "codeq serve did not start"
    base = f"http://127.0.0.1:{port}"
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def signed(method, path, body, headers):
        req = AWSRequest(method=method, url=base + path, data=body, headers=headers)
        SigV4Auth(creds, "bedrock-agentcore", "us-east-1").add_auth(req)
        return method, path, body, dict(req.headers.items())

    def send(req):
        method, path, body, headers = req
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        assert r.status == 200, data
        return data

    start = signed("PUT", f"/code-interpreters/{ID}/sessions/start", b"{}",
                   {"Content-Type": "application/json"})
    sid = json.loads(send(start))["sessionId"]
    body = json.dumps({"name": "executeCode", "arguments": {"code": CODE}}).encode()
    # Signed ahead: well within the verifier's 5 minutes of clock skew.
    reqs = [signed("POST", f"/code-interpreters/{ID}/tools/invoke", body,
                   {"Content-Type": "application/json", "x-amzn-code-interpreter-session-id": sid})
            for _ in range(warmup + runs)]
    samples = []
    for i, req in enumerate(reqs):
        t = time.perf_counter()
        data = send(req)
        dt = (time.perf_counter() - t) * 1000
        assert b'"isError":false' in data, data
        if i >= warmup:
            samples.append(dt)
    conn.close()
    p.terminate()
    p.wait(timeout=60)
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codeq", default=os.path.join(REPO, "build", "bin", "codeq"))
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    a = ap.parse_args()
    mcp = bench_mcp(a.codeq, a.runs, a.warmup)
    serve = bench_serve(a.codeq, a.runs, a.warmup)
    print(summary("mcp", mcp))
    print(summary("serve", serve))
    print(f"serve - mcp at p50: {statistics.median(serve) - statistics.median(mcp):+.3f} ms (goal <= 0.3)")


if __name__ == "__main__":
    main()
