"""Every request gets a final reply, also when the real one cannot be sent: a reply
larger than a Kafka message may be (the codec's limit, 200 MiB) is replaced by a small
error reply that says why, and Redis records the request as done with it. Real Kafka,
real Redis, real sandboxes."""

import uuid

from conftest import BROKERS
from driver import Driver, pb, texts
from test_fleet_failures import wait_state


def start_fleet(new_fleet, redis, **kw):
    f = new_fleet(**kw)
    # A small files quota: the 225 MB the test makes are not copied into Redis.
    f.start_worker("a", "--files-quota", "1M")
    f.wait_workers(redis, 1)
    f.start_dispatcher()
    return f


def test_a_reply_too_large_to_send_is_an_error_reply_not_silence(new_fleet, redis_client):
    f = start_fleet(new_fleet, redis_client)
    driver = Driver(BROKERS, f.request_topic, fleet=f)
    try:
        sid = driver.start_session()
        # Three sparse files of 75 MiB: 225 MiB of content, more than one reply carries.
        made = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="executeCommand", arguments=pb.Arguments(
                command="for f in a b c; do truncate -s 75M $f; done; ls"))))
        assert made.result.structured_content.exit_code == 0, made
        rid = uuid.uuid4().hex
        reply = driver.call(pb.Request(request_id=rid, session_id=sid, invoke=pb.Invoke(
            tool="readFiles", arguments=pb.Arguments(paths=["a", "b", "c"]))), timeout=180)
        assert reply.request_id == rid
        assert reply.result.is_error
        assert reply.result.error_code == pb.ERROR_CODE_LIMIT_EXCEEDED
        assert "the reply could not be encoded" in reply.result.error_message
        assert "more than a message may carry" in reply.result.error_message
        assert texts(reply.result) == [reply.result.error_message]
        # Stored as the request's outcome (just after it is published): a retry gets
        # the same reply, without a run.
        wait_state(redis_client, f, rid, "done")
        again = driver.call(pb.Request(request_id=rid, session_id=sid, invoke=pb.Invoke(
            tool="readFiles", arguments=pb.Arguments(paths=["a", "b", "c"]))))
        assert again.SerializeToString() == reply.SerializeToString()
        # The session goes on serving: one file fits (through Redis: larger than a
        # Kafka message).
        one = driver.call(pb.Request(session_id=sid, invoke=pb.Invoke(
            tool="readFiles", arguments=pb.Arguments(paths=["a"]))), timeout=180)
        assert not one.result.is_error, one.result.error_message
        files = [b.resource for b in one.result.content if b.WhichOneof("block") == "resource"]
        assert len(files) == 1
        data = files[0].blob if files[0].WhichOneof("contents") == "blob" else files[0].text
        assert len(data) == 75 << 20
    finally:
        driver.close()
