#!/usr/bin/env python3
"""bench/resolver_bench.py - what codeq's resolver adds to a DNS query (issue 13).

From inside one sandbox (`codeq sandbox --network public`, through the test internet of
tests/net/internet.py, so nothing leaves the machine), the same A query for
files.example.test is sent N times to codeq's resolver (100.126.255.53, translated to
the sandbox's gateway) and N times straight to the test DNS server (203.0.113.53, a
public address PUBLIC may reach), alternating, one at a time; each round trip is timed
with time.perf_counter_ns. Then in mode ALLOWLIST the first query of a sandbox, which
pins the answer into its filter (an nftables transaction) before the reply leaves, is
timed against its second, over R fresh sandboxes.

usage (root, with codeq built): CODEQ_BIN_DIR=build/bin bench/resolver_bench.py [N] [R]
Prints median, mean, p95 and min in microseconds per series.
"""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "net"))
import internet  # noqa: E402

CODEQ = os.path.join(os.environ.get("CODEQ_BIN_DIR") or os.path.join(HERE, "..", "build", "bin"),
                     "codeq")

CLIENT = r"""
import json, socket, struct, sys, time
n, servers = int(sys.argv[1]), sys.argv[2:]
q = struct.pack(">HHHHHH", 0, 0x0100, 1, 0, 0, 0) + b"\x05files\x07example\x04test\x00\x00\x01\x00\x01"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
out = {srv: [] for srv in servers}
for i in range(n):
    for srv in servers:
        msg = struct.pack(">H", i & 0xffff) + q[2:]
        t0 = time.perf_counter_ns()
        s.sendto(msg, (srv, 53))
        while True:
            data = s.recv(1500)
            if data[:2] == msg[:2]:
                break
        out[srv].append((time.perf_counter_ns() - t0) / 1000)
        assert data[3] & 15 == 0 and data[7] == 1, data
print(json.dumps(out))
"""


def row(name, values):
    v = sorted(values)
    p95 = v[min(len(v) - 1, int(len(v) * 0.95))]
    print(f"{name:42s} {statistics.median(v):9.1f} {statistics.mean(v):9.1f} {p95:9.1f} {v[0]:9.1f}")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    resolver, upstream = "100.126.255.53", internet.DNS_SERVER[0]
    with internet.Internet() as net:
        egress = net.netns_path(net.add_client())
        base = [CODEQ, "sandbox", "--timeout", "120", "--egress-netns", egress, "--dns", upstream]
        r = subprocess.run(base + ["--network", "public", "--", "python3", "-c", CLIENT, str(n),
                                   resolver, upstream], capture_output=True, text=True, check=True)
        public = json.loads(r.stdout)
        first, second = [], []
        for _ in range(rounds):
            r = subprocess.run(base + ["--network", "allowlist", "--allow", "files.example.test",
                                       "--", "python3", "-c", CLIENT, "2", resolver],
                               capture_output=True, text=True, check=True)
            times = json.loads(r.stdout)[resolver]
            first.append(times[0])
            second.append(times[1])
    print(f"{'series (microseconds)':42s} {'median':>9s} {'mean':>9s} {'p95':>9s} {'min':>9s}")
    row(f"PUBLIC, straight to the test DNS (n={n})", public[upstream])
    row(f"PUBLIC, through codeq's resolver (n={n})", public[resolver])
    row(f"ALLOWLIST, first query: pins (n={rounds})", first)
    row(f"ALLOWLIST, second query (n={rounds})", second)


if __name__ == "__main__":
    main()
