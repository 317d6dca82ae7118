"""codeq run by a normal user: exec, mcp and sandbox, with and without subordinate ids,
with and without a delegated cgroup, and where user namespaces are disabled
(docs/security.md, "Running as a normal user")."""

import ctypes
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import (SUBID_START, as_user, cgroup_layout, run, user_env, CODEQ,
                      RUN_TIMEOUT)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import mcp_client  # noqa: E402

UNLIMITED = {"CODEQ_ALLOW_UNLIMITED": "1"}

# Prints this line, then waits: the test looks at the process tree meanwhile.
HOLD_PY = (
    "import os, sys, time\n"
    "print('holding', os.getuid(), open('/proc/self/uid_map').read().split(), flush=True)\n"
    "while not os.path.exists('/tmp/release'):\n"
    "    time.sleep(0.02)\n"
)


def host_uids_of_tree(root_pid):
    """{pid: (real uid, comm)} of root_pid and everything below it on the host."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(ln.split(":", 1) for ln in f.read().splitlines() if ":" in ln)
        except OSError:
            continue
        table[int(name)] = (int(fields["PPid"]), int(fields["Uid"].split()[0]),
                            fields["Name"].strip())
    out, todo = {}, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in out or pid not in table:
            continue
        out[pid] = (table[pid][1], table[pid][2])
        todo.extend(p for p, info in table.items() if info[0] == pid)
    return out


def exec_and_look(wrapper, code, lang="python"):
    """Runs `codeq exec` with code that prints a line and holds; returns that line and the
    host uids of the process tree meanwhile, then lets it finish."""
    proc = subprocess.Popen([wrapper, "exec", "--lang", lang, "--timeout", "60", "-c", code],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline().decode()
        tree = host_uids_of_tree(proc.pid)
    finally:
        proc.kill()
        _out, err = proc.communicate(timeout=60)
    assert line.startswith("holding"), (line, err.decode())
    return line, tree, err.decode()


def kernel_uid(tree, comm):
    uids = {uid for uid, name in tree.values() if name == comm}
    assert len(uids) == 1, f"the {comm} processes of the tree run as {uids}: {tree}"
    return uids.pop()


# --------------------------------------------------------------------------------
# Own ids


def test_exec_python_with_own_id(no_subids, scratch):
    wrapper = as_user(no_subids, scratch, env=UNLIMITED)
    line, tree, err = exec_and_look(wrapper, HOLD_PY)
    # Inside: uid 1000, which is the only id there and maps to the caller's (outer 0).
    assert line.split()[:5] == ["holding", "1000", "['1000',", "'0',", "'1']"], line
    # Outside: every process of codeq's tree is the user, none root or another id.
    assert {uid for uid, _ in tree.values()} == {no_subids.pw_uid}, tree
    assert kernel_uid(tree, "python3") == no_subids.pw_uid
    assert "sandboxed code runs as your own uid" not in err


def test_exec_javascript_with_own_id(no_subids, scratch):
    wrapper = as_user(no_subids, scratch, env=UNLIMITED)
    code = "const fs = require('fs'); console.log('holding', process.getuid()); " \
           "setInterval(() => { if (fs.existsSync('/tmp/release')) process.exit(0); }, 20);"
    line, tree, _err = exec_and_look(wrapper, code, lang="javascript")
    assert line.split() == ["holding", "1000"], line
    assert kernel_uid(tree, "node") == no_subids.pw_uid


def test_exec_files_in_and_out_with_own_id(no_subids, scratch):
    """The host side of the workspace (--file in, --out back) works as the user."""
    wrapper = as_user(no_subids, scratch, env=UNLIMITED)
    src = os.path.join(scratch, "in.txt")
    with open(src, "w") as f:
        f.write("from the host\n")
    os.chmod(src, 0o644)
    out = os.path.join(scratch, "out")
    rc, stdout, err = run([wrapper, "exec", "--file", src, "--out", out, "-c",
                           "print(open('in.txt').read().strip())\n"
                           "open('in.txt', 'a').write('and back\\n')\n"
                           "open('made.txt', 'w').write('made\\n')"])
    assert rc == 0, (stdout, err)
    assert stdout.startswith("from the host"), stdout
    with open(os.path.join(out, "in.txt")) as f:
        assert f.read() == "from the host\nand back\n"
    st = os.stat(os.path.join(out, "made.txt"))
    assert (st.st_uid, st.st_gid) == (no_subids.pw_uid, no_subids.pw_gid)


# --------------------------------------------------------------------------------
# Subordinate ids


def test_exec_with_subordinate_ids(subids, scratch):
    wrapper = as_user(subids, scratch, env=UNLIMITED)
    line, tree, err = exec_and_look(wrapper, HOLD_PY)
    # Inside: 0 and 1000 exist, mapped to outer 0 (the caller) and 1 (the first
    # subordinate id).
    assert line.split()[:8] == ["holding", "1000", "['0',", "'0',", "'1',", "'1000',", "'1',",
                                "'1']"], line
    # Outside: sandboxed code is the first subordinate id, not the caller; init and the
    # shims are the caller; nothing is root.
    assert kernel_uid(tree, "python3") == SUBID_START
    assert kernel_uid(tree, "codeq-sandbox-i") == subids.pw_uid
    assert {uid for uid, _ in tree.values()} == {subids.pw_uid, SUBID_START}, tree


def test_exec_files_with_subordinate_ids(subids, scratch):
    """Files go in and out of a workspace owned by the subordinate id."""
    wrapper = as_user(subids, scratch, env=UNLIMITED)
    src = os.path.join(scratch, "in.txt")
    with open(src, "w") as f:
        f.write("from the host\n")
    os.chmod(src, 0o644)
    out = os.path.join(scratch, "out")
    rc, stdout, err = run([wrapper, "exec", "--file", src, "--out", out, "-c",
                           "import os\n"
                           "open('in.txt', 'a').write('and back\\n')\n"
                           "os.mkdir('d'); open('d/made.txt', 'w').write('made\\n')\n"
                           "print(os.stat('in.txt').st_uid, os.stat('d/made.txt').st_uid)"])
    assert rc == 0, (stdout, err)
    assert stdout.split() == ["1000", "1000"], stdout
    with open(os.path.join(out, "in.txt")) as f:
        assert f.read() == "from the host\nand back\n"
    with open(os.path.join(out, "d", "made.txt")) as f:
        assert f.read() == "made\n"
    assert os.stat(os.path.join(out, "d", "made.txt")).st_uid == subids.pw_uid


@pytest.mark.parametrize("broken", ["newuidmap", "newgidmap"])
def test_subordinate_ids_refused_by_the_helpers(subids, scratch, broken):
    """/etc/subuid gives ids, but a helper refuses to map them (here: a stand-in that
    fails, bound over it in a private mount namespace): codeq says so and falls back to
    the user's own id instead of being left in a namespace that maps nobody."""
    fake = os.path.join(scratch, "fake-map")
    with open(fake, "w") as f:
        f.write("#!/bin/sh\necho \"$0: refused by the test\" >&2\nexit 1\n")
    os.chmod(fake, 0o755)
    wrapper = as_user(subids, scratch, env=UNLIMITED)
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount --bind {fake} /usr/bin/{broken} && exec "$@"', "sh",
            wrapper, "exec", "-c", "import os\nprint(open('/proc/self/uid_map').read().split())"]
    rc, stdout, err = run(argv)
    assert rc == 0, (rc, stdout, err)
    assert stdout.split("\n")[0] == "['1000', '0', '1']", stdout  # own id: one id only
    assert "could not map your subordinate ids" in err and "refused by the test" in err, err
    assert "sandboxed code runs as your own uid" in err, err


# --------------------------------------------------------------------------------
# Without a delegated cgroup


def test_no_cgroup_refused_without_opt_in(no_subids, scratch):
    wrapper = as_user(no_subids, scratch)
    rc, stdout, err = run([wrapper, "exec", "-c", "print('ran')"])
    assert rc == 125, (rc, stdout, err)
    assert "ran" not in stdout
    # Both ways out are named.
    assert "cgroup delegated to you" in err and "Delegate=yes" in err, err
    assert "CODEQ_ALLOW_UNLIMITED=1" in err, err
    rc, stdout, err = run([wrapper, "sandbox", "--", "echo", "ran"])
    assert rc == 125 and "ran" not in stdout and "CODEQ_ALLOW_UNLIMITED=1" in err, (rc, err)


def test_no_cgroup_with_opt_in_says_what_is_not_enforced(no_subids, scratch):
    wrapper = as_user(no_subids, scratch, env=UNLIMITED)
    rc, stdout, err = run([wrapper, "exec", "--json", "-c", "print('ran')"])
    assert rc == 0, (stdout, err)
    result = json.loads(stdout)
    assert result["content"][0]["text"] == "ran\n"
    assert result["structuredContent"]["limitsNotEnforced"] == ["memory", "cpu"]
    assert "without their memory, cpu limits" in err, err
    report = os.path.join(scratch, "report.json")
    rc, stdout, err = run([wrapper, "sandbox", "--report", report, "--", "echo", "ran"])
    assert rc == 0 and stdout == "ran\n", (rc, stdout, err)
    with open(report) as f:
        assert json.load(f)["limits_not_enforced"] == "memory, cpu"
    assert "without their memory, cpu limits" in err, err


@pytest.mark.parametrize("ids,forks", [("own", 61), ("subordinate", 63)])
def test_no_cgroup_pids_limit_through_rlimit_nproc(request, ids, forks, scratch):
    """Without a cgroup the pids limit holds through RLIMIT_NPROC, which the kernel counts
    per user namespace and uid: a fork bomb under --pids 64 gets EAGAIN. With own id,
    init and the shim share the code's uid and count too (as in a cgroup: 61 forks);
    with subordinate ids only the code's processes do (63)."""
    user = request.getfixturevalue("no_subids" if ids == "own" else "subids")
    wrapper = as_user(user, scratch, env=UNLIMITED)
    probe = os.environ.get("CODEQ_PROBE") or os.path.join(os.path.dirname(CODEQ), "..", "tests",
                                                          "cq-probe")
    with open(probe, "rb") as f:
        data = f.read()
    rc, stdout, err = run([wrapper, "sandbox", "--pids", "64", "--timeout", "30", "--", "sh",
                           "-c", 'cat > /tmp/p && chmod 755 /tmp/p && exec /tmp/p forkbomb'],
                          input_bytes=data)
    assert rc == 0, (rc, stdout, err)
    fields = dict(kv.split("=", 1) for kv in stdout.split())
    assert fields["errno"] == "EAGAIN" and forks - 2 <= int(fields["forks"]) <= forks, (stdout, err)


# --------------------------------------------------------------------------------
# A delegated cgroup


@pytest.mark.parametrize("ids", ["own", "subordinate"])
def test_delegated_cgroup_limits_hold(request, ids, delegated_cgroup, scratch):
    """No opt-in needed: the sandboxes' cgroups are made in the user's, with their
    limits; a sandbox that allocates past its memory limit is killed."""
    user = request.getfixturevalue("no_subids" if ids == "own" else "subids")
    wrapper = as_user(user, scratch, cgroup=delegated_cgroup)
    report = os.path.join(scratch, "report.json")
    rc, stdout, err = run([wrapper, "sandbox", "--report", report, "--memory", "64M", "--",
                           "python3", "-c", "b = bytearray(256 << 20); print('survived')"])
    assert rc == 137, (rc, stdout, err)
    assert "survived" not in stdout
    with open(report) as f:
        rep = json.load(f)
    assert rep["oom_killed"] is True and "limits_not_enforced" not in rep, rep
    assert "memory limit: killed by the kernel's OOM killer (--memory 64M)" in err, err
    assert "CODEQ_ALLOW_UNLIMITED" not in err, err
    # The cgroups were the user's: codeq's base in each delegated directory is theirs.
    for d in delegated_cgroup.dirs:
        assert os.stat(os.path.join(d, "codeq")).st_uid == user.pw_uid, d
    # The pids limit too.
    rc, stdout, err = run([wrapper, "sandbox", "--report", report, "--pids", "16", "--", "sh",
                           "-c", "for i in $(seq 40); do sleep 5 & done; wait"])
    with open(report) as f:
        assert json.load(f)["pids_limit_hit"] is True, (rc, stdout, err)


def test_delegated_cgroup_exec_session_killed_past_memory(no_subids, delegated_cgroup, scratch):
    """codeq exec's session (512M by default) loses its kernel when a cell allocates past
    the limit."""
    wrapper = as_user(no_subids, scratch, cgroup=delegated_cgroup)
    rc, stdout, err = run([wrapper, "exec", "--json", "-c",
                           "b = bytearray(700 << 20)\nprint('survived')"])
    result = json.loads(stdout)
    assert "survived" not in stdout and result["isError"] is True, (stdout, err)
    text = json.dumps(result)
    assert "OOM killer" in text and "memory limit" in text, (stdout, err)
    rc, stdout, err = run([wrapper, "exec", "--json", "-c", "print('fine')"])
    result = json.loads(stdout)
    assert rc == 0 and result["content"][0]["text"] == "fine\n", (stdout, err)
    sc = result["structuredContent"]
    assert "limitsNotEnforced" not in sc and sc["peakMemory"] > 0, sc


# --------------------------------------------------------------------------------
# User namespaces disabled


def _in_namespace_without_userns(user, argv, limit=0):
    """Runs argv as user in a user namespace (made by root, mapping root and user) whose
    user.max_user_namespaces is limit: 0 is what a host with the sysctl at 0 looks like
    to codeq. Root of the namespace sets the limit; nothing outside it changes."""
    libc = ctypes.CDLL(None, use_errno=True)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
                os._exit(99)
            os.write(w1, b"x")
            os.read(r2, 1)
            with open("/proc/sys/user/max_user_namespaces", "w") as f:
                f.write(str(limit))
            os.execvp("setpriv", ["setpriv", "--reuid", str(user.pw_uid), "--regid",
                                  str(user.pw_gid), "--clear-groups", *argv])
        finally:
            os._exit(98)
    os.read(r1, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(f"0 0 1\n{user.pw_uid} {user.pw_uid} 1\n" if name == "uid_map" else
                    f"0 0 1\n{user.pw_gid} {user.pw_gid} 1\n")
    os.write(w2, b"g")
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.parametrize("ids,limit", [("own", 0), ("subordinate", 0), ("own", 1),
                                       ("subordinate", 1)])
def test_user_namespaces_disabled(request, ids, limit, scratch):
    """Limit 0: codeq cannot make its own namespace. Limit 1: it can, and then no
    sandbox's: both name the sysctl."""
    user = request.getfixturevalue("no_subids" if ids == "own" else "subids")
    err_path = os.path.join(scratch, "err")
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o666)
    saved = os.dup(2)
    os.dup2(fd, 2)
    try:
        rc = _in_namespace_without_userns(
            user, ["env", "-i", "CODEQ_ALLOW_UNLIMITED=1", CODEQ, "sandbox", "--", "true"],
            limit)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    with open(err_path) as f:
        err = f.read()
    assert rc == 125, (rc, err)
    if limit == 0:
        assert "needs a user namespace" in err and "user.max_user_namespaces = 0" in err, err
    else:
        assert "clone sandbox init" in err and "the limit on user namespaces is reached" in err \
            and "user.max_user_namespaces" in err, err


# --------------------------------------------------------------------------------
# MCP


@pytest.mark.parametrize("ids", ["own", "subordinate"])
def test_mcp_tools_call(request, ids, scratch, monkeypatch):
    user = request.getfixturevalue("no_subids" if ids == "own" else "subids")
    wrapper = as_user(user, scratch, env=UNLIMITED)
    monkeypatch.setattr(mcp_client, "CODEQ", wrapper)
    server = mcp_client.McpServer("--warm-pool", "0")
    try:
        server.initialize()
        result = server.call("executeCode", {"code": "import os\nprint(os.getuid())\n6 * 7"})
        assert result["isError"] is False, result
        texts = [b["text"] for b in result["content"] if b["type"] == "text"]
        assert "1000\n" in texts[0] and "42" in "".join(texts), result
        assert result["structuredContent"]["limitsNotEnforced"] == ["memory", "cpu"]
        result = server.call("executeCommand", {"command": "id -u; echo done"})
        assert result["structuredContent"]["stdout"] == "1000\ndone\n", result
    finally:
        server.close()


def test_mcp_without_cgroup_says_why_at_start(no_subids, scratch, monkeypatch):
    """No delegated cgroup and no opt-in: the server says at start why no sandbox can
    be made, and a call's result names both ways out."""
    wrapper = as_user(no_subids, scratch)
    monkeypatch.setattr(mcp_client, "CODEQ", wrapper)
    server = mcp_client.McpServer("--warm-pool", "0")
    try:
        server.initialize()
        err = server.stderr_text()
        assert "codeq: sandboxes cannot be made:" in err and "CODEQ_ALLOW_UNLIMITED=1" in err, err
        result = server.call("executeCode", {"code": "print('ran')"})
        text = json.dumps(result)
        assert result["isError"] is True, result
        assert "ran\n" not in [b.get("text") for b in result["content"]], result
        assert "CODEQ_ALLOW_UNLIMITED=1" in text and "Delegate=yes" in text, result
    finally:
        server.close()
