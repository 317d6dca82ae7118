"""Forked kernels in the fleet (fork_kernels = on, docs/zygote.md): a worker's Python
kernels are forked from its zygote, with the modules imported already, and a session
drained off one such worker is adopted by another with its variables and files, as
with exec'd kernels. codeq_kernel_forks_total on each worker's /metrics says which
kernels were forked."""

import time

from conftest import BROKERS, free_port
from driver import Driver, texts
from scrape import answers_http, scrape, value, wait_for


def forks(port):
    """codeq_kernel_forks_total by outcome."""
    samples = scrape(port)
    return {o: value(samples, "codeq_kernel_forks_total", outcome=o)
            for o in ("forked", "failed", "no_zygote")}


def all_forked(port):
    """Every kernel that was to be forked was (none started unforked), and some were."""
    n = forks(port)
    assert n["failed"] == 0 and n["no_zygote"] == 0, n
    return n["forked"]


def test_forked_kernels_serve_sessions_and_move_with_them(new_fleet, redis_client):
    f = new_fleet()
    ports = {}
    for name in ("a", "b"):
        port = free_port()
        wid = f.start_worker(name, "--fork-kernels", "on", "--warm-pool-max", "4",
                             "--metrics-listen", f"127.0.0.1:{port}")
        ports[wid] = port
    f.wait_workers(redis_client, 2)
    f.start_dispatcher()
    for port in ports.values():
        wait_for("the worker's /healthz", lambda: answers_http(port), timeout=60)
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session()
        # From the zygote: pandas is there before the session imports it.
        assert texts(driver.code(sid, "import sys\n'pandas' in sys.modules")) == ["True"]
        assert texts(driver.code(sid, "x = 6 * 7\nopen('kept.txt', 'w').write('kept')\nx")) == \
            ["42"]
        owner = redis_client.hget(f.prefix + "session:" + sid, "owner").decode()
        assert all_forked(ports[owner]) >= 1
        other = next(w for w in ports if w != owner)
        before = all_forked(ports[other])

        f.workers[owner].stop()  # drained: the session is handed back
        moved = texts(driver.code(sid, "x, open('kept.txt').read()"))
        assert moved[-1] == "(42, 'kept')", moved
        assert "restored _, x" in moved[0], moved  # the notice of the move
        assert redis_client.hget(f.prefix + "session:" + sid, "owner").decode() == other
        # The adopting worker's kernel was forked too (the session's, or a warm one).
        deadline = time.time() + 30
        while all_forked(ports[other]) <= before:
            assert time.time() < deadline, "no kernel was forked on the adopting worker"
            time.sleep(0.2)
    finally:
        driver.close()
