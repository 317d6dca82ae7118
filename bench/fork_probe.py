#!/usr/bin/env python3
"""What a zygote could give (issue 17): a Python that has imported pandas, numpy and
matplotlib (and frozen its objects out of the garbage collector, so that reference
counting does not dirty the shared pages) forks children that run a small cell. Prints
the parent's memory, each child's fork-to-answer time and its unique (USS),
proportional (PSS) and resident (RSS) memory, beside a Python started cold that imports
the same modules. No sandbox: the floor a forked kernel could reach, not codeq.

usage: bench/fork_probe.py [--children 10]
"""

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time

CELL_IMPORTS = "import pandas, numpy, matplotlib"


def memory_mib(pid):
    """(USS, PSS, RSS) in MiB, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return uss / 1024, fields.get("Pss", 0) / 1024, fields.get("Rss", 0) / 1024


def cold_start_ms():
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", CELL_IMPORTS + "; print(1)"], check=True,
                   capture_output=True)
    return (time.perf_counter() - t0) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--children", type=int, default=10)
    args = ap.parse_args()

    cold = [cold_start_ms() for _ in range(3)]
    t0 = time.perf_counter()
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import numpy
    import pandas
    imported_ms = (time.perf_counter() - t0) * 1000
    gc.freeze()
    parent = memory_mib(os.getpid())

    children = []
    for _ in range(args.children):
        r, w = os.pipe()
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            frame = pandas.DataFrame({"a": numpy.arange(1000)})
            os.write(w, str(int(frame["a"].sum())).encode())
            os.close(w)
            time.sleep(60)
            os._exit(0)
        os.close(w)
        assert os.read(r, 32) == b"499500"
        os.close(r)
        children.append((pid, (time.perf_counter() - t) * 1000))
    time.sleep(0.5)
    mems = [memory_mib(pid) for pid, _ in children]
    for pid, _ in children:
        os.kill(pid, 9)
        os.waitpid(pid, 0)

    med = statistics.median
    print(f"{'':<46} {'ms':>8} {'USS MiB':>8} {'PSS MiB':>8} {'RSS MiB':>8}")
    print(f"{'cold python, imports and print(1) (median of 3)':<46} {med(cold):8.1f}")
    print(f"{'the parent after its imports':<46} {imported_ms:8.1f} {parent[0]:8.1f} "
          f"{parent[1]:8.1f} {parent[2]:8.1f}")
    print(f"{'a forked child, a DataFrame sum (median)':<46} "
          f"{med(ms for _, ms in children):8.1f} {med(m[0] for m in mems):8.1f} "
          f"{med(m[1] for m in mems):8.1f} {med(m[2] for m in mems):8.1f}")
    print(f"({args.children} children alive at once; PSS shares the parent's pages among them)")


if __name__ == "__main__":
    main()
