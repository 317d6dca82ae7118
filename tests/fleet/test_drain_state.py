"""A drained worker moves its sessions' variables; a killed one moves files only.

SIGTERM to a worker saves each session's kernel variables in Redis (state:<sid>) before
it releases the session; the worker that adopts the session puts them back into its
new kernels before the session's next call, and that call's first text says the move
was a drain, what came back and what did not. kill -9 leaves no state: the note says
that only the files were kept. Real Kafka, real Redis, real workers (as root)."""

import signal
import time
import uuid

from conftest import BROKERS
from driver import Driver, pb, texts

# Python: ints, a dict, numpy and pandas data, a function that reads a global, a class
# and its instance, modules under aliases, a value over the state's cap (the workers'
# files quota: 2 MiB), and an open file, a generator and a thread that cannot move.
PYTHON_STATE = """
import numpy as np
import pandas as pd
import os.path as osp
import threading
n = 42
d = {"a": [1, 2], "b": {"c": 3}}
arr = np.arange(4)
df = pd.DataFrame({"x": [1, 2, 3]})
def add(v):
    return v + n
class Point:
    def __init__(self, x):
        self.x = x
p = Point(7)
big = b"x" * (3 << 20)
fh = open("notes.txt", "w")
fh.write("kept")
fh.flush()
gen = (i for i in range(3))
runner = threading.Thread(target=print)
"""

PYTHON_CHECK = ("(n, d, int(arr.sum()), int(df.x.sum()), add(1), p.x, type(p).__name__, "
                "np.ones(2).tolist(), osp.join('a', 'b'), open('notes.txt').read(), "
                "'fh' in globals(), 'big' in globals())")
PYTHON_EXPECTED = ("(42, {'a': [1, 2], 'b': {'c': 3}}, 6, 6, 43, 7, 'Point', [1.0, 1.0], "
                   "'a/b', 'kept', False, False)")


def call(driver, sid, code, language="python"):
    r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code=code, language=language))))
    assert r.WhichOneof("payload") == "result", r
    return r.result


def owner(redis, fleet, sid):
    return (redis.hget(fleet.prefix + "session:" + sid, "owner") or b"").decode()


def start_fleet(new_fleet, redis, *worker_args):
    f = new_fleet()
    for w in ("a", "b"):
        f.start_worker(w, *worker_args)
    f.wait_workers(redis, 2)
    f.start_dispatcher()
    return f


def test_a_drain_moves_python_and_javascript_variables(new_fleet, redis_client):
    f = start_fleet(new_fleet, redis_client, "--files-quota", "2M")
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        r = call(driver, sid, PYTHON_STATE)
        assert not r.is_error, r
        r = call(driver, sid, "const js = {a: 1, list: [1, 2], when: new Date(0)};\n"
                              "let count = 3;\nfunction helper() { return 1; }\n"
                              "class Shape {}\n", "javascript")
        assert not r.is_error, r
        victim = owner(redis_client, f, sid)
        other = [w for w in f.workers if w != victim][0]

        worker = f.workers[victim]
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=120) == 0, worker.log_text()[-3000:]
        assert "variables saved" in worker.log_text(), worker.log_text()[-3000:]

        r = call(driver, sid, PYTHON_CHECK)
        assert not r.is_error, r
        assert owner(redis_client, f, sid) == other
        note, value = texts(r)[0], texts(r)[-1]
        assert value == PYTHON_EXPECTED, r
        assert note.startswith("codeq: this session was moved to a new worker"), note
        assert "drain" in note and "worker was lost" not in note, note
        # What came back, and what did not, with why.
        for name in ("n", "d", "arr", "df", "add", "Point", "p"):
            assert f" {name}," in note or f" {name};" in note, (name, note)
        assert "np (numpy)" in note and "pd (pandas)" in note, note
        assert "fh (an open file" in note, note
        assert "gen (TypeError: cannot pickle 'generator' object)" in note, note
        assert "runner (a thread)" in note, note
        assert "big (too large to move" in note, note
        # The JavaScript kernel's plain data came back; its function and class did not.
        assert "JavaScript variables" in note, note
        assert "helper (a function)" in note and "Shape (a class)" in note, note
        r = call(driver, sid, "JSON.stringify([js, js.when instanceof Date, count, "
                              "typeof helper])", "javascript")
        assert not r.is_error, r
        assert texts(r)[-1] == ("'[{\"a\":1,\"list\":[1,2],\"when\":\"1970-01-01T00:00:00.000Z\"},"
                                "true,3,\"undefined\"]'"), r
        # Said once, and the state is restored once: taken from Redis by the adopter.
        r = call(driver, sid, "n + 1")
        assert texts(r) == ["43"], r
        assert not redis_client.exists(f.prefix + "state:" + sid)
    finally:
        driver.close()


def test_a_killed_worker_moves_files_only(new_fleet, redis_client):
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        r = call(driver, sid, "n = 42\nopen('kept.txt', 'w').write('survives')")
        assert not r.is_error, r
        victim = owner(redis_client, f, sid)
        f.workers[victim].kill()

        r = call(driver, sid, "('n' in globals(), open('kept.txt').read())")
        assert not r.is_error, r
        note = texts(r)[0]
        assert texts(r)[-1] == "(False, 'survives')", r
        assert "worker was lost" in note and "only its files were kept" in note, note
        assert "(a drain)" not in note, note
    finally:
        driver.close()


def test_a_state_from_before_a_later_move_is_not_restored(new_fleet, redis_client):
    """A drain, an adoption, then a crash of the adopter: the session comes back with its
    files only, not with the variables of the first drain (they are older than what the
    session ran since)."""
    f = start_fleet(new_fleet, redis_client)
    f.start_worker("c")
    f.wait_workers(redis_client, 3)
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        assert not call(driver, sid, "n = 1").is_error
        first = owner(redis_client, f, sid)
        f.workers[first].proc.send_signal(signal.SIGTERM)
        assert f.workers[first].proc.wait(timeout=120) == 0
        r = call(driver, sid, "n = n + 1\nn")
        assert texts(r)[-1] == "2" and "drain" in texts(r)[0], r
        second = owner(redis_client, f, sid)
        # A stale state left behind (as if the adopter had not taken it) must be ignored.
        key = f.prefix + "state:" + sid
        fence = int(redis_client.hget(f.prefix + "session:" + sid, "fence"))
        redis_client.hset(key, mapping={"fence": str(fence - 1), "drained": "1"})
        f.workers[second].kill()
        r = call(driver, sid, "'n' in globals()")
        assert texts(r)[-1] == "False", r
        assert "only its files were kept" in texts(r)[0], r
    finally:
        driver.close()


def test_session_end_deletes_its_state(new_fleet, redis_client):
    """state:<sid> goes with the session (a stop through its owner)."""
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        assert not call(driver, sid, "n = 1").is_error
        key = f.prefix + "state:" + sid
        redis_client.hset(key, mapping={"fence": "0", "drained": "1", "python": uuid.uuid4().hex})
        r = driver.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))
        assert r.WhichOneof("payload") == "session", r
        deadline = time.time() + 30
        while redis_client.exists(key):
            assert time.time() < deadline, "state:<sid> outlived its session"
            time.sleep(0.05)
    finally:
        driver.close()


def test_variables_that_do_not_fit_beside_the_files_are_not_moved(new_fleet, redis_client):
    """The state counts against the session's files quota in Redis (2 MiB here): with
    2 MB of files, 200 KB of variables do not fit; the files move, and the note says why
    the variables did not."""
    f = start_fleet(new_fleet, redis_client, "--files-quota", "2M")
    driver = Driver(BROKERS, f.request_topic, f)
    try:
        sid = driver.start_session()
        r = call(driver, sid, "open('f.bin', 'wb').write(b'x' * 2_000_000)\n"
                              "data = bytes(200_000)\nn = 1")
        assert not r.is_error and not any("quota" in t for t in texts(r)), r
        victim = owner(redis_client, f, sid)
        f.workers[victim].proc.send_signal(signal.SIGTERM)
        assert f.workers[victim].proc.wait(timeout=120) == 0

        r = call(driver, sid, "import os\n('n' in globals(), os.path.getsize('f.bin'))")
        assert texts(r)[-1] == "(False, 2000000)", r
        note = texts(r)[0]
        assert "(a drain)" in note and "Python variables were not moved" in note, note
        assert "exceed the session's quota in Redis" in note, note
    finally:
        driver.close()
