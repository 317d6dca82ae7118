"""A worker stops the sandboxes of sessions Redis no longer gives it: one lost by a Redis
crash (its key gone), one moved to another worker while this one was cut off. Real
Kafka, real Redis, real sandboxes."""

import time

from conftest import BROKERS
from driver import Driver


def live_sessions(redis, fleet, wid):
    v = redis.hget(f"{fleet.prefix}worker:{wid}", "sessions")
    return int(v) if v is not None else -1


def wait_for(predicate, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def test_sessions_redis_lost_or_moved_are_stopped_here(new_fleet, redis_client):
    f = new_fleet()
    wid = f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        lost, moved, kept = (driver.start_session() for _ in range(3))
        for sid in (lost, moved, kept):
            assert driver.code(sid, "x = 1").is_error is False
        assert wait_for(lambda: live_sessions(redis_client, f, wid) == 3)
        # A Redis crash that lost one session's record; another worker owns the second.
        redis_client.delete(f"{f.prefix}session:{lost}")
        redis_client.hset(f"{f.prefix}session:{moved}", mapping={"owner": "elsewhere",
                                                                  "fence": 7})
        assert wait_for(lambda: live_sessions(redis_client, f, wid) == 1), \
            f.workers[wid].log_text()[-3000:]
        log = f.workers[wid].log_text()
        assert f"session {lost}: gone from Redis" in log, log[-3000:]
        assert f"session {moved}: Redis names another owner" in log
        # The session Redis still gives this worker keeps its variables.
        r = driver.code(kept, "x + 1")
        assert not r.is_error and r.structured_content.value == "2", r
    finally:
        driver.close()
