"""What sandboxed code sends back is hostile too: code in a cell runs in the kernel's own
process, so it can write on the kernel's control channel and forge replies. Through
`codeq mcp` and real sandboxes, each attack here fails on a worker that trusts the
channel: the forged 200 MiB line and the newline flood must cost the host bounded memory
and CPU and get the kernel replaced with a note; a forged answer is held to the output
limit; a neighbour session keeps working; leases on workspace files cannot be taken.

Host memory is codeq mcp's peak RSS (VmHWM) and host CPU its utime + stime from /proc,
measured around each attack; the bounds are far below what the attacks cost before the
fix (docs/security.md, "Kernel protocol"), and are not timings."""

import os

import pytest

from mcp_client import final_value, start_session, texts
from mcp_fixtures import host, new_server  # noqa: F401  (fixtures)

CLK_TCK = os.sysconf("SC_CLK_TCK")

# The Python kernel's control channel is the process's one socket (the kernel moves it
# off fd 0); the Node kernel's is fd 0.
FIND_SOCKET = """
import os, socket
fd = next(int(n) for n in os.listdir("/proc/self/fd")
          if os.readlink(f"/proc/self/fd/{n}").startswith("socket:"))
s = socket.socket(fileno=os.dup(fd))
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def server(host):  # noqa: F811
    srv = new_server(host, "--warm-pool", "0")
    yield srv
    srv.close()


def restarted(result):
    """The result of a cell whose kernel was replaced for breaking the protocol."""
    assert result["isError"] is True, result
    stderr = result["structuredContent"]["stderr"]
    assert "control channel carried" in stderr, stderr
    assert "the kernel was restarted" in stderr, stderr
    return stderr


def attack(server, code):
    """Runs code in a session of its own; returns (result, host CPU s, peak RSS MiB,
    the session). A neighbour session answers 1+1 before and after."""
    neighbour = start_session(server)
    assert neighbour.value("1+1") == "2"
    victim = start_session(server)
    victim.ok("kept = 41")
    cpu0 = cpu_seconds(server.pid)
    result = victim.call("executeCode", code=code, timeout=300)
    cpu = cpu_seconds(server.pid) - cpu0
    assert neighbour.value("1+1") == "2"
    return result, cpu, peak_rss_mib(server.pid), victim


def test_a_forged_200_mib_line_costs_the_host_little_and_replaces_the_kernel(server):
    code = FIND_SOCKET + """
chunk = b"x" * (1 << 20)
try:
    for _ in range(200):
        s.sendall(chunk)
    s.sendall(b"\\n")
except OSError:
    pass
"""
    before = peak_rss_mib(server.pid)
    result, cpu, peak, victim = attack(server, code)
    stderr = restarted(result)
    assert "a reply line longer than" in stderr
    # Before the fix: 28 s of host CPU and 460 MiB (4.2 GB in the report).
    assert peak - before < 64, f"codeq mcp grew from {before} to {peak} MiB"
    assert cpu < 5, f"codeq mcp spent {cpu} s of CPU on the attack"
    # A new kernel: the context is gone, the session works.
    after = victim.call("executeCode", code="kept")
    assert after["isError"] is True and "NameError" in after["structuredContent"]["stderr"]
    assert victim.value("6*7") == "42"


def test_a_newline_flood_costs_the_host_little_and_replaces_the_kernel(server):
    code = FIND_SOCKET + """
import time
block = b"\\n" * 65536
t0 = time.time()
try:
    while time.time() - t0 < 10:
        s.sendall(block)
except OSError:
    pass
"""
    result, cpu, _, victim = attack(server, code)
    stderr = restarted(result)
    assert "not a JSON object" in stderr
    # Before the fix: 9.7 s of host CPU for 0.04 s in the sandbox.
    assert cpu < 3, f"codeq mcp spent {cpu} s of CPU on the flood"
    assert victim.value("1") == "1"


def test_lines_written_between_cells_replace_the_kernel_at_the_next_cell(server):
    s = start_session(server)
    s.ok(FIND_SOCKET + """
import threading, time
def later():
    time.sleep(0.5)
    s.sendall(b'{"id": 999999, "ok": true, "value": "forged"}\\n')
threading.Thread(target=later, daemon=True).start()
""")
    import time
    time.sleep(1.5)
    result = s.call("executeCode", code="1+1")
    stderr = restarted(result)
    assert "a reply to no request in flight" in stderr
    assert "forged" not in "".join(texts(result))
    assert s.value("2+2") == "4"


def test_a_forged_answer_is_held_to_the_output_limit(server):
    """A forged answer with the right id (read from the kernel's own frames) and a huge
    value and figures: the host keeps the output limit (1 MiB) of each."""
    s = start_session(server)
    code = FIND_SOCKET + """
import base64, json, sys
f = sys._getframe()
while f is not None and not isinstance(f.f_locals.get("request"), dict):
    f = f.f_back
rid = f.f_locals["request"]["id"]
png = base64.b64encode(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\0" * (1536 << 10)).decode()
small = base64.b64encode(b"\\x89PNG\\r\\n\\x1a\\n" + b"\\1" * 1000).decode()
s.sendall(json.dumps({"id": rid, "ok": True, "value": "v" * (2 << 20),
                      "images": [png, png] + [small] * 100}).encode() + b"\\n")
import time
time.sleep(5)  # the worker takes the forged answer and returns before the real one comes
"""
    result = s.call("executeCode", code=code)
    assert result["isError"] is False, result["structuredContent"]
    # Nothing on stdout or stderr: the first text block is the value, the last the note.
    value = texts(result)[0]
    kept = value.split("\n[codeq:")[0]
    assert len(kept.encode()) <= 1 << 20
    assert kept == "v" * len(kept)
    assert f"[codeq: the value was {2 << 20} bytes; the first {1 << 20} are shown]" in value
    images = [b for b in result["content"] if b["type"] == "image"]
    assert len(images) == 64  # the two large ones are past the limit; 64 at most
    assert any("figure(s) left out" in t for t in texts(result))
    # The kernel's own answer arrives after the forged one (both together would get the
    # kernel replaced at once, as a second reply): the next cell replaces it.
    restarted(s.call("executeCode", code="1"))


def test_an_honest_large_value_is_cut_by_the_kernel_not_killed(server):
    s = start_session(server)
    s.ok("big = 'é' * (3 << 20)")
    result = s.ok("big")
    value = final_value(result)
    kept, note = value.split("\n[codeq:")
    assert len(kept.encode()) <= 1 << 20 and kept.startswith("'éé")
    assert "the value was 6291458 bytes" in note
    # The kernel was not replaced: the variable is still there.
    assert s.value("len(big)") == str(3 << 20)


def test_figures_past_the_limit_are_left_out_with_a_note(server):
    s = start_session(server)
    result = s.ok("""
import matplotlib.pyplot as plt
import numpy as np
rng = np.random.default_rng(0)
for i in range(3):
    fig = plt.figure(figsize=(20, 20), dpi=100)
    plt.imshow(rng.random((1000, 1000)))
""")
    images = [b for b in result["content"] if b["type"] == "image"]
    assert len(images) < 3, "noise images of ~2 MB each should not all fit in 1 MiB"
    assert any("figure(s) left out" in t for t in texts(result)), texts(result)
    assert s.value("1+1") == "2"


def test_the_node_kernel_is_held_to_the_same_protocol(server):
    s = start_session(server)
    s.ok("globalThis.kept = 1", language="javascript")
    # fd 0 is non-blocking (libuv's): write what fits, wait a millisecond, go on.
    code = """
const fs = require('fs');
const chunk = Buffer.alloc(1 << 20, 'x');
const pause = new Int32Array(new SharedArrayBuffer(4));
let left = 12 * chunk.length, off = 0;
while (left > 0) {
  try {
    const n = fs.writeSync(0, chunk, off, chunk.length - off);
    off = (off + n) % chunk.length;
    left -= n;
  } catch (e) {
    if (e.code !== 'EAGAIN') throw e;
    Atomics.wait(pause, 0, 0, 1);
  }
}
"""
    result = s.call("executeCode", code=code, language="javascript")
    stderr = restarted(result)
    assert "JavaScript kernel" in stderr
    assert s.value("typeof kept", language="javascript") == "'undefined'"


def test_sandboxed_code_cannot_take_a_lease(server):
    """A lease (fcntl F_SETLEASE) would make the host's opens of the file wait for the
    lease-break time; the sandbox's seccomp policy refuses it."""
    s = start_session(server)
    result = s.ok("""
import fcntl, os
open("f", "w").write("x")
fd = os.open("f", os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    outcome = "taken"
except OSError as e:
    outcome = e.errno
outcome
""")
    import errno
    assert final_value(result) == str(errno.EPERM)
    files = s.call("readFiles", paths=["f"])
    assert files["isError"] is False
