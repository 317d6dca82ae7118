"""W3C trace context through the fleet (fleet/tracing.h, issue 15): a request's
traceparent is continued, not replaced, by the dispatcher ("codeq.dispatch") and the
worker ("codeq.request", "codeq.kernel.run"); every reply carries the trace; spans reach
an OTLP/HTTP collector (a test receiver validating each payload with
opentelemetry-proto); a dead collector costs dropped spans, counted, not the request."""

import os
import sys
import uuid

import pytest

from conftest import BROKERS, REPO
from driver import Driver, pb, texts

sys.path.insert(0, os.path.join(REPO, "tests"))
from otlp_receiver import (  # noqa: E402
    Receiver, by_name, dead_endpoint, log_lines, traceparent_ids)

SERVER, CONSUMER, INTERNAL = 2, 5, 1  # OTLP's SpanKind numbers


def new_traceparent():
    """A client's context: a fresh trace and span id, sampled."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def send(driver, req, headers):
    """driver.send with Kafka headers on the request."""
    if not req.request_id:
        req.request_id = uuid.uuid4().hex
    req.reply_topic = driver.reply_topic
    driver.producer.produce(driver.request_topic, req.SerializeToString(),
                            key=req.session_id or req.request_id, headers=headers)
    driver.producer.flush()
    return req.request_id


def code_request(sid, code):
    return pb.Request(session_id=sid, invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code=code)))


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def traced(services, redis_client, receiver):
    """A fleet of one dispatcher and one worker that export spans to the receiver."""
    from conftest import Fleet
    f = Fleet()
    f.env["CODEQ_OTLP_ENDPOINT"] = receiver.endpoint
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    yield f
    f.stop()


@pytest.fixture(scope="module")
def client(traced):
    from codeq_client import Client
    with Client(BROKERS, request_topic=traced.request_topic) as c:
        yield c


@pytest.fixture(scope="module")
def driver(traced):
    d = Driver(BROKERS, traced.request_topic)
    yield d
    d.close()


def check_tree(spans, client_span):
    """The spans of one request form client -> codeq.dispatch -> codeq.request ->
    codeq.kernel.run; returns them by name."""
    s = by_name(spans)
    assert set(s) == {"codeq.dispatch", "codeq.request", "codeq.kernel.run"}, spans
    dispatch, request, run = s["codeq.dispatch"], s["codeq.request"], s["codeq.kernel.run"]
    assert dispatch.parent_id == client_span, spans
    assert request.parent_id == dispatch.span_id, spans
    assert run.parent_id == request.span_id, spans
    assert (dispatch.service, request.service, run.service) == \
        ("codeq-dispatcher", "codeq-worker", "codeq-worker")
    assert (dispatch.kind, request.kind, run.kind) == (CONSUMER, CONSUMER, INTERNAL)
    for span in (dispatch, request, run):
        assert 0 < span.start <= span.end, span
    assert len({dispatch.span_id, request.span_id, run.span_id, client_span}) == 4
    assert request.attributes.get("codeq.tool") == "executeCode"
    assert run.attributes.get("codeq.tool") == "executeCode"
    return s


def test_a_traceparent_is_continued_to_the_kernel_and_back(client, receiver):
    session = client.start_session()
    trace_id, client_span = traceparent_ids(parent := new_traceparent())
    result = session.execute_code("print('traced')", traceparent=parent, tracestate="vendor=x")
    assert result["isError"] is False, result
    assert result["structuredContent"]["stdout"] == "traced\n"
    reply_trace, reply_span = traceparent_ids(result["_meta"]["traceparent"])
    assert reply_trace == trace_id  # the same trace, not a new one
    assert result["_meta"]["tracestate"] == "vendor=x"

    spans = check_tree(receiver.wait_for(
        trace_id, {"codeq.dispatch", "codeq.request", "codeq.kernel.run"}), client_span)
    # The reply carries the worker's span of the request.
    assert reply_span == spans["codeq.request"].span_id
    assert spans["codeq.request"].attributes["codeq.session_id"] == session.id
    assert {s.trace_state for s in spans.values()} == {"vendor=x"}
    assert receiver.invalid == []
    session.stop()


def test_chunks_and_the_final_reply_carry_the_trace(driver, receiver):
    sid = driver.start_session()
    parent = new_traceparent()
    trace_id, client_span = traceparent_ids(parent)
    rid = send(driver, code_request(sid, "import sys\nprint('one', flush=True)\n"
                                         "print('two', file=sys.stderr, flush=True)"),
               [("traceparent", parent.encode())])
    final = driver.wait_final(rid)
    assert final.result.structured_content.stdout == "one\n", final
    replies = driver.replies[rid]
    assert [kind for kind, _, _ in replies].count("chunk") >= 2, replies
    spans = check_tree(receiver.wait_for(
        trace_id, {"codeq.dispatch", "codeq.request", "codeq.kernel.run"}), client_span)
    for kind, _, headers in replies:
        assert traceparent_ids(headers["traceparent"]) == \
            (trace_id, spans["codeq.request"].span_id), (kind, headers)
        assert "tracestate" not in headers  # none came, none goes back


def test_the_request_field_serves_when_the_header_is_absent(driver, receiver):
    sid = driver.start_session()
    parent = new_traceparent()
    trace_id, client_span = traceparent_ids(parent)
    req = code_request(sid, "6 * 7")
    req.traceparent = parent
    rid = send(driver, req, None)
    assert texts(driver.wait_final(rid).result) == ["42"]
    headers = driver.replies[rid][-1][2]
    assert traceparent_ids(headers["traceparent"])[0] == trace_id
    check_tree(receiver.wait_for(
        trace_id, {"codeq.dispatch", "codeq.request", "codeq.kernel.run"}), client_span)


def test_a_request_without_context_starts_a_new_trace(client, receiver):
    session = client.start_session()
    result = session.execute_code("1 + 1")
    trace_id, reply_span = traceparent_ids(result["_meta"]["traceparent"])
    spans = by_name(receiver.wait_for(
        trace_id, {"codeq.dispatch", "codeq.request", "codeq.kernel.run"}))
    assert spans["codeq.dispatch"].parent_id == ""  # the root: no caller's span
    assert spans["codeq.request"].parent_id == spans["codeq.dispatch"].span_id
    assert spans["codeq.kernel.run"].parent_id == reply_span == spans["codeq.request"].span_id
    assert "tracestate" not in result["_meta"]
    # Another request, another trace.
    again = session.execute_code("1 + 1")
    assert traceparent_ids(again["_meta"]["traceparent"])[0] != trace_id
    session.stop()


def test_a_reply_the_dispatcher_answers_carries_its_span(driver, receiver, traced):
    parent = new_traceparent()
    trace_id, client_span = traceparent_ids(parent)
    rid = send(driver, pb.Request(session_id="no-such-session-" + uuid.uuid4().hex[:8],
                                  get_session=pb.GetSession()),
               [("traceparent", parent.encode()), ("tracestate", b"a=1,b=2")])
    final = driver.wait_final(rid)
    assert final.WhichOneof("payload") is not None, final
    headers = driver.replies[rid][-1][2]
    spans = receiver.wait_for(trace_id, {"codeq.dispatch"})
    dispatch = by_name(spans)["codeq.dispatch"]
    assert dispatch.parent_id == client_span
    assert traceparent_ids(headers["traceparent"]) == (trace_id, dispatch.span_id)
    assert headers["tracestate"] == "a=1,b=2"


def test_log_lines_of_a_request_carry_its_ids(driver, receiver, traced):
    """The dispatcher's warning about a request it refuses is written while it handles
    that request: the line carries the request's trace and the dispatcher's span."""
    parent = new_traceparent()
    trace_id, _ = traceparent_ids(parent)
    req = pb.Request(session_id="s", reply_topic="not-a-reply-topic",
                     request_id=uuid.uuid4().hex, get_session=pb.GetSession())
    driver.producer.produce(driver.request_topic, req.SerializeToString(), key="s",
                            headers=[("traceparent", parent.encode())])
    driver.producer.flush()
    dispatch = by_name(receiver.wait_for(trace_id, {"codeq.dispatch"}))["codeq.dispatch"]
    lines = [line for line in log_lines(traced.dispatchers[0].log_text())
             if line.get("trace_id") == trace_id]
    assert lines, traced.dispatchers[0].log_text()[-3000:]
    assert {line["span_id"] for line in lines} == {dispatch.span_id}
    # Lines of other requests, or none, carry no trace.
    others = [line for line in log_lines(traced.dispatchers[0].log_text())
              if line.get("event") == "tracing_started"]
    assert others and "trace_id" not in others[0]


def test_with_the_collector_dead_requests_succeed_and_drops_are_counted(new_fleet,
                                                                          redis_client):
    f = new_fleet()
    f.env["CODEQ_OTLP_ENDPOINT"] = dead_endpoint()
    w = f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    from codeq_client import Client
    with Client(BROKERS, request_topic=f.request_topic) as c:
        session = c.start_session()
        parent = new_traceparent()
        for _ in range(3):
            result = session.execute_code("21 * 2", traceparent=parent)
            assert result["isError"] is False and result["content"][0]["text"] == "42", result
            assert traceparent_ids(result["_meta"]["traceparent"])[0] == parent.split("-")[1]
        session.stop()
    for d in f.dispatchers + [f.workers[w]]:
        d.stop()
        stopped = [line for line in log_lines(d.log_text())
                   if line.get("event") == "tracing_stopped"]
        assert len(stopped) == 1, d.log_text()[-3000:]
        # The dispatcher made a span per request (5), the worker two per call (3 x 2)
        # and one per session request (2): every one dropped, none exported.
        assert stopped[0]["spans_exported"] == 0
        assert stopped[0]["spans_dropped_export_failed"] >= 5, stopped


def test_tracing_off_passes_a_context_on_unchanged(new_fleet, redis_client):
    """No otlp_endpoint: no spans and no new trace, but a caller's context still comes
    back (a pass-through), and a request without one gets no trace headers."""
    f = new_fleet()
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    d = Driver(BROKERS, f.request_topic)
    try:
        sid = d.start_session()
        assert "traceparent" not in d.replies[next(iter(d.replies))][-1][2]
        parent = new_traceparent()
        rid = send(d, code_request(sid, "print(1)"),
                   [("traceparent", parent.encode()), ("tracestate", b"k=v")])
        d.wait_final(rid)
        for kind, _, headers in d.replies[rid]:
            assert headers["traceparent"] == parent, (kind, headers)
            assert headers["tracestate"] == "k=v"
        rid = d.send(code_request(sid, "print(2)"))
        d.wait_final(rid)
        for kind, _, headers in d.replies[rid]:
            assert "traceparent" not in headers and "tracestate" not in headers
    finally:
        d.close()
    for daemon in f.dispatchers + list(f.workers.values()):
        assert "tracing_st" not in daemon.log_text()
