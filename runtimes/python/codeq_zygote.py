"""codeq's Python kernel zygote: imports what kernels preload once, then forks kernels
into sessions' sandboxes (docs/zygote.md).

Started by the worker (worker/zygote.c) as
    python3 -u codeq_zygote.py LIBRARY [--preload-module=NAME ...]
as the host uid CQ_SANDBOX_ZYGOTE_UID with no capability, in the mount namespace of a
sandbox of the session's runtime (so modules are the same files at the same paths), with
fd 3 a SOCK_SEQPACKET socket to the worker and fd 4 an O_PATH fd of
codeq-sandbox-init. LIBRARY is libcodeq-adopt.so as this process sees it. It never
runs submitted code: between requests it only waits on fd 3.

Protocol on fd 3, one message each:
  zygote -> worker  b"ready"                       once, after the imports
  worker -> zygote  b"fork" + 5 fds (SCM_RIGHTS)   the sandbox's entry (a pidfd of its
                    init), the adopted shim's status socket, the kernel's fd 0, 1, 2
  zygote -> worker  b"pid N"                       the host pid of the child that
                    entered the sandbox, for the worker to move into its cgroup
  worker -> zygote  b"go" | b"abort"
  zygote -> worker  b"ok" | b"error TEXT"          the child made the shim and the kernel

The child's children: the adopted shim (pid 1 of a new pid namespace below the
sandbox's, which exec's codeq-sandbox-init) and the kernel (pid 2), which becomes
sandboxed code through the library (the same steps as an exec'd process) and then
serves the worker as codeq_kernel.py does.
"""

import ctypes
import fcntl
import gc
import os
import random
import socket
import sys

import codeq_kernel

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
ENTER = (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS
         | CLONE_NEWCGROUP | CLONE_NEWPID)

REQUEST_FD = 3
INIT_FD = 4

libc = ctypes.CDLL(None, use_errno=True)


def _fail(code):
    os._exit(code)


def _move_to(fds, targets):
    """Places fds[i] on targets[i]: all are lifted above the targets first, so that
    placing one never overwrites another."""
    lifted = [fcntl.fcntl(fd, fcntl.F_DUPFD, 16) for fd in fds]
    for fd, target in zip(lifted, targets):
        os.dup2(fd, target)
        os.close(fd)


def _kernel(adopt, channel, stdio):
    """pid 2: the session's kernel."""
    null = os.open(os.devnull, os.O_RDWR)
    _move_to([fd if fd >= 0 else null for fd in stdio], [0, 1, 2])
    env = ctypes.POINTER(ctypes.c_char_p)()
    why = ctypes.create_string_buffer(256)
    if adopt.cq_adopted_become(channel, ctypes.byref(env), why, len(why)) != 0:
        os.write(2, b"codeq: the forked kernel could not start: " + why.value + b"\n")
        _fail(127)
    entries = []
    i = 0
    while env[i] is not None:
        entries.append(env[i].decode("utf-8", "surrogateescape"))
        i += 1
    os.environ.clear()
    for entry in entries:
        name, _, value = entry.partition("=")
        os.environ[name] = value
    # Inherited generator states would repeat the zygote's sequence in every session:
    # random reseeds itself at fork; numpy's global state does not.
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    try:
        os.chdir(os.environ.get("PWD", "/workspace"))
    except OSError:
        pass
    codeq_kernel.serve(None)
    _fail(0)


def _shim(status, channel):
    """pid 1: becomes the adopted shim, uid 0 of the sandbox as init's shims are."""
    os.setresgid(0, 0, 0)
    os.setgroups([])
    os.setresuid(0, 0, 0)
    _move_to([status, channel, INIT_FD], [3, 4, 5])
    os.closerange(6, os.sysconf("SC_OPEN_MAX"))
    os.execve(5, ["codeq-sandbox-init", "adopted-shim"], {})


def _enter(adopt, entry, status, stdio, go):
    """The child: enters the sandbox, waits until the worker has moved it into the
    sandbox's cgroup, and makes the shim and the kernel below it. Never returns."""
    try:
        if libc.setns(entry, ENTER) != 0:
            _fail(20)
        os.close(entry)
        if os.read(go, 1) != b"g":
            _fail(21)
        os.close(go)
        p1 = os.fork()  # in the sandbox's pid namespace
        if p1:
            _, st = os.waitpid(p1, 0)
            _fail(os.waitstatus_to_exitcode(st) & 0x7F)
        if libc.unshare(CLONE_NEWPID | CLONE_NEWNS) != 0:
            _fail(22)
        if os.fork():
            _fail(0)  # the shim is the sandbox init's child now
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if os.fork() == 0:
            ours.close()
            _kernel(adopt, theirs.detach(), stdio)
        theirs.close()
        _shim(status, ours.detach())
    except BaseException:  # noqa: BLE001 - nothing may return into the zygote's loop
        pass
    _fail(23)


def serve(adopt, requests):
    while True:
        msg, fds, _, _ = socket.recv_fds(requests, 64, 8)
        if not msg:
            return
        if msg != b"fork" or len(fds) != 5:
            for fd in fds:
                os.close(fd)
            requests.send(b"error malformed request")
            continue
        entry, status, stdio = fds[0], fds[1], fds[2:]
        go_read, go_write = os.pipe()
        child = os.fork()
        if child == 0:
            requests.detach()
            os.close(REQUEST_FD)
            os.close(go_write)
            _enter(adopt, entry, status, stdio, go_read)
        os.close(go_read)
        for fd in fds:
            os.close(fd)
        requests.send(b"pid %d" % child)
        answer = requests.recv(64)
        if answer == b"go":
            os.write(go_write, b"g")
        os.close(go_write)
        _, st = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(st)
        if answer != b"go":
            requests.send(b"error aborted")
        elif code != 0:
            requests.send(b"error the child failed (%d)" % code)
        else:
            requests.send(b"ok")
        if not answer:
            return


def main():
    library = sys.argv[1]
    modules = [a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--preload-module=")]
    adopt = ctypes.CDLL(library)
    adopt.cq_adopted_become.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.POINTER(ctypes.c_char_p)),
                                        ctypes.c_char_p, ctypes.c_size_t]
    adopt.cq_adopted_become.restype = ctypes.c_int
    requests = socket.socket(fileno=REQUEST_FD)
    codeq_kernel.preload(modules)
    # Reference counts and the collector's bookkeeping would write to every imported
    # object's page in each kernel; frozen, they stay shared copy-on-write.
    gc.freeze()
    requests.send(b"ready")
    serve(adopt, requests)


if __name__ == "__main__":
    main()
