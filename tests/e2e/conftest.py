"""Shared helpers and fixtures for codeq's end-to-end sandbox tests.

The tests drive the real binaries: `codeq sandbox` (CODEQ_BIN_DIR/codeq) and the
hostile probe program cq-probe (CODEQ_PROBE), which is copied into each sandbox's
workspace because nothing else of the host is visible inside. They need root (codeq
creates user namespaces with fixed id maps and cgroups).

A probe runs in one of two ways:
  - with a host directory as --workspace (owned by SANDBOX_UID, codeq's default host
    uid for sandboxed code), the probe at /workspace/cq-probe: `probe_in()`;
  - in the private tmpfs workspace (needed where the --disk and inode limits matter,
    which do not apply to a --workspace directory), the probe streamed in on stdin and
    written to a scratch directory inside by `sh`: `probe_private()`.
The same probe also runs directly on the host as root (`probe_out()`), to show that
an attack primitive works (or reaches the kernel's own argument checks) outside, so
that a blocked outcome inside is the sandbox's doing.

As a normal user (CODEQ_E2E_AS_USER=<name>, set by tests/rootless/test_red_team.py):
the tests still run as root, but every codeq runs as that user (setpriv), so the
sandboxes are a normal user's (docs/security.md, "Running as a normal user"). Sandboxed
code then runs as the user's first subordinate id (--workspace directories are given to
it), init and the shims as the user; without subordinate ids (ONE_ID) all of them run as
the user, the only id such a sandbox has.

Nothing here may harm the host: the probe itself refuses its destructive subcommands
when it finds itself in the host's user namespace, and the tests only ever give host
runs harmless arguments.
"""

import gzip
import hashlib
import json
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
PROBE = os.environ.get("CODEQ_PROBE") or os.path.join(REPO, "build", "tests", "cq-probe")
CODEQ = os.path.join(BIN_DIR, "codeq")

SANDBOX_ROOT_UID = 1600000000  # uid 0 inside: the sandbox's init and the shims
SANDBOX_UID = 1600001000  # uid 1000 inside: sandboxed code
SANDBOX_UIDS = (SANDBOX_ROOT_UID, SANDBOX_UID)
AS_USER = os.environ.get("CODEQ_E2E_AS_USER") or None
CODEQ_PREFIX = []  # what runs codeq as AS_USER


def _first_subordinate_id(name, uid):
    try:
        with open("/etc/subuid") as f:
            for line in f:
                parts = line.strip().split(":")
                if len(parts) == 3 and parts[0] in (name, str(uid)) and int(parts[2]) > 0:
                    return int(parts[1])
    except FileNotFoundError:
        pass
    return None


ONE_ID = False  # a normal user's sandboxes without subordinate ids
if AS_USER:
    _pw = pwd.getpwnam(AS_USER)
    _sub = _first_subordinate_id(AS_USER, _pw.pw_uid)
    ONE_ID = _sub is None
    SANDBOX_ROOT_UID = _pw.pw_uid
    SANDBOX_UID = _pw.pw_uid if ONE_ID else _sub
    SANDBOX_UIDS = (SANDBOX_ROOT_UID, SANDBOX_UID)
    CODEQ_PREFIX = ["setpriv", "--reuid", str(_pw.pw_uid), "--regid", str(_pw.pw_gid),
                    "--init-groups"]


def codeq_argv(*args):
    """argv of codeq (as AS_USER when set)."""
    return CODEQ_PREFIX + [CODEQ, *args]


def codeq_env(env=None):
    """The environment codeq runs with: env or ours, with the user's HOME as AS_USER."""
    env = dict(env if env is not None else os.environ)
    if AS_USER:
        env["HOME"] = pwd.getpwnam(AS_USER).pw_dir
    return env

# Default limits, as `codeq sandbox --help` prints them (sandbox/sandbox.h).
DEFAULT_INODES = 65536
DEFAULT_TMP_BYTES = 64 << 20

# How long any single codeq run may take before the test gives up on it (the runs
# themselves are short; this only keeps a broken sandbox from hanging the suite).
RUN_TIMEOUT = 90

REPORT_FIELDS = {
    "exit_code": (int, type(None)),
    "signal": (int, type(None)),
    "timed_out": (bool,),
    "oom_killed": (bool,),
    "wall_ms": (int,),
    "cpu_ms": (int,),
    "peak_memory_bytes": (int,),
    "output_truncated": (bool,),
    "output_bytes": (int,),
    "pids_limit_hit": (bool,),
}


# --------------------------------------------------------------------------------
# Preconditions: a missing binary or missing root is a failure, never a skip.


@pytest.fixture(scope="session", autouse=True)
def _preconditions():
    problems = []
    if os.geteuid() != 0:
        problems.append("the e2e tests must run as root (codeq needs it to build sandboxes)")
    for what, path in (("codeq", CODEQ), ("cq-probe", PROBE)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            problems.append(
                f"{what} not found or not executable at {path} (build first: "
                "cmake --build build; or set CODEQ_BIN_DIR / CODEQ_PROBE)"
            )
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    yield


# --------------------------------------------------------------------------------
# Running codeq


class Run:
    """The outcome of one `codeq sandbox` run (or one host run of the probe)."""

    def __init__(self, argv, returncode, stdout, stderr, report, pid):
        self.argv = argv
        self.returncode = returncode
        self.stdout_bytes = stdout
        self.stdout = stdout.decode("utf-8", "replace")
        self.stderr = stderr.decode("utf-8", "replace")
        self.report = report
        self.pid = pid

    @property
    def line(self):
        """The probe's single result line."""
        lines = self.stdout.splitlines()
        assert len(lines) == 1, f"expected exactly one result line, got {self!r}"
        return lines[0]

    def __repr__(self):
        return (
            f"<run {' '.join(self.argv)!r}: status {self.returncode}, "
            f"stdout {self.stdout[:2000]!r}, stderr {self.stderr[:2000]!r}, "
            f"report {self.report!r}>"
        )


def _scratch_dir(prefix):
    # Directly in /tmp: the sandbox's init (an unprivileged host uid) must be able to
    # reach a --workspace directory, so no private (0700) parent may be on its path.
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


def codeq_sandbox(
    cmd,
    *,
    opts=(),
    workspace=None,
    stdin=subprocess.DEVNULL,
    input_bytes=None,
    env=None,
    pass_fds=(),
    timeout=RUN_TIMEOUT,
    report=True,
):
    """Runs `codeq sandbox [--report R] [--workspace W] OPTS -- CMD...`.

    stdin: a file object or subprocess constant; input_bytes: data fed on stdin
    instead. Returns a Run with the parsed JSON report (None when report=False or
    when codeq wrote none)."""
    report_dir = tempfile.mkdtemp(prefix="codeq-e2e-report-")
    if AS_USER:
        os.chown(report_dir, SANDBOX_ROOT_UID, -1)
    report_path = os.path.join(report_dir, "report.json")
    argv = codeq_argv("sandbox")
    if report:
        argv += ["--report", report_path]
    if workspace is not None:
        argv += ["--workspace", workspace]
    argv += list(opts) + ["--"] + list(cmd)
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input_bytes is not None else stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=codeq_env(env),
            pass_fds=pass_fds,
            close_fds=True,
        )
        try:
            out, err = proc.communicate(input=input_bytes, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"codeq did not finish within {timeout} s: {argv!r}\n{err[-2000:]!r}")
        rep = None
        if report and os.path.exists(report_path):
            with open(report_path) as f:
                rep = json.load(f)
        return Run(argv, proc.returncode, out, err, rep, proc.pid)
    finally:
        shutil.rmtree(report_dir, ignore_errors=True)


def make_workspace(with_probe=True):
    """A fresh host directory usable as --workspace, owned by SANDBOX_UID, with the
    probe at <dir>/cq-probe. The caller removes it (remove_workspace)."""
    ws = _scratch_dir("codeq-e2e-ws-")
    os.chmod(ws, 0o755)
    if with_probe:
        dst = os.path.join(ws, "cq-probe")
        shutil.copyfile(PROBE, dst)
        os.chmod(dst, 0o755)
        os.chown(dst, SANDBOX_UID, SANDBOX_UID)
    os.chown(ws, SANDBOX_UID, SANDBOX_UID)
    return ws


def remove_workspace(ws):
    shutil.rmtree(ws, ignore_errors=True)


def probe_in(workspace, *args, opts=(), **kw):
    """Runs `/workspace/cq-probe ARGS` in a sandbox with `workspace` bound."""
    return codeq_sandbox(["/workspace/cq-probe", *args], opts=opts, workspace=workspace, **kw)


# Streams the probe in on stdin, makes it executable, runs it: for the private tmpfs
# workspace, which no host file can be placed in beforehand.
_STAGE_SCRIPT = 'cat > "$0/cq-probe" && chmod 755 "$0/cq-probe" && exec "$0/cq-probe" "$@"'


def probe_private(*args, opts=(), stage="/tmp", **kw):
    """Runs the probe in a sandbox with its private /workspace; the probe binary is
    staged in `stage` inside (/tmp or /workspace)."""
    with open(PROBE, "rb") as f:
        data = f.read()
    return codeq_sandbox(["sh", "-c", _STAGE_SCRIPT, stage, *args], opts=opts,
                         input_bytes=data, **kw)


def probe_out(*args, stdin=subprocess.DEVNULL, env=None, pass_fds=(), timeout=60):
    """Runs the probe directly on the host, as root."""
    argv = [PROBE, *args]
    proc = subprocess.run(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env, pass_fds=pass_fds, timeout=timeout)
    return Run(argv, proc.returncode, proc.stdout, proc.stderr, None, None)


def check_report_types(report):
    assert report is not None, "codeq wrote no report"
    assert set(report) == set(REPORT_FIELDS), f"report fields: {sorted(report)}"
    for key, types in REPORT_FIELDS.items():
        value = report[key]
        # bool is an int in Python: keep the two apart.
        if bool not in types:
            assert not isinstance(value, bool), f"{key} is a bool: {report!r}"
        assert isinstance(value, types), f"{key} has type {type(value).__name__}: {report!r}"


# --------------------------------------------------------------------------------
# Looking at the host


def proc_table():
    """{pid: (ppid, real uid, state, cmdline)} of every host process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/status") as f:
                status = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (FileNotFoundError, ProcessLookupError):
            continue
        fields = dict(
            line.split(":", 1) for line in status.splitlines() if ":" in line
        )
        ppid = int(fields["PPid"].strip())
        uid = int(fields["Uid"].split()[0])
        state = fields["State"].strip()[:1]
        table[pid] = (ppid, uid, state, cmdline)
    return table


def descendants(table, root):
    """root and every process below it in `table`."""
    children = {}
    for pid, (ppid, _uid, _state, _cmd) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, ()))
    return out


def sandbox_leftovers(exclude_marker=None):
    """Host processes running as a sandbox uid that do not belong to (descend from) a
    process whose command line contains exclude_marker (the neighbour sandbox's codeq
    process carries its marker).

    Zombies whose parent is the host's init are not counted: they are dead, and
    reaping them is the host init's job (a sandbox init orphaned by a codeq that was
    killed ends up so until the host's pid 1 collects it)."""
    table = proc_table()
    excluded = set()
    if exclude_marker:
        for pid, info in table.items():
            if exclude_marker in info[3]:
                excluded |= descendants(table, pid)
    return {
        pid: info
        for pid, info in table.items()
        if info[1] in SANDBOX_UIDS and pid not in excluded
        and not (info[2] in ("Z", "X") and info[0] == 1)
    }


def pid_alive(pid):
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("State:"):
                    return line.split()[1] not in ("Z", "X")
    except FileNotFoundError:
        return False
    return False


def _mount_point_of_cgroup(controller):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rfields = right.split()
            if len(rfields) < 3 or rfields[0] != "cgroup":
                continue
            if controller in rfields[2].split(","):
                return fields[3], fields[4]  # root within the hierarchy, mount point
    return None, None


def _cpuacct_apart():
    """Whether cpuacct is a v1 hierarchy without memory, pids and cpu: then each
    sandbox also has a cgroup there, for its CPU time (sandbox/cgroup.c)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            rfields = line.partition(" - ")[2].split()
            if len(rfields) < 3 or rfields[0] != "cgroup":
                continue
            options = set(rfields[2].split(","))
            if "cpuacct" in options and not options & {"memory", "pids", "cpu"}:
                return True
    return False


def codeq_cgroup_bases():
    """{controller: <hierarchy mount>/<our own cgroup>/codeq} for memory, pids and cpu
    (and cpuacct where it is apart), found the way sandbox/cgroup.c finds them (cgroup
    v1; codeq runs as a child of this process, so it shares our cgroups)."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(","):
                own[c] = path
    bases = {}
    controllers = ["memory", "pids", "cpu"] + (["cpuacct"] if _cpuacct_apart() else [])
    for controller in controllers:
        root, point = _mount_point_of_cgroup(controller)
        assert point is not None, f"no cgroup v1 hierarchy with {controller} (cgroup v2 host?)"
        path = own.get(controller, "/")
        if root != "/" and path.startswith(root):
            path = path[len(root):]
        bases[controller] = os.path.join(point, path.lstrip("/"), "codeq")
    return bases


def codeq_cgroup_children():
    """{controller: sorted sandbox cgroup names under its codeq directory}."""
    out = {}
    for controller, base in codeq_cgroup_bases().items():
        try:
            out[controller] = sorted(
                e for e in os.listdir(base) if os.path.isdir(os.path.join(base, e))
            )
        except FileNotFoundError:
            out[controller] = []
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_KCONFIG = None


def kernel_config():
    """The running kernel's build configuration ({} when it cannot be read)."""
    global _KCONFIG
    if _KCONFIG is None:
        text = ""
        try:
            with gzip.open("/proc/config.gz", "rt") as f:
                text = f.read()
        except OSError:
            try:
                with open(f"/boot/config-{os.uname().release}") as f:
                    text = f.read()
            except OSError:
                text = ""
        cfg = {}
        for line in text.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                cfg[k] = v
            elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
                cfg[line[2:].split()[0]] = "n"
        _KCONFIG = cfg
    return _KCONFIG


def kernel_has(option):
    """True/False from the kernel config; None when the config is unavailable."""
    cfg = kernel_config()
    if not cfg:
        return None
    return cfg.get(option, "n") in ("y", "m")


# --------------------------------------------------------------------------------
# The neighbour: a second sandbox running concurrently, and a host sentinel.


class Neighbour:
    """A long-running sandbox that writes a heartbeat, plus a host `sleep` sentinel.

    Attacks must not reach either: after every attack test `check()` asserts that the
    neighbour's codeq is running, that its heartbeat keeps changing, and that the
    sentinel lives."""

    def __init__(self):
        self.marker = f"codeq-e2e-neighbour-{os.getpid()}-{random.randrange(1 << 30):08x}"
        self.workspace = make_workspace(with_probe=False)
        self.beat = os.path.join(self.workspace, "beat")
        self.stop_file = os.path.join(self.workspace, "stop")
        script = (
            f"while [ ! -e /workspace/stop ]; do date +%s%N > /workspace/beat.tmp && "
            f"mv /workspace/beat.tmp /workspace/beat; sleep 0.1; done # {self.marker}"
        )
        self.sentinel = subprocess.Popen(["sleep", "1000"], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.proc = subprocess.Popen(
            codeq_argv("sandbox", "--timeout", "600", "--workspace", self.workspace, "--",
                       "sh", "-c", script),
            env=codeq_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.last = None
        deadline = time.monotonic() + 30
        while self.read_beat() is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None else ""
                self.stop()
                pytest.fail(f"the neighbour sandbox did not start beating: {err!r}")
            time.sleep(0.02)
        self.last = self.read_beat()

    def read_beat(self):
        try:
            with open(self.beat) as f:
                text = f.read().strip()
            return text or None
        except FileNotFoundError:
            return None

    def check(self, what="the attack"):
        assert self.proc.poll() is None, (
            f"the neighbour sandbox died during {what} (status {self.proc.returncode})"
        )
        assert pid_alive(self.sentinel.pid), f"the host sentinel died during {what}"
        deadline = time.monotonic() + 15
        while True:
            beat = self.read_beat()
            if beat is not None and beat != self.last:
                self.last = beat
                break
            assert time.monotonic() < deadline, (
                f"the neighbour sandbox's heartbeat stopped after {what} (last {beat!r})"
            )
            time.sleep(0.02)
        assert self.proc.poll() is None, f"the neighbour sandbox died during {what}"

    def stop(self):
        # Let its loop end by itself, so that codeq exits normally and cleans up.
        if self.proc.poll() is None:
            with open(self.stop_file, "w"):
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self.sentinel.poll() is None:
            self.sentinel.kill()
        self.sentinel.wait(timeout=20)
        remove_workspace(self.workspace)


@pytest.fixture(scope="module")
def neighbour():
    n = Neighbour()
    yield n
    n.stop()


@pytest.fixture(scope="module")
def workspace():
    """A module-wide --workspace directory with the probe in it."""
    ws = make_workspace()
    yield ws
    remove_workspace(ws)
