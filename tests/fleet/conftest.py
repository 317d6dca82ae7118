"""Fixtures for the fleet's end-to-end tests: a real Kafka broker and a real
redis-server (scripts/services), one codeq-dispatcher and two codeq-worker processes
running real sandboxes.

If a broker and Redis already answer on the ports scripts/services uses, they are used
as they are (and left running); otherwise they are started in a scratch directory and
stopped at the end. Each test module gets its own request topic, Redis key prefix and
worker ids, so runs never see each other's state.
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
SERVICES = os.path.join(REPO, "scripts", "services")
BROKERS = "127.0.0.1:19092"
REDIS_PORT = 16379

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services():
    started = None
    if not (_answers(19092) and _answers(REDIS_PORT)):
        started = tempfile.mkdtemp(prefix="codeq-fleet-services-")
        subprocess.run([SERVICES, "up", "--dir", started], check=True, timeout=300)
    yield
    if started:
        subprocess.run([SERVICES, "down", "--dir", started], check=False, timeout=120)


class Daemon:
    """One codeq-dispatcher or codeq-worker process; its JSON log goes to a file."""

    def __init__(self, name, args, env):
        self.name = name
        self.log_path = tempfile.mktemp(prefix=f"codeq-{name}-", suffix=".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
        self.proc.wait(timeout=120)

    def stop(self):
        self.kill(signal.SIGTERM)
        self.log.close()


class Fleet:
    def __init__(self):
        run = uuid.uuid4().hex[:8]
        self.prefix = f"codeq:t{run}:"
        self.request_topic = f"codeq.requests.t{run}"
        self.dlq_topic = f"codeq.dlq.t{run}"
        self.env = dict(os.environ, CODEQ_BROKERS=BROKERS, CODEQ_REDIS=f"127.0.0.1:{REDIS_PORT}",
                        CODEQ_REDIS_PREFIX=self.prefix, CODEQ_REQUEST_TOPIC=self.request_topic,
                        CODEQ_DLQ_TOPIC=self.dlq_topic, CODEQ_LOG_LEVEL="info")
        self.run = run
        self.workers = {}
        self.dispatchers = []

    def start_worker(self, name, *extra):
        wid = f"{name}-{self.run}"
        d = Daemon(wid, [os.path.join(BIN_DIR, "codeq-worker"), "--worker-id", wid,
                         "--warm-pool", "1", "--heartbeat-ms", "500", *extra], self.env)
        self.workers[wid] = d
        return wid

    def start_dispatcher(self):
        d = Daemon(f"dispatcher-{self.run}", [os.path.join(BIN_DIR, "codeq-dispatcher")], self.env)
        self.dispatchers.append(d)
        return d

    def wait_workers(self, redis, n, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            live = [w for w in self.workers if redis.exists(self.prefix + "worker:" + w)]
            if len(live) >= n:
                return live
            time.sleep(0.1)
        raise AssertionError("workers did not heartbeat: " + "\n".join(
            d.log_text()[-2000:] for d in self.workers.values()))

    def stop(self):
        for d in self.dispatchers + list(self.workers.values()):
            try:
                d.stop()
            except Exception:
                d.kill()
        # In the sanitizer build a report goes to the daemon's log, not to a test.
        for d in self.dispatchers + list(self.workers.values()):
            text = d.log_text()
            for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                assert marker not in text, f"{d.name}: {marker}\n{text[-4000:]}"


@pytest.fixture(scope="module")
def redis_client(services):
    import redis
    return redis.Redis(host="127.0.0.1", port=REDIS_PORT)


@pytest.fixture(scope="module")
def fleet(services, redis_client):
    f = Fleet()
    f.start_worker("a")
    f.start_worker("b")
    f.wait_workers(redis_client, 2)
    f.start_dispatcher()
    yield f
    f.stop()
