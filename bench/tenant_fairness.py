#!/usr/bin/env python3
"""bench/tenant_fairness.py - does one tenant's flood starve another's session on the
same worker? (docs/security.md, "Quotas").

Starts a fleet of its own (one codeq-worker, one codeq-dispatcher from --build, a keys
file with tenants "quiet" and "flood"; Kafka and Redis of scripts/services, which must
be up: scripts/services up), then measures the quiet tenant's round trip (executeCode
of "1 + 1" in one warm session, one call at a time) three ways, side by side:

  alone            nobody else on the fleet
  flood            "flood" runs --flood-sessions sessions, each a closed loop of
                   CPU-bound cells, with no quota
  flood, quota     the same, with flood's executions quota at --quota

usage: bench/tenant_fairness.py [--build DIR] [--calls N] [--flood-sessions N]
                                [--quota N] [--brokers B] [--redis H:P]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client, Credentials  # noqa: E402

FLOOD_CELL = "sum(i * i for i in range(2_000_000))"


def credentials(codeq, keys, tenant, quota=None):
    args = [codeq, "tenant", "create", tenant, "--keys", keys]
    if quota:
        args += ["--quota", f"executions={quota}"]
    subprocess.run(args, check=True, capture_output=True)
    out = subprocess.run([codeq, "key", "create", tenant, "--keys", keys], check=True,
                         capture_output=True, text=True).stdout
    v = dict(line.split(" = ", 1) for line in out.strip().splitlines())
    return Credentials(v["tenant"], v["key_id"], v["secret"])


def quiet_latencies(client, calls):
    s = client.start_session()
    try:
        for _ in range(10):
            s.execute_code("1")  # warm
        times = []
        for _ in range(calls):
            t = time.monotonic()
            r = s.execute_code("1 + 1")
            times.append((time.monotonic() - t) * 1000)
            assert not r["isError"], r
        return times
    finally:
        s.stop()


def flood(client, sessions, stop, counts):
    def loop():
        s = client.start_session()
        try:
            while not stop.is_set():
                r = s.execute_code(FLOOD_CELL)
                counts.append("LIMIT_EXCEEDED" in str(r) and "refused" or "ran")
                if "LIMIT_EXCEEDED" in str(r):
                    time.sleep(0.05)  # a well-behaved client backs off
        finally:
            s.stop()
    threads = [threading.Thread(target=loop, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    return threads


def series(name, times):
    times = sorted(times)
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return f"{name:<14} p50 {statistics.median(times):7.1f} ms   p95 {p(0.95):7.1f} ms   " \
           f"max {times[-1]:7.1f} ms   ({len(times)} calls)"


def run_fleet(build, env, keys):
    procs = [subprocess.Popen([os.path.join(build, "bin", "codeq-worker"), "--worker-id",
                               env["CODEQ_WORKER_ID"], "--max-sessions", "32", "--warm-pool", "2"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(3)
    procs.append(subprocess.Popen([os.path.join(build, "bin", "codeq-dispatcher")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    # The warm pool's kernels import numpy, pandas and matplotlib (~1.2 s of CPU each)
    # as the worker starts: measured before they are done, "alone" would be the slowest.
    time.sleep(8)
    return procs


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--flood-sessions", type=int, default=8)
    ap.add_argument("--quota", type=int, default=2)
    ap.add_argument("--brokers", default=os.environ.get("CODEQ_BROKERS", "127.0.0.1:19092"))
    ap.add_argument("--redis", default=os.environ.get("CODEQ_REDIS", "127.0.0.1:16379"))
    a = ap.parse_args()
    codeq = os.path.join(a.build, "bin", "codeq")
    results = []
    for label, quota in (("alone", None), ("flood", None), ("flood, quota", a.quota)):
        tmp = tempfile.mkdtemp(prefix="codeq-fairness-")
        keys = os.path.join(tmp, "keys")
        quiet = credentials(codeq, keys, "quiet")
        flooder = credentials(codeq, keys, "flood", quota)
        run = uuid.uuid4().hex[:8]
        env = dict(os.environ, CODEQ_BROKERS=a.brokers, CODEQ_REDIS=a.redis,
                   CODEQ_REDIS_PREFIX=f"codeq:fair{run}:", CODEQ_REQUEST_TOPIC=f"codeq.requests.fair{run}",
                   CODEQ_DLQ_TOPIC=f"codeq.dlq.fair{run}", CODEQ_AUDIT_TOPIC="",
                   CODEQ_KEYS_FILE=keys, CODEQ_WORKER_ID=f"fair-{run}", CODEQ_LOG_LEVEL="warn")
        procs = run_fleet(a.build, env, keys)
        stop = threading.Event()
        counts = []
        try:
            req_topic = env["CODEQ_REQUEST_TOPIC"]
            with Client(a.brokers, request_topic=req_topic, credentials=quiet) as qc, \
                    Client(a.brokers, request_topic=req_topic, credentials=flooder) as fc:
                threads = flood(fc, a.flood_sessions, stop, counts) if label != "alone" else []
                if threads:
                    time.sleep(3)  # the flood is running
                times = quiet_latencies(qc, a.calls)
                stop.set()
                for t in threads:
                    t.join(60)
        finally:
            for p in reversed(procs):
                p.terminate()
            for p in procs:
                p.wait(60)
            shutil.rmtree(tmp, ignore_errors=True)
        note = f"   flood cells: {counts.count('ran')} ran, {counts.count('refused')} refused" \
            if label != "alone" else ""
        results.append(series(label, times) + note)
        print(results[-1], flush=True)
    print("\nthe quiet tenant's round trip (executeCode '1 + 1'), side by side:")
    for line in results:
        print("  " + line)


if __name__ == "__main__":
    main()
