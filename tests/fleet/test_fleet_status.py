"""`codeq fleet status`: the fleet's workers, dispatchers, request backlog and dead
letters, read from the fleet's real Redis and Kafka while its daemons run, are stopped
(SIGSTOP) and are killed; and its exit status, which scripts and probes test."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import Fleet
from driver import Driver, pb

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e"))
from mcp_client import CODEQ, assert_no_sanitizer_reports  # noqa: E402

MAX_SESSIONS = 3


def status(fleet, *args, timeout=60):
    """(exit status, stdout, stderr) of `codeq fleet status`, configured as the fleet's
    daemons are (their CODEQ_* environment)."""
    env = dict(fleet.env)
    env.pop("CODEQ_LOG_LEVEL", None)
    p = subprocess.run([CODEQ, "fleet", "status", *args], env=env, capture_output=True,
                       timeout=timeout)
    err = p.stderr.decode(errors="replace")
    assert_no_sanitizer_reports(err, "codeq fleet status")
    return p.returncode, p.stdout.decode(), err


def status_json(fleet):
    rc, out, err = status(fleet, "--json")
    assert rc in (0, 1), err
    doc = json.loads(out)
    assert doc["ok"] == (rc == 0)
    return rc, doc


def wait_status(fleet, check, what, timeout=60):
    """The first status document for which check(rc, doc) holds; fails after timeout
    with the last one."""
    deadline = time.time() + timeout
    while True:
        rc, doc = status_json(fleet)
        if check(rc, doc):
            return rc, doc
        if time.time() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout} s; last status (exit {rc}):\n"
                                 + json.dumps(doc, indent=2))
        time.sleep(0.3)


@pytest.fixture(scope="module")
def one(services, redis_client):
    """A fleet of one worker and one dispatcher, which the tests stop and kill."""
    f = Fleet()
    f.start_worker("a", "--max-sessions", str(MAX_SESSIONS))
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def driver(one):
    d = Driver(one.env["CODEQ_BROKERS"], one.request_topic, fleet=one)
    yield d
    d.close()


def test_unreachable_redis_is_exit_2_with_a_clear_message(one):
    fleet = Fleet(redis_port=1)  # nothing listens on port 1
    rc, out, err = status(fleet, timeout=20)
    assert rc == 2, (rc, out, err)
    assert out == ""
    assert "Redis (127.0.0.1:1)" in err and "cannot reach Redis" in err, err


def test_unreachable_kafka_is_exit_2_with_a_clear_message(one):
    fleet = Fleet(brokers="127.0.0.1:1")
    rc, out, err = status(fleet, "--timeout", "2", timeout=20)
    assert rc == 2, (rc, out, err)
    assert "cannot reach Kafka at 127.0.0.1:1" in err, err


def test_bad_options_are_exit_2(one):
    rc, _, err = status(one, "--no-such-setting", "1")
    assert rc == 2 and "unknown option '--no-such-setting'" in err, err
    rc, _, err = status(one, "--timeout", "0")
    assert rc == 2 and "--timeout" in err, err


def test_a_running_fleet_lists_its_worker_dispatcher_and_sessions(one, driver):
    worker = next(iter(one.workers))
    dispatcher = one.dispatchers[0]
    sid = driver.start_session()
    # The worker's next heartbeat counts the session; the dispatcher's commit follows
    # its forward within a fraction of a second.
    rc, doc = wait_status(one, lambda rc, d: rc == 0 and d["requests"]["lag"] == 0 and any(
        w["sessions"] == 1 for w in d["workers"]), "the session on the worker, no lag")
    assert [w["id"] for w in doc["workers"]] == [worker]
    w = doc["workers"][0]
    assert w["state"] == "ready"
    assert w["maxSessions"] == MAX_SESSIONS
    assert w["free"] == MAX_SESSIONS - 1
    assert w["memoryBytes"] > 0
    assert w["interpreters"] == []  # the fleet defines none; the built-in one is not listed
    assert isinstance(w["warmReady"], int) and 0 <= w["warmReady"] <= 1, w
    assert 0 <= w["heartbeatAgeMs"] < 60000
    assert len(doc["dispatchers"]) == 1
    d = doc["dispatchers"][0]
    assert d["state"] == "live"
    assert d["id"].endswith(f"-{dispatcher.proc.pid}"), d
    assert d["startedMs"] <= d["heartbeatMs"]
    assert doc["sessions"] == {"count": 1, "exact": True}
    # The session took the warm sandbox; the pool (--warm-pool 1) makes another, and the
    # heartbeat after that says so.
    wait_status(one, lambda rc, d: d["workers"][0]["warmReady"] == 1, "the warm pool refilled")
    assert doc["requests"]["topic"] == one.request_topic
    assert doc["requests"]["group"] == f"codeq-dispatchers.{one.request_topic}"
    parts = doc["requests"]["partitions"]
    assert [p["partition"] for p in parts] == list(range(8))
    # The startSession was consumed and committed: somewhere the committed offset is
    # the high watermark, past 0.
    assert sum(p["high"] for p in parts) >= 1
    assert all(p["lag"] == 0 for p in parts)
    assert any(p["committed"] == p["high"] and p["high"] > 0 for p in parts)
    assert doc["deadLetters"] == {"topic": one.dlq_topic, "count": 0, "recent": []}

    # The table says the same.
    rc, out, err = status(one)
    assert rc == 0, err
    assert "workers: 1 ready, 0 draining, 0 lost; dispatchers: 1 live; sessions: 1" in out
    line = next(x for x in out.splitlines() if x.startswith(worker))
    assert line.split()[1:4] == ["ready", f"1/{MAX_SESSIONS}", str(MAX_SESSIONS - 1)]

    driver.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))
    wait_status(one, lambda rc, d: d["workers"][0]["sessions"] == 0 and d["sessions"]["count"] == 0,
                "the session gone")


def test_a_malformed_request_adds_one_dead_letter(one, driver):
    _, before = wait_status(one, lambda rc, d: d["requests"]["lag"] == 0, "no lag")
    count = before["deadLetters"]["count"]
    driver.send_raw(b"\xff\x00 not a codeq.v1 Request", key=b"junk")
    _, doc = wait_status(one, lambda rc, d: d["deadLetters"]["count"] > count,
                         "the dead letter")
    assert doc["deadLetters"]["count"] == count + 1
    recent = doc["deadLetters"]["recent"]
    assert recent and recent[0]["reason"], recent
    assert recent[0]["offset"] == count  # the newest, first
    rc, out, _ = status(one)
    assert f"dead letters: {one.dlq_topic}, {count + 1}" in out
    assert recent[0]["reason"] in out


def test_a_stopped_dispatcher_shows_as_lag_then_lost(one, driver):
    dispatcher = one.dispatchers[0]
    wait_status(one, lambda rc, d: rc == 0 and d["requests"]["lag"] == 0, "no lag")
    dispatcher.proc.send_signal(signal.SIGSTOP)
    try:
        n = 5
        for i in range(n):
            driver.send(pb.Request(list_sessions=pb.ListSessions()))
        rc, doc = wait_status(one, lambda rc, d: d["requests"]["lag"] >= n, "the backlog")
        assert doc["requests"]["lag"] == n
        assert sum(p["lag"] for p in doc["requests"]["partitions"]) == n
        # Its heartbeat expires (3 beats): no live dispatcher, the fleet is not ready.
        rc, doc = wait_status(one, lambda rc, d: d["dispatchers"][0]["state"] == "lost",
                              "the dispatcher lost")
        assert rc == 1 and doc["ok"] is False
        assert doc["requests"]["lag"] == n
        rc, out, _ = status(one)
        assert rc == 1 and "no dispatcher is live" in out
    finally:
        dispatcher.proc.send_signal(signal.SIGCONT)
    wait_status(one, lambda rc, d: rc == 0 and d["requests"]["lag"] == 0,
                "the backlog drained", timeout=120)


def test_a_killed_worker_shows_as_lost_and_the_fleet_not_ready(one, driver):
    worker = next(iter(one.workers))
    wait_status(one, lambda rc, d: rc == 0, "ready")
    # No dispatcher recovers (and forgets) the dead worker while it is stopped, so the
    # worker stays listed, lost.
    dispatcher = one.dispatchers[0]
    dispatcher.proc.send_signal(signal.SIGSTOP)
    try:
        one.workers[worker].kill()
        rc, doc = wait_status(one, lambda rc, d: d["workers"][0]["state"] == "lost",
                              "the worker lost")
        w = doc["workers"][0]
        assert w["id"] == worker and rc == 1
        assert w["sessions"] is None and w["heartbeatAgeMs"] is None
        rc, out, _ = status(one)
        assert rc == 1 and "0 ready, 0 draining, 1 lost" in out
    finally:
        dispatcher.proc.send_signal(signal.SIGCONT)
    # The dispatcher is back, but with no worker the fleet still cannot serve.
    rc, doc = wait_status(one, lambda rc, d: d["dispatchers"][0]["state"] == "live",
                          "the dispatcher back")
    assert rc == 1
    assert not any(w["state"] == "ready" for w in doc["workers"])
    rc, out, _ = status(one)
    assert rc == 1 and "no worker is ready" in out and "no dispatcher" not in out
