"""The daemons' logs (docs/log-events.md): every line on stderr is one JSON object with
ts, level, component, event and msg; ids are fields of their own; codeq-worker writes
one "execution" line per call it ran, unless log_executions is off."""

import json
import signal

from conftest import BROKERS
from driver import Driver, pb

FIXED = ("ts", "level", "component", "event", "msg")
LEVELS = {"debug", "info", "warn", "error"}


def events(daemon):
    """The daemon's log lines, each parsed; a line that is not a JSON object with the
    fixed keys fails the test."""
    lines = []
    for n, text in enumerate(daemon.log_text().splitlines(), 1):
        try:
            line = json.loads(text)
        except ValueError:
            raise AssertionError(f"{daemon.name} line {n} is not JSON: {text[:300]!r}")
        assert isinstance(line, dict), (daemon.name, n, text[:300])
        for key in FIXED:
            assert isinstance(line.get(key), str) and line[key], (daemon.name, n, key, text)
        assert line["level"] in LEVELS, (daemon.name, n, text)
        lines.append(line)
    return lines


def of(lines, event):
    return [line for line in lines if line["event"] == event]


def invoke(driver, sid, code, timeout=0.0):
    """Runs code in session sid; returns (request id, result)."""
    rid = driver.send(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code=code, timeout=timeout))))
    final = driver.wait_final(rid)
    assert final.WhichOneof("payload") == "result", final
    return rid, final.result


def start_fleet(new_fleet, redis_client, workers=("a", "b"), env=None):
    f = new_fleet()
    for w in workers:
        f.start_worker(w, env=env)
    f.wait_workers(redis_client, len(workers))
    f.start_dispatcher()
    return f


def test_every_line_is_an_event_with_its_ids_as_fields(new_fleet, redis_client):
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic, f)
    made = {}  # request id -> (session id, expected outcome, error code)
    try:
        sid = driver.start_session()
        rid, r = invoke(driver, sid, "x = 6 * 7\nx")
        assert not r.is_error, r
        made[rid] = (sid, "ok", "NONE")
        rid, r = invoke(driver, sid, "raise ValueError('on purpose')")
        assert r.is_error, r
        made[rid] = (sid, "user_error", "NONE")
        rid, r = invoke(driver, sid, "import time\ntime.sleep(30)", timeout=1)
        assert r.is_error and r.error_code == pb.ERROR_CODE_TIMED_OUT, r
        made[rid] = (sid, "timeout", "TIMED_OUT")

        # A drain moves the session: the dispatcher's move, the new owner's adoption.
        victim = redis_client.hget(f.prefix + "session:" + sid, "owner").decode()
        other = next(w for w in f.workers if w != victim)
        f.workers[victim].proc.send_signal(signal.SIGTERM)
        assert f.workers[victim].proc.wait(timeout=120) == 0, \
            f.workers[victim].log_text()[-3000:]
        rid, r = invoke(driver, sid, "x + 1")
        assert not r.is_error, r
        made[rid] = (sid, "ok", "NONE")
    finally:
        driver.close()
    f.stop()

    by_daemon = {d.name: events(d) for d in f.dispatchers + list(f.workers.values())}
    for name, lines in by_daemon.items():
        assert lines, f"{name} logged nothing"
        component = "dispatcher" if name.startswith("dispatcher") else "worker"
        assert {line["component"] for line in lines} == {component}, name
        # The old form, an id only in the text, is gone.
        assert not of(lines, "message"), (name, of(lines, "message")[:3])
    worker_lines = [line for w in f.workers for line in by_daemon[w]]
    dispatcher_lines = [line for d in f.dispatchers for line in by_daemon[d.name]]

    # One execution line per call made, with its ids, outcome and figures as fields.
    executions = of(worker_lines, "execution")
    assert sorted(line["request_id"] for line in executions) == sorted(made), executions
    for line in executions:
        sid, outcome, error_code = made[line["request_id"]]
        assert line["level"] == "info", line
        assert line["session_id"] == sid, line
        assert line["outcome"] == outcome and line["error_code"] == error_code, line
        assert line["tool"] == "executeCode" and line["language"] == "python", line
        assert line["interpreter"] == "codeq.default", line
        assert line["worker_id"] in f.workers, line
        for key in ("duration_ms", "execution_time_ms"):
            assert isinstance(line[key], (int, float)) and line[key] >= 0, (key, line)
            # Rounded to the microsecond, not 8000.7420000000002.
            assert len(repr(line[key]).partition(".")[2]) <= 3, (key, line)
        assert isinstance(line["cpu_ms"], int) and isinstance(line["peak_memory_bytes"], int)
        assert line["duration_ms"] >= line["execution_time_ms"], line
    timed_out = next(line for line in executions if line["outcome"] == "timeout")
    assert timed_out["execution_time_ms"] >= 900, timed_out
    # The last call ran on the worker the session moved to.
    last = next(line for line in executions if line["request_id"] == rid)
    assert last["worker_id"] == other, last

    # Lifecycle lines carry their ids as fields.
    started = of(worker_lines, "worker_started")
    assert sorted(line["worker_id"] for line in started) == sorted(f.workers), started
    sessions = of(worker_lines, "session_started")
    assert [(line["session_id"], line["worker_id"]) for line in sessions] == [(sid, victim)]
    moved = of(dispatcher_lines, "session_moved")
    assert [(line["session_id"], line["worker_id"]) for line in moved] == [(sid, other)], moved
    assert isinstance(moved[0]["fence"], int) and moved[0]["fence"] >= 2, moved
    assert moved[0]["request_id"] == rid, moved
    adopted = of(by_daemon[other], "session_adopted")
    assert [line["session_id"] for line in adopted] == [sid], adopted
    assert adopted[0]["fence"] == moved[0]["fence"], (adopted, moved)
    saved = of(by_daemon[victim], "session_state_saved")
    assert [line["session_id"] for line in saved] == [sid], saved
    assert of(by_daemon[victim], "worker_drained"), by_daemon[victim][-5:]
    assert of(dispatcher_lines, "dispatcher_started")[0]["topic"] == f.request_topic


def test_log_executions_off_writes_no_execution_lines(new_fleet, redis_client):
    f = start_fleet(new_fleet, redis_client, workers=("a",),
                    env={"CODEQ_LOG_EXECUTIONS": "off"})
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        for code in ("1 + 1", "raise ValueError('on purpose')"):
            invoke(driver, sid, code)
    finally:
        driver.close()
    f.stop()
    (wid,) = f.workers
    lines = events(f.workers[wid])
    assert not of(lines, "execution"), of(lines, "execution")
    # The worker did log, and the session's other lines are still there.
    assert [line["session_id"] for line in of(lines, "session_started")] == [sid]
