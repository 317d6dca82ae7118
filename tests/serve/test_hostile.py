"""tests/serve/test_hostile.py - hostile HTTP against `codeq serve`: oversized bodies,
slowloris (headers or a body a byte at a time), junk in Accept and other headers, a
client that leaves in the middle of a call, traversal and NUL bytes in session ids,
invalid UTF-8 in bodies and header values, thousands of connections held open. Each
gets a clear answer or a closed connection, and the server serves on without leaking
descriptors or threads (/proc/PID/fd and /proc/PID/task before and after).

Most of these speak raw bytes to a server of their own started with --no-auth, so that
what they send reaches the code under test rather than stopping at a signature; the
signed server of conftest.py gets the junk that must go through SigV4's parser.
"""
import http.client
import json
import os
import resource
import signal
import socket
import struct
import threading
import time
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer

from conftest import Server
from test_http import signed

ID = "codeq.default"


def fds(server):
    return len(os.listdir(f"/proc/{server.proc.pid}/fd"))


def threads(server):
    return len(os.listdir(f"/proc/{server.proc.pid}/task"))


def quiet(server):
    """The server's descriptor and thread counts once they stop changing (a connection
    just answered is closed a moment after its answer)."""
    last = None
    for _ in range(50):
        now = (fds(server), threads(server))
        if now == last:
            return now
        last = now
        time.sleep(0.2)
    return last


def settles(server, fd_count, thread_count, timeout=60):
    """Whether the server's descriptors and threads come back to these counts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fds(server) <= fd_count and threads(server) <= thread_count:
            return True
        time.sleep(0.2)
    return False


def exchange(port, data, timeout=30):
    """Sends data whole, returns (status line, headers, body) of the answer; (b"", ...)
    when the server closed the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        chunks = []
        try:
            s.sendall(data)
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except (BrokenPipeError, ConnectionResetError):
            pass
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return lines[0], headers, body


def request(method, path, body=b"", headers=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n".encode() + headers
            + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def serving(server, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    c.request("POST", f"/code-interpreters/{ID}/sessions/list", body=b"{}")
    r = c.getresponse()
    r.read()
    c.close()
    return r.status == 200


def start(server):
    status, _, body = exchange(server.port, request("PUT", f"/code-interpreters/{ID}/sessions/start",
                                                      b"{}"))
    assert status.startswith(b"HTTP/1.1 200"), (status, body)
    return json.loads(body)["sessionId"]


def invoke(server, sid, code, extra=b""):
    body = json.dumps({"name": "executeCode", "arguments": {"code": code}}).encode()
    return exchange(server.port, request("POST", f"/code-interpreters/{ID}/tools/invoke", body,
                                         b"x-amzn-code-interpreter-session-id: " + sid.encode()
                                         + b"\r\n" + extra))


def es_frame(event_type, payload):
    """An event stream message, as AWS frames them (prelude, headers, payload, CRCs)."""
    headers = b""
    for name, value in ((":message-type", "event"), (":event-type", event_type)):
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) \
            + value.encode()
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def events(body):
    buf = EventStreamBuffer()
    buf.add_data(body)
    return [(m.headers.get(":event-type"), json.loads(m.payload)) for m in buf]


@pytest.fixture(scope="module")
def open_server():
    s = Server(["--no-auth", "--warm-pool", "0", "--max-body", "64K", "--idle-timeout", "3"])
    yield s
    assert s.stop() == 0


class Slow:
    """A client that sends `data` a byte at a time, every `pause` seconds, from a thread
    of its own, and notes when the server ended the connection."""

    def __init__(self, port, data, pause=0.25, first=b""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(first)
        self.data, self.pause = data, pause
        self.cut_after = None  # bytes sent when the server closed
        self.answer = b""
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        for i in range(len(self.data)):
            try:
                self.sock.sendall(self.data[i:i + 1])
                self.sock.settimeout(self.pause)
                got = self.sock.recv(4096)
                # Anything readable: an answer, or the end of the connection.
                self.answer += got
                self.cut_after = i + 1
                return
            except socket.timeout:
                continue
            except OSError:
                self.cut_after = i + 1
                return

    def wait(self, timeout):
        self.thread.join(timeout)
        self.sock.close()
        return self.cut_after


SLOW_HEADERS = (f"POST /code-interpreters/{ID}/sessions/list HTTP/1.1\r\nHost: a\r\n".encode()
                + b"".join(b"X-Slow-%d: %s\r\n" % (i, b"s" * 30) for i in range(20)) + b"\r\n")


def test_oversized_bodies(open_server):
    s = open_server
    base_fds, base_threads = quiet(s)
    path = f"/code-interpreters/{ID}/sessions/list"
    # At the limit (64K): handled; one byte past it: 413 with why.
    status, _, body = exchange(s.port, request("POST", path, b"{}" + b" " * (65536 - 2)))
    assert status.startswith(b"HTTP/1.1 200"), (status, body)
    status, _, body = exchange(s.port, request("POST", path, b"{}" + b" " * (65536 - 1)))
    assert status.startswith(b"HTTP/1.1 413") and b"larger than 65536 bytes" in body, (status, body)
    # Chunked, with no length to check up front.
    chunks = b"".join(b"%x\r\n%s\r\n" % (4096, b" " * 4096) for _ in range(40)) + b"0\r\n\r\n"
    status, _, body = exchange(s.port, f"POST {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n".encode() + chunks)
    assert status.startswith(b"HTTP/1.1 413") and b"larger than" in body, (status, body)
    # A client that waits for 100 Continue before a declared 10 GB gets its 413 at once,
    # not an invitation to send them.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(f"PUT /code-interpreters/{ID}/sessions/start HTTP/1.1\r\nHost: a\r\n"
                  "Content-Length: 10000000000\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = c.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"connection: close" in answer.lower() and b"larger than" in answer
    # ... and one within the limit still gets its 100 Continue.
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(f"POST {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                  "Expect: 100-continue\r\n\r\n".encode())
        assert c.recv(65536).startswith(b"HTTP/1.1 100"), "no 100 Continue"
        c.sendall(b"{}")
        assert c.recv(65536).startswith(b"HTTP/1.1 200")
    # Headers past libmicrohttpd's buffer (32 KiB): one long, or thousands of short ones.
    for headers in (b"X-Big: " + b"b" * 100000 + b"\r\n",
                    b"".join(b"X-H%d: v\r\n" % i for i in range(5000))):
        status, _, body = exchange(s.port, request("POST", path, b"{}", headers))
        assert status.startswith(b"HTTP/1.1 431"), (status, body[:200])
    assert serving(s)
    assert settles(s, base_fds, base_threads)


def test_slowloris_is_cut_and_others_are_served(open_server):
    """Headers a byte every quarter second: never idle, so libmicrohttpd's idle timeout
    alone would keep it for ever. The guard cuts it after --idle-timeout (3 s) while
    another client is served."""
    s = open_server
    base_fds, base_threads = quiet(s)
    slow = Slow(s.port, SLOW_HEADERS)  # 700 bytes: 175 s if never cut
    time.sleep(1)
    assert serving(s, timeout=10)
    cut = slow.wait(60)
    assert cut is not None and cut < len(SLOW_HEADERS), "the slow client was never cut off"
    assert not slow.answer.startswith(b"HTTP/1.1 200"), slow.answer
    assert settles(s, base_fds, base_threads)


def test_slowloris_cannot_hold_every_slot():
    """As many slow clients as --max-connections: once they are cut, others get in."""
    s = Server(["--no-auth", "--warm-pool", "0", "--idle-timeout", "3", "--max-connections", "4"])
    try:
        slow = [Slow(s.port, SLOW_HEADERS) for _ in range(4)]
        deadline = time.monotonic() + 30
        while True:
            try:
                if serving(s, timeout=5):
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "slow clients held every connection"
            time.sleep(0.5)
        assert all(c.wait(30) is not None for c in slow)
    finally:
        assert s.stop() == 0


def test_slow_body_is_cut(open_server):
    """Headers at once, then a body a byte at a time (slower than 4 KiB/s)."""
    s = open_server
    head = (f"POST /code-interpreters/{ID}/sessions/list HTTP/1.1\r\nHost: a\r\n"
            "Content-Length: 60000\r\n\r\n").encode()
    slow = Slow(s.port, b" " * 60000, first=head)
    cut = slow.wait(60)
    assert cut is not None and cut < 60000, "the slow body was never cut off"
    assert serving(s)


def test_sigterm_is_not_held_by_a_slow_client():
    """Stopping waits for the requests in progress; a slow client's never ends by itself."""
    s = Server(["--no-auth", "--warm-pool", "0", "--idle-timeout", "3"])
    # The request line at once: from then on the request is in progress.
    line = SLOW_HEADERS.index(b"\r\n") + 2
    slow = Slow(s.port, SLOW_HEADERS[line:], first=SLOW_HEADERS[:line])
    time.sleep(1)
    s.proc.send_signal(signal.SIGTERM)
    try:
        assert s.proc.wait(timeout=30) == 0
    finally:
        slow.wait(1)
        s.stop()


@pytest.mark.parametrize("accept", [
    b"text/event-stream",
    b"application/json",
    b"application/vnd.amazon.eventstream;q=abc, */*;q=-1",
    b"\xff\xfe\x80 not/utf-8",
    b"x" * 8000,
])
def test_accept_junk(open_server, accept):
    """The answer is AgentCore's event stream whatever the client says it accepts."""
    s = open_server
    sid = start(s)
    try:
        status, headers, body = invoke(s, sid, "6 * 7", b"Accept: " + accept + b"\r\n")
        assert status.startswith(b"HTTP/1.1 200"), (status, body[:200])
        assert headers["content-type"] == "application/vnd.amazon.eventstream"
        [(kind, result)] = events(body)
        assert kind == "result" and result["content"][0]["text"] == "42", result
    finally:
        exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}"))


def test_event_stream_sent_as_a_request_body(open_server):
    """A client that sends what it should receive: refused as a body that is not JSON."""
    s = open_server
    sid = start(s)
    frame = es_frame("result", b'{"content": []}')
    assert events(frame) == [("result", {"content": []})]  # a frame botocore reads
    try:
        status, headers, body = exchange(s.port, request(
            "POST", f"/code-interpreters/{ID}/tools/invoke", frame,
            b"Content-Type: application/vnd.amazon.eventstream\r\n"
            b"x-amzn-code-interpreter-session-id: " + sid.encode() + b"\r\n"))
        assert status.startswith(b"HTTP/1.1 400"), (status, body)
        assert headers["x-amzn-errortype"] == "ValidationException"
        assert json.loads(body)["reason"] == "CannotParse"
    finally:
        exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}"))


def test_client_leaves_during_a_call(open_server):
    """The client hangs up while its cell runs: the cell ends, its answer goes nowhere,
    the session takes the next call, and nothing of the connection stays behind."""
    s = open_server
    sid = start(s)
    invoke(s, sid, "0")  # the session's kernel is up (it holds descriptors of its own)
    base_fds, base_threads = quiet(s)
    try:
        body = json.dumps({"name": "executeCode",
                           "arguments": {"code": "import time; time.sleep(2); y = 1"}}).encode()
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(request("POST", f"/code-interpreters/{ID}/tools/invoke", body,
                              b"x-amzn-code-interpreter-session-id: " + sid.encode() + b"\r\n"))
            time.sleep(0.5)
        status, _, out = invoke(s, sid, "y + 41")
        assert status.startswith(b"HTTP/1.1 200")
        [(_, result)] = events(out)
        assert result["content"][0]["text"] == "42", result
        assert settles(s, base_fds, base_threads)
    finally:
        exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}"))


def test_session_id_traversal_and_nul(open_server):
    s = open_server
    sid = start(s)
    other = start(s)
    try:
        for bad in (f"{sid}%00junk", f"{sid}%00", f"..%2F{sid}", f"{sid}%2F..", f"{sid}/..",
                    "..", "%2e%2e", "%2F", f"..%2F{other}", "%C0%AE%C0%AE", "%ff", f"{sid}%0d%0a"):
            for method, verb in (("GET", "get"), ("PUT", "stop")):
                status, headers, body = exchange(s.port, request(
                    method, f"/code-interpreters/{ID}/sessions/{verb}?sessionId={bad}"))
                assert status.split()[1] in (b"400", b"404"), (bad, verb, status, body)
        for bad in (f"../{sid}", f"{sid}/..", "..", f"{sid}%00", f"..%2F{other}", "\u00ff" + sid):
            status, _, body = invoke(s, sid, "1", b"")  # the real one works
            assert status.startswith(b"HTTP/1.1 200")
            status, headers, body = exchange(s.port, request(
                "POST", f"/code-interpreters/{ID}/tools/invoke",
                json.dumps({"name": "executeCode", "arguments": {"code": "1"}}).encode(),
                b"x-amzn-code-interpreter-session-id: " + bad.encode("utf-8") + b"\r\n"))
            assert status.startswith(b"HTTP/1.1 404"), (bad, status, body)
            assert headers["x-amzn-errortype"] == "ResourceNotFoundException"
            json.loads(body)
        # No spelling stopped either session.
        for i in (sid, other):
            status, _, body = exchange(s.port, request(
                "GET", f"/code-interpreters/{ID}/sessions/get?sessionId={i}"))
            assert json.loads(body)["status"] == "READY", body
    finally:
        for i in (sid, other):
            exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={i}"))


INVALID_UTF8 = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xff", b"a\xf5\x80\x80\x80"]


def test_invalid_utf8_bodies(open_server):
    """Every body with bytes that are not UTF-8, or escapes of what JSON strings must not
    carry (a lone surrogate, NUL): 400 ValidationException, a JSON answer in UTF-8."""
    s = open_server
    sid = start(s)
    try:
        bad_strings = [b'"x' + b + b'"' for b in INVALID_UTF8] + [b'"\\ud800"', b'"a\\u0000b"']
        for v in bad_strings:
            for method, path, body, extra in (
                    ("PUT", f"/code-interpreters/{ID}/sessions/start", b'{"name": ' + v + b"}", b""),
                    ("POST", f"/code-interpreters/{ID}/sessions/list", b'{"nextToken": ' + v + b"}", b""),
                    ("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}",
                     b'{"clientToken": ' + v + b"}", b""),
                    ("POST", f"/code-interpreters/{ID}/tools/invoke",
                     b'{"name": "executeCode", "arguments": {"code": ' + v + b"}}",
                     b"x-amzn-code-interpreter-session-id: " + sid.encode() + b"\r\n")):
                status, headers, out = exchange(s.port, request(method, path, body, extra))
                assert status.startswith(b"HTTP/1.1 400"), (v, path, status, out)
                assert headers["x-amzn-errortype"] == "ValidationException"
                assert json.loads(out.decode("utf-8"))["reason"] == "CannotParse", out
        status, _, body = exchange(s.port, request(
            "GET", f"/code-interpreters/{ID}/sessions/get?sessionId={sid}"))
        assert json.loads(body)["status"] == "READY", body
    finally:
        exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}"))


def test_invalid_utf8_header_values(open_server):
    s = open_server
    sid = start(s)
    try:
        for b in INVALID_UTF8:
            # In the session id: no such session, said in valid JSON.
            status, headers, out = exchange(s.port, request(
                "POST", f"/code-interpreters/{ID}/tools/invoke",
                b'{"name": "executeCode", "arguments": {"code": "1"}}',
                b"x-amzn-code-interpreter-session-id: " + sid.encode() + b + b"\r\n"))
            assert status.startswith(b"HTTP/1.1 404"), (b, status, out)
            json.loads(out.decode("utf-8"))
            # In codeq's timeout header: refused, in valid JSON.
            status, headers, out = invoke(s, sid, "1", b"x-codeq-timeout-seconds: 5" + b + b"\r\n")
            assert status.startswith(b"HTTP/1.1 400"), (b, status, out)
            assert "x-codeq-timeout-seconds" in json.loads(out.decode("utf-8"))["message"]
            # In a header nobody reads: the call runs.
            status, headers, out = invoke(s, sid, "6 * 7", b"X-Junk: " + b + b"\r\n")
            assert status.startswith(b"HTTP/1.1 200"), (b, status, out)
            assert events(out)[0][1]["content"][0]["text"] == "42"
        assert serving(s)
    finally:
        exchange(s.port, request("PUT", f"/code-interpreters/{ID}/sessions/stop?sessionId={sid}"))


@pytest.mark.parametrize("authorization", [
    b"AWS4-HMAC-SHA256 \xff\xfe\x80",
    b"AWS4-HMAC-SHA256 Credential=" + b"A" * 20000,
    b"AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f/g/h/i, SignedHeaders=, Signature=",
    b"AWS4-HMAC-SHA256 Credential=cqk_x/20260101/us-east-1/bedrock-agentcore/aws4_request, "
    b"SignedHeaders=host;host;host;" + b"x;" * 2000 + b", Signature=" + b"0" * 64,
    b", , , ,",
    b"AWS4-HMAC-SHA256",
])
def test_junk_authorization(server, alpha, authorization):
    """What reaches the SigV4 parser of the signed server: 403 AccessDeniedException."""
    status, headers, body = exchange(server.port, request(
        "POST", f"/code-interpreters/{ID}/sessions/list", b"{}",
        b"Authorization: " + authorization + b"\r\nX-Amz-Date: 20260101T000000Z\r\n"))
    assert status.startswith(b"HTTP/1.1 403"), (status, body[:200])
    assert headers["x-amzn-errortype"] == "AccessDeniedException"
    json.loads(body.decode("utf-8"))
    assert "items" in alpha.list_code_interpreter_sessions(codeInterpreterIdentifier=ID)


def test_signed_junk_accept_and_ids(server, keys, alpha):
    """The same junk, signed by botocore: what the signature covers is checked first, and
    what passes it gets the answers of the unsigned tests above."""
    sid = alpha.start_code_interpreter_session(codeInterpreterIdentifier=ID)["sessionId"]
    try:
        body = json.dumps({"name": "executeCode", "arguments": {"code": "6 * 7"}}).encode()
        status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                    body, {"Content-Type": "application/json", "Accept": "text/event-stream",
                                           "x-amzn-code-interpreter-session-id": sid})
        assert status == 200 and events(out)[0][1]["content"][0]["text"] == "42"
        for bad in (f"../{sid}", f"{sid}/..", ".."):
            status, etype, out = signed(server, keys["alpha"], "POST", f"/code-interpreters/{ID}/tools/invoke",
                                        body, {"x-amzn-code-interpreter-session-id": bad})
            assert (status, etype) == (404, "ResourceNotFoundException"), (bad, out)
        status, etype, out = signed(server, keys["alpha"], "GET",
                                    f"/code-interpreters/{ID}/sessions/get?sessionId={sid}%00junk")
        assert status in (400, 403) and status != 200, out
        assert alpha.get_code_interpreter_session(codeInterpreterIdentifier=ID,
                                                  sessionId=sid)["status"] == "READY"
    finally:
        alpha.stop_code_interpreter_session(codeInterpreterIdentifier=ID, sessionId=sid)


def _hold(port, n):
    socks = []
    for _ in range(n):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return socks


def _room_for(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= n, "too few open files for the test"


def test_two_thousand_connections_past_the_limit():
    """2000 sockets held against --max-connections 256: the ones past it are closed at
    accept, nothing crashes, and once they go the server's descriptors and threads are
    what they were and it answers."""
    _room_for(2500)
    s = Server(["--no-auth", "--warm-pool", "0"])
    try:
        assert serving(s)
        base_fds, base_threads = quiet(s)
        socks = _hold(s.port, 2000)
        time.sleep(1)
        assert s.proc.poll() is None
        assert fds(s) <= base_fds + 256 + 2, fds(s)
        # Past the limit: refused, not left hanging.
        try:
            serving(s, timeout=10)
        except (ConnectionError, OSError):
            pass
        for c in socks:
            c.close()
        assert settles(s, base_fds, base_threads), (fds(s), base_fds, threads(s), base_threads)
        assert serving(s)
    finally:
        assert s.stop() == 0


def test_two_thousand_connections_within_the_limit():
    """2000 sockets held against --max-connections 2500, by a server started with the
    common soft limit of 1024 open files (it raises it towards the hard one): every one
    is accepted and a further client is served while they are held."""
    _room_for(2500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 2600, f"the hard limit {hard} leaves no room for this test"
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        s = Server(["--no-auth", "--warm-pool", "0", "--max-connections", "2500"])
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert serving(s)
        base_fds, base_threads = quiet(s)
        socks = _hold(s.port, 2000)
        # A thread each: on a loaded machine the listener takes a while to start them.
        deadline = time.monotonic() + 120
        while fds(s) < base_fds + 2000 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert fds(s) >= base_fds + 2000, fds(s)
        assert serving(s, timeout=30)
        for c in socks:
            c.close()
        assert settles(s, base_fds, base_threads), (fds(s), base_fds, threads(s), base_threads)
        assert serving(s)
    finally:
        assert s.stop() == 0
