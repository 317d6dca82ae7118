"""tests/net/test_egress_teardown.py - a PUBLIC sandbox leaves nothing in the egress
namespace: no link, address, route or nftables table, after a normal exit and after its
supervisor was killed with SIGKILL (then the next start sweeps what was left).

The table goes at once (codeq deletes it before it exits). The link goes
asynchronously: codeq does not delete it, the kernel removes both ends of the veth pair
when it cleans up the sandbox's network namespace, which happens in a kernel work queue
(cleanup_net) some time after the namespace's last process (the sandbox's init) is gone.
So the "after" state is polled for, with a bound. Needs root and the built `codeq`.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import internet  # noqa: E402
from test_sandbox_public import CODEQ, sandbox_argv  # noqa: E402


def state(net, ns):
    """Everything codeq could leave in a namespace, as comparable text."""
    out = {}
    for key, argv in {"links": ["ip", "-o", "link"], "addresses": ["ip", "-o", "addr"],
                      "routes4": ["ip", "-4", "-o", "route"],
                      "routes6": ["ip", "-6", "-o", "route"],
                      "nft": ["nft", "list", "ruleset"]}.items():
        out[key] = net.run_in(ns, argv).stdout
    return out


def settled_state(net, ns):
    """state() once the namespace's own uplink has settled (carrier up, its IPv6
    link-local address assigned), so that only codeq's doing can change it later."""
    assert wait_for(lambda: "NO-CARRIER" not in state(net, ns)["links"]
                    and "inet6 fe80::" in state(net, ns)["addresses"])
    return state(net, ns)


def tables(net, ns):
    return sorted(t for t in net.run_in(ns, ["nft", "list", "tables"]).stdout.split()
                  if t.startswith("cq_"))


def links(net, ns):
    return sorted(line.split(":")[1].strip().split("@")[0]
                  for line in net.run_in(ns, ["ip", "-o", "link"]).stdout.splitlines()
                  if ": cqe" in line)


def wait_for(cond, seconds=10):
    deadline = time.monotonic() + seconds
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.05)
    return cond()


def one_shot(net, egress):
    r = subprocess.run(sandbox_argv(net, egress, "python3", "-c",
                                    "import socket; s = socket.create_connection("
                                    "('198.51.100.7', 7), timeout=5); s.sendall(b'x');"
                                    "print(s.recv(1).decode())"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "x\n", r.stderr


def test_a_normal_exit_leaves_nothing(net):
    egress = net.add_client()
    before = settled_state(net, egress)
    assert "cq_" not in before["nft"] and "cqe" not in before["links"]
    proc = subprocess.Popen(sandbox_argv(net, egress, "sleep", "30"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        # While it runs, there is something to see: the check below can fail.
        assert wait_for(lambda: len(tables(net, egress)) == 1 and len(links(net, egress)) == 1)
        during = state(net, egress)
        assert "100.127." in during["addresses"] and "100.127." in during["routes4"]
        assert "fd63:6f64:6571:" in during["routes6"]
    finally:
        proc.terminate()  # a normal teardown, as after the command's end
        proc.wait()
    assert tables(net, egress) == []  # deleted before codeq exited
    one_shot(net, egress)
    assert tables(net, egress) == []
    assert wait_for(lambda: state(net, egress) == before), state(net, egress)


def test_kill_9_then_the_next_start_sweeps(net):
    egress = net.add_client()
    before = settled_state(net, egress)
    a = subprocess.Popen(sandbox_argv(net, egress, "sleep", "30"), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    b = None
    try:
        assert wait_for(lambda: len(tables(net, egress)) == 1)
        (table_a,) = tables(net, egress)
        b = subprocess.Popen(sandbox_argv(net, egress, "sleep", "30"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait_for(lambda: len(tables(net, egress)) == 2)
        (table_b,) = set(tables(net, egress)) - {table_a}
        link_b = "cqe" + table_b[len("cq_s"):]
        assert wait_for(lambda: link_b in links(net, egress))
        os.kill(b.pid, signal.SIGKILL)
        b.wait()
        # b's sandbox dies with its supervisor (init loses its control socket), and the
        # kernel's cleanup of its namespace takes the link; the table waits for a sweep.
        assert wait_for(lambda: link_b not in links(net, egress))
        assert table_b in tables(net, egress)
    finally:
        a.terminate()
        a.wait()
        if b is not None and b.poll() is None:
            b.kill()
            b.wait()
    assert wait_for(lambda: tables(net, egress) == [table_b] and links(net, egress) == [])
    # The next start sweeps b's table (its slot's lock is free: a dead owner), and its
    # own exit leaves nothing either.
    one_shot(net, egress)
    assert tables(net, egress) == []
    assert wait_for(lambda: state(net, egress) == before), state(net, egress)
