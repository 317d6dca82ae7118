"""The fleet under chaos, bounded for CI (tests/fleet/chaos.py; docs/fleet.md, "Chaos
test"): 3 workers and 2 dispatchers serve 50 sessions doing executeCode, writeFiles and
readFiles while a seeded chaos driver kills (SIGKILL) and restarts workers and
dispatchers, drains a worker, and restarts Redis and the broker. Fails on any violation
of the fleet's promises: a request without exactly one final reply (or with an unclear
error), a request run twice, a file that lost a successful write, a sandbox, cgroup,
topic or Redis key left behind, a daemon that did not stop cleanly.

CODEQ_CHAOS_SECONDS (default 120), CODEQ_CHAOS_SEED (default: random, printed) and
CODEQ_CHAOS_SESSIONS (default 50) change the run; scripts/chaos runs longer ones by
hand. The Kafka broker and Redis it restarts are those conftest started for this test
run, or private ones on free ports when the services were already running (shared: not
this test's to restart)."""

import os
import tempfile

import chaos

# conftest's watchdog allows a test 300 s; this one runs for its chaos time, then checks.
EXTRA_SECONDS = 2 * float(os.environ.get("CODEQ_CHAOS_SECONDS", "120"))


def test_fleet_keeps_its_promises_under_chaos(services):
    seconds = float(os.environ.get("CODEQ_CHAOS_SECONDS", "120"))
    seed = int(os.environ["CODEQ_CHAOS_SEED"]) if os.environ.get("CODEQ_CHAOS_SEED") else None
    sessions = int(os.environ.get("CODEQ_CHAOS_SESSIONS", "50"))
    svc = chaos.Services.of_conftest(services) if services else chaos.Services.private()
    fd, log_path = tempfile.mkstemp(prefix="codeq-chaos-", suffix=".log")
    with os.fdopen(fd, "w") as log:
        def out(line):
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
        try:
            r = chaos.Run(svc, seconds=seconds, seed=seed, sessions=sessions, out=out).execute()
        finally:
            svc.down()  # only private services: conftest stops its own
    assert not r.violations, f"replay with CODEQ_CHAOS_SEED={r.seed}; log {log_path}\n" + \
        r.summary()
    # The run did what it is for: every kind of chaos, and requests served through it.
    for what in ("kills worker", "kills dispatcher", "drains", "restarts redis",
                 "restarts kafka"):
        assert r.counts[what] >= 1, (what, r.summary())
    assert r.counts["finals success"] > r.counts["requests"] // 2, r.summary()
