"""A worker stopped (SIGSTOP) past its lease while a request runs: recovery answers the
request with the worker-lost error, and when the worker comes back it finds the request
answered and publishes nothing of its own. One final reply per request, never a second,
different one. Real Kafka, real Redis, real sandboxes."""

import signal
import time
import uuid

from conftest import BROKERS
from driver import Driver, pb
from test_fleet_failures import wait_state


def test_a_worker_presumed_lost_does_not_publish_a_second_final(new_fleet, redis_client):
    f = new_fleet()
    a = f.start_worker("a")
    f.start_worker("b")
    f.wait_workers(redis_client, 2)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session()
        owner = redis_client.hget(f"{f.prefix}session:{sid}", "owner").decode()
        rid = uuid.uuid4().hex
        driver.send(pb.Request(request_id=rid, session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(
                code="import time; time.sleep(4); open('done.txt', 'w').write('x'); 'finished'"))))
        wait_state(redis_client, f, rid, "running")
        stopped = f.workers[owner]
        stopped.proc.send_signal(signal.SIGSTOP)
        try:
            # Past the lease (3 heartbeats of 500 ms): recovery answers the request.
            first = driver.wait_final(rid, timeout=60)
            assert first.result.is_error and first.result.error_code == pb.ERROR_CODE_INTERNAL
            assert "lost" in first.result.error_message, first.result.error_message
            time.sleep(1)  # the code's own 4 s have passed too
        finally:
            stopped.proc.send_signal(signal.SIGCONT)
        # The worker runs on, finds the request answered, and stays silent about it.
        deadline = time.time() + 30
        while "its own reply is not published" not in stopped.log_text():
            assert time.time() < deadline, stopped.log_text()[-3000:]
            time.sleep(0.2)
        time.sleep(2)  # what it would have published would be there by now
        finals = driver.finals(rid)
        assert len(finals) == 1, finals
        # The session goes on, moved, with what Redis had of it.
        r = driver.code(sid, "1 + 1")
        assert not r.is_error and r.structured_content.value == "2", r
        assert stopped.alive()
    finally:
        driver.close()


def pause_past_lease(redis_client, fleet, wid):
    """SIGSTOPs worker wid until its heartbeat key expired (its lease ran out)."""
    fleet.workers[wid].proc.send_signal(signal.SIGSTOP)
    deadline = time.time() + 30
    while redis_client.exists(f"{fleet.prefix}worker:{wid}"):
        assert time.time() < deadline, "the lease did not run out"
        time.sleep(0.1)


def test_a_session_moved_away_and_back_lives_on(new_fleet, redis_client):
    """Found by the chaos test: a session moved from a to b (a paused), then back to a
    (b paused). a's stale copy is stopped when the newer routing comes, and that stop
    must not end the session in Redis, where it lives on under the newest token."""
    f = new_fleet()
    a = f.start_worker("a")
    b = f.start_worker("b")
    f.wait_workers(redis_client, 2)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    key = lambda: f"{f.prefix}session:{sid}"  # noqa: E731
    try:
        sid = driver.start_session()
        first = redis_client.hget(key(), "owner").decode()
        other = b if first == a else a
        driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="writeFiles", arguments=pb.Arguments(content=[
                pb.FileContent(path="kept.txt", text="kept")]))))
        pause_past_lease(redis_client, f, first)
        try:
            assert not driver.code(sid, "1").is_error  # moved to the other worker
            assert redis_client.hget(key(), "owner").decode() == other
        finally:
            f.workers[first].proc.send_signal(signal.SIGCONT)
        f.wait_workers(redis_client, 2)
        pause_past_lease(redis_client, f, other)
        try:
            r = driver.code(sid, "open('kept.txt').read()")  # back to the first
            assert not r.is_error and r.structured_content.value == "'kept'", r
            assert redis_client.hget(key(), "owner").decode() == first
            assert redis_client.hget(key(), "status") != b"TERMINATED"
            again = driver.code(sid, "2 + 2")
            assert not again.is_error and again.structured_content.value == "4", again
        finally:
            f.workers[other].proc.send_signal(signal.SIGCONT)
        assert "the stale copy here was stopped" in f.workers[first].log_text()
    finally:
        driver.close()
