"""A private Kafka broker that enforces what users run codeq with: a SASL_SSL listener
(SCRAM-SHA-512 over TLS) and ACLs (StandardAuthorizer, nothing allowed that no ACL
allows), for tests/fleet/test_kafka_security.py.

Everything is made here, on free ports, in a scratch directory: a throwaway CA and a
server certificate for 127.0.0.1 and localhost (the `openssl` command), the SCRAM users
(written into the metadata log when the storage is formatted, so the broker starts
with them), and one single-node KRaft broker from the jars scripts/services fetched
(Kafka 4.4.0, or CODEQ_KAFKA_VERSION: 3.9.1 works alike). scripts/services' own
broker stays as it is: the other tests rely on its open authorizer.

The controller listener is PLAINTEXT on loopback: SCRAM credentials live in the
metadata log the controller serves, so they cannot guard the controller's own
listener, and the broker registers with its controller there as User:ANONYMOUS, which
is therefore a super user. Clients never use that port.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ADMIN = ("admin", "admin-secret")
# The principals of the fleet's tests; each password is <name>-secret.
USERS = ("dispatcher", "worker", "client")


def librdkafka_version():
    """The librdkafka of the fleet's daemons and C client (the system's), as a tuple."""
    import ctypes
    lib = ctypes.CDLL("librdkafka.so.1")
    lib.rd_kafka_version.restype = ctypes.c_int
    v = lib.rd_kafka_version()
    return (v >> 24 & 0xff, v >> 16 & 0xff, v >> 8 & 0xff)


def mechanism_for(version):
    """SCRAM-SHA-512 where the fleet's librdkafka can use it with this broker, else
    PLAIN (over TLS all the same): see the note in SecureKafka._configure."""
    if version.split(".")[0] in ("2", "3") or librdkafka_version() >= (2, 6, 1):
        return "SCRAM-SHA-512"
    return "PLAIN"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(directory):
    """A CA (ca.crt) and a server certificate it signed for 127.0.0.1 and localhost, as
    PKCS#12 (server.p12, password "changeit") for the broker."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.crt", "-days", "2", "-subj", "/CN=codeq test CA", cwd=directory)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=directory)
    # librdkafka 2.x checks the broker's name (ssl.endpoint.identification.algorithm
    # https by default): the address clients dial must be in subjectAltName.
    with open(os.path.join(directory, "san.cnf"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf",
             cwd=directory)
    _openssl("pkcs12", "-export", "-in", "server.crt", "-inkey", "server.key", "-certfile",
             "ca.crt", "-name", "kafka", "-out", "server.p12", "-passout", "pass:changeit",
             cwd=directory)


class SecureKafka:
    """The broker. `brokers` is its SASL_SSL listener; `ca` the CA certificate clients
    trust it by; `config(user)` / `env(user)` a client's settings as librdkafka
    properties or as CODEQ_KAFKA_* variables."""

    def __init__(self, lib, version):
        self.dir = tempfile.mkdtemp(prefix="codeq-secure-kafka-")
        self.lib = lib
        self.log4j2 = version.split(".")[0] not in ("2", "3")
        self.port = _free_port()
        self.controller_port = _free_port()
        self.brokers = f"127.0.0.1:{self.port}"
        self.ca = os.path.join(self.dir, "ca.crt")
        self.proc = None
        self.mechanism = mechanism_for(version)
        make_certificates(self.dir)
        self._configure()
        self._format()
        self._start()

    def config(self, user=None, password=None, mechanism=None):
        """librdkafka's security properties of a client logging in as user (default:
        the admin), with mechanism (default: self.mechanism)."""
        user, default = (user, f"{user}-secret") if user else ADMIN
        return {"security.protocol": "SASL_SSL", "sasl.mechanism": mechanism or self.mechanism,
                "sasl.username": user, "sasl.password": password or default,
                "ssl.ca.location": self.ca}

    def env(self, user, password=None, mechanism=None):
        """The same settings as the fleet's CODEQ_KAFKA_* variables."""
        return {"CODEQ_KAFKA_" + k.replace(".", "_").upper(): v
                for k, v in self.config(user, password, mechanism).items()}

    @staticmethod
    def users():
        return [ADMIN] + [(u, f"{u}-secret") for u in USERS]

    def admin(self):
        from confluent_kafka.admin import AdminClient
        return AdminClient({"bootstrap.servers": self.brokers, **self.config()})

    def _configure(self):
        jaas = ('org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{ADMIN[0]}" password="{ADMIN[1]}";')
        # PLAIN beside SCRAM: librdkafka before 2.6.1 (Debian 12 has 2.0.2) cannot log
        # in to Kafka 4.x with SCRAM (it repeats the client nonce, which 4.x refuses;
        # librdkafka#4895), and PLAIN over TLS is what such clients use there.
        plain = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
                 f'username="{ADMIN[0]}" password="{ADMIN[1]}" ' +
                 " ".join(f'user_{u}="{p}"' for u, p in self.users()) + ";")
        props = f"""
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{self.controller_port}
listeners=SASL_SSL://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{self.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain}
ssl.keystore.type=PKCS12
ssl.keystore.location={self.dir}/server.p12
ssl.keystore.password=changeit
ssl.key.password=changeit
ssl.truststore.type=PEM
ssl.truststore.location={self.ca}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:{ADMIN[0]};User:ANONYMOUS
log.dirs={self.dir}/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""
        with open(os.path.join(self.dir, "server.properties"), "w") as f:
            f.write(props)
        # The super user's client settings, for KafkaAcls.java (the Java client logs in
        # with SCRAM on every version).
        self.admin_properties = os.path.join(self.dir, "admin.properties")
        with open(self.admin_properties, "w") as f:
            f.write(f"bootstrap.servers={self.brokers}\nsecurity.protocol=SASL_SSL\n"
                    f"sasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config={jaas}\n"
                    f"ssl.truststore.type=PEM\nssl.truststore.location={self.ca}\n")
        log = os.path.join(self.dir, "kafka.log")
        if self.log4j2:
            with open(os.path.join(self.dir, "log4j2.properties"), "w") as f:
                f.write("status = warn\nappender.file.type = File\nappender.file.name = file\n"
                        f"appender.file.fileName = {log}\nappender.file.layout.type = "
                        "PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
                        "rootLogger.level = warn\nrootLogger.appenderRef.file.ref = file\n"
                        "logger.raft.name = kafka.server.KafkaRaftServer\n"
                        "logger.raft.level = info\n")
            self.logging = f"-Dlog4j2.configurationFile={self.dir}/log4j2.properties"
        else:
            with open(os.path.join(self.dir, "log4j.properties"), "w") as f:
                f.write("log4j.rootLogger=WARN, file\n"
                        "log4j.logger.kafka.server.KafkaRaftServer=INFO\n"
                        "log4j.appender.file=org.apache.log4j.FileAppender\n"
                        f"log4j.appender.file.File={log}\n"
                        "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                        "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n")
            self.logging = f"-Dlog4j.configuration=file:{self.dir}/log4j.properties"

    def java(self, *args):
        return ["java", "-cp", os.path.join(self.lib, "*"), self.logging, *args]

    def _format(self):
        # The users exist from the first start: SCRAM credentials written at format
        # time (--add-scram, Kafka 3.5 and later) need no admin connection first.
        scram = []
        for name, password in self.users():
            scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        cluster = subprocess.run(self.java("kafka.tools.StorageTool", "random-uuid"),
                                 capture_output=True, text=True, check=True, timeout=120)
        p = subprocess.run(self.java("kafka.tools.StorageTool", "format", "-t",
                                      cluster.stdout.strip(), "-c",
                                      os.path.join(self.dir, "server.properties"), *scram),
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, f"kafka-storage format failed:\n{p.stdout}\n{p.stderr}"

    def _start(self):
        out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(
            ["java", "-Xmx512m", "-Xms128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
             "-cp", os.path.join(self.lib, "*"), self.logging, "kafka.Kafka",
             os.path.join(self.dir, "server.properties")], stdout=out, stderr=out)
        out.close()
        log = os.path.join(self.dir, "kafka.log")
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with open(log) as f:
                    if "started" in f.read():
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        text = self.log_tail()
        self.stop()
        raise AssertionError(f"the SASL_SSL broker did not start:\n{text}")

    def log_tail(self):
        text = ""
        for name in ("kafka.log", "stdout.log"):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as f:
                    text += f"--- {name}\n" + f.read()[-3000:]
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # scratch data: no clean shutdown
            self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def acl(resource, name, principal, operation, prefixed=False):
    """An ALLOW ACL for create_acls(): resource "topic", "group" or "cluster" (named
    "kafka-cluster"), operation READ, WRITE, CREATE, DELETE, DESCRIBE, ..."""
    pattern = "PREFIXED" if prefixed else "LITERAL"
    return f"{resource.upper()},{pattern},{name},User:{principal},{operation}"


def create_acls(kafka, bindings):
    """Creates the ACLs as the super user through Kafka's Admin API (KafkaAcls.java)."""
    p = subprocess.run(kafka.java("KafkaAcls.java", kafka.admin_properties, *bindings),
                       capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.abspath(__file__)))
    assert p.returncode == 0, f"creating ACLs failed:\n{p.stdout}\n{p.stderr}"
