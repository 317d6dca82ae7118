"""Cancelling a call in the fleet (schemas/codeq.proto, CancelCall): MCP's
notifications/cancelled through `codeq mcp --brokers` interrupts the cell on its worker
as the embedded worker would (variables kept, no response sent), and a raw cancel_call
stops a call still queued on its session's worker, is answered at once without being
stored, and cannot reach another tenant's session. Real Kafka, Redis, workers."""

import json
import os
import sys
import time
import uuid

import pytest

from conftest import BROKERS
from driver import Driver, pb, texts
from test_cli_fleet import gateway  # noqa: F401  (the fixture: codeq mcp --brokers)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "e2e"))
from mcp_client import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def driver(fleet):
    d = Driver(BROKERS, fleet.request_topic, fleet=fleet)
    yield d
    d.close()


def progress_text(srv, token):
    with srv._cond:
        return "".join(m["params"].get("message", "") for m in srv._messages
                       if m.get("method") == "notifications/progress" and
                       m.get("params", {}).get("progressToken") == token)


def answers_to(srv, id):
    return [m for m in (json.loads(line) for line in list(srv.lines))
            if "method" not in m and m.get("id") == id]


def worker_logs(fleet):
    return "".join(w.log_text() for w in fleet.workers.values())


def test_mcp_cancel_interrupts_a_cell_on_its_worker(gateway, fleet):
    sid = gateway.call("startSession", {})["structuredContent"]["sessionId"]
    assert gateway.call("executeCode", {"sessionId": sid, "code": "kept = 41"})["isError"] is False
    id = gateway.send_request("tools/call", {
        "name": "executeCode",
        "arguments": {"sessionId": sid, "timeout": 600,
                      "code": "import time\nprint('started', flush=True)\nwhile True:\n"
                              "    time.sleep(0.01)"},
        "_meta": {"progressToken": "fleet-cancel-1"}})
    # Output comes from the worker through Kafka: the cell runs there.
    wait_until(lambda: "started" in progress_text(gateway, "fleet-cancel-1"), 120,
               "the cell to start on its worker")
    gateway.notify("notifications/cancelled", {"requestId": id, "reason": "test"})
    # The kernel runs one cell at a time: this one runs once the loop was interrupted
    # (it would otherwise run for the cell's 600 s).
    r = gateway.call("executeCode", {"sessionId": sid, "code": "kept + 1"}, timeout=120)
    assert r["isError"] is False and r["content"][0]["text"] == "42", r
    time.sleep(0.5)  # a response sent late would be here by now
    assert answers_to(gateway, id) == []
    wait_until(lambda: "the call was running" in worker_logs(fleet), 30,
               "the worker to log the cancel")
    gateway.call("stopSession", {"sessionId": sid})


def cancel(driver, sid, target, tenant=""):
    return driver.send(pb.Request(request_id=uuid.uuid4().hex, session_id=sid, tenant=tenant,
                                  cancel_call=pb.CancelCall(request_id=target)))


def invoke(driver, sid, code):
    return driver.send(pb.Request(request_id=uuid.uuid4().hex, session_id=sid,
                                  invoke=pb.Invoke(tool="executeCode",
                                                   arguments=pb.Arguments(code=code))))


def test_a_queued_call_is_cancelled_before_it_runs(driver):
    sid = driver.start_session()
    first = invoke(driver, sid, "import time\ntime.sleep(3)\n'first'")
    second = invoke(driver, sid, "ran_second = True")
    # Keyed by session: the cancel reaches the worker after both calls, while the first
    # runs and the second waits behind it.
    ack = driver.wait_final(cancel(driver, sid, second)).result
    assert not ack.is_error and "queued" in texts(ack)[0], ack
    r = driver.wait_final(second).result
    assert r.is_error and "cancelled before it started" in r.error_message, r
    r = driver.wait_final(first).result
    assert not r.is_error and texts(r) == ["'first'"], r
    r = driver.code(sid, "'ran_second' in globals()")
    assert texts(r) == ["False"], r
    # The cancelled call's reply was stored as any other: its repeat gets it again.
    again = driver.send(pb.Request(request_id=second, session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code="ran_second = True"))))
    r = driver.wait_final(again, count=2).result
    assert r.is_error and "cancelled before it started" in r.error_message, r
    assert texts(driver.code(sid, "'ran_second' in globals()")) == ["False"]


def test_a_cancel_of_nothing_is_answered_and_not_stored(driver):
    sid = driver.start_session()
    rid = cancel(driver, sid, "no-such-call")
    ack = driver.wait_final(rid).result
    assert not ack.is_error and "nothing to cancel" in texts(ack)[0], ack
    # Not stored: the same cancel again is handled again, not answered from Redis.
    driver.send(pb.Request(request_id=rid, session_id=sid,
                           cancel_call=pb.CancelCall(request_id="no-such-call")))
    ack = driver.wait_final(rid, count=2).result
    assert "nothing to cancel" in texts(ack)[0], ack


def test_a_cancel_must_name_a_call(driver):
    sid = driver.start_session()
    ack = driver.wait_final(driver.send(pb.Request(
        request_id=uuid.uuid4().hex, session_id=sid, cancel_call=pb.CancelCall()))).result
    assert ack.is_error and "cancel_call.request_id is required" in ack.error_message, ack


def test_the_python_clients_cancelled_task_cancels_its_call(fleet):
    """asyncio: cancelling the task that awaits a call cancels the call in the fleet
    (the session is free for its next call at once, variables kept); Client.cancel
    cancels a call by its request id and says what it found."""
    import asyncio
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "clients", "python"))
    from codeq_client import AsyncClient, Client

    async def scenario():
        async with AsyncClient(BROKERS, request_topic=fleet.request_topic) as client:
            session = await client.start_session()
            await session.execute_code("kept = 41")
            started = asyncio.Event()
            task = asyncio.create_task(session.invoke(
                "executeCode", {"code": "import time\nprint('go', flush=True)\n"
                                        "time.sleep(600)"},
                timeout=900, on_output=lambda stream, data: started.set()))
            await asyncio.wait_for(started.wait(), 120)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            r = await session.execute_code("kept + 1", timeout=120)
            assert r["content"][0]["text"] == "42", r
            await session.stop()

    asyncio.run(scenario())

    with Client(BROKERS, request_topic=fleet.request_topic) as client:
        session = client.start_session()
        said = client.cancel(session.id, "no-such-call")
        assert said.startswith("nothing to cancel"), said
        session.stop()
