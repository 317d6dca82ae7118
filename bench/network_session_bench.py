#!/usr/bin/env python3
"""Warm session start per network mode: NONE against PUBLIC, side by side in one run.

One `codeq mcp` with a warm pool of each (--warm-pool 1 --warm-pool-public 1), PUBLIC
leaving through a client namespace of the test internet (tests/net/internet.py: no
packet leaves the machine). Each round starts a NONE session and a PUBLIC one (in
alternating order), timing startSession's round trip through `codeq mcp`; a session
counts as warm when its Python kernel already has numpy imported (the pool's
preload), and rounds wait for both pools to refill. Prints p50, mean, p95 and min of
the warm starts per mode, and how many starts were cold.

usage: bench/network_session_bench.py [--codeq build/bin/codeq] [--runs 30]
Needs root.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "net"))
import internet  # noqa: E402


class Mcp:
    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                  bufsize=1)
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
        return self.rpc("tools/call", {"name": tool, "arguments": args})

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=120)


def summary(name, samples, cold):
    s = sorted(samples)
    if not s:
        return f"{name:<10} no warm start ({cold} cold)"
    p95 = s[min(len(s) - 1, int(len(s) * 0.95))]
    return (f"{name:<10} {statistics.median(s):9.3f} {statistics.mean(s):9.3f} {p95:9.3f} "
            f"{s[0]:9.3f} {len(s):6d} {cold:5d}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codeq", default=os.path.join(HERE, "..", "build", "bin", "codeq"))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--refill", type=float, default=3.0,
                        help="seconds a round waits for the pools to refill")
    args = parser.parse_args()
    samples = {"NONE": [], "PUBLIC": []}
    cold = {"NONE": 0, "PUBLIC": 0}
    with internet.Internet() as net:
        egress = net.add_client()
        mcp = Mcp([args.codeq, "mcp", "--warm-pool", "1", "--warm-pool-public", "1",
                   "--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0]])
        time.sleep(args.refill * 2)
        for i in range(args.runs):
            order = ("NONE", "PUBLIC") if i % 2 == 0 else ("PUBLIC", "NONE")
            for mode in order:
                t0 = time.perf_counter()
                r = mcp.call("startSession", networkMode=mode)
                ms = (time.perf_counter() - t0) * 1000
                sc = r["structuredContent"]
                assert sc["networkMode"] == mode, r
                w = mcp.call("executeCode", sessionId=sc["sessionId"],
                             code="import sys\n'numpy' in sys.modules")
                if "True" in json.dumps(w["content"]):
                    samples[mode].append(ms)
                else:
                    cold[mode] += 1
                mcp.call("stopSession", sessionId=sc["sessionId"])
            time.sleep(args.refill)
        mcp.close()
    print(f"warm startSession through codeq mcp, ms ({args.runs} rounds, both modes per round)")
    print(f"{'mode':<10} {'p50':>9} {'mean':>9} {'p95':>9} {'min':>9} {'warm':>6} {'cold':>5}")
    for mode in ("NONE", "PUBLIC"):
        print(summary(mode, samples[mode], cold[mode]))


if __name__ == "__main__":
    main()
