#!/usr/bin/env python3
"""bench/claim_bench.py - large payloads through the fleet (the claim check).

For each size, one file of that many MiB is written with writeFiles and read back with
readFiles through a fleet of its own (one dispatcher, one worker; Kafka and Redis from
scripts/services, whose topics take Kafka's stock 1 MB), side by side with the floor
of the same bytes: one claim stored in Redis and read back (claims.py's put + get), which
every such request and reply pays in each direction. Prints milliseconds (median of
--runs) per size.

usage: bench/claim_bench.py [--sizes 1,10,50,100] [--runs 3]
  (as root; CODEQ_BIN_DIR selects the daemons' build, default build/bin)
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "fleet"))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))

import conftest  # noqa: E402  (the fleet tests' Fleet: daemons with a run's own names)
from codeq_client import Client  # noqa: E402
from codeq_client.claims import ClaimStore  # noqa: E402


def ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,10,50,100", help="MiB, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    import redis
    import subprocess
    started = None
    if not (conftest._answers(conftest.KAFKA_PORT) and conftest._answers(conftest.REDIS_PORT)):
        import tempfile
        started = tempfile.mkdtemp(prefix="codeq-claim-bench-")
        subprocess.run([conftest.SERVICES, "up", "--dir", started], check=True)
    fleet = conftest.Fleet()
    try:
        fleet.start_worker("bench", "--files-quota", "512M")
        fleet.wait_workers(redis.Redis(host="127.0.0.1", port=conftest.REDIS_PORT), 1)
        fleet.start_dispatcher()
        store = ClaimStore(fleet.env["CODEQ_REDIS"], fleet.prefix)
        rows = []
        with Client(conftest.BROKERS, request_topic=fleet.request_topic, default_timeout=600,
                    redis=fleet.env["CODEQ_REDIS"], redis_prefix=fleet.prefix) as c:
            s = c.start_session()
            s.execute_code("1")  # the kernel up before anything is timed
            for mib in sizes:
                data = os.urandom(mib << 20)
                write, read, floor = [], [], []
                for _ in range(args.runs):
                    write.append(ms(lambda: s.write_files({"f.bin": data})))
                    read.append(ms(lambda: s.read_files(["f.bin"])))

                    def redis_round_trip():
                        claim_id = store.put(data, 60)
                        from codeq_client import codeq_pb2 as pb
                        store.get(pb.Claim(id=claim_id, size=len(data)))
                        store._connection().delete(store._key(claim_id))
                    floor.append(ms(redis_round_trip))
                rows.append((mib, statistics.median(write), statistics.median(read),
                             statistics.median(floor)))
            s.stop()
        store.close()
        print(f"{'MiB':>5} {'writeFiles ms':>14} {'readFiles ms':>13} {'Redis put+get ms':>17}")
        for mib, w, r, f in rows:
            print(f"{mib:>5} {w:>14.0f} {r:>13.0f} {f:>17.0f}")
    finally:
        fleet.stop()
        if started:
            subprocess.run([conftest.SERVICES, "down", "--dir", started], check=False)


if __name__ == "__main__":
    main()
