#!/usr/bin/env python3
"""bench/kernel_attack_bench.py - what hostile kernel output costs the host.

User code runs in the kernel's process, so it can write anything on the kernel's control
socket (the Python kernel's is the process's one socket; the Node kernel's is fd 0). This runs the two floods of docs/security.md ("kernel protocol") through
`codeq mcp` and prints, for each, the host side's cost against the sandbox's:

  - forged-line: one line of LINE_MIB MiB (no newline until the end), then the real reply;
  - newline-flood: empty lines as fast as the cell can send them, for FLOOD_S seconds;

  peak RSS of `codeq mcp` (VmHWM) and its RSS after the attack, and the CPU seconds the
  `codeq mcp` process spent during the attack, beside the CPU seconds of the sandboxed
  kernel process (time.process_time() in the cell).

A neighbour session's `1+1` round trip (median of 20) is taken during the flood.

usage: bench/kernel_attack_bench.py [--codeq PATH] [--line-mib N] [--flood-s S]
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
import mcp_client  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


FORGED_LINE = """
import os, socket, time
fd = next(int(n) for n in os.listdir("/proc/self/fd")
          if os.readlink(f"/proc/self/fd/{{n}}").startswith("socket:"))
s = socket.socket(fileno=os.dup(fd))
chunk = b"x" * (1 << 20)
try:
    for _ in range({mib}):
        s.sendall(chunk)
    s.sendall(b"\\n")
except OSError as e:
    print("send stopped:", e)
print("cpu", time.process_time())
"""

NEWLINE_FLOOD = """
import os, socket, time
fd = next(int(n) for n in os.listdir("/proc/self/fd")
          if os.readlink(f"/proc/self/fd/{{n}}").startswith("socket:"))
s = socket.socket(fileno=os.dup(fd))
block = b"\\n" * 65536
t0 = time.time()
try:
    while time.time() - t0 < {seconds}:
        s.sendall(block)
except OSError as e:
    print("send stopped:", e)
print("cpu", time.process_time())
"""


def sandbox_cpu(result):
    text = result.get("structuredContent", {}).get("stdout", "")
    for line in text.splitlines():
        if line.startswith("cpu "):
            return float(line.split()[1])
    return None


def attack(server, name, code, neighbour):
    victim = mcp_client.start_session(server)
    victim.ok("1")
    pid = server.pid
    cpu0, t0 = cpu_seconds(pid), time.time()
    times = []
    done = threading.Event()

    def touch():
        while not done.is_set() and len(times) < 20:
            s = time.perf_counter()
            neighbour.value("1+1")
            times.append((time.perf_counter() - s) * 1000)
            time.sleep(0.1)

    t = threading.Thread(target=touch)
    t.start()
    result = victim.call("executeCode", code=code, timeout=600)
    done.set()
    t.join()
    wall, host_cpu = time.time() - t0, cpu_seconds(pid) - cpu0
    after = victim.call("executeCode", code="1+1")
    row = {
        "attack": name,
        "wall_s": round(wall, 2),
        "host_cpu_s": round(host_cpu, 2),
        "sandbox_cpu_s": sandbox_cpu(result),
        "peak_rss_mib": round(rss_kib(pid, "VmHWM") / 1024, 1),
        "rss_after_mib": round(rss_kib(pid, "VmRSS") / 1024, 1),
        "neighbour_1+1_p50_ms": round(statistics.median(times), 2) if times else None,
        "is_error": result.get("isError", False),
        "next_call": "ok" if not after.get("isError") else "error",
    }
    server.call("stopSession", {"sessionId": victim.id})
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--codeq", help="the codeq binary (default: build/bin/codeq)")
    ap.add_argument("--line-mib", type=int, default=200)
    ap.add_argument("--flood-s", type=float, default=10)
    args = ap.parse_args()
    if args.codeq:
        mcp_client.CODEQ = args.codeq
    server = mcp_client.McpServer("--warm-pool", "0")
    server.initialize()
    try:
        neighbour = mcp_client.start_session(server)
        neighbour.value("1+1")
        rows = [
            attack(server, f"forged-line ({args.line_mib} MiB)",
                   FORGED_LINE.format(mib=args.line_mib), neighbour),
            attack(server, f"newline-flood ({args.flood_s:g} s)",
                   NEWLINE_FLOOD.format(seconds=args.flood_s), neighbour),
        ]
    finally:
        server.close()
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
