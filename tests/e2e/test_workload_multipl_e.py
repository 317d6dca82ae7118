"""The MultiPL-E correctness workload: every program gets the same verdict through codeq
as natively.

The programs (tests/e2e/multipl_e.py builds them) are HumanEval and MBPP problems in
JavaScript, TypeScript, bash and Python; a program passes when it exits with status 0.
Each one runs twice:

  natively      with the interpreter codeq's sandbox finds on its PATH (python3, node,
                bash), as a file in a fresh directory, stdin /dev/null, the sandbox's
                environment variables; TypeScript is first transpiled by the same
                TypeScript package codeq's kernel uses (runtimes/node/node_modules), with
                the kernel's compiler options, then run by node;
  through codeq `codeq mcp`, one long-lived server per language: executeCode with
                clearContext (Python, JavaScript, TypeScript), or writeFiles and then
                executeCommand `bash prog.sh` in a directory of its own (bash).
                Passing there means a result with isError false (and exit code 0).

A sample of the Python programs also runs through `codeq exec FILE` (its exit status).

Some gpt_solutions are wrong: the verdicts only have to agree. A disagreement is
reported with the program, both verdicts and both outputs, and a copy of the program
is kept in a directory named in the message. The canonical Python solutions must all
pass, both ways. Run with -s to see the counts per suite.
"""

import concurrent.futures
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

import pytest

import multipl_e as mpe
from conftest import CODEQ, REPO

# What the sandbox's processes get (sandbox/supervisor.c), so that natively the same
# interpreters and tools are found.
SANDBOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _interpreter(name):
    found = shutil.which(name, path=SANDBOX_PATH)
    return found or name


PYTHON = _interpreter("python3")
NODE = _interpreter("node")
BASH = _interpreter("bash")
# The TypeScript compiler of codeq's Node kernel (runtimes/, or where codeq is told).
RUNTIMES_DIR = os.environ.get("CODEQ_RUNTIMES_DIR") or os.path.join(REPO, "runtimes")
TYPESCRIPT_DIR = os.path.join(RUNTIMES_DIR, "node", "node_modules", "typescript")

# Per program: seconds a native run may take, and the tool's timeout through codeq.
PROGRAM_TIMEOUT = 20
# How much longer than the tool's timeout an answer may take before the server is
# considered stuck (it is then killed and a fresh one started, up to MAX_REPLACEMENTS
# times per language; after that the language's remaining programs fail at once).
ANSWER_GRACE = 40
MAX_REPLACEMENTS = 3
# Native runs in parallel (the machine has 2 cores; the codeq runs go on meanwhile).
NATIVE_WORKERS = 2
# Programs run through `codeq exec`, and how many at once.
EXEC_SAMPLE = 30
EXEC_WORKERS = 2
# Output kept in a report, per stream.
REPORT_CHARS = 1500

# The TypeScript compiler options of runtimes/node/codeq_kernel.js (transpile()).
_TRANSPILE_JS = r"""
const fs = require('fs');
const ts = require(process.argv[2]);
const jobs = JSON.parse(fs.readFileSync(0, 'utf8'));
for (const [src, dst] of jobs) {
  const out = ts.transpileModule(fs.readFileSync(src, 'utf8'), {
    compilerOptions: {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.CommonJS,
      esModuleInterop: true,
      removeComments: false,
    },
    fileName: require('path').basename(src),
  });
  fs.writeFileSync(dst, out.outputText);
}
"""


@dataclass
class Verdict:
    passed: bool
    how: str  # "exit status 1", "isError false, exitCode 0", "timed out after 20 s", ...
    stdout: str = ""
    stderr: str = ""


def _tail(text, limit=REPORT_CHARS):
    text = text or ""
    return text if len(text) <= limit else "[...]" + text[-limit:]


def _describe(v):
    return (f"{'PASS' if v.passed else 'FAIL'} ({v.how})\n"
            f"    stdout: {_tail(v.stdout)!r}\n    stderr: {_tail(v.stderr)!r}")


# ----------------------------------------------------------------------------------
# Native runs


def _native_env(home):
    return {
        "PATH": SANDBOX_PATH,
        "HOME": home,
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "SHELL": "/bin/sh",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
    }


def _run_process(argv, cwd, timeout=PROGRAM_TIMEOUT):
    """Runs argv in its own process group; a Verdict from its exit status."""
    proc = subprocess.Popen(argv, cwd=cwd, env=_native_env(cwd), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process that left the group holds a pipe
            proc.kill()
            proc.wait()
            out, err = b"", b"(output lost: a process outside the group kept the pipes)"
        timed_out = True
    finally:
        # Whatever the program left running in its group goes too.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out = out.decode("utf-8", "replace")
    err = err.decode("utf-8", "replace")
    if timed_out:
        return Verdict(False, f"timed out after {timeout} s", out, err)
    rc = proc.returncode
    how = f"exit status {rc}" if rc >= 0 else f"killed by signal {-rc}"
    return Verdict(rc == 0, how, out, err)


def _transpile(jobs, scratch):
    """Transpiles TypeScript files: jobs [(src.ts, dst.js)]."""
    if not jobs:
        return
    helper = os.path.join(scratch, "transpile.js")
    with open(helper, "w") as f:
        f.write(_TRANSPILE_JS)
    proc = subprocess.run([NODE, helper, TYPESCRIPT_DIR], input=json.dumps(jobs).encode(),
                          capture_output=True, timeout=300, env=_native_env(scratch))
    assert proc.returncode == 0, (
        f"transpiling TypeScript with {TYPESCRIPT_DIR} failed: "
        f"{proc.stderr.decode('utf-8', 'replace')[-3000:]}")


def prepare_native(programs, scratch):
    """Writes each program into a directory of its own (TypeScript also transpiled);
    {program id: (directory, argv)}."""
    runs = {}
    jobs = []
    for p in programs:
        d = os.path.join(scratch, "native", p.suite, p.name)
        os.makedirs(d)
        src = os.path.join(d, p.filename)
        with open(src, "w", encoding="utf-8") as f:
            f.write(p.source)
        if p.language == mpe.PYTHON:
            argv = [PYTHON, p.filename]
        elif p.language == mpe.BASH:
            argv = [BASH, p.filename]
        else:  # JavaScript, and TypeScript as transpiled
            argv = [NODE, p.name + ".js"]
        if p.language == mpe.TYPESCRIPT:
            jobs.append((src, os.path.join(d, p.name + ".js")))
        runs[p.id] = (d, argv)
    _transpile(jobs, scratch)
    return runs


# ----------------------------------------------------------------------------------
# codeq mcp


class McpError(Exception):
    """The server did not answer: it exited, or took too long."""


class McpRpcError(McpError):
    """The server answered with a JSON-RPC error."""


class McpGaveUp(McpError):
    """No more servers are started for a language."""


# Every server gets MARKER=<value> in its environment, which the processes it forks
# keep: what is left of a server after it ended can be found (and ended) by it.
MARKER = "CODEQ_E2E_MULTIPL_E"
_serial = iter(range(1, 1 << 30))


def _marked_processes(value):
    """[(pid, command line)] of live processes whose environment has MARKER=value."""
    needle = f"{MARKER}={value}".encode() + b"\0"
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle not in f.read() + b"\0":
                    continue
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if state not in ("Z", "X"):
            found.append((int(name), cmdline))
    return found


class McpServer:
    """`codeq mcp` on pipes: requests out, answers collected by a reader thread."""

    def __init__(self, label):
        self.label = label
        self.marker = f"{os.getpid()}-{next(_serial)}"
        self.stderr_file = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([CODEQ, "mcp"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr_file,
                                     env=dict(os.environ, **{MARKER: self.marker}))
        self.next_id = 0
        self.answers = {}
        self.cond = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        try:
            self.request("initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "codeq-e2e-multipl-e", "version": "1"}}, timeout=60)
            self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        except McpError as e:
            text = self.stderr_text()
            self.kill()
            raise McpError(f"{e}; its stderr: {_tail(text, 3000)}") from None

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.answers[msg.get("id")] = msg
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _send(self, msg):
        try:
            self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise McpError(f"codeq mcp ({self.label}) is gone: {e}") from None

    def request(self, method, params, timeout):
        with self.cond:
            self.next_id += 1
            rid = self.next_id
        self._send({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        deadline = time.monotonic() + timeout
        with self.cond:
            while rid not in self.answers:
                left = deadline - time.monotonic()
                if self.eof:
                    raise McpError(f"codeq mcp ({self.label}) exited (status "
                                   f"{self.proc.poll()}) without answering {method}")
                if left <= 0:
                    raise McpError(f"codeq mcp ({self.label}) did not answer {method} "
                                   f"within {timeout} s")
                self.cond.wait(left)
            msg = self.answers.pop(rid)
        if "error" in msg:
            raise McpRpcError(f"{method}: JSON-RPC error {msg['error']}")
        return msg["result"]

    def tool(self, name, arguments, timeout=PROGRAM_TIMEOUT):
        arguments = dict(arguments, timeout=timeout)
        return self.request("tools/call", {"name": name, "arguments": arguments},
                            timeout=timeout + ANSWER_GRACE)

    def stderr_text(self):
        self.stderr_file.seek(0)
        return self.stderr_file.read().decode("utf-8", "replace")

    def close(self, timeout=60):
        """Ends the server (EOF, then a kill if it lingers); its exit status and stderr."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)
        text = self.stderr_text()
        self.stderr_file.close()
        return self.proc.returncode, text

    def kill(self):
        """SIGKILLs the server, then what is left of it; [(pid, command)] of the latter."""
        self.proc.kill()
        self.proc.wait()
        self.reader.join(timeout=10)
        self.stderr_file.close()
        return self.end_leftovers()

    def leftovers(self, wait=0.0):
        """Processes of this server still alive after it ended (after up to wait s)."""
        deadline = time.monotonic() + wait
        while True:
            left = _marked_processes(self.marker)
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.2)

    def end_leftovers(self):
        """SIGKILLs what is left of this server (its sandboxes go with their helpers)."""
        left = self.leftovers()
        for pid, _cmd in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return left


_SANITIZER = re.compile(r"ERROR: AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                        r":\d+:\d+: runtime error: ")


class Servers:
    """One `codeq mcp` per language, started on first use; a stuck one is replaced."""

    def __init__(self):
        self.servers = {}
        self.problems = []
        self.replaced = {}
        self.lock = threading.Lock()

    def get(self, language):
        with self.lock:
            if self.replaced.get(language, 0) > MAX_REPLACEMENTS:
                raise McpGaveUp(f"gave up on codeq mcp for {language} after "
                               f"{MAX_REPLACEMENTS} replacements")
            if language not in self.servers:
                self.servers[language] = McpServer(language)
            return self.servers[language]

    def replace(self, language, why):
        with self.lock:
            server = self.servers.pop(language, None)
            self.replaced[language] = self.replaced.get(language, 0) + 1
        if server is None:  # it could not even start
            self.problems.append(f"{language} server failed: {why}")
            return
        text = server.stderr_text()
        left = server.kill()
        self.problems.append(f"{language} server replaced ({why}); its stderr: "
                             f"{_tail(text, 3000)}; processes of it killed: {left}")

    def close(self):
        for language, server in self.servers.items():
            status, text = server.close()
            if status != 0:
                self.problems.append(f"codeq mcp ({language}) exited with status {status}: "
                                     f"{_tail(text, 3000)}")
            left = server.leftovers(wait=10)
            if left:
                server.end_leftovers()
                self.problems.append(f"codeq mcp ({language}) left processes behind when it "
                                     f"ended (killed now): {left}")
            reports = [m.start() for m in _SANITIZER.finditer(text)]
            if reports:
                self.problems.append(f"codeq mcp ({language}) stderr has sanitizer reports: "
                                     f"{text[reports[0]:reports[0] + 4000]}")
        self.servers = {}


def _tool_verdict(result):
    sc = result.get("structuredContent") or {}
    exit_code = sc.get("exitCode")
    is_error = bool(result.get("isError"))
    text = "".join(c.get("text", "") for c in result.get("content", []) if c.get("type") == "text")
    stdout = sc.get("stdout", text if not sc else "")
    stderr = sc.get("stderr", "")
    return Verdict(not is_error and exit_code in (0, None),
                   f"isError {str(is_error).lower()}, exitCode {exit_code}", stdout, stderr)


def run_codeq_one(servers, program):
    """The Verdict of a program through `codeq mcp`."""
    language = program.language
    try:
        server = servers.get(language)
        if language == mpe.BASH:
            directory = f"multipl-e/{program.name}"
            wrote = server.tool("writeFiles", {"content": [
                {"path": f"{directory}/{program.filename}", "text": program.source}]})
            if wrote.get("isError"):
                return Verdict(False, f"writeFiles failed: {wrote}")
            result = server.tool("executeCommand", {
                "command": f"cd {directory} && {os.path.basename(BASH)} {program.filename}"})
        else:
            result = server.tool("executeCode", {
                "code": program.source, "language": language, "clearContext": True})
    except (McpRpcError, McpGaveUp) as e:
        return Verdict(False, f"no result: {e}")
    except McpError as e:
        servers.replace(language, str(e))
        return Verdict(False, f"no result: {e}")
    return _tool_verdict(result)


# ----------------------------------------------------------------------------------
# The workload: every suite natively and through codeq, in the background


@dataclass
class SuiteResult:
    programs: list
    native: dict  # program id -> Verdict
    codeq: dict  # program id -> Verdict
    seconds: float

    def mismatches(self):
        return [p for p in self.programs
                if self.native[p.id].passed != self.codeq[p.id].passed]

    def counts(self):
        """(programs, native passes, codeq passes, agreements)"""
        n = len(self.programs)
        native = sum(self.native[p.id].passed for p in self.programs)
        codeq = sum(self.codeq[p.id].passed for p in self.programs)
        return n, native, codeq, n - len(self.mismatches())

    def line(self, suite):
        n, n_native, n_codeq, agree = self.counts()
        return (f"{suite:26s} {n:4d} programs, {n_native:4d} pass natively, {n_codeq:4d} "
                f"through codeq, {agree:4d} agree ({self.seconds:.1f} s)")


class Workload:
    """Runs every suite in the background as soon as it is created.

    Two lanes of codeq calls (each lane's languages one after the other, a program at a
    time per server) and a pool of NATIVE_WORKERS native runs that the lanes feed:
    that keeps the 2 cores busy while leaving each run enough CPU that no program
    comes near its timeout because of its neighbours. A test waits for its suite."""

    # Python first: the `codeq exec` test needs its native results early.
    LANES = ((mpe.PYTHON, mpe.BASH), (mpe.JAVASCRIPT, mpe.TYPESCRIPT))

    def __init__(self, servers, scratch, suites):
        self.servers = servers
        self.scratch = scratch
        self.programs = {suite: mpe.load_suite(suite) for suite in suites}
        self.results = {suite: concurrent.futures.Future() for suite in suites}
        self.native = {suite: concurrent.futures.Future() for suite in suites}
        self.native_pool = concurrent.futures.ThreadPoolExecutor(NATIVE_WORKERS)
        self.lanes = []
        for languages in self.LANES:
            suites_here = [s for s in mpe.SUITES if s in suites and mpe.SUITES[s][1] in languages]
            suites_here.sort(key=lambda s: languages.index(mpe.SUITES[s][1]))
            lane = threading.Thread(target=self._lane, args=(suites_here,), daemon=True)
            lane.start()
            self.lanes.append(lane)

    def _start_native(self, suite):
        runs = prepare_native(self.programs[suite], self.scratch)
        futures = {pid: self.native_pool.submit(_run_process, argv, d)
                   for pid, (d, argv) in runs.items()}

        def collect():
            return {pid: f.result() for pid, f in futures.items()}

        return collect

    def _lane(self, suites):
        for suite in suites:
            try:
                started = time.monotonic()
                collect_native = self._start_native(suite)
                codeq = {p.id: run_codeq_one(self.servers, p) for p in self.programs[suite]}
                native = collect_native()
                self.native[suite].set_result(native)
                self.results[suite].set_result(
                    SuiteResult(self.programs[suite], native, codeq, time.monotonic() - started))
            except BaseException as e:  # noqa: B036 - reported by the tests that wait
                for future in (self.native[suite], self.results[suite]):
                    if not future.done():
                        future.set_exception(e)

    def result(self, suite):
        return self.results[suite].result()

    def native_result(self, suite):
        return self.native[suite].result()

    def close(self):
        for lane in self.lanes:
            lane.join()
        self.native_pool.shutdown(wait=True)


def keep_programs(programs):
    """Copies programs for inspection; the directory they are in (left in /tmp)."""
    keep = tempfile.mkdtemp(prefix="codeq-multipl-e-mismatches-", dir="/tmp")
    for p in programs:
        path = os.path.join(keep, p.suite + "__" + p.filename)
        with open(path, "w", encoding="utf-8") as f:
            f.write(p.source)
    return keep


def mismatch_report(what, triples):
    keep = keep_programs([p for p, _native, _other in triples])
    lines = [f"{len(triples)} program(s) got a different verdict {what} than natively "
             f"(the programs are kept in {keep}):"]
    for p, native, other in triples:
        lines.append(f"- {p.id} [{p.language}]\n  native: {_describe(native)}\n"
                     f"  codeq:  {_describe(other)}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def scratch():
    d = tempfile.mkdtemp(prefix="codeq-e2e-multipl-e-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def servers():
    s = Servers()
    yield s
    s.close()
    if s.problems:
        pytest.fail("codeq mcp servers: " + "\n".join(s.problems), pytrace=False)


def _suites_wanted(session, module_file):
    """The suites the selected tests of this module need (all of them by default)."""
    wanted = set()
    for item in session.items:
        if str(getattr(item, "path", None) or item.fspath) != module_file:
            continue
        name = getattr(item, "originalname", None) or item.name
        if name == "test_same_verdicts":
            wanted.add(item.callspec.params["suite"])
        elif name == "test_canonical_python_solutions_all_pass":
            wanted.add("open_humaneval_python")
        elif name == "test_codeq_exec_sample":
            wanted |= {"open_humaneval_python", "open_humaneval_python-gpt"}
        elif name == "test_summary":
            wanted |= set(mpe.SUITES)
    return wanted or set(mpe.SUITES)


@pytest.fixture(scope="module")
def workload(request, servers, scratch):
    module_file = str(getattr(request, "path", None) or request.fspath)
    w = Workload(servers, scratch, _suites_wanted(request.session, module_file))
    yield w
    w.close()


# ----------------------------------------------------------------------------------
# The tests


def test_workload_present():
    for suite, (filename, _language) in mpe.SUITES.items():
        path = os.path.join(mpe.WORKLOAD_DIR, filename)
        assert os.path.isfile(path), f"workload file missing: {path} (CODEQ_MULTIPL_E_DIR)"
    for what, path in (("python3", PYTHON), ("node", NODE), ("bash", BASH)):
        assert os.path.isabs(path) and os.access(path, os.X_OK), (
            f"{what} not found on {SANDBOX_PATH}")
    assert os.path.isfile(os.path.join(TYPESCRIPT_DIR, "package.json")), (
        f"the TypeScript compiler is missing at {TYPESCRIPT_DIR} (scripts/setup installs it)")


@pytest.mark.parametrize("markdown, language, code", [
    ("```js\nf()\n```\n\n```js\nf(1)\n```", mpe.JAVASCRIPT, "f()\n"),
    ("Here:\n```bash\necho a\n```\n```typescript\nlet x = 1\n```", mpe.TYPESCRIPT,
     "let x = 1\n"),
    ("```\nx = 1\n```\n```python\ny = 2\n```", mpe.PYTHON, "y = 2\n"),
    ("```\nx = 1\n```\n```sh\nls\n```", mpe.PYTHON, "x = 1\n"),
    ("1. code:\n   ```py\n   def f():\n       return 1\n   ```\n", mpe.PYTHON,
     "def f():\n    return 1\n"),
    ("~~~~ Python\n```\nnot a fence end\n~~~~~\n", mpe.PYTHON, "```\nnot a fence end\n"),
    ("```ts\nconst s = `a\n```b`;\n", mpe.TYPESCRIPT, "const s = `a\n```b`;\n"),
    ("no fence at all\n", mpe.BASH, "no fence at all\n"),
    ("```js\r\nf()\r\n```\r\n", mpe.JAVASCRIPT, "f()\n"),
])
def test_code_extraction(markdown, language, code):
    assert mpe.extract_code(markdown, language) == code


@pytest.mark.parametrize("suite", list(mpe.SUITES))
def test_same_verdicts(suite, workload):
    result = workload.result(suite)
    print("\nmultipl-e " + result.line(suite), flush=True)
    bad = result.mismatches()
    if bad:
        pytest.fail(mismatch_report("through codeq mcp",
                                    [(p, result.native[p.id], result.codeq[p.id]) for p in bad]),
                    pytrace=False)
    _n, n_native, n_codeq, _agree = result.counts()
    assert n_native > 0 and n_codeq > 0, (
        f"{suite}: no program passed ({n_native} natively, {n_codeq} through codeq): "
        "the harness is broken")


def test_canonical_python_solutions_all_pass(workload):
    result = workload.result("open_humaneval_python")
    assert len(result.programs) == 164
    failing = [p for p in result.programs
               if not (result.native[p.id].passed and result.codeq[p.id].passed)]
    if failing:
        keep = keep_programs(failing)
        pytest.fail(f"{len(failing)} canonical HumanEval solution(s) do not pass both ways "
                    f"(programs kept in {keep}):\n" + "\n".join(
                        f"- {p.id}\n  native: {_describe(result.native[p.id])}\n"
                        f"  codeq:  {_describe(result.codeq[p.id])}" for p in failing),
                    pytrace=False)


def _exec_sample(workload):
    """EXEC_SAMPLE Python programs: the gpt solutions that fail natively (up to half),
    then programs spread evenly over both Python suites."""
    gpt = workload.programs["open_humaneval_python-gpt"]
    native = workload.native_result("open_humaneval_python-gpt")
    failing = [p for p in gpt if not native[p.id].passed][:EXEC_SAMPLE // 2]
    rest = [p for p in workload.programs["open_humaneval_python"] + gpt if p not in failing]
    step = max(1, len(rest) // (EXEC_SAMPLE - len(failing)))
    return failing + rest[::step][:EXEC_SAMPLE - len(failing)]


def _codeq_exec(path):
    argv = [CODEQ, "exec", "--timeout", str(PROGRAM_TIMEOUT), path]
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROGRAM_TIMEOUT + ANSWER_GRACE)
    except subprocess.TimeoutExpired:
        return Verdict(False, f"codeq exec did not finish within "
                              f"{PROGRAM_TIMEOUT + ANSWER_GRACE} s")
    rc = proc.returncode
    return Verdict(rc == 0, f"codeq exec exit status {rc}",
                   proc.stdout.decode("utf-8", "replace"),
                   proc.stderr.decode("utf-8", "replace"))


def test_codeq_exec_sample(workload, scratch):
    sample = _exec_sample(workload)
    native = dict(workload.native_result("open_humaneval_python"))
    native.update(workload.native_result("open_humaneval_python-gpt"))
    exec_dir = os.path.join(scratch, "exec")
    os.makedirs(exec_dir, exist_ok=True)
    paths = []
    for p in sample:
        paths.append(os.path.join(exec_dir, p.suite + "__" + p.filename))
        with open(paths[-1], "w", encoding="utf-8") as f:
            f.write(p.source)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(EXEC_WORKERS) as pool:
        verdicts = dict(zip((p.id for p in sample), pool.map(_codeq_exec, paths)))
    passes = sum(v.passed for v in verdicts.values())
    n_native = sum(native[p.id].passed for p in sample)
    print(f"\nmultipl-e codeq exec sample: {len(sample)} Python programs, {n_native} pass "
          f"natively, {passes} through codeq exec "
          f"({time.monotonic() - started:.1f} s)", flush=True)
    # A verdict differs, or codeq itself failed (125: never the program's verdict).
    bad = [p for p in sample if verdicts[p.id].passed != native[p.id].passed
           or verdicts[p.id].how.endswith("status 125")]
    if bad:
        pytest.fail(mismatch_report("through codeq exec",
                                    [(p, native[p.id], verdicts[p.id]) for p in bad]),
                    pytrace=False)
    assert 0 < n_native < len(sample), (
        f"the sample should hold passing and failing programs: {n_native} of {len(sample)} "
        "pass natively")


def test_summary(workload):
    """Prints the counts of every suite (with -s); each suite has passing programs."""
    lines = ["", "multipl-e summary:"]
    empty = []
    for suite in mpe.SUITES:
        result = workload.result(suite)
        lines.append("  " + result.line(suite))
        _n, n_native, n_codeq, _agree = result.counts()
        if n_native == 0 or n_codeq == 0:
            empty.append(suite)
    print("\n".join(lines), flush=True)
    assert not empty, f"suites where no program passed: {empty}"
