"""The daemons' /metrics, /healthz and /readyz (metrics_listen) during real fleet runs,
read with a real Prometheus text parser (Debian's python3-prometheus-client): counters
move by exactly the requests made, by outcome; the histograms count what the counters
count; refusals and dead letters count under their reasons; the worker's consumer lag
shows the backlog a stopped worker leaves; /readyz follows Redis. The names are the
contract of docs/operations.md."""

import signal
import time
import uuid

import pytest

from conftest import BROKERS, free_port
from driver import Driver, pb, texts
from scrape import answers_http, get, moved, scrape, value, wait_for

LINGER_S = 120  # metrics_linger of the module's worker: ended early by a second SIGTERM


class MetricsFleet:
    """One dispatcher and one worker of fleet, each serving metrics on a port of its own."""

    def __init__(self, fleet, redis, linger_s=0):
        self.fleet = fleet
        self.worker_port, self.dispatcher_port = free_port(), free_port()
        # A lease of 15 s: a worker stopped for 8 s (the lag test) is not taken for lost,
        # and its requests are not moved. Its /metrics outlives its drain (the last test).
        self.wid = fleet.start_worker(
            "m", "--heartbeat-ms", "5000",
            env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{self.worker_port}",
                 "CODEQ_METRICS_LINGER": str(linger_s)})
        fleet.wait_workers(redis, 1)
        self.dispatcher = fleet.start_dispatcher(
            env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{self.dispatcher_port}"})
        for port in (self.worker_port, self.dispatcher_port):
            wait_for("/healthz", lambda: answers_http(port))

    @property
    def worker(self):
        return self.fleet.workers[self.wid]


@pytest.fixture(scope="module")
def mfleet(services):
    from conftest import Fleet, REDIS_PORT
    import redis as redis_py
    f = Fleet()
    m = MetricsFleet(f, redis_py.Redis(host="127.0.0.1", port=REDIS_PORT), linger_s=LINGER_S)
    yield m
    f.stop()


@pytest.fixture(scope="module")
def driver(mfleet):
    d = Driver(BROKERS, mfleet.fleet.request_topic)
    yield d
    d.close()


def invoke(sid, code, request_id=None):
    return pb.Request(request_id=request_id or uuid.uuid4().hex, session_id=sid,
                      invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(code=code)))


def test_health_and_build_info(mfleet):
    # Before its warm pool was ever ready, the worker says why it is not.
    status, _, body = get(mfleet.worker_port, "/readyz")
    assert status == 200 or (status == 503 and "warm pool" in body), (status, body)
    for port, component in ((mfleet.dispatcher_port, "dispatcher"),
                            (mfleet.worker_port, "worker")):
        assert get(port, "/healthz")[0] == 200
        # A worker is ready once its warm pool was (a sandbox takes seconds to make).
        wait_for(f"{component} ready", lambda: get(port, "/readyz")[0] == 200, timeout=120)
        s = scrape(port)
        assert value(s, "codeq_build_info", version="0.1.0", component=component) == 1
        assert value(s, "codeq_ready") == 1
        assert get(port, "/nothing")[0] == 404
    s = scrape(mfleet.dispatcher_port)
    wait_for("one ready worker", lambda: value(scrape(mfleet.dispatcher_port), "codeq_workers",
                                               state="ready") == 1)
    assert value(s, "codeq_workers", state="draining") == 0


def test_counters_move_by_exactly_the_requests_made(mfleet, driver):
    dp, wp = mfleet.dispatcher_port, mfleet.worker_port
    d0, w0 = scrape(dp), scrape(wp)
    sid = driver.start_session()
    for i in range(3):
        assert driver.code(sid, f"{i} + 1").is_error is False
    assert driver.code(sid, "1 / 0").is_error is True
    r = driver.call(pb.Request(session_id=sid, get_session=pb.GetSession()))
    assert r.WhichOneof("payload") == "session", r
    # A repeat of a finished request: answered from its stored reply.
    rid = uuid.uuid4().hex
    driver.wait_final(driver.send(invoke(sid, "7", rid)))
    driver.send(invoke(sid, "7", rid))
    driver.wait_final(rid, count=2)
    # Refused (no session id: an invalid request) and answered with the refusal.
    refused = driver.send(pb.Request(invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code="1"))))
    r = driver.wait_final(refused).result
    assert r.is_error and "invalid request" in r.error_message, r
    # Not a request at all: dead-lettered.
    driver.send_raw(b"\xff\xff\xff\xff not protobuf", key=b"junk")

    want_dispatcher = {
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="start_session",
                 outcome="forwarded").items())): 1,
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="invoke", outcome="forwarded").items())): 5,
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="get_session", outcome="answered").items())): 1,
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="invoke", outcome="replayed").items())): 1,
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="invoke", outcome="refused").items())): 1,
        ("codeq_requests_total", frozenset(
            dict(component="dispatcher", operation="unknown",
                 outcome="dead_lettered").items())): 1,
        ("codeq_replays_total", frozenset()): 1,
        ("codeq_requests_refused_total", frozenset({("reason", "invalid")})): 1,
        ("codeq_dead_letters_total", frozenset({("reason", "invalid")})): 1,
        ("codeq_dead_letters_total", frozenset({("reason", "malformed")})): 1,
    }

    def requests_moved(port, before, want):
        got = {k: v for k, v in moved(before, scrape(port)).items()
               if k[0] in {n for n, _ in want}}
        return got if got == want else None

    got = None
    try:
        got = wait_for("the dispatcher's counters",
                       lambda: requests_moved(dp, d0, want_dispatcher), timeout=15)
    finally:
        if got is None:
            print(moved(d0, scrape(dp)))
    want_worker = {
        ("codeq_requests_total", frozenset(
            dict(component="worker", operation="start_session", outcome="ok").items())): 1,
        ("codeq_requests_total", frozenset(
            dict(component="worker", operation="invoke", outcome="ok").items())): 4,
        ("codeq_requests_total", frozenset(
            dict(component="worker", operation="invoke", outcome="error").items())): 1,
    }
    got = None
    try:
        got = wait_for("the worker's counters",
                       lambda: requests_moved(wp, w0, want_worker), timeout=15)
    finally:
        if got is None:
            print(moved(w0, scrape(wp)))
    w1 = scrape(wp)
    # Each request the worker ran was timed once from its arrival on the request topic,
    # to its start and to its final reply.
    for name in ("codeq_request_queue_wait_seconds_count", "codeq_request_duration_seconds_count"):
        assert value(w1, name, tool="executeCode") - value(w0, name, tool="executeCode") == 5
        assert value(w1, name, tool="start_session") - value(w0, name, tool="start_session") == 1
    # The fleet's plumbing is measured too.
    d1 = scrape(dp)
    for s0, s1 in ((d0, d1), (w0, w1)):
        assert value(s1, "codeq_redis_command_seconds_count") > value(
            s0, "codeq_redis_command_seconds_count")
        assert value(s1, "codeq_kafka_delivery_seconds_count") > value(
            s0, "codeq_kafka_delivery_seconds_count")
    assert value(d1, "codeq_redis_errors_total") == value(d0, "codeq_redis_errors_total")
    # Nothing moves without requests.
    time.sleep(1)
    assert {k: v for k, v in moved(d1, scrape(dp)).items()
            if k[0] == "codeq_requests_total"} == {}


def lag(samples, topic):
    return sum(v for (name, labels), v in samples.items()
               if name == "codeq_kafka_consumer_lag" and dict(labels).get("topic") == topic)


STOPPED_S = 8


def test_lag_shows_the_backlog_of_a_stopped_worker(mfleet, driver):
    dp, wp = mfleet.dispatcher_port, mfleet.worker_port
    topic = f"codeq.worker.{mfleet.wid}"
    sid = driver.start_session()
    # Read every second (and committed every 200 ms): what a scrape sees may be that old.
    wait_for("no lag", lambda: lag(scrape(wp), topic) == 0 or None)
    wait_for("no lag", lambda: lag(scrape(dp), mfleet.fleet.request_topic) == 0 or None)
    forwarded = dict(component="dispatcher", operation="invoke", outcome="forwarded")
    before = value(scrape(dp), "codeq_requests_total", **forwarded)
    n = 5
    mfleet.worker.proc.send_signal(signal.SIGSTOP)
    stopped = time.time()
    try:
        rids = [driver.send(invoke(sid, f"{i}")) for i in range(n)]
        # Forwarded: the requests wait on the stopped worker's topic.
        wait_for("the forwards", lambda: value(scrape(dp), "codeq_requests_total",
                                               **forwarded) - before == n)
        # Past the consumer's session timeout (6 s): its group dropped it.
        time.sleep(STOPPED_S - (time.time() - stopped))
    finally:
        mfleet.worker.proc.send_signal(signal.SIGCONT)
    # Continued, the worker's poller reads the lag at once (its round is overdue), while
    # its consumer must first notice it left its group, join again, fetch, and commit
    # (every 200 ms): the backlog shows until then (a second or so), and the scrapes
    # below come within it.
    seen = 0
    deadline = time.time() + 5
    while time.time() < deadline and seen == 0:
        seen = lag(scrape(wp), topic)
    assert seen >= 1, "no lag seen after the worker was continued"
    for i, rid in enumerate(rids):
        r = driver.wait_final(rid, timeout=120).result
        assert not r.is_error and texts(r) == [str(i)], r
    wait_for("the lag drains", lambda: lag(scrape(wp), topic) == 0 or None)


def test_readyz_follows_redis(private_redis, new_fleet):
    f = new_fleet(redis_port=private_redis.port)
    m = MetricsFleet(f, private_redis.client())
    ports = (m.dispatcher_port, m.worker_port)
    for port in ports:
        wait_for("ready", lambda: get(port, "/readyz")[0] == 200)
    private_redis.stop()
    try:
        for port in ports:
            status, _, body = wait_for("unready without Redis", lambda: (
                lambda r: r if r[0] == 503 else None)(get(port, "/readyz")))
            assert "Redis" in body, body
            assert value(scrape(port), "codeq_ready") == 0
            assert get(port, "/healthz")[0] == 200  # alive all the same
    finally:
        private_redis.start()
    for port in ports:
        wait_for("ready again", lambda: get(port, "/readyz")[0] == 200)
        assert value(scrape(port), "codeq_ready") == 1
    # The daemons' own connections broke and were made again.
    wait_for("a reconnection counted", lambda: value(
        scrape(m.dispatcher_port), "codeq_redis_reconnects_total") >= 1 or None)


def test_a_drained_worker_counts_its_sessions_and_the_adopter_counts_them(mfleet, driver):
    """Last in this module: it drains the module's worker. metrics_linger keeps the
    drained worker's /metrics up after its drain, so its final count is scraped."""
    import redis as redis_py
    from conftest import REDIS_PORT
    wp = mfleet.worker_port
    sids = [driver.start_session() for _ in range(2)]  # on the one worker there is
    for sid in sids:
        assert driver.code(sid, "x = 6").is_error is False
    drained_before = value(scrape(wp), "codeq_sessions_drained_total")
    port = free_port()
    other = mfleet.fleet.start_worker("n", env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{port}"})
    mfleet.fleet.wait_workers(redis_py.Redis(host="127.0.0.1", port=REDIS_PORT), 2)
    wait_for("/healthz", lambda: answers_http(port))
    assert value(scrape(port), "codeq_sessions_adopted_total") == 0
    # Every session this worker holds (this test's and the earlier tests') is handed off.
    held = value(scrape(wp), "codeq_sessions_live")
    assert held >= len(sids)
    proc = mfleet.worker.proc
    proc.send_signal(signal.SIGTERM)  # drains, hands its sessions off, then lingers
    wait_for("the drained count", lambda: value(
        scrape(wp), "codeq_sessions_drained_total") - drained_before == held or None)
    status, _, body = get(wp, "/readyz")
    assert status == 503 and "draining" in body, (status, body)
    assert value(scrape(wp), "codeq_ready") == 0
    assert proc.poll() is None, "exited before its metrics_linger"
    for sid in sids:
        assert texts(driver.code(sid, "x * 7"))[-1] == "42"
    assert value(scrape(port), "codeq_sessions_adopted_total") == len(sids)
    assert other in mfleet.fleet.workers
    # A second SIGTERM ends the linger at once.
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 0
