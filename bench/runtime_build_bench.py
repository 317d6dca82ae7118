#!/usr/bin/env python3
"""bench/runtime_build_bench.py - how long `codeq runtime build` takes for a runtime of
small test packages (the end-to-end tests' kind: two pure-Python wheels, one a
dependency of the other, and one npm tarball; no numpy), from a local wheelhouse.

  cold:    a fresh store each run (everything installed and moved into place)
  rebuild: the same spec again into a store that has the layer (installed again in
           a temporary directory, then the existing layer is reused)
  pip only / npm only: one installer each, fresh store
and `codeq sandbox` running `python3 -c 'import cqtest_rt'` with --runtime against
plain `python3 -c pass` without, for what the bind costs a sandbox's start.

Offline; run as root (the installers run as nobody): docs/performance.md has the
command and the figures.

usage: bench/runtime_build_bench.py [--codeq build/bin/codeq] [--runs N]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "net"))
from internet import make_wheel  # noqa: E402


def wheelhouse(root):
    wh = os.path.join(root, "wheelhouse")
    os.makedirs(wh)
    for name, version, files, requires in (
            ("cqtest-rt", "1.0", {"cqtest_rt/__init__.py": "import cqtest_dep\n"}, ["cqtest-dep"]),
            ("cqtest-dep", "1.0", {"cqtest_dep/__init__.py": "NAME = 'dep'\n"}, [])):
        filename, data = make_wheel(name, version, files, requires)
        with open(os.path.join(wh, filename), "wb") as f:
            f.write(data)
    src = os.path.join(root, "npm-src")
    os.makedirs(src)
    with open(os.path.join(src, "package.json"), "w") as f:
        json.dump({"name": "cqtest-npm", "version": "1.2.3", "main": "index.js"}, f)
    with open(os.path.join(src, "index.js"), "w") as f:
        f.write("module.exports = 1;\n")
    subprocess.run(["npm", "pack", "--pack-destination", wh], cwd=src, check=True,
                   capture_output=True, env=dict(os.environ, npm_config_cache=root + "/npmc"))
    return wh


def timed(argv, env=None):
    start = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{r.stderr}")
    return elapsed


def show(label, values, unit="s", scale=1.0):
    v = sorted(x * scale for x in values)
    print(f"  {label:<42} median {statistics.median(v):7.3f} {unit}   min {v[0]:7.3f}   "
          f"max {v[-1]:7.3f}   (n={len(v)})")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codeq", default=os.path.join(REPO, "build", "bin", "codeq"))
    p.add_argument("--runs", type=int, default=10)
    a = p.parse_args()
    root = tempfile.mkdtemp(prefix="codeq-runtime-bench-", dir="/tmp")
    os.chmod(root, 0o755)
    try:
        wh = wheelhouse(root)
        specs = {
            "pip+npm": {"name": "bench", "language": "python%d.%d" % sys.version_info[:2],
                        "packages": {"pip": ["cqtest-rt"], "npm": ["cqtest-npm"]},
                        "environment": {"MPLBACKEND": "Agg"}},
        }
        specs["pip only"] = dict(specs["pip+npm"], packages={"pip": ["cqtest-rt"]})
        specs["npm only"] = dict(specs["pip+npm"], packages={"npm": ["cqtest-npm"]})
        paths = {}
        for label, spec in specs.items():
            paths[label] = os.path.join(root, label.replace(" ", "-").replace("+", "-") + ".json")
            with open(paths[label], "w") as f:
                json.dump(spec, f)
        print(f"codeq runtime build, {a.runs} runs each (wheelhouse: two wheels, one npm tarball)")
        results = {}
        for label in specs:
            times = []
            for i in range(a.runs):
                store = os.path.join(root, f"store-{label.replace(' ', '-')}-{i}")
                times.append(timed([a.codeq, "runtime", "build", paths[label], "--wheelhouse", wh,
                                    "--store", store]))
            results[label] = times
            show(f"cold, {label}", times)
        store = os.path.join(root, "store-pip+npm-0")
        show("rebuild, pip+npm (layer reused)",
             [timed([a.codeq, "runtime", "build", paths["pip+npm"], "--wheelhouse", wh,
                     "--store", store]) for _ in range(a.runs)])
        env = {"PATH": "/usr/bin:/bin", "CODEQ_RUNTIME_STORE": store}
        print("codeq sandbox start and exit")
        show("python3 -c pass", [timed([a.codeq, "sandbox", "--", "python3", "-c", "pass"], env)
                                 for _ in range(a.runs)], "ms", 1000)
        show("--runtime, python3 -c 'import cqtest_rt'",
             [timed([a.codeq, "sandbox", "--runtime", "bench", "--", "python3", "-c",
                     "import cqtest_rt"], env) for _ in range(a.runs)], "ms", 1000)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
