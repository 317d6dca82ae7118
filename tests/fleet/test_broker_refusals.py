"""Messages the broker refuses never stop a daemon. Each refusal Kafka can give to a
message the fleet produces is replayed here: too large for its topic (a topic-level
max.message.bytes), its topic missing (the broker creates none: scripts/services turns
auto.create.topics.enable off), and not authorized (a DENY ACL; scripts/services runs
the StandardAuthorizer, allowing what no ACL names). A refused reply is dropped and
logged; a refused forward to a worker is answered with an error reply. Either way the
dispatcher and the worker go on serving the next request, and a dispatcher started
again does not read the refused requests again: their offsets were committed as those
of any answered request. Real Kafka, real Redis, real sandboxes."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import BROKERS
from driver import Acls, Driver, create_topic, delete_topic, pb, texts

REPLY_PREFIX = "codeq.replies.refusals-"


def start_fleet(new_fleet, redis):
    f = new_fleet()
    f.start_worker("a")
    f.wait_workers(redis, 1)
    f.start_dispatcher()
    return f


class RefusedTopic:
    """A reply topic that refuses what the fleet writes to it, in one of three ways."""

    def __init__(self, how):
        self.how = how
        self.name = REPLY_PREFIX + how + "-" + uuid.uuid4().hex[:8]
        self.acls = None
        if how == "too-large":
            # Smaller than any reply: a record batch alone takes 61 bytes.
            create_topic(BROKERS, self.name, config={"max.message.bytes": "64"})
        elif how == "denied":
            create_topic(BROKERS, self.name)
            self.acls = Acls(BROKERS)
            self.acls.add(self.name, Acls.WRITE, Acls.DENY)
        else:
            assert how == "missing"  # never created, as a client that deleted its own

    def close(self):
        if self.acls is not None:
            self.acls.remove_all(self.name)
            self.acls.close()
        if self.how != "missing":
            delete_topic(BROKERS, self.name)


def send(driver, req, reply_topic):
    """Sends req with reply_topic as it is (Driver.send would put its own)."""
    req.request_id = req.request_id or uuid.uuid4().hex
    req.reply_topic = reply_topic
    driver.send_raw(req.SerializeToString(), key=(req.session_id or req.request_id).encode())
    return req.request_id


def wait_log(daemon, *texts, timeout=60):
    """Until the daemon's log has one of texts, while it lives."""
    deadline = time.time() + timeout
    while not any(text in daemon.log_text() for text in texts):
        assert daemon.alive(), f"{daemon.name} exited:\n{daemon.log_text()[-4000:]}"
        assert time.time() < deadline, f"{daemon.name} never logged {texts!r}:\n" + \
            daemon.log_text()[-4000:]
        time.sleep(0.1)


def wait_committed(fleet, timeout=60):
    """Until the dispatchers' group has committed every message of the request topic:
    nothing it read is left to be read again."""
    group = f"codeq-dispatchers.{fleet.request_topic}"
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": group,
                  "enable.auto.commit": False})
    try:
        parts = c.list_topics(fleet.request_topic, timeout=10).topics[fleet.request_topic]
        tps = [TopicPartition(fleet.request_topic, p) for p in parts.partitions]
        deadline = time.time() + timeout
        while True:
            committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
            behind = []
            for tp in tps:
                low, high = c.get_watermark_offsets(tp, timeout=10)
                done = committed[tp.partition]
                if high > low and (done < 0 or done < high):
                    behind.append((tp.partition, done, high))
            if not behind:
                return
            assert time.time() < deadline, f"offsets never committed: {behind}"
            time.sleep(0.2)
    finally:
        c.close()


def assert_restart_reads_nothing_again(f, driver, refused_ids):
    """The dispatcher killed (no clean close: only what it committed counts) and started
    again: it serves, and reads none of the refused requests again."""
    wait_committed(f)
    old = f.dispatchers[0]
    old.kill()
    assert old.proc.returncode != 1, "the dispatcher had exited over a refusal"
    new = f.start_dispatcher()
    sid = driver.start_session()
    assert texts(driver.code(sid, "6 * 7")) == ["42"]
    log = new.log_text()
    for rid in refused_ids:
        assert rid not in log, f"request {rid} was read again:\n{log[-4000:]}"
    assert new.alive()


@pytest.mark.parametrize("how", ["too-large", "missing", "denied"])
def test_refused_replies_are_dropped_and_the_daemons_go_on(new_fleet, redis_client, how):
    """Replies of the dispatcher (an unknown session's NOT_FOUND) and of the worker (a
    run's result) to a reply topic that refuses them."""
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    topic = RefusedTopic(how)
    try:
        sid = driver.start_session()
        by_dispatcher = send(driver, pb.Request(session_id="no-such-session",
                                                get_session=pb.GetSession()), topic.name)
        by_worker = send(driver, pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="print('x' * 500); 1"))),
            topic.name)
        dispatcher = f.dispatchers[0]
        worker = next(iter(f.workers.values()))
        wait_log(dispatcher, f"request {by_dispatcher}: the broker refused its reply")
        # The worker ran the code, and its reply met the same refusal.
        deadline = time.time() + 60
        while redis_client.hget(f.prefix + "req:" + by_worker, "state") != b"done":
            assert time.time() < deadline, "the worker never finished the request"
            time.sleep(0.1)
        # Refused when it was sent (librdkafka knew the topic's answer already: the
        # request's chunks met it first), or when the broker answered.
        wait_log(worker, f"request {by_worker}: reply not delivered", "refused by the broker")
        # Both go on serving, the refused client's session too.
        assert texts(driver.code(sid, "6 * 7")) == ["42"]
        other = driver.start_session()
        assert texts(driver.code(other, "2 + 3")) == ["5"]
        assert dispatcher.alive() and worker.alive()
        assert not driver.finals(by_dispatcher) and not driver.finals(by_worker)
        assert_restart_reads_nothing_again(f, driver, [by_dispatcher, by_worker])
    finally:
        topic.close()
        driver.close()


def test_a_forward_too_large_for_the_worker_topic_is_answered_with_an_error(new_fleet,
                                                                          redis_client):
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    wid = next(iter(f.workers))
    worker_topic = f"codeq.worker.{wid}"
    admin = AdminClient({"bootstrap.servers": BROKERS})

    def limit(value):
        res = ConfigResource(ConfigResource.Type.TOPIC, worker_topic,
                             set_config={"max.message.bytes": value})
        for fut in admin.alter_configs([res]).values():
            fut.result(30)

    res = ConfigResource(ConfigResource.Type.TOPIC, worker_topic)
    configs = next(iter(admin.describe_configs([res]).values())).result(30)
    before = configs["max.message.bytes"].value
    try:
        sid = driver.start_session()
        limit("2000")
        code = "len('" + "y" * 4000 + "')"
        r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code=code))))
        assert r.result.is_error, r
        assert r.result.error_code == pb.ERROR_CODE_LIMIT_EXCEEDED, r
        assert "refused to take the request to worker" in r.result.error_message
        # Smaller requests still reach the worker, and larger ones once it takes them.
        assert texts(driver.code(sid, "6 * 7")) == ["42"]
        limit(before)
        # The broker applies a topic's new limit a moment after the controller took it
        # (seen under ASan): until then the forward is still refused, with the same
        # clear error, and the request is not lost.
        deadline = time.monotonic() + 30
        out = texts(driver.code(sid, code))
        while out != ["4000"] and time.monotonic() < deadline:
            assert "Message size too large" in out[0], out
            time.sleep(0.5)
            out = texts(driver.code(sid, code))
        assert out == ["4000"]
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        assert_restart_reads_nothing_again(f, driver, [r.request_id])
    finally:
        driver.close()


def test_a_forward_to_a_worker_topic_that_is_missing_is_answered_with_an_error(new_fleet,
                                                                             redis_client):
    """A worker in Redis whose topic does not exist (deleted, or never made): the
    startSession placed on it is answered with an error; with it gone, the next one
    goes to the live worker."""
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    ghost = "ghost-" + f.run
    key = f.prefix + "worker:" + ghost
    try:
        # More room than the real worker: it is chosen for the next session.
        redis_client.hset(key, mapping={"capacity": 100000, "sessions": 0, "draining": 0,
                                        "heartbeat_ms": int(time.time() * 1000)})
        redis_client.pexpire(key, 120000)
        redis_client.sadd(f.prefix + "workers", ghost)
        r = driver.call(pb.Request(start_session=pb.StartSession()))
        assert r.WhichOneof("payload") == "result" and r.result.is_error, r
        assert r.result.error_code == pb.ERROR_CODE_INTERNAL, r
        assert f"refused to take the request to worker {ghost}" in r.result.error_message
        redis_client.delete(key)
        sid = driver.start_session()
        assert texts(driver.code(sid, "6 * 7")) == ["42"]
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        assert_restart_reads_nothing_again(f, driver, [r.request_id])
    finally:
        redis_client.delete(key)
        driver.close()


def test_a_forward_the_broker_does_not_authorize_is_answered_with_an_error(new_fleet,
                                                                         redis_client):
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic)
    wid = next(iter(f.workers))
    worker_topic = f"codeq.worker.{wid}"
    acls = Acls(BROKERS)
    try:
        sid = driver.start_session()
        # Once a topic has an ACL it alone decides: the worker must still read its topic.
        acls.add(worker_topic, Acls.READ, Acls.ALLOW)
        acls.add(worker_topic, Acls.DESCRIBE, Acls.ALLOW)
        acls.add(worker_topic, Acls.WRITE, Acls.DENY)
        r = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="6 * 7"))))
        assert r.result.is_error, r
        assert r.result.error_code == pb.ERROR_CODE_INTERNAL, r
        assert "refused to take the request to worker" in r.result.error_message
        assert "authorization" in r.result.error_message.lower(), r.result.error_message
        acls.remove_all(worker_topic)
        # ACL changes reach the broker's authorizer through the metadata log: the first
        # requests after the removal may still be refused, and are answered so.
        deadline = time.time() + 60
        while True:
            r2 = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
                tool="executeCode", arguments=pb.Arguments(code="6 * 7"))))
            if not r2.result.is_error:
                break
            assert "refused to take the request" in r2.result.error_message, r2
            assert time.time() < deadline, "the worker topic stayed refused"
            time.sleep(0.5)
        assert texts(r2.result) == ["42"]
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        assert_restart_reads_nothing_again(f, driver, [r.request_id])
    finally:
        acls.remove_all(worker_topic)
        acls.close()
        driver.close()
