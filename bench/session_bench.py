#!/usr/bin/env python3
"""Sessions: codeq against a Jupyter kernel given the same work, in one run.

  (a) new session to the first result of `import numpy, pandas, matplotlib; print(1)`
      codeq: startSession (served from the warm pool) + executeCode, through `codeq mcp`
      Jupyter: start an ipykernel, wait until ready, execute the same cell
  (b) round trip of `1+1` in a live session
      codeq: executeCode through `codeq mcp` (JSON-RPC on a pipe, in this process)
      Jupyter: execute_request on the kernel's shell channel until status idle
  (c) memory of an idle session after (a): the drop of MemAvailable per session while
      SESSIONS of them are alive, and for codeq also the session cgroup's own count

usage: bench/session_bench.py [--codeq build/bin/codeq] [--runs 300] [--cold 10]
Needs root (codeq) and python3-jupyter-client + python3-ipykernel (scripts/setup).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bench_common import execute, mem_available_kb

CELL_A = "import numpy, pandas, matplotlib; print(1)"
SESSIONS = 5


def summary(name, samples_ms):
    s = sorted(samples_ms)
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return f"{name:<52} {statistics.median(s):9.3f} {statistics.mean(s):9.3f} {p95:9.3f} {s[0]:9.3f} {len(s):6d}"


class Mcp:
    def __init__(self, codeq, pool):
        self.p = subprocess.Popen([codeq, "mcp", "--warm-pool", str(pool)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, bufsize=1)
        self.n = 0
        self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "bench", "version": "1"}})

    def rpc(self, method, params):
        self.n += 1
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.n, "method": method,
                                       "params": params}) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]

    def call(self, tool, **args):
        result = self.rpc("tools/call", {"name": tool, "arguments": args})
        if result.get("isError"):
            raise RuntimeError(f"{tool}: {result}")
        return result

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=60)


def session_cgroup_bytes(server_pid):
    """Memory charged to each session cgroup of the server (cgroup v1 or v2)."""
    sizes = []
    with open("/proc/self/cgroup") as f:
        lines = [l.strip().split(":", 2) for l in f]
    own = {}
    for _, controllers, path in lines:
        for c in controllers.split(","):
            own[c] = path
        if controllers == "":
            own[""] = path
    if os.path.isdir("/sys/fs/cgroup/memory"):
        base = "/sys/fs/cgroup/memory" + own.get("memory", "/").rstrip("/") + "/codeq"
        usage = "memory.usage_in_bytes"
    else:
        base = "/sys/fs/cgroup" + own.get("", "/").rstrip("/") + "/codeq"
        usage = "memory.current"
    for name in os.listdir(base):
        if name.startswith(f"{server_pid}-"):
            with open(os.path.join(base, name, usage)) as f:
                sizes.append(int(f.read()))
    return sizes


def bench_codeq(codeq, runs, cold):
    out = {}
    # (a) with a warm pool large enough that every start is served from it: the pool
    # refills in the background, so starts are spaced by a refill's time.
    server = Mcp(codeq, pool=2)
    time.sleep(4)  # let the pool fill (imports take ~1.2 s a sandbox)
    starts = []
    for _ in range(cold):
        t0 = time.perf_counter()
        sid = server.call("startSession")["structuredContent"]["sessionId"]
        r = server.call("executeCode", sessionId=sid, code=CELL_A)
        starts.append((time.perf_counter() - t0) * 1000)
        assert r["structuredContent"]["stdout"] == "1\n", r
        server.call("stopSession", sessionId=sid)
        time.sleep(1.6)
    out["a"] = starts
    # (b) round trips in one live session
    sid = server.call("startSession")["structuredContent"]["sessionId"]
    server.call("executeCode", sessionId=sid, code="1+1")
    rtts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        r = server.call("executeCode", sessionId=sid, code="1+1")
        rtts.append((time.perf_counter() - t0) * 1000)
    assert r["content"][0]["text"] == "2", r
    out["b"] = rtts
    server.call("stopSession", sessionId=sid)
    server.close()
    # (c) idle sessions after (a)'s work, pool off so nothing else is alive
    server = Mcp(codeq, pool=0)
    before = mem_available_kb()
    sids = []
    for _ in range(SESSIONS):
        sid = server.call("startSession")["structuredContent"]["sessionId"]
        server.call("executeCode", sessionId=sid, code=CELL_A)
        sids.append(sid)
    time.sleep(1)
    out["c_host_kb"] = (before - mem_available_kb()) / SESSIONS
    cg = session_cgroup_bytes(server.p.pid)
    out["c_cgroup_kb"] = sum(cg) / len(cg) / 1024 if cg else float("nan")
    for sid in sids:
        server.call("stopSession", sessionId=sid)
    server.close()
    return out


def bench_jupyter(runs, cold):
    # ipykernel's debugger otherwise prints a warning at every kernel start.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    from jupyter_client.manager import KernelManager

    out = {}
    starts = []
    for _ in range(cold):
        t0 = time.perf_counter()
        km = KernelManager(kernel_name="python3")
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        assert execute(kc, CELL_A) == "1\n"
        starts.append((time.perf_counter() - t0) * 1000)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    out["a"] = starts

    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    execute(kc, "1+1")
    rtts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        execute(kc, "1+1")
        rtts.append((time.perf_counter() - t0) * 1000)
    out["b"] = rtts
    kc.stop_channels()
    km.shutdown_kernel(now=True)

    before = mem_available_kb()
    kernels = []
    for _ in range(SESSIONS):
        km = KernelManager(kernel_name="python3")
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        execute(kc, CELL_A)
        kernels.append((km, kc))
    time.sleep(1)
    out["c_host_kb"] = (before - mem_available_kb()) / SESSIONS
    for km, kc in kernels:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codeq", default=os.path.join(here, "..", "build", "bin", "codeq"))
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--cold", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("session_bench: needs root (codeq creates sandboxes)")

    c = bench_codeq(args.codeq, args.runs, args.cold)
    j = bench_jupyter(args.runs, args.cold)
    print(f"{'benchmark (ms)':<52} {'median':>9} {'mean':>9} {'p95':>9} {'min':>9} {'runs':>6}")
    print(summary("(a) new session -> print(1), codeq (warm pool)", c["a"]))
    print(summary("(a) new session -> print(1), Jupyter kernel", j["a"]))
    print(summary("(b) 1+1 round trip, codeq (MCP)", c["b"]))
    print(summary("(b) 1+1 round trip, Jupyter (ZMQ)", j["b"]))
    print(f"(c) memory per idle session after (a), MiB: codeq {c['c_host_kb'] / 1024:.1f} "
          f"(its cgroup: {c['c_cgroup_kb'] / 1024:.1f}), Jupyter {j['c_host_kb'] / 1024:.1f}")


if __name__ == "__main__":
    main()
