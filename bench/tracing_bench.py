#!/usr/bin/env python3
"""Tracing's cost on the path: the same executeCode round trip through `codeq mcp` with
tracing off, on with a dead collector, and on with a live one, side by side.

Three `codeq mcp` servers run at once (no warm pool; one session each, started before
timing), and the calls go to them in turn (off, dead, live; each round starting with
the next one), so that the load of a shared machine falls on all three alike. Every call carries a fresh
_meta.traceparent. The live collector is a separate process (an OTLP/HTTP endpoint that
answers 200 and counts spans), the dead one a loopback port nobody listens on.

With --fleet, the same through three fleets (a dispatcher and a worker each, with the
three settings of otlp_endpoint) and the Python client, on the Kafka and Redis of
scripts/services (CODEQ_KAFKA_PORT, CODEQ_REDIS_PORT; started when they do not answer).

usage: bench/tracing_bench.py [--codeq build/bin/codeq] [--runs 300] [--code '1+1'] [--fleet]
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


class FleetTarget:
    """A fleet of its own (one dispatcher, one worker: tests/fleet/conftest.py's Fleet)
    with a session, called through the Python client with a traceparent header."""

    def __init__(self, endpoint):
        import redis
        from conftest import BROKERS, REDIS_PORT, Fleet
        from codeq_client import Client
        self.fleet = Fleet()
        if endpoint:
            self.fleet.env["CODEQ_OTLP_ENDPOINT"] = endpoint
        self.fleet.start_worker("a")
        self.fleet.wait_workers(redis.Redis(host="127.0.0.1", port=REDIS_PORT), 1)
        self.fleet.start_dispatcher()
        self.client = Client(BROKERS, request_topic=self.fleet.request_topic)
        self.session = self.client.start_session()

    def call(self, code):
        parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        t = time.perf_counter()
        r = self.session.execute_code(code, traceparent=parent)
        ms = (time.perf_counter() - t) * 1000
        if r["isError"]:
            raise RuntimeError(r)
        return ms

    def close(self):
        self.session.stop()
        self.client.close()
        self.fleet.stop()


def fleet_targets(endpoints):
    """Kafka and Redis on scripts/services' ports (CODEQ_KAFKA_PORT, CODEQ_REDIS_PORT),
    started in a scratch directory unless they answer; returns (targets, stop)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(repo, "tests", "fleet"))
    import conftest
    started = None
    if not (conftest._answers(conftest.KAFKA_PORT) and conftest._answers(conftest.REDIS_PORT)):
        import tempfile
        started = tempfile.mkdtemp(prefix="codeq-tracing-bench-")
        subprocess.run([conftest.SERVICES, "up", "--dir", started], check=True, timeout=300)

    def stop():
        if started:
            subprocess.run([conftest.SERVICES, "down", "--dir", started], check=False,
                           timeout=120)
    try:
        return {name: FleetTarget(e) for name, e in endpoints.items()}, stop
    except BaseException:
        stop()
        raise


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codeq", default="build/bin/codeq")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--code", default="1+1")
    ap.add_argument("--fleet", action="store_true",
                    help="through three fleets (dispatcher + worker each; Kafka and Redis of "
                         "scripts/services, CODEQ_BIN_DIR's daemons) instead of codeq mcp")
    a = ap.parse_args()
    collector = subprocess.Popen([sys.executable, "-c", COLLECTOR], stdout=subprocess.PIPE,
                                 text=True)
    port = int(collector.stdout.readline())
    live = f"http://127.0.0.1:{port}/v1/traces"
    endpoints = {"off": None, "on, collector dead": dead_endpoint(), "on, collector live": live}
    stop_services = None
    if a.fleet:
        servers, stop_services = fleet_targets(endpoints)
        path = "the fleet (Python client)"
    else:
        servers = {name: Mcp(a.codeq, e) for name, e in endpoints.items()}
        path = "codeq mcp"
    try:
        samples = {name: [] for name in servers}
        for name, s in servers.items():  # warm-up: the kernel's first cells
            for _ in range(10):
                s.call(a.code)
        order = list(servers)
        for i in range(a.runs):
            # Each round starts with another server: none is always first after a pause.
            for name in order[i % 3:] + order[:i % 3]:
                samples[name].append(servers[name].call(a.code))
    finally:
        for s in servers.values():
            s.close()
        if stop_services:
            stop_services()
    import urllib.request
    got = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/").read())
    collector.terminate()
    collector.wait()
    base = statistics.median(samples["off"])
    print(f"executeCode {a.code!r} through {path}, {a.runs} calls each, interleaved (ms)")
    print(f"{'tracing':<22} {'p50':>8} {'p95':>8} {'mean':>8} {'p50 vs off':>11}")
    for name, xs in samples.items():
        s = sorted(xs)
        p50, p95 = statistics.median(s), s[min(len(s) - 1, int(len(s) * 0.95))]
        print(f"{name:<22} {p50:8.3f} {p95:8.3f} {statistics.mean(s):8.3f} "
              f"{(p50 / base - 1) * 100:+10.1f}%")
    per_call = 3 if a.fleet else 2
    print(f"spans the live collector received: {got} ({per_call} a call expected: "
          f"{per_call * (a.runs + 10)} + the sessions')")


if __name__ == "__main__":
    main()
