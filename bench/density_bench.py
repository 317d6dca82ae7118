#!/usr/bin/env python3
"""Sessions under load and what an idle one costs (issue 17), codeq beside a Jupyter
kernel given the same work, in one run.

  (a) steady: a session started every 1/RATE s for DURATION s, each running
      `import pandas, numpy, matplotlib; print(1)`, then stopped; the time from
      startSession to that result. codeq: through `codeq mcp` (calls run concurrently);
      Jupyter: start an ipykernel, wait until ready, execute the cell, shut it down.
  (b) burst: BURST sessions started at once, the same cell each; for codeq, a second
      burst once its warm pool has refilled (a pool of forked kernels grows to the
      busiest second of the last minute, up to --warm-pool-max: worker/pool.c).
  (c) idle cost: IDLE sessions alive at once after the cell: per session, the memory its
      cgroup is charged (memory.current / usage_in_bytes), the unique (USS) and
      proportional (PSS) memory of its processes (smaps_rollup), and the drop of the
      host's MemAvailable per session.

  (d) density (--live N): N sessions alive at once, each after the cell; then `1+1` in
      sessions picked at random, its round trip against the same in a lone session
      before them; the worker's threads, open files and memory.

Jupyter runs its steady phase for --jupyter-duration only (default 10 s): at 20 a second
a kernel start of ~1.2 s of CPU each cannot keep up on a small machine, and the queue
that builds is the figure; longer adds minutes, not information.

usage: bench/density_bench.py [--codeq build/bin/codeq] [--rate 20] [--duration 60]
           [--burst 100] [--idle 30] [--warm-pool 2] [--no-jupyter]
Needs root (codeq) and python3-jupyter-client + python3-ipykernel (scripts/setup).
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

from bench_common import execute, mem_available_kb

CELL = "import pandas, numpy, matplotlib; print(1)"


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def row(name, samples_ms, failed=0):
    if not samples_ms:
        return f"{name:<44} {'-':>9} {'-':>9} {'-':>9} {'-':>9} {0:6d} {failed:6d}"
    return (f"{name:<44} {statistics.median(samples_ms):9.1f} {pct(samples_ms, 0.99):9.1f} "
            f"{statistics.mean(samples_ms):9.1f} {max(samples_ms):9.1f} {len(samples_ms):6d} "
            f"{failed:6d}")


class Mcp:
    """codeq mcp on a pipe; calls may overlap (a reader thread matches replies by id)."""

    def __init__(self, codeq, pool, fork=False):
        self.log = tempfile.TemporaryFile()
        # Sessions at once: more than a burst (the default, 64, would refuse some).
        self.p = subprocess.Popen([codeq, "mcp", "--warm-pool", str(pool),
                                   "--max-sessions", "1000", "--metrics-listen", "127.0.0.1:0"]
                                  + (["--fork-kernels"] if fork else []),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=self.log, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.n = 0
        self.waiting = {}
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.rpc("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "density-bench", "version": "1"}})

    def _read(self):
        for line in self.p.stdout:
            msg = json.loads(line)
            if "id" not in msg:
                continue  # a notification
            with self.lock:
                slot = self.waiting.pop(msg["id"], None)
            if slot is not None:
                slot[1] = msg
                slot[0].set()

    def rpc(self, method, params, timeout=600):
        slot = [threading.Event(), None]
        with self.lock:
            self.n += 1
            n = self.n
            self.waiting[n] = slot
            self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": n, "method": method,
                                           "params": params}) + "\n")
            self.p.stdin.flush()
        if not slot[0].wait(timeout):
            raise TimeoutError(method)
        if "error" in slot[1]:
            raise RuntimeError(slot[1]["error"])
        return slot[1]["result"]

    def pool(self):
        """(ready, target) of the warm pools, summed, from /metrics."""
        self.log.seek(0)
        found = re.search(rb"metrics on port (\d+)", self.log.read())
        if found is None:
            return 0, 0
        url = f"http://127.0.0.1:{int(found.group(1))}/metrics"
        with urllib.request.urlopen(url, timeout=30) as resp:
            text = resp.read().decode()
        sums = {"codeq_warm_pool_ready": 0.0, "codeq_warm_pool_target": 0.0}
        for line in text.splitlines():
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name in sums:
                sums[name] += float(line.rsplit(" ", 1)[1])
        return sums["codeq_warm_pool_ready"], sums["codeq_warm_pool_target"]

    def wait_pool_full(self, timeout=300):
        """Until the warm pools hold their target (after a burst, a grown one)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ready, target = self.pool()
            if target > 0 and ready >= target:
                return ready
            time.sleep(0.5)
        return self.pool()[0]

    def tool(self, name, args):
        r = self.rpc("tools/call", {"name": name, "arguments": args})
        if r.get("isError"):
            raise RuntimeError(f"{name}: {r['content']}")
        return r["structuredContent"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=120)


def codeq_session(mcp, keep=False):
    """ms from startSession to the cell's result; the session id when kept."""
    t0 = time.perf_counter()
    sid = mcp.tool("startSession", {})["sessionId"]
    out = mcp.tool("executeCode", {"sessionId": sid, "code": CELL})
    ms = (time.perf_counter() - t0) * 1000
    assert out["stdout"] == "1\n", out
    if not keep:
        mcp.tool("stopSession", {"sessionId": sid})
    return ms, sid


class Jupyter:
    def __init__(self):
        # ipykernel's debugger otherwise prints a warning at every kernel start.
        os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        from jupyter_client.manager import KernelManager
        self.KernelManager = KernelManager
        self.sockets = tempfile.mkdtemp(prefix="density-jupyter-")

    def session(self, keep=False):
        t0 = time.perf_counter()
        # Over unix sockets of its own: kernels started at once over TCP pick their ports
        # before binding them and collide ("Address already in use").
        km = self.KernelManager(kernel_name="python3", transport="ipc",
                                ip=os.path.join(self.sockets, uuid.uuid4().hex[:12]))
        # Kernels started at once share IPython's history database and fail on its lock
        # ("database is locked"); codeq keeps no history either.
        km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=300)
        assert execute(kc, CELL, timeout=300) == "1\n"
        ms = (time.perf_counter() - t0) * 1000
        if keep:
            return ms, (km, kc)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        return ms, None


def run_schedule(start_one, n, interval_s):
    """start_one() on a thread of its own every interval_s (0: all at once); the
    latencies of those that answered, and how many failed."""
    got, failed, lock = [], [0], threading.Lock()

    def one():
        try:
            ms, _ = start_one()
            with lock:
                got.append(ms)
        except Exception as e:  # noqa: BLE001 - counted, and the first one shown
            with lock:
                failed[0] += 1
                if failed[0] == 1:
                    print(f"  first failure: {e!r}", file=sys.stderr)

    threads = []
    t0 = time.perf_counter()
    for i in range(n):
        delay = t0 + i * interval_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return got, failed[0]


def own_cgroup():
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.strip().split(":", 2)
            for c in controllers.split(","):
                own[c] = path
            if controllers == "":
                own[""] = path
    return own


def session_cgroups(server_pid):
    """(memory usage file, cgroup.procs file) of each sandbox cgroup of the server."""
    own = own_cgroup()
    if os.path.isdir("/sys/fs/cgroup/memory"):
        base = "/sys/fs/cgroup/memory" + own.get("memory", "/").rstrip("/") + "/codeq"
        usage = "memory.usage_in_bytes"
    else:
        base = "/sys/fs/cgroup" + own.get("", "/").rstrip("/") + "/codeq"
        usage = "memory.current"
    out = []
    for name in sorted(os.listdir(base)):
        if name.startswith(f"{server_pid}-"):
            d = os.path.join(base, name)
            out.append((os.path.join(d, usage), d))
    return out


def pids_below(cgroup_dir):
    pids = set()
    for root, _dirs, files in os.walk(cgroup_dir):
        if "cgroup.procs" in files:
            with open(os.path.join(root, "cgroup.procs")) as f:
                pids.update(int(p) for p in f.read().split())
    return pids


def smaps(pid):
    """(USS, PSS) in bytes of one process, from smaps_rollup."""
    fields = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == "kB":
                    fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return 0, 0
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return uss, fields.get("Pss", 0)


def pids_of_tree(root_pid):
    """root_pid and its descendants (a Jupyter kernel and what it started)."""
    children = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    out, todo = [], [root_pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def mib(b):
    return b / (1 << 20)


ZYGOTE_UID = "1600002000"


def is_zygote(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("Uid:") and ZYGOTE_UID in line.split() for line in f)
    except OSError:
        return False


def idle_codeq(codeq, n, pool, fork=False):
    mcp = Mcp(codeq, pool, fork)
    try:
        time.sleep(3)  # the pool fills; what it holds is not a session's cost
        before = mem_available_kb()
        for _ in range(n):
            codeq_session(mcp, keep=True)
        time.sleep(2)
        drop = (before - mem_available_kb()) * 1024 / n
        cgs = session_cgroups(mcp.p.pid)
        charged, uss, pss = [], [], []
        for usage, d in cgs:
            pids = pids_below(d)
            if not pids or any(is_zygote(pid) for pid in pids):
                continue  # a warm sandbox with nothing in it yet, or the zygote's own
            with open(usage) as f:
                charged.append(int(f.read()))
            u = p = 0
            for pid in pids:
                a, b = smaps(pid)
                u += a
                p += b
            uss.append(u)
            pss.append(p)
        return {"drop": drop, "charged": charged, "uss": uss, "pss": pss}
    finally:
        mcp.close()


def proc_status(pid):
    """(threads, open fds, VmRSS kB) of a process."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return (int(fields["Threads"][0]), len(os.listdir(f"/proc/{pid}/fd")),
            int(fields["VmRSS"][0]))


def one_plus_one(mcp, sid, n):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = mcp.tool("executeCode", {"sessionId": sid, "code": "print(1+1)"})
        out.append((time.perf_counter() - t0) * 1000)
        assert r["stdout"] == "2\n", r
    return out


def live_codeq(codeq, n, pool, fork, touches):
    """(d): n sessions alive; 1+1 round trips before them (lone) and among them."""
    mcp = Mcp(codeq, pool, fork)
    try:
        time.sleep(3)
        lone_sid = codeq_session(mcp, keep=True)[1]
        lone = one_plus_one(mcp, lone_sid, touches)
        before = mem_available_kb()
        t0 = time.perf_counter()
        sids, failed = [], 0
        for _ in range(n):
            try:
                sids.append(codeq_session(mcp, keep=True)[1])
            except (RuntimeError, TimeoutError) as e:
                failed += 1
                if failed == 1:
                    print(f"  first failure: {e!r}", flush=True)
        started_s = time.perf_counter() - t0
        time.sleep(2)
        drop_mib = (before - mem_available_kb()) / 1024
        rng = random.Random(1)
        crowd = []
        for _ in range(touches):
            crowd += one_plus_one(mcp, rng.choice(sids), 1)
        threads, fds, rss_kb = proc_status(mcp.p.pid)
        return {"n": len(sids), "failed": failed, "started_s": started_s, "lone": lone,
                "crowd": crowd, "drop_mib": drop_mib, "threads": threads, "fds": fds,
                "rss_mib": rss_kb / 1024}
    finally:
        mcp.close()


def idle_jupyter(n):
    j = Jupyter()
    kernels = []
    before = mem_available_kb()
    try:
        for _ in range(n):
            kernels.append(j.session(keep=True)[1])
        time.sleep(2)
        drop = (before - mem_available_kb()) * 1024 / n
        uss, pss = [], []
        for km, _kc in kernels:
            u = p = 0
            for pid in pids_of_tree(km.provisioner.process.pid):
                a, b = smaps(pid)
                u += a
                p += b
            uss.append(u)
            pss.append(p)
        return {"drop": drop, "charged": [], "uss": uss, "pss": pss}
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--codeq", default=os.path.join(os.path.dirname(__file__), "..", "build",
                                                    "bin", "codeq"))
    ap.add_argument("--rate", type=float, default=20.0, help="sessions a second (steady)")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    ap.add_argument("--jupyter-duration", type=float, default=10.0)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--idle", type=int, default=30, help="idle sessions measured")
    ap.add_argument("--warm-pool", type=int, default=2, help="codeq mcp --warm-pool")
    ap.add_argument("--no-jupyter", action="store_true")
    ap.add_argument("--live", type=int, default=0,
                    help="(d): sessions alive at once, touched at random (e.g. 1000)")
    ap.add_argument("--touches", type=int, default=200, help="(d): 1+1 calls measured")
    ap.add_argument("--kernels", choices=["exec", "fork", "both"], default="both",
                    help="codeq's kernels exec'd in each sandbox, forked from the zygote "
                         "(--fork-kernels, docs/zygote.md), or both side by side")
    args = ap.parse_args()
    modes = {"exec": [False], "fork": [True], "both": [False, True]}[args.kernels]

    header = (f"{'':<44} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'max ms':>9} "
              f"{'n':>6} {'failed':>6}")
    print(f"# codeq {args.codeq}, warm pool {args.warm_pool}, {os.cpu_count()} CPUs")
    print(header)
    n = int(args.rate * args.duration)
    for fork in modes:
        name = "codeq, forked" if fork else "codeq"
        mcp = Mcp(args.codeq, args.warm_pool, fork)
        try:
            time.sleep(3)
            got, failed = run_schedule(lambda: codeq_session(mcp), n, 1.0 / args.rate)
            print(row(f"(a) {name}: {args.rate:g}/s for {args.duration:g} s", got, failed),
                  flush=True)
            time.sleep(3)
            got, failed = run_schedule(lambda: codeq_session(mcp), args.burst, 0)
            print(row(f"(b) {name}: burst of {args.burst}", got, failed), flush=True)
            ready = mcp.wait_pool_full()
            got, failed = run_schedule(lambda: codeq_session(mcp), args.burst, 0)
            print(row(f"(b) {name}: again, {ready:g} ready", got, failed), flush=True)
        finally:
            mcp.close()
    if not args.no_jupyter:
        j = Jupyter()
        jn = int(args.rate * args.jupyter_duration)
        got, failed = run_schedule(j.session, jn, 1.0 / args.rate)
        print(row(f"(a) Jupyter: {args.rate:g}/s for {args.jupyter_duration:g} s", got, failed),
              flush=True)
        got, failed = run_schedule(j.session, args.burst, 0)
        print(row(f"(b) Jupyter: burst of {args.burst}", got, failed), flush=True)

    print()
    print(f"(c) an idle session after the cell ({args.idle} alive)   "
          f"{'charged':>9} {'USS':>9} {'PSS':>9} {'MemAvail':>9}  (MiB, median)")
    results = [("codeq, forked" if fork else "codeq",
                idle_codeq(args.codeq, args.idle, args.warm_pool, fork)) for fork in modes]
    if not args.no_jupyter:
        results.append(("Jupyter", idle_jupyter(args.idle)))
    for name, r in results:
        med = lambda xs: mib(statistics.median(xs)) if xs else float("nan")  # noqa: E731
        print(f"    {name:<48} {med(r['charged']):9.1f} {med(r['uss']):9.1f} "
              f"{med(r['pss']):9.1f} {mib(r['drop']):9.1f}")
    if args.live:
        print()
        for fork in modes:
            name = "codeq, forked" if fork else "codeq"
            r = live_codeq(args.codeq, args.live, args.warm_pool, fork, args.touches)
            print(f"(d) {name}: {r['n']} sessions alive ({r['failed']} failed to start), "
                  f"started in {r['started_s']:.0f} s; MemAvailable dropped "
                  f"{r['drop_mib']:.0f} MiB ({r['drop_mib'] / max(r['n'], 1):.1f} each); "
                  f"codeq: {r['threads']} threads, {r['fds']} fds, RSS {r['rss_mib']:.0f} MiB")
            print(row("    1+1, one session alive (ms)", r["lone"]))
            print(row(f"    1+1, {r['n']} alive, one at random (ms)", r["crowd"]), flush=True)


if __name__ == "__main__":
    main()
