"""A small JSON-RPC 2.0 client for `codeq mcp` (MCP over stdio, one message a line),
for the end-to-end tests.

    server = McpServer("--warm-pool", "1")   # starts CODEQ_BIN_DIR/codeq mcp
    server.initialize()
    result = server.call("executeCode", {"code": "1 + 1"})
    server.close()                           # EOF, wait, check stderr for sanitizers

A reader thread collects everything the server writes: raw lines (`lines`) and
parsed messages, which are handed out by id (`response(id)`) or in order
(`next_message()`). Every wait has a timeout and ends at once when the server exits,
so a broken server makes a test fail rather than hang. The server's stderr goes to a
file, read on demand (`stderr_text()`), which close() checks for reports of
AddressSanitizer, LeakSanitizer and UndefinedBehaviorSanitizer; close() also fails if
codeq's stdout stays open after it exited (a process it leaked holds it).

Session wraps the calls into one session (or the connection's default session);
HostWatch finds sandbox processes and cgroups that codeq processes left on the host.
"""

import base64
import importlib.util
import json
import os
import re
import select
import subprocess
import tempfile
import threading
import time


def _e2e_conftest():
    """tests/e2e/conftest.py's host helpers (the process table, codeq's cgroups), loaded
    by its path: in a run that collects another directory's conftest.py too (tests/net,
    tests/runtime), the module named conftest may be that one."""
    mod = _e2e_conftest.module
    if mod is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")
        spec = importlib.util.spec_from_file_location("codeq_e2e_conftest", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        _e2e_conftest.module = mod
    return mod


_e2e_conftest.module = None

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")

PROTOCOL_VERSION = "2025-06-18"

# How long one answer may take before a test gives up (a hang guard, not a measure).
DEFAULT_TIMEOUT = 120

TOOL_NAMES = (
    "executeCode", "executeCommand", "readFiles", "listFiles", "removeFiles", "writeFiles",
    "startCommandExecution", "getTask", "stopTask",
    "startSession", "stopSession", "getSession", "listSessions",
)

_SANITIZER_PATTERNS = (
    re.compile(r"ERROR: AddressSanitizer"),
    re.compile(r"AddressSanitizer:DEADLYSIGNAL"),
    re.compile(r"LeakSanitizer"),
    re.compile(r"UndefinedBehaviorSanitizer"),
    re.compile(r":\d+:\d+: runtime error: "),
)


def sanitizer_reports(text):
    """The lines of text that are reports of a sanitizer (ASan, LSan, UBSan)."""
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(p.search(line) for p in _SANITIZER_PATTERNS):
            out.append("\n".join(lines[i:i + 12]))
    return out


def assert_no_sanitizer_reports(text, what="codeq"):
    reports = sanitizer_reports(text)
    assert not reports, f"{what} reported sanitizer errors on stderr:\n" + "\n---\n".join(
        reports[:5])


class ServerGone(AssertionError):
    pass


class McpServer:
    """One `codeq mcp` process."""

    def __init__(self, *args, env=None, timeout=DEFAULT_TIMEOUT):
        self.args = list(args)
        self.timeout = timeout
        self._stderr = tempfile.TemporaryFile(prefix="codeq-mcp-stderr-")
        self.proc = subprocess.Popen(
            [CODEQ, "mcp", *self.args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env if env is not None else os.environ.copy(),
            close_fds=True,
        )
        self.pid = self.proc.pid
        os.set_blocking(self.proc.stdin.fileno(), False)  # writes honour a timeout
        self._cond = threading.Condition()
        self.lines = []  # every raw line (bytes, without the newline), in order
        self._messages = []  # parsed messages not yet handed out
        self._eof = False
        self._write_lock = threading.Lock()
        self._next_id = 1
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    # ---- the reader ----------------------------------------------------------------

    def _read_loop(self):
        out = self.proc.stdout
        try:
            for raw in iter(out.readline, b""):
                line = raw.rstrip(b"\n")
                try:
                    msg = json.loads(line)
                except ValueError:
                    msg = {"_unparsable": line[:2000]}
                with self._cond:
                    self.lines.append(line)
                    self._messages.append(msg)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()

    def _wait(self, pick, timeout, what):
        """Waits until pick(messages) returns an index; removes and returns that
        message."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        dead_since = None
        with self._cond:
            while True:
                index = pick(self._messages)
                if index is not None:
                    return self._messages.pop(index)
                # The server is gone when its stdout ends, or when it exited (a leaked
                # child may hold stdout open: then allow a moment for the last lines).
                if dead_since is None and self.proc.poll() is not None:
                    dead_since = time.monotonic()
                if self._eof or (dead_since is not None and
                                 time.monotonic() - dead_since > 2):
                    raise ServerGone(
                        f"codeq mcp ended (status {self.proc.poll()}) while waiting for "
                        f"{what}; stderr: {self.stderr_text()[-3000:]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {what} from codeq mcp within {timeout} s; stderr: "
                        f"{self.stderr_text()[-3000:]!r}")
                self._cond.wait(min(left, 0.2))

    # ---- sending -------------------------------------------------------------------

    def send_raw(self, data, timeout=None):
        """Writes bytes as they are (add b"\\n" to end a line), giving up after
        timeout seconds if the server stops reading."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        view = memoryview(data)
        with self._write_lock:
            fd = self.proc.stdin.fileno()
            while view:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"codeq mcp stopped reading its input ({len(view)} of {len(data)} "
                        f"bytes not taken within {timeout} s)")
                _, writable, _ = select.select([], [fd], [], min(left, 1.0))
                if writable:
                    try:
                        n = os.write(fd, view[:1 << 20])
                    except BlockingIOError:
                        continue
                    view = view[n:]

    def send(self, message):
        self.send_raw(json.dumps(message, separators=(",", ":")).encode() + b"\n")

    def new_id(self):
        with self._write_lock:
            i = self._next_id
            self._next_id += 1
        return i

    def send_request(self, method, params=None, id=None):
        """Sends a request without waiting; returns its id."""
        if id is None:
            id = self.new_id()
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return id

    def notify(self, method, params=None):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def send_call(self, name, arguments=None, id=None):
        params = {"name": name}
        if arguments is not None:
            params["arguments"] = arguments
        return self.send_request("tools/call", params, id=id)

    # ---- receiving -----------------------------------------------------------------

    def response(self, id, timeout=None):
        """The message answering id (which may be None: errors without an id)."""
        def pick(messages):
            for i, m in enumerate(messages):
                if isinstance(m, dict) and "id" in m and m["id"] == id and \
                        type(m["id"]) is type(id):
                    return i
            return None
        return self._wait(pick, timeout, f"answer to id {id!r}")

    def next_message(self, timeout=None):
        return self._wait(lambda ms: 0 if ms else None, timeout, "message")

    def pending_messages(self):
        """Messages received and not yet handed out (does not wait)."""
        with self._cond:
            return list(self._messages)

    def request(self, method, params=None, timeout=None):
        """Sends a request and returns its response message (result or error)."""
        return self.response(self.send_request(method, params), timeout)

    def result(self, method, params=None, timeout=None):
        """The result of a request that must succeed at the JSON-RPC level."""
        msg = self.request(method, params, timeout)
        assert msg.get("jsonrpc") == "2.0", msg
        assert "error" not in msg, f"{method} failed: {msg['error']!r}"
        assert "result" in msg, msg
        return msg["result"]

    def initialize(self):
        return self.result("initialize", {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "codeq-e2e", "version": "1"},
        })

    def call_raw(self, name, arguments=None, timeout=None):
        """tools/call; returns the whole response message."""
        return self.response(self.send_call(name, arguments), timeout)

    def call(self, name, arguments=None, timeout=None):
        """tools/call that must succeed at the JSON-RPC level; returns its
        CallToolResult (which may still have isError)."""
        msg = self.call_raw(name, arguments, timeout)
        assert "error" not in msg, f"tools/call {name} failed: {msg['error']!r}"
        result = msg["result"]
        check_result_shape(result)
        return result

    def call_error(self, name, arguments=None, timeout=None):
        """tools/call that must fail at the JSON-RPC level; returns the error."""
        msg = self.call_raw(name, arguments, timeout)
        assert "error" in msg and "result" not in msg, (
            f"tools/call {name} {arguments!r}: expected a JSON-RPC error, got {msg!r}")
        return msg["error"]

    # ---- the process ---------------------------------------------------------------

    def stderr_text(self):
        self._stderr.flush()
        with open(self._stderr.fileno(), "rb", closefd=False) as f:
            f.seek(0)
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def close_stdin(self):
        try:
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    def close(self, timeout=90, check_sanitizers=True, expect_status=0):
        """EOF on stdin, then waits for the server to stop its sessions and exit.
        Returns its stderr; fails on a hang, a bad exit status or sanitizer reports."""
        self.close_stdin()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            raise AssertionError(f"codeq mcp did not exit within {timeout} s of EOF")
        # Its stdout ends with it, unless a process it leaked still holds it.
        self._reader.join(timeout=10)
        err = self.stderr_text()
        self._stderr.close()
        if check_sanitizers:
            assert_no_sanitizer_reports(err, "codeq mcp")
        if expect_status is not None:
            assert self.proc.returncode == expect_status, (
                f"codeq mcp exited with status {self.proc.returncode}; stderr {err[-3000:]!r}")
        assert not self._reader.is_alive(), (
            "codeq mcp exited but its stdout is still open: a process it started (and "
            "leaked) holds it")
        return err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self._reader.join(timeout=5)


# ---- results -------------------------------------------------------------------------


def check_result_shape(result):
    """A CallToolResult as codeq makes it: content blocks of known types, isError a
    bool, structuredContent and _codeq_error well-formed when present."""
    assert isinstance(result, dict), result
    assert isinstance(result.get("content"), list), result
    assert isinstance(result.get("isError"), bool), result
    for b in result["content"]:
        t = b.get("type")
        if t == "text":
            assert isinstance(b.get("text"), str), f"text block without text: {b!r}"
        elif t == "image":
            assert isinstance(b.get("data"), str) and isinstance(b.get("mimeType"), str), b
        elif t == "resource":
            res = b["resource"]
            assert isinstance(res.get("uri"), str) and res["uri"].startswith("file://"), b
            assert isinstance(res.get("mimeType"), str), b
            assert ("text" in res) != ("blob" in res), b
        elif t == "resource_link":
            for key, typ in (("uri", str), ("name", str), ("mimeType", str), ("size", int),
                             ("description", str)):
                assert isinstance(b.get(key), typ), f"resource_link without a {key}: {b!r}"
        else:
            raise AssertionError(f"unknown content block type {t!r}: {b!r}")
    sc = result.get("structuredContent")
    if sc is not None:
        assert isinstance(sc, dict), result
        if "exitCode" in sc:
            assert isinstance(sc["exitCode"], int) and not isinstance(sc["exitCode"], bool)
        if "executionTime" in sc:
            assert isinstance(sc["executionTime"], (int, float)) and sc["executionTime"] >= 0
    if "_codeq_error" in result:
        err = result["_codeq_error"]
        assert err["code"] in ("NOT_FOUND", "INVALID_ARGUMENT", "LIMIT_EXCEEDED", "TIMED_OUT",
                               "INTERNAL"), result
        assert result["isError"] is True, result


def texts(result):
    """The text of every text block."""
    return [b["text"] for b in result["content"] if b["type"] == "text"]


def all_text(result):
    return "\n".join(texts(result))


def images(result):
    return [b for b in result["content"] if b["type"] == "image"]


def resources(result):
    return [b["resource"] for b in result["content"] if b["type"] == "resource"]


def links(result):
    return [b for b in result["content"] if b["type"] == "resource_link"]


def error_code(result):
    return (result.get("_codeq_error") or {}).get("code")


def b64(data):
    return base64.b64encode(data).decode("ascii")


class Session:
    """Calls into one session of a server (sessionId None: the default session)."""

    def __init__(self, server, session_id=None):
        self.server = server
        self.id = session_id

    def _args(self, **kw):
        args = {k: v for k, v in kw.items() if v is not None}
        if self.id is not None:
            args["sessionId"] = self.id
        return args

    def call(self, tool, timeout=None, **kw):
        """Any tool with keyword arguments (None ones left out); timeout is the
        client's hang guard (pass a tool's own timeout through server.call)."""
        return self.server.call(tool, self._args(**kw), timeout=timeout)

    def code(self, code, language=None, timeout_s=None, clear=None, timeout=None):
        """executeCode; timeout_s is the tool's own timeout argument, timeout the
        client's hang guard."""
        return self.server.call("executeCode", self._args(code=code, language=language,
                                                          timeout=timeout_s, clearContext=clear),
                                timeout=timeout)

    def ok(self, code, language=None, **kw):
        """executeCode that must succeed; returns the result."""
        r = self.code(code, language, **kw)
        assert r["isError"] is False, f"{code!r} failed: {r!r}"
        return r

    def value(self, code, language=None, **kw):
        """The final expression's value (the text block after stdout), or None."""
        r = self.ok(code, language, **kw)
        return final_value(r)

    def cmd(self, command, timeout_s=None, timeout=None):
        return self.server.call("executeCommand", self._args(command=command, timeout=timeout_s),
                                timeout=timeout)

    def sh(self, command):
        """A command that must succeed; returns its stdout."""
        r = self.cmd(command)
        assert r["isError"] is False and r["structuredContent"]["exitCode"] == 0, (
            f"{command!r} failed: {r!r}")
        return r["structuredContent"]["stdout"]

    def read(self, *paths, timeout=None):
        return self.server.call("readFiles", self._args(paths=list(paths)), timeout=timeout)

    def write(self, *items, timeout=None):
        """items: (path, str) for text, (path, bytes) for blobs, or dicts."""
        content = []
        for item in items:
            if isinstance(item, dict):
                content.append(item)
            elif isinstance(item[1], bytes):
                content.append({"path": item[0], "blob": b64(item[1])})
            else:
                content.append({"path": item[0], "text": item[1]})
        return self.server.call("writeFiles", self._args(content=content), timeout=timeout)

    def list(self, directory=None, timeout=None):
        return self.server.call("listFiles", self._args(directoryPath=directory),
                                timeout=timeout)

    def remove(self, *paths, timeout=None):
        return self.server.call("removeFiles", self._args(paths=list(paths)), timeout=timeout)


# Content's label of stderr's block (docs/agentcore.md, "What content says").
STDERR_LABEL = "stderr:\n"


def final_value(result):
    """executeCode's value block: the text block that is neither stdout nor stderr (the
    latter labeled)."""
    sc = result["structuredContent"]
    rest = list(texts(result))
    for stream, block in (("stdout", sc.get("stdout")),
                          ("stderr", STDERR_LABEL + sc.get("stderr", ""))):
        if sc.get(stream):
            assert block in rest, result
            rest.remove(block)
    assert len(rest) <= 1, f"more than one value block: {result!r}"
    return rest[0] if rest else None


def start_session(server, **params):
    """startSession that must succeed; returns a Session."""
    r = server.call("startSession", params)
    assert r["isError"] is False, r
    return Session(server, r["structuredContent"]["sessionId"])


def wait_until(predicate, timeout, what, interval=0.05):
    """Polls predicate() until it returns something true; fails after timeout s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(interval)


# ---- what codeq leaves on the host ----------------------------------------------------

SANDBOX_UIDS = (1600000000, 1600001000)  # sandbox init and shims; sandboxed code


_CGROUP_OWNER = re.compile(r"/codeq/(\d+)-\d+$")


def _cgroup_owner(pid):
    """The pid of the codeq process whose sandbox the process lives in (its cgroups are
    named <codeq pid>-<n>, sandbox/supervisor.c), or None."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                m = _CGROUP_OWNER.search(line.rstrip("\n"))
                if m:
                    return int(m.group(1))
    except OSError:
        pass
    return None


def _is_codeq(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).split(" ")[0] == "codeq"
    except OSError:
        return False


def _pgid(pid):
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class HostWatch:
    """Finds what codeq processes started by the tests left on the host once they
    exited: sandbox processes (by their cgroup, named after the codeq process that
    made the sandbox), cgroups named after them, and stray codeq processes (forked
    helpers) in the tests' process group.

    Other codeq processes may run on the same host at the same time (other test
    runs): their sandboxes belong to other cgroups, and they run in other process
    groups, so they are never counted."""

    def __init__(self):
        proc_table = _e2e_conftest().proc_table
        self.pids = []  # codeq processes started under this watch
        self.before = set(proc_table())

    def leftovers(self, own_pids):
        codeq_cgroup_children = _e2e_conftest().codeq_cgroup_children
        proc_table = _e2e_conftest().proc_table
        own = set(own_pids)
        tracked = own | set(self.pids)
        group = os.getpgrp()
        table = proc_table()
        procs = {}
        for pid, info in table.items():
            if info[2] in ("Z", "X") and info[0] == 1:
                continue  # dead; the host's init reaps it
            if info[1] in SANDBOX_UIDS:
                owner = _cgroup_owner(pid)
                if owner in own or (owner is None and pid not in self.before and
                                    _pgid(pid) == group):
                    procs[pid] = info
            elif pid not in self.before and pid not in tracked and _is_codeq(pid) and \
                    _pgid(pid) == group and not _is_codeq(info[0]):
                procs[pid] = info  # a copy of codeq that outlived the codeq it came from
        prefixes = tuple(f"{pid}-" for pid in own)
        cgroups = {}
        if prefixes:
            for controller, names in codeq_cgroup_children().items():
                mine = [n for n in names if n.startswith(prefixes)]
                if mine:
                    cgroups[controller] = mine
        return procs, cgroups

    def assert_clean(self, own_pids=None, timeout=5):
        """Once every process in own_pids (default: self.pids) has exited: nothing of
        theirs remains (after a short grace for the kernel to reap)."""
        own_pids = self.pids if own_pids is None else own_pids
        deadline = time.monotonic() + timeout
        while True:
            procs, cgroups = self.leftovers(own_pids)
            if not procs and not cgroups:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"left behind by codeq {sorted(own_pids)}: processes {procs!r}, "
                    f"cgroups {cgroups!r}")
            time.sleep(0.1)


def processes_of(server_pid, text):
    """Host processes below server_pid whose command line contains text."""
    descendants = _e2e_conftest().descendants
    table = _e2e_conftest().proc_table()
    return {pid: table[pid] for pid in descendants(table, server_pid)
            if pid != server_pid and text in table[pid][3]}
