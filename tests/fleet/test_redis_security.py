"""Redis with a password and TLS: the fleet against a redis-server of its own that takes
TLS only (no plaintext port) and only an ACL user with a password, with certificates
made here by the openssl command (a throwaway CA, and a server certificate for
localhost and 127.0.0.1). Every Redis connection codeq makes goes through it: the
daemons' store (a password file), the C client of `codeq exec --brokers` (a password in
the environment) and the Python client's ClaimStore. Then what users get wrong: a
wrong password, no TLS against a TLS port, no password, a certificate from another CA,
a name the certificate does not carry."""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import BIN_DIR, BROKERS, REPO, Fleet, _answers, free_port, redis_options

sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
from mcp_client import assert_no_sanitizer_reports  # noqa: E402

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client  # noqa: E402

USER, PASSWORD = "codeq-fleet", "s3cret-" + os.urandom(8).hex()
LARGE = 700 << 10  # above the claim threshold (512 KiB): through Redis, not Kafka


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d, name):
    """A CA (EC keys: made in milliseconds) in d: name.key, name.crt."""
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
            "-subj", f"/CN=codeq test {name}", cwd=d)


def make_server_cert(d):
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext", cwd=d)


class SecureRedis:
    """redis-server on a TLS port only, whose one user is USER with PASSWORD (the
    default user is off: a connection without AUTH may do nothing), with an append-only
    file that keeps the data across restart()."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="codeq-redis-tls-")
        make_ca(self.dir, "ca")
        make_ca(self.dir, "other-ca")
        make_server_cert(self.dir)
        self.port = free_port()
        conf = os.path.join(self.dir, "redis.conf")
        with open(conf, "w") as f:
            f.write(f"bind 127.0.0.1\nport 0\ntls-port {self.port}\ndir {self.dir}\n"
                    f"tls-cert-file {self.dir}/server.crt\ntls-key-file {self.dir}/server.key\n"
                    f"tls-ca-cert-file {self.dir}/ca.crt\n"
                    # Clients are not asked for certificates: the password is the check.
                    "tls-auth-clients no\n"
                    # Kept across restart(), as scripts/services' Redis keeps it.
                    "save \"\"\nappendonly yes\nappendfsync always\n"
                    # Off, so that no connection is it, with its permissions kept: Redis
                    # 7.0 replays the scripts' writes (MULTI/EXEC in the append-only
                    # file) as the default user, and drops them at a restart when that
                    # user may run nothing (redis/redis#14541; docs/fleet.md).
                    "user default off ~* &* +@all\n"
                    # The fleet's user as docs/fleet.md has it: its prefix, any command.
                    f"user {USER} on >{PASSWORD} ~codeq:* +@all\n")
        self.password_file = os.path.join(self.dir, "password")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (PASSWORD + "\n").encode())  # a line end, as `echo` would leave
        os.close(fd)
        self.log = os.path.join(self.dir, "redis.log")
        self.conf = conf
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["redis-server", self.conf], stdout=log, stderr=log)
        deadline = time.time() + 30
        while not _answers(self.port):
            if self.proc.poll() is not None or time.time() > deadline:
                with open(self.log) as f:
                    text = f.read()
                raise AssertionError("redis-server did not start on a TLS port (is it built "
                                     f"with TLS? `redis-server --tls-port` must work):\n{text}")
            time.sleep(0.05)

    def env(self, **changes):
        """The fleet's CODEQ_REDIS_* settings for this server; a value None drops one."""
        env = {"CODEQ_REDIS_USER": USER, "CODEQ_REDIS_PASSWORD_FILE": self.password_file,
               "CODEQ_REDIS_TLS": "on", "CODEQ_REDIS_TLS_CA": f"{self.dir}/ca.crt"}
        env.update(changes)
        return {k: v for k, v in env.items() if v is not None}

    def restart(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        self.start()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def secure_redis():
    r = SecureRedis()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def secure_fleet(services, secure_redis):
    f = Fleet(redis_port=secure_redis.port, redis_env=secure_redis.env())
    f.start_worker("a")
    f.wait_workers(f.redis(), 1)
    f.start_dispatcher()
    yield f
    f.stop()


def clean_env(fleet, **changes):
    """The fleet's environment with the Redis security settings replaced by changes
    (a value None removes one)."""
    env = {k: v for k, v in fleet.env.items() if not k.startswith("CODEQ_REDIS_") or
           k == "CODEQ_REDIS_PREFIX"}
    env.update({k: v for k, v in changes.items() if v is not None})
    env.pop("CODEQ_LOG_LEVEL", None)
    return env


def client_of(fleet):
    """The Python client, with the fleet's Redis settings (password file, TLS)."""
    return Client(BROKERS, request_topic=fleet.request_topic, default_timeout=120,
                  redis=fleet.env["CODEQ_REDIS"], redis_prefix=fleet.prefix,
                  redis_options=redis_options(fleet.env))


def test_the_fleet_runs_over_tls_as_its_acl_user(secure_fleet, secure_redis):
    payload = os.urandom(LARGE)
    with client_of(secure_fleet) as c:
        s = c.start_session()
        out = s.execute_code("print(6 * 7)")
        assert out["structuredContent"]["stdout"] == "42\n", out
        # A request and a reply too large for Kafka: both through Redis, over TLS.
        wrote = s.write_files({"big.bin": payload})
        assert not wrote["isError"], wrote
        digest = s.execute_command("sha256sum big.bin")
        assert hashlib.sha256(payload).hexdigest() in digest["structuredContent"]["stdout"]
        read = s.read_files(["big.bin"])
        assert not read["isError"], read
        block = next(b["resource"] for b in read["content"] if b.get("type") == "resource")
        import base64
        assert base64.b64decode(block["blob"]) == payload
        assert secure_fleet.redis().scard(f"{secure_fleet.prefix}claims:{s.id}") == 1
        s.stop()
    # Every connection the server has is the fleet's ACL user's (none is the default
    # user's, which is off): the worker's, the dispatcher's and this test's.
    clients = secure_fleet.redis().client_list()
    assert len(clients) >= 3 and {c["user"] for c in clients} == {USER}, clients


def test_codeq_exec_sends_and_gets_large_files_over_tls(secure_fleet, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(os.urandom(LARGE))
    out = tmp_path / "out"
    # The C client: the password from the environment (the daemons read a file).
    env = clean_env(secure_fleet, CODEQ_REDIS_USER=USER, CODEQ_REDIS_PASSWORD=PASSWORD,
                    CODEQ_REDIS_TLS="on",
                    CODEQ_REDIS_TLS_CA=secure_fleet.env["CODEQ_REDIS_TLS_CA"],
                    CODEQ_REDIS_TLS_SERVER_NAME="localhost")
    code = ("data = open('input.bin', 'rb').read()\n"
            "open('reversed.bin', 'wb').write(data[::-1])\n"
            "print(len(data))\n")
    p = subprocess.run([os.path.join(BIN_DIR, "codeq"), "exec", "--file", str(src), "--out",
                        str(out), "-c", code], env=env, capture_output=True, timeout=120)
    assert_no_sanitizer_reports(p.stderr.decode(errors="replace"), "codeq exec")
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode().splitlines() == [str(LARGE)]
    assert (out / "reversed.bin").read_bytes() == src.read_bytes()[::-1]


def test_codeq_exec_without_a_password_is_refused(secure_fleet, tmp_path):
    src = tmp_path / "input.bin"
    src.write_bytes(b"\0" * LARGE)
    env = clean_env(secure_fleet, CODEQ_REDIS_TLS="on",
                    CODEQ_REDIS_TLS_CA=secure_fleet.env["CODEQ_REDIS_TLS_CA"])
    p = subprocess.run([os.path.join(BIN_DIR, "codeq"), "exec", "--file", str(src), "-c", "1"],
                       env=env, capture_output=True, timeout=120)
    err = p.stderr.decode(errors="replace")
    assert_no_sanitizer_reports(err, "codeq exec")
    assert p.returncode != 0, (p.stdout, err)
    assert "wants a password (NOAUTH" in err, err


def test_a_client_without_a_password_is_refused_by_the_server(secure_redis):
    import redis
    r = redis.Redis(host="127.0.0.1", port=secure_redis.port, ssl=True,
                    ssl_ca_certs=f"{secure_redis.dir}/ca.crt", socket_timeout=10)
    with pytest.raises(redis.exceptions.AuthenticationError, match="Authentication required"):
        r.ping()
    r.close()


def run_daemon(env):
    """codeq-dispatcher with env, which must exit at start: (exit status, output)."""
    p = subprocess.run([os.path.join(BIN_DIR, "codeq-dispatcher")], env=env,
                       capture_output=True, timeout=60)
    text = (p.stdout + p.stderr).decode(errors="replace")
    assert_no_sanitizer_reports(text, "codeq-dispatcher")
    return p.returncode, text


def test_a_wrong_password_stops_a_daemon_clearly(secure_fleet, secure_redis):
    wrong = "not-" + PASSWORD
    rc, text = run_daemon(clean_env(secure_fleet, **secure_redis.env(
        CODEQ_REDIS_PASSWORD_FILE=None, CODEQ_REDIS_PASSWORD=wrong)))
    assert rc == 1, text
    assert (f"Redis at 127.0.0.1:{secure_redis.port} refused the password for user "
            f"'{USER}' (WRONGPASS") in text, text
    assert wrong not in text and PASSWORD not in text  # never logged


def test_a_daemon_without_tls_against_a_tls_port_fails_clearly(secure_fleet, secure_redis):
    rc, text = run_daemon(clean_env(secure_fleet, **secure_redis.env(
        CODEQ_REDIS_TLS=None, CODEQ_REDIS_TLS_CA=None)))
    assert rc == 1, text
    assert f"Redis at 127.0.0.1:{secure_redis.port} closed the connection" in text, text
    assert "set redis_tls = on" in text, text


@pytest.mark.parametrize("changes, reason", [
    ({"CODEQ_REDIS_TLS_CA": "other-ca.crt"}, "self-signed certificate in certificate chain"),
    ({"CODEQ_REDIS_TLS_SERVER_NAME": "redis.example"}, "hostname mismatch"),
])
def test_a_certificate_that_does_not_verify_stops_a_daemon_clearly(secure_fleet, secure_redis,
                                                                     changes, reason):
    changes = {k: os.path.join(secure_redis.dir, v) if k.endswith("_CA") else v
               for k, v in changes.items()}
    rc, text = run_daemon(clean_env(secure_fleet, **secure_redis.env(**changes)))
    assert rc == 1, text
    assert "TLS handshake with Redis" in text and "certificate verify failed" in text, text
    assert reason in text, text


# Last: it restarts the module's Redis under its fleet.
def test_the_daemons_reconnect_over_tls_with_their_password(secure_fleet, secure_redis):
    """Every reconnection makes the TLS handshake and AUTH again (Redis forgets both
    with the connection): a session goes on after a Redis restart."""
    with client_of(secure_fleet) as c:
        s = c.start_session()
        assert not s.execute_code("x = 41")["isError"]
        secure_redis.restart()
        out = s.execute_code("print(x + 1)", timeout=90)
        assert not out["isError"] and out["structuredContent"]["stdout"] == "42\n", out
        s.stop()
    for d in secure_fleet.dispatchers + list(secure_fleet.workers.values()):
        assert "is back" in d.log_text(), (d.name, d.log_text()[-3000:])
