"""`codeq serve` run by a normal user, driven by boto3's bedrock-agentcore client (from
build/pydeps-agentcore, as tests/serve uses it): a session starts, runs code as the
sandbox user, and stops."""

import os
import re
import signal
import subprocess
import sys
import time

from conftest import CODEQ, REPO, user_env

PYDEPS = os.environ.get("CODEQ_AGENTCORE_PYDEPS") or os.path.join(REPO, "build",
                                                                 "pydeps-agentcore")
sys.path.insert(0, PYDEPS)
REGION = "us-east-1"
os.environ.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                   "AWS_EC2_METADATA_DISABLED": "true"})

import boto3  # noqa: E402  (from PYDEPS: fails here when it is missing)
import botocore.config  # noqa: E402


def make_keys(path, user):
    subprocess.run([CODEQ, "tenant", "create", "alpha", "--keys", path], check=True,
                   capture_output=True)
    out = subprocess.run([CODEQ, "key", "create", "alpha", "--keys", path], check=True,
                         capture_output=True, text=True).stdout
    fields = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    os.chown(path, user.pw_uid, user.pw_gid)  # the server reads it as the user (mode 600)
    return fields["key_id"], fields["secret"]


def test_serve_runs_sessions_as_a_normal_user(subids, scratch):
    keys = os.path.join(scratch, "keys")
    key_id, secret = make_keys(keys, subids)
    log_path = os.path.join(scratch, "serve.log")
    env = user_env(subids, {"CODEQ_ALLOW_UNLIMITED": "1"})
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["env", "-i", *[f"{k}={v}" for k, v in env.items()], "setpriv", "--reuid",
             str(subids.pw_uid), "--regid", str(subids.pw_gid), "--init-groups", CODEQ, "serve",
             "--listen", "127.0.0.1:0", "--keys", keys, "--warm-pool", "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            with open(log_path, errors="replace") as f:
                m = re.search(r"listening on .* \(port (\d+)\)", f.read())
            port = int(m.group(1)) if m else None
            time.sleep(0.05)
        with open(log_path, errors="replace") as f:
            text = f.read()
        assert port, f"codeq serve did not start: {text}"
        assert "without their memory, cpu limits" in text, text
        client = boto3.client("bedrock-agentcore", region_name=REGION,
                              endpoint_url=f"http://127.0.0.1:{port}", aws_access_key_id=key_id,
                              aws_secret_access_key=secret,
                              config=botocore.config.Config(retries={"max_attempts": 1},
                                                            read_timeout=120))
        ident = "aws.codeinterpreter.v1"
        sid = client.start_code_interpreter_session(codeInterpreterIdentifier=ident)["sessionId"]
        r = client.invoke_code_interpreter(
            codeInterpreterIdentifier=ident, sessionId=sid, name="executeCode",
            arguments={"language": "python", "code": "import os\nprint(os.getuid(), 6 * 7)"})
        events = [e["result"] for e in r["stream"] if "result" in e]
        assert events and events[-1]["isError"] is False, events
        assert events[-1]["structuredContent"]["stdout"] == "1000 42\n", events
        client.stop_code_interpreter_session(codeInterpreterIdentifier=ident, sessionId=sid)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
