"""`codeq mcp`: the protocol's happy path and every tool, end to end.

initialize, ping and tools/list; each of the thirteen tools with its exact
structuredContent and content blocks; state kept across calls in Python, JavaScript
and TypeScript; final values, clearContext, exceptions, output captured at the file
descriptor level; timeouts (an interrupt that works, one that is ignored); matplotlib
figures; the memory limit; files (a 100 MB round trip, the size limit, text versus
bytes, listings, removal); background tasks; and sessions (names, environment,
paging, stopping, expiry, the session limit).

Most tests start a session of their own on one module-wide server; the server is shut
down at the end of the module, its stderr checked for sanitizer reports, and the host
checked for sandbox processes and cgroups it left behind.
"""

import base64
import hashlib
import os
import re
import struct
import subprocess
import time
import zlib
from datetime import datetime, timezone

import pytest

from conftest import descendants, proc_table
from mcp_client import (
    CODEQ,
    PROTOCOL_VERSION,
    assert_no_sanitizer_reports,
    processes_of,
    TOOL_NAMES,
    HostWatch,
    McpServer,
    STDERR_LABEL,
    Session,
    all_text,
    b64,
    error_code,
    final_value,
    images,
    links,
    resources,
    start_session,
    texts,
    wait_until,
)
from mcp_fixtures import host, new_server, sc, server, session  # noqa: F401 (fixtures)

JS = "javascript"
TS = "typescript"
EXEC_KEYS = {"stdout", "stderr", "exitCode", "executionTime", "cpuTime", "peakMemory"}
SESSION_KEYS = {"sessionId", "name", "status", "createdAt", "lastUpdatedAt",
                "sessionTimeoutSeconds", "networkMode", "networkAllow",
                "codeInterpreterIdentifier", "runtime", "runtimeDigest", "limits"}
ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def check_exec(result, stdout="", stderr="", exit_code=0, is_error=False):
    """executeCode/executeCommand: the exact structured content."""
    assert set(sc(result)) == EXEC_KEYS, result
    assert sc(result)["stdout"] == stdout, result
    assert sc(result)["stderr"] == stderr, result
    assert sc(result)["exitCode"] == exit_code, result
    assert result["isError"] is is_error, result


def check_png(data):
    """A complete, valid PNG: signature, chunk CRCs, IHDR first, IEND last, image data
    that inflates to exactly the size IHDR announces. Returns (width, height)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [k for k, _ in chunks]
    width, height, depth, color = struct.unpack(">IIBB", chunks[0][1][:10])
    assert width > 0 and height > 0 and depth == 8
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    raw = zlib.decompress(b"".join(b for k, b in chunks if k == b"IDAT"))
    assert len(raw) == height * (1 + width * channels)
    return width, height


# ----------------------------------------------------------------------------------
# The protocol


def test_initialize_ping_and_tools_list(server):
    """initialize answers protocol 2025-06-18 with serverInfo; ping answers {};
    tools/list lists exactly the thirteen tools, each with a description and an
    object inputSchema naming its arguments."""
    init = server.initialize()
    assert init["protocolVersion"] == PROTOCOL_VERSION
    assert init["serverInfo"]["name"] == "codeq"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", init["serverInfo"]["version"]), init
    assert init["capabilities"] == {"tools": {"listChanged": False}}
    assert server.result("ping") == {}

    tools = server.result("tools/list")["tools"]
    names = [t["name"] for t in tools]
    assert sorted(names) == sorted(TOOL_NAMES) and len(names) == 13, names
    by_name = {t["name"]: t for t in tools}
    for t in tools:
        assert isinstance(t["description"], str) and t["description"], t
        schema = t["inputSchema"]
        assert isinstance(schema, dict) and schema["type"] == "object", t
        assert isinstance(schema["properties"], dict), t
        for req in schema.get("required", []):
            assert req in schema["properties"], t
    required = {
        "executeCode": ["code"], "executeCommand": ["command"], "readFiles": ["paths"],
        "removeFiles": ["paths"], "writeFiles": ["content"],
        "startCommandExecution": ["command"], "getTask": ["taskId"], "stopTask": ["taskId"],
        "stopSession": ["sessionId"], "getSession": ["sessionId"],
    }
    for name, req in required.items():
        assert by_name[name]["inputSchema"]["required"] == req, by_name[name]
    for name in TOOL_NAMES[:9]:
        assert "sessionId" in by_name[name]["inputSchema"]["properties"], name
    code_props = by_name["executeCode"]["inputSchema"]["properties"]
    assert code_props["language"]["enum"] == ["python", "javascript", "typescript"]
    assert set(code_props) >= {"code", "language", "clearContext", "runtime", "timeout"}
    assert "directoryPath" in by_name["listFiles"]["inputSchema"]["properties"]
    assert set(by_name["startSession"]["inputSchema"]["properties"]) >= {
        "name", "sessionTimeoutSeconds", "memory", "disk", "cpus", "pids", "env",
        "networkMode", "networkAllow"}
    net = by_name["startSession"]["inputSchema"]["properties"]
    assert net["networkMode"]["enum"] == ["NONE", "PUBLIC", "ALLOWLIST"]
    assert net["networkAllow"]["items"] == {"type": "string"}
    assert set(by_name["listSessions"]["inputSchema"]["properties"]) >= {
        "status", "maxResults", "nextToken"}


def test_mcp_help():
    r = subprocess.run([CODEQ, "mcp", "--help"], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r
    assert r.stdout.startswith("usage: codeq mcp [--warm-pool N] [--max-sessions N]")
    assert "(default 1;" in r.stdout and "protocol 2024-11-05" in r.stdout
    assert "2025-06-18" in r.stdout and "2025-11-25" in r.stdout
    assert "--brokers" in r.stdout


@pytest.mark.parametrize("args, text", [
    (["--warm-pool", "17"], "codeq mcp: --warm-pool: "),
    (["--warm-pool", "x"], "codeq mcp: --warm-pool: "),
    (["--max-sessions", "0"], "codeq mcp: --max-sessions: "),
    (["--bogus"], "codeq mcp: unknown option '--bogus'"),
])
def test_mcp_usage_errors(args, text):
    r = subprocess.run([CODEQ, "mcp", *args], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and r.stdout == "", r
    assert r.stderr.startswith(text), r
    assert_no_sanitizer_reports(r.stderr)


def test_default_session_is_created_on_first_use_and_shared(host):
    """Calls without a sessionId share one default session, started by the first of
    them; when it is stopped, the next such call gets a fresh one."""
    srv = new_server(host, "--warm-pool", "0")
    try:
        assert sc(srv.call("listSessions", {}))["items"] == []
        default = Session(srv)
        assert default.code("shared = 'yes'")["isError"] is False
        items = sc(srv.call("listSessions", {}))["items"]
        assert len(items) == 1 and items[0]["status"] == "READY", items
        first_id = items[0]["sessionId"]
        # The same session for every tool: code, files, commands.
        assert default.value("shared") == "'yes'"
        assert default.write(("from-tool.txt", "t\n"))["isError"] is False
        assert default.sh("cat from-tool.txt; ls") == "t\nfrom-tool.txt\n"
        assert len(sc(srv.call("listSessions", {}))["items"]) == 1

        stopped = srv.call("stopSession", {"sessionId": first_id})
        assert sc(stopped)["status"] == "TERMINATED"
        r = default.code("shared")
        assert r["isError"] is True and "NameError" in sc(r)["stderr"], r
        items = sc(srv.call("listSessions", {"status": "READY"}))["items"]
        assert len(items) == 1 and items[0]["sessionId"] != first_id, items
    finally:
        srv.close()


# ----------------------------------------------------------------------------------
# executeCode: Python


def test_python_state_persists_across_calls(session):
    """Variables, imports and functions persist; a statement-only cell has no content
    at all and empty streams."""
    r = session.code("import math\nx = 41\ndef inc(v):\n    return v + 1")
    check_exec(r)
    assert r["content"] == []
    r = session.code("inc(x)")
    check_exec(r)
    assert r["content"] == [{"type": "text", "text": "42"}]
    assert session.value("math.sqrt(16) + inc(0)") == "5.0"
    assert session.value("y = [inc(i) for i in range(3)]\ny") == "[1, 2, 3]"
    assert session.value("_") == "[1, 2, 3]"  # the last value, as in a REPL


def test_execution_time_written_to_the_microsecond(server, session):
    """executionTime is milliseconds with at most three decimals on the wire (not
    jansson's 17 digits, 8000.7420000000002), in every result of a few calls."""
    for _ in range(5):
        check_exec(session.code("sum(range(1000))"))
    times = [m.group(1) for line in server.lines
             for m in re.finditer(rb'"executionTime":([0-9.eE+-]+)', line)]
    assert len(times) >= 5, times
    assert all(re.fullmatch(rb"\d+(\.\d{1,3})?", t) for t in times), times


def test_python_files_shared_with_file_tools(session):
    """A file written by code is read by readFiles, one written by writeFiles is read
    by code: one file system."""
    session.ok("open('from_code.txt', 'w').write('written by code\\n')\n"
               "open('from_code.bin', 'wb').write(bytes([0, 255, 1]))")
    r = session.read("from_code.txt", "from_code.bin")
    assert r["isError"] is False
    assert resources(r) == [
        {"uri": "file://from_code.txt", "mimeType": "text/plain", "text": "written by code\n"},
        {"uri": "file://from_code.bin", "mimeType": "application/octet-stream",
         "blob": b64(bytes([0, 255, 1]))},
    ]
    w = session.write(("from_tool.txt", "h\u00e4ll\u00f6 tool\n"), ("data/raw.bin", b"\x00\x01"))
    assert w["isError"] is False
    assert texts(w) == ["wrote from_tool.txt (13 bytes)", "wrote data/raw.bin (2 bytes)"]
    assert session.value("open('from_tool.txt', encoding='utf-8').read()") == \
        repr("h\u00e4ll\u00f6 tool\n")
    assert session.value("open('data/raw.bin', 'rb').read()") == "b'\\x00\\x01'"
    assert session.value("import os; os.getcwd()") == "'/workspace'"


def test_python_imports_what_was_installed_after_it_started(session):
    """A package that lands in the user site (where `pip install` puts it in a session:
    HOME is the workspace) after the kernel started is importable in the next cell,
    ahead of the runtime's own packages, as in a fresh interpreter."""
    site_dir = session.value("import site; site.getusersitepackages()").strip("'")
    assert site_dir.startswith("/workspace/.local/lib/python3"), site_dir
    assert session.value("import os; os.path.isdir(site.getusersitepackages())") == "False"
    rel = site_dir[len("/workspace/"):]
    w = session.write((f"{rel}/cqlate/__init__.py", "WHO = 'installed late'\n"),
                      (f"{rel}/idna.py", "WHO = 'own idna'\n"))
    assert w["isError"] is False, w
    assert session.value("import cqlate; cqlate.WHO") == "'installed late'"
    # idna is also in the runtime (Debian's python3-idna) and not yet imported, not even
    # by a kernel that preloaded numpy, pandas and matplotlib (as forked ones have).
    assert session.value("import idna; idna.WHO") == "'own idna'"
    # A second package into the now existing directory: seen at once too.
    session.write((f"{rel}/cqlater.py", "WHO = 'later still'\n"))
    assert session.value("import cqlater; cqlater.WHO") == "'later still'"


# ----------------------------------------------------------------------------------
# executeCode: JavaScript and TypeScript


def test_javascript_state_persists_across_calls(session):
    """const, let, var, class and function declarations persist; redeclaring a const
    in a later call works; top-level await works and its declarations persist."""
    session.ok("const c = 1; let l = 2; var v = 3;\nclass K { m() { return 7 } }\n"
               "function f(x) { return x * 2 }\n", JS)
    assert session.value("[c, l, v, new K().m(), f(21)]", JS) == "[ 1, 2, 3, 7, 42 ]"
    assert session.value("const c = 10; let l = 20; class K { m() { return 70 } }\n"
                         "[c, l, new K().m()]", JS) == "[ 10, 20, 70 ]"
    assert session.value("c + l", JS) == "30"
    assert session.value("async function twice(n) { return 2 * n }\n"
                         "const awaited = await twice(await Promise.resolve(21));\n"
                         "awaited", JS) == "42"
    assert session.value("[awaited, typeof twice]", JS) == "[ 42, 'function' ]"
    assert session.value("const { a, b: [b1] } = { a: 5, b: [6] }; a + b1", JS) == "11"


def test_javascript_console_streams_are_separate(session):
    """console.log and process.stdout go to stdout, console.error to stderr; the value
    comes between them in content."""
    r = session.code("console.log('out'); console.error('err');\n"
                     "process.stdout.write('w\\n'); process.stderr.write('e2\\n'); 'v'", JS)
    check_exec(r, stdout="out\nw\n", stderr="err\ne2\n")
    assert r["content"] == [{"type": "text", "text": "out\nw\n"},
                            {"type": "text", "text": "'v'"},
                            {"type": "text", "text": "stderr:\nerr\ne2\n"}]


def test_typescript_types_imports_and_state_shared_with_javascript(session):
    """TypeScript: interfaces, type aliases, generics, enums and imports are
    transpiled; its declarations live in the same Node context as JavaScript's."""
    r = session.code(
        "import { join } from 'path';\n"
        "import * as os from 'os';\n"
        "interface Pt { x: number; y: number }\n"
        "type Name = string;\n"
        "enum Color { Red, Green }\n"
        "const p: Pt = { x: 3, y: 4 };\n"
        "const n: Name = join('a', 'b');\n"
        "function area(q: Pt): number { return q.x * q.y }\n"
        "function ident<T>(v: T): T { return v }\n"
        "[area(p), n, Color.Green, ident<string>('t'), typeof os.cpus]", TS)
    check_exec(r)
    assert final_value(r) == "[ 12, 'a/b', 1, 't', 'function' ]"
    # TypeScript's declarations, seen from JavaScript ...
    assert session.value("[p.x, n, area({ x: 2, y: 5 }), Color.Red]", JS) == "[ 3, 'a/b', 10, 0 ]"
    # ... and JavaScript's from TypeScript.
    session.ok("const fromJs = 'js'; let counter = 1;", JS)
    assert session.value("counter += 1; const s: string = fromJs + counter; s", TS) == "'js2'"
    assert session.value("counter", JS) == "2"


# ----------------------------------------------------------------------------------
# Final values


@pytest.mark.parametrize("language, code, stdout, value", [
    ("python", "1 + 1", "", "2"),
    ("python", "'a' * 3", "", "'aaa'"),
    ("python", "None", "", None),
    ("python", "z = 5", "", None),
    ("python", "print('hi')", "hi\n", None),
    ("python", "print('a')\n{'k': [1, 2]}", "a\n", "{'k': [1, 2]}"),
    ("python", "def g():\n    return 1", "", None),
    (JS, "1 + 1", "", "2"),
    (JS, "'a'.repeat(3)", "", "'aaa'"),
    (JS, "undefined", "", None),
    (JS, "null", "", "null"),
    (JS, "const q = 5", "", None),
    (JS, "console.log('a'); ({ k: [1, 2] })", "a\n", "{ k: [ 1, 2 ] }"),
    (TS, "const t: number = 6; t * 7", "", "42"),
])
def test_final_expression_value(session, language, code, stdout, value):
    """The value of a final expression is a text block after stdout; statements,
    None and undefined give none."""
    r = session.code(code, language)
    check_exec(r, stdout=stdout)
    expected = ([{"type": "text", "text": stdout}] if stdout else []) + \
        ([{"type": "text", "text": value}] if value is not None else [])
    assert r["content"] == expected


def test_javascript_cell_ending_in_declarations_has_no_value(session):
    """A JavaScript cell whose last statement is a declaration has no value, whatever
    came before it (as in Python, and in Node's REPL)."""
    for code in ("let w = 5\nfunction wf() {}", "class A {}\nfunction af() {}"):
        r = session.code(code, JS)
        assert r["isError"] is False, r
        assert r["content"] == [], f"{code!r} returned a value: {r['content']!r}"


def test_pandas_dataframe_value_is_a_table(session):
    """A DataFrame as the final value comes back as pandas' text table."""
    r = session.code("import pandas as pd\n"
                     "pd.DataFrame({'name': ['ann', 'bob'], 'score': [1.5, 20.0]})")
    check_exec(r)
    assert final_value(r) == "  name  score\n0  ann    1.5\n1  bob   20.0"


# ----------------------------------------------------------------------------------
# clearContext


def test_clear_context_in_each_language(session):
    """clearContext drops the variables (and imports) of the language it is given
    with; Python and Node are separate contexts, JavaScript and TypeScript one."""
    session.ok("import json\npy_var = 1")
    session.ok("const jsVar = 2; function jsFn() { return 3 }", JS)
    session.ok("const tsVar: number = 4", TS)

    r = session.code("'py_var' in dir(), 'json' in dir()", clear=True)
    check_exec(r)
    assert final_value(r) == "(False, False)"
    r = session.code("py_var")
    assert r["isError"] is True and "NameError: name 'py_var' is not defined" in sc(r)["stderr"]
    # Python's clear left Node alone.
    assert session.value("[jsVar, jsFn(), tsVar]", JS) == "[ 2, 3, 4 ]"

    r = session.code("[typeof jsVar, typeof jsFn, typeof tsVar]", JS, clear=True)
    check_exec(r)
    assert final_value(r) == "[ 'undefined', 'undefined', 'undefined' ]"
    session.ok("const tsAgain: number = 5", TS)
    r = session.code("typeof tsAgain", TS, clear=True)
    assert final_value(r) == "'undefined'"
    # What a cell needs is still there after a clear.
    assert session.value("require('path').join('a', 'b')", JS) == "'a/b'"
    assert session.value("import os\nos.getcwd()") == "'/workspace'"


# ----------------------------------------------------------------------------------
# Errors in user code


def test_python_exception(session):
    """An exception: isError, exit code 1, a traceback on stderr that points at the
    cell's lines (and not at the kernel); the session keeps its state and works."""
    r = session.code("before = 'kept'\ndef f():\n    raise ValueError('bad value')\n\nf()")
    check_exec(r, stderr=sc(r)["stderr"], exit_code=1, is_error=True)
    err = sc(r)["stderr"]
    assert err.startswith("Traceback (most recent call last):\n"), err
    assert re.search(r'File "<cell-\d+>", line 5, in <module>\n', err), err
    assert re.search(r'File "<cell-\d+>", line 3, in f\n', err), err
    assert err.endswith("ValueError: bad value\n"), err
    # Each frame shows its line of the cell's source.
    assert re.search(r'line 5, in <module>\n    f\(\)\n', err), err
    assert re.search(r"line 3, in f\n    raise ValueError\('bad value'\)\n", err), err
    assert "codeq_kernel" not in err, err
    assert "_codeq_error" not in r  # the code failed, not the service
    assert r["content"] == [{"type": "text", "text": "stderr:\n" + err}]
    assert session.value("before") == "'kept'"

    r = session.code("x = 1\nif x:\n    y = (\n")
    assert r["isError"] is True
    assert re.search(r'File "<cell-\d+>", line 3', sc(r)["stderr"]), r
    assert "SyntaxError" in sc(r)["stderr"], r

    r = session.code("print('leaving')\nraise SystemExit(3)")
    # The status it asked for is the exit code (codeq exec exits with it).
    check_exec(r, stdout="leaving\n", stderr="SystemExit: 3\n", exit_code=3, is_error=True)
    check_exec(session.code("import sys\nsys.exit(0)"))
    assert session.value("before + '!'") == "'kept!'"


def test_javascript_and_typescript_exceptions(session):
    """A thrown error: isError, the stack on stderr with the cell's lines; a rejected
    top-level await too; the context survives."""
    r = session.code("const before = 'kept';\nfunction g() {\n  throw new Error('boom');\n}\ng();",
                     JS)
    check_exec(r, stderr=sc(r)["stderr"], exit_code=1, is_error=True)
    err = sc(r)["stderr"]
    # The line it was thrown at first, as Node shows an uncaught error's.
    assert re.match(r"cell-\d+\.js:3\n  throw new Error\('boom'\);\n {8}\^\n\nError: boom\n",
                    err), err
    assert re.search(r"at g \(cell-\d+\.js:3:9\)", err), err
    assert re.search(r"at cell-\d+\.js:5:1", err), err
    assert "codeq_kernel" not in err, err
    assert session.value("before", JS) == "'kept'"

    r = session.code("await Promise.reject(new TypeError('async boom'))", JS)
    assert r["isError"] is True and "TypeError: async boom" in sc(r)["stderr"], r
    r = session.code("x = 1 +", JS)
    assert r["isError"] is True and "SyntaxError" in sc(r)["stderr"], r
    r = session.code("const n: number = 1;\nthrow new RangeError('ts boom');", TS)
    assert r["isError"] is True and "RangeError: ts boom" in sc(r)["stderr"], r
    assert session.value("before + '!'", JS) == "'kept!'"


# ----------------------------------------------------------------------------------
# Output capture


def test_python_output_captured_at_fd_level(session):
    """print, a shell child (os.system), raw writes to fds 1 and 2, a subprocess and
    C stdio all land in the right stream, in order."""
    r = session.code(
        "import ctypes, os, subprocess, sys\n"
        "print('p1')\n"
        "os.system('echo child; echo child-err >&2')\n"
        "os.write(1, b'fd1\\n')\n"
        "os.write(2, b'fd2\\n')\n"
        "subprocess.run(['sh', '-c', 'echo sub; echo sub-err >&2'])\n"
        "print('e1', file=sys.stderr)\n"
        "n = ctypes.CDLL(None).printf(b'c-printf\\n')\n")
    check_exec(r, stdout="p1\nchild\nfd1\nsub\nc-printf\n",
               stderr="child-err\nfd2\nsub-err\ne1\n")
    assert texts(r) == ["p1\nchild\nfd1\nsub\nc-printf\n",
                        "stderr:\nchild-err\nfd2\nsub-err\ne1\n"]


def test_javascript_output_captured_at_fd_level(session):
    """Node: a child process inheriting the fds and raw fs.writeSync are captured."""
    r = session.code(
        "const cp = require('child_process'); const fs = require('fs');\n"
        "console.log('log');\n"
        "cp.execSync('echo child; echo child-err >&2', { stdio: 'inherit' });\n"
        "fs.writeSync(1, 'fd1\\n'); fs.writeSync(2, 'fd2\\n');\n"
        "cp.spawnSync('sh', ['-c', 'echo spawned'], { stdio: 'inherit' }).status", JS)
    check_exec(r, stdout="log\nchild\nfd1\nspawned\n", stderr="child-err\nfd2\n")
    assert final_value(r) == "0"


def test_large_output_is_bounded(session):
    """More than the per-stream limit (1 MiB) of output: the call still answers, the
    kept text is bounded: its first and its last half MiB, with a note of what was cut
    between."""
    r = session.code("import sys\nsys.stdout.write('x' * (3 << 20) + 'y' * 10)\n'done'")
    check_exec(r, stdout=sc(r)["stdout"])
    half = 1 << 19
    assert sc(r)["stdout"] == "x" * half + (
        f"\n[codeq: output too long: {(3 << 20) + 10 - (1 << 20)} bytes (0 lines) cut here; "
        f"the first {half} and the last {half} bytes are shown]\n") + "x" * (half - 10) + "y" * 10
    assert final_value(r) == "'done'"


def test_python_traceback_shows_lines_of_earlier_cells(session):
    """A function defined in one cell and failing when called from a later one: the
    traceback shows both cells' lines; a syntax error shows its line too."""
    session.ok("def ratio(a, b):\n    scale = 10\n    return scale * a / b")
    r = session.code("values = [1, 2]\nratio(values[0], 0)")
    err = sc(r)["stderr"]
    assert re.search(r'File "<cell-\d+>", line 2, in <module>\n    ratio\(values\[0\], 0\)\n',
                     err), err
    assert re.search(r'File "<cell-\d+>", line 3, in ratio\n    return scale \* a / b\n', err), err
    assert err.endswith("ZeroDivisionError: division by zero\n"), err
    assert texts(r) == ["stderr:\n" + err]
    r = session.code("x = 1\ny = (2,\n")
    assert "y = (2," in sc(r)["stderr"] and "SyntaxError" in sc(r)["stderr"], r


def test_large_output_keeps_its_end(session):
    """5 MB of output ending in THE END: the result keeps its first and its last half
    MiB, THE END included, and says how many bytes and lines were cut between; from a
    command and from a cell, on stdout and on stderr alike, in content as well."""
    line = "0123456789" * 9 + "abcdefghi\n"  # 100 bytes
    data = line * 50000 + "THE END\n"
    half = 1 << 19
    cut = len(data) - 2 * half
    note = (f"[codeq: output too long: {cut} bytes ({data[half:-half].count(chr(10))} lines) "
            f"cut here; the first {half} and the last {half} bytes are shown]\n")
    # The head ends inside a line: the note gets a line of its own.
    want = data[:half] + "\n" + note + data[-half:]
    assert data[-half:].endswith("THE END\n")
    shell = f"yes {line[:-1]} | head -n 50000; echo 'THE END'"
    code = f"import sys\nsys.stdout.write({line!r} * 50000 + 'THE END\\n')"
    for call, stream in ((lambda: session.cmd(shell), "stdout"),
                         (lambda: session.cmd(f"{{ {shell}; }} >&2; exit 9"), "stderr"),
                         (lambda: session.code(code), "stdout")):
        r = call()
        assert sc(r)[stream] == want, sc(r)[stream][half - 200:half + 300]
        # Content shows the same (stderr labeled), which frameworks pass on.
        assert (STDERR_LABEL if stream == "stderr" else "") + want in texts(r), r["content"]
    r = session.cmd(f"{{ {shell}; }} >&2; exit 9")
    assert texts(r) == [STDERR_LABEL + want, "exit code 9"]


# ----------------------------------------------------------------------------------
# executeCommand


def test_execute_command(session):
    """/bin/sh -c in /workspace as the sandbox user: stdout and stderr apart, the real
    exit code; a silent command says so in content."""
    session.write(("seen.txt", "data\n"))
    r = session.cmd("echo out; echo err >&2; pwd; cat seen.txt; id -u; exit 3")
    check_exec(r, stdout="out\n/workspace\ndata\n1000\n", stderr="err\n", exit_code=3,
               is_error=True)
    assert "_codeq_error" not in r
    assert texts(r) == ["out\n/workspace\ndata\n1000\n", "stderr:\nerr\n", "exit code 3"]
    r = session.cmd("true")
    check_exec(r)
    assert texts(r) == ["(no output) exit code 0"]
    r = session.cmd("kill -TERM $$")
    check_exec(r, exit_code=128 + 15, is_error=True, stderr=sc(r)["stderr"])
    r = session.cmd("no-such-command-xyz")
    assert sc(r)["exitCode"] == 127 and "not found" in sc(r)["stderr"], r


# ----------------------------------------------------------------------------------
# Timeouts


def test_python_timeout_interrupts_and_keeps_variables(session):
    """timeout 1 on an endless loop: interrupted (KeyboardInterrupt), TIMED_OUT, and
    the variables set before survive."""
    session.ok("kept = 'still here'")
    r = session.code("counter = 0\nwhile True:\n    counter += 1", timeout_s=1)
    assert r["isError"] is True and sc(r)["exitCode"] == 1, r
    assert r["_codeq_error"] == {"code": "TIMED_OUT",
                                 "message": "timed out; the cell was interrupted"}
    err = sc(r)["stderr"]
    assert "KeyboardInterrupt" in err and re.search(r'File "<cell-\d+>", line [23]', err), err
    assert err.endswith("codeq: timed out after 1 s; the cell was interrupted "
                        "(variables are kept)\n"), err
    assert session.value("kept") == "'still here'"
    assert int(session.value("counter")) > 0


def test_python_timeout_restarts_a_kernel_that_ignores_the_interrupt(session):
    """A cell that swallows KeyboardInterrupt: after the grace the kernel is killed
    and restarted, the result says the context was reset; the next call works in a
    fresh interpreter."""
    session.ok("kept = 1")
    r = session.code("import time\nwhile True:\n    try:\n        time.sleep(10)\n"
                     "    except KeyboardInterrupt:\n        pass", timeout_s=1)
    assert r["isError"] is True and sc(r)["exitCode"] == 1, r
    assert r["_codeq_error"] == {"code": "TIMED_OUT",
                                 "message": "timed out; the context was reset"}
    assert "the Python kernel did not stop within 2 s of the interrupt and was restarted: " \
           "the context (variables, imports) was reset" in sc(r)["stderr"], r
    r = session.code("kept")
    assert r["isError"] is True and "NameError" in sc(r)["stderr"], r
    assert session.value("2 + 2") == "4"


def test_javascript_timeouts(session):
    """JavaScript: a busy loop and a pending await are interrupted with the context
    kept; a cell blocked in native code (execSync) gets the kernel restarted."""
    session.ok("let kept = 'js kept'", JS)
    r = session.code("let spins = 0; while (true) { spins++ }", JS, timeout_s=1)
    assert r["isError"] is True and error_code(r) == "TIMED_OUT", r
    assert "interrupted" in sc(r)["stderr"] and \
        "the cell was interrupted (variables are kept)" in sc(r)["stderr"], r
    assert session.value("kept", JS) == "'js kept'"

    r = session.code("const pending = 1; await new Promise(() => {})", JS, timeout_s=1)
    assert r["isError"] is True and error_code(r) == "TIMED_OUT", r
    assert session.value("[kept, pending]", JS) == "[ 'js kept', 1 ]"

    r = session.code("require('child_process').execSync('sleep 100; : js-marker')", JS,
                     timeout_s=1)
    assert r["isError"] is True and error_code(r) == "TIMED_OUT", r
    assert r["_codeq_error"]["message"] == "timed out; the context was reset"
    assert "the JavaScript kernel did not stop within 2 s of the interrupt and was " \
           "restarted" in sc(r)["stderr"], r
    assert session.value("typeof kept", JS) == "'undefined'"
    assert session.value("1 + 1", JS) == "2"
    assert processes_of(session.server.pid, "js-marker") == {}


def test_command_timeout(session):
    """executeCommand with timeout 1 on sleep 100: killed (137), TIMED_OUT, a note on
    stderr, nothing left running."""
    r = session.cmd("echo before; sleep 100; : cmd-marker", timeout_s=1)
    check_exec(r, stdout="before\n", stderr=sc(r)["stderr"], exit_code=137, is_error=True)
    assert error_code(r) == "TIMED_OUT", r
    assert sc(r)["stderr"] == ("codeq: timed out after 1 s; the command and everything it "
                               "started were killed\n")
    assert processes_of(session.server.pid, "cmd-marker") == {}


def test_service_errors_carry_a_message(session):
    """Every _codeq_error has a message, as executeCode's do."""
    results = [
        session.cmd("sleep 100", timeout_s=1),
        session.read("does-not-exist"),
        session.write(("/abs", "x")),
        session.remove("missing"),
    ]
    for r in results:
        err = r["_codeq_error"]
        assert isinstance(err.get("message"), str) and err["message"], r


# ----------------------------------------------------------------------------------
# Images


def test_matplotlib_figures_come_back_as_images(session):
    """Open figures (no savefig) come back as PNG image blocks, one per figure, and
    are closed afterwards."""
    r = session.code(
        "import matplotlib.pyplot as plt\n"
        "fig1 = plt.figure(figsize=(4, 3)); plt.plot([1, 2, 3], [3, 1, 2])\n"
        "fig2 = plt.figure(figsize=(2, 2)); plt.bar(['a', 'b'], [1, 2])\n"
        "print('drawn')")
    check_exec(r, stdout="drawn\n")
    imgs = images(r)
    assert len(imgs) == 2, r["content"]
    assert r["content"][0] == {"type": "text", "text": "drawn\n"}
    sizes = []
    for img in imgs:
        assert img["mimeType"] == "image/png"
        sizes.append(check_png(base64.b64decode(img["data"], validate=True)))
    assert sizes[0] != sizes[1], sizes  # two different figures, in order
    assert sizes[0][0] > sizes[1][0]

    r = session.code("plt.get_fignums()")
    check_exec(r)
    assert final_value(r) == "[]" and images(r) == []
    r = session.code("f = plt.figure(); plt.plot([1]); plt.savefig('saved.png'); plt.close(f)")
    check_exec(r)
    assert images(r) == []
    png = resources(session.read("saved.png"))[0]
    assert png["mimeType"] == "image/png"
    check_png(base64.b64decode(png["blob"]))


# ----------------------------------------------------------------------------------
# Memory


def test_memory_limit_kills_the_kernel_and_the_session_recovers(server):
    """A session with memory 128M whose code allocates 1 GB: the kernel dies by the
    OOM killer, the result says so and that the context was reset; the session works
    afterwards, in code and in commands."""
    s = start_session(server, memory="128M")
    try:
        s.ok("kept = 1")
        r = s.code("block = bytearray(1 << 30)")
        check_exec(r, stderr=sc(r)["stderr"], exit_code=1, is_error=True)
        assert sc(r)["stderr"] == (
            "codeq: the Python kernel died (it was killed by the kernel's OOM killer: the "
            "session's memory limit was reached) and will be restarted: the context "
            "(variables, imports) was reset\n")
        r = s.code("kept")
        assert r["isError"] is True and "NameError" in sc(r)["stderr"]
        assert s.value("len(bytearray(16 << 20))") == str(16 << 20)

        r = s.cmd("python3 -c 'b = bytearray(1 << 30)'")
        assert sc(r)["exitCode"] == 137 and r["isError"] is True, r
        assert "OOM killer" in sc(r)["stderr"], r
        assert s.sh("echo alive") == "alive\n"
    finally:
        server.call("stopSession", {"sessionId": s.id})


def test_death_note_survives_a_full_stderr(server):
    """A cell that filled its stderr past the output limit (1 MiB) and was then
    OOM-killed: the result still says that the kernel died and the context was reset."""
    s = start_session(server, memory="128M")
    try:
        r = s.code("import sys\nsys.stderr.write('e' * (2 << 20))\nsys.stderr.flush()\n"
                   "block = bytearray(1 << 30)")
        assert r["isError"] is True, r
        err = sc(r)["stderr"]
        assert "[codeq: output too long" in err
        assert "the Python kernel died" in all_text(r) and "was reset" in all_text(r), err[-500:]
    finally:
        server.call("stopSession", {"sessionId": s.id})


# ----------------------------------------------------------------------------------
# Files


def test_100mb_binary_round_trip(session):
    """100 MB of random bytes through writeFiles (blob) and back through readFiles,
    byte for byte (sha256 on both sides, and inside the sandbox)."""
    data = os.urandom(100 << 20)
    digest = hashlib.sha256(data).hexdigest()
    w = session.write(("big/random.bin", data), timeout=300)
    assert w["isError"] is False, w
    assert texts(w) == [f"wrote big/random.bin ({100 << 20} bytes)"]
    assert session.sh("sha256sum big/random.bin") == f"{digest}  big/random.bin\n"
    r = session.read("big/random.bin", timeout=300)
    assert r["isError"] is False
    (res,) = resources(r)
    assert res["uri"] == "file://big/random.bin"
    assert res["mimeType"] == "application/octet-stream"
    got = base64.b64decode(res["blob"], validate=True)
    assert len(got) == len(data) and hashlib.sha256(got).hexdigest() == digest
    session.remove("big")


def test_write_above_100mb_is_refused(session):
    """A blob of 100 MB + 1 byte: LIMIT_EXCEEDED, nothing written."""
    w = session.write(("too-big.bin", b"\0" * ((100 << 20) + 1)), ("small.txt", "ok"),
                      timeout=300)
    assert w["isError"] is True and error_code(w) == "LIMIT_EXCEEDED", w
    assert texts(w) == [
        f"writeFiles: too-big.bin: {(100 << 20) + 1} bytes is above the limit of "
        f"{100 << 20} per file",
        "wrote small.txt (2 bytes)",
    ]
    assert session.sh("ls") == "small.txt\n"


def test_read_above_100mb_is_refused_with_limit_exceeded(session):
    """readFiles of a file above 100 MB (made by code) is refused, quickly, with
    LIMIT_EXCEEDED."""
    session.sh("truncate -s 101M sparse.bin")
    r = session.read("sparse.bin")
    assert r["isError"] is True
    assert texts(r) == ["readFiles: sparse.bin: larger than the 100 MB limit"]
    assert error_code(r) == "LIMIT_EXCEEDED", r


def test_text_and_binary_detection(session):
    """UTF-8 comes back as text, anything else (invalid UTF-8, NUL bytes) as a base64
    blob; MIME types follow the extension."""
    session.write(
        ("utf8.txt", "gr\u00fc\u00dfe \u2603 \U0001F600\n"),
        ("latin1.txt", "gr\u00fc\u00dfe".encode("latin-1")),
        ("nul.txt", b"a\0b"),
        ("empty.txt", ""),
        ("table.csv", "a,b\n1,2\n"),
        ("data.json", '{"k": 1}'),
        ("noext", "plain words"),
        ("blob", bytes(range(256))),
        ("pic.png", b"\x89PNG\r\n\x1a\nrest"),
    )
    r = session.read("utf8.txt", "latin1.txt", "nul.txt", "empty.txt", "table.csv",
                     "data.json", "noext", "blob", "pic.png")
    assert r["isError"] is False
    # Each file is named in a text block before its resource (docs/agentcore.md).
    assert texts(r) == [
        f"file: {res['uri'][len('file://'):]} ("
        f"{len(res['text'].encode()) if 'text' in res else len(base64.b64decode(res['blob']))}"
        f" bytes, {res['mimeType']}{'' if 'text' in res else ', binary'})"
        for res in resources(r)]
    assert [b["type"] for b in r["content"]] == ["text", "resource"] * 9
    assert resources(r) == [
        {"uri": "file://utf8.txt", "mimeType": "text/plain",
         "text": "gr\u00fc\u00dfe \u2603 \U0001F600\n"},
        {"uri": "file://latin1.txt", "mimeType": "text/plain",
         "blob": b64("gr\u00fc\u00dfe".encode("latin-1"))},
        {"uri": "file://nul.txt", "mimeType": "text/plain", "blob": b64(b"a\0b")},
        {"uri": "file://empty.txt", "mimeType": "text/plain", "text": ""},
        {"uri": "file://table.csv", "mimeType": "text/csv", "text": "a,b\n1,2\n"},
        {"uri": "file://data.json", "mimeType": "application/json", "text": '{"k": 1}'},
        {"uri": "file://noext", "mimeType": "text/plain", "text": "plain words"},
        {"uri": "file://blob", "mimeType": "application/octet-stream",
         "blob": b64(bytes(range(256)))},
        {"uri": "file://pic.png", "mimeType": "image/png",
         "blob": b64(b"\x89PNG\r\n\x1a\nrest")},
    ]


def test_write_files_creates_directories_owned_by_the_sandbox_user(session):
    """writeFiles makes missing directories; files and directories belong to the
    sandbox user (uid 1000 inside); an existing file is replaced; a failing item does
    not stop the others."""
    w = session.write(("a/b/c.txt", "deep"), ("a/top.txt", "1"), ("/abs.txt", "no"),
                      ("a/top.txt", "22"))
    assert w["isError"] is True and error_code(w) == "INVALID_ARGUMENT", w
    assert texts(w) == [
        "wrote a/b/c.txt (4 bytes)",
        "wrote a/top.txt (1 bytes)",
        "writeFiles: /abs.txt: absolute paths are not allowed: give a path relative to the "
        "workspace",
        "wrote a/top.txt (2 bytes)",
    ]
    assert session.sh("stat -c '%n %u %g %a %F' a a/b a/b/c.txt a/top.txt; cat a/top.txt") == (
        "a 1000 1000 755 directory\n"
        "a/b 1000 1000 755 directory\n"
        "a/b/c.txt 1000 1000 644 regular file\n"
        "a/top.txt 1000 1000 644 regular file\n"
        "22")
    # Code may then change what writeFiles made.
    session.sh("echo more >> a/b/c.txt && rm a/top.txt")


def test_list_files(session):
    """listFiles: names, sizes and types (file, directory, symbolic link, special
    file), sorted, one level only; directoryPath (or path) lists a subdirectory."""
    session.write(("sub/inner/deep.txt", "deep"), ("sub/x.txt", "xyz"), ("a.csv", "1,2\n"))
    session.sh("ln -s /etc/passwd link && mkfifo pipe && mkdir empty")
    r = session.list()
    assert r["isError"] is False
    assert r["content"][0] == {"type": "text", "text": ".: 5 entries\n"
                                                       "a.csv (file, 4 bytes)\n"
                                                       "empty/ (directory)\n"
                                                       "link (symbolic link)\n"
                                                       "pipe (special file)\n"
                                                       "sub/ (directory)"}
    assert r["content"][1:] == [
        {"type": "resource_link", "uri": "file://a.csv", "name": "a.csv",
         "mimeType": "text/csv", "size": 4, "description": "file"},
        {"type": "resource_link", "uri": "file://empty", "name": "empty",
         "mimeType": "inode/directory", "size": r["content"][2]["size"],
         "description": "directory"},
        {"type": "resource_link", "uri": "file://link", "name": "link",
         "mimeType": "inode/symlink", "size": len("/etc/passwd"),
         "description": "symbolic link"},
        {"type": "resource_link", "uri": "file://pipe", "name": "pipe",
         "mimeType": "application/octet-stream", "size": 0, "description": "special file"},
        {"type": "resource_link", "uri": "file://sub", "name": "sub",
         "mimeType": "inode/directory", "size": r["content"][5]["size"],
         "description": "directory"},
    ]
    for arg in ("directoryPath", "path"):
        r = session.server.call("listFiles", {"sessionId": session.id, arg: "sub/"})
        assert [(b["uri"], b["name"], b["size"], b["description"]) for b in links(r)] == [
            ("file://sub/inner", "inner", links(r)[0]["size"], "directory"),
            ("file://sub/x.txt", "x.txt", 3, "file"),
        ], r
        assert texts(r) == ["sub: 2 entries\nsub/inner/ (directory)\nsub/x.txt (file, 3 bytes)"]
    r = session.list("sub/inner")
    assert [b["uri"] for b in links(r)] == ["file://sub/inner/deep.txt"]
    assert texts(r) == ["sub/inner: 1 entry\nsub/inner/deep.txt (file, 4 bytes)"]
    # An empty directory: no links, and the text says so.
    assert session.list("empty")["content"] == [{"type": "text", "text": "empty: (empty)"}]
    r = session.list("nope")
    assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
    assert texts(r) == ["listFiles: nope: no such file or directory"]
    r = session.list("a.csv")
    assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r


def test_remove_files(session):
    """removeFiles removes files and whole trees (links inside are removed, not
    followed); a missing path is NOT_FOUND; the workspace itself cannot go."""
    session.write(("tree/a/b/c.txt", "c"), ("tree/d.txt", "d"), ("keep.txt", "k"),
                  ("single.txt", "s"))
    session.sh("ln -s /etc tree/etc-link && ln -s ../../keep.txt tree/a/keep-link")
    r = session.remove("tree", "single.txt")
    assert r["isError"] is False
    assert texts(r) == ["removed tree", "removed single.txt"]
    assert session.sh("ls; cat keep.txt; test -e /etc/passwd && echo etc-ok") == \
        "keep.txt\nketc-ok\n"
    r = session.remove("missing.txt")
    assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
    assert texts(r) == ["removeFiles: missing.txt: no such file or directory"]
    for path in ("", "."):
        r = session.remove(path)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
        assert "the workspace itself cannot be removed" in all_text(r), r
    assert session.sh("ls") == "keep.txt\n"


# ----------------------------------------------------------------------------------
# Background tasks


def task(session, tool, task_id):
    r = session.call(tool, taskId=task_id)
    assert sc(r)["taskId"] == task_id, r
    return r


def test_task_lifecycle(session):
    """startCommandExecution answers at once with a taskId, working; getTask shows
    partial output while it runs, then completed with all output and exit code 0."""
    r = session.call("startCommandExecution",
                     command="echo first; echo warn >&2; "
                             "while [ ! -e go ]; do sleep 0.05; done; echo second")
    assert r["isError"] is False
    task_id = sc(r)["taskId"]
    assert re.fullmatch(r"[0-9A-Za-z]{32}", task_id), r
    assert set(sc(r)) == {"taskId", "taskStatus", "executionTime", "cpuTime", "peakMemory"}
    assert sc(r)["taskStatus"] == "working"
    assert texts(r) == [f"started task {task_id}"]

    partial = wait_until(
        lambda: (lambda t: t if sc(t)["stdout"] == "first\n" and sc(t)["stderr"] == "warn\n"
                 else None)(task(session, "getTask", task_id)),
        30, "the task's first output")
    assert sc(partial)["taskStatus"] == "working" and partial["isError"] is False
    assert "exitCode" not in sc(partial)
    assert texts(partial) == [f"task {task_id} is working", "first\n", "stderr:\nwarn\n"]

    session.write(("go", ""))
    done = wait_until(
        lambda: (lambda t: t if sc(t)["taskStatus"] != "working" else None)(
            task(session, "getTask", task_id)),
        30, "the task's end")
    assert sc(done)["taskStatus"] == "completed", done
    assert sc(done)["stdout"] == "first\nsecond\n" and sc(done)["stderr"] == "warn\n"
    assert sc(done)["exitCode"] == 0 and done["isError"] is False
    assert texts(done) == [f"task {task_id} is completed", "first\nsecond\n",
                           "stderr:\nwarn\n", "exit code 0"]
    # Asking again gives the same final answer.
    again = task(session, "getTask", task_id)
    assert sc(again)["taskStatus"] == "completed" and sc(again)["stdout"] == "first\nsecond\n"


def test_failing_task(session):
    r = session.call("startCommandExecution", command="echo oops >&2; exit 7")
    task_id = sc(r)["taskId"]
    done = wait_until(
        lambda: (lambda t: t if sc(t)["taskStatus"] != "working" else None)(
            task(session, "getTask", task_id)),
        30, "the task's end")
    assert sc(done)["taskStatus"] == "failed" and sc(done)["exitCode"] == 7, done
    assert sc(done)["stderr"] == "oops\n" and done["isError"] is True
    # Content alone says it all: the status, stderr labeled, the exit code.
    assert texts(done) == [f"task {task_id} is failed", "stderr:\noops\n", "exit code 7"], done


def test_stop_task(session):
    """stopTask on a running sleep 1000: canceled, and the process is gone (seen from
    the host: each command has a process namespace of its own)."""
    r = session.call("startCommandExecution", command="sleep 1000; : stop-marker")
    task_id = sc(r)["taskId"]
    # The shell, and its child sleep.
    wait_until(lambda: len(processes_of(session.server.pid, "sleep 1000")) == 2, 30,
               "sleep 1000 to run")
    stopped = task(session, "stopTask", task_id)
    assert sc(stopped)["taskStatus"] == "canceled", stopped
    assert sc(stopped)["exitCode"] == 137 and stopped["isError"] is False
    assert sc(stopped)["stderr"] == "codeq: stopped\n"
    assert processes_of(session.server.pid, "stop-marker") == {}
    assert processes_of(session.server.pid, "sleep 1000") == {}
    assert sc(task(session, "getTask", task_id))["taskStatus"] == "canceled"
    # Stopping a finished task changes nothing.
    assert sc(task(session, "stopTask", task_id))["taskStatus"] == "canceled"


def test_task_timeout(session):
    r = session.server.call("startCommandExecution",
                            {"sessionId": session.id, "command": "sleep 100", "timeout": 1})
    task_id = sc(r)["taskId"]
    done = wait_until(
        lambda: (lambda t: t if sc(t)["taskStatus"] != "working" else None)(
            task(session, "getTask", task_id)),
        30, "the task's timeout")
    assert sc(done)["taskStatus"] == "failed" and sc(done)["exitCode"] == 137, done
    assert error_code(done) == "TIMED_OUT", done
    assert "timed out after 1 s" in sc(done)["stderr"], done


def test_task_errors(session):
    for tool in ("getTask", "stopTask"):
        r = session.call(tool, taskId="no-such-task")
        assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
        assert r["_codeq_error"]["message"] == f"{tool}: no task 'no-such-task' in this session"
        r = session.call(tool)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", r
    # A task belongs to its session.
    other = start_session(session.server)
    try:
        task_id = sc(session.call("startCommandExecution", command="true"))["taskId"]
        r = other.call("getTask", taskId=task_id)
        assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
    finally:
        session.server.call("stopSession", {"sessionId": other.id})


# ----------------------------------------------------------------------------------
# Sessions


def check_session(info, status, name="", ttl=900):
    assert set(info) == SESSION_KEYS, info
    assert re.fullmatch(r"[0-9A-Za-z]{1,40}", info["sessionId"]), info
    assert info["status"] == status and info["name"] == name, info
    assert info["sessionTimeoutSeconds"] == ttl, info
    # No interpreter named: the built-in one, no runtime (tests/runtime has the others).
    assert (info["codeInterpreterIdentifier"], info["runtime"], info["runtimeDigest"]) == (
        "codeq.default", "", ""), info
    assert set(info["limits"]) == {"memory", "cpus", "disk", "pids"}, info
    for key in ("createdAt", "lastUpdatedAt"):
        assert ISO_TIME.match(info[key]), info
    created = datetime.strptime(info["createdAt"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=timezone.utc)
    assert abs(created.timestamp() - time.time()) < 600, info  # a sane clock, not a timing
    assert info["lastUpdatedAt"] >= info["createdAt"], info


FORKING = os.environ.get("CODEQ_TEST_FORK_KERNELS") == "1"


def is_zygote(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("Uid:") and "1600002000" in line for line in f)
    except OSError:
        return False


def wait_for_warm_kernel(srv):
    """Waits until the server's pool holds a kernel that has imported pandas (seen in
    its memory maps from the host), then a moment for the pool to file it."""
    def warm():
        table = proc_table()
        for pid in descendants(table, srv.pid):
            # exec'd with --preload, or forked from the zygote (whose own uid is not the
            # sandbox user's: it has pandas mapped too, and is no kernel)
            if "--preload" in table[pid][3] or ("codeq_zygote.py" in table[pid][3]
                                                 and not is_zygote(pid)):
                try:
                    with open(f"/proc/{pid}/maps") as f:
                        if "/pandas/" in f.read():
                            return True
                except OSError:
                    pass
        return False
    wait_until(warm, 60, "the warm pool's kernel to preload")
    time.sleep(0.5)  # the kernel's ready message and the pool's bookkeeping


@pytest.mark.parametrize("pool", ["0", "default"])
def test_start_session_with_name_and_env(host, pool):
    """startSession with a name and environment variables, from the warm pool (one
    sandbox with a preloaded kernel by default) and cold (no pool, or limits other
    than the defaults): the variables reach commands, Python and JavaScript."""
    srv = new_server(host, *(["--warm-pool", pool] if pool != "default" else []))
    try:
        if pool == "default":
            wait_for_warm_kernel(srv)
        for extra in ({}, {"memory": "300M", "cpus": 1, "pids": 100, "disk": "64M"}):
            r = srv.call("startSession", {"name": "my session", "sessionTimeoutSeconds": 600,
                                          "env": {"GREETING": "hello world", "EMPTY": ""},
                                          **extra})
            assert r["isError"] is False, r
            info = sc(r)
            check_session(info, "READY", "my session", 600)
            assert texts(r) == [f"session {info['sessionId']} started"]
            s = Session(srv, info["sessionId"])
            # The pooled kernel has pandas loaded already; a cold one has not, unless it
            # was forked from the zygote.
            assert s.value("import sys\n'pandas' in sys.modules") == str(
                FORKING or (pool == "default" and not extra))
            assert s.sh('echo "$GREETING|${EMPTY-unset}"') == "hello world|\n"
            assert s.value("import os\nos.environ['GREETING'], os.environ['EMPTY']") == \
                "('hello world', '')"
            assert s.value("process.env.GREETING", JS) == "'hello world'"
            got = srv.call("getSession", {"sessionId": s.id})
            check_session(sc(got), "READY", "my session", 600)
            assert texts(got) == [f"session {s.id} is ready"]
            if extra:
                assert s.sh("df -m /workspace | tail -1 | awk '{print $2}'") == "64\n"
    finally:
        srv.close()


def test_list_sessions_paging_and_stop(host):
    """listSessions pages newest first with maxResults/nextToken and filters by
    status; stopSession ends a session, whose tools then answer NOT_FOUND while
    getSession reports it TERMINATED."""
    srv = new_server(host, "--warm-pool", "0")
    try:
        ids = [sc(srv.call("startSession", {"name": f"s{i}"}))["sessionId"] for i in range(5)]
        newest_first = list(reversed(ids))
        seen, token, pages = [], None, 0
        while True:
            args = {"maxResults": 2}
            if token:
                args["nextToken"] = token
            r = srv.call("listSessions", args)
            page = sc(r)["items"]
            for item in page:
                check_session(item, "READY", item["name"])
            assert texts(r) == [f"{len(page)} session{'s' if len(page) != 1 else ''}"]
            seen += [i["sessionId"] for i in page]
            pages += 1
            token = sc(r).get("nextToken")
            if not token:
                break
            assert len(page) == 2
        assert seen == newest_first and pages == 3, (seen, newest_first)
        all_items = sc(srv.call("listSessions", {}))["items"]
        assert [i["name"] for i in all_items] == ["s4", "s3", "s2", "s1", "s0"]

        victim = Session(srv, ids[2])
        victim.call("startCommandExecution", command="sleep 1000; : victim-marker")
        victim.ok("import subprocess\n"
                  "p = subprocess.Popen(['sh', '-c', 'sleep 1000; : victim-marker'])")
        # Two shells carry the marker; a third shows up for an instant while a shell's
        # child for sleep has forked and not yet exec'd.
        wait_until(lambda: len(processes_of(srv.pid, "victim-marker")) == 2, 10,
                   "two victim processes")
        r = srv.call("stopSession", {"sessionId": victim.id})
        assert r["isError"] is False
        assert processes_of(srv.pid, "victim-marker") == {}
        check_session(sc(r), "TERMINATED", "s2")
        assert texts(r) == [f"session {victim.id} stopped"]
        for tool, args in (("executeCode", {"code": "1"}), ("executeCommand", {"command": "true"}),
                           ("readFiles", {"paths": ["x"]}), ("listFiles", {}),
                           ("writeFiles", {"content": [{"path": "x", "text": ""}]}),
                           ("removeFiles", {"paths": ["x"]}), ("getTask", {"taskId": "t"}),
                           ("startCommandExecution", {"command": "true"})):
            r = srv.call(tool, {"sessionId": victim.id, **args})
            assert r["isError"] is True and error_code(r) == "NOT_FOUND", (tool, r)
            assert "not found or no longer running" in r["_codeq_error"]["message"]
        got = srv.call("getSession", {"sessionId": victim.id})
        check_session(sc(got), "TERMINATED", "s2")
        assert texts(got) == [f"session {victim.id} has ended"]
        ready = [i["sessionId"] for i in sc(srv.call("listSessions", {"status": "READY"}))["items"]]
        assert ready == [i for i in newest_first if i != victim.id]
        ended = sc(srv.call("listSessions", {"status": "TERMINATED"}))["items"]
        assert [i["sessionId"] for i in ended] == [victim.id]
        # Stopping again is harmless and still says TERMINATED.
        assert sc(srv.call("stopSession", {"sessionId": victim.id}))["status"] == "TERMINATED"
        # The other sessions were not touched.
        assert Session(srv, ids[1]).sh("echo fine") == "fine\n"
    finally:
        srv.close()


def test_unknown_session_is_not_found(server):
    """getSession/stopSession of an unknown id and any tool with one: NOT_FOUND."""
    r = server.call("executeCode", {"sessionId": "doesNotExist", "code": "1"})
    assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
    for tool in ("getSession", "stopSession"):
        r = server.call(tool, {"sessionId": "doesNotExist"})
        assert r["isError"] is True and texts(r) == ["session 'doesNotExist' not found"], r
        assert error_code(r) == "NOT_FOUND", r


def test_session_expires_by_itself(server):
    """sessionTimeoutSeconds=2: the session ends on its own (its processes too), and
    its tools then answer NOT_FOUND."""
    r = server.call("startSession", {"sessionTimeoutSeconds": 2})
    info = sc(r)
    check_session(info, "READY", ttl=2)
    s = Session(server, info["sessionId"])
    s.call("startCommandExecution", command="sleep 1000; : expiry-marker")
    s.ok("import subprocess\np = subprocess.Popen(['sh', '-c', 'sleep 1000; : expiry-marker'])")
    wait_until(lambda: sc(server.call("getSession", {"sessionId": s.id}))["status"] ==
               "TERMINATED", 30, "the session to expire")
    r = s.cmd("true")
    assert r["isError"] is True and error_code(r) == "NOT_FOUND", r
    wait_until(lambda: processes_of(server.pid, "expiry-marker") == {}, 10,
               "the expired session's processes to go")


def test_call_cut_by_the_session_end(server):
    """A command still running when its session expires (its timeout is capped at
    the session's end) ends as a timeout: isError, exit code 137, TIMED_OUT."""
    s = Session(server, sc(server.call("startSession", {"sessionTimeoutSeconds": 2}))["sessionId"])
    r = s.cmd("sleep 100")
    assert r["isError"] is True, r
    assert sc(r)["exitCode"] != 0, r
    assert error_code(r) == "TIMED_OUT", r


def test_session_limit(host):
    """--max-sessions 2: a third startSession is refused with LIMIT_EXCEEDED, and so is
    the default session; after a stop there is room again."""
    srv = new_server(host, "--warm-pool", "0", "--max-sessions", "2")
    try:
        a = start_session(srv)
        start_session(srv)
        r = srv.call("executeCode", {"code": "1"})  # the default session is a third
        assert r["isError"] is True and error_code(r) == "LIMIT_EXCEEDED", r
        assert "this worker already runs 2 sessions, its maximum" in all_text(r)
        r = srv.call("startSession", {})
        assert r["isError"] is True, r
        assert texts(r) == ["this worker already runs 2 sessions, its maximum"]
        srv.call("stopSession", {"sessionId": a.id})
        assert Session(srv).value("'room again'") == "'room again'"
        r = srv.call("startSession", {})
        assert r["isError"] is True
        assert error_code(r) == "LIMIT_EXCEEDED", r
    finally:
        srv.close()


def test_start_session_argument_errors(server):
    """Bad startSession arguments, wrong types and ranges as well as values the worker
    refuses: error results (isError, INVALID_ARGUMENT) naming the argument."""
    for args in ({"sessionTimeoutSeconds": 0}, {"sessionTimeoutSeconds": 28801},
                 {"sessionTimeoutSeconds": "10"}, {"name": 5}, {"cpus": 0}, {"pids": -1},
                 {"env": {"A": 1}}, {"env": ["A=1"]}, {"memory": 128}):
        r = server.call("startSession", args)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (args, r)
        assert list(args)[0] in all_text(r) or "environment variable" in all_text(r), (args, r)
    for args, text in (({"name": "n" * 101}, "longer than 100 characters"),
                       ({"memory": "lots"}, "lots"),
                       ({"memory": "1K"}, "memory")):
        r = server.call("startSession", args)
        assert r["isError"] is True and text in all_text(r), (args, r)
    for tool, args in (("listSessions", {"status": "RUNNING"}),
                       ("listSessions", {"maxResults": 0}),
                       ("listSessions", {"maxResults": 101}), ("getSession", {})):
        r = server.call(tool, args)
        assert r["isError"] is True and error_code(r) == "INVALID_ARGUMENT", (tool, args, r)
