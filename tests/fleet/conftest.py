"""Fixtures for the fleet's end-to-end tests: a real Kafka broker and a real
redis-server (scripts/services), one codeq-dispatcher and two codeq-worker processes
running real sandboxes.

If a broker and Redis already answer on the ports scripts/services uses, they are used
as they are (and left running); otherwise they are started in a scratch directory and
stopped at the end. Each test module gets its own request topic, Redis key prefix and
worker ids, so runs never see each other's state.
"""

import faulthandler
import os
import shutil
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
# scripts/services' ports; the same variables move both (parallel runs on one machine).
KAFKA_PORT = int(os.environ.get("CODEQ_KAFKA_PORT", "19092"))
REDIS_PORT = int(os.environ.get("CODEQ_REDIS_PORT", "16379"))
BROKERS = f"127.0.0.1:{KAFKA_PORT}"
# scripts/services' Kafka (CI runs the suite against the oldest supported one too).
KAFKA_VERSION = os.environ.get("CODEQ_KAFKA_VERSION") or "4.4.0"

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "clients", "python"))


def _answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def services():
    started = None
    if not (_answers(KAFKA_PORT) and _answers(REDIS_PORT)):
        started = tempfile.mkdtemp(prefix="codeq-fleet-services-")
        subprocess.run([SERVICES, "up", "--dir", started], check=True, timeout=300)
    # The services directory when this fixture started them (a test may restart them
    # there: test_chaos.py), None when they were already running (not ours to restart).
    yield started
    if started:
        subprocess.run([SERVICES, "down", "--dir", started], check=False, timeout=120)


# A test gets this many seconds (CODEQ_TEST_TIMEOUT; the chaos test adds its own run
# time): a hang then fails that test, with every thread's stack and the tails of its
# daemons' logs, instead of eating the whole suite's ctest timeout silently.
TEST_TIMEOUT = int(os.environ.get("CODEQ_TEST_TIMEOUT", "300"))
_daemons = []  # every Daemon started, for the watchdog's report


@pytest.fixture(autouse=True)
def watchdog(request):
    limit = TEST_TIMEOUT + int(getattr(request.module, "EXTRA_SECONDS", 0))
    first_daemon = len(_daemons)

    def expired(signum, frame):
        faulthandler.dump_traceback(all_threads=True)
        for d in _daemons[first_daemon:]:
            state = "running" if d.alive() else f"exited {d.proc.returncode}"
            sys.stderr.write(f"--- {d.name} ({state}), its log's tail:\n"
                             f"{d.log_text()[-3000:]}\n")
        raise TimeoutError(f"{request.node.nodeid} ran past its {limit} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


class Daemon:
    """One codeq-dispatcher or codeq-worker process; its JSON log goes to a file."""

    def __init__(self, name, args, env):
        self.name = name
        self.log_path = tempfile.mktemp(prefix=f"codeq-{name}-", suffix=".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        _daemons.append(self)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
        self.proc.wait(timeout=120)

    def stop(self, timeout=90):
        """SIGTERM, and the daemon must have exited (drained) within timeout seconds; if
        not, its threads' stacks (gdb) and its log's tail make the failure, and it is
        killed."""
        try:
            if self.alive():
                self.proc.send_signal(signal.SIGTERM)
                self.proc.send_signal(signal.SIGCONT)  # a test may have left it stopped
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stacks = _stacks(self.proc.pid)
            self.proc.kill()
            self.proc.wait(timeout=60)
            raise AssertionError(f"{self.name} did not exit {timeout} s after SIGTERM\n"
                                 f"{stacks}\n--- its log's tail:\n{self.log_text()[-4000:]}")
        finally:
            self.log.close()


def _stacks(pid):
    try:
        return subprocess.run(["gdb", "-batch", "-p", str(pid), "-ex", "thread apply all bt"],
                              capture_output=True, text=True, timeout=120).stdout[-12000:]
    except (OSError, subprocess.SubprocessError) as e:
        return f"(no stacks: {e})"


# The Redis authentication and TLS settings (fleet/config.h), as variables, and the
# Python client's ClaimStore arguments they match.
REDIS_SECURITY = {"CODEQ_REDIS_USER": "username", "CODEQ_REDIS_PASSWORD": "password",
                  "CODEQ_REDIS_PASSWORD_FILE": "password_file", "CODEQ_REDIS_TLS": "tls",
                  "CODEQ_REDIS_TLS_CA": "tls_ca", "CODEQ_REDIS_TLS_CERT": "tls_cert",
                  "CODEQ_REDIS_TLS_KEY": "tls_key",
                  "CODEQ_REDIS_TLS_SERVER_NAME": "tls_server_name"}


def redis_options(env):
    """ClaimStore's keyword arguments for the CODEQ_REDIS_* settings in env."""
    return {arg: env[var] for var, arg in REDIS_SECURITY.items() if env.get(var)}


class Fleet:
    """kafka_config: the librdkafka security properties clean_up() connects with (a
    broker that wants credentials: test_kafka_security.py); each daemon's own come
    with the env of start_worker() and start_dispatcher()."""

    def __init__(self, redis_port=REDIS_PORT, brokers=BROKERS, redis_env=None, keys_file=None,
                 kafka_config=None):
        """redis_env: CODEQ_REDIS_* settings (REDIS_SECURITY) for every daemon and client
        of the fleet, and for the tests' own connections (redis()). keys_file: tenants
        and signed requests (docs/security.md)."""
        run = uuid.uuid4().hex[:8]
        self.kafka_config = kafka_config or {}
        self.prefix = f"codeq:t{run}:"
        self.request_topic = f"codeq.requests.t{run}"
        self.dlq_topic = f"codeq.dlq.t{run}"
        self.audit_topic = f"codeq.audit.t{run}"
        self.env = dict(os.environ, CODEQ_BROKERS=brokers, CODEQ_REDIS=f"127.0.0.1:{redis_port}",
                        CODEQ_REDIS_PREFIX=self.prefix, CODEQ_REQUEST_TOPIC=self.request_topic,
                        CODEQ_DLQ_TOPIC=self.dlq_topic, CODEQ_AUDIT_TOPIC=self.audit_topic,
                        CODEQ_LOG_LEVEL="info")
        self.env.update(redis_env or {})
        for name in ("CODEQ_CREDENTIALS", "CODEQ_TENANT", "CODEQ_KEY_ID", "CODEQ_KEY_SECRET"):
            self.env.pop(name, None)  # the daemons sign nothing
        if keys_file:  # tenants and signed requests (docs/security.md)
            self.env["CODEQ_KEYS_FILE"] = keys_file
        self.run = run
        self.workers = {}
        self.dispatchers = []

    def claim_store(self):
        """The Python client's Redis side (clients/python), set up as the daemons are."""
        from codeq_client.claims import ClaimStore
        return ClaimStore(self.env["CODEQ_REDIS"], self.prefix, **redis_options(self.env))

    def redis(self):
        """A redis-py client of the fleet's Redis, with its password and TLS if any."""
        return self.claim_store().client()

    def start_worker(self, name, *extra, env=None):
        wid = f"{name}-{self.run}"
        d = Daemon(wid, [os.path.join(BIN_DIR, "codeq-worker"), "--worker-id", wid,
                         "--warm-pool", "1", "--heartbeat-ms", "500", *extra],
                   dict(self.env, **(env or {})))
        self.workers[wid] = d
        return wid

    def start_dispatcher(self, env=None):
        d = Daemon(f"dispatcher-{self.run}", [os.path.join(BIN_DIR, "codeq-dispatcher")],
                   dict(self.env, **(env or {})))
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
        hung = []
        for d in self.dispatchers + list(self.workers.values()):
            try:
                d.stop()
            except AssertionError as e:
                hung.append(e)
        self.clean_up()
        # In the sanitizer build a report goes to the daemon's log, not to a test.
        for d in self.dispatchers + list(self.workers.values()):
            text = d.log_text()
            for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
                assert marker not in text, f"{d.name}: {marker}\n{text[-4000:]}"
        if hung:
            raise hung[0]

    def clean_up(self):
        """Deletes this fleet's topics, consumer groups and Redis keys (best effort): a
        broker shared by many test runs slows down as partitions pile up."""
        from confluent_kafka.admin import AdminClient
        brokers = self.env["CODEQ_BROKERS"]
        topics = [self.request_topic, self.dlq_topic, self.audit_topic] + \
            [f"codeq.worker.{w}" for w in self.workers]
        groups = [f"codeq-dispatchers.{self.request_topic}"] + \
            [f"codeq-worker-{w}" for w in self.workers]
        try:
            admin = AdminClient({"bootstrap.servers": brokers, **self.kafka_config})
            for f in admin.delete_topics(topics, operation_timeout=10).values():
                f.exception(timeout=15)
            if hasattr(admin, "delete_consumer_groups"):
                for f in admin.delete_consumer_groups(groups).values():
                    f.exception(timeout=15)
            r = self.redis()
            keys = list(r.scan_iter(match=self.prefix + "*", count=1000))
            for i in range(0, len(keys), 500):
                r.delete(*keys[i:i + 500])
        except Exception:  # the services may be gone already (outage tests)
            pass


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


@pytest.fixture
def new_fleet(services):
    """Makes Fleets of one test (own topics, prefix and worker ids; optionally a private
    Redis), for tests that kill or stop daemons; all are stopped when the test ends."""
    made = []

    def make(**kw):
        f = Fleet(**kw)
        made.append(f)
        return f
    yield make
    failures = []
    for f in made:
        try:
            f.stop()
        except Exception as e:  # stop every fleet, then report
            failures.append(e)
    if failures:
        raise failures[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of one test, on a free port, that the test may stop and start
    again; the append-only file (fsync on every write) keeps the data across restarts."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="codeq-redis-")
        self.port = free_port()
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
             "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=log, stderr=log)
        log.close()
        deadline = time.time() + 30
        while not _answers(self.port):
            assert self.proc.poll() is None and time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.proc = None

    def client(self):
        import redis
        return redis.Redis(host="127.0.0.1", port=self.port)


@pytest.fixture
def private_redis():
    r = PrivateRedis()
    yield r
    r.stop()
    shutil.rmtree(r.dir, ignore_errors=True)


def _kafka_jars():
    """The lib directory of a Kafka that scripts/services already fetched (the running
    broker's class path, or a services directory), or None: tests never download it."""
    release = f"kafka-{KAFKA_VERSION}"
    candidates = [os.path.join(d, release, "lib") for d in
                  (os.environ.get("CODEQ_SERVICES_DIR"), "/var/tmp/codeq-services") if d]
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "kafka.Kafka" in args and "-cp" in args:
            lib = os.path.dirname(args[args.index("-cp") + 1])
            if os.path.basename(os.path.dirname(lib)) == release:  # the same version only
                candidates.insert(0, lib)
    for lib in candidates:
        if os.path.exists(os.path.join(lib, ".complete")):
            # Through another test's private broker, to the jars it links to: that
            # test's scratch directory goes away with it.
            return os.path.realpath(lib)
    return None


class PrivateKafka:
    """A Kafka broker of one test (scripts/services on free ports, in a scratch
    directory, with the jars of the shared broker), that the test may stop and start
    again with its data. scripts/services starts a Redis next to it, unused."""

    def __init__(self, lib):
        self.dir = tempfile.mkdtemp(prefix="codeq-kafka-")
        os.symlink(os.path.dirname(lib), os.path.join(self.dir, f"kafka-{KAFKA_VERSION}"))
        self.port = free_port()
        self.env = dict(os.environ, CODEQ_KAFKA_PORT=str(self.port),
                        CODEQ_KAFKA_CONTROLLER_PORT=str(free_port()),
                        CODEQ_REDIS_PORT=str(free_port()))
        self.brokers = f"127.0.0.1:{self.port}"
        self.start()

    def start(self):
        subprocess.run([SERVICES, "up", "--dir", self.dir], env=self.env, check=True,
                       timeout=180, stdout=subprocess.DEVNULL)

    def stop(self):
        """SIGTERM to the broker (a clean shutdown), then waits until it has exited."""
        with open(os.path.join(self.dir, "kafka", "kafka.pid")) as f:
            pid = int(f.read())
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().split(") ")[-1].startswith("Z"):
                        break  # exited; its parent (init) has yet to reap it
            except OSError:
                break
            time.sleep(0.1)
        assert not _answers(self.port), "the broker did not stop"

    def down(self):
        """Ends the broker at once (its data is scratch), and the Redis next to it."""
        try:
            with open(os.path.join(self.dir, "kafka", "kafka.pid")) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        subprocess.run([SERVICES, "down", "--dir", self.dir], env=self.env, check=False,
                       timeout=120, stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_kafka():
    lib = _kafka_jars()
    if lib is None:
        pytest.skip("no Kafka jars fetched by scripts/services to run a private broker")
    k = PrivateKafka(lib)
    yield k
    k.down()
