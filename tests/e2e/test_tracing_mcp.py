"""`codeq mcp` trace context (cli/mcp_trace.h, issue 15): a tools/call's
_meta.traceparent is continued by a "codeq.mcp.call" span (kind SERVER) with a
"codeq.kernel.run" child; the result's _meta.traceparent names the call's span in the
same trace; spans reach a test OTLP/HTTP receiver that validates every payload with
opentelemetry-proto; with the collector dead the calls still succeed."""

import os
import sys
import uuid

import pytest

from mcp_client import McpServer, check_result_shape, texts
from mcp_fixtures import host  # noqa: F401  (fixture)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from otlp_receiver import Receiver, by_name, dead_endpoint, traceparent_ids  # noqa: E402

SERVER, INTERNAL = 2, 1  # OTLP's SpanKind numbers


def new_traceparent():
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"


def call(server, name, arguments, meta=None):
    params = {"name": name, "arguments": arguments}
    if meta is not None:
        params["_meta"] = meta
    msg = server.response(server.send_request("tools/call", params))
    assert "error" not in msg, msg
    check_result_shape(msg["result"])
    return msg["result"]


@pytest.fixture(scope="module")
def receiver():
    r = Receiver()
    yield r
    r.close()


def start(host, *args, env=None):  # noqa: F811
    server = McpServer("--warm-pool", "0", *args, env=env)
    host.pids.append(server.pid)
    server.initialize()
    return server


@pytest.fixture(scope="module")
def traced(host, receiver):  # noqa: F811
    server = start(host, "--otlp-endpoint", receiver.endpoint)
    yield server
    server.close()


def test_a_call_continues_the_callers_trace(traced, receiver):
    parent = new_traceparent()
    trace_id, client_span = traceparent_ids(parent)
    result = call(traced, "executeCode", {"code": "print('hi')\n6 * 7"},
                  {"traceparent": parent, "tracestate": "vendor=x"})
    assert result["isError"] is False and "42" in texts(result), result
    reply_trace, reply_span = traceparent_ids(result["_meta"]["traceparent"])
    assert reply_trace == trace_id
    assert result["_meta"]["tracestate"] == "vendor=x"
    spans = by_name(receiver.wait_for(trace_id, {"codeq.mcp.call", "codeq.kernel.run"}))
    assert set(spans) == {"codeq.mcp.call", "codeq.kernel.run"}, spans
    mcp, run = spans["codeq.mcp.call"], spans["codeq.kernel.run"]
    assert mcp.parent_id == client_span and mcp.span_id == reply_span
    assert run.parent_id == mcp.span_id
    assert (mcp.service, run.service) == ("codeq-mcp", "codeq-mcp")
    assert (mcp.kind, run.kind) == (SERVER, INTERNAL)
    for s in (mcp, run):
        assert 0 < s.start <= s.end, s
        assert s.attributes["codeq.tool"] == "executeCode"
        assert s.trace_state == "vendor=x"
    # The kernel ran within the call.
    assert mcp.start <= run.start and run.end <= mcp.end, spans
    assert receiver.invalid == []


def test_a_call_without_context_starts_a_trace(traced, receiver):
    result = call(traced, "executeCommand", {"command": "true"})
    trace_id, span_id = traceparent_ids(result["_meta"]["traceparent"])
    spans = by_name(receiver.wait_for(trace_id, {"codeq.mcp.call", "codeq.kernel.run"}))
    assert spans["codeq.mcp.call"].parent_id == "" and spans["codeq.mcp.call"].span_id == span_id
    assert spans["codeq.kernel.run"].parent_id == span_id
    assert "tracestate" not in result["_meta"]


def test_an_invalid_traceparent_starts_a_new_trace(traced, receiver):
    bad = "00-" + "0" * 32 + "-" + "1" * 16 + "-01"  # an all-zero trace id is invalid
    result = call(traced, "executeCode", {"code": "1"}, {"traceparent": bad})
    trace_id, _ = traceparent_ids(result["_meta"]["traceparent"])
    assert trace_id != "0" * 32
    spans = by_name(receiver.wait_for(trace_id, {"codeq.mcp.call"}))
    assert spans["codeq.mcp.call"].parent_id == ""


def test_a_session_tool_gets_a_span_without_a_kernel_run(traced, receiver):
    parent = new_traceparent()
    trace_id, client_span = traceparent_ids(parent)
    result = call(traced, "listSessions", {}, {"traceparent": parent})
    assert traceparent_ids(result["_meta"]["traceparent"])[0] == trace_id
    spans = by_name(receiver.wait_for(trace_id, {"codeq.mcp.call"}))
    assert spans["codeq.mcp.call"].parent_id == client_span
    assert spans["codeq.mcp.call"].attributes["codeq.tool"] == "listSessions"


def test_the_collector_dead_costs_no_call(host):  # noqa: F811
    server = start(host, env=dict(os.environ, CODEQ_OTLP_ENDPOINT=dead_endpoint()))
    try:
        parent = new_traceparent()
        for i in range(3):
            result = call(server, "executeCode", {"code": f"{i} + 1"}, {"traceparent": parent})
            assert texts(result) == [str(i + 1)], result
            assert traceparent_ids(result["_meta"]["traceparent"])[0] == parent.split("-")[1]
    finally:
        server.close()


def test_tracing_off_passes_the_context_back(host):  # noqa: F811
    env = dict(os.environ)
    env.pop("CODEQ_OTLP_ENDPOINT", None)
    server = start(host, env=env)
    try:
        parent = new_traceparent()
        result = call(server, "executeCode", {"code": "1"}, {"traceparent": parent})
        assert result["_meta"] == {"traceparent": parent}
        assert "_meta" not in call(server, "executeCode", {"code": "2"})
    finally:
        server.close()


def test_a_bad_endpoint_is_refused_at_start():
    import subprocess
    from mcp_client import CODEQ
    p = subprocess.run([CODEQ, "mcp", "--otlp-endpoint", "ftp://127.0.0.1/"],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "--otlp-endpoint" in p.stderr, p
