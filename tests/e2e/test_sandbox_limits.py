"""Resource attacks against codeq's sandbox: fork, memory, disk, inode, tmpfs, output
and CPU exhaustion, and what is left on the host afterwards.

Each test runs one exhausting workload inside a sandbox and asserts how exactly it is
stopped (errno seen by the workload, exit status, report fields, the stderr line that
names the limit), and that the host and a neighbour sandbox are unaffected: the
neighbour (a second sandbox with a heartbeat) and a host sentinel must still live
after every test. Workloads that need the private tmpfs workspace (the --disk and inode
limits do not apply to a --workspace directory) get the probe streamed in on stdin.
"""

import os
import subprocess

import pytest

from conftest import (
    DEFAULT_INODES,
    DEFAULT_TMP_BYTES,
    codeq_cgroup_children,
    codeq_sandbox,
    probe_private,
    sandbox_leftovers,
)

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _neighbour_survives(neighbour, request):
    """After each test: the neighbour sandbox and the host sentinel are untouched."""
    yield
    neighbour.check(request.node.name)


def parse(line):
    """'a=1 b=X' -> {'a': '1', 'b': 'X'}"""
    return dict(kv.split("=", 1) for kv in line.split())


def assert_gone(run, neighbour):
    """Nothing of `run`'s sandbox is left on the host: no process with a sandbox uid
    (other than the neighbour's) and no cgroup directory of that codeq process."""
    left = sandbox_leftovers(exclude_marker=neighbour.marker)
    assert left == {}, f"processes left behind on the host: {left}"
    for controller, names in codeq_cgroup_children().items():
        mine = [n for n in names if n.startswith(f"{run.pid}-")]
        assert mine == [], f"cgroup directories left in {controller}: {mine}"


# ----------------------------------------------------------------------------------
# 24. Processes


def test_fork_bomb(neighbour):
    """Forks (children that wait) until fork fails, with --pids 64: the pids cgroup
    refuses forks with EAGAIN once the sandbox holds 64 tasks (its init, the shim and
    the probe included), the report says pids_limit_hit, codeq prints the limit, and
    the run ends normally. The host can still fork afterwards."""
    r = probe_private("forkbomb", opts=["--pids", "64", "--timeout", "20"])
    assert r.returncode == 0, r
    out = parse(r.line)
    assert out["errno"] == "EAGAIN", r
    forks = int(out["forks"])
    assert 32 <= forks <= 64 - 3, f"{forks} forks under --pids 64"
    assert r.report["pids_limit_hit"] is True, r
    assert r.report["exit_code"] == 0 and r.report["timed_out"] is False, r
    assert "codeq: process limit: the sandbox refused a fork (--pids 64)" in r.stderr, r
    host = subprocess.run(["sh", "-c", "echo forked"], capture_output=True, text=True,
                          timeout=30)
    assert host.stdout == "forked\n"
    assert_gone(r, neighbour)


# ----------------------------------------------------------------------------------
# 25. Memory


def test_memory_bomb(neighbour):
    """Touches fresh memory 1M at a time forever with --memory 64M: the kernel's OOM
    killer ends it (SIGKILL), codeq exits 137, the report says oom_killed, and stderr
    names the memory limit."""
    r = probe_private("membomb", opts=["--memory", "64M"])
    assert r.returncode == 137, r
    assert r.stdout == "", r
    assert r.report["oom_killed"] is True, r
    assert r.report["signal"] == 9 and r.report["exit_code"] is None, r
    assert r.report["timed_out"] is False, r
    assert "codeq: memory limit: killed by the kernel's OOM killer (--memory 64M)" in r.stderr, r
    assert_gone(r, neighbour)


def test_node_starts_under_memory_limit():
    """Node (V8 reserves gigabytes of address space) starts and runs normally under a
    256M memory limit: the limit is a cgroup limit, not an address-space rlimit."""
    r = codeq_sandbox(["node", "-e", "console.log(1)"], opts=["--memory", "256M"])
    assert r.returncode == 0, r
    assert r.stdout == "1\n", r
    assert r.report["oom_killed"] is False, r


def test_node_memory_bomb(neighbour):
    """Node allocating 1M Buffers in a loop with --memory 256M: killed by the OOM
    killer, exit 137, report oom_killed, stderr names the limit."""
    script = "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));"
    r = codeq_sandbox(["node", "-e", script], opts=["--memory", "256M"])
    assert r.returncode == 137, r
    assert r.report["oom_killed"] is True, r
    assert r.report["signal"] == 9, r
    assert "codeq: memory limit: killed by the kernel's OOM killer (--memory 256M)" in r.stderr, r
    assert_gone(r, neighbour)


# ----------------------------------------------------------------------------------
# 26-28. Disk, inodes, /tmp, /dev/shm


def test_disk_fill(neighbour):
    """Writes 1M files into the private /workspace with --disk 8M until a write fails:
    ENOSPC after (about) 8M. The probe lives in /tmp, so the workspace is all data."""
    r = probe_private("fill-files", "/workspace", str(MiB), opts=["--disk", "8M"])
    assert r.returncode == 0, r
    out = parse(r.line)
    assert out["errno"] == "ENOSPC", r
    assert 8 * MiB - 256 * 1024 <= int(out["bytes"]) <= 8 * MiB, r
    assert_gone(r, neighbour)


@pytest.mark.parametrize("where", ["/tmp/big", "/workspace/big"])
def test_single_file_past_disk_limit(where):
    """Writes one file without end with --disk 8M, which is also the largest file a
    process may write (RLIMIT_FSIZE): the write that would pass 8M raises SIGXFSZ,
    whose default action kills the process: exit 153 (128+25), report signal 25. This
    holds in /tmp (64M, so only the file-size limit can stop it) and in the 8M
    /workspace (where the file-size limit is reached exactly as the disk fills)."""
    r = probe_private("fill-one", where, opts=["--disk", "8M"])
    assert r.returncode == 153, r
    assert r.report["signal"] == 25 and r.report["exit_code"] is None, r
    assert r.stdout == "", r


def test_single_file_past_disk_limit_sigxfsz_ignored():
    """The same with SIGXFSZ ignored: the write fails with EFBIG after exactly 8M."""
    r = probe_private("fill-one", "/tmp/big", "ignore-xfsz", opts=["--disk", "8M"])
    assert r.returncode == 0, r
    assert r.line == f"errno=EFBIG bytes={8 * MiB}", r


def test_inode_fill(neighbour):
    """Creates empty files in /workspace until creation fails: ENOSPC after close to
    65536 files (the default inode limit of the private workspace; its root directory
    takes one)."""
    r = probe_private("fill-inodes", "/workspace")
    assert r.returncode == 0, r
    out = parse(r.line)
    assert out["errno"] == "ENOSPC", r
    assert DEFAULT_INODES - 16 <= int(out["files"]) <= DEFAULT_INODES, r
    assert_gone(r, neighbour)


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_tmpfs_fill(neighbour, where):
    """Fills /tmp or /dev/shm with 1M files (probe staged in /workspace): ENOSPC near
    64M, their default size."""
    r = probe_private("fill-files", where, str(MiB), stage="/workspace")
    assert r.returncode == 0, r
    out = parse(r.line)
    assert out["errno"] == "ENOSPC", r
    assert DEFAULT_TMP_BYTES - 256 * 1024 <= int(out["bytes"]) <= DEFAULT_TMP_BYTES, r
    assert_gone(r, neighbour)


# ----------------------------------------------------------------------------------
# 29. Output


def test_output_flood(neighbour):
    """Prints 50M with --output-limit 1M: exactly the first 1048576 bytes reach codeq's
    stdout, the rest is drained and counted (output_bytes = 50M, output_truncated),
    the command's own exit status (0) is kept, and stderr says the output was cut."""
    total = 50 * MiB
    r = probe_private("flood", str(total), opts=["--output-limit", "1M"])
    assert r.returncode == 0, r
    assert len(r.stdout_bytes) == MiB, len(r.stdout_bytes)
    assert r.stdout_bytes == b"z" * MiB
    assert r.report["output_truncated"] is True, r
    assert r.report["output_bytes"] >= total, r
    assert r.report["exit_code"] == 0, r
    assert f"codeq: output limit: output truncated at 1M of {total} bytes" in r.stderr, r
    assert_gone(r, neighbour)


# ----------------------------------------------------------------------------------
# 30. CPU past the timeout


@pytest.mark.parametrize("probe", ["burn", "burn-daemon"])
def test_cpu_burn_timeout(neighbour, probe):
    """Burns CPU past --timeout 1: a plain busy loop, and one that first forks burning
    children and a daemon (setsid + double fork, stdio closed) that burns too. codeq
    kills the whole tree at the timeout: exit 124, report timed_out, stderr names the
    time limit; afterwards no process of that sandbox (host uid 1600001000 or
    1600000000, the neighbour's excluded) and none of its cgroups is left."""
    r = probe_private(probe, opts=["--timeout", "1"])
    assert r.returncode == 124, r
    assert r.stdout == "burning\n", r
    assert r.report["timed_out"] is True, r
    assert r.report["oom_killed"] is False, r
    assert r.report["signal"] == 9 and r.report["exit_code"] is None, r
    assert "codeq: time limit: killed after 1 s (--timeout)" in r.stderr, r
    assert_gone(r, neighbour)


# ----------------------------------------------------------------------------------
# 32. Cleanliness after destroy


def _host_snapshot(neighbour):
    cgroups = {
        c: [n for n in names if not n.startswith(f"{neighbour.proc.pid}-")]
        for c, names in codeq_cgroup_children().items()
    }
    with open("/proc/self/mountinfo") as f:
        mountinfo = f.read()
    return {
        "processes": sandbox_leftovers(exclude_marker=neighbour.marker),
        "cgroups": cgroups,
        "mountinfo": mountinfo,
        "tmp": sorted(os.listdir("/tmp")),
    }


def test_clean_after_destroy(neighbour):
    """Runs a sandbox that leaves everything it can behind: a background process, a
    setsid'd double-forked daemon, files in /tmp, /dev/shm and /workspace. After codeq
    returns, the host is as before: no process with a sandbox uid (the neighbour's
    excluded), no new cgroup under the codeq cgroup directories of memory, pids and
    cpu, the host's mount table unchanged, no new entry in host /tmp."""
    before = _host_snapshot(neighbour)
    assert before["processes"] == {}, f"sandbox processes before the test: {before}"
    script = (
        "sleep 300 & "
        "(setsid sh -c 'sleep 300 & exec sleep 301' </dev/null >/dev/null 2>&1 &); "
        "echo x > /tmp/left; echo y > /dev/shm/left; echo z > /workspace/left; "
        "mkdir -p /tmp/d/e; exit 0"
    )
    r = codeq_sandbox(["sh", "-c", script])
    assert r.returncode == 0, r
    after = _host_snapshot(neighbour)
    assert after["processes"] == {}, f"processes left behind: {after['processes']}"
    assert after["cgroups"] == before["cgroups"], "cgroups left behind"
    assert after["mountinfo"] == before["mountinfo"], "the host's mount table changed"
    assert after["tmp"] == before["tmp"], (
        f"new entries in host /tmp: {sorted(set(after['tmp']) - set(before['tmp']))}"
    )
