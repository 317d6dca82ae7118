"""Per-tenant quotas (docs/security.md, "Quotas"): live sessions, executions at once,
stored bytes and requests per second, set with `codeq tenant --quota`; past one the
fleet answers LIMIT_EXCEEDED naming it, and the tenant next door is not affected.
Real Kafka, real Redis, real sandboxes."""

import contextlib
import os
import tempfile
import time
import uuid

import pytest

from conftest import BROKERS, Fleet
from driver import Driver, pb
from test_tenants import codeq, parse_credentials

LIMIT = pb.ERROR_CODE_LIMIT_EXCEEDED


@pytest.fixture(scope="module")
def quotas(services, redis_client):
    d = tempfile.mkdtemp(prefix="codeq-quotas-")
    keys = os.path.join(d, "keys")
    codeq("tenant", "create", "small", "--quota", "sessions=2", "--quota", "executions=1",
          "--quota", "stored_bytes=2K", "--keys", keys)
    codeq("tenant", "create", "rate", "--quota", "rps=3", "--keys", keys)
    codeq("tenant", "create", "other", "--keys", keys)
    creds = {t: parse_credentials(codeq("key", "create", t, "--keys", keys).stdout)
             for t in ("small", "rate", "other")}
    f = Fleet(keys_file=keys)
    f.start_worker("a", "--max-sessions", "16")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    drivers = {t: Driver(BROKERS, f.request_topic, credentials=c) for t, c in creds.items()}
    yield f, drivers, keys
    for dr in drivers.values():
        dr.close()
    f.stop()


@pytest.fixture
def drivers(quotas):
    """The tenants' drivers, by name: small, rate and other."""
    return quotas[1]


def start(driver):
    return driver.call(pb.Request(start_session=pb.StartSession()))


def stop(driver, sid):
    return driver.call(pb.Request(session_id=sid, stop_session=pb.StopSession()))


def invoke(sid, tool, **args):
    return pb.Request(session_id=sid, invoke=pb.Invoke(tool=tool, arguments=pb.Arguments(**args)))


@contextlib.contextmanager
def sessions(driver, n):
    """n new sessions of driver's tenant, stopped at the end whatever the test found."""
    sids = [start(driver).session.session_id for _ in range(n)]
    try:
        yield sids
    finally:
        for sid in sids:
            stop(driver, sid)


def running(driver, sid, code):
    """Sends code (a call of a few seconds) in sid, and returns once it runs."""
    rid = driver.send(invoke(sid, "executeCode", code=code))
    time.sleep(1)  # it runs
    return rid


def test_live_sessions(drivers):
    d = drivers
    small = d["small"]
    a, b = start(small).session.session_id, start(small).session.session_id
    third = start(small)
    assert third.result.error_code == LIMIT, third
    assert "quota (sessions)" in third.result.error_message, third
    # The tenant next door is not counted against it.
    other = start(d["other"]).session.session_id
    # Stopping one makes room again.
    stop(small, a)
    c = start(small).session.session_id
    for sid in (b, c):
        stop(small, sid)
    stop(d["other"], other)


def test_executions_at_once(drivers):
    small = drivers["small"]
    with sessions(small, 2) as (a, b):
        slow = running(small, a, "import time; time.sleep(3); 'slow'")
        refused = small.call(invoke(b, "executeCode", code="'second'"))
        assert refused.result.error_code == LIMIT, refused
        assert "quota (executions)" in refused.result.error_message, refused
        # Reading a file is not an execution: it runs meanwhile.
        listed = small.call(invoke(b, "listFiles", directory_path="."))
        assert not listed.result.is_error, listed
        assert small.wait_final(slow).result.structured_content.value == "'slow'"
        # Once the first has ended, the next one runs.
        again = small.call(invoke(b, "executeCode", code="'second'"))
        assert not again.result.is_error and again.result.structured_content.value == "'second'"


def test_a_retry_after_a_refusal_runs(drivers):
    small = drivers["small"]
    with sessions(small, 2) as (a, b):
        slow = running(small, a, "import time; time.sleep(3)")
        req = invoke(b, "executeCode", code="'retried'")
        req.request_id = uuid.uuid4().hex
        first = small.call(req)
        assert first.result.error_code == LIMIT, first
        small.wait_final(slow)
        retry = small.wait_final(small.send(req), count=2)  # the same request id
        assert not retry.result.is_error and retry.result.structured_content.value == "'retried'"


def test_stored_bytes(drivers):
    small = drivers["small"]
    with sessions(small, 1) as (sid,):
        ok = small.call(invoke(sid, "writeFiles", content=[pb.FileContent(path="a.txt",
                                                                          text="x" * 1500)]))
        assert not ok.result.is_error, ok
        over = small.call(invoke(sid, "writeFiles", content=[pb.FileContent(path="b.txt",
                                                                            text="y" * 1500)]))
        assert over.result.error_code == LIMIT, over
        assert "quota of 2048 (stored_bytes)" in over.result.error_message, over
        # Files the code makes are saved after the call: past the quota they are not,
        # and the result says so.
        made = small.call(invoke(sid, "executeCode", code="open('big.txt', 'w').write('w' * 1500)"))
        assert "(stored_bytes)" in str(made.result) and "would not survive" in str(made.result)
        assert not small.call(invoke(sid, "removeFiles", paths=["big.txt"])).result.is_error
        # Removing a file frees its bytes.
        assert not small.call(invoke(sid, "removeFiles", paths=["a.txt"])).result.is_error
        again = small.call(invoke(sid, "writeFiles", content=[pb.FileContent(path="c.txt",
                                                                             text="z" * 1500)]))
        assert not again.result.is_error, again


def test_requests_per_second(drivers):
    d = drivers
    rate = d["rate"]
    # A burst of 12 in well under a second: at most 3 a second get through.
    rids = [rate.send(pb.Request(list_sessions=pb.ListSessions())) for _ in range(12)]
    replies = [rate.wait_final(r) for r in rids]
    limited = [r for r in replies if r.WhichOneof("payload") == "result" and
               r.result.error_code == LIMIT]
    assert limited, replies
    assert all("quota (rps)" in r.result.error_message for r in limited)
    assert len(replies) - len(limited) <= 3 * 2  # the burst may straddle two seconds
    # The tenant next door, at the same time, is served.
    assert d["other"].call(pb.Request(list_sessions=pb.ListSessions())).WhichOneof(
        "payload") == "sessions"
    time.sleep(1.1)
    assert rate.call(pb.Request(list_sessions=pb.ListSessions())).WhichOneof(
        "payload") == "sessions"


def test_quotas_are_changed_with_codeq_tenant_set(quotas):
    _, d, keys = quotas
    codeq("tenant", "set", "other", "--quota", "sessions=1", "--keys", keys)
    time.sleep(1.2)  # the dispatcher reads the keys file again within a second
    other = d["other"]
    a = start(other).session.session_id
    refused = start(other)
    assert refused.result.error_code == LIMIT, refused
    codeq("tenant", "set", "other", "--quota", "sessions=0", "--keys", keys)
    time.sleep(1.2)
    b = start(other).session.session_id
    for sid in (a, b):
        stop(other, sid)


def test_sessions_that_vanished_without_an_end_are_not_counted(quotas, redis_client):
    """A session whose worker was lost and which expired before anyone adopted it never
    runs its end: its index entry and its bytes stay behind. The quotas do not count
    them: a start or a write the counters would refuse is checked again on a recount
    of the tenant's sessions (fleet/store_internal.h, tenant_recount)."""
    f, d, _ = quotas
    small = d["small"]
    a, b = start(small).session.session_id, start(small).session.session_id
    try:
        wrote = small.call(invoke(a, "writeFiles", content=[pb.FileContent(path="a.txt",
                                                                           text="x" * 1500)]))
        assert not wrote.result.is_error, wrote
        # Session a vanishes as an expired orphan would: its keys gone, nothing ended,
        # and its 1500 bytes still in the tenant's counter.
        for kind in ("session:", "files:", "chunks:"):
            redis_client.delete(f.prefix + kind + a)
        assert redis_client.zscore(f.prefix + "sessions:small", a) is not None
        assert int(redis_client.get(f.prefix + "stored:small")) >= 1500
        # Two live sessions by the counter, one in truth: a start gets its place.
        c = start(small)
        assert c.WhichOneof("payload") == "session", c
        c = c.session.session_id
        assert redis_client.zscore(f.prefix + "sessions:small", a) is None  # pruned
        # 1500 + 1500 bytes by the counter, 1500 (b's none, c's) in truth: it fits.
        ok = small.call(invoke(c, "writeFiles", content=[pb.FileContent(path="c.txt",
                                                                        text="z" * 1500)]))
        assert not ok.result.is_error, ok
        assert int(redis_client.get(f.prefix + "stored:small")) == 1500
        # The recount does not forgive real use: the quota still holds.
        over = small.call(invoke(b, "writeFiles", content=[pb.FileContent(path="b.txt",
                                                                          text="y" * 1500)]))
        assert over.result.error_code == LIMIT, over
        stop(small, c)
    finally:
        stop(small, b)
