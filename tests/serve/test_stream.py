"""tests/serve/test_stream.py - InvokeCodeInterpreter's output streamed as `result` events
(x-codeq-stream: output, added to boto3's request in a before-sign handler, as the
timeout header is) against the real `codeq serve` and real sandboxes.

A chunk event is a result with content text and structuredContent stdout or stderr and
neither isError nor exitCode; the last event is the call's complete result, as without
the header (then it is the only one)."""
import http.client
import json
import socket
import struct
import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, client, results
from test_http import signed, still_serving

ID = "codeq.default"
EVENT = "before-sign.bedrock-agentcore.InvokeCodeInterpreter"
LIVE_CAP = 1024 * 1024 + 512 * 1024  # the worker streams a stream's first 1 MiB and last 512 KiB


@pytest.fixture
def session(alpha):
    sid = alpha.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]
    yield sid
    alpha.stop_code_interpreter_session(codeInterpreterIdentifier=ID, sessionId=sid)


@pytest.fixture
def streaming(alpha):
    """alpha's invokes carry x-codeq-stream: output while the fixture is in use."""
    def add_header(request, **kwargs):
        request.headers["x-codeq-stream"] = "output"
    alpha.meta.events.register_first(EVENT, add_header)
    yield alpha
    alpha.meta.events.unregister(EVENT, add_header)


def invoke(client, sid, name, arguments):
    r = client.invoke_code_interpreter(codeInterpreterIdentifier=ID, sessionId=sid, name=name,
                                       arguments=arguments)
    assert r["sessionId"] == sid
    return results(r)


def is_chunk(event):
    sc = event.get("structuredContent", {})
    return "isError" not in event and "exitCode" not in sc and ("stdout" in sc or "stderr" in sc)


def split(events):
    """The chunk events and the final result; the final one is last and only last."""
    assert events, "no result event"
    *chunks, final = events
    assert all(is_chunk(c) for c in chunks), chunks
    assert not is_chunk(final) and isinstance(final.get("isError"), bool), final
    for c in chunks:
        sc = c["structuredContent"]
        assert len(sc) == 1, c  # one stream per chunk
        (text,) = sc.values()
        assert c["content"] == [{"type": "text", "text": text}], c
    return chunks, final


def joined(chunks, stream):
    return "".join(c["structuredContent"].get(stream, "") for c in chunks)


CELL = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')\n"


def test_chunks_while_running(streaming, session):
    chunks, final = split(invoke(streaming, session, "executeCode", {"code": CELL}))
    assert final["isError"] is False
    assert final["structuredContent"]["stdout"] == "first\nsecond\n"
    # Printed two seconds apart: two chunks at least, which together are the stdout.
    assert len(chunks) >= 2, chunks
    assert joined(chunks, "stdout") == final["structuredContent"]["stdout"]
    assert chunks[0]["structuredContent"]["stdout"].startswith("first")
    # A tool that prints nothing answers its result alone, as without the header.
    events = invoke(streaming, session, "writeFiles", {"content": [{"path": "a.txt", "text": "x"}]})
    assert len(events) == 1 and events[0]["isError"] is False, events


def test_without_header_one_event(alpha, session):
    events = invoke(alpha, session, "executeCode", {"code": CELL})
    assert len(events) == 1, events
    assert events[0]["isError"] is False
    assert events[0]["structuredContent"]["stdout"] == "first\nsecond\n"


def test_stderr_labeled(streaming, session):
    code = "import sys, time\nprint('out', flush=True)\ntime.sleep(1)\nsys.stderr.write('err\\n')\n"
    chunks, final = split(invoke(streaming, session, "executeCode", {"code": code}))
    assert joined(chunks, "stdout") == "out\n"
    assert joined(chunks, "stderr") == "err\n"
    assert final["structuredContent"]["stderr"] == "err\n"
    # executeCommand keeps the streams apart too, and its exit code is the final result's.
    chunks, final = split(invoke(streaming, session, "executeCommand",
                                 {"command": "echo out; sleep 1; echo err >&2; exit 3"}))
    assert joined(chunks, "stdout") == "out\n" and joined(chunks, "stderr") == "err\n", chunks
    assert final["structuredContent"]["exitCode"] == 3


def test_split_characters_whole(streaming, session):
    """A character split between two writes of a command comes whole in the chunks."""
    cmd = "printf '\\303'; sleep 1; printf '\\251\\342\\202'; sleep 1; printf '\\254\\n'"
    chunks, final = split(invoke(streaming, session, "executeCommand", {"command": cmd}))
    assert final["structuredContent"]["stdout"] == "\u00e9\u20ac\n"
    assert joined(chunks, "stdout") == "\u00e9\u20ac\n", chunks


def test_huge_output_bounded(streaming, session):
    """50 MB printed: the chunks carry what the worker streams (the first 1 MiB and the
    last 512 KiB, with a note of the cut), in events of bounded size; the final result
    is cut as always, and the server serves on."""
    code = "import sys\nfor _ in range(50):\n    sys.stdout.write('y' * 1_000_000)\n"
    chunks, final = split(invoke(streaming, session, "executeCode", {"code": code}))
    out = joined(chunks, "stdout")
    assert 1024 * 1024 <= len(out) <= LIVE_CAP + 4096, len(out)  # and codeq's note of the cut
    assert out.count("y") >= LIVE_CAP - 1024 and "output too long" in out, out[-300:]
    assert all(len(json.dumps(c)) < 300 * 1024 for c in chunks)
    assert "output too long" in final["structuredContent"]["stdout"]
    assert len(final["structuredContent"]["stdout"]) < 2 * 1024 * 1024
    still_serving(streaming)


def test_header_value_and_signature(server, keys, alpha, session):
    def bogus(request, **kwargs):
        request.headers["x-codeq-stream"] = "everything"
    alpha.meta.events.register_first(EVENT, bogus)
    try:
        with pytest.raises(ClientError) as e:
            invoke(alpha, session, "executeCode", {"code": "1"})
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert "x-codeq-stream" in e.value.response["Error"]["Message"]
    finally:
        alpha.meta.events.unregister(EVENT, bogus)
    # The header must be signed, as every header codeq acts on.
    body = json.dumps({"name": "executeCode", "arguments": {"code": "1"}}).encode()
    status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                body, {"Content-Type": "application/json",
                                       "x-amzn-code-interpreter-session-id": session},
                                after_sign={"x-codeq-stream": "output"})
    assert (status, etype) == (403, "AccessDeniedException"), out


def test_silent_cell_outlives_idle_timeout():
    """A stream whose cell prints nothing for longer than --idle-timeout stays open: the
    chunk after the silence and the result still come."""
    s = Server(["--no-auth", "--warm-pool", "0", "--idle-timeout", "2"])
    try:
        c = client(s, ("unused", "unused"))
        sid = c.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]

        def add_header(request, **kwargs):
            request.headers["x-codeq-stream"] = "output"
        c.meta.events.register_first(EVENT, add_header)
        code = "import time\nprint('before', flush=True)\ntime.sleep(5)\nprint('after')\n"
        chunks, final = split(invoke(c, sid, "executeCode", {"code": code}))
        assert joined(chunks, "stdout") == "before\nafter\n", chunks
        assert final["structuredContent"]["stdout"] == "before\nafter\n"
    finally:
        assert s.stop() == 0


def frames(data):
    """The JSON payloads of an event stream's events, in order."""
    out = []
    while data:
        total, headers_len = struct.unpack(">II", data[:8])
        out.append(json.loads(data[12 + headers_len:total - 4]))
        data = data[total:]
    return out


def test_slow_reader_bounded():
    """A client that reads nothing while the cell prints 2 x 3 MB: what does not fit in
    the server's bounded buffers is left out of the chunks, and a note on stderr says
    so; the final result is whole (cut as always) and the server serves on."""
    s = Server(["--no-auth", "--warm-pool", "0"])
    try:
        c = client(s, ("unused", "unused"))
        sid = c.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]
        code = ("import sys\nfor _ in range(30):\n    sys.stdout.write('o' * 100_000)\n"
                "    sys.stderr.write('e' * 100_000)\n")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", s.port))
        conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=120)
        conn.sock = sock
        conn.request("POST", f"/code-interpreters/{ID}/tools/invoke",
                     body=json.dumps({"name": "executeCode", "arguments": {"code": code}}).encode(),
                     headers={"x-amzn-code-interpreter-session-id": sid, "x-codeq-stream": "output"})
        time.sleep(10)  # reads nothing meanwhile: the cell is done long before
        r = conn.getresponse()
        assert r.status == 200
        chunks, final = split(frames(r.read()))
        conn.close()
        assert final["isError"] is False
        assert "output too long" in final["structuredContent"]["stdout"]
        assert "output too long" in final["structuredContent"]["stderr"]
        err = joined(chunks, "stderr")
        assert "bytes of output not streamed (the client reads too slowly)" in err, err[-500:]
        streamed = len(joined(chunks, "stdout")) + len(err)
        assert streamed < 2 * LIVE_CAP, streamed  # some left out
        c.list_code_interpreter_sessions(codeInterpreterIdentifier=ID)
    finally:
        assert s.stop() == 0


def body_of(raw):
    """A chunked HTTP response's body so far (its chunk framing taken off)."""
    rest = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    body = b""
    while b"\r\n" in rest:
        size_line, tail = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0 or len(tail) < size:
            body += tail[:size]
            break
        body += tail[:size]
        rest = tail[size + 2:]
    return body


def test_abandoned_stream_then_sigterm():
    """A client that hangs up in the middle of a streamed call: the call runs to its end
    (the session is still usable) and SIGTERM then stops the server cleanly."""
    import signal
    s = Server(["--no-auth", "--warm-pool", "0"])
    try:
        c = client(s, ("unused", "unused"))
        sid = c.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]
        code = "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(1)\nleft = 'done'\n"
        body = json.dumps({"name": "executeCode", "arguments": {"code": code}}).encode()
        head = (f"POST /code-interpreters/{ID}/tools/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"x-amzn-code-interpreter-session-id: {sid}\r\nx-codeq-stream: output\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=60)
        sock.sendall(head + body)
        got = b""
        while b"\r\n\r\n" not in got or len(body_of(got)) < 12 or \
                len(body_of(got)) < struct.unpack(">I", body_of(got)[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, got
            got += chunk
        sock.close()
        first = frames(body_of(got)[:struct.unpack(">I", body_of(got)[:4])[0]])[0]
        assert is_chunk(first), first  # hung up while the cell still ran
        # The cell ran on to its end: its variable is there.
        (final,) = invoke(c, sid, "executeCode", {"code": "print(left)"})
        assert final["structuredContent"]["stdout"] == "done\n", final
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(60) == 0
    finally:
        s.stop()
