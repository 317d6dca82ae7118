"""The dispatcher's refusals and the daemons' produce errors on /metrics (docs/operations.md),
during a real fleet run with tenants: each reason codeq_requests_refused_total has
(auth, quota, rate, interpreter, reply_topic) is made to happen exactly once and moves
its own count by exactly one, and nothing under any other reason; a message the broker
refuses moves codeq_kafka_produce_errors_total under librdkafka's error name on the
daemon that produced it, and on no other. Real Kafka, real Redis, real sandboxes; read
with a real Prometheus text parser."""

import json
import os
import tempfile
import time
import uuid

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from conftest import BROKERS, Fleet, free_port
from driver import Driver, create_topic, delete_topic, pb, texts
from scrape import answers_http, moved, scrape, wait_for
from test_tenants import codeq, parse_credentials

from codeq_client import Credentials
from codeq_client.auth import sign

DENIED = pb.ERROR_CODE_ACCESS_DENIED
LIMIT = pb.ERROR_CODE_LIMIT_EXCEEDED
NOT_FOUND = pb.ERROR_CODE_NOT_FOUND

REFUSALS = "codeq_requests_refused_total"
REQUESTS = "codeq_requests_total"
DEAD_LETTERS = "codeq_dead_letters_total"
PRODUCE_ERRORS = "codeq_kafka_produce_errors_total"


@pytest.fixture(scope="module")
def mfleet(services, redis_client):
    """A keyed fleet of one worker and one dispatcher, both with metrics_listen, and the
    drivers of three tenants: alice (no quotas), small (one live session) and rate (one
    request a second)."""
    d = tempfile.mkdtemp(prefix="codeq-metrics-refusals-")
    keys = os.path.join(d, "keys")
    codeq("tenant", "create", "alice", "--keys", keys)
    codeq("tenant", "create", "small", "--quota", "sessions=1", "--keys", keys)
    codeq("tenant", "create", "rate", "--quota", "rps=1", "--keys", keys)
    creds = {t: parse_credentials(codeq("key", "create", t, "--keys", keys).stdout)
             for t in ("alice", "small", "rate")}
    f = Fleet(keys_file=keys)
    wp, dp = free_port(), free_port()
    wid = f.start_worker("m", env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{wp}"})
    f.wait_workers(redis_client, 1)
    f.start_dispatcher(env={"CODEQ_METRICS_LISTEN": f"127.0.0.1:{dp}"})
    for port in (wp, dp):
        wait_for("/healthz", lambda: answers_http(port))
    drivers = {t: Driver(BROKERS, f.request_topic, credentials=c) for t, c in creds.items()}
    yield dict(fleet=f, wid=wid, worker_port=wp, dispatcher_port=dp, creds=creds,
               drivers=drivers)
    for dr in drivers.values():
        dr.close()
    f.stop()


def family(samples, *names, **labels):
    """The samples of the families names (with labels among theirs), by their labels."""
    return {k: v for k, v in samples.items() if k[0] in names and
            all(dict(k[1]).get(n) == want for n, want in labels.items())}


def sample(name, **labels):
    return (name, frozenset(labels.items()))


def wait_moved(port, before, want, pick, what, timeout=15):
    """Until what moved on port since before, as pick() selects it, is exactly want; and
    it still is a moment later (a count that goes on past want fails)."""
    got = None
    try:
        got = wait_for(what, lambda: (lambda m: m if m == want else None)(
            pick(moved(before, scrape(port)))), timeout=timeout)
        time.sleep(0.3)
        got = pick(moved(before, scrape(port)))
        assert got == want, f"{what}: moved on to {got}"
    finally:
        if got != want:
            print(f"{what}: moved {pick(moved(before, scrape(port)))}, wanted {want}")


def refusals(samples):
    """What a refusal moves: its reason's count, the dispatcher's requests by
    operation with outcome refused, dead letters."""
    return {**family(samples, REFUSALS), **family(samples, DEAD_LETTERS),
            **family(samples, REQUESTS, component="dispatcher", outcome="refused")}


def refused(reason, operation, dead_lettered=False):
    want = {sample(REFUSALS, reason=reason): 1,
            sample(REQUESTS, component="dispatcher", operation=operation, outcome="refused"): 1}
    if dead_lettered:  # the dead letter says why under the refusal's reason
        want[sample(DEAD_LETTERS, reason=reason)] = 1
    return want


def start(driver, **kw):
    return driver.call(pb.Request(start_session=pb.StartSession(**kw)))


def stop(driver, sid):
    return driver.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def signed(req, cred, reply_topic):
    """req signed with cred as it is, with reply_topic (Driver.send puts its own)."""
    req.request_id = req.request_id or uuid.uuid4().hex
    req.reply_topic, req.tenant = reply_topic, cred.tenant
    return req.request_id, sign(req, cred).SerializeToString()


def test_each_refusal_counts_once_under_its_reason(mfleet):
    dp = mfleet["dispatcher_port"]
    alice, small, rate = (mfleet["drivers"][t] for t in ("alice", "small", "rate"))
    a = mfleet["creds"]["alice"]
    first = scrape(dp)
    total = {}

    def step(want, act, what):
        before = scrape(dp)
        act()
        wait_moved(dp, before, want, refusals, what)
        for k, v in want.items():
            total[k] = total.get(k, 0) + v

    # auth: signed with a secret that is not the key's; answered ACCESS_DENIED.
    def forged():
        req = pb.Request(session_id=uuid.uuid4().hex, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="1")))
        rid = alice.send(req, credentials=Credentials(a.tenant, a.key_id, "0" * 64))
        r = alice.wait_final(rid).result
        assert r.error_code == DENIED and "bad signature" in r.error_message, r
    step(refused("auth", "invoke", dead_lettered=True), forged, "auth")

    # quota: small's second live session.
    sid = start(small).session.session_id
    try:
        def second():
            r = start(small)
            assert r.result.error_code == LIMIT, r
            assert "quota (sessions)" in r.result.error_message, r
        step(refused("quota", "start_session"), second, "quota")
    finally:
        assert not stop(small, sid).result.is_error

    # rate: past one request a second. Two requests sent at the start of a second: one
    # is refused, unless they were counted in two seconds (then neither is, and
    # the next second is tried). over_rate() says "rate" and then over_quota() "quota":
    # the refusal counts once, as rate.
    def past_rate():
        for _ in range(5):
            time.sleep(1.02 - time.time() % 1)  # the dispatcher counts by its clock: ours
            rids = [rate.send(pb.Request(list_sessions=pb.ListSessions())) for _ in range(2)]
            replies = [rate.wait_final(rid) for rid in rids]
            # (Their keys are their request ids: they may be read in either order.)
            kinds = sorted(r.WhichOneof("payload") for r in replies)
            if kinds == ["result", "sessions"]:
                limited = next(r.result for r in replies if r.WhichOneof("payload") == "result")
                assert limited.error_code == LIMIT and "quota (rps)" in limited.error_message, \
                    limited
                return
            assert kinds == ["sessions"] * 2, replies
        raise AssertionError("five pairs of requests, none past one a second")
    step(refused("rate", "list_sessions"), past_rate, "rate")

    # interpreter: a startSession on a code interpreter nobody defined.
    def no_interpreter():
        r = start(alice, code_interpreter_identifier="nosuch-py")
        assert r.result.error_code == NOT_FOUND, r
        assert "no code interpreter 'nosuch-py'" in r.result.error_message, r
    step(refused("interpreter", "start_session"), no_interpreter, "interpreter")

    # reply_topic: alice names bob's reply topic: dead-lettered, answered nowhere (the
    # one place a reply could go is the topic refused).
    rid = None

    def others_topic():
        nonlocal rid
        rid, wire = signed(pb.Request(session_id=uuid.uuid4().hex, get_session=pb.GetSession()),
                           a, "codeq.replies.bob.mine")
        alice.send_raw(wire, key=rid.encode())
    step(refused("reply_topic", "get_session", dead_lettered=True), others_topic, "reply_topic")
    assert "tenant's reply topic prefix" in mfleet["fleet"].dispatchers[0].log_text()
    assert not alice.finals(rid)

    # Over the whole test: these five refusals and nothing else, whatever the order.
    assert refusals(moved(first, scrape(dp))) == total
    assert {dict(k[1])["reason"] for k in total if k[0] == REFUSALS} == \
        {"auth", "quota", "rate", "interpreter", "reply_topic"}


def produce_errors(samples):
    return family(samples, PRODUCE_ERRORS)


# How a reply topic refuses every reply, and librdkafka's name for that refusal.
REFUSING_TOPICS = {"too-large": "msg_size_too_large", "missing": "unknown_topic_or_part"}


@pytest.mark.parametrize("how", REFUSING_TOPICS)
def test_produce_errors_count_on_the_daemon_that_produced(mfleet, redis_client, how):
    """Replies to a reply topic that refuses them: one whose max.message.bytes (64) no
    reply fits, or one that does not exist (the broker creates none). Each daemon counts
    the refusal of what it produced under librdkafka's name for it. The product drops
    such a reply (logged; the worker's result is stored as any other) and goes on."""
    f, dp, wp = mfleet["fleet"], mfleet["dispatcher_port"], mfleet["worker_port"]
    alice, a = mfleet["drivers"]["alice"], mfleet["creds"]["alice"]
    topic = f"codeq.replies.alice.{how}-" + uuid.uuid4().hex[:8]
    if how == "too-large":
        create_topic(BROKERS, topic, config={"max.message.bytes": "64"})
    one = {sample(PRODUCE_ERRORS, reason=REFUSING_TOPICS[how]): 1}
    try:
        sid = alice.start_session()
        d0, w0 = scrape(dp), scrape(wp)
        # The dispatcher's own answer (an unknown session's NOT_FOUND).
        by_dispatcher, wire = signed(pb.Request(session_id=uuid.uuid4().hex,
                                                get_session=pb.GetSession()), a, topic)
        alice.send_raw(wire, key=by_dispatcher.encode())
        wait_moved(dp, d0, one, produce_errors, "the dispatcher's produce errors")
        wait_for("the dispatcher's log", lambda: f"request {by_dispatcher}: the broker refused "
                 "its reply" in f.dispatchers[0].log_text())
        # The worker's result of a run with no output (no chunks: one message).
        by_worker, wire = signed(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="6 * 7"))), a, topic)
        alice.send_raw(wire, key=sid.encode())
        wait_moved(wp, w0, one, produce_errors, "the worker's produce errors")
        # It ran, and its result is stored all the same.
        wait_for("the result stored", lambda: redis_client.hget(
            f.prefix + "req:" + by_worker, "state") == b"done")
        # Each daemon counted its own refusal only.
        wait_moved(dp, d0, one, produce_errors, "the dispatcher's produce errors")
        assert texts(alice.code(sid, "6 * 7")) == ["42"]
        assert all(d.alive() for d in f.dispatchers + list(f.workers.values()))
        stop(alice, sid)
    finally:
        if how == "too-large":
            delete_topic(BROKERS, topic)


def forwards_refused(daemon, request_id):
    """How many forwards of request_id the dispatcher's log says the broker refused."""
    n = 0
    for line in daemon.log_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        n += e.get("event") in ("forward_refused", "forward_refused_stale") and \
            e.get("request_id") == request_id
    return n


def test_a_forward_the_broker_refuses_is_counted_and_answered(mfleet):
    """A forward too large for the worker's topic: the dispatcher counts the broker's
    refusal, and the client gets a LIMIT_EXCEEDED that says what happened. Last in the
    module: it changes the worker topic's limit."""
    dp, wp = mfleet["dispatcher_port"], mfleet["worker_port"]
    alice = mfleet["drivers"]["alice"]
    worker_topic = f"codeq.worker.{mfleet['wid']}"
    admin = AdminClient({"bootstrap.servers": BROKERS})

    def limit(value):
        res = ConfigResource(ConfigResource.Type.TOPIC, worker_topic,
                             set_config={"max.message.bytes": value})
        for fut in admin.alter_configs([res]).values():
            fut.result(30)

    res = ConfigResource(ConfigResource.Type.TOPIC, worker_topic)
    before = next(iter(admin.describe_configs([res]).values())).result(30)[
        "max.message.bytes"].value
    sid = alice.start_session()
    d0, w0 = scrape(dp), scrape(wp)
    limit("2000")
    try:
        r = alice.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="len('" + "y" * 4000 + "')"))))
        assert r.result.is_error and r.result.error_code == LIMIT, r
        assert f"refused to take the request to worker {mfleet['wid']}" in \
            r.result.error_message, r
        # One refused forward, or two: a forward sent early on the remembered route goes
        # again when recording it in Redis took long (dispatcher.c, fast_forward()). The
        # dispatcher logs each, the one answered and the stale copy.
        dispatcher = mfleet["fleet"].dispatchers[0]
        wait_for("the refused forward logged", lambda: forwards_refused(dispatcher, r.request_id))
        wait_moved(dp, d0, {sample(PRODUCE_ERRORS, reason="msg_size_too_large"):
                            forwards_refused(dispatcher, r.request_id)},
                   produce_errors, "the dispatcher's produce errors")
        assert produce_errors(moved(w0, scrape(wp))) == {}
        # The session goes on with requests the topic takes.
        assert texts(alice.code(sid, "6 * 7")) == ["42"]
    finally:
        limit(before)

