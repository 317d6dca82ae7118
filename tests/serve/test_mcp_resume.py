"""tests/serve/test_mcp_resume.py - a client whose /mcp stream breaks in the middle of a
call reconnects with GET and Last-Event-ID, and gets what it missed and what follows:
raw HTTP, and the official MCP Python SDK through a proxy that cuts its stream."""
import http.client
import json
import socket
import threading
import time
import uuid

import pytest

from conftest import make_key
from test_mcp_http import call, initialize, messages, request, sdk, token


@pytest.fixture(scope="module")
def mcp_keys(keys):
    """Tenants of this module's own on the shared server (test_mcp_http.py has its own)."""
    return {"alpha": make_key(keys["path"], "mcp-resume-alpha"),
            "beta": make_key(keys["path"], "mcp-resume-beta")}


CELL = "import time\nprint('a', flush=True)\ntime.sleep(3)\nprint('b', flush=True)"


def open_call(server, key, sid, rid, code):
    """A tools/call with a progress token on a raw socket, read up to its first event:
    (socket, that event's id)."""
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                       "params": {"name": "executeCode", "arguments": {"code": code},
                                  "_meta": {"progressToken": "t"}}}).encode()
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Accept: application/json, text/event-stream\r\nAuthorization: Bearer {token(key)}"
            f"\r\nMcp-Session-Id: {sid}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    s.sendall(head + body)
    got = b""
    while b"\nid: " not in got or b"\n\n" not in got[got.index(b"\nid: "):]:
        chunk = s.recv(65536)
        assert chunk, got
        got += chunk
    line = got[got.index(b"\nid: ") + 5:].split(b"\n", 1)[0].decode()
    assert b"notifications/progress" in got, got
    return s, line


def reconnect(server, key, sid, last_id, timeout=60):
    h = {"Accept": "text/event-stream", "Last-Event-ID": last_id}
    if key:
        h["Authorization"] = f"Bearer {token(key)}"
    if sid:
        h["Mcp-Session-Id"] = sid
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    conn.request("GET", "/mcp", headers=h)
    r = conn.getresponse()
    out = (r.status, r.getheader("content-type"), r.read().decode())
    conn.close()
    return out


def ids(body):
    return [line[4:] for line in body.splitlines() if line.startswith("id: ")]


def test_reconnect_gets_the_rest(server, mcp_keys):
    key = mcp_keys["alpha"]
    sid = initialize(server, key)
    s, first = open_call(server, key, sid, 21, CELL)
    s.close()  # the stream breaks after its first event
    status, ctype, body = reconnect(server, key, sid, first)
    assert status == 200 and ctype == "text/event-stream", (status, body)
    msgs = messages(body)
    assert msgs[-1]["id"] == 21, msgs
    assert msgs[-1]["result"]["structuredContent"]["stdout"] == "a\nb\n", msgs
    progress = "".join(m["params"]["message"] for m in msgs if m.get("method"))
    assert "b\n" in progress and "a\n" not in progress, msgs  # what it missed, not again
    channel, seq = first.split("-")
    rest = ids(body)
    assert rest and all(i.split("-")[0] == channel and int(i.split("-")[1]) > int(seq)
                        for i in rest), (first, rest)
    assert request(server, "DELETE", key, sid)[0] == 204


def test_reconnect_refusals_and_takeover(server, mcp_keys):
    key, other = mcp_keys["alpha"], mcp_keys["beta"]
    sid = initialize(server, key)
    s, first = open_call(server, key, sid, 22, CELL)
    try:
        # Ids that name no stream, malformed ones, another tenant, no session.
        for bad in ("999-1", "x", "1-", "-1", "1-1x", "1 -1", "18446744073709551616-1", ""):
            status, _, body = reconnect(server, key, sid, bad)
            assert status == 404, (bad, status, body)
        assert reconnect(server, other, sid, first)[0] == 404
        assert reconnect(server, key, None, first)[0] == 400
        assert reconnect(server, None, sid, first)[0] == 401
        # Without Last-Event-ID, GET opens no stream, as before.
        assert request(server, "GET", key, sid)[0] == 405
        # A reconnect while the first stream is still open (a proxy that dropped it
        # unseen) takes it over: the old one ends without the response.
        status, _, body = reconnect(server, key, sid, first)
        assert status == 200 and messages(body)[-1]["id"] == 22, (status, body)
        old = b""
        while not old.endswith(b"0\r\n\r\n"):  # the chunked body's end, or the close
            chunk = s.recv(65536)
            if not chunk:
                break
            old += chunk
        assert b'"id":22' not in old, old
    finally:
        s.close()
    assert request(server, "DELETE", key, sid)[0] == 204
    # The MCP session is gone: nothing to resume.
    assert reconnect(server, key, sid, first)[0] == 404


class CuttingProxy:
    """Forwards TCP to the server, and closes the first connection that carries a
    tools/call as soon as an SSE event with an id went through it."""

    def __init__(self, port):
        self.port = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.cuts = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/mcp"

    def accept(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.port))
            state = {"call": False}
            threading.Thread(target=self.pump, args=(c, u, state, False), daemon=True).start()
            threading.Thread(target=self.pump, args=(u, c, state, True), daemon=True).start()

    def pump(self, src, dst, state, from_server):
        seen = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not from_server and b'"tools/call"' in data:
                    state["call"] = True
                dst.sendall(data)
                seen = (seen + data)[-4096:]
                event = seen.rfind(b"\nid: ")
                if from_server and state["call"] and event >= 0 and b"\n\n" in seen[event:]:
                    with self.lock:
                        cut = self.cuts == 0
                        self.cuts += cut
                    if cut:
                        break
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self.listener.close()


def test_sdk_reconnects_through_a_broken_stream(server, mcp_keys):
    proxy = CuttingProxy(server.port)
    try:
        class Via:
            endpoint = proxy.url[:-len("/mcp")]
        out = sdk(Via, mcp_keys["alpha"], "resume")
    finally:
        proxy.close()
    assert proxy.cuts == 1, "the proxy never cut a stream"
    assert out["is_error"] is False and out["stdout"] == "a\nb\n", out
    assert "a\n" in out["progress"] and "b\n" in out["progress"], out


def test_kept_messages_bounded(server, mcp_keys):
    """A client gone while its call prints 1.5 MB as progress: a reconnect gets the last
    256 KiB or so of the progress (the older is dropped, as the ids show) and the whole
    response."""
    key = mcp_keys["alpha"]
    sid = initialize(server, key)
    marker = "kept_" + uuid.uuid4().hex[:8]
    code = ("import time\nprint('first', flush=True)\ntime.sleep(1)\n"
            "for i in range(150):\n    print(str(i % 10) * 10000, flush=True)\n"
            f"    time.sleep(0.005)\nopen('{marker}', 'w').close()\n")
    s, first = open_call(server, key, sid, 23, code)
    s.close()
    # Reconnect once the call is over, so that all of its output waited for the client.
    while call(server, key, sid, "executeCommand",
               {"command": f"test -f {marker} && echo done"})["structuredContent"]["stdout"] != "done\n":
        time.sleep(0.2)
    status, _, body = reconnect(server, key, sid, first, timeout=120)
    assert status == 200, body
    msgs = messages(body)
    assert msgs[-1]["id"] == 23 and not msgs[-1]["result"]["isError"], msgs[-1]
    progress = sum(len(json.dumps(m)) for m in msgs if m.get("method"))
    assert progress <= 256 * 1024 + 70 * 1024, progress
    seqs = [int(i.split("-")[1]) for i in ids(body)]
    assert seqs[0] > int(first.split("-")[1]) + 1, (first, seqs[:5])  # some were dropped
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    assert request(server, "DELETE", key, sid)[0] == 204
