"""A cell run on a Jupyter kernel the way a notebook front end runs it, for the benches
that put codeq beside Jupyter (session_bench.py, density_bench.py)."""


def execute(client, code, timeout=60):
    """Runs code on the kernel of client (a jupyter_client BlockingKernelClient) and
    returns its stdout once the kernel is idle again and the shell reply came."""
    msg_id = client.execute(code)
    stdout = ""
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            stdout += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    client.get_shell_msg(timeout=timeout)
    return stdout
