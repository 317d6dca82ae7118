"""The metrics docker/'s dashboard and alerts use, against live scrapes of a
codeq-dispatcher and a codeq-worker (metrics_listen), parsed by prometheus_client's text
parser: every family they refer to exists with the contract's type and labels
(tests/deploy/monitoring.py), the gauges the alerts test read as the alerts assume
(codeq_workers{state="ready"}, codeq_ready), and the compose healthcheck passes against
the daemons' own /readyz.

Needs the branches that add the daemons' /metrics and /readyz (issue 15: fleet metrics)
and the worker core's metrics; without them nothing listens and the test fails."""

import os
import subprocess
import sys
import time

from conftest import free_port
from driver import Driver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy"))

from monitoring import (CONTRACT, CORE, DAEMON, check_scrape_against_contract,  # noqa: E402
                        families_used, healthcheck_argv, scrape, scraped_families)


def wait_ready(daemon, port, timeout=90):
    """Polls /readyz until 200; returns the last answer."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        assert daemon.alive(), f"{daemon.name} exited: {daemon.log_text()[-3000:]}"
        try:
            last = scrape(port, "/readyz")
            if last[0] == 200:
                return last
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{daemon.name} not ready on {port}: {last!r}\n"
                         f"{daemon.log_text()[-3000:]}")


def gauge(families_text, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families
    for fam in text_string_to_metric_families(families_text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


def test_daemons_serve_what_dashboard_and_alerts_use(new_fleet, redis_client):
    f = new_fleet()
    wport, dport = free_port(), free_port()
    f.start_worker("m", env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{wport}"})
    f.wait_workers(redis_client, 1)
    dispatcher = f.start_dispatcher(env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{dport}"})
    worker = next(iter(f.workers.values()))
    wait_ready(worker, wport)
    wait_ready(dispatcher, dport)

    # A request through the whole path, so that the labelled families have samples.
    driver = Driver(f.env["CODEQ_BROKERS"], f.request_topic, fleet=f)
    try:
        sid = driver.start_session()
        assert driver.code(sid, "print(6 * 7)").structured_content.stdout == "42\n"
    finally:
        driver.close()

    texts = {}
    for name, port in (("worker", wport), ("dispatcher", dport)):
        status, ctype, text = scrape(port)
        assert status == 200 and "version=0.0.4" in ctype, (name, status, ctype)
        texts[name] = text
    worker_fams = scraped_families(texts["worker"])
    dispatcher_fams = scraped_families(texts["dispatcher"])

    used = families_used()
    # The worker core's families, in codeq-worker.
    core = {n for n in used if CONTRACT[n][2] == CORE}
    problems = check_scrape_against_contract(worker_fams, core)
    # The daemons' families, each in at least one daemon (which one exports which is the
    # daemons' business; both are scraped by the same Prometheus).
    both = dict(dispatcher_fams)
    both.update({k: v for k, v in worker_fams.items() if k not in both})
    problems += check_scrape_against_contract(both, {n for n in used
                                                     if CONTRACT[n][2] == DAEMON})
    assert not problems, "\n".join(problems)

    # What the alerts read: the dispatcher sees the worker ready, both are ready.
    deadline = time.time() + 30
    while gauge(texts["dispatcher"], "codeq_workers", state="ready") != 1:
        assert time.time() < deadline, texts["dispatcher"]
        time.sleep(0.5)
        texts["dispatcher"] = scrape(dport)[2]
    for name in texts:
        assert gauge(texts[name], "codeq_ready") == 1, name

    for daemon, port in ((worker, wport), (dispatcher, dport)):
        r = subprocess.run(healthcheck_argv(port), capture_output=True, timeout=30)
        assert r.returncode == 0, (daemon.name, r)
