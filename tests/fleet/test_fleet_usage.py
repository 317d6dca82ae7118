"""Results that crossed the fleet carry the call's resource usage as embedded ones do:
structuredContent cpuTime (milliseconds) and peakMemory (bytes), through the worker's
codec and the Python client, with executionTime to the microsecond. Real Kafka, real
Redis, one worker, real sandboxes."""

import os
import sys

from conftest import BROKERS, REPO

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client  # noqa: E402


def test_results_carry_cpu_time_and_peak_memory(new_fleet, redis_client):
    f = new_fleet()
    f.start_worker("a")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    with Client(BROKERS, request_topic=f.request_topic, default_timeout=120) as client:
        s = client.start_session(name="usage")
        try:
            r = s.invoke("executeCommand", {
                "command": "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo done"})
            assert r["isError"] is False, r
            sc = r["structuredContent"]
            assert list(sc) == ["stdout", "stderr", "exitCode", "executionTime", "cpuTime",
                                "peakMemory"]
            assert sc["stdout"] == "done\n"
            assert isinstance(sc["cpuTime"], int) and sc["cpuTime"] > 0, sc
            assert isinstance(sc["peakMemory"], int) and sc["peakMemory"] > 0, sc
            assert sc["executionTime"] == round(sc["executionTime"], 3), sc

            r = s.invoke("executeCode", {"code": "b = bytearray(64 << 20)\nlen(b)"})
            assert r["isError"] is False, r
            sc = r["structuredContent"]
            assert sc["peakMemory"] >= 64 << 20, sc
            assert sc["peakMemory"] <= s.info["limits"]["memory"], (sc, s.info)
            assert isinstance(sc["cpuTime"], int) and sc["cpuTime"] >= 0, sc
        finally:
            s.stop()
