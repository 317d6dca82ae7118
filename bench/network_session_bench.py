#!/usr/bin/env python3
"""Warm session start per network mode: NONE, PUBLIC and ALLOWLIST side by side in one run.

One `codeq mcp` with a warm pool of each (--warm-pool 1 --warm-pool-public 1
--warm-pool-allowlist 1), PUBLIC and ALLOWLIST leaving through a client namespace of the
test internet (tests/net/internet.py: no packet leaves the machine). Each round starts
one session of each mode (the order rotating from round to round), timing
startSession's round trip through `codeq mcp`; for ALLOWLIST (networkAllow
files.example.test, 198.51.100.7:7, or --allow's) that includes giving the pooled
sandbox its list: names go to its resolver, IP and CIDR entries into its filter (one
nftables transaction; a list of names only needs none).
A session counts as warm when its Python kernel already has numpy imported (the pool's
preload), and rounds wait for the pools to refill. The first warm ALLOWLIST session
must reach files.example.test and not api.example.test (untimed), so that the figures
are of sessions that work. Prints p50, mean, p95 and min of the warm starts per mode,
and how many starts were cold.

usage: bench/network_session_bench.py [--codeq build/bin/codeq] [--runs 30]
                                     [--allow DEST --allow DEST ...]
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


ALLOW = ["files.example.test", "198.51.100.7:7"]
CHECK = """
import urllib.request
def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode().strip()
    except OSError:
        return "failed"
print(fetch('http://files.example.test/bench'), fetch('http://api.example.test/'), sep='|')
"""


def check_allowlist(mcp, sid, allow):
    """A warm ALLOWLIST session reaches what it lists, and only that."""
    if "files.example.test" not in allow or "api.example.test" in allow:
        return
    r = mcp.call("executeCode", sessionId=sid, code=CHECK)
    got = r["structuredContent"]["stdout"].strip()
    want = "codeq test internet: 198.51.100.80 files.example.test /bench|failed"
    if got != want:
        raise SystemExit(f"a warm ALLOWLIST session does not behave: {got!r}")


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
    parser.add_argument("--refill", type=float, default=5.0,
                        help="seconds a round waits for the pools to refill")
    parser.add_argument("--allow", action="append",
                        help="an ALLOWLIST session's DEST (repeat; default: "
                        + ", ".join(ALLOW) + ")")
    args = parser.parse_args()
    allow = args.allow or ALLOW
    modes = ("NONE", "PUBLIC", "ALLOWLIST")
    samples = {m: [] for m in modes}
    cold = {m: 0 for m in modes}
    checked = False
    with internet.Internet() as net:
        egress = net.add_client()
        mcp = Mcp([args.codeq, "mcp", "--warm-pool", "1", "--warm-pool-public", "1",
                   "--warm-pool-allowlist", "1", "--network-modes", ",".join(modes),
                   "--egress-netns", net.netns_path(egress), "--dns", internet.DNS_SERVER[0]])
        time.sleep(args.refill * 2)
        for i in range(args.runs):
            order = modes[i % 3:] + modes[:i % 3]
            for mode in order:
                start = {"networkMode": mode}
                if mode == "ALLOWLIST":
                    start["networkAllow"] = allow
                t0 = time.perf_counter()
                r = mcp.call("startSession", **start)
                ms = (time.perf_counter() - t0) * 1000
                sc = r["structuredContent"]
                assert sc["networkMode"] == mode, r
                w = mcp.call("executeCode", sessionId=sc["sessionId"],
                             code="import sys\n'numpy' in sys.modules")
                if "True" in json.dumps(w["content"]):
                    samples[mode].append(ms)
                    if mode == "ALLOWLIST" and not checked:
                        check_allowlist(mcp, sc["sessionId"], allow)
                        checked = True
                else:
                    cold[mode] += 1
                mcp.call("stopSession", sessionId=sc["sessionId"])
            time.sleep(args.refill)
        mcp.close()
    print(f"warm startSession through codeq mcp, ms ({args.runs} rounds, the three modes per "
          f"round; ALLOWLIST of {', '.join(allow)})")
    print(f"{'mode':<10} {'p50':>9} {'mean':>9} {'p95':>9} {'min':>9} {'warm':>6} {'cold':>5}")
    for mode in modes:
        print(summary(mode, samples[mode], cold[mode]))


if __name__ == "__main__":
    main()
