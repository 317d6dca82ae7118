"""`codeq mcp` against hostile input: from the client (malformed JSON-RPC, bad
arguments, huge lines, path escapes) and from sandboxed code, which owns the
workspace and plants symbolic links (to /etc/shadow, /, /etc, the sandbox's /tmp, and
the host through /proc/<codeq's pid>/root), FIFOs and sockets, or swaps a directory for
a link between two calls (and while calls run) to make codeq's host-side file code
act outside the workspace. Also: sessions are isolated from each other, concurrent
calls are answered with their own ids, a getTask is answered while a long executeCode
runs, and a call in flight at end of input is still answered.

Host-side victims live in a scratch directory on the host: codeq (which runs as host
root) must never read, write or remove them whatever the sandbox's links say.
"""

import hashlib
import os
import shutil
import tempfile
import time

import pytest

from mcp_client import (
    HostWatch,
    McpServer,
    all_text,
    error_code,
    final_value,
    links,
    processes_of,
    resources,
    start_session,
    texts,
    wait_until,
)
from mcp_fixtures import host, new_server, sc, server, session  # noqa: F401 (fixtures)

JS = "javascript"
ABS = "absolute paths are not allowed: give a path relative to the workspace"
DOTDOT = "'..' is not allowed in paths"
SYMLINK = "it is or goes through a symbolic link, which codeq does not follow"


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Victims:
    """Host files that sandbox links point at: a file with known content and an empty
    directory, in a fresh host scratch directory; plus fingerprints of host files
    that must not change."""

    WATCHED = ("/etc/shadow", "/etc/passwd", "/etc/hostname")

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="codeq-e2e-victim-", dir="/tmp")
        self.file = os.path.join(self.dir, "victim.txt")
        with open(self.file, "w") as f:
            f.write("original\n")
        self.subdir = os.path.join(self.dir, "victim-dir")
        os.mkdir(self.subdir)
        self.prints = {p: (digest(p), os.stat(p).st_mtime_ns) for p in self.WATCHED
                       if os.path.exists(p)}
        self.root_entries = set(os.listdir("/"))

    def check(self):
        with open(self.file) as f:
            assert f.read() == "original\n", "the host victim file changed"
        assert sorted(os.listdir(self.dir)) == ["victim-dir", "victim.txt"], os.listdir(self.dir)
        assert os.listdir(self.subdir) == [], "something was written into the host victim dir"
        for p, fp in self.prints.items():
            assert (digest(p), os.stat(p).st_mtime_ns) == fp, f"{p} changed"
        assert set(os.listdir("/")) == self.root_entries, "the host's / changed"

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def victims():
    v = Victims()
    yield v
    v.check()
    v.remove()


# ----------------------------------------------------------------------------------
# Malformed JSON-RPC


@pytest.fixture(scope="module")
def raw(host):
    """A server for malformed input (no session is ever needed by most tests)."""
    srv = new_server(host, "--warm-pool", "0")
    yield srv
    srv.close()


def still_serving(srv):
    assert srv.result("ping") == {}


def error_of(msg, code, id=None):
    assert msg.get("jsonrpc") == "2.0" and "result" not in msg, msg
    assert msg["id"] == id and type(msg["id"]) is type(id), msg
    assert msg["error"]["code"] == code, msg
    assert isinstance(msg["error"]["message"], str) and msg["error"]["message"], msg
    return msg["error"]["message"]


@pytest.mark.parametrize("line", [
    b"{not json",
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping"',
    b'{"jsonrpc": "2.0", "id": 1, "id": 2, "method": "ping"}',  # duplicate key
    b'{"jsonrpc": "2.0", "id": 1, "method": "ping\\u0000"}',  # NUL in a string
    b'{"jsonrpc": "2.0", "id": 1, "method": "p\xffing"}',  # invalid UTF-8
    b"[" * 100000 + b"]" * 100000,  # deep nesting
    b"x" * (20 << 20),  # 20 MB of garbage
], ids=["unterminated", "truncated", "duplicate-key", "nul", "invalid-utf8", "deep-nesting",
        "20mb-garbage"])
def test_invalid_json_is_a_parse_error(raw, line):
    """Unparsable lines get -32700 with id null, and the server keeps serving."""
    raw.send_raw(line + b"\n")
    message = error_of(raw.response(None), -32700)
    assert message.startswith("parse error"), message
    still_serving(raw)


@pytest.mark.parametrize("line", [b"42", b'"text"', b"null", b"true"])
def test_json_that_is_not_an_object_is_an_invalid_request(raw, line):
    """A line that is valid JSON but not an object (a number, a string, null) is an
    Invalid Request (-32600), as arrays already are; it is not a Parse error."""
    raw.send_raw(line + b"\n")
    error_of(raw.response(None), -32600)
    still_serving(raw)


@pytest.mark.parametrize("message", [
    [1, 2], {}, [{"jsonrpc": "2.0", "id": 1, "method": "ping"}],
    {"jsonrpc": "2.0", "id": 1.5, "method": "ping"},
    {"jsonrpc": "2.0", "id": None, "method": "ping"},
    {"jsonrpc": "2.0", "id": {"a": 1}, "method": "ping"},
    {"jsonrpc": "2.0", "id": True, "method": "ping"},
])
def test_invalid_requests_without_usable_id(raw, message):
    """Not a request object, or an id of a type JSON-RPC does not allow: -32600, id
    null."""
    raw.send(message)
    error_of(raw.response(None), -32600)
    still_serving(raw)


@pytest.mark.parametrize("message", [
    {"id": 7, "method": "ping"},
    {"jsonrpc": "1.0", "id": 7, "method": "ping"},
    {"jsonrpc": 2.0, "id": 7, "method": "ping"},
    {"jsonrpc": "2.0", "id": 7, "method": 5},
    {"jsonrpc": "2.0", "id": 7},
])
def test_invalid_requests_with_id(raw, message):
    """Missing or wrong jsonrpc, a method that is not a string: -32600, with the id."""
    raw.send(message)
    error_of(raw.response(7), -32600, 7)
    still_serving(raw)


def test_unknown_method(raw):
    msg = raw.request("resources/list")
    assert error_of(msg, -32601, msg["id"]) == "method not found: resources/list"
    raw.send({"jsonrpc": "2.0", "id": "str-id", "method": "nope"})
    error_of(raw.response("str-id"), -32601, "str-id")


@pytest.mark.parametrize("params, text", [
    (None, "tools/call needs params {name, arguments}"),
    ({}, "tools/call needs params {name, arguments}"),
    ({"name": 5}, "tools/call needs params {name, arguments}"),
    ([1], "tools/call needs params {name, arguments}"),
    ({"name": "nope"}, "unknown tool 'nope'"),
    ({"name": "executeCode", "_meta": {"progressToken": 1.5}},
     "_meta.progressToken must be a string or an integer"),
])
def test_malformed_tool_calls_are_invalid_params(raw, params, text):
    """tools/call that is not a CallToolRequest, or names an unknown tool: -32602 with
    a message naming the problem; nothing runs."""
    id = raw.send_request("tools/call", params)
    assert text in error_of(raw.response(id), -32602, id)
    still_serving(raw)


@pytest.mark.parametrize("params, text", [
    ({"name": "executeCode", "arguments": [1]}, "must be an object"),
    ({"name": "executeCode", "arguments": "code"}, "must be an object"),
    ({"name": "executeCode", "arguments": {"code": 5}}, "argument 'code' must be a string"),
    ({"name": "executeCode", "arguments": {"code": "1", "language": ["python"]}},
     "argument 'language' must be a string"),
    ({"name": "executeCode", "arguments": {"code": "1", "clearContext": "yes"}},
     "argument 'clearContext' must be a boolean"),
    ({"name": "executeCode", "arguments": {"code": "1", "timeout": -1}},
     "argument 'timeout' must be a number of seconds >= 0"),
    ({"name": "executeCode", "arguments": {"code": "1", "timeout": "1"}},
     "argument 'timeout' must be a number of seconds >= 0"),
    ({"name": "executeCode", "arguments": {"code": "1", "sessionId": 5}},
     "argument 'sessionId' must be a string"),
    ({"name": "executeCommand", "arguments": {"command": ["ls"]}},
     "argument 'command' must be a string"),
    ({"name": "readFiles", "arguments": {"paths": "x"}},
     "argument 'paths' must be an array of strings"),
    ({"name": "readFiles", "arguments": {"paths": ["a", 1]}},
     "argument 'paths' must be an array of strings"),
    ({"name": "removeFiles", "arguments": {"paths": {"a": 1}}},
     "argument 'paths' must be an array of strings"),
    ({"name": "listFiles", "arguments": {"directoryPath": 5}},
     "argument 'directoryPath' must be a string"),
    ({"name": "getTask", "arguments": {"taskId": 5}}, "argument 'taskId' must be a string"),
    ({"name": "writeFiles", "arguments": {"content": "x"}}, "argument 'content' must be an array"),
    ({"name": "writeFiles", "arguments": {"content": [{"text": "x"}]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": 1, "text": "x"}]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": "a"}]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": "a", "text": "x",
                                                       "blob": "eA=="}]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": "a", "text": 5}]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": ["a"]}},
     "needs a string path and exactly one of text or blob"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": "a", "blob": "!!!"}]}},
     "the blob of 'a' is not valid base64"),
    ({"name": "writeFiles", "arguments": {"content": [{"path": "ok", "text": "x"},
                                                      {"path": "b", "blob": "eA=a"}]}},
     "the blob of 'b' is not valid base64"),
])
def test_bad_arguments_are_error_results(raw, params, text):
    """tools/call with arguments of the wrong types: a tool result with isError and
    INVALID_ARGUMENT whose message names the argument and the problem (the model can
    correct it; MCP 2025-11-25), not a protocol error; nothing runs."""
    id = raw.send_request("tools/call", params)
    msg = raw.response(id)
    assert "error" not in msg, msg
    r = msg["result"]
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    assert text in r["_codeq_error"]["message"] and text in all_text(r), r
    assert r["_codeq_error"]["message"].startswith(params["name"] + ": "), r
    still_serving(raw)


def test_rejected_calls_do_not_run(raw):
    """A call refused for one bad argument has no effect at all: no file is written,
    no (default) session started."""
    s = start_session(raw)
    try:
        count = len(raw.call("listSessions", {})["structuredContent"]["items"])
        for tool, args in (("writeFiles", {"sessionId": s.id,
                                           "content": [{"path": "ok.txt", "text": "x"},
                                                       {"path": "bad", "blob": "!!"}]}),
                           ("executeCode", {"code": "open('ran.txt', 'w')", "timeout": "x"})):
            r = raw.call(tool, args)
            assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert len(raw.call("listSessions", {})["structuredContent"]["items"]) == count
        assert links(s.list()) == []
    finally:
        raw.call("stopSession", {"sessionId": s.id})


def test_tool_argument_errors_are_results(raw):
    """Arguments of the right type that a tool cannot use: an error result (isError,
    INVALID_ARGUMENT), not a protocol error."""
    for tool, args, text in (
        ("executeCode", {}, "executeCode: 'code' is required"),
        ("executeCode", {"code": "1", "language": "cobol"},
         "executeCode: language 'cobol' is not one of python, javascript, typescript"),
        ("executeCode", {"code": "1", "runtime": "deno", "language": "javascript"},
         "runtime 'deno' is not available here"),
        ("executeCode", {"code": "1", "runtime": "nodejs"}, "runtime 'nodejs' does not run"),
        ("executeCode", {"code": "1", "timeout": 1e9}, "timeout must be between 0 and 28800"),
        ("executeCommand", {}, "executeCommand: 'command' is required"),
        ("executeCommand", {"command": ""}, "executeCommand: 'command' is required"),
        ("startCommandExecution", {}, "startCommandExecution: 'command' is required"),
        ("readFiles", {"paths": []}, "readFiles: 'paths' lists no files"),
        ("readFiles", {}, "readFiles: 'paths' lists no files"),
        ("removeFiles", {"paths": []}, "removeFiles: 'paths' lists no files"),
        ("writeFiles", {"content": []}, "writeFiles: 'content' lists no files"),
    ):
        r = raw.call(tool, args)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (tool, r)
        assert text in r["_codeq_error"]["message"] and text in all_text(r), (tool, r)


def test_notifications_and_client_responses_get_no_answer(raw):
    """Notifications (no id) and responses sent by the client are not answered: the
    next message is the answer to the ping sent after them."""
    raw.notify("notifications/initialized")
    raw.notify("notifications/cancelled", {"requestId": 1})
    raw.notify("no/such/method")
    raw.send({"jsonrpc": "2.0", "id": 99, "result": {}})
    raw.send({"jsonrpc": "2.0", "id": 98, "error": {"code": 1, "message": "x"}})
    raw.send_raw(b"\n\r\n\n")
    id = raw.send_request("ping")
    msg = raw.next_message()
    assert msg == {"jsonrpc": "2.0", "id": id, "result": {}}, msg
    assert raw.pending_messages() == []


def test_crlf_and_string_ids(raw):
    raw.send_raw(b'{"jsonrpc":"2.0","id":"abc","method":"ping"}\r\n')
    assert raw.response("abc") == {"jsonrpc": "2.0", "id": "abc", "result": {}}
    raw.send_raw(b'{"jsonrpc":"2.0","id":-5,"method":"ping"}\n')
    assert raw.response(-5)["result"] == {}


def test_line_above_the_limit(raw):
    """A line above 160 MB (here by 4 KB) is refused as a whole (-32600, "larger than
    the 160 MB limit") without taking the server down."""
    raw.send_raw(b"x" * ((160 << 20) + 4096) + b"\n")
    msg = raw.response(None, timeout=300)
    still_serving(raw)
    message = error_of(msg, -32600)
    assert "160 MB" in message, message


def test_eof_with_a_call_in_flight_answers_it(host):
    """End of input while a call runs: the call is answered, then the server stops
    its sessions and exits 0."""
    srv = McpServer("--warm-pool", "0")
    host.pids.append(srv.pid)
    srv.send_request("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                    "clientInfo": {"name": "t", "version": "1"}}, id=1)
    srv.send_call("executeCode", {"code": "import time\ntime.sleep(1)\n'finished'"}, id=2)
    srv.send_call("executeCommand", {"command": "echo also"}, id=3)
    srv.close_stdin()
    assert srv.response(1)["result"]["protocolVersion"] == "2025-06-18"
    r2, r3 = srv.response(2)["result"], srv.response(3)["result"]
    assert r2["isError"] is False and final_value(r2) == "'finished'", r2
    assert r3["structuredContent"]["stdout"] == "also\n", r3
    srv.close()


def test_concurrent_calls_are_answered_with_their_ids(server):
    """Many calls sent without waiting, in several sessions, with string and integer
    ids interleaved: each is answered exactly once, with its own id and its own
    result; a slow call does not hold up the others."""
    a, b = start_session(server), start_session(server)
    try:
        a.ok("gate = 'open'")
        slow_id = server.send_call("executeCode", {
            "sessionId": a.id,
            "code": "import os, time\nwhile not os.path.exists('release'):\n"
                    "    time.sleep(0.02)\n'slow done'"})
        sent = {}
        for i in range(24):
            sess = (a, b, None)[i % 3]
            id = f"call-{i}" if i % 2 else 1000 + i
            args = {"command": f"echo {i}"} if i % 4 else {"code": f"{i} * 2"}
            if sess is a and "code" in args:  # a's Python kernel is busy with the slow cell
                args["language"] = "javascript"
            if sess is not None:
                args["sessionId"] = sess.id
            server.send_call("executeCommand" if i % 4 else "executeCode", args, id=id)
            sent[id] = f"{i}\n" if i % 4 else str(i * 2)
        for id, expected in sent.items():
            r = server.response(id)["result"]
            got = r["structuredContent"]["stdout"] if expected.endswith("\n") else final_value(r)
            assert got == expected, (id, r)
        # All of them came back while the slow cell still waited.
        assert not any(m.get("id") == slow_id for m in server.pending_messages())
        b_read = server.send_call("readFiles", {"sessionId": b.id, "paths": ["release"]})
        assert server.response(b_read)["result"]["isError"] is True  # b's workspace is not a's
        a.write(("release", ""))
        r = server.response(slow_id)["result"]
        assert final_value(r) == "'slow done'", r
        extra = [m for m in server.pending_messages() if m.get("id") in sent]
        assert extra == [], extra
    finally:
        for s in (a, b):
            server.call("stopSession", {"sessionId": s.id})


def test_get_task_answered_while_code_runs_in_the_same_session(session):
    """While a long executeCode runs, the same session answers startCommandExecution,
    getTask, listFiles and a JavaScript cell; the Python cell then finishes."""
    server = session.server
    long_id = server.send_call("executeCode", {
        "sessionId": session.id,
        "code": "import os, time\nwhile not os.path.exists('release'):\n    time.sleep(0.02)\n"
                "'released'"})
    task = session.call("startCommandExecution", command="echo from-task")
    task_id = sc(task)["taskId"]
    done = wait_until(lambda: (lambda r: r if sc(r)["taskStatus"] == "completed" else None)(
        session.call("getTask", taskId=task_id)), 30, "the task to complete")
    assert sc(done)["stdout"] == "from-task\n"
    assert session.value("6 * 7", JS) == "42"
    assert session.list()["isError"] is False
    assert not any(m.get("id") == long_id for m in server.pending_messages())
    session.write(("release", ""))
    r = server.response(long_id)["result"]
    assert r["isError"] is False and final_value(r) == "'released'", r


# ----------------------------------------------------------------------------------
# Path escapes


ESCAPES = [
    ("/etc/passwd", ABS),
    ("/workspace/x.txt", ABS),
    ("..", DOTDOT),
    ("../x.txt", DOTDOT),
    ("a/../../x.txt", DOTDOT),
    ("a/..", DOTDOT),
    ("./../etc/passwd", DOTDOT),
    ("a/b/../../../etc/passwd", DOTDOT),
    ("a/b/..", DOTDOT),
]


@pytest.mark.parametrize("path, why", ESCAPES)
def test_path_escapes_are_refused_by_every_file_tool(session, victims, path, why):
    """Absolute paths and any '..' are refused, with a message that says why, by
    readFiles, writeFiles, listFiles and removeFiles; nothing outside the workspace
    (inside the sandbox, or on the host) is touched."""
    session.write(("a/b/keep.txt", "k"), ("x.txt", "x"))
    before = session.sh("ls -a / /tmp; cat /etc/passwd | md5sum")
    for tool, args in (("readFiles", {"paths": [path]}),
                       ("writeFiles", {"content": [{"path": path, "text": "pwned"}]}),
                       ("writeFiles", {"content": [{"path": path + "/y.txt", "text": "pwned"}]}),
                       ("listFiles", {"directoryPath": path}),
                       ("removeFiles", {"paths": [path]})):
        r = session.call(tool, **args)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (tool, r)
        assert why in all_text(r), (tool, r)
        assert resources(r) == [] and links(r) == [], (tool, r)
    assert session.sh("ls -a / /tmp; cat /etc/passwd | md5sum") == before
    assert session.sh("find . | sort; cat x.txt a/b/keep.txt") == \
        ".\n./a\n./a/b\n./a/b/keep.txt\n./x.txt\nxk"


def test_odd_but_harmless_paths(session):
    """'.' parts, repeated and trailing slashes are normalised; names with dots that
    are not '..' are ordinary; overlong names and paths are refused."""
    r = session.write(("./a//b/./c.txt", "c"), ("..hidden", "h"), ("x..y", "xy"), ("...", "3"))
    assert r["isError"] is False, r
    assert texts(r) == ["wrote a/b/c.txt (1 bytes)", "wrote ..hidden (1 bytes)",
                        "wrote x..y (2 bytes)", "wrote ... (1 bytes)"]
    assert [b["name"] for b in links(session.list("a//b/"))] == ["c.txt"]
    r = session.read("a/b/c.txt/", "..hidden", "x..y", "...")
    assert [res.get("text") for res in resources(r)] == ["c", "h", "xy", "3"], r
    r = session.write(("n" * 256, "x"))
    assert r["isError"] is True and "longer than 255 bytes" in all_text(r), r
    r = session.write(("/".join(["d" * 200] * 25), "x"))
    assert r["isError"] is True and "too long" in all_text(r), r
    for path in ("", ".", "./"):
        r = session.write((path, "x"))
        assert r["isError"] is True and "names the workspace itself" in all_text(r), r
        r = session.read(path)
        assert r["isError"] is True and "names the workspace itself" in all_text(r), r


# ----------------------------------------------------------------------------------
# Links, FIFOs and sockets planted by code


def plant(session, server, victims):
    """Links of every kind, made by code in the workspace."""
    proc_root = f"/proc/{server.pid}/root"
    session.sh(
        "echo inside > /tmp/sandbox-tmp.txt && mkdir -p real && echo real > real/file.txt && "
        "ln -s /etc/shadow shadow && ln -s / root && ln -s /etc etcdir && "
        "ln -s /tmp/sandbox-tmp.txt tmpfile && "
        f"ln -s {victims.file} hostfile && ln -s {victims.subdir} hostdir && "
        f"ln -s {proc_root}{victims.file} procfile && "
        f"ln -s {proc_root}{victims.subdir} procdir && "
        "ln -s /proc/self/root/etc/passwd selfroot && "
        "ln -s ../../../../../etc/passwd up && ln -s loop loop && ln -s shadow chain && "
        "ln -s real/file.txt inside-link && ln -s real inside-dir")
    return {
        "shadow": "/etc/shadow", "root": "/", "etcdir": "/etc",
        "tmpfile": "/tmp/sandbox-tmp.txt", "hostfile": victims.file,
        "hostdir": victims.subdir, "procfile": proc_root + victims.file,
        "procdir": proc_root + victims.subdir, "selfroot": "/proc/self/root/etc/passwd",
        "up": "../../../../../etc/passwd", "loop": "loop", "chain": "shadow",
        "inside-link": "real/file.txt", "inside-dir": "real",
    }


THROUGH = ["root/etc/passwd", "etcdir/passwd", "hostdir/x.txt", "procdir/x.txt",
           "inside-dir/file.txt", "root/tmp/sandbox-tmp.txt"]


def test_read_files_does_not_follow_links(session, server, victims):
    """readFiles refuses every link, and every path through a linked directory, even
    one pointing inside the workspace, saying it is a symbolic link."""
    planted = plant(session, server, victims)
    for path in list(planted) + THROUGH:
        r = session.read(path)
        assert r["isError"] is True, (path, r)
        assert resources(r) == [], (path, r)
        assert texts(r) == [f"readFiles: {path}: {SYMLINK}"], (path, r)
    # The real file is readable directly.
    assert resources(session.read("real/file.txt"))[0]["text"] == "real\n"


def test_write_files_does_not_follow_links(session, server, victims):
    """writeFiles refuses to write to or through any link; neither the link targets
    (in the sandbox, on the host) nor the links change."""
    planted = plant(session, server, victims)
    listing_before = links(session.list())
    for path in list(planted) + THROUGH + ["hostdir/new.txt", "procdir/new.txt",
                                           "root/new.txt", "etcdir/new.txt"]:
        r = session.write((path, "pwned\n"))
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (path, r)
        assert len(texts(r)) == 1 and texts(r)[0].startswith(f"writeFiles: {path}: "), r
        assert not texts(r)[0].startswith("wrote"), r
    assert links(session.list()) == listing_before
    assert session.sh("cat /tmp/sandbox-tmp.txt real/file.txt; ls real; "
                      "test -e /new.txt || echo no-root-file") == \
        "inside\nreal\nfile.txt\nno-root-file\n"
    victims.check()


def test_list_files_shows_links_without_following(session, server, victims):
    """listFiles lists links as links (type, target length as size) and refuses to
    list through one."""
    planted = plant(session, server, victims)
    entries = {b["name"]: b for b in links(session.list())}
    for name, target in planted.items():
        e = entries[name]
        assert e["description"] == "symbolic link" and e["mimeType"] == "inode/symlink", e
        assert e["size"] == len(target.encode()), e
        assert e["uri"] == f"file://{name}"
    assert entries["real"]["description"] == "directory"
    for path in ("root", "etcdir", "hostdir", "procdir", "inside-dir", "root/etc", "up"):
        r = session.list(path)
        assert r["isError"] is True and links(r) == [], (path, r)


def test_remove_files_removes_links_not_targets(session, server, victims):
    """removeFiles deletes the link itself; what it points to stays, in the sandbox
    and on the host; removing through a linked directory is refused."""
    planted = plant(session, server, victims)
    for path in THROUGH + ["hostdir/victim.txt", "procdir/../victim.txt"]:
        r = session.remove(path)
        assert r["isError"] is True, (path, r)
        assert not any(t.startswith("removed") for t in texts(r)), (path, r)
    r = session.remove(*planted)
    assert r["isError"] is False, r
    assert texts(r) == [f"removed {name}" for name in planted]
    assert session.sh("ls; cat /tmp/sandbox-tmp.txt real/file.txt; test -e /etc/passwd && "
                      "echo etc-ok") == "real\ninside\nreal\netc-ok\n"
    victims.check()


def test_fifo_and_socket_do_not_block_file_tools(session):
    """A FIFO planted by code (with no peer, with a reader waiting, with a writer
    waiting) and a unix socket: readFiles and writeFiles fail at once, saying it is
    not a regular file; nothing is written into the FIFO."""
    session.sh("mkfifo fifo lonely")
    session.ok("import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind('sock')")
    for path in ("lonely", "sock"):
        r = session.read(path, timeout=30)
        assert texts(r) == [f"readFiles: {path}: it is not a regular file"], r
        r = session.write((path, "data"), timeout=30)
        assert r["isError"] is True and "writeFiles: " + path in all_text(r), r
    # A reader blocked in open(): writeFiles must neither hang nor feed it.
    reader = session.call("startCommandExecution", command="cat fifo; echo reader-done")
    time.sleep(0.3)  # let cat reach its open() (the test holds either way)
    r = session.write(("fifo", "secret"), timeout=30)
    assert r["isError"] is True and "it is not a regular file" in all_text(r), r
    # A writer blocked in open(): readFiles must neither hang nor drain it.
    session.call("startCommandExecution", command="echo from-writer > fifo")
    r = session.read("fifo", timeout=30)
    assert r["isError"] is True and "it is not a regular file" in all_text(r), r
    reader_id = sc(reader)["taskId"]
    done = wait_until(lambda: (lambda t: t if sc(t)["taskStatus"] != "working" else None)(
        session.call("getTask", taskId=reader_id)), 30, "the FIFO reader to finish")
    assert "secret" not in sc(done)["stdout"], done
    entries = {b["name"]: b["description"] for b in links(session.list())}
    assert entries == {"fifo": "special file", "lonely": "special file",
                       "sock": "special file"}, entries


def test_directory_swapped_for_a_link_between_calls(session, server, victims):
    """A directory that writeFiles made is replaced by code with a link to the host
    (through /proc/<codeq>/root) and to /etc: every file tool refuses the old paths."""
    proc_root = f"/proc/{server.pid}/root"
    for target in (proc_root + victims.subdir, "/etc", victims.subdir):
        assert session.write(("sub/a.txt", "a"))["isError"] is False
        session.sh(f"rm -rf sub.real && mv sub sub.real && ln -s {target} sub")
        for r in (session.write(("sub/b.txt", "pwned")), session.read("sub/a.txt"),
                  session.list("sub"), session.remove("sub/a.txt")):
            assert r["isError"] is True, r
            assert not any(t.startswith(("wrote", "removed")) for t in texts(r)), r
            assert resources(r) == [] and links(r) == [], r
        assert texts(session.remove("sub")) == ["removed sub"]
        assert session.sh("cat sub.real/a.txt; ls sub.real") == "aa.txt\n"
        victims.check()


def test_directory_swapped_while_writing(session, server, victims):
    """Code swaps a directory and a link to the host back and forth as fast as it can
    while writeFiles writes into it: each write lands in the workspace or is
    refused; none reaches the host."""
    target = f"/proc/{server.pid}/root{victims.subdir}"
    session.sh("mkdir race")
    swapper = session.call(
        "startCommandExecution",
        command=f"while [ ! -e stop ]; do mv race race.d; ln -s {target} race; "
                "rm race; mv race.d race; done")
    written = 0
    for i in range(150):
        r = session.write((f"race/f{i}.txt", "x"), ("race/sub/g.txt", "y"))
        written += sum(t.startswith("wrote") for t in texts(r))
    session.write(("stop", ""))
    swapper_id = sc(swapper)["taskId"]
    wait_until(lambda: sc(session.call("getTask", taskId=swapper_id))["taskStatus"] !=
               "working", 30, "the swapper to stop")
    victims.check()
    found = session.sh("find . -name '*.txt' -type f | wc -l")
    assert int(found) <= written and written > 0, (found, written)


def test_files_written_by_the_host_side_are_the_sandbox_users(session):
    """What writeFiles creates belongs to the sandbox user; it cannot create files in
    places the sandbox user may not write (a directory code made read-only)."""
    session.sh("mkdir locked && chmod 555 locked")
    r = session.write(("locked/x.txt", "x"))
    assert r["isError"] is True and "Permission denied" in all_text(r), r
    session.write(("mine.txt", "m"))
    assert session.sh("stat -c %u:%g mine.txt") == "1000:1000\n"


# ----------------------------------------------------------------------------------
# Hostile output and kernels


def test_invalid_utf8_and_nul_output_is_sanitised(session):
    """Bytes that are not UTF-8 (and NULs) in stdout and stderr come back as valid
    JSON text with U+FFFD in their place."""
    r = session.code("import os\nos.write(1, b'a\\xff\\xfeb\\x00c\\n')\n"
                     "os.write(2, b'\\xc3(\\n')\n'ok'")
    assert r["isError"] is False, r
    assert sc(r)["stdout"] == "a\ufffd\ufffdb\ufffdc\n"
    assert sc(r)["stderr"] == "\ufffd(\n"
    assert final_value(r) == "'ok'"


def test_file_names_that_are_not_utf8_are_listed(session):
    """A file whose name is not UTF-8 (made by code) is listed with a uri and a name
    (its invalid bytes replaced), like any other."""
    session.ok("open(b'bad\\xffname.txt', 'w').write('x')\nopen('good.txt', 'w')")
    r = session.server.call_raw("listFiles", {"sessionId": session.id})["result"]
    entries = [b for b in r["content"] if b["type"] == "resource_link"]
    assert len(entries) == 2, r
    bad = entries[0]
    assert isinstance(bad.get("name"), str) and isinstance(bad.get("uri"), str), bad
    assert bad["name"].startswith("bad") and bad["name"].endswith("name.txt"), bad
    assert bad["uri"].startswith("file://bad"), bad


@pytest.mark.parametrize("code", [
    "import os\nos.close(1)\nkept = 1",
    "import os\nos.close(2)\nkept = 1",
    "import os\nos.dup2(os.open('/dev/null', os.O_WRONLY), 1)\n"
    "os.dup2(os.open('/dev/null', os.O_WRONLY), 2)\nkept = 1",
    "import os, socket, stat\nfor fd in range(3, 64):\n    try:\n"
    "        if stat.S_ISSOCK(os.fstat(fd).st_mode):\n            os.close(fd)\n"
    "    except OSError:\n        pass\nkept = 1",
    "import os\nos.write(1, b'\\n@codeq:fake-marker@\\n')\nkept = 1",
], ids=["close-stdout", "close-stderr", "stdio-to-devnull", "close-control", "fake-marker"])
def test_a_cell_that_breaks_its_channels_cannot_hang_the_call(session, code):
    """A cell that closes or redirects its stdout/stderr, closes the kernel's control
    socket or writes something marker-like: the call is answered (well within its
    timeout and the hang guard), and the session works afterwards."""
    r = session.code(code, timeout_s=20, timeout=60)
    assert isinstance(r["isError"], bool)
    assert error_code(r) != "TIMED_OUT", r
    assert session.value("6 * 7") == "42"
    assert session.sh("echo fine") == "fine\n"


@pytest.mark.parametrize("code, why", [
    ("import os\nos._exit(3)", "it exited with status 3"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "it was killed by signal 9"),
])
def test_kernel_death_is_reported_and_recovered(session, code, why):
    """The kernel process dies in a cell: the result says why and that the context was
    reset; the next call gets a fresh kernel."""
    session.ok("kept = 1")
    r = session.code(code)
    assert r["isError"] is True, r
    assert "the Python kernel died" in sc(r)["stderr"], r
    assert "the context (variables, imports) was reset" in sc(r)["stderr"], r
    assert why in sc(r)["stderr"], r
    assert session.value("'kept' in dir()") == "False"


def test_javascript_kernel_exit_is_recovered(session):
    session.ok("globalThis.kept = 1", JS)
    # process.exit() ends only the cell (as sys.exit() in Python): the context stays.
    r = session.code("process.exit(4)", JS)
    assert r["isError"] is True and sc(r)["exitCode"] == 4, r
    assert sc(r)["stderr"] == "process.exit(4)\n", r
    assert session.value("typeof kept", JS) == "'number'"
    # The process's own exit, below it, does end the kernel.
    r = session.code("process.reallyExit(4)", JS)
    assert r["isError"] is True and "the JavaScript kernel died" in sc(r)["stderr"], r
    assert "it exited with status 4" in sc(r)["stderr"], r
    assert session.value("typeof kept", JS) == "'undefined'"


# ----------------------------------------------------------------------------------
# Isolation between sessions


def test_sessions_are_isolated(server):
    """Two sessions see neither each other's files, nor variables, nor processes, nor
    /tmp; one cannot kill the other's processes."""
    a, b = start_session(server), start_session(server)
    try:
        a.write(("secret.txt", "a's secret"))
        a.sh("echo a-tmp > /tmp/a-only.txt")
        a.ok("import subprocess\nsecret_var = 'a'\np = subprocess.Popen(['sleep', '777'])")
        a.ok("const aJs = 1", JS)
        # Positive controls: a sees its own things.
        assert a.value("open('/tmp/a-only.txt').read()") == "'a-tmp\\n'"
        assert "sleep 777" in a.value("import os\nos.popen('ps -eo args').read()")
        # b sees none of them.
        assert links(b.list()) == []
        r = b.read("secret.txt")
        assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
        assert b.sh("ls -A /workspace; ls -A /tmp") == ""
        r = b.code("secret_var")
        assert r["isError"] is True and "NameError" in sc(r)["stderr"], r
        assert b.value("typeof aJs", JS) == "'undefined'"
        assert "sleep 777" not in b.value("import os\nos.popen('ps -eo args').read()")
        assert "sleep 777" not in b.sh("ps -eo args")
        assert "sleep" not in b.sh("ls /proc | xargs -n1 -I{} cat /proc/{}/cmdline "
                                   "2>/dev/null | tr '\\0' ' '")
        # b kills all it can; a's process lives on.
        b.cmd("kill -9 -1")
        b.ok("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept Exception:\n"
             "    pass")
        assert a.value("p.poll() is None") == "True"
        assert resources(a.read("secret.txt"))[0]["text"] == "a's secret"
    finally:
        for s in (a, b):
            server.call("stopSession", {"sessionId": s.id})


def test_sandboxed_code_cannot_see_the_host(session, server, victims):
    """The host's files (the victim in the host's /tmp, through /proc/<codeq>/root
    too) are not visible to sandboxed code."""
    out = session.sh(f"cat {victims.file} 2>&1; cat /proc/{server.pid}/root{victims.file} "
                     f"2>&1; ls /proc/{server.pid} 2>&1; echo end")
    assert "original" not in out, out
    assert out.endswith("end\n")


def test_killed_server_leaves_no_sandbox_processes(host):
    """codeq mcp killed outright (SIGKILL, no cleanup) while sessions run code, a
    background task and a long command: every sandbox process goes with it."""
    srv = new_server(host, "--warm-pool", "0")
    a, b = start_session(srv), start_session(srv)
    a.ok("import subprocess\np = subprocess.Popen(['sh', '-c', 'sleep 1000; : killed-marker'])")
    b.call("startCommandExecution", command="sleep 1000; : killed-marker")
    srv.send_call("executeCommand", {"sessionId": b.id, "command": "sleep 1000; : killed-marker"})
    wait_until(lambda: len(processes_of(srv.pid, "killed-marker")) == 3, 30,
               "the sessions' processes to start")
    srv.kill()
    procs, _ = host.leftovers([srv.pid])
    deadline = time.monotonic() + 10
    while procs and time.monotonic() < deadline:
        time.sleep(0.1)
        procs, _ = host.leftovers([srv.pid])
    assert procs == {}, procs
    # Its cgroups stay until the next codeq that makes a sandbox sweeps them
    # (sandbox/cgroup.c): make one.
    sweeper = new_server(host, "--warm-pool", "0")
    start_session(sweeper)
    sweeper.close()
    host.assert_clean([srv.pid])


def test_installed_runtimes_leave_no_host_path_in_mountinfo(host):
    """A bind prints its host source path in the sandbox's /proc/self/mountinfo. Runtimes
    installed under /usr (as packages and the container image put them) are seen through
    the sandbox's read-only /usr at the same path: no bind, no host path to learn; the
    kernels (Python and Node) still start from there."""
    repo_runtimes = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "runtimes")
    install = tempfile.mkdtemp(prefix="codeq-test-", dir="/usr/local/share")
    os.chmod(install, 0o755)  # as an installation is: the sandbox user reads it
    try:
        runtimes = os.path.join(install, "runtimes")
        shutil.copytree(repo_runtimes, runtimes, symlinks=True)
        env = os.environ.copy()
        env["CODEQ_RUNTIMES_DIR"] = runtimes
        srv = McpServer("--warm-pool", "0", env=env)
        host.pids.append(srv.pid)
        srv.initialize()
        try:
            s = start_session(srv)
            mounts = s.value("open('/proc/self/mountinfo').read()")
            assert "/opt/codeq/runtimes" not in mounts, mounts
            assert repo_runtimes not in mounts and install not in mounts, mounts
            assert s.value(f"__import__('os').path.isdir({runtimes!r})") == "True"
            assert s.value("1 + 1", language="javascript") == "2"
            assert s.value("const n: number = 2; n * 3", language="typescript") == "6"
        finally:
            srv.close()
    finally:
        shutil.rmtree(install)
