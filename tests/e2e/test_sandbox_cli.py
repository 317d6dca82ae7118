"""The `codeq sandbox` command line: options and their errors, exit statuses, stdio,
the JSON report, the host workspace directory, the language runtimes inside, and what
an interrupted run leaves behind."""

import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

from conftest import (
    CODEQ,
    REPO,
    SANDBOX_UID,
    SANDBOX_UIDS,
    check_report_types,
    codeq_cgroup_children,
    codeq_sandbox,
    make_workspace,
    pid_alive,
    proc_table,
    remove_workspace,
)


def codeq(*args, timeout=60, **kw):
    return subprocess.run([CODEQ, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


# ----------------------------------------------------------------------------------
# Help and usage errors


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag):
    """--help (and -h) print the usage on stdout and exit 0; every option is listed,
    with its default where it has one, and the exit statuses are explained."""
    r = codeq("sandbox", flag)
    assert r.returncode == 0, r
    assert r.stderr == ""
    out = r.stdout
    assert out.startswith("usage: codeq sandbox [OPTIONS] -- CMD [ARG...]")
    for text in (
        "--memory SIZE", "(default 512M)",
        "--pids N", "(default 256)",
        "--cpus FLOAT", "(default 1)",
        "--timeout SECONDS", "(default 60)",
        "--disk SIZE", "(default 256M)",
        "--workspace DIR",
        "--env NAME=VALUE",
        "--output-limit SIZE", "(default 16M)",
        "--report FILE",
        "-h, --help",
        "124 when it timed out", "137 when the memory limit", "125 when codeq itself failed",
        "126/127", "2 for bad options",
    ):
        assert text in out, f"{text!r} missing from --help"


USAGE_ERRORS = [
    (["--bogus", "--", "true"], "unknown or incomplete option '--bogus'"),
    (["--memory", "garbage", "--", "true"], "--memory: invalid size 'garbage'"),
    (["--memory", "1K", "--", "true"], "memory limit must be at least 8M"),
    (["--pids", "0", "--", "true"], "--pids: 0 is out of range"),
    (["--timeout", "-1", "--", "true"], "--timeout: invalid duration '-1'"),
    (["--cpus", "0", "--", "true"], "--cpus: invalid number '0'"),
    (["--output-limit", "0", "--", "true"], "--output-limit: must be above 0"),
    ([], "no command given"),
    (["--"], "no command given"),
    (["--memory"], "unknown or incomplete option '--memory'"),
    (["--env", "FOO", "--", "true"], "--env: 'FOO' is not NAME=VALUE"),
    (["--env", "1A=b", "--", "true"], "environment name '1A' is not a valid name"),
    (["--workspace", "/nonexistent/codeq-e2e", "--", "true"],
     "--workspace: cannot use '/nonexistent/codeq-e2e'"),
]


@pytest.mark.parametrize("args,message", USAGE_ERRORS,
                         ids=[" ".join(a) or "(none)" for a, _ in USAGE_ERRORS])
def test_usage_error(args, message):
    """A bad option exits 2 with a message naming the problem and a pointer to --help;
    nothing runs and nothing is printed on stdout."""
    r = codeq("sandbox", *args)
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert message in r.stderr, r.stderr
    assert "Run 'codeq sandbox --help' for usage." in r.stderr


# ----------------------------------------------------------------------------------
# Exit statuses


def test_command_not_found():
    """A command that is nowhere on the sandbox's PATH: exit 127, a clear message."""
    r = codeq("sandbox", "--", "codeq-e2e-no-such-command")
    assert r.returncode == 127, r
    assert "codeq: cannot run 'codeq-e2e-no-such-command': No such file or directory" in r.stderr


def test_absolute_command_not_found():
    """A path that does not exist inside (e.g. a host-only path): exit 127."""
    r = codeq("sandbox", "--", "/root/codeq-e2e-no-such-command")
    assert r.returncode == 127, r
    assert "No such file or directory" in r.stderr


@pytest.fixture
def workspace_dir():
    ws = make_workspace(with_probe=False)
    yield ws
    remove_workspace(ws)


def test_not_executable(workspace_dir):
    """A file without execute permission (in the workspace, and /etc/passwd): exit 126,
    'Permission denied'."""
    path = os.path.join(workspace_dir, "script.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\necho hi\n")
    os.chmod(path, 0o644)
    os.chown(path, SANDBOX_UID, SANDBOX_UID)
    for target in ("/workspace/script.sh", "/etc/passwd"):
        r = codeq("sandbox", "--workspace", workspace_dir, "--", target)
        assert r.returncode == 126, r
        assert f"codeq: cannot run '{target}': Permission denied" in r.stderr


def test_exit_code_passthrough():
    """The command's own exit status is codeq's (sh -c 'exit 3' -> 3), and the report
    has exit_code 3 and no signal."""
    r = codeq_sandbox(["sh", "-c", "exit 3"])
    assert r.returncode == 3, r
    assert r.report["exit_code"] == 3 and r.report["signal"] is None, r


def test_killed_by_signal():
    """A command killed by a signal N exits 128+N (SIGSEGV: 139); the report has
    signal 11 and exit_code null."""
    r = codeq_sandbox(["sh", "-c", "kill -SEGV $$"])
    assert r.returncode == 139, r
    assert r.report["signal"] == 11 and r.report["exit_code"] is None, r
    assert r.report["timed_out"] is False and r.report["oom_killed"] is False, r


# ----------------------------------------------------------------------------------
# stdio


def test_stdin_forwarded():
    """codeq's stdin is forwarded to the command (echo data | codeq sandbox -- cat),
    also a few megabytes of binary data, intact."""
    r = codeq_sandbox(["cat"], input_bytes=b"data\n")
    assert r.returncode == 0, r
    assert r.stdout == "data\n"
    blob = os.urandom(3 << 20)
    r = codeq_sandbox(["sha256sum"], input_bytes=blob)
    assert r.returncode == 0, r
    assert r.stdout.split()[0] == hashlib.sha256(blob).hexdigest()


def test_stdout_stderr_separate():
    """What the command writes to stdout and to stderr arrives on codeq's stdout and
    stderr respectively."""
    r = codeq_sandbox(["sh", "-c", "echo out; echo err >&2; echo out2"])
    assert r.returncode == 0, r
    assert r.stdout == "out\nout2\n"
    assert r.stderr == "err\n"


# ----------------------------------------------------------------------------------
# Workspace


def test_workspace_owned_by_root():
    """--workspace with a root-owned directory: refused (exit 125) with a message that
    says why and how to fix it; sandboxed code never acts as host root."""
    d = tempfile.mkdtemp(prefix="codeq-e2e-rootws-", dir="/tmp")
    try:
        os.chmod(d, 0o755)
        r = codeq("sandbox", "--workspace", d, "--", "sh", "-c", "echo ran")
        assert r.returncode == 125, r
        assert r.stdout == ""
        assert f"workspace {d} is owned by root" in r.stderr, r.stderr
        assert f"chown {SANDBOX_UID}" in r.stderr
    finally:
        os.rmdir(d)


def test_workspace_files_owned_by_dir_owner():
    """Files the command writes in --workspace appear on the host, owned by the
    directory's owner (any unprivileged uid, here 1234567), never by root."""
    ws = make_workspace(with_probe=False)
    try:
        os.chown(ws, 1234567, 1234567)
        r = codeq_sandbox(["sh", "-c", "echo hello > /workspace/out.txt; mkdir /workspace/d"],
                          workspace=ws)
        assert r.returncode == 0, r
        path = os.path.join(ws, "out.txt")
        with open(path) as f:
            assert f.read() == "hello\n"
        assert os.stat(path).st_uid == 1234567
        assert os.stat(os.path.join(ws, "d")).st_uid == 1234567
    finally:
        remove_workspace(ws)


# ----------------------------------------------------------------------------------
# Report


def test_report_fields():
    """--report writes JSON with every documented field, each of the right type
    (integers, booleans, null for the absent one of exit_code/signal)."""
    r = codeq_sandbox(["sh", "-c", "echo hi"])
    assert r.returncode == 0, r
    check_report_types(r.report)
    assert r.report["exit_code"] == 0 and r.report["signal"] is None
    assert r.report["output_bytes"] == 3
    assert r.report["output_truncated"] is False
    assert r.report["timed_out"] is False and r.report["oom_killed"] is False
    assert r.report["pids_limit_hit"] is False
    r = codeq_sandbox(["sh", "-c", "kill -TERM $$"])
    check_report_types(r.report)
    assert r.returncode == 143 and r.report["signal"] == 15 and r.report["exit_code"] is None


# ----------------------------------------------------------------------------------
# Runtimes inside


def test_python_scientific_stack(workspace_dir):
    """python3 with numpy, pandas and matplotlib (Agg) works inside, and a figure
    saved to /workspace appears on the host as a PNG."""
    script = (
        "import numpy as np, pandas as pd, matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "df = pd.DataFrame({'x': np.arange(10), 'y': np.arange(10) ** 2})\n"
        "fig, ax = plt.subplots(); ax.plot(df.x, df.y); fig.savefig('/workspace/plot.png')\n"
        "print(int(df.y.sum()))\n"
    )
    r = codeq_sandbox(["python3", "-c", script], workspace=workspace_dir)
    assert r.returncode == 0, r
    assert r.stdout == "285\n", r
    with open(os.path.join(workspace_dir, "plot.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_node():
    """node runs inside."""
    r = codeq_sandbox(["node", "-e", "console.log([1, 2, 3].map(x => x * 2).join(','))"])
    assert r.returncode == 0, r
    assert r.stdout == "2,4,6\n"


# ----------------------------------------------------------------------------------
# Interrupted runs


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_run_cleans_up(sig):
    """Interrupts `codeq sandbox` (Ctrl-C, or a service manager's SIGTERM) while its
    command runs. The sandbox must not outlive codeq: its processes die, and codeq's
    cgroup directories for it (<pid>-<n> under the codeq cgroup of memory, pids, cpu
    and cpuacct where apart) are removed as on a normal exit, not left on the host."""
    proc = subprocess.Popen([CODEQ, "sandbox", "--", "sh", "-c", "echo started; exec sleep 300"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the sandboxed command did not start within 30 s"
        assert proc.stdout.readline() == b"started\n"
        table = proc_table()
        tree = [p for p, info in table.items() if info[0] == proc.pid]
        assert tree, "no sandbox init below codeq"
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()
    # The kernel ends the sandbox asynchronously once its init loses the control
    # socket: wait (boundedly) for that, without asserting how long it takes.
    deadline = time.monotonic() + 20
    sleeper_alive = True
    while time.monotonic() < deadline:
        # Only the sandbox's: a host process may well be running `sleep 300` too.
        sleeper_alive = any(info[3] == "sleep 300" and info[1] in SANDBOX_UIDS and pid_alive(p)
                            for p, info in proc_table().items())
        if not sleeper_alive:
            break
        time.sleep(0.05)
    assert not sleeper_alive, "the sandboxed command outlived the interrupted codeq"
    left = {c: [n for n in names if n.startswith(f"{proc.pid}-")]
            for c, names in codeq_cgroup_children().items()}
    assert all(v == [] for v in left.values()), (
        f"codeq killed by {sig.name} left its sandbox cgroups on the host: {left}"
    )


def test_example_analysis_runs_in_a_sandbox():
    """The README's main job (scripts/demo): the example analysis reads a CSV with
    pandas and writes statistics and a chart with matplotlib, all inside a sandbox
    whose workspace is a host directory. The outputs appear on the host, owned by
    the workspace's owner, and the statistics match the data."""
    example = os.path.join(REPO, "docs", "examples", "analysis")
    ws = tempfile.mkdtemp(prefix="codeq-e2e-example-")
    try:
        for name in ("sales.csv", "analysis.py"):
            shutil.copy(os.path.join(example, name), ws)
        for entry in [ws] + [os.path.join(ws, n) for n in os.listdir(ws)]:
            os.chown(entry, SANDBOX_UID, SANDBOX_UID)
        os.chmod(ws, 0o755)
        r = codeq_sandbox(["python3", "analysis.py"], workspace=ws, opts=["--timeout", "120"])
        assert r.returncode == 0, r
        assert "Best month: November 2026" in r.stdout, r
        with open(os.path.join(ws, "summary.json")) as f:
            summary = json.load(f)
        assert summary["rows"] == 1460
        assert summary["best_month"] == "2026-11"
        chart = os.path.join(ws, "revenue_by_month.png")
        with open(chart, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.stat(chart).st_uid == SANDBOX_UID
        # Tool caches went to /tmp, not into the workspace.
        assert sorted(os.listdir(ws)) == [
            "analysis.py", "revenue_by_month.png", "sales.csv", "summary.json"]
    finally:
        shutil.rmtree(ws, ignore_errors=True)
