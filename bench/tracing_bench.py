#!/usr/bin/env python3
"""Tracing's cost on the path: the same executeCode round trip through `codeq mcp` with
tracing off, on with a dead collector, and on with a live one, side by side.

Three `codeq mcp` servers run at once (no warm pool; one session each, started before
timing), and the calls go to them in turn (off, dead, live, off, ...), so that the
load of a shared machine falls on all three alike. Every call carries a fresh
_meta.traceparent. The live collector is a separate process (an OTLP/HTTP endpoint that
answers 200 and counts spans), the dead one a loopback port nobody listens on.

usage: bench/tracing_bench.py [--codeq build/bin/codeq] [--runs 300] [--code '1+1']
Needs root (codeq).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid

COLLECTOR = r"""
import http.server, json, sys
spans = 0
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global spans
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        for rs in body["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                spans += len(ss["spans"])
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"{}")
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(str(spans).encode())
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class Mcp:
    def __init__(self, codeq, endpoint):
        env = dict(os.environ)
        env.pop("CODEQ_OTLP_ENDPOINT", None)
        args = [codeq, "mcp", "--warm-pool", "0"]
        if endpoint:
            args += ["--otlp-endpoint", endpoint]
        self.p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1, env=env)
        self.n = 0
        self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "bench", "version": "1"}})
        self.sid = self.rpc("tools/call", {"name": "startSession", "arguments": {}})[
            "structuredContent"]["sessionId"]

    def rpc(self, method, params):
        self.n += 1
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method,
                                       "params": params}) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def call(self, code):
        meta = {"traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"}
        t = time.perf_counter()
        r = self.rpc("tools/call", {"name": "executeCode", "_meta": meta,
                                    "arguments": {"sessionId": self.sid, "code": code}})
        ms = (time.perf_counter() - t) * 1000
        if r["isError"]:
            raise RuntimeError(r)
        return ms

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=120)


def dead_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1/traces"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codeq", default="build/bin/codeq")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--code", default="1+1")
    a = ap.parse_args()
    collector = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdout=subprocess.PIPE,
                                 text=True)
    port = int(collector.stdout.readline())
    live = f"http://127.0.0.1:{port}/v1/traces"
    servers = {"off": Mcp(a.codeq, None), "on, collector dead": Mcp(a.codeq, dead_endpoint()),
               "on, collector live": Mcp(a.codeq, live)}
    try:
        samples = {name: [] for name in servers}
        for name, s in servers.items():  # warm-up: the kernel's first cells
            for _ in range(10):
                s.call(a.code)
        for _ in range(a.runs):
            for name, s in servers.items():
                samples[name].append(s.call(a.code))
    finally:
        for s in servers.values():
            s.close()
    import urllib.request
    got = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
    collector.terminate()
    collector.wait()
    base = statistics.median(samples["off"])
    print(f"executeCode {a.code!r} through codeq mcp, {a.runs} calls each, interleaved (ms)")
    print(f"{'tracing':<22} {'p50':>8} {'p95':>8} {'mean':>8} {'p50 vs off':>11}")
    for name, xs in samples.items():
        s = sorted(xs)
        p50, p95 = statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.95))]
        print(f"{name:<22} {p50:8.3f} {p95:8.3f} {statistics.mean(s):8.3f} "
              f"{(p50 / base - 1) * 100:+10.1f}%")
    print(f"spans the live collector received: {got} (2 a call expected: "
          f"{2 * (a.runs + 10)} + the session's)")


if __name__ == "__main__":
    main()
