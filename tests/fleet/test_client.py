"""The Python client (clients/python) against the real fleet: real Kafka, real Redis,
one dispatcher, two workers, real sandboxes. Every call goes through the client's public
API to the module's own request topic; results are checked in AgentCore's shape."""

import asyncio
import base64
import hashlib
import logging
import os
import sys
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BROKERS, REPO
from driver import Driver

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import (  # noqa: E402
    AsyncClient,
    Client,
    CodeqError,
    SessionError,
    async_code_session,
    code_session,
    codeq_pb2 as pb,
)
from codeq_client import TimeoutError as CodeqTimeoutError  # noqa: E402


@pytest.fixture(scope="module")
def client(fleet):
    with Client(BROKERS, request_topic=fleet.request_topic, default_timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def session(client):
    s = client.start_session(name="client-tests")
    yield s
    s.stop()


def links(result):
    return [b for b in result["content"] if b["type"] == "resource_link"]


def texts(result):
    return [b["text"] for b in result["content"] if b["type"] == "text"]


def ok(result):
    assert result["isError"] is False and "_codeq_error" not in result, result
    return result


def new_topic(name, partitions=1):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    admin.create_topics([NewTopic(name, partitions)])[name].result(30)


def delete_topic(name):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    try:
        admin.delete_topics([name], operation_timeout=5)[name].result(10)
    except Exception:
        pass


def read_until(topic, done, timeout=60):
    """Raw messages of topic from its beginning until done(messages) holds."""
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": "test-" + uuid.uuid4().hex,
                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 10})
    c.subscribe([topic])
    seen = []
    deadline = time.time() + timeout
    try:
        while not done(seen):
            assert time.time() < deadline, f"{topic}: only {len(seen)} messages in {timeout} s"
            m = c.poll(0.2)
            if m is not None and not m.error():
                seen.append((m.key(), m.value(), m.headers() or []))
    finally:
        c.close()
    return seen


def header(headers, name):
    return next((v.decode() for k, v in headers if k == name), None)


# ---- sessions and the result shape ------------------------------------------------------


def test_start_session_and_invoke_return_agentcore_shapes(client):
    s = client.start_session(name="shape", session_timeout_seconds=600)
    try:
        assert s.info["sessionId"] == s.id and s.info["name"] == "shape"
        assert s.info["status"] == "READY" and s.info["sessionTimeoutSeconds"] == 600
        assert list(s.info) == ["sessionId", "name", "status", "createdAt", "lastUpdatedAt",
                                "sessionTimeoutSeconds", "networkMode", "networkAllow",
                                "codeInterpreterIdentifier", "runtime", "runtimeDigest",
                                "limits"]
        assert s.info["codeInterpreterIdentifier"] == "codeq.default"
        assert s.info["limits"]["memory"] > 0 and s.info["limits"]["cpus"] > 0
        assert (s.info["networkMode"], s.info["networkAllow"]) == ("NONE", [])
        assert client.get_session(s.id)["status"] == "READY"
        # network_mode travels: these workers allow only NONE (the default policy), so
        # PUBLIC is refused by the worker, naming the setting.
        with pytest.raises(SessionError) as e:
            client.start_session(network_mode="PUBLIC")
        assert e.value.code == "INVALID_ARGUMENT" and "network_modes" in str(e.value)

        r = s.invoke("executeCode", {"code": "import sys\nprint('hi')\n"
                                             "print('oops', file=sys.stderr)\n6 * 7"})
        assert r["isError"] is False and "_codeq_error" not in r
        assert list(r) == ["content", "structuredContent", "isError"]
        assert r["content"][0] == {"type": "text", "text": "hi\n"}
        assert {"type": "text", "text": "42"} in r["content"]
        sc = r["structuredContent"]
        assert list(sc) == ["stdout", "stderr", "exitCode", "executionTime", "cpuTime",
                            "peakMemory"]
        assert sc["stdout"] == "hi\n" and sc["stderr"] == "oops\n" and sc["exitCode"] == 0
        assert isinstance(sc["executionTime"], float) and sc["executionTime"] >= 0

        # User code that fails is a result with isError, not a service error.
        r = s.invoke("executeCode", {"code": "1 / 0"})
        assert r["isError"] is True and "_codeq_error" not in r
        assert "ZeroDivisionError" in r["structuredContent"]["stderr"]
        assert r["structuredContent"]["exitCode"] != 0

        # camelCase arguments of any tool pass through invoke.
        r = ok(s.invoke("listFiles", {"directoryPath": "."}))
        assert "structuredContent" not in r

        listed = client.list_sessions(status="READY", max_results=100)
        assert s.id in [item["sessionId"] for item in listed["items"]]
    finally:
        final = s.stop()
    assert final["sessionId"] == s.id and final["status"] == "TERMINATED"
    assert client.get_session(s.id)["status"] == "TERMINATED"


def test_execute_code_keeps_state_per_language_until_clear_context(session):
    ok(session.execute_code("counter = 40"))
    assert texts(ok(session.execute_code("counter += 2\ncounter"))) == ["42"]
    ok(session.execute_code("let greeting = 'hello'", language="javascript"))
    r = ok(session.execute_code("console.log(greeting + ' js'); greeting.length",
                                language="javascript"))
    assert r["structuredContent"]["stdout"] == "hello js\n" and texts(r)[-1] == "5"
    ok(session.execute_code("const n: number = 20;", language="typescript"))
    r = ok(session.execute_code("const m: number = n * 2 + 1; console.log(m); m",
                                language="typescript"))
    assert r["structuredContent"]["stdout"] == "41\n"
    # Python's kernel was not disturbed by the others.
    assert texts(ok(session.execute_code("counter"))) == ["42"]

    r = ok(session.execute_code("'fresh'", clear_context=True))
    assert texts(r) == ["'fresh'"]
    r = session.execute_code("counter")
    assert r["isError"] is True and "NameError" in r["structuredContent"]["stderr"]


def test_execute_command_keeps_stdout_stderr_and_exit_code_apart(session):
    r = session.execute_command("echo out; echo err >&2; exit 3")
    sc = r["structuredContent"]
    assert sc["stdout"] == "out\n" and sc["stderr"] == "err\n" and sc["exitCode"] == 3
    assert r["isError"] is True and "_codeq_error" not in r
    r = ok(session.execute_command("pwd"))
    assert r["structuredContent"]["stdout"].strip() == "/workspace"


def test_file_tools_round_trip_text_and_binary(session):
    blob = bytes(range(256)) * 1000 + b"\xff\xfe\x00 not utf-8"
    text = "naïve café ✓\nline 2\n"
    r = ok(session.write_files({"notes/hello.txt": text, "data/blob.bin": blob}))
    assert len(r["content"]) == 2

    r = ok(session.read_files(["notes/hello.txt", "data/blob.bin"]))
    by_uri = {b["resource"]["uri"]: b["resource"] for b in r["content"]
              if b["type"] == "resource"}
    # Each file is named in a text block too (docs/agentcore.md, "What content says").
    assert "file: notes/hello.txt (" in texts(r)[0] and "file: data/blob.bin (" in texts(r)[1]
    assert by_uri["file://notes/hello.txt"]["text"] == text
    assert "blob" not in by_uri["file://notes/hello.txt"]
    assert base64.b64decode(by_uri["file://data/blob.bin"]["blob"]) == blob

    # The sandbox sees the same bytes the client wrote.
    r = ok(session.execute_code("import hashlib\n"
                                "hashlib.sha256(open('data/blob.bin', 'rb').read()).hexdigest()"))
    assert texts(r) == [repr(hashlib.sha256(blob).hexdigest())]

    names = {b["name"]: b for b in links(ok(session.list_files("data")))}
    assert names["blob.bin"]["size"] == len(blob)
    root = {b["name"] for b in links(ok(session.list_files()))}
    assert {"notes", "data"} <= root

    ok(session.remove_files(["data/blob.bin", "notes"]))
    assert "blob.bin" not in {b["name"] for b in links(ok(session.list_files("data")))}
    assert "notes" not in {b["name"] for b in links(ok(session.list_files()))}
    r = session.read_files(["data/blob.bin"])
    assert r["isError"] is True


def test_background_task_start_get_stop(session):
    started = ok(session.start_command_execution("echo started; sleep 60; echo never"))
    sc = started["structuredContent"]
    task_id = sc["taskId"]
    assert task_id and sc["taskStatus"] in ("submitted", "working") and "exitCode" not in sc

    deadline = time.time() + 60
    while True:
        r = ok(session.get_task(task_id))
        if r["structuredContent"]["stdout"] == "started\n":
            break
        assert time.time() < deadline, r
        time.sleep(0.2)
    assert r["structuredContent"]["taskStatus"] == "working"

    stopped = ok(session.stop_task(task_id))
    sc = stopped["structuredContent"]
    assert sc["taskStatus"] == "canceled" and "exitCode" in sc
    assert "never" not in sc["stdout"]
    assert ok(session.get_task(task_id))["structuredContent"]["taskStatus"] == "canceled"

    # A task that ends by itself reports its exit code.
    task_id = ok(session.start_command_execution("echo bye; exit 4"))["structuredContent"]["taskId"]
    deadline = time.time() + 60
    while (r := session.get_task(task_id))["structuredContent"]["taskStatus"] == "working":
        assert time.time() < deadline, r
        time.sleep(0.2)
    sc = r["structuredContent"]
    assert sc["taskStatus"] == "failed" and sc["exitCode"] == 4 and sc["stdout"] == "bye\n", r
    assert r["isError"] is True and "_codeq_error" not in r


# ---- code_session and the asyncio client ----------------------------------------------------


def test_code_session_uses_the_request_topic_and_stops_the_session(fleet, client):
    with code_session(BROKERS, request_topic=fleet.request_topic, name="cm") as s:
        assert s.info["name"] == "cm"
        assert texts(ok(s.execute_code("6 * 7"))) == ["42"]
        sid = s.id
    assert client.get_session(sid)["status"] == "TERMINATED"
    r = client.session(sid).execute_code("1")
    assert r["_codeq_error"]["code"] == "NOT_FOUND"

    # Stopped on an exception too, with a client of one's own.
    with pytest.raises(RuntimeError, match="boom"):
        with code_session(client=client) as s:
            sid = s.id
            ok(s.execute_code("x = 1"))
            raise RuntimeError("boom")
    assert client.get_session(sid)["status"] == "TERMINATED"

    with pytest.raises(ValueError):
        with code_session(client=client, request_topic=fleet.request_topic):
            pass


def test_async_client_runs_sessions_concurrently(fleet):
    loop_threads = []

    async def one(c, i):
        s = await c.start_session(name=f"async-{i}")
        try:
            ok(await s.execute_code(f"total = {i}"))
            for k in range(1, 4):
                r = ok(await s.execute_code(f"total += {k}\nprint(total)"))
                assert r["structuredContent"]["stdout"] == f"{i + k * (k + 1) // 2}\n"
            ok(await s.write_files({"mine.txt": f"session {i}"}))
            r = ok(await s.read_files(["mine.txt"]))
            assert r["content"][1]["resource"]["text"] == f"session {i}"
            return s.id
        finally:
            await s.stop()

    async def main():
        async with AsyncClient(BROKERS, request_topic=fleet.request_topic,
                               default_timeout=60) as c:
            ids = await asyncio.gather(*(one(c, i) for i in range(6)))
            assert len(set(ids)) == 6
            for sid in ids:
                assert (await c.get_session(sid))["status"] == "TERMINATED"

            chunks = []

            def on_output(stream, data):
                loop_threads.append(threading.get_ident())
                chunks.append((stream, data))

            async with async_code_session(client=c) as s:
                r = ok(await s.execute_code("print('a', flush=True)\nprint('b')",
                                            on_output=on_output))
                assert b"".join(d for st, d in chunks if st == "stdout") == b"a\nb\n"
                assert r["structuredContent"]["stdout"] == "a\nb\n"
            assert threading.get_ident() in loop_threads and len(set(loop_threads)) == 1

        async with async_code_session(BROKERS, request_topic=fleet.request_topic) as s:
            assert texts(ok(await s.execute_code("2 ** 10"))) == ["1024"]
            sid = s.id
        async with AsyncClient(BROKERS, request_topic=fleet.request_topic) as c:
            assert (await c.get_session(sid))["status"] == "TERMINATED"
            with pytest.raises(SessionError) as e:
                await c.stop_session("ghost-" + uuid.uuid4().hex)
            assert e.value.code == "NOT_FOUND"

    asyncio.run(main())


# ---- streaming ------------------------------------------------------------------------------


def test_on_output_gets_stdout_chunks_before_the_final_result(session):
    events = []
    first_chunk = threading.Event()
    returned = threading.Event()
    seen_while_running = []

    def on_output(stream, data):
        events.append((stream, data))
        seen_while_running.append(not returned.is_set())
        first_chunk.set()

    outcome = []

    def call():
        # The second line comes only after a pause long enough for the first to be
        # delivered on its own.
        outcome.append(session.execute_code(
            "import sys, time\nprint('first', flush=True)\nprint('err', file=sys.stderr, "
            "flush=True)\ntime.sleep(6)\nprint('second')", on_output=on_output))
        returned.set()

    t = threading.Thread(target=call)
    t.start()
    assert first_chunk.wait(60), "no output chunk came"
    still_running = not returned.is_set()
    t.join(120)
    assert not t.is_alive()
    r = ok(outcome[0])
    assert still_running, "the first chunk came only with the final result"
    assert all(seen_while_running), "a chunk was delivered after the result"
    stdout = b"".join(d for s, d in events if s == "stdout")
    stderr = b"".join(d for s, d in events if s == "stderr")
    assert stdout == b"first\nsecond\n" == r["structuredContent"]["stdout"].encode()
    assert stderr == b"err\n"
    assert events[0][0] == "stdout" and b"first\n".startswith(events[0][1]), events


# ---- timeouts and errors --------------------------------------------------------------------


def test_client_side_timeout_raises_a_clear_error(fleet, client, session):
    # Nobody serves this topic: no reply can come.
    topic = "codeq.requests.unserved-" + uuid.uuid4().hex[:8]
    new_topic(topic)
    try:
        with Client(BROKERS, request_topic=topic) as lonely:
            with pytest.raises(CodeqTimeoutError) as e:
                lonely.start_session(timeout=3)
            assert isinstance(e.value, TimeoutError) and isinstance(e.value, CodeqError)
            assert "no reply to request" in str(e.value) and "3 s" in str(e.value)
    finally:
        delete_topic(topic)

    # On the real fleet: the client stops waiting long before the code ends; the late
    # reply must not confuse the calls that follow on the same session.
    ok(session.execute_code("late = 'not yet'"))
    req = pb.Request(session_id=session.id, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="import time\ntime.sleep(5)\nlate = 'done'\n'late reply'", timeout=60)))
    # A deadline of its own: by default it would be the 1 s the client waits.
    req.deadline_unix_ms = int(time.time() * 1000) + 120_000
    with pytest.raises(CodeqTimeoutError, match=r"within 1(\.0)? s"):
        client.request(req, timeout=1)
    # Queued behind the late request in the session: it ran to the end.
    assert texts(ok(session.execute_code("late"))) == ["'done'"]
    assert texts(ok(session.execute_code("'next'"))) == ["'next'"]


def test_call_timeout_interrupts_long_code_and_the_session_stays_usable(session):
    ok(session.execute_code("kept = 'still here'"))
    r = session.execute_code("import time\nfor i in range(600):\n    time.sleep(0.1)",
                             timeout=2)
    assert r["isError"] is True
    assert r["_codeq_error"]["code"] == "TIMED_OUT", r
    assert "KeyboardInterrupt" in r["structuredContent"]["stderr"]
    assert r["structuredContent"]["executionTime"] < 60_000
    assert texts(ok(session.execute_code("kept"))) == ["'still here'"]
    r = ok(session.execute_command("echo usable"))
    assert r["structuredContent"]["stdout"] == "usable\n"


def test_unknown_session_is_not_found(client):
    ghost = "ghost-" + uuid.uuid4().hex  # at most 40 characters, as session ids
    r = client.session(ghost).execute_code("1")
    assert r["isError"] is True
    assert r["_codeq_error"]["code"] == "NOT_FOUND"
    assert ghost in r["_codeq_error"]["message"]
    for operation in (client.get_session, client.stop_session):
        with pytest.raises(SessionError) as e:
            operation(ghost)
        assert e.value.code == "NOT_FOUND" and ghost in str(e.value)
        assert e.value.result["_codeq_error"]["code"] == "NOT_FOUND"


# ---- replies deduplicated by request id --------------------------------------------------


def test_a_retried_request_id_returns_the_stored_result_and_runs_once(client, session):
    req = pb.Request(request_id=uuid.uuid4().hex, session_id=session.id, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(
            code="open('retried.txt', 'a').write('x')\nprint('ran')\n"
                 "len(open('retried.txt').read())", timeout=60)))
    chunks = []
    first = client.request(req, on_output=lambda s, d: chunks.append(d))
    assert [b.text.text for b in first.result.content] == ["ran\n", "1"]
    assert b"".join(chunks) == b"ran\n"
    again = client.request(req)
    assert again.SerializeToString() == first.SerializeToString()
    assert texts(ok(session.execute_code("open('retried.txt').read()"))) == ["'x'"]


def test_copies_of_replies_reach_the_caller_once(fleet, caplog):
    """A reply topic holding the fleet's real replies twice over (each chunk and the final
    reply copied, as redelivery after a dispatcher restart does): the client delivers
    each chunk once, in order, returns one result and ignores the copies."""
    def rid(m):
        return header(m[2], "request_id")

    def kind(m):
        return header(m[2], "codeq-kind")

    def finals_of(seen, request_id):
        return sum(1 for m in seen if rid(m) == request_id and kind(m) == "final")

    d = Driver(BROKERS, fleet.request_topic)
    try:
        sid = d.start_session()
        code = "print('one', flush=True)\nprint('two', flush=True)\n'result'"
        req = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code=code, timeout=60)))
        d.send(req)
        d.wait_final(req.request_id)
        d.send(req)  # the fleet answers the repeated id again, from Redis
        d.wait_final(req.request_id, count=2)
        other = pb.Request(request_id=uuid.uuid4().hex, session_id=sid, invoke=pb.Invoke(
            tool="executeCode", arguments=pb.Arguments(code="'other'", timeout=60)))
        d.send(other)
        d.wait_final(other.request_id)
        # Read before the driver closes: closing deletes its reply topic. It may have
        # several partitions: wait for every final.
        raw = read_until(d.reply_topic, lambda seen: finals_of(seen, req.request_id) == 2 and
                         finals_of(seen, other.request_id) == 1)
    finally:
        d.close()
    mine = [m for m in raw if rid(m) == req.request_id]
    chunks = [m for m in mine if kind(m) == "chunk"]
    finals = [m for m in mine if kind(m) == "final"]
    assert len(finals) == 2 and finals[0][1] == finals[1][1]
    # Chunk boundaries are the fleet's business; what they carry is not.
    expected = [("stdout" if c.stream == pb.STREAM_STDOUT else "stderr", c.data)
                for c in (pb.Response.FromString(m[1]).chunk for m in chunks)]
    assert b"".join(data for _, data in expected) == b"one\ntwo\n"
    other_final = [m for m in raw if rid(m) == other.request_id and kind(m) == "final"]

    # The copies, in an order redelivery can produce: every chunk twice, the final twice.
    replay = chunks + chunks + finals
    unserved = "codeq.requests.unserved-" + uuid.uuid4().hex[:8]
    replies = "codeq.replies.test-copies-" + uuid.uuid4().hex[:8]
    new_topic(unserved)
    producer = Producer({"bootstrap.servers": BROKERS, "linger.ms": 0})
    caplog.set_level(logging.WARNING, logger="codeq_client")

    def call_then_reply(c, original, messages, output):
        """Calls c.request with original's id and, once the call waits (its request is
        on the unserved topic), puts messages on the reply topic."""
        result = []
        call = threading.Thread(target=lambda: result.append(c.request(
            pb.Request(request_id=original.request_id, session_id=sid, invoke=original.invoke),
            timeout=60, on_output=lambda s, data: output.append((s, data)))))
        call.start()
        read_until(unserved, lambda seen: any(
            pb.Request.FromString(m[1]).request_id == original.request_id for m in seen))
        for key, value, headers in messages:
            producer.produce(replies, value, key=key, headers=headers)
        producer.flush(30)
        call.join(60)
        assert not call.is_alive() and len(result) == 1
        return result[0]

    try:
        with Client(BROKERS, request_topic=unserved, reply_topic=replies) as c:
            output = []
            got = call_then_reply(c, req, replay, output)
            assert got.SerializeToString() == finals[0][1]
            assert output == expected, output
            # The next call on the topic gets its own reply, read after every copy of
            # the first; the copies reached nobody.
            got = call_then_reply(c, other, other_final, output)
            assert got.SerializeToString() == other_final[0][1]
            assert output == expected, output
    finally:
        for topic in (unserved, replies):
            delete_topic(topic)
    assert not [r for r in caplog.records if r.name == "codeq_client"], caplog.text


def test_a_start_session_delivered_twice_starts_one_session(fleet, client, redis_client):
    """The same startSession twice while the first is in flight, as a batch consumed
    again after a dispatcher restart or a rebalance delivers it: one session starts,
    and every reply to the request id is that session."""
    d = Driver(BROKERS, fleet.request_topic)
    try:
        before = set(redis_client.scan_iter(fleet.prefix + "session:*", count=1000))
        req = pb.Request(request_id=uuid.uuid4().hex,
                         start_session=pb.StartSession(name="delivered-twice"))
        d.send(req)
        d.send(req)
        sid = d.wait_final(req.request_id).session.session_id
        # Same key, same partition: once this is answered, both copies were handled.
        marker = pb.Request(request_id=uuid.uuid4().hex, reply_topic=d.reply_topic,
                            list_sessions=pb.ListSessions())
        d.send_raw(marker.SerializeToString(), key=req.request_id)
        d.wait_final(marker.request_id)
        after = set(redis_client.scan_iter(fleet.prefix + "session:*", count=1000))
        assert {k.decode() for k in after - before} == {fleet.prefix + "session:" + sid}
        finals = d.finals(req.request_id)
        assert all(f.SerializeToString() == finals[0].SerializeToString() for f in finals)
        assert texts(ok(client.session(sid).execute_code("'one'"))) == ["'one'"]
        client.stop_session(sid)
    finally:
        d.close()
