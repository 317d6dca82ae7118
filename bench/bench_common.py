"""What the benches that put codeq beside a Jupyter kernel share (session_bench.py,
density_bench.py): a cell run on the kernel the way a notebook front end runs it, and
the host's available memory."""


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


def mem_available_kb():
    """The host's MemAvailable, in KiB."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RuntimeError("no MemAvailable")
