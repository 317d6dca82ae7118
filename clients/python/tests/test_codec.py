"""Tests that need no services: protobuf <-> AgentCore dict conversion, request
building, and the routing of replies to calls (dedup, chunk order)."""

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PACKAGE_ROOT))

import codeq_client  # noqa: E402
from codeq_client import client as client_module  # noqa: E402
from codeq_client import codeq_pb2 as pb  # noqa: E402
from codeq_client.results import (  # noqa: E402
    arguments_from_dict,
    result_to_dict,
    session_list_to_dict,
    session_to_dict,
)

# ---- results ----------------------------------------------------------------------------


def test_every_block_type():
    result = pb.Result(
        content=[
            pb.ContentBlock(text=pb.TextBlock(text="42\n")),
            pb.ContentBlock(image=pb.ImageBlock(data=b"\x89PNG\r\n", mime_type="image/png")),
            pb.ContentBlock(
                resource=pb.EmbeddedResource(uri="file://t.csv", mime_type="text/csv", text="a,b\n")
            ),
            pb.ContentBlock(
                resource=pb.EmbeddedResource(
                    uri="file://b.bin", mime_type="application/octet-stream", blob=b"\x00\xff"
                )
            ),
            pb.ContentBlock(
                resource_link=pb.ResourceLink(
                    uri="file://out/plot.png",
                    name="plot.png",
                    mime_type="image/png",
                    size=5 << 32,
                    description="file",
                )
            ),
        ]
    )
    assert result_to_dict(result) == {
        "content": [
            {"type": "text", "text": "42\n"},
            {"type": "image", "data": base64.b64encode(b"\x89PNG\r\n").decode(), "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "file://t.csv", "mimeType": "text/csv", "text": "a,b\n"}},
            {
                "type": "resource",
                "resource": {"uri": "file://b.bin", "mimeType": "application/octet-stream", "blob": "AP8="},
            },
            {
                "type": "resource_link",
                "uri": "file://out/plot.png",
                "name": "plot.png",
                "mimeType": "image/png",
                "size": 5 << 32,
                "description": "file",
            },
        ],
        "isError": False,
    }


def test_key_order_matches_the_c_rendering():
    # json.dumps of either side compares equal only if the keys come in C's order.
    result = pb.Result(
        content=[pb.ContentBlock(resource=pb.EmbeddedResource(uri="u", mime_type="m", text="t"))],
        structured_content=pb.StructuredContent(task_id="T", task_status=pb.TASK_STATUS_COMPLETED),
        is_error=True,
        error_code=pb.ERROR_CODE_INTERNAL,
        error_message="boom",
    )
    d = result_to_dict(result)
    assert list(d) == ["content", "structuredContent", "isError", "_codeq_error"]
    assert list(d["content"][0]) == ["type", "resource"]
    assert list(d["content"][0]["resource"]) == ["uri", "mimeType", "text"]
    assert list(d["structuredContent"]) == [
        "taskId", "taskStatus", "stdout", "stderr", "exitCode", "executionTime", "cpuTime",
        "peakMemory",
    ]
    assert list(d["_codeq_error"]) == ["code", "message"]


def test_resource_without_contents_is_empty_text():
    block = pb.ContentBlock(resource=pb.EmbeddedResource(uri="file://e", mime_type="text/plain"))
    d = result_to_dict(pb.Result(content=[block]))
    assert d["content"][0]["resource"] == {"uri": "file://e", "mimeType": "text/plain", "text": ""}


def test_no_structured_content_unless_set():
    d = result_to_dict(pb.Result(content=[pb.ContentBlock(text=pb.TextBlock(text="wrote a.txt"))]))
    assert "structuredContent" not in d
    assert d["isError"] is False
    assert "_codeq_error" not in d


def test_code_result_structured_content():
    sc = pb.StructuredContent(stdout="hi\n", stderr="", exit_code=0, execution_time=12.5,
                              cpu_time_ms=7, peak_memory_bytes=123456789)
    d = result_to_dict(pb.Result(structured_content=sc))
    assert d["structuredContent"] == {"stdout": "hi\n", "stderr": "", "exitCode": 0, "executionTime": 12.5,
                                      "cpuTime": 7, "peakMemory": 123456789}
    assert isinstance(d["structuredContent"]["executionTime"], float)
    # Rounded to the microsecond as the C side writes it, whatever the server computed.
    sc = pb.StructuredContent(execution_time=8000.742 + 1e-9)
    d = result_to_dict(pb.Result(structured_content=sc))
    assert repr(d["structuredContent"]["executionTime"]) == "8000.742"
    sc = pb.StructuredContent(execution_time=0.1 + 0.2)
    assert repr(result_to_dict(pb.Result(structured_content=sc))["structuredContent"]["executionTime"]) == "0.3"
    # A session with network adds its traffic during the call, even when it was none.
    sc = pb.StructuredContent(stdout="", network=True, network_bytes_sent=0,
                              network_bytes_received=5_000_000_000)
    d = result_to_dict(pb.Result(structured_content=sc))
    assert d["structuredContent"]["networkBytesSent"] == 0
    assert d["structuredContent"]["networkBytesReceived"] == 5_000_000_000


def test_empty_structured_content_is_still_present():
    # Presence, not content, decides: an all-zero StructuredContent is a command that
    # printed nothing and exited 0.
    d = result_to_dict(pb.Result(structured_content=pb.StructuredContent()))
    assert d["structuredContent"] == {"stdout": "", "stderr": "", "exitCode": 0, "executionTime": 0.0,
                                      "cpuTime": 0, "peakMemory": 0}


def test_failed_code_is_error_without_codeq_error():
    sc = pb.StructuredContent(stderr="ZeroDivisionError\n", exit_code=1)
    d = result_to_dict(pb.Result(structured_content=sc, is_error=True))
    assert d["isError"] is True
    assert "_codeq_error" not in d
    assert d["structuredContent"]["exitCode"] == 1


@pytest.mark.parametrize(
    "status,name,has_exit",
    [
        (pb.TASK_STATUS_SUBMITTED, "submitted", False),
        (pb.TASK_STATUS_WORKING, "working", False),
        (pb.TASK_STATUS_COMPLETED, "completed", True),
        (pb.TASK_STATUS_CANCELED, "canceled", True),
        (pb.TASK_STATUS_FAILED, "failed", True),
    ],
)
def test_task_fields(status, name, has_exit):
    sc = pb.StructuredContent(task_id="Tk3", task_status=status, stdout="so far", exit_code=3)
    d = result_to_dict(pb.Result(structured_content=sc))["structuredContent"]
    assert d["taskId"] == "Tk3"
    assert d["taskStatus"] == name
    assert d["stdout"] == "so far"
    assert ("exitCode" in d) == has_exit


def test_not_a_task_has_no_task_fields():
    d = result_to_dict(pb.Result(structured_content=pb.StructuredContent(stdout="x")))
    assert "taskId" not in d["structuredContent"]
    assert "taskStatus" not in d["structuredContent"]
    assert "exitCode" in d["structuredContent"]


@pytest.mark.parametrize(
    "code,name",
    [
        (pb.ERROR_CODE_NOT_FOUND, "NOT_FOUND"),
        (pb.ERROR_CODE_INVALID_ARGUMENT, "INVALID_ARGUMENT"),
        (pb.ERROR_CODE_LIMIT_EXCEEDED, "LIMIT_EXCEEDED"),
        (pb.ERROR_CODE_TIMED_OUT, "TIMED_OUT"),
        (pb.ERROR_CODE_INTERNAL, "INTERNAL"),
        (77, "INTERNAL"),  # a code from a newer schema
    ],
)
def test_service_failure_has_codeq_error(code, name):
    result = pb.Result(
        content=[pb.ContentBlock(text=pb.TextBlock(text="session 's1' not found"))],
        is_error=True,
        error_code=code,
        error_message="session 's1' not found",
    )
    d = result_to_dict(result)
    assert d["isError"] is True
    assert d["_codeq_error"] == {"code": name, "message": "session 's1' not found"}
    assert "structuredContent" not in d


def test_codeq_error_without_message_and_with_structured_content():
    sc = pb.StructuredContent(stdout="partial\n", stderr="codeq: timed out\n", exit_code=1)
    result = pb.Result(structured_content=sc, is_error=True, error_code=pb.ERROR_CODE_TIMED_OUT)
    d = result_to_dict(result)
    assert d["_codeq_error"] == {"code": "TIMED_OUT"}
    assert d["structuredContent"]["stdout"] == "partial\n"


def test_result_survives_the_wire():
    sc = pb.StructuredContent(stdout="out", stderr="err", exit_code=-1, execution_time=123.25)
    result = pb.Result(structured_content=sc, content=[pb.ContentBlock(text=pb.TextBlock(text="é"))])
    decoded = pb.Response()
    decoded.ParseFromString(pb.Response(request_id="r", result=result).SerializeToString())
    d = result_to_dict(decoded.result)
    assert d["structuredContent"]["exitCode"] == -1
    assert json.loads(json.dumps(d)) == d


# ---- sessions -----------------------------------------------------------------------------


def _session(**kw):
    fields = dict(
        session_id="abc123",
        name="my session",
        status=pb.SESSION_STATUS_READY,
        created_at_unix_ms=1700000000123,
        last_updated_at_unix_ms=1700000000007,
        session_timeout_seconds=900,
    )
    fields.update(kw)
    return pb.Session(**fields)


def test_session_record():
    d = session_to_dict(_session())
    assert list(d) == [
        "sessionId", "name", "status", "createdAt", "lastUpdatedAt", "sessionTimeoutSeconds",
        "networkMode", "networkAllow", "codeInterpreterIdentifier", "runtime", "runtimeDigest",
        "limits",
    ]
    assert d == {
        "sessionId": "abc123",
        "name": "my session",
        "status": "READY",
        "createdAt": "2023-11-14T22:13:20.123Z",
        "lastUpdatedAt": "2023-11-14T22:13:20.007Z",
        "sessionTimeoutSeconds": 900,
        "networkMode": "NONE",
        "networkAllow": [],
        "codeInterpreterIdentifier": "codeq.default",
        "runtime": "",
        "runtimeDigest": "",
        "limits": {"memory": 0, "cpus": 0, "disk": 0, "pids": 0},
    }
    d = session_to_dict(_session(code_interpreter_identifier="analytics", runtime="an",
                                 runtime_digest="ab" * 32,
                                 limits=pb.Limits(memory_bytes=1 << 30, pids=64,
                                                  cpu_millis=1500, disk_bytes=2 << 30)))
    assert (d["codeInterpreterIdentifier"], d["runtime"], d["runtimeDigest"]) == (
        "analytics", "an", "ab" * 32)
    assert d["limits"] == {"memory": 1 << 30, "cpus": 1.5, "disk": 2 << 30, "pids": 64}
    d = session_to_dict(_session(network=pb.NETWORK_MODE_ALLOWLIST,
                                 network_allow=["files.example.test:443", "*.a.test"]))
    assert (d["networkMode"], d["networkAllow"]) == ("ALLOWLIST",
                                                     ["files.example.test:443", "*.a.test"])
    assert session_to_dict(_session(network=pb.NETWORK_MODE_PUBLIC))["networkMode"] == "PUBLIC"


@pytest.mark.parametrize(
    "unix_ms,text",
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (951782400999, "2000-02-29T00:00:00.999Z"),
        (4102444799999, "2099-12-31T23:59:59.999Z"),
        (-62135596800000, "0001-01-01T00:00:00.000Z"),  # zero-padded year, as C prints it
    ],
)
def test_session_times_are_iso_utc(unix_ms, text):
    assert session_to_dict(_session(created_at_unix_ms=unix_ms))["createdAt"] == text


@pytest.mark.parametrize(
    "status,name",
    [
        (pb.SESSION_STATUS_READY, "READY"),
        (pb.SESSION_STATUS_TERMINATED, "TERMINATED"),
        (pb.SESSION_STATUS_UNSPECIFIED, "TERMINATED"),  # C: anything not READY
    ],
)
def test_session_status(status, name):
    assert session_to_dict(_session(status=status))["status"] == name


def test_session_list():
    listing = pb.SessionList(sessions=[_session(), _session(session_id="x")], next_token="x")
    d = session_list_to_dict(listing)
    assert [s["sessionId"] for s in d["items"]] == ["abc123", "x"]
    assert d["nextToken"] == "x"
    assert session_list_to_dict(pb.SessionList()) == {"items": []}


# ---- arguments ------------------------------------------------------------------------------


def test_scalar_arguments():
    args = arguments_from_dict(
        {
            "code": "print(1)",
            "language": "python",
            "clearContext": True,
            "runtime": "python",
            "command": "ls",
            "directoryPath": "out",
            "taskId": "T1",
            "timeout": 2.5,
        }
    )
    assert args == pb.Arguments(
        code="print(1)",
        language="python",
        clear_context=True,
        runtime="python",
        command="ls",
        directory_path="out",
        task_id="T1",
        timeout=2.5,
    )


def test_none_is_absent_and_empty_is_default():
    assert arguments_from_dict({"code": "x", "runtime": None}) == pb.Arguments(code="x")
    assert arguments_from_dict(None) == pb.Arguments()
    assert arguments_from_dict({}) == pb.Arguments()


def test_paths():
    assert list(arguments_from_dict({"paths": ["a", "b/c"]}).paths) == ["a", "b/c"]
    assert list(arguments_from_dict({"paths": ("a",)}).paths) == ["a"]
    with pytest.raises(TypeError):
        arguments_from_dict({"paths": "abc"})


def test_content_text_and_blob():
    args = arguments_from_dict(
        {
            "content": [
                {"path": "a.txt", "text": "hi"},
                {"path": "b.bin", "blob": b"\x00\xff"},
                {"path": "c.bin", "blob": "AP8="},  # base64, as in AgentCore's JSON
                {"path": "d.bin", "blob": bytearray(b"\x01")},
                {"path": "e.txt", "text": ""},
            ]
        }
    )
    files = [(f.path, f.WhichOneof("data"), getattr(f, f.WhichOneof("data"))) for f in args.content]
    assert files == [
        ("a.txt", "text", "hi"),
        ("b.bin", "blob", b"\x00\xff"),
        ("c.bin", "blob", b"\x00\xff"),
        ("d.bin", "blob", b"\x01"),
        ("e.txt", "text", ""),
    ]


@pytest.mark.parametrize(
    "item",
    [
        {"path": "a", "blob": "not base64!"},
        {"path": "a"},
        {"path": "a", "text": "x", "blob": b"x"},
        {"text": "x"},
        {"path": "a", "text": "x", "mode": 0o644},
    ],
)
def test_bad_content(item):
    with pytest.raises(ValueError):
        arguments_from_dict({"content": [item]})


def test_unknown_argument_is_refused():
    with pytest.raises(ValueError, match="clear_context"):
        arguments_from_dict({"clear_context": True})


# ---- requests -------------------------------------------------------------------------------


def test_fill_request_sets_id_reply_topic_and_deadline():
    request = pb.Request(invoke=pb.Invoke(tool="executeCode"))
    before = int(time.time() * 1000)
    client_module.fill_request(request, "codeq.replies.me", 30.0)
    after = int(time.time() * 1000)
    assert len(request.request_id) == 32
    int(request.request_id, 16)  # uuid4 hex
    assert request.reply_topic == "codeq.replies.me"
    assert before + 30000 <= request.deadline_unix_ms <= after + 30000


def test_fill_request_keeps_id_and_deadline():
    request = pb.Request(request_id="mine", deadline_unix_ms=42, reply_topic="elsewhere")
    client_module.fill_request(request, "codeq.replies.me", 30.0)
    assert (request.request_id, request.deadline_unix_ms) == ("mine", 42)
    # Replies must come where this client listens.
    assert request.reply_topic == "codeq.replies.me"


def test_fresh_ids_differ():
    ids = {client_module.fill_request(pb.Request(), "t", 1).request_id for _ in range(100)}
    assert len(ids) == 100


def test_request_key():
    assert client_module.request_key(pb.Request(request_id="r", session_id="s")) == "s"
    assert client_module.request_key(pb.Request(request_id="r")) == "r"


def test_start_session_request():
    request = client_module.start_session_request(
        "n", 60, 256 << 20, 64, 1.5, 1 << 30, {"A": "1"}, "tok"
    )
    start = request.start_session
    assert request.WhichOneof("operation") == "start_session"
    assert (start.name, start.session_timeout_seconds, start.client_token) == ("n", 60, "tok")
    assert start.limits == pb.Limits(
        memory_bytes=256 << 20, pids=64, cpu_millis=1500, disk_bytes=1 << 30
    )
    assert dict(start.env) == {"A": "1"}
    defaults = client_module.start_session_request(None, None, None, None, None, None, None, None)
    assert defaults.start_session == pb.StartSession(limits=pb.Limits())
    assert defaults.start_session.network == pb.NETWORK_MODE_UNSPECIFIED
    net = client_module.start_session_request(None, None, None, None, None, None, None, None,
                                              "ALLOWLIST", ["files.example.test", "10.0.0.0/8"])
    assert net.start_session.network == pb.NETWORK_MODE_ALLOWLIST
    assert list(net.start_session.network_allow) == ["files.example.test", "10.0.0.0/8"]
    assert defaults.start_session.code_interpreter_identifier == ""
    on = client_module.start_session_request(None, None, None, None, None, None, None, None,
                                             code_interpreter_identifier="analytics")
    assert on.start_session.code_interpreter_identifier == "analytics"
    with pytest.raises(ValueError):
        client_module.start_session_request(None, None, None, None, None, None, None, None, "VPC")
    with pytest.raises(ValueError):
        client_module.start_session_request(None, None, None, None, None, None, None, None,
                                            "ALLOWLIST", "files.example.test")


def test_list_sessions_request():
    request = client_module.list_sessions_request("TERMINATED", 5, "tok")
    assert request.list_sessions == pb.ListSessions(
        status=pb.SESSION_STATUS_TERMINATED, max_results=5, next_token="tok"
    )
    assert client_module.list_sessions_request(None, None, None).HasField("list_sessions")
    with pytest.raises(ValueError):
        client_module.list_sessions_request("RUNNING", None, None)


def test_empty_operations_are_set():
    # An empty message still selects its operation on the wire.
    request = pb.Request(session_id="s", get_session=pb.GetSession())
    decoded = pb.Request()
    decoded.ParseFromString(request.SerializeToString())
    assert decoded.WhichOneof("operation") == "get_session"


def test_invoke_request_timeouts():
    margin = client_module._REPLY_MARGIN_S
    request, wait = client_module.invoke_request("s", "executeCode", {"code": "x"}, None, 300.0)
    assert request.session_id == "s" and request.invoke.tool == "executeCode"
    assert request.invoke.arguments.timeout == 300.0 and wait == 300.0 + margin
    _, wait = client_module.invoke_request("s", "executeCode", {"timeout": 5}, None, 300.0)
    assert wait == 5 + margin
    request, wait = client_module.invoke_request("s", "executeCode", {"timeout": 5}, 2, 300.0)
    assert request.invoke.arguments.timeout == 2 and wait == 2 + margin


# ---- replies --------------------------------------------------------------------------------


def _error_response(code, message):
    result = pb.Result(
        content=[pb.ContentBlock(text=pb.TextBlock(text=message))],
        is_error=True,
        error_code=code,
        error_message=message,
    )
    return pb.Response(result=result)


def test_session_replies():
    assert client_module.session_reply(pb.Response(session=_session()), "getSession")["sessionId"] == "abc123"
    with pytest.raises(codeq_client.SessionError) as e:
        client_module.session_reply(
            _error_response(pb.ERROR_CODE_LIMIT_EXCEEDED, "no worker has room"), "startSession"
        )
    assert e.value.code == "LIMIT_EXCEEDED"
    assert "no worker has room" in str(e.value)
    assert e.value.result["isError"] is True
    with pytest.raises(codeq_client.CodeqError):
        client_module.session_reply(pb.Response(sessions=pb.SessionList()), "getSession")


def test_tool_errors_are_results_not_exceptions():
    d = client_module.invoke_reply(_error_response(pb.ERROR_CODE_NOT_FOUND, "missing.txt"))
    assert d["_codeq_error"]["code"] == "NOT_FOUND"
    with pytest.raises(codeq_client.CodeqError):
        client_module.invoke_reply(pb.Response(session=_session()))


def test_timeout_error_is_the_builtin_too():
    assert issubclass(codeq_client.TimeoutError, TimeoutError)
    assert issubclass(codeq_client.TimeoutError, codeq_client.CodeqError)
    assert issubclass(codeq_client.SessionError, codeq_client.CodeqError)


class _Message:
    """What the reply consumer hands the client, without a broker."""

    def __init__(self, response, request_id, kind):
        self._value = response.SerializeToString()
        self._request_id = request_id
        self._kind = kind

    def value(self):
        return self._value

    def key(self):
        return self._request_id.encode()

    def headers(self):
        return [("request_id", self._request_id.encode()), ("codeq-kind", self._kind.encode())]

    def offset(self):
        return 0


@pytest.fixture
def router():
    """A Client's reply routing, without its Kafka handles."""
    c = client_module.Client.__new__(client_module.Client)
    c._lock = threading.Lock()
    c._pending = {}
    c._completed = client_module.collections.OrderedDict()
    c._claims = client_module.ClaimStore(redis="127.0.0.1:1")  # never connected here
    return c


def _chunk(request_id, sequence, data, stream=pb.STREAM_STDOUT):
    response = pb.Response(
        request_id=request_id, chunk=pb.OutputChunk(stream=stream, data=data, sequence=sequence)
    )
    return _Message(response, request_id, "chunk")


def _final(request_id, text="done"):
    result = pb.Result(content=[pb.ContentBlock(text=pb.TextBlock(text=text))])
    return _Message(pb.Response(request_id=request_id, result=result), request_id, "final")


def test_chunks_in_order_and_copies_dropped(router):
    output, finals = [], []
    router._pending["r1"] = client_module._Call(lambda s, d: output.append((s, d)), finals.append)
    for message in [
        _chunk("r1", 0, b"a"),
        _chunk("r1", 1, b"b"),
        _chunk("r1", 1, b"b"),
        _chunk("r1", 2, b"c", pb.STREAM_STDERR),
        _chunk("r1", 0, b"a"),
        _chunk("r2", 3, b"someone else's"),
        _final("r1"),
        _chunk("r1", 3, b"after the end"),
    ]:
        router._on_message(message)
    assert output == [("stdout", b"a"), ("stdout", b"b"), ("stderr", b"c")]
    assert len(finals) == 1 and finals[0].result.content[0].text.text == "done"


def test_second_final_is_dropped(router):
    finals = []
    router._pending["r1"] = client_module._Call(None, finals.append)
    router._on_message(_final("r1"))
    router._on_message(_final("r1"))
    assert len(finals) == 1
    assert "r1" in router._completed and not router._pending


def test_completed_ids_are_bounded(router, monkeypatch):
    monkeypatch.setattr(client_module, "_COMPLETED_IDS", 3)
    for i in range(5):
        router._pending[f"r{i}"] = client_module._Call(None, lambda _: None)
        router._on_message(_final(f"r{i}"))
    assert list(router._completed) == ["r2", "r3", "r4"]


def test_reply_routed_by_key_without_headers(router):
    class Bare(_Message):
        def headers(self):
            return None

    finals, output = [], []
    router._pending["r1"] = client_module._Call(lambda s, d: output.append(d), finals.append)
    chunk = pb.Response(chunk=pb.OutputChunk(stream=pb.STREAM_STDOUT, data=b"x", sequence=0))
    router._on_message(Bare(chunk, "r1", "chunk"))
    router._on_message(Bare(pb.Response(result=pb.Result()), "r1", "final"))
    assert output == [b"x"] and len(finals) == 1


def test_undecodable_reply_is_skipped(router):
    finals = []
    router._pending["r1"] = client_module._Call(None, finals.append)
    message = _final("r1")
    message._value = b"\xff\xff\xff"
    router._on_message(message)
    assert finals == [] and "r1" in router._pending


# ---- the tool helpers ---------------------------------------------------------------------


class _Recorder(client_module._Tools):
    def __init__(self):
        self.calls = []

    def invoke(self, tool, arguments=None, timeout=None, on_output=None):
        self.calls.append((tool, arguments, timeout))
        return arguments_from_dict(arguments)


def test_tool_helpers_build_agentcore_arguments():
    s = _Recorder()
    args = s.write_files({"a.txt": "hi", "b.bin": b"\x00"})
    assert s.calls[-1][0] == "writeFiles"
    assert [(f.path, f.WhichOneof("data")) for f in args.content] == [("a.txt", "text"), ("b.bin", "blob")]
    assert s.execute_code("x", "javascript", True, timeout=3) == pb.Arguments(
        code="x", language="javascript", clear_context=True
    )
    assert s.calls[-1] == (
        "executeCode",
        {"code": "x", "language": "javascript", "clearContext": True, "runtime": None},
        3,
    )
    assert s.list_files() == pb.Arguments()
    assert s.list_files("out").directory_path == "out"
    assert list(s.read_files(["a", "b"]).paths) == ["a", "b"]
    assert list(s.remove_files(iter(["a"])).paths) == ["a"]
    assert s.get_task("T").task_id == "T" and s.calls[-1][0] == "getTask"
    assert s.stop_task("T").task_id == "T" and s.calls[-1][0] == "stopTask"
    assert s.execute_command("ls").command == "ls"
    assert s.start_command_execution("sleep 9").command == "sleep 9"
    with pytest.raises(TypeError):
        s.read_files("a.txt")


class _TracedRecorder(client_module._Tools):
    def __init__(self):
        self.calls = []

    def invoke(self, tool, arguments=None, timeout=None, on_output=None, **trace):
        self.calls.append((tool, trace))
        return arguments_from_dict(arguments)


def test_tool_helpers_pass_the_trace_context_on():
    s = _TracedRecorder()
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    s.execute_code("x", traceparent=parent, tracestate="k=v")
    assert s.calls[-1] == ("executeCode", {"traceparent": parent, "tracestate": "k=v"})
    s.execute_command("ls", traceparent=parent)
    assert s.calls[-1] == ("executeCommand", {"traceparent": parent})
    s.execute_code("x")
    assert s.calls[-1] == ("executeCode", {})


def test_trace_headers_and_the_results_meta():
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert client_module.trace_headers(None, "k=v") == []
    assert client_module.trace_headers(parent, None) == [("traceparent", parent.encode())]
    assert client_module.trace_headers(parent, "k=v") == [
        ("traceparent", parent.encode()), ("tracestate", b"k=v")]
    assert client_module.with_trace({"isError": False}, {}) == {"isError": False}
    assert client_module.with_trace({"isError": False}, {"traceparent": parent}) == {
        "isError": False, "_meta": {"traceparent": parent}}


# ---- the generated module ----------------------------------------------------------------


@pytest.mark.skipif(shutil.which("protoc") is None, reason="protoc is not installed")
def test_codeq_pb2_is_protoc_output(tmp_path):
    schemas = PACKAGE_ROOT.parents[1] / "schemas"
    subprocess.run(
        ["protoc", f"-I{schemas}", f"--python_out={tmp_path}", str(schemas / "codeq.proto")],
        check=True,
    )
    generated = (tmp_path / "codeq_pb2.py").read_bytes()
    assert (PACKAGE_ROOT / "codeq_client" / "codeq_pb2.py").read_bytes() == generated


# ---- claims.py: what is refused or left alone before Redis is needed ----------------


def test_small_requests_and_replies_stay_as_they_are():
    from codeq_client.claims import ClaimStore
    store = ClaimStore(redis="127.0.0.1:1", threshold=1024)
    req = pb.Request(request_id="r", session_id="s", invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code="1 + 1")))
    assert store.outgoing(req) is req
    reply = pb.Response(request_id="r", result=pb.Result())
    assert store.incoming(reply) is reply


def test_requests_the_fleet_would_refuse_are_refused_before_redis():
    from codeq_client.claims import ClaimError, ClaimStore
    store = ClaimStore(redis="127.0.0.1:1", threshold=1024)
    big_file = pb.Request(request_id="r", session_id="s", invoke=pb.Invoke(
        tool="writeFiles", arguments=pb.Arguments(content=[
            pb.FileContent(path="a", blob=b"\0" * ((100 << 20) + 1))])))
    with pytest.raises(ClaimError) as e:
        store.outgoing(big_file)
    assert e.value.code == "INVALID_ARGUMENT" and "100 MB" in str(e.value)
    big_start = pb.Request(request_id="r", start_session=pb.StartSession(
        env={"K": "v" * 4096}))
    with pytest.raises(ClaimError) as e:
        store.outgoing(big_start)
    assert e.value.code == "LIMIT_EXCEEDED"
    # Redis unreachable: a clear error, not a hang.
    big_code = pb.Request(request_id="r", session_id="s", invoke=pb.Invoke(
        tool="executeCode", arguments=pb.Arguments(code="x" * 4096)))
    with pytest.raises(ClaimError) as e:
        store.outgoing(big_code)
    assert e.value.code == "INTERNAL" and "127.0.0.1:1" in str(e.value)


def test_hostile_reply_references_are_refused_before_redis():
    from codeq_client.claims import ClaimError, ClaimStore
    store = ClaimStore(redis="127.0.0.1:1")
    for claim in (pb.Claim(id="../x", size=1), pb.Claim(id="A" * 32, size=1),
                  pb.Claim(id="0" * 32, size=0), pb.Claim(id="0" * 32, size=(200 << 20) + 1)):
        with pytest.raises(ClaimError) as e:
            store.incoming(pb.Response(request_id="r", claim=claim))
        assert e.value.code == "INVALID_ARGUMENT"


# ---- claims.py: Redis authentication and TLS settings ---------------------------------

REDIS_VARIABLES = ("CODEQ_REDIS_USER", "CODEQ_REDIS_PASSWORD", "CODEQ_REDIS_PASSWORD_FILE",
                   "CODEQ_REDIS_TLS", "CODEQ_REDIS_TLS_CA", "CODEQ_REDIS_TLS_CERT",
                   "CODEQ_REDIS_TLS_KEY", "CODEQ_REDIS_TLS_SERVER_NAME")


@pytest.fixture
def no_redis_variables(monkeypatch):
    for name in REDIS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_redis_settings_default_to_the_fleets_variables(no_redis_variables, tmp_path):
    from codeq_client.claims import ClaimStore
    secret = tmp_path / "password"
    secret.write_text("p4ss\r\n")  # the line end is not part of it, as for the daemons
    env = no_redis_variables
    env.setenv("CODEQ_REDIS_USER", "fleet")
    env.setenv("CODEQ_REDIS_PASSWORD_FILE", str(secret))
    env.setenv("CODEQ_REDIS_TLS", "yes")
    env.setenv("CODEQ_REDIS_TLS_SERVER_NAME", "redis.internal")
    store = ClaimStore(redis="127.0.0.1:1")
    assert store.username == "fleet" and store.tls is True
    assert store._tls_server_name == "redis.internal"
    assert store._current_password() == "p4ss"
    # Arguments win over the variables (None takes the variable's value).
    env.delenv("CODEQ_REDIS_PASSWORD_FILE")
    env.delenv("CODEQ_REDIS_TLS_SERVER_NAME")
    store = ClaimStore(redis="127.0.0.1:1", username="other", password="x", tls="off")
    assert store.username == "other" and store.tls is False and store._current_password() == "x"


def test_redis_settings_that_cannot_be_meant_are_refused(no_redis_variables):
    from codeq_client.claims import ClaimStore
    refused = [
        ({"tls": "maybe"}, "neither on nor off"),
        ({"tls_ca": "/ca.pem"}, "TLS is off"),
        ({"tls": True, "tls_cert": "/c.pem"}, "go together"),
        ({"password": "a", "password_file": "/p"}, "give one"),
        ({"username": "u"}, "needs a password"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError, match=message):
            ClaimStore(redis="127.0.0.1:1", **kwargs)
