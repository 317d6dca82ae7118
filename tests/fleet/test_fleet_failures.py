"""The fleet when its parts fail: a dispatcher killed mid-stream, a worker drained by
SIGTERM, Redis and Kafka restarted under running daemons. Real Kafka, real Redis, real
sandboxes; each test builds its own fleet (own topics, key prefix and worker ids), and
restarts only a Redis or a broker of its own, so that it disturbs nothing else. The
promise under test (docs/fleet.md): every accepted request gets a final reply, and none
runs twice."""

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

from conftest import BROKERS, SERVICES, free_port
from driver import Driver, pb, texts
from scrape import wait_for


def invoke(sid, code, request_id=None):
    return pb.Request(request_id=request_id or uuid.uuid4().hex, session_id=sid,
                      invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(code=code)))


def owner(redis, fleet, sid):
    return (redis.hget(fleet.prefix + "session:" + sid, "owner") or b"").decode()


def wait_state(redis, fleet, rid, state, timeout=60):
    deadline = time.time() + timeout
    while redis.hget(fleet.prefix + "req:" + rid, "state") != state.encode():
        assert time.time() < deadline, f"request {rid} never reached state {state}"
        time.sleep(0.05)


def assert_one_final_each(driver, request_ids):
    """Every request has a final reply; a second copy is allowed only if identical (a
    request read again, after a dispatcher restart or a rebalance of the dispatchers'
    group, is answered again from its stored reply)."""
    for rid in request_ids:
        finals = driver.finals(rid)
        assert finals, f"no final reply to {rid}"
        assert all(f.SerializeToString() == finals[0].SerializeToString() for f in finals), \
            f"different final replies to {rid}: {finals}"


def start_fleet(new_fleet, redis, workers=("a", "b"), **kw):
    f = new_fleet(**kw)
    for w in workers:
        f.start_worker(w)
    f.wait_workers(redis, len(workers))
    f.start_dispatcher()
    return f


@pytest.mark.parametrize("dispatchers", [1, 2], ids=["alone", "in-a-group-of-two"])
def test_dispatcher_killed_mid_stream_loses_nothing_and_runs_nothing_twice(new_fleet,
                                                                           redis_client,
                                                                           dispatchers):
    """kill -9 of a dispatcher while a stream of requests flows (some handled, some
    forwarded but not committed, some not yet read), then a new dispatcher: every
    request gets its final reply and runs exactly once (each appends its id to a file
    of its session and counts itself in a variable). With two in the consumer group,
    the survivor or the newcomer takes the dead one's partitions over."""
    f = start_fleet(new_fleet, redis_client)
    for _ in range(dispatchers - 1):
        f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sessions = [driver.start_session(name=f"s{i}") for i in range(4)]
        assert {owner(redis_client, f, s) for s in sessions} == set(f.workers)
        per_session = 12
        plan = [(sid, uuid.uuid4().hex) for _ in range(per_session) for sid in sessions]
        code = "open('ids.txt', 'a').write({rid!r} + '\\n')\nn = globals().get('n', 0) + 1\nn"
        half = len(plan) // 2
        burst = range(half, half + 12)
        in_burst = threading.Event()

        def stream():
            # Spaced out, then a burst (the dispatcher is killed in the middle of it,
            # with requests read and forwarded but their offsets not yet committed),
            # then spaced out again while the dispatcher is dead and restarted.
            for i, (sid, rid) in enumerate(plan):
                driver.send(invoke(sid, code.format(rid=rid), rid))
                if i == half + 4:
                    in_burst.set()
                if i not in burst:
                    time.sleep(0.03)

        sender = threading.Thread(target=stream)
        sender.start()
        assert in_burst.wait(60)
        old = f.dispatchers[0]
        old.kill()
        assert not old.alive()
        f.start_dispatcher()
        sender.join()
        for _, rid in plan:
            r = driver.wait_final(rid, timeout=120)
            assert r.WhichOneof("payload") == "result" and not r.result.is_error, r
        assert_one_final_each(driver, [rid for _, rid in plan])
        for sid in sessions:
            ran = driver.code(sid, "open('ids.txt').read()")
            ids = eval(texts(ran)[-1]).split()
            expected = [rid for s, rid in plan if s == sid]
            # Exactly once each, in the order sent (one session, one partition).
            assert ids == expected, (sid, ids, expected)
            # No session moved: its variable counted every request once.
            assert texts(driver.code(sid, "n")) == [str(per_session)]
        for _, rid in plan:
            assert redis_client.hget(f.prefix + "req:" + rid, "state") == b"done"
    finally:
        driver.close()


def test_worker_drains_on_sigterm(new_fleet, redis_client):
    """SIGTERM to a worker with sessions and an execution in flight: the execution and
    the request queued behind it finish with their real output, the worker exits 0 and
    gives its sessions up; a request sent to it while it drains and later requests run
    on the other worker, with the files written before the drain."""
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    try:
        victim = sorted(f.workers)[0]
        other = sorted(f.workers)[1]
        mine = []
        while len(mine) < 2:
            sid = driver.start_session()
            if owner(redis_client, f, sid) == victim:
                mine.append(sid)
        s1, s2 = mine
        for sid in mine:
            r = driver.code(sid, f"open('before.txt', 'w').write('written on {sid}')")
            assert not r.is_error, r
        long_req = invoke(s1, "import time\ntime.sleep(3)\nprint('done')")
        driver.send(long_req)
        queued = driver.send(invoke(s1, "open('before.txt').read()"))
        wait_state(redis_client, f, long_req.request_id, "running")
        worker = f.workers[victim]
        worker.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + 30
        while redis_client.hget(f.prefix + "worker:" + victim, "draining") != b"1":
            assert time.time() < deadline, "the worker never said it was draining"
            time.sleep(0.05)
        time.sleep(0.3)  # past its last poll of its topic (either way is correct)
        # Sent while the worker drains: it still owns s2, so the request goes to its
        # topic, which it no longer reads; recovery routes it on once the worker is gone.
        during = driver.send(invoke(s2, "open('before.txt').read()"))

        done = driver.wait_final(long_req.request_id, timeout=60).result
        assert not done.is_error, done
        assert done.structured_content.stdout == "done\n", done
        r = driver.wait_final(queued, timeout=60).result
        assert texts(r) == [repr(f"written on {s1}")], r
        assert worker.proc.wait(timeout=60) == 0, worker.log_text()[-3000:]
        assert "drained; exiting" in worker.log_text()
        assert not redis_client.exists(f.prefix + "worker:" + victim)

        r = driver.wait_final(during, timeout=60).result
        assert not r.is_error, r
        assert repr(f"written on {s2}") in texts(r), r
        ran_on = redis_client.hget(f.prefix + "req:" + during, "worker").decode()
        assert ran_on in (victim, other)  # drained there, or routed on after
        # Released sessions move on their next request, with their files.
        for sid in (s1, s2):
            assert owner(redis_client, f, sid) in ("", other)
            r = driver.code(sid, "open('before.txt').read()")
            assert repr(f"written on {sid}") in texts(r), r
            assert owner(redis_client, f, sid) == other
        time.sleep(1)  # a second, different reply would come within this
        assert_one_final_each(driver, [long_req.request_id, queued, during])
        assert not redis_client.zcard(f.prefix + "inflight:" + victim)
    finally:
        driver.close()


def session_facts(driver, sid):
    r = driver.call(pb.Request(session_id=sid, get_session=pb.GetSession()))
    assert r.WhichOneof("payload") == "session", r
    return r.session


def touch(mib):
    """Code that allocates mib MiB and touches every page (a bytearray's pages are
    not resident until written)."""
    return (f"b = bytearray({mib} << 20)\n"
            "for i in range(0, len(b), 4096):\n    b[i] = 1\nlen(b) >> 20")


@pytest.mark.parametrize("how", ["kill -9", "sigterm drain"])
def test_a_moved_session_keeps_what_it_was_started_with(new_fleet, redis_client, how):
    """A session started with 128 MiB of memory, an env, a name and a time to live,
    moved to the other worker after its owner is killed (or drained by SIGTERM), runs
    there as it was started: FOO is set, its file is there, 50 MiB can be allocated
    and 300 MiB ends with the memory limit (not the worker's default of 512 MiB); its
    name, creation time and time to live are unchanged. Its start parameters leave
    Redis with the session."""
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session(name="limited", session_timeout_seconds=1200,
                                   limits=pb.Limits(memory_bytes=128 << 20),
                                   env={"FOO": "bar"})
        key = f.prefix + "session:" + sid
        victim = owner(redis_client, f, sid)
        other = [w for w in f.workers if w != victim][0]
        assert texts(driver.code(sid, "import os\nos.environ.get('FOO')"))[-1] == "'bar'"
        r = driver.code(sid, "open('kept.txt', 'w').write('survives')")
        assert not r.is_error, r
        # Made executable after its last write: a chmod changes no size nor mtime.
        r = driver.code(sid, "import os\nopen('run.sh', 'w').write('#!/bin/sh\\necho ran\\n')\n"
                             "open('secret', 'w').write('s')\nos.chmod('secret', 0o600)\n"
                             "open('locked', 'w').write('l')\nos.chmod('locked', 0)")
        assert not r.is_error, r
        r = driver.code(sid, "os.chmod('run.sh', 0o755)\nos.makedirs('venv/bin')\n"
                             "os.symlink('run.sh', 'go')\n"
                             "os.symlink('/usr/bin/python3', 'venv/bin/python')")
        assert not r.is_error, r
        before = session_facts(driver, sid)

        worker = f.workers[victim]
        if how == "kill -9":
            worker.kill()
        else:
            worker.proc.send_signal(signal.SIGTERM)
            assert worker.proc.wait(timeout=60) == 0, worker.log_text()[-3000:]

        r = driver.code(sid, "import os\nos.environ.get('FOO'), open('kept.txt').read()")
        assert any("moved to a new worker" in t for t in texts(r)), r
        assert texts(r)[-1] == "('bar', 'survives')", r
        assert owner(redis_client, f, sid) == other
        # Files keep their permission bits: the script still runs, the secret stays private.
        r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCommand", arguments=pb.Arguments(
                command="./run.sh; stat -c %a secret locked; ./go; readlink go; "
                        "venv/bin/python -c 'print(6 * 7)'"))))
        assert r.result.structured_content.stdout == "ran\n600\n0\nran\nrun.sh\n42\n", r
        r = driver.code(sid, touch(50))
        assert not r.is_error and texts(r)[-1] == "50", r
        r = driver.code(sid, touch(300), timeout=180)
        assert r.is_error and r.error_code == pb.ERROR_CODE_LIMIT_EXCEEDED, r
        assert "memory limit" in r.error_message, r
        # The kernel restarted after the kill keeps the env (and the limit).
        assert texts(driver.code(sid, "import os\nos.environ.get('FOO')"))[-1] == "'bar'"

        time.sleep(0.5)  # the new owner writes its facts once the session is idle
        after = session_facts(driver, sid)
        assert after.name == "limited"
        assert after.created_at_unix_ms == before.created_at_unix_ms
        assert after.session_timeout_seconds == 1200
        assert after.status == pb.SESSION_STATUS_READY

        assert redis_client.hexists(key, "start")
        r = driver.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))
        assert r.WhichOneof("payload") == "session", r
        deadline = time.time() + 10
        while redis_client.hexists(key, "start"):
            assert time.time() < deadline, "the start parameters outlived the session"
            time.sleep(0.05)
    finally:
        driver.close()


def test_daemons_ride_out_a_redis_restart(private_redis, new_fleet):
    """Redis stopped and started again (same port, data kept): the daemons reconnect by
    themselves; a request sent while Redis is down waits for it and then runs once with
    its real result (never silence, never an unstored error); later requests succeed."""
    redis = private_redis.client()
    f = new_fleet(redis_port=private_redis.port)
    # A lease of 3 s: the daemons' reconnection backoff must not expire it on a busy host.
    f.start_worker("a", "--heartbeat-ms", "1000")
    f.wait_workers(redis, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session()
        assert not driver.code(sid, "open('log.txt', 'a').write('before\\n')").is_error
        private_redis.stop()
        during = driver.send(invoke(sid, "open('log.txt', 'a').write('during\\n')\n"
                                         "open('log.txt').read()"))
        time.sleep(3)
        assert driver.finals(during) == [], "answered while Redis was down"
        private_redis.start()
        r = driver.wait_final(during, timeout=60).result
        assert not r.is_error, r
        assert texts(r)[-1] == repr("before\nduring\n"), r
        r = driver.code(sid, "open('log.txt').read()")
        assert texts(r)[-1] == repr("before\nduring\n"), r
        sid2 = driver.start_session()
        assert texts(driver.code(sid2, "6 * 7")) == ["42"]
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        for d in f.dispatchers + list(f.workers.values()):
            text = d.log_text()
            assert "Redis" in text and "is back" in text, (d.name, text[-3000:])
        # A copy of the reply is allowed: the dispatcher's consumer group may rebalance
        # while it waits for Redis, and the request is then read again (docs/fleet.md).
        time.sleep(1)
        assert_one_final_each(driver, [during])
    finally:
        driver.close()


@pytest.fixture
def services_redis():
    """The Redis of scripts/services, as it ships, alone (`up redis`), on a free port in a
    scratch directory: the test restarts or kills it."""
    d = tempfile.mkdtemp(prefix="codeq-services-redis-")
    env = dict(os.environ, CODEQ_REDIS_PORT=str(free_port()))

    def services(*args):
        subprocess.run([SERVICES, *args, "redis", "--dir", d], env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL)
    services("up")
    services.port = int(env["CODEQ_REDIS_PORT"])
    services.pid = lambda: int(open(os.path.join(d, "redis", "redis.pid")).read())
    yield services
    subprocess.run([SERVICES, "down", "redis", "--dir", d], env=env, timeout=120,
                   stdout=subprocess.DEVNULL)
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("how", ["restart", "crash"])
def test_sessions_survive_a_restart_or_crash_of_the_services_redis(services_redis, new_fleet,
                                                                   how):
    """The Redis of scripts/services is durable (append-only file, fsync every second):
    after `scripts/services restart redis`, or kill -9 of Redis a few seconds after the
    last write and `up` again, the session, its file and its start parameters are still
    there and requests go on (docs/fleet.md, "Redis durability")."""
    import redis as redis_py
    redis = redis_py.Redis(host="127.0.0.1", port=services_redis.port)
    assert redis.config_get("appendonly")["appendonly"] == "yes"
    assert redis.config_get("appendfsync")["appendfsync"] == "everysec"
    f = new_fleet(redis_port=services_redis.port)
    f.start_worker("a", "--heartbeat-ms", "1000")  # as in the Redis restart test above
    f.wait_workers(redis, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session(env={"FOO": "bar"})
        assert not driver.code(sid, "open('kept.txt', 'w').write('survives')").is_error
        if how == "restart":
            services_redis("restart")
        else:
            time.sleep(2)  # past the fsync of the last write
            os.kill(services_redis.pid(), signal.SIGKILL)
            time.sleep(0.5)
            services_redis("up")
        assert redis.hget(f.prefix + "session:" + sid, "status") == b"READY"
        assert redis.hexists(f.prefix + "session:" + sid, "start")
        assert redis.hexists(f.prefix + "files:" + sid, "m:kept.txt")
        r = driver.code(sid, "import os\nos.environ.get('FOO'), open('kept.txt').read()",
                        timeout=90)
        assert texts(r)[-1] == "('bar', 'survives')", r
        sid2 = driver.start_session()
        assert texts(driver.code(sid2, "6 * 7")) == ["42"]
    finally:
        driver.close()


def test_daemons_ride_out_a_kafka_restart(private_kafka, new_fleet, redis_client):
    """The broker stopped and started again (a private one, data kept): a reply produced
    while it is down and a request sent while it is down are delivered once it is back;
    the daemons reconnect by themselves and later requests succeed."""
    f = new_fleet(brokers=private_kafka.brokers)
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(private_kafka.brokers, f.request_topic)
    try:
        sid = driver.start_session()
        assert not driver.code(sid, "open('log.txt', 'a').write('before\\n')").is_error
        running = driver.send(invoke(sid, "import time\ntime.sleep(2)\n"
                                          "open('log.txt', 'a').write('running\\n')"))
        wait_state(redis_client, f, running, "running")
        private_kafka.stop()
        during = driver.send(invoke(sid, "open('log.txt', 'a').write('during\\n')\n"
                                         "open('log.txt').read()"), flush=False)
        time.sleep(3)  # the running request ends, and its reply waits for the broker
        private_kafka.start()
        r = driver.wait_final(running, timeout=90).result
        assert not r.is_error, r
        r = driver.wait_final(during, timeout=90).result
        assert not r.is_error, r
        assert texts(r)[-1] == repr("before\nrunning\nduring\n"), r
        sid2 = driver.start_session()
        assert texts(driver.code(sid2, "6 * 7")) == ["42"]
        assert texts(driver.code(sid, "open('log.txt').read()"))[-1] == \
            repr("before\nrunning\nduring\n")
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        assert_one_final_each(driver, [running, during])
    finally:
        driver.close()


def test_forwards_the_broker_does_not_acknowledge_are_read_again_not_an_exit(
        private_kafka, private_redis, new_fleet):
    """The broker frozen (SIGSTOP) after the dispatcher read a request and before it
    forwarded it, for longer than message.timeout.ms (30 s): the forward is not
    acknowledged. The dispatcher does not exit and does not commit the request: it
    rewinds and reads it again, and forwards it once the broker is back (docs/fleet.md,
    "Kafka outages"). Redis frozen for 3 s meanwhile keeps the dispatcher between the
    two until the broker is frozen."""
    redis = private_redis.client()
    f = new_fleet(brokers=private_kafka.brokers, redis_port=private_redis.port)
    # Beats slow enough that holding Redis for 3 s loses no lease.
    f.start_worker("a", "--heartbeat-ms", "2000")
    f.wait_workers(redis, 1)
    f.start_dispatcher()
    driver = Driver(private_kafka.brokers, f.request_topic)
    with open(os.path.join(private_kafka.dir, "kafka", "kafka.pid")) as pidfile:
        broker = int(pidfile.read())
    frozen = []
    try:
        sid = driver.start_session()
        assert texts(driver.code(sid, "1")) == ["1"]
        os.kill(private_redis.proc.pid, signal.SIGSTOP)
        frozen.append(private_redis.proc.pid)
        rid = driver.send(invoke(sid, "6 * 7"))
        time.sleep(1.5)  # the dispatcher has read it, and waits for Redis
        os.kill(broker, signal.SIGSTOP)
        frozen.append(broker)
        time.sleep(1.5)
        os.kill(private_redis.proc.pid, signal.SIGCONT)
        frozen.remove(private_redis.proc.pid)
        dispatcher = f.dispatchers[0]
        deadline = time.time() + 120
        while "reading their requests again" not in dispatcher.log_text():
            assert dispatcher.alive(), dispatcher.log_text()[-4000:]
            assert time.time() < deadline, "the forward never timed out:\n" + \
                dispatcher.log_text()[-4000:]
            time.sleep(0.5)
        os.kill(broker, signal.SIGCONT)
        frozen.remove(broker)
        r = driver.wait_final(rid, timeout=180)
        assert texts(r.result) == ["42"], r
        assert dispatcher.alive()
        assert texts(driver.code(sid, "2 + 3", timeout=180)) == ["5"]
        assert_one_final_each(driver, [rid])
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        driver.close()


def test_start_past_its_deadline_at_the_worker_frees_its_client_token(new_fleet, redis_client):
    """A start forwarded in time whose deadline passed before its worker ran it (the
    worker paused: SIGSTOP, well within its lease) is answered TIMED_OUT, and leaves
    nothing behind: its session is not left STARTING in the tenant's sessions, and a
    retry with the same client token starts a session that runs code, not the dead one
    (docs/fleet.md, "A request's life")."""
    f = new_fleet()
    wid = f.start_worker("a", "--heartbeat-ms", "4000")  # a lease of 12 s
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    worker = f.workers[wid].proc
    try:
        driver.start_session(name="warm-up")  # the dispatcher is up and routing
        token = uuid.uuid4().hex
        deadline_ms = int(time.time() * 1000) + 4000
        worker.send_signal(signal.SIGSTOP)
        try:
            rid = driver.send(pb.Request(deadline_unix_ms=deadline_ms, start_session=pb.StartSession(
                name="late", client_token=token)))
            wait_state(redis_client, f, rid, "forwarded", timeout=3)
            sid = redis_client.get(f.prefix + "start:" + token).decode()
            time.sleep(max(0.0, deadline_ms / 1000 - time.time()) + 0.5)
        finally:
            worker.send_signal(signal.SIGCONT)
        r = driver.wait_final(rid)
        assert r.result.is_error and r.result.error_code == pb.ERROR_CODE_TIMED_OUT, r
        session = f.prefix + "session:" + sid
        assert redis_client.hget(session, "status") != b"STARTING"
        assert redis_client.zscore(f.prefix + "sessions", sid) is None
        assert redis_client.get(f.prefix + "start:" + token) is None

        retry = driver.call(pb.Request(start_session=pb.StartSession(name="late",
                                                                     client_token=token)))
        assert retry.WhichOneof("payload") == "session", retry
        assert retry.session.session_id != sid
        assert texts(driver.code(retry.session.session_id, "6 * 7")) == ["42"]
        # The token now names the new session: a second retry gets it, starts nothing.
        again = driver.call(pb.Request(start_session=pb.StartSession(name="late",
                                                                     client_token=token)))
        assert again.session.session_id == retry.session.session_id
    finally:
        driver.close()


def test_a_reply_kafka_did_not_take_is_published_by_recovery(private_kafka, new_fleet,
                                                             redis_client):
    """The broker down (a private one, stopped) when a worker publishes a final reply,
    for longer than message.timeout.ms (30 s): the reply is stored but never reached
    its topic, and the request stays in the worker's in-flight set. Once the broker is
    back and the worker gone (drained), recovery publishes the stored reply: the client
    gets it without sending the request again (docs/fleet.md, "Dead workers")."""
    f = new_fleet(brokers=private_kafka.brokers)
    wid = f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(private_kafka.brokers, f.request_topic)
    try:
        sid = driver.start_session()
        assert texts(driver.code(sid, "1")) == ["1"]
        rid = driver.send(invoke(sid, "import time\ntime.sleep(2)\n6 * 7"))
        wait_state(redis_client, f, rid, "running")
        private_kafka.stop()
        worker = f.workers[wid]
        deadline = time.time() + 120
        while "replies_not_delivered" not in worker.log_text():
            assert time.time() < deadline, "the reply never timed out:\n" + \
                worker.log_text()[-4000:]
            time.sleep(0.5)
        assert redis_client.hget(f.prefix + "req:" + rid, "state") == b"done"
        assert redis_client.zscore(f.prefix + "inflight:" + wid, rid) is not None
        private_kafka.start()
        assert driver.finals(rid) == []
        worker.stop()  # drained: its in-flight requests go to recovery
        r = driver.wait_final(rid, timeout=120)
        assert texts(r.result) == ["42"], r
        # Recovery drops the request from the in-flight set when Kafka confirms the
        # reply, which can come after the client has read it.
        wait_for("the recovered request leaves the dead worker's in-flight set",
                 lambda: redis_client.zscore(f.prefix + "inflight:" + wid, rid) is None)
        assert redis_client.hget(f.prefix + "req:" + rid, "body") is None
        assert_one_final_each(driver, [rid])
    finally:
        driver.close()
