"""The fleet end to end: real Kafka, real Redis, one dispatcher, two workers, real
sandboxes (docs/fleet.md is the protocol under test)."""

import os
import time
import uuid

import pytest
from confluent_kafka import Consumer

from conftest import BROKERS, REPO
from driver import Driver, pb, texts


@pytest.fixture(scope="module")
def driver(fleet):
    d = Driver(BROKERS, fleet.request_topic)
    yield d
    d.close()


def owner(redis_client, fleet, sid):
    return redis_client.hget(fleet.prefix + "session:" + sid, "owner").decode()


def test_sessions_are_placed_on_both_workers_and_stay_there(fleet, driver, redis_client):
    sessions = [driver.start_session(name=f"s{i}") for i in range(6)]
    owners = {sid: owner(redis_client, fleet, sid) for sid in sessions}
    assert set(owners.values()) == set(fleet.workers), owners
    for i, sid in enumerate(sessions):
        assert driver.code(sid, f"x = {i}").is_error is False
    request_ids = []
    for i, sid in enumerate(sessions):
        rid = driver.send(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="x * 10"))))
        request_ids.append((sid, rid, i))
    for sid, rid, i in request_ids:
        r = driver.wait_final(rid).result
        assert texts(r) == [str(i * 10)], r  # state kept: the session never moved
        # Every request of a session was run by its owner.
        # The worker stores a reply once it is on its way: "done" follows shortly.
        deadline = time.time() + 10
        while redis_client.hget(fleet.prefix + "req:" + rid, "state") != b"done":
            assert time.time() < deadline, f"request {rid} never stored as done"
            time.sleep(0.01)
        req = redis_client.hgetall(fleet.prefix + "req:" + rid)
        assert req[b"worker"].decode() == owners[sid]
    assert {sid: owner(redis_client, fleet, sid) for sid in sessions} == owners


def test_output_streams_before_the_final_reply(driver):
    sid = driver.start_session()
    rid = driver.send(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="import sys\nprint('one', flush=True)\nprint('two', file=sys.stderr)"))))
    final = driver.wait_final(rid)
    replies = driver.replies[rid]
    chunks = [r.chunk for kind, r, _ in replies if kind == "chunk"]
    assert replies[-1][0] == "final"
    assert b"".join(c.data for c in chunks if c.stream == pb.STREAM_STDOUT) == b"one\n"
    assert b"".join(c.data for c in chunks if c.stream == pb.STREAM_STDERR) == b"two\n"
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert final.result.structured_content.stdout == "one\n"
    headers = replies[-1][2]
    assert headers["request_id"] == rid and headers["session_id"] == sid


def test_workspace_files_are_kept_in_redis(fleet, driver, redis_client):
    sid = driver.start_session()
    r = driver.code(sid, "open('report.csv', 'w').write('a,b\\n1,2\\n')\n"
                         "import os\nos.makedirs('sub', exist_ok=True)\n"
                         "open('sub/blob.bin', 'wb').write(bytes(range(256)) * 4096)")
    assert r.is_error is False, r
    files = redis_client.hgetall(fleet.prefix + "files:" + sid)
    assert files[b"m:report.csv"].split()[0] == b"8"
    assert files[b"m:sub/blob.bin"].split()[0] == str(256 * 4096).encode()
    chunks = redis_client.hgetall(fleet.prefix + "chunks:" + sid)
    assert chunks[b"report.csv:0"] == b"a,b\n1,2\n"
    blob = b"".join(chunks[f"sub/blob.bin:{i}".encode()] for i in range(2))
    assert blob == bytes(range(256)) * 4096
    # A removed file leaves Redis too.
    driver.code(sid, "import os\nos.remove('report.csv')")
    assert not redis_client.hexists(fleet.prefix + "files:" + sid, "m:report.csv")


def test_the_same_request_id_runs_once_and_answers_twice(driver):
    sid = driver.start_session()
    req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="n = globals().get('n', 0) + 1\nopen('runs.txt', 'a').write('x')\nn")))
    driver.send(req)
    first = driver.wait_final(req.request_id)
    driver.send(req)
    second = driver.wait_final(req.request_id, count=2)
    assert first.SerializeToString() == second.SerializeToString()
    assert texts(first.result) == ["1"]
    r = driver.code(sid, "open('runs.txt').read()")
    assert texts(r) == ["'x'"], "the request ran twice"


def test_malformed_bytes_are_dead_lettered_and_service_goes_on(fleet, driver):
    garbage = b"\xff\x00not a protobuf\x12"
    driver.send_raw(garbage, key=b"junk")
    # Valid protobuf, invalid request (no operation): dead-lettered and answered.
    rid = driver.send(pb.Request())
    r = driver.wait_final(rid)
    assert r.result.is_error and r.result.error_code == pb.ERROR_CODE_INVALID_ARGUMENT
    assert "no operation" in r.result.error_message
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": "dlq-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([fleet.dlq_topic])
    seen = {}
    deadline = time.time() + 60
    while len(seen) < 2 and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            seen[m.value()] = dict((k, v.decode()) for k, v in m.headers())
    c.close()
    assert garbage in seen, seen
    assert "does not decode" in seen[garbage]["codeq-dlq-reason"]
    assert seen[garbage]["codeq-source-topic"] == fleet.request_topic
    sid = driver.start_session()
    assert texts(driver.code(sid, "6 * 7")) == ["42"]
    assert all(d.alive() for d in fleet.dispatchers)


def test_reply_topics_that_cannot_be_written_do_not_stop_the_dispatcher(fleet, driver):
    """A reply topic Kafka refuses as a name, and one its client deleted after the first
    reply: those replies cannot be delivered, and the dispatcher goes on serving every
    other client (a failed reply used to fail the whole batch, which the dispatcher then
    consumed again after a restart: a crash loop one client could cause)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    bad = pb.Request(request_id=uuid.uuid4().hex, session_id="s", reply_topic="no such topic!",
                     get_session=pb.GetSession())
    driver.send_raw(bad.SerializeToString(), key=b"s")

    admin = AdminClient({"bootstrap.servers": BROKERS})
    gone = "codeq.replies.gone-" + uuid.uuid4().hex[:10]
    admin.create_topics([NewTopic(gone, 1, 1)])[gone].result()
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": gone,
                  "auto.offset.reset": "earliest"})
    c.subscribe([gone])
    first = pb.Request(request_id=uuid.uuid4().hex, session_id="nope", reply_topic=gone,
                       get_session=pb.GetSession())
    driver.send_raw(first.SerializeToString(), key=b"nope")
    deadline = time.time() + 60
    got = None
    while got is None and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got = pb.Response.FromString(m.value())
    c.close()
    assert got is not None and got.result.error_code == pb.ERROR_CODE_NOT_FOUND, got
    admin.delete_topics([gone])[gone].result()
    for _ in range(3):
        again = pb.Request(request_id=uuid.uuid4().hex, session_id="nope", reply_topic=gone,
                           get_session=pb.GetSession())
        driver.send_raw(again.SerializeToString(), key=b"nope")

    for _ in range(3):
        sid = driver.start_session()
        assert texts(driver.code(sid, "6 * 7")) == ["42"]
    assert all(d.alive() for d in fleet.dispatchers)
    log = "".join(d.log_text() for d in fleet.dispatchers)
    assert "reply_topic is not a Kafka topic name" in log


def test_the_fleet_writes_replies_only_to_client_reply_topics(fleet, driver):
    """A request names its reply topic and the fleet writes there: a topic outside the
    reply prefix (another application's), the request topic, the dead-letter topic or
    a worker's topic is refused: dead-lettered with the reason, nothing written to it,
    and a message written straight to a worker topic with such a reply topic is not
    run either."""
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": BROKERS})
    other = "orders-" + uuid.uuid4().hex[:8]
    admin.create_topics([NewTopic(other, 1, 1)])[other].result()
    worker_topic = "codeq.worker." + next(iter(fleet.workers))
    sid = driver.start_session()
    targets = [other, fleet.request_topic, fleet.dlq_topic, worker_topic]
    sent = {}
    for topic in targets:
        req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, reply_topic=topic,
                         invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(
                             code="open('ran.txt', 'a').write('x')")))
        driver.send_raw(req.SerializeToString(), key=sid.encode())
        sent[req.request_id] = topic
    # Straight to the worker's topic, past the dispatcher.
    direct = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, reply_topic=other,
                        invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(
                            code="open('ran.txt', 'a').write('x')")))
    driver.send_raw(direct.SerializeToString(), key=sid.encode(), topic=worker_topic)

    c = Consumer({"bootstrap.servers": BROKERS, "group.id": "dlq-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest"})
    c.subscribe([fleet.dlq_topic])
    reasons = {}
    deadline = time.time() + 60
    while len(reasons) < len(targets) and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        try:
            rid = pb.Request.FromString(m.value()).request_id
        except Exception:
            continue
        if rid in sent:
            reasons[rid] = dict((k, v.decode()) for k, v in m.headers())["codeq-dlq-reason"]
    c.close()
    assert set(reasons) == set(sent), reasons
    assert "reply topic prefix" in reasons[next(r for r, t in sent.items() if t == other)]
    for rid, topic in sent.items():
        if topic != other:
            assert "one of the fleet's own topics" in reasons[rid] or \
                "reply topic prefix" in reasons[rid], reasons[rid]
    # Nothing ran, nothing was written to the other application's topic.
    r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="import os; os.path.exists('ran.txt')"))))
    assert texts(r.result) == ["False"]
    peek = Consumer({"bootstrap.servers": BROKERS, "group.id": "peek-" + uuid.uuid4().hex,
                     "auto.offset.reset": "earliest"})
    peek.subscribe([other])
    deadline = time.time() + 5
    while time.time() < deadline:
        m = peek.poll(0.5)
        assert m is None or m.error(), f"the fleet wrote to {other}"
    peek.close()
    admin.delete_topics([other])[other].result()


def test_files_over_the_limit_are_refused_before_they_reach_a_worker(fleet, driver,
                                                                     redis_client):
    """A writeFiles whose claim (fleet/claim.h) declares a file of 100 MB + 1 byte: the
    dispatcher answers INVALID_ARGUMENT itself, without reading the payload, and nothing
    reaches the session's workspace. (A client checks the same before it sends.)"""
    import sys
    sys.path.insert(0, os.path.join(REPO, "clients", "python"))
    from codeq_client.claims import ClaimStore
    sid = driver.start_session()
    store = ClaimStore(fleet.env["CODEQ_REDIS"], fleet.prefix)
    args = pb.Arguments(content=[pb.FileContent(path="big.bin", blob=b"\0" * 1000)])
    cid = store.put(args.SerializeToString(), 60)
    req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, invoke=pb.Invoke(
        tool="writeFiles", arguments_claim=pb.Claim(
            id=cid, size=args.ByteSize(), largest_file=(100 << 20) + 1)))
    r = driver.call(req)
    store.close()
    assert r.result.is_error and r.result.error_code == pb.ERROR_CODE_INVALID_ARGUMENT, r
    assert "larger than the 100 MB limit" in r.result.error_message
    # Answered by the dispatcher: never forwarded to a worker.
    assert not redis_client.hget(fleet.prefix + "req:" + req.request_id, "worker")
    listing = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="listFiles", arguments=pb.Arguments(directory_path=""))))
    assert "big.bin" not in str(listing.result), listing.result


def test_a_request_past_its_deadline_is_not_run(driver):
    sid = driver.start_session()
    req = pb.Request(session_id=sid, deadline_unix_ms=int(time.time() * 1000) - 1000,
                     invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(
                         code="open('ran.txt', 'w').write('yes')")))
    r = driver.call(req).result
    assert r.is_error and r.error_code == pb.ERROR_CODE_TIMED_OUT
    r = driver.code(sid, "import os\nos.path.exists('ran.txt')")
    assert texts(r) == ["False"]


def test_unknown_session_is_not_found(driver):
    r = driver.code("no-such-session", "1")
    assert r.is_error and r.error_code == pb.ERROR_CODE_NOT_FOUND


def test_a_repeat_of_a_running_request_is_answered_on_its_own_reply_topic(fleet, driver):
    """A request id sent again from another reply topic (a client that restarted) while
    the first copy runs: no second run, and the repeat gets the same final reply."""
    sid = driver.start_session()
    req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="import time\nopen('repeat.txt', 'a').write('x')\ntime.sleep(2)\n'slow'")))
    driver.send(req)
    other = Driver(BROKERS, fleet.request_topic)
    try:
        time.sleep(0.5)  # the first copy is running
        other.send(pb.Request.FromString(req.SerializeToString()))
        first = driver.wait_final(req.request_id)
        repeat = other.wait_final(req.request_id, timeout=60)
    finally:
        other.close()
    assert texts(first.result) == ["'slow'"]
    assert repeat.SerializeToString() == first.SerializeToString()
    assert texts(driver.code(sid, "open('repeat.txt').read()")) == ["'x'"], "ran twice"


def early_forward(fleet, driver, redis_client, sid, code):
    """An executeCode request produced straight to its session's worker as a dispatcher
    sends it early (fast_forward() in dispatcher.c: before Redis recorded it)."""
    worker = owner(redis_client, fleet, sid)
    fence = redis_client.hget(fleet.prefix + "session:" + sid, "fence").decode()
    req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid,
                     reply_topic=driver.reply_topic, invoke=pb.Invoke(
                         tool="executeCode", arguments=pb.Arguments(code=code)))
    driver.producer.produce("codeq.worker." + worker, req.SerializeToString(),
                            key=sid.encode(), headers=[("codeq-fence", fence.encode()),
                                                       ("codeq-early", b"1")])
    driver.producer.flush()
    return req, worker


def test_an_early_forward_waits_for_its_record(fleet, driver, redis_client):
    """A forward that reaches its worker before Redis recorded it runs once the record
    comes; one whose record never comes (the dispatcher answered it otherwise) never
    runs, and the session goes on serving."""
    sid = driver.start_session()
    req, worker = early_forward(fleet, driver, redis_client, sid,
                                "open('early.txt', 'a').write('r')\n'ran'")
    time.sleep(0.4)  # the worker asks for the record, and asks again
    key = fleet.prefix + "req:" + req.request_id
    assert redis_client.hget(key, "state") is None
    redis_client.hset(key, mapping={"state": "forwarded", "worker": worker, "session": sid,
                                    "body": req.SerializeToString()})
    assert texts(driver.wait_final(req.request_id, timeout=30).result) == ["'ran'"]

    never, _ = early_forward(fleet, driver, redis_client, sid,
                             "open('early.txt', 'a').write('n')")
    after = driver.code(sid, "open('early.txt').read()")  # queued behind it: waits it out
    assert texts(after) == ["'r'"], "an unrecorded early forward ran"
    assert driver.finals(never.request_id) == []
    assert redis_client.hget(fleet.prefix + "req:" + never.request_id, "state") is None


def test_bench_traces_each_step(fleet):
    """codeq-bench-fleet --trace against this fleet: the stamps of the client, the
    dispatcher and the worker come back with every reply, in the order of the path."""
    import subprocess
    from conftest import BIN_DIR
    out = subprocess.run(
        [os.path.join(BIN_DIR, "codeq-bench-fleet"), "--brokers", BROKERS, "--request-topic",
         fleet.request_topic, "--only", "fleet", "--runs", "20", "--warmup", "2", "--settle",
         "0", "--trace"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    steps = [line.split()[0:3] for line in out.stdout.splitlines() if " -> " in line]
    path = [a for a, _, _ in steps] + [steps[-1][2]]
    assert path == ["c.sent", "d.poll", "d.sent", "w.poll", "w.thread", "w.claimed", "w.ran",
                    "w.saved", "w.encoded", "w.reply", "c.recv", "c.woken"], out.stdout
    for line in out.stdout.splitlines():
        if " -> " in line:
            assert line.split()[-1] == "20", line  # every round trip was traced


def test_worker_killed_mid_execution(fleet, driver, redis_client):
    """kill -9 of a worker: its sessions move to the other worker with their files; the
    request it was running gets the worker-lost error and is not run again; later
    requests succeed; every request has exactly one final reply."""
    victim_sessions = []
    while len(victim_sessions) < 2:
        sid = driver.start_session()
        if owner(redis_client, fleet, sid) == sorted(fleet.workers)[0]:
            victim_sessions.append(sid)
    victim = sorted(fleet.workers)[0]
    a, b = victim_sessions
    assert driver.code(a, "open('kept.txt', 'w').write('survives')\nv = 1").is_error is False
    running = driver.send(pb.Request(session_id=a, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="open('started.txt', 'a').write('s')\nimport time\ntime.sleep(60)"))))
    queued = driver.send(pb.Request(session_id=a, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code="open('kept.txt').read()"))))
    deadline = time.time() + 60
    while redis_client.hget(fleet.prefix + "req:" + running, "state") != b"running":
        assert time.time() < deadline, "the long request never started"
        time.sleep(0.05)
    time.sleep(0.5)  # its files (started.txt) are saved only after it ends: it never does
    fleet.workers[victim].kill()

    lost = driver.wait_final(running, timeout=120).result
    assert lost.is_error and lost.error_code == pb.ERROR_CODE_INTERNAL
    assert "was lost" in lost.error_message and "not run again" in lost.error_message
    moved = driver.wait_final(queued, timeout=120).result
    assert moved.is_error is False, moved
    all_text = texts(moved)
    assert "'survives'" in all_text
    assert any("moved to a new worker" in t for t in all_text), all_text
    other = [w for w in fleet.workers if w != victim][0]
    assert owner(redis_client, fleet, a) == other
    assert texts(driver.code(b, "1 + 1"))[-1] == "2"
    assert owner(redis_client, fleet, b) == other
    # Variables did not survive the move; the lost request was not re-run.
    r = driver.code(a, "'v' in globals()")
    assert texts(r) == ["False"]
    r = driver.code(a, "import os\nos.path.exists('started.txt')")
    assert texts(r) == ["False"]
    time.sleep(1)
    for rid in (running, queued):
        assert len(driver.finals(rid)) == 1, rid


def test_the_fleet_makes_its_own_topics_and_groups_and_never_a_reply_topic(fleet, driver):
    """The broker creates no topic (scripts/services: auto.create.topics.enable=false):
    the dispatcher made the request and dead-letter topics, each worker its own, under
    the consumer groups docs/fleet.md names; a reply to a topic nobody made is refused
    and the topic stays unmade."""
    from confluent_kafka.admin import AdminClient
    sid = driver.start_session()  # the daemons are up, their topics made
    admin = AdminClient({"bootstrap.servers": BROKERS})
    topics = admin.list_topics(timeout=30).topics
    assert len(topics[fleet.request_topic].partitions) == 8
    assert len(topics[fleet.dlq_topic].partitions) == 1
    for w in fleet.workers:
        assert len(topics[f"codeq.worker.{w}"].partitions) == 1
    groups = {g.id for g in admin.list_groups(timeout=30)}
    assert f"codeq-dispatchers.{fleet.request_topic}" in groups, groups
    assert {f"codeq-worker-{w}" for w in fleet.workers} <= groups, groups

    unmade = "codeq.replies.unmade-" + uuid.uuid4().hex[:10]
    req = pb.Request(request_id=uuid.uuid4().hex, session_id="nope", reply_topic=unmade,
                     get_session=pb.GetSession())
    driver.send_raw(req.SerializeToString(), key=b"nope")
    deadline = time.time() + 60
    while f"request {req.request_id}: the broker refused its reply" not in \
            fleet.dispatchers[0].log_text():
        assert time.time() < deadline, fleet.dispatchers[0].log_text()[-4000:]
        time.sleep(0.2)
    assert unmade not in admin.list_topics(timeout=30).topics
    assert texts(driver.code(sid, "6 * 7")) == ["42"]


def test_each_daemons_help_says_what_it_reads():
    import subprocess
    from conftest import BIN_DIR
    dispatcher = subprocess.run([os.path.join(BIN_DIR, "codeq-dispatcher"), "--help"],
                                capture_output=True, text=True, check=True).stdout
    worker = subprocess.run([os.path.join(BIN_DIR, "codeq-worker"), "--help"],
                            capture_output=True, text=True, check=True).stdout
    assert "consumer group codeq-dispatchers.<request-topic>" in dispatcher
    assert "consumer group codeq-worker-<worker-id>" in worker
    shared, worker_only = worker.split("codeq-worker only")
    for text in (dispatcher, shared):
        for flag in ("--brokers", "--redis", "--request-topic", "--heartbeat-ms",
                     "--log-level", "--claim-threshold"):
            assert flag in text
    for flag in ("--worker-id", "--max-sessions", "--warm-pool", "--files-quota",
                 "--claim-ttl"):
        assert flag in worker_only and flag not in shared
        assert flag not in dispatcher  # what it ignores, it does not list
    assert "accepted and ignored" in dispatcher
