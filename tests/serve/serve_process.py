"""tests/serve/serve_process.py - a `codeq serve` process for tests, and keys for it:
shared by tests/serve and tests/frameworks (which cannot share a conftest: their
botocore versions differ). Standard library only."""
import os
import re
import signal
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN_DIR = os.environ.get("CODEQ_BIN_DIR") or os.path.join(REPO, "build", "bin")
CODEQ = os.path.join(BIN_DIR, "codeq")


def make_key(keys, tenant):
    subprocess.run([CODEQ, "tenant", "create", tenant, "--keys", keys], check=True,
                   capture_output=True)
    out = subprocess.run([CODEQ, "key", "create", tenant, "--keys", keys], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    return fields["key_id"], fields["secret"]


class Server:
    def __init__(self, args, env=None):
        self.log = tempfile.NamedTemporaryFile(prefix="codeq-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([CODEQ, "serve", "--listen", "127.0.0.1:0", *args],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=env or os.environ.copy())
        deadline = time.monotonic() + 60
        self.port = None
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = re.search(r"listening on .* \(port (\d+)\)", self.text())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        assert self.port, f"codeq serve did not start: {self.text()}"
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        os.unlink(self.log.name)
        return self.proc.returncode
