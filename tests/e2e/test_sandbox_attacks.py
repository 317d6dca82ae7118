"""Hostile probes against codeq's sandbox: each test performs one attack from inside a
sandbox and asserts the exact secure outcome (errno, signal, report fields).

Where it makes sense the same probe also runs on the host as root, to show that the
attack primitive works there (or at least reaches the kernel's own argument checks,
e.g. EINVAL instead of EPERM): a blocked outcome inside is then the sandbox's doing and
not a probe that cannot work anywhere. Host runs only ever get harmless arguments
(nonexistent paths, invalid flags, no-op forms); the probe refuses its destructive
subcommands on the host by itself.

A second sandbox (the neighbour, with a heartbeat file) and a host `sleep` sentinel run
for the whole module; after every test both must still be alive and the heartbeat must
keep changing, so that no attack reaches across sandboxes or to the host.
"""

import json
import os
import pty
import random
import shutil
import socket
import subprocess
import tempfile

import pytest

from conftest import (
    AS_USER,
    CODEQ,
    ONE_ID,
    SANDBOX_ROOT_UID,
    PROBE,
    SANDBOX_UID,
    codeq_sandbox,
    kernel_has,
    make_workspace,
    pid_alive,
    probe_in,
    probe_out,
    remove_workspace,
    sha256,
)


@pytest.fixture(autouse=True)
def _neighbour_survives(neighbour, request):
    """After each attack: the neighbour sandbox and the host sentinel are untouched."""
    yield
    neighbour.check(request.node.name)


def inside(workspace, *args, **kw):
    """The probe's result line from inside a sandbox (the probe must exit 0)."""
    r = probe_in(workspace, *args, **kw)
    assert r.returncode == 0, r
    return r.line


def outside(*args, **kw):
    """The probe's result line on the host, as root."""
    r = probe_out(*args, **kw)
    assert r.returncode == 0, r
    return r.line


@pytest.fixture
def scratch():
    """A scratch directory directly in host /tmp, for harmless host runs (and codeq's
    reports: the user's, when codeq runs as a normal user)."""
    d = tempfile.mkdtemp(prefix="codeq-e2e-scratch-", dir="/tmp")
    if AS_USER:
        os.chown(d, SANDBOX_ROOT_UID, -1)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def read_mountinfo():
    with open("/proc/self/mountinfo") as f:
        return f.read()


# ----------------------------------------------------------------------------------
# 1. Host files


@pytest.fixture(scope="module")
def host_secret():
    """A secret file in host /tmp, outside any workspace."""
    fd, path = tempfile.mkstemp(prefix="codeq-e2e-secret-", dir="/tmp")
    os.write(fd, b"the host's secret\n")
    os.close(fd)
    os.chmod(path, 0o644)  # even world-readable: it must simply not exist inside
    yield path
    os.unlink(path)


@pytest.mark.parametrize("target", ["/etc/shadow", "secret", "test-source"])
def test_read_host_file(workspace, host_secret, target):
    """Reads a host file that is not part of the runtime: /etc/shadow (not in the /etc
    allowlist), a world-readable secret in host /tmp (the sandbox's /tmp is private),
    and this test's own source. None of them exists in the sandbox's root (ENOENT),
    while root on the host reads all of them."""
    path = {"secret": host_secret, "test-source": os.path.abspath(__file__)}.get(target, target)
    assert inside(workspace, "read", path) == "errno=ENOENT"
    assert outside("read", path) == "ok"


def test_list_host_root_home(workspace):
    """Lists /root, the host administrator's home: absent inside (ENOENT); root on the
    host lists it."""
    assert inside(workspace, "list", "/root") == "errno=ENOENT"
    assert outside("list", "/root").startswith("entries=")


def test_list_host_tmp(workspace, host_secret):
    """Lists /tmp: inside it is a private, empty tmpfs, so the host's secret file (and
    everything else of host /tmp) is not listed; on the host it is."""
    assert inside(workspace, "list", "/tmp") == "entries="
    assert os.path.basename(host_secret) in outside("list", "/tmp").split("=", 1)[1].split(",")


def test_no_host_directories(workspace):
    """Lists / and host trees that are never mounted (/home, /var, /sys with its cgroup
    release_agent, /run with its sockets, /opt, /srv, /mnt, /boot): the root holds
    only the runtime and private mounts, the others do not exist inside (ENOENT)."""
    # The runtime's top-level entries are recreated only where the host has them.
    top = [e for e in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
           if os.path.lexists("/" + e)]
    names = sorted(top + ["dev", "etc", "proc", "tmp", "usr", "workspace"])
    assert inside(workspace, "list", "/") == "entries=" + ",".join(names)
    for path in ("/home", "/var", "/sys", "/run", "/opt", "/srv", "/mnt", "/boot"):
        assert inside(workspace, "list", path) == "errno=ENOENT", path


# ----------------------------------------------------------------------------------
# 2. Writing to the runtime


@pytest.mark.parametrize(
    "probe,path,expected",
    [
        ("create", "/usr/bin/codeq-e2e-planted", "errno=EROFS"),
        ("openw", "/usr/bin/python3", "errno=EACCES"),
        ("append", "/etc/passwd", "errno=EACCES"),
        ("create", "/codeq-e2e-planted", "errno=EROFS"),
        ("create", "/etc/codeq-e2e-planted", "errno=EROFS"),
        ("openw", "/etc/ld.so.cache", "errno=EACCES"),
    ],
    ids=["create-in-usr-bin", "open-python3-for-writing", "append-etc-passwd",
         "create-in-root", "create-in-etc", "open-ld.so.cache-for-writing"],
)
def test_runtime_not_writable(workspace, probe, path, expected):
    """Plants or modifies files of the runtime (a binary in /usr/bin, python3 itself,
    /etc/passwd, the loader cache, a file in /). The root and its binds are read-only
    (EROFS for new files) and owned by ids the sandbox user is not (EACCES for existing
    ones). Not run on the host: there it would really modify the system. Afterwards the
    host has no planted file."""
    if ONE_ID and path.startswith("/etc/"):
        # A normal user's sandbox without subordinate ids has one id, which the code has
        # too: the files copied into the root are its own, and only the read-only mount
        # refuses (docs/security.md, "Running as a normal user").
        expected = "errno=EROFS"
    assert inside(workspace, probe, path) == expected
    if probe == "create":
        assert not os.path.exists(path), f"{path} appeared on the host"


# ----------------------------------------------------------------------------------
# 3. /proc and other processes


def test_proc_lists_only_own_processes(workspace, neighbour):
    """Lists /proc: each sandboxed process has its own pid namespace and /proc, so only
    pid 1 (its shim) and itself are visible: no host process (the sentinel), no process
    of the neighbour sandbox."""
    line = inside(workspace, "pids")
    pids_part, self_part = line.split()
    pids = [int(p) for p in pids_part.split("=", 1)[1].split(",")]
    me = int(self_part.split("=", 1)[1])
    assert pids == sorted({1, me}), line
    assert neighbour.sentinel.pid not in pids
    host = outside("pids")
    assert str(neighbour.sentinel.pid) in host.split()[0].split("=", 1)[1].split(",")


def test_proc_host_process_cmdline(workspace, neighbour):
    """Reads /proc/<host sentinel pid>/cmdline: no such process inside (ENOENT); root on
    the host reads it."""
    path = f"/proc/{neighbour.sentinel.pid}/cmdline"
    assert inside(workspace, "read", path) == "errno=ENOENT"
    assert outside("read", path) == "ok"


@pytest.mark.parametrize("entry", ["environ", "mem"])
def test_proc_shim_not_readable(workspace, neighbour, entry):
    """Reads /proc/1/environ and /proc/1/mem, i.e. of the per-process shim (pid 1 of the
    process's pid namespace, sandbox root, not dumpable): EACCES. On the host root may
    read another root process's (the sentinel's) environ and mem."""
    assert inside(workspace, "read", f"/proc/1/{entry}") == "errno=EACCES"
    # mem is read at offset 0, which is unmapped: the open is what is checked.
    result = outside("read", f"/proc/{neighbour.sentinel.pid}/{entry}")
    assert result in (("ok",) if entry == "environ" else ("ok", "errno=EIO")), result


def test_proc_self_exe_overwrite(workspace):
    """CVE-2019-5736: opens /proc/self/exe for writing from python3 inside, to overwrite
    the runtime binary that every later process executes. The binary (on the host the
    file behind /usr/bin/python3) is owned by an id unmapped in the sandbox and bound
    read-only: EACCES for O_WRONLY and O_RDWR, EROFS once O_TRUNC asks for a write to
    the mount. The host binary's sha256 is unchanged. The probe's own running binary (a
    writable copy in the workspace) cannot be opened for writing either (ETXTBSY)."""
    runtime = os.path.realpath("/usr/bin/python3")
    before = sha256(runtime)
    script = (
        "import os, errno\n"
        "for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):\n"
        "    try:\n"
        "        os.close(os.open('/proc/self/exe', flags)); print('ok')\n"
        "    except OSError as e:\n"
        "        print('errno=' + errno.errorcode[e.errno])\n"
    )
    r = codeq_sandbox(["python3", "-c", script], workspace=workspace)
    assert r.returncode == 0, r
    assert r.stdout.split() == ["errno=EACCES", "errno=EACCES", "errno=EROFS"], r
    assert inside(workspace, "openw", "/proc/self/exe") == "errno=ETXTBSY"
    assert sha256(runtime) == before


@pytest.mark.parametrize("entry", ["exe", "root/etc/passwd", "cwd", "fd"])
def test_proc_shim_links_not_followed(workspace, entry):
    """Follows the shim's /proc/1/exe (the host's codeq-sandbox-init binary: the
    CVE-2019-5736 target in codeq's design), /proc/1/root, /proc/1/cwd and lists
    /proc/1/fd: all EACCES (the shim is not dumpable and runs as the sandbox's root).
    Opening its exe for writing is refused too, and the host binary is unchanged."""
    init_binary = os.path.join(os.path.dirname(CODEQ), "codeq-sandbox-init")
    before = sha256(init_binary)
    probe = "list" if entry == "fd" else "read"
    assert inside(workspace, probe, f"/proc/1/{entry}") == "errno=EACCES"
    if entry == "exe":
        assert inside(workspace, "openw", "/proc/1/exe") == "errno=EACCES"
    assert sha256(init_binary) == before


# ----------------------------------------------------------------------------------
# 5. Mounts


MOUNT_CASES = [
    # probe, inside args, host args ("{scratch}" is a fresh host directory), host result
    ("mount-tmpfs", ["/tmp"], ["{scratch}"], "ok"),
    ("umount", ["/tmp"], ["{scratch}"], "errno=EINVAL"),
    ("pivot-root", ["/workspace", "/workspace"], ["/nonexistent-codeq-a", "/nonexistent-codeq-b"],
     "errno=ENOENT"),
    ("chroot", ["/tmp"], ["{scratch}"], "ok"),
    ("open-tree", ["/tmp"], ["{scratch}"], "ok"),
    ("fsopen", ["tmpfs"], ["tmpfs"], "ok"),
]


@pytest.mark.parametrize("probe,args_in,args_out,expected_out", MOUNT_CASES,
                         ids=[c[0] for c in MOUNT_CASES])
def test_mount_family(workspace, scratch, probe, args_in, args_out, expected_out):
    """Mounts a tmpfs over /tmp, unmounts /tmp, pivots the root (pivot_root(".", ".")
    idiom on /workspace), chroots, clones a mount tree (open_tree) and opens a new file
    system context (fsopen): all EPERM from seccomp, which takes the mount family away
    from sandboxed code. On the host root mounts and unmounts a tmpfs on a scratch
    directory, chroots (in a child), clones the scratch mount tree and opens a tmpfs
    context; unmounting a non-mount point and pivoting into a nonexistent path reach
    the kernel's checks (EINVAL, ENOENT). The host's mount table is unchanged."""
    assert inside(workspace, probe, *args_in) == "errno=EPERM"
    before = read_mountinfo()
    host_args = [a.replace("{scratch}", scratch) for a in args_out]
    assert outside(probe, *host_args) == expected_out
    assert read_mountinfo() == before


# ----------------------------------------------------------------------------------
# 6. Namespaces

NAMESPACES = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"]


@pytest.mark.parametrize("ns", NAMESPACES)
def test_unshare(workspace, ns):
    """unshare(CLONE_NEW<ns>) in a forked child: EPERM inside (a new user namespace
    would hand the process a full set of capabilities over new kernel objects; the
    others need CAP_SYS_ADMIN and are denied by seccomp as well). Works on the host."""
    assert inside(workspace, "unshare", ns) == "errno=EPERM"
    assert outside("unshare", ns) == "ok"


@pytest.mark.parametrize("ns", NAMESPACES)
def test_clone_with_namespace_flag(workspace, ns):
    """Raw clone(CLONE_NEW<ns> | SIGCHLD): EPERM inside (the process filter masks every
    namespace flag, including the CLONE_NEWPID | CLONE_NEWNS that the shims keep for
    themselves). Works on the host."""
    assert inside(workspace, "clone-ns", ns) == "errno=EPERM"
    assert outside("clone-ns", ns) == "ok"


@pytest.mark.parametrize("ns", ["net", "mnt"])
def test_setns(workspace, ns):
    """setns() into (its own) namespace, from a forked child: EPERM inside, where setns
    is denied outright; root on the host may do it."""
    assert inside(workspace, "setns", ns) == "errno=EPERM"
    assert outside("setns", ns) == "ok"


def test_clone3(workspace):
    """clone3, whose flags live in memory that seccomp cannot inspect: ENOSYS inside,
    so that glibc falls back to clone (which seccomp can check). Works on the host."""
    assert inside(workspace, "clone3") == "errno=ENOSYS"
    assert outside("clone3") == "ok"


# ----------------------------------------------------------------------------------
# 7. Other processes' memory and execution


@pytest.mark.parametrize("probe", ["ptrace-traceme", "ptrace-attach", "process-vm-readv"])
def test_no_ptrace(workspace, probe):
    """PTRACE_TRACEME, PTRACE_ATTACH to a child it forked itself, and process_vm_readv
    of that child: EPERM inside (tracing is the first step of most escapes and never
    needed by analysis code). All work on the host."""
    assert inside(workspace, probe) == "errno=EPERM"
    assert outside(probe) == "ok"


# ----------------------------------------------------------------------------------
# 8-15. Kernel attack surface and the machine itself


def _host_expectation(option, present):
    """The host's answer for a call that exists only with kernel option `option`:
    `present` when it is built in, ENOSYS when not; None when unknown."""
    has = kernel_has(option)
    if has is None:
        return None
    return present if has else "errno=ENOSYS"


KERNEL_CASES = [
    # probe, args, inside, host (a string, or (kernel option, answer when present))
    ("keyctl", [], "errno=EPERM", "ok"),
    ("add-key", [], "errno=EPERM", "errno=ENODEV"),
    ("request-key", [], "errno=EPERM", "errno=ENOKEY"),
    ("bpf", [], "errno=EPERM", "ok"),
    ("userfaultfd", [], "errno=EPERM", "ok"),
    ("io-uring", [], "errno=ENOSYS survived", "ok"),
    ("modify-ldt", [], "errno=EPERM", "ok"),
    ("open-by-handle", [], "errno=EPERM", "ok"),
    ("kexec-load", [], "errno=EPERM", ("CONFIG_KEXEC", "errno=EINVAL")),
    ("kexec-file-load", [], "errno=EPERM", ("CONFIG_KEXEC_FILE", "errno=EINVAL")),
    ("init-module", [], "errno=EPERM", ("CONFIG_MODULES", "errno=ENOEXEC")),
    ("finit-module", [], "errno=EPERM", ("CONFIG_MODULES", "errno=EBADF")),
    ("delete-module", [], "errno=EPERM", ("CONFIG_MODULE_UNLOAD", "errno=ENOENT")),
    ("clock-settime", [], "errno=EPERM", "errno=EINVAL"),
    ("settimeofday", [], "errno=EPERM", "ok"),
    ("adjtimex", [], "errno=EPERM", "errno=EINVAL"),
    ("reboot", [], "errno=EPERM", "errno=EINVAL"),
    ("swapon", ["/nonexistent/codeq-e2e-swap"], "errno=EPERM", "errno=ENOENT"),
    ("swapoff", ["/nonexistent/codeq-e2e-swap"], "errno=EPERM", "errno=ENOENT"),
    ("setuid0", [], "errno=EPERM", "ok"),
]

KERNEL_WHY = {
    "keyctl": "kernel keyrings are shared kernel state with a CVE record",
    "add-key": "a key of a nonexistent type: ENODEV on the host",
    "request-key": "a nonexistent user key, no upcall: ENOKEY on the host",
    "bpf": "BPF_PROG_LOAD of a trivial socket filter: the verifier is a classic target",
    "userfaultfd": "used to widen race windows in kernel exploits",
    "io-uring": "ENOSYS (so libuv falls back), and the process survives",
    "modify-ldt": "reading the LDT: a 16-bit segment attack surface",
    "open-by-handle": "the 'shocker' escape: open a host inode by a forged handle",
    "kexec-load": "invalid flags and too many segments: nothing is loaded",
    "kexec-file-load": "invalid fds and an undefined flag: nothing is loaded",
    "init-module": "an empty module image",
    "finit-module": "an invalid fd",
    "delete-module": "a module name that does not exist",
    "clock-settime": "CLOCK_MONOTONIC, which cannot be set: EINVAL on the host",
    "settimeofday": "settimeofday(NULL, NULL), a no-op needing CAP_SYS_TIME",
    "adjtimex": "ADJ_TICK with an out-of-range tick: EINVAL on the host",
    "reboot": "wrong magic numbers: EINVAL on the host",
    "swapon": "a path that does not exist: ENOENT on the host",
    "swapoff": "a path that does not exist: ENOENT on the host",
    "setuid0": "becoming root: the sandbox user has no CAP_SETUID",
}


@pytest.mark.parametrize("probe,args,expected_in,expected_out", KERNEL_CASES,
                         ids=[c[0] for c in KERNEL_CASES])
def test_kernel_surface(workspace, probe, args, expected_in, expected_out):
    """Calls a system call of the kernel's attack surface or one that acts on the
    machine (keyrings, bpf, userfaultfd, io_uring, LDT, open_by_handle_at, kexec,
    modules, clock setters, reboot, swap, setuid(0)), with harmless arguments. Inside:
    EPERM from seccomp before the kernel looks at the arguments (io_uring: ENOSYS and
    the probe lives on). On the host as root the same call works or is answered by the
    kernel's own argument checks (ENOSYS where this kernel lacks the feature, as read
    from its config), which proves the probe reaches the kernel."""
    assert probe in KERNEL_WHY
    if ONE_ID and probe == "setuid0":
        expected_in = "errno=EINVAL"  # one id: uid 0 does not exist in the namespace at all
    assert inside(workspace, probe, *args) == expected_in
    got = outside(probe, *args)
    if isinstance(expected_out, tuple):
        exact = _host_expectation(*expected_out)
        if exact is None:  # no kernel config to tell: any kernel answer but EPERM
            assert got.startswith("errno=") and got != "errno=EPERM", got
        else:
            assert got == exact, f"host: {got} ({KERNEL_WHY[probe]})"
    else:
        assert got == expected_out, f"host: {got} ({KERNEL_WHY[probe]})"


def test_perf_event_open(workspace):
    """perf_event_open of the software cpu-clock counter on itself: EPERM inside (perf
    is a large kernel attack surface and a side channel). On the host the answer
    depends on kernel.perf_event_paranoid and the PMU; it must differ from inside."""
    assert inside(workspace, "perf") == "errno=EPERM"
    host = outside("perf")
    print(f"host perf_event_open: {host}")  # shown with -rP / on failure
    assert host != "errno=EPERM", f"host perf_event_open answered {host}, as inside"
    assert host == "ok" or host.startswith("errno="), host


def test_sethostname(workspace):
    """sethostname (even to the current name) inside: EPERM. The UTS namespace is the
    sandbox's own, but its root is not the sandboxed user. Not run on the host."""
    assert inside(workspace, "sethostname") == "errno=EPERM"


@pytest.mark.parametrize("abi", ["int80", "x32"])
def test_foreign_syscall_abi(workspace, abi):
    """A system call through a non-native ABI: the i386 getpid (eax=20) via int $0x80,
    and getpid with the x32 bit set. The filter is written for x86-64 numbers, so these
    kill the process with SIGSYS: exit status 159, report signal 31. On the host int
    $0x80 returns the pid (the kernel has IA32 emulation); the x32 call returns the pid
    where the kernel has the x32 ABI and ENOSYS where not."""
    r = probe_in(workspace, abi)
    assert r.returncode == 159, r
    assert r.report["signal"] == 31 and r.report["exit_code"] is None, r
    assert r.stdout == "", r
    host = outside(abi)
    option = "CONFIG_IA32_EMULATION" if abi == "int80" else "CONFIG_X86_X32_ABI"
    has = kernel_has(option)
    if abi == "int80" or has:
        ret, pid = (int(kv.split("=")[1]) for kv in host.split())
        assert ret == pid, host
        assert has is not False, f"{option} not set, yet: {host}"
    else:
        assert host == "errno=ENOSYS", host


# ----------------------------------------------------------------------------------
# 16-17. Network

SOCKET_CASES = [
    # kind, inside, host kernel option (None: always there)
    ("inet-raw", "errno=EPERM", None),
    ("inet6-raw", "errno=EPERM", "CONFIG_IPV6"),
    ("inet-raw-cloexec", "errno=EPERM", None),
    ("packet", "errno=EPERM", "CONFIG_PACKET"),
    ("packet-dgram", "errno=EPERM", "CONFIG_PACKET"),
    ("vsock", "errno=EAFNOSUPPORT", "CONFIG_VSOCKETS"),
    ("alg", "errno=EAFNOSUPPORT", "CONFIG_CRYPTO_USER_API"),
    ("netlink-audit", "errno=EPERM", "CONFIG_AUDIT"),
    ("netlink-uevent", "errno=EPERM", None),
    ("netlink-sock-diag", "errno=EPERM", None),
]


@pytest.mark.parametrize("kind,expected_in,option", SOCKET_CASES, ids=[c[0] for c in SOCKET_CASES])
def test_forbidden_socket(workspace, kind, expected_in, option):
    """Creates a socket of a forbidden kind: raw IPv4/IPv6 (also with SOCK_CLOEXEC |
    SOCK_NONBLOCK in the type's high bits), AF_PACKET raw and datagram: EPERM (they
    could forge traffic); AF_VSOCK (the hypervisor's channel) and AF_ALG (kernel
    crypto, a frequent exploit target): EAFNOSUPPORT, as if absent; netlink other than
    route (audit, uevent, sock_diag): EPERM. On the host root creates each of them,
    except a family this kernel does not have at all (its config lacks the option:
    then the host answer is the kernel's own EAFNOSUPPORT/EPROTONOSUPPORT, and only the
    inside half is meaningful)."""
    assert inside(workspace, "socket", kind) == expected_in
    host = outside("socket", kind)
    if option is not None and kernel_has(option) is False:
        # The kernel itself lacks this family: nothing to show on the host.
        assert host in ("errno=EAFNOSUPPORT", "errno=EPROTONOSUPPORT"), host
    else:
        assert host == "ok", f"host socket({kind}) answered {host}"


@pytest.mark.parametrize("kind", ["inet-stream", "inet-dgram", "inet6-stream", "unix-stream",
                                  "netlink-route"])
def test_allowed_socket(workspace, kind):
    """The socket kinds ordinary code needs stay available inside (TCP, UDP, unix,
    netlink route for getifaddrs): the family filter is an allowlist, not a blanket
    denial."""
    assert inside(workspace, "socket", kind) == "ok"


def _host_ipv4():
    """The host's own non-loopback IPv4 address."""
    try:
        out = subprocess.run(["ip", "-4", "route", "get", "1.1.1.1"], capture_output=True,
                             text=True, timeout=10).stdout.split()
        if "src" in out:
            return out[out.index("src") + 1]
    except (OSError, subprocess.TimeoutExpired):
        pass
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.123", 9))  # no packet is sent for a UDP connect
        return s.getsockname()[0]
    finally:
        s.close()


@pytest.fixture(scope="module")
def host_listeners():
    """TCP listeners on host 127.0.0.1 and on the host's non-loopback address, and an
    abstract unix listener, for the duration of the module."""
    addr = _host_ipv4()
    assert addr and not addr.startswith("127."), f"no non-loopback IPv4 address: {addr!r}"
    socks = []
    ports = {}
    for host in ("127.0.0.1", addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, 0))
        s.listen(64)
        socks.append(s)
        ports[host] = s.getsockname()[1]
    name = f"codeq-test-{random.randrange(1 << 40):010x}"
    u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    u.bind("\0" + name)
    u.listen(64)
    socks.append(u)
    yield {"loopback": ("127.0.0.1", ports["127.0.0.1"]), "external": (addr, ports[addr]),
           "abstract": name}
    for s in socks:
        s.close()


def test_connect_host_loopback(workspace, host_listeners):
    """Connects to a TCP listener on the host's 127.0.0.1: the sandbox has its own
    network namespace whose loopback has no such listener (ECONNREFUSED). From the host
    the connection works."""
    host, port = host_listeners["loopback"]
    assert inside(workspace, "connect4", host, str(port)) == "errno=ECONNREFUSED"
    assert outside("connect4", host, str(port)) == "ok"


def test_connect_host_address(workspace, host_listeners):
    """Connects to a TCP listener on the host's own non-loopback address: the sandbox's
    network namespace has only loopback and no route anywhere (ENETUNREACH). From the
    host the connection works."""
    host, port = host_listeners["external"]
    assert inside(workspace, "connect4", host, str(port)) == "errno=ENETUNREACH"
    assert outside("connect4", host, str(port)) == "ok"


def test_connect_host_abstract_unix(workspace, host_listeners):
    """Connects to a host abstract unix socket (\\0codeq-test-...): abstract names are
    per network namespace, so inside nothing listens there (ECONNREFUSED). From the
    host it connects."""
    name = host_listeners["abstract"]
    assert inside(workspace, "connect-abstract", name) == "errno=ECONNREFUSED"
    assert outside("connect-abstract", name) == "ok"


def test_no_dns(workspace):
    """Resolves a public name: there is no resolver configuration and no network, so
    getaddrinfo fails (EAI_AGAIN: the stub resolver's query to 127.0.0.1:53 is
    refused). localhost still resolves from the generated /etc/hosts."""
    assert inside(workspace, "dns", "example.com") == "gai=EAI_AGAIN"
    assert inside(workspace, "dns", "localhost") == "ok"


def test_only_loopback_interface(workspace):
    """Lists network interfaces: only lo inside; the host has more."""
    assert inside(workspace, "ifaces") == "ifaces=lo"
    assert outside("ifaces") != "ifaces=lo"


# ----------------------------------------------------------------------------------
# 18. Signals


def test_kill_everything(workspace, neighbour):
    """kill(-1, SIGKILL) inside: it reaches only the caller's own pid namespace, where
    nobody but the caller and its (protected) shim lives: ESRCH. The host sentinel and
    the neighbour sandbox survive (checked here and by the per-test neighbour check).
    Never run on the host."""
    assert inside(workspace, "kill", "-1", "9") == "errno=ESRCH"
    assert pid_alive(neighbour.sentinel.pid)
    assert neighbour.proc.poll() is None


def test_kill_host_sentinel(workspace, neighbour):
    """kill(<host sentinel pid>, SIGKILL) inside: that pid does not exist in the
    sandbox's pid namespace (ESRCH), and the sentinel lives on. On the host, signal 0
    to the sentinel shows that it exists."""
    pid = str(neighbour.sentinel.pid)
    assert inside(workspace, "kill", pid, "9") == "errno=ESRCH"
    assert pid_alive(neighbour.sentinel.pid)
    assert outside("kill", pid, "0") == "ok"


def test_kill_shim(workspace):
    """kill(1, SIGKILL) inside, against its shim: EPERM (the shim runs as the
    sandbox's root, the probe as the sandbox user). In a normal user's sandbox without
    subordinate ids the shim has the probe's uid, so kill(2) passes its permission
    check, and the kernel drops the signal: SIGKILL from inside a pid namespace never
    reaches its init. The shim lives on and reports the probe's exit (inside() checks
    that it exited 0)."""
    assert inside(workspace, "kill", "1", "9") == ("ok" if ONE_ID else "errno=EPERM")


# ----------------------------------------------------------------------------------
# 19. Terminal


@pytest.mark.parametrize("variant", ["plain", "high"])
def test_tiocsti(workspace, variant):
    """ioctl(0, TIOCSTI, "x") pushes input into a terminal; inside it is denied (EPERM),
    also with bit 32 of the request set, which the kernel ignores (it truncates the
    request to 32 bits) and a 64-bit filter compare would miss. On the host the same
    call on a pipe reaches the tty layer's check (ENOTTY)."""
    args = ["tiocsti"] + (["high"] if variant == "high" else [])
    assert inside(workspace, *args, input_bytes=b"") == "errno=EPERM"
    assert outside(*args, stdin=subprocess.PIPE) == "errno=ENOTTY"


def test_no_controlling_terminal(workspace):
    """Opens /dev/tty: inside there is no such device at all (ENOENT); on the host, in a
    new session without a controlling terminal, the kernel answers ENXIO."""
    assert inside(workspace, "open-tty") == "errno=ENOENT"
    r = subprocess.run([PROBE, "open-tty"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, start_new_session=True, timeout=30)
    assert r.stdout.strip() == "errno=ENXIO", r


def test_host_terminal_never_enters(workspace):
    """Runs codeq with a pseudo-terminal as its stdin: codeq forwards stdin through a
    pipe, so inside nothing is a terminal, and TIOCSTI (denied by seccomp anyway) has
    no terminal to type into."""
    master, slave = pty.openpty()
    try:
        for args, expected in ((["isatty"], "tty=0,0,0"), (["tiocsti"], "errno=EPERM")):
            r = codeq_sandbox(["/workspace/cq-probe", *args], workspace=workspace, stdin=slave)
            assert r.returncode == 0, r
            assert r.line == expected, r
    finally:
        os.close(master)
        os.close(slave)


# ----------------------------------------------------------------------------------
# 20-23. Leaks: fds, environment, devices, privileges


def test_no_leaked_fds(workspace):
    """Runs codeq with extra inherited descriptors (a host file opened by root and a
    pipe): inside only 0, 1 and 2 are open (apart from the directory being listed), so
    nothing of the host leaks in by descriptor (cf. CVE-2024-21626)."""
    secret = os.open("/etc/shadow", os.O_RDONLY)
    rd, wr = os.pipe()
    try:
        r = codeq_sandbox(["/workspace/cq-probe", "fds"], workspace=workspace,
                          pass_fds=(secret, rd, wr))
        assert r.returncode == 0, r
        assert r.line == "fds=0,1,2"
        # The probe does see inherited descriptors where there are some.
        host = probe_out("fds", pass_fds=(secret, rd, wr))
        assert host.returncode == 0, host
        host_fds = {int(x) for x in host.line.split("=", 1)[1].split(",")}
        assert {secret, rd, wr} <= host_fds, host
    finally:
        for fd in (secret, rd, wr):
            os.close(fd)


ALLOWED_ENV = ["HOME", "LANG", "LOGNAME", "PATH", "PWD", "SHELL", "TMPDIR", "USER",
               "XDG_CACHE_HOME", "XDG_CONFIG_HOME"]


def test_environment_not_leaked(workspace):
    """Runs codeq with a secret in its environment: inside the environment has exactly
    the allowlisted names, the secret is absent, and HOME is the workspace."""
    env = dict(os.environ, CODEQ_E2E_SECRET="hunter2", AWS_SECRET_ACCESS_KEY="x")
    r = probe_in(workspace, "env", env=env)
    assert r.returncode == 0, r
    assert r.line == "env=" + ",".join(ALLOWED_ENV)
    assert inside(workspace, "getenv", "CODEQ_E2E_SECRET", env=env) == "unset"
    assert inside(workspace, "getenv", "HOME", env=env) == "value=/workspace"
    # The same probe on the host, with the same environment, does see the secret.
    assert outside("getenv", "CODEQ_E2E_SECRET", env=env) == "value=hunter2"


def test_env_option(workspace):
    """--env NAME=VALUE adds exactly that variable (and may override a default)."""
    opts = ["--env", "CODEQ_E2E_VAR=a=b c", "--env", "LANG=C"]
    r = probe_in(workspace, "env", opts=opts)
    assert r.returncode == 0, r
    assert r.line == "env=" + ",".join(sorted(ALLOWED_ENV + ["CODEQ_E2E_VAR"]))
    assert inside(workspace, "getenv", "CODEQ_E2E_VAR", opts=opts) == "value=a=b c"
    assert inside(workspace, "getenv", "LANG", opts=opts) == "value=C"


def test_dev_contents(workspace):
    """Lists /dev: exactly the harmless devices and links, no disks, ttys, kmsg, mem."""
    assert inside(workspace, "list", "/dev") == (
        "entries=fd,full,null,random,shm,stderr,stdin,stdout,urandom,zero"
    )


def test_privileges(workspace):
    """Reads /proc/self/status: uid/gid 1000, no capabilities in any set, no_new_privs,
    seccomp filter mode with the two stacked filters."""
    zero = "0000000000000000"
    assert inside(workspace, "status") == (
        "Uid=1000,1000,1000,1000 Gid=1000,1000,1000,1000 "
        f"CapInh={zero} CapPrm={zero} CapEff={zero} CapBnd={zero} CapAmb={zero} "
        "NoNewPrivs=1 Seccomp=2 Seccomp_filters=2"
    )
    # On the host the probe reports root's full capability sets.
    host = outside("status")
    assert "Uid=0,0,0,0" in host and f"CapEff={zero}" not in host, host


def test_identity(workspace):
    """`id` and `hostname` inside: the sandbox user (uid 1000, named from the
    generated /etc/passwd) on a host named codeq; no host account name leaks in."""
    r = codeq_sandbox(["sh", "-c", "id; hostname; cat /etc/passwd"], workspace=workspace)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == "uid=1000(sandbox) gid=1000(sandbox) groups=1000(sandbox)"
    assert lines[1] == "codeq"
    assert [l.split(":")[0] for l in lines[2:]] == ["root", "sandbox", "nobody"]


# The /proc entries codeq masks (sandbox/init/rootfs.c, after Docker's masked paths,
# plus the side channels on other sessions: pressure stall times, per-disk I/O).
PROC_MASKED = ["kcore", "keys", "key-users", "timer_list", "sched_debug", "latency_stats",
               "kallsyms", "kpagecount", "kpageflags", "kpagecgroup", "vmallocinfo",
               "sysrq-trigger", "acpi", "scsi", "asound", "driver", "pressure", "diskstats"]


def test_proc_host_wide_entries_hidden(workspace):
    """Reads the /proc entries that leak host-wide state (kernel symbols, other users'
    keys, timers, page flags, vmalloc layout, ...). Those readable by everybody are
    masked (an empty file or directory inside, while root on the host reads data from
    the files); the root-only ones are refused (EACCES: host root is not mapped in the
    sandbox). Also /proc/kmsg (kernel log): EACCES. Entries this kernel does not have
    are absent inside as well (ENOENT)."""
    checked = 0
    for name in PROC_MASKED:
        path = f"/proc/{name}"
        if not os.path.exists(path):
            assert inside(workspace, "size", path) == "errno=ENOENT", path
            continue
        st = os.stat(path)
        public = bool(st.st_mode & 0o004)
        if os.path.isdir(path):
            expected = "entries=" if public else "errno=EACCES"
            assert inside(workspace, "list", path) == expected, path
        else:
            expected = "bytes=0" if public else "errno=EACCES"
            assert inside(workspace, "size", path) == expected, path
            if public and name != "kcore":
                assert outside("size", path) != "bytes=0", f"{path} is empty on the host too"
        checked += 1
    assert checked >= 3, "too few of the masked /proc entries exist to test anything"
    assert inside(workspace, "size", "/proc/kmsg") == "errno=EACCES"


def _read_host(path):
    with open(path) as f:
        return f.read()


def test_proc_host_identity_replaced(workspace):
    """Reads /proc/sys/kernel/random/boot_id and /proc/cmdline, which are the same in
    every container of a host and unique to it, so code in two sessions could tell
    that it shares a host (and which one). Inside, boot_id is a random version 4 UUID
    of the sandbox: not the host's, and different in the next sandbox; the command
    line is a neutral constant, not the host's. Both stay readable (programs read
    boot_id) and cannot be written."""
    script = "cat /proc/sys/kernel/random/boot_id /proc/cmdline"
    runs = [codeq_sandbox(["sh", "-c", script], workspace=workspace) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r
    boot_ids = [r.stdout.splitlines()[0] for r in runs]
    host_boot_id = _read_host("/proc/sys/kernel/random/boot_id").strip()
    for boot_id in boot_ids:
        assert boot_id != host_boot_id
        fields = boot_id.split("-")
        assert [len(f) for f in fields] == [8, 4, 4, 4, 12], boot_id
        assert fields[2][0] == "4" and fields[3][0] in "89ab", boot_id
    assert boot_ids[0] != boot_ids[1], "two sandboxes share a boot_id"
    host_cmdline = _read_host("/proc/cmdline")
    for r in runs:
        assert r.stdout.split("\n", 1)[1] == "quiet\n" != host_cmdline, r
    assert inside(workspace, "openw", "/proc/sys/kernel/random/boot_id") == "errno=EACCES"
    assert inside(workspace, "openw", "/proc/cmdline") == "errno=EACCES"


def test_proc_loadavg_neutral(workspace):
    """Reads /proc/loadavg, whose figures follow the CPU use of every session of the
    host (and count the host's threads): inside it is a constant, so `uptime` and
    `top` report a load of 0. (sysinfo(2) still returns the host's load averages: a
    documented limit, see docs/security.md.)"""
    r = codeq_sandbox(["cat", "/proc/loadavg"], workspace=workspace)
    assert r.returncode == 0, r
    assert r.stdout == "0.00 0.00 0.00 1/1 1\n"
    assert _read_host("/proc/loadavg").split()[3] != "1/1"


def test_mountinfo_names_no_other_host_path():
    """Reads /proc/self/mountinfo, whose 4th field is the path of each mount's root
    inside its file system: for a bind, the host path it came from. In a sandbox
    without --workspace every bind comes from the same path as it is mounted on (the
    runtime: /usr, the /etc allowlist, the devices) or is a /proc stand-in, so no
    other host path is named. (A worker session's runtimes bind names the runtimes'
    host directory, and --workspace its directory: documented in docs/security.md.)"""
    r = codeq_sandbox(["cat", "/proc/self/mountinfo"])
    assert r.returncode == 0, r
    standins = {"/empty", "/emptydir", "/boot_id", "/cmdline", "/loadavg"}
    for line in r.stdout.splitlines():
        root, mount_point = line.split()[3:5]
        assert (root in ("/", mount_point) or
                (root in standins and mount_point.startswith("/proc/")) or
                (mount_point == "/dev" + root and line.split(" - ")[1].startswith("devtmpfs"))
                or (root == "/sys" and mount_point == "/proc/sys")), line


def test_common_tools_still_work(workspace):
    """What masking must not break: `free`, `ps aux`, `top -bn1`, `uptime`, Python's
    os.cpu_count() (glibc counts the cpu lines of /proc/stat without /sys), importing
    numpy, pandas and matplotlib, and Node's os.totalmem() (from /proc/meminfo)."""
    script = "\n".join([
        "set -e",
        "free | grep -q '^Mem:'",
        "ps aux | grep -q '[p]s aux'",
        "top -bn1 | head -1",
        "uptime",
        'python3 -c "import os; print(os.cpu_count())"',
        'python3 -c "import numpy, pandas, matplotlib; print(\'imports ok\')"',
        'node -e "console.log(require(\'os\').totalmem())"',
    ])
    r = codeq_sandbox(["sh", "-c", script], workspace=workspace, opts=["--timeout", "60"])
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == 5, r
    assert lines[0].startswith("top - ") and "load average: 0.00, 0.00, 0.00" in lines[0], r
    assert "load average: 0.00, 0.00, 0.00" in lines[1], r
    assert lines[2] == str(os.cpu_count()), r
    assert lines[3] == "imports ok", r
    mem_total_kb = next(int(l.split()[1]) for l in _read_host("/proc/meminfo").splitlines()
                        if l.startswith("MemTotal:"))
    assert int(lines[4]) == mem_total_kb * 1024, r


def test_proc_sys_read_only(workspace):
    """Opens sysctls for writing (/proc/sys/net/ipv4/ip_forward, of the sandbox's own
    network namespace, /proc/sys/kernel/hostname, and kernel.core_pattern, whose
    rewrite is a classic container escape) and /proc/sysrq-trigger:
    refused with EACCES (owned by the sandbox's root; /proc/sys is also mounted
    read-only). sysrq-trigger exists only where the kernel has magic SysRq; where it
    does not (this host's config decides) the answer is ENOENT."""
    assert inside(workspace, "openw", "/proc/sys/net/ipv4/ip_forward") == "errno=EACCES"
    assert inside(workspace, "openw", "/proc/sys/kernel/hostname") == "errno=EACCES"
    assert inside(workspace, "openw", "/proc/sys/kernel/core_pattern") == "errno=EACCES"
    sysrq = "errno=EACCES" if os.path.exists("/proc/sysrq-trigger") else "errno=ENOENT"
    assert inside(workspace, "openw", "/proc/sysrq-trigger") == sysrq


# ----------------------------------------------------------------------------------
# The report file


REPORT_ATTACKS = {
    # name: (prepare the host file?, report path relative to the workspace, inside script)
    "link-to-existing-file": (True, "report.json", "ln -sf {victim} /workspace/report.json"),
    "link-to-new-file": (False, "report.json", "ln -sf {victim} /workspace/report.json"),
    "directory-swapped-for-link": (
        False, "sub/report.json", "rm -rf /workspace/sub && ln -s {scratch} /workspace/sub"),
}


@pytest.mark.parametrize("attack", list(REPORT_ATTACKS))
def test_report_symlink_planted_in_workspace(scratch, attack):
    """Sandboxed code would plant a symlink on the path where codeq (running as host
    root) writes the --report once the command has ended, if that path were inside
    the --workspace directory (e.g. `cd ws && codeq sandbox --workspace . --report
    report.json`): the report file itself becomes a link to a root-owned host file
    outside the workspace (here in a private 0700 scratch directory, standing for
    /etc/shadow, /root/.bashrc, ...), or a directory on the report's path is swapped
    for a link to a host directory. Secure outcome: codeq refuses a report path
    inside the workspace up front (usage error, exit 2, nothing run), so the host file
    keeps its content and no file is created in the host directory."""
    exists, rel, script = REPORT_ATTACKS[attack]
    ws = make_workspace(with_probe=False)
    try:
        victim = os.path.join(scratch, "report.json" if attack.startswith("dir") else "victim")
        if exists:
            with open(victim, "w") as f:
                f.write("host content\n")
        sub = os.path.join(ws, "sub")
        os.mkdir(sub)
        os.chown(sub, SANDBOX_UID, SANDBOX_UID)
        report = os.path.join(ws, rel)
        r = codeq_sandbox(["sh", "-c", script.format(victim=victim, scratch=scratch)],
                          workspace=ws, opts=["--report", report], report=False)
        assert r.returncode == 2, r
        assert "inside --workspace" in r.stderr, r
        planted = os.path.join(ws, rel.split("/")[0])
        assert not os.path.islink(planted), "the command ran although its report was refused"
        if exists:
            with open(victim) as f:
                assert f.read() == "host content\n"
        else:
            assert not os.path.exists(victim)
    finally:
        remove_workspace(ws)


def test_report_outside_workspace_is_written_without_following_links(scratch):
    """A report path outside the workspace is fine, and a symlink already sitting on
    its final component (planted by anyone before codeq ran) is not followed: codeq
    creates the file with O_NOFOLLOW in a directory it opened before the sandbox
    started, so it refuses (exit 125) instead of writing through the link."""
    victim = os.path.join(scratch, "victim")
    with open(victim, "w") as f:
        f.write("host content\n")
    link = os.path.join(scratch, "report.json")
    os.symlink(victim, link)
    r = codeq_sandbox(["true"], opts=["--report", link], report=False)
    assert r.returncode == 125, r
    assert "cannot write the report" in r.stderr, r
    with open(victim) as f:
        assert f.read() == "host content\n"
    plain = os.path.join(scratch, "plain.json")
    r = codeq_sandbox(["true"], opts=["--report", plain], report=False)
    assert r.returncode == 0, r
    with open(plain) as f:
        assert json.load(f)["exit_code"] == 0
