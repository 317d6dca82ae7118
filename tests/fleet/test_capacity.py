"""A worker's capacity by memory (worker/capacity.c): it advertises the lesser of its
free session slots and the sessions that fit in the host's available memory less its
memory_reserve, and the dispatchers place new sessions by it. A worker told to keep
more memory than the host has advertises no room: every session goes to the other,
and with only that worker left, a start is refused with LIMIT_EXCEEDED."""

import time

from conftest import BROKERS
from driver import Driver, pb


def capacity(redis, fleet, wid):
    return int(redis.hget(fleet.prefix + "worker:" + wid, "capacity") or -1)


def test_sessions_go_where_memory_has_room(new_fleet, redis_client):
    with open("/proc/meminfo") as m:
        available_kb = next(int(line.split()[1]) for line in m if line.startswith("MemAvailable:"))
    assert available_kb < 1 << 30, "this test needs a host with less than 1 TiB available"
    f = new_fleet()
    full = f.start_worker("full", "--memory-reserve", "1T")
    roomy = f.start_worker("roomy")
    f.wait_workers(redis_client, 2)
    deadline = time.time() + 30
    while capacity(redis_client, f, full) != 0 or capacity(redis_client, f, roomy) <= 0:
        assert time.time() < deadline, (capacity(redis_client, f, full),
                                        capacity(redis_client, f, roomy))
        time.sleep(0.2)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        for _ in range(4):
            sid = driver.start_session()
            assert redis_client.hget(f.prefix + "session:" + sid, "owner").decode() == roomy
        f.workers[roomy].stop()
        deadline = time.time() + 60
        while redis_client.exists(f.prefix + "worker:" + roomy):
            assert time.time() < deadline, "the drained worker is still listed"
            time.sleep(0.2)
        r = driver.call(pb.Request(start_session=pb.StartSession()))
        assert r.result.is_error and r.result.error_code == pb.ERROR_CODE_LIMIT_EXCEEDED, r
        assert "no live worker has room" in r.result.error_message, r
    finally:
        driver.close()
