"""Fixtures for codeq run as a normal user (docs/security.md, "Running as a normal user").

The tests themselves run as root, to set the stage: a normal user (`codeqtest`, made
once with useradd and kept), its subordinate ids in /etc/subuid and /etc/subgid (given
or taken away per test, the files restored afterwards), and a cgroup delegated to it
the way systemd does for `Delegate=yes` (the directory and its cgroup.procs, tasks,
cgroup.subtree_control and cgroup.threads given to the user). codeq itself always runs
as that user, through `setpriv --reuid --regid --init-groups`, with a clean environment.

`as_user` returns a wrapper script that behaves like the codeq binary but runs as the
user (and, given a delegated cgroup, from inside it): tests/e2e's helpers (McpServer)
start it in place of codeq.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.path.abspath(os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin"))
CODEQ = os.path.join(BIN_DIR, "codeq")
USER = "codeqtest"
SUBID_START = 231072  # a range of /etc/subuid and /etc/subgid for USER (65536 ids)
SUBID_COUNT = 65536
RUN_TIMEOUT = 120


@pytest.fixture(scope="session", autouse=True)
def _preconditions():
    problems = []
    if os.geteuid() != 0:
        problems.append("tests/rootless must run as root (they make the user and its cgroup)")
    if not os.access(CODEQ, os.X_OK):
        problems.append(f"codeq not found at {CODEQ} (build first, or set CODEQ_BIN_DIR)")
    for tool in ("setpriv", "useradd"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} is missing")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def user():
    """The normal user codeq runs as: made once, idempotently (useradd -m)."""
    try:
        pw = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
        pw = pwd.getpwnam(USER)
    assert pw.pw_uid != 0
    return pw


def _set_range(path, name, start, count):
    """Replaces name's lines in /etc/sub[ug]id with one range, or none when start is None."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    kept = [ln for ln in lines if ln.split(":", 1)[0] != name]
    if start is not None:
        kept.append(f"{name}:{start}:{count}")
    with open(path, "w") as f:
        f.write("".join(ln + "\n" for ln in kept))


@pytest.fixture(scope="session")
def _subid_files():
    """/etc/subuid and /etc/subgid as they were, put back at the end of the session."""
    saved = {}
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as f:
                saved[path] = f.read()
        except FileNotFoundError:
            saved[path] = None
    yield
    for path, text in saved.items():
        if text is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            with open(path, "w") as f:
                f.write(text)


@pytest.fixture
def no_subids(user, _subid_files):
    """The user has no subordinate ids: sandboxes map only its own id."""
    for path in ("/etc/subuid", "/etc/subgid"):
        _set_range(path, USER, None, 0)
    return user


@pytest.fixture
def subids(user, _subid_files):
    """The user has SUBID_COUNT subordinate uids and gids from SUBID_START."""
    for tool in ("/usr/bin/newuidmap", "/usr/bin/newgidmap"):
        assert os.access(tool, os.X_OK), f"{tool} missing (Debian package uidmap: scripts/setup)"
    for path in ("/etc/subuid", "/etc/subgid"):
        _set_range(path, USER, SUBID_START, SUBID_COUNT)
    return user


# --------------------------------------------------------------------------------
# A delegated cgroup


def _own_cgroups():
    """{controller or "": path} from /proc/self/cgroup ("" is the unified hierarchy)."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                own[c] = path
    return own


def _mounts():
    """[(fstype, root, mount point, options)] of the cgroup mounts."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                out.append((rfields[0], fields[3], fields[4], set(rfields[2].split(","))))
    return out


def cgroup_layout():
    """"v1" when the memory controller is a v1 hierarchy (as sandbox/cgroup.c decides),
    else "v2"."""
    return "v1" if any(t == "cgroup" and "memory" in o for t, _r, _p, o in _mounts()) else "v2"


class DelegatedCgroup:
    """A cgroup below this process's own, given to a user as systemd gives one for
    Delegate=yes; codeq started through it runs inside (its procs file written with the
    starting shell's pid before it drops to the user)."""

    def __init__(self, uid, gid):
        self.dirs = []
        name = f"codeq-rootless-{os.getpid()}-{time.monotonic_ns() % 10**9}"
        own = _own_cgroups()
        if cgroup_layout() == "v1":
            # One directory in each hierarchy sandbox/cgroup.c uses (cpuacct may be apart).
            wanted = ("memory", "pids", "cpu", "cpuacct")
            for fstype, root, point, options in _mounts():
                if fstype != "cgroup" or not options & set(wanted):
                    continue
                controller = sorted(options & set(wanted))[0]
                path = own.get(controller, "/")
                if root != "/" and path.startswith(root):
                    path = path[len(root):]
                d = os.path.join(point, path.lstrip("/"), name)
                if d not in self.dirs:
                    self.dirs.append(d)
            files = ("cgroup.procs", "tasks")
        else:
            point = next(p for t, _r, p, _o in _mounts() if t == "cgroup2")
            d = os.path.join(point, own[""].lstrip("/"), name)
            self.dirs.append(d)
            files = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
        for d in self.dirs:
            os.mkdir(d)
            os.chown(d, uid, gid)
            for f in files:
                if os.path.exists(os.path.join(d, f)):
                    os.chown(os.path.join(d, f), uid, gid)

    def procs_files(self):
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def remove(self):
        for d in self.dirs:
            for sub, dirs, _files in sorted(os.walk(d, topdown=False), key=lambda t: -len(t[0])):
                _kill_all(os.path.join(sub, "cgroup.procs"))
                for attempt in range(100):
                    try:
                        os.rmdir(sub)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.05)


def _kill_all(procs_file):
    try:
        with open(procs_file) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def delegated_cgroup(user):
    cg = DelegatedCgroup(user.pw_uid, user.pw_gid)
    yield cg
    cg.remove()


# --------------------------------------------------------------------------------
# Running codeq as the user


def user_env(user, extra=None):
    env = {
        "HOME": user.pw_dir,
        "USER": user.pw_name,
        "LOGNAME": user.pw_name,
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }
    env.update(extra or {})
    return env


def as_user(user, directory, cgroup=None, env=None):
    """A script at directory/codeq that runs the real codeq as user, with env (and from
    inside cgroup, given one)."""
    path = os.path.join(directory, "codeq")
    lines = ["#!/bin/sh", "set -e"]
    if cgroup is not None:
        for procs in cgroup.procs_files():
            lines.append(f"echo $$ > {procs}")
    assigns = " ".join(f"{k}='{v}'" for k, v in user_env(user, env).items())
    lines.append(
        f"exec env -i {assigns} setpriv --reuid {user.pw_uid} --regid {user.pw_gid} "
        f"--init-groups {CODEQ} \"$@\""
    )
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)
    return path


def run(argv, input_bytes=None, timeout=RUN_TIMEOUT):
    proc = subprocess.run(argv, input=input_bytes, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=None if input_bytes is not None else subprocess.DEVNULL,
                          timeout=timeout)
    return proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(
        errors="replace")


@pytest.fixture
def scratch(user):
    """A directory of the user's (codeq writes its --out and --report there)."""
    d = tempfile.mkdtemp(prefix="codeq-rootless-")
    os.chmod(d, 0o755)
    os.chown(d, user.pw_uid, user.pw_gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)
