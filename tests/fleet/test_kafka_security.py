"""Kafka security end to end: a broker that takes only SASL_SSL and enforces ACLs
(secure_kafka.py), a dispatcher, a worker and both clients logging in as principals
that hold exactly the ACLs of docs/fleet.md ("Kafka security"), and the refusals
around them: a client beyond its ACLs, a wrong password, no credentials, plaintext.

One broker and one fleet serve the whole module (a broker starts in about 4 s)."""

import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import KAFKA_VERSION, REPO, Fleet, _kafka_jars
from secure_kafka import SecureKafka, acl, create_acls

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from codeq_client import Client, CodeqError  # noqa: E402
from mcp_client import CODEQ, assert_no_sanitizer_reports  # noqa: E402

REPLIES = "codeq.replies."  # the fleet's reply_topic_prefix


def fleet_acls(request_topic, dlq_topic, worker_ids, audit_topic):
    """The ACLs of docs/fleet.md's table, for principals dispatcher, worker and client
    (the worker's literal, for the ids given)."""
    bindings = [
        # codeq-dispatcher
        acl("topic", request_topic, "dispatcher", "READ"),
        acl("topic", request_topic, "dispatcher", "CREATE"),
        acl("group", f"codeq-dispatchers.{request_topic}", "dispatcher", "READ"),
        acl("topic", "codeq.worker.", "dispatcher", "WRITE", prefixed=True),
        acl("topic", REPLIES, "dispatcher", "WRITE", prefixed=True),
        acl("topic", dlq_topic, "dispatcher", "WRITE"),
        acl("topic", dlq_topic, "dispatcher", "CREATE"),
        acl("topic", audit_topic, "dispatcher", "WRITE"),
        acl("topic", audit_topic, "dispatcher", "CREATE"),
        # clients (the Python client's group, the C client's reads without one)
        acl("topic", request_topic, "client", "WRITE"),
        acl("topic", REPLIES, "client", "CREATE", prefixed=True),
        acl("topic", REPLIES, "client", "READ", prefixed=True),
        acl("topic", REPLIES, "client", "DELETE", prefixed=True),
        acl("group", "codeq-client-", "client", "READ", prefixed=True),
    ]
    for wid in worker_ids:  # codeq-worker
        bindings += [
            acl("topic", f"codeq.worker.{wid}", "worker", "READ"),
            acl("topic", f"codeq.worker.{wid}", "worker", "CREATE"),
            acl("group", f"codeq-worker-{wid}", "worker", "READ"),
        ]
    bindings += [
        acl("topic", REPLIES, "worker", "WRITE", prefixed=True),
        # what it refuses on its own topic, and its audit records
        acl("topic", dlq_topic, "worker", "WRITE"),
        acl("topic", audit_topic, "worker", "WRITE"),
        acl("topic", audit_topic, "worker", "CREATE"),
    ]
    return bindings


@pytest.fixture(scope="module")
def secure(services):
    lib = _kafka_jars()
    assert lib is not None, "no Kafka jars fetched by scripts/services to run a private broker"
    k = SecureKafka(lib, KAFKA_VERSION)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def secure_fleet(secure, redis_client):
    """Worker a has the table's ACLs; worker b's topic was made by the admin, and b may
    only read it (no Create): a daemon need not create what exists."""
    f = Fleet(brokers=secure.brokers, kafka_config=secure.config())
    a, b = f"a-{f.run}", f"b-{f.run}"
    create_acls(secure, fleet_acls(f.request_topic, f.dlq_topic, [a], f.audit_topic) + [
        acl("topic", f"codeq.worker.{b}", "worker", "READ"),
        acl("group", f"codeq-worker-{b}", "worker", "READ")])
    admin = secure.admin()
    for future in admin.create_topics([NewTopic(f"codeq.worker.{b}", 1)]).values():
        future.result(30)
    f.start_worker("a", env=secure.env("worker"))
    f.start_worker("b", env=secure.env("worker"))
    f.wait_workers(redis_client, 2)
    f.start_dispatcher(env=secure.env("dispatcher"))
    yield f
    f.stop()


def exec_env(fleet, secure, user="client", **kw):
    env = dict(fleet.env, **(secure.env(user, **kw) if user else {}))
    env.pop("CODEQ_LOG_LEVEL", None)
    return env


def run_exec(env, *args, timeout=60):
    p = subprocess.run([CODEQ, "exec", *args], env=env, capture_output=True, timeout=timeout)
    assert_no_sanitizer_reports(p.stderr.decode(errors="replace"), "codeq exec")
    return p


def test_the_python_client_runs_a_session_with_only_its_acls(secure, secure_fleet):
    with Client(secure.brokers, request_topic=secure_fleet.request_topic,
                kafka_config=secure.config("client"), default_timeout=60) as c:
        s = c.start_session()
        try:
            r = s.execute_code("print(6 * 7)")
            assert not r["isError"], r
            assert r["structuredContent"]["stdout"] == "42\n"
        finally:
            s.stop()


def test_the_c_client_runs_code_with_only_its_acls(secure, secure_fleet):
    p = run_exec(exec_env(secure_fleet, secure), "--brokers", secure.brokers, "-c",
                 "print('hello over TLS')\n6 * 7")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines() == ["hello over TLS", "42"]


def test_a_worker_needs_no_create_acl_for_a_topic_that_exists(secure_fleet):
    b = secure_fleet.workers[f"b-{secure_fleet.run}"]
    assert b.alive(), b.log_text()[-3000:]
    log = b.log_text()
    assert f"topic codeq.worker.{b.name} exists (this principal may not create it)" in log
    assert '"level":"error"' not in log, log[-3000:]


def test_a_client_is_refused_beyond_its_acls(secure, secure_fleet):
    conf = {"bootstrap.servers": secure.brokers, **secure.config("client")}
    wid = f"a-{secure_fleet.run}"
    # Straight onto a worker's topic, past the dispatcher's checks: refused.
    producer = Producer(conf)
    errors = []
    producer.produce(f"codeq.worker.{wid}", b"x", on_delivery=lambda e, m: errors.append(e))
    producer.flush(15)
    assert errors and errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, errors
    # Reading other clients' requests: refused.
    consumer = Consumer(dict(conf, **{"group.id": f"codeq-client-{uuid.uuid4().hex}",
                                      "auto.offset.reset": "earliest"}))
    consumer.subscribe([secure_fleet.request_topic])
    deadline, refused = time.time() + 15, None
    while refused is None and time.time() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is not None:
            refused = m.error()
    consumer.close()
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Making a topic outside its prefix: refused.
    admin = AdminClient(conf)
    f = admin.create_topics([NewTopic(f"codeq.worker.evil-{wid}", 1)])
    with pytest.raises(KafkaException) as e:
        next(iter(f.values())).result(15)
    assert e.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_wrong_password_is_a_clear_error_and_a_daemon_exits(secure, secure_fleet):
    started = time.time()
    with pytest.raises(CodeqError, match="refused the connection.*[Aa]uthentication"):
        Client(secure.brokers, request_topic=secure_fleet.request_topic,
               kafka_config=secure.config("client", "wrong"))
    assert time.time() - started < 10
    p = run_exec(exec_env(secure_fleet, secure, password="wrong"), "--brokers",
                 secure.brokers, "-c", "1")
    assert p.returncode != 0
    assert b"Kafka refused the connection" in p.stderr, p.stderr
    assert b"wrong" not in p.stderr  # a password is never shown
    # A daemon that cannot log in says why and exits, within the start-up bound.
    started = time.time()
    d = subprocess.run([os.path.join(os.path.dirname(CODEQ), "codeq-dispatcher")],
                       env=dict(secure_fleet.env, **secure.env("dispatcher", "wrong")),
                       capture_output=True, timeout=60)
    assert_no_sanitizer_reports(d.stderr.decode(errors="replace"), "codeq-dispatcher")
    assert d.returncode == 1
    assert b"Kafka refused the connection" in d.stderr, d.stderr
    assert time.time() - started < 20


def test_an_untrusted_broker_certificate_is_a_clear_error(secure, secure_fleet):
    # The system's CAs, which never signed the test's broker certificate.
    system_cas = "/etc/ssl/certs/ca-certificates.crt"
    with pytest.raises(CodeqError, match="certificate verify failed"):
        Client(secure.brokers, request_topic=secure_fleet.request_topic,
               kafka_config=dict(secure.config("client"), **{"ssl.ca.location": system_cas}))
    env = dict(exec_env(secure_fleet, secure), CODEQ_KAFKA_SSL_CA_LOCATION=system_cas)
    p = run_exec(env, "--brokers", secure.brokers, "-c", "1")
    assert p.returncode != 0
    assert b"certificate verify failed" in p.stderr, p.stderr


def test_no_credentials_is_a_clear_error(secure, secure_fleet):
    conf = secure.config("client")
    del conf["sasl.username"], conf["sasl.password"]
    with pytest.raises(CodeqError, match="sasl.username and sasl.password must be set"):
        Client(secure.brokers, request_topic=secure_fleet.request_topic, kafka_config=conf)
    env = exec_env(secure_fleet, secure)
    del env["CODEQ_KAFKA_SASL_USERNAME"], env["CODEQ_KAFKA_SASL_PASSWORD"]
    p = run_exec(env, "--brokers", secure.brokers, "-c", "1")
    assert p.returncode != 0
    assert b"sasl.username and sasl.password must be set" in p.stderr, p.stderr


def test_a_plaintext_client_fails_against_the_tls_listener(secure, secure_fleet):
    # Both at once: each waits out its start-up bound (the broker only hangs up).
    c_client = subprocess.Popen([CODEQ, "exec", "--brokers", secure.brokers, "-c", "1"],
                                env=exec_env(secure_fleet, secure, user=None),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with pytest.raises(CodeqError, match="security.protocol"):
        Client(secure.brokers, request_topic=secure_fleet.request_topic, ready_timeout=5)
    _, stderr = c_client.communicate(timeout=60)
    assert c_client.returncode != 0
    assert b"cannot reach Kafka" in stderr and b"security.protocol" in stderr, stderr


def test_scram_logs_in_or_says_why_not(secure, secure_fleet):
    """SCRAM-SHA-512 from codeq exec: it works where this librdkafka can (Kafka 3.x), and
    on Kafka 4.x, whose SCRAM librdkafka before 2.6.1 gets wrong, the error says so."""
    p = run_exec(exec_env(secure_fleet, secure, mechanism="SCRAM-SHA-512"), "--brokers",
                 secure.brokers, "-c", "print(6 * 7)")
    if secure.mechanism == "PLAIN":  # Kafka 4.x: the tests log in with PLAIN instead
        assert p.returncode != 0
        assert b"cannot log in to Kafka 4.x with SCRAM" in p.stderr, p.stderr
    else:
        assert p.returncode == 0 and p.stdout.strip() == b"42", p.stderr

