#!/usr/bin/env python3
"""tests/fuzz/make_corpus.py - writes the seed corpora of tests/fuzz/corpus/.

Small, real inputs for each target: kernel replies as runtimes/*/codeq_kernel.* send
them, one encoded codeq.v1 Request of each kind and Responses of each payload (with the
Python client's generated module), and MCP lines as agents send them. Rerun it after a
change to the protocols; crash inputs kept as regression seeds (crash-*, leak-*) are
left alone.

usage: python3 tests/fuzz/make_corpus.py
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
from codeq_client import codeq_pb2 as pb  # noqa: E402


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def kernel_lines():
    # Header: cap A, cap B (2 bytes each, big-endian, mod 4096), four piece sizes (0:
    # switch caps).
    def header(cap_a, cap_b, pieces):
        return struct.pack(">HH4B", cap_a, cap_b, *pieces)

    replies = [
        {"id": 0, "ready": True},
        {"id": 1, "ok": True},
        {"id": 2, "ok": True, "value": "42", "images": []},
        {"id": 3, "ok": False, "value": "NameError: name 'x' is not defined", "images": []},
        {"id": 4, "ok": True, "value": "", "images": [{"data": "iVBORw0KGgo=", "mimeType": "image/png"}],
         "images_left_out": 1},
        {"id": 5, "ok": True, "value": "x" * 40, "value_bytes": 400000, "images": []},
    ]
    stream = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in replies)
    write("fuzz_kernel_lines", "replies-whole", header(4095, 4095, (255, 255, 255, 255)) + stream)
    write("fuzz_kernel_lines", "replies-pieces", header(4095, 64, (7, 1, 33, 0)) + stream)
    write("fuzz_kernel_lines", "ready", header(1024, 1024, (3, 5, 8, 13)) + b'{"id":0,"ready":true}\n')
    write("fuzz_kernel_lines", "forged", header(256, 4095, (16, 16, 16, 16))
          + b'{"id": 999999, "ok": true, "value": "forged"}\n{"id":1,"id":2}\n\n\n[1]\n')
    write("fuzz_kernel_lines", "too-long", header(32, 32, (10, 10, 10, 10)) + b'{"id":1,"value":"' + b"v" * 64 + b'"}\n')


def requests():
    def req(rid, **op):
        r = pb.Request(request_id=rid, session_id="s-1" if "start_session" not in op and
                       "list_sessions" not in op else "", tenant="t", reply_topic="codeq.replies.client-1",
                       deadline_unix_ms=1700000000000, traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        for k, v in op.items():
            getattr(r, k).CopyFrom(v)
        return r.SerializeToString()

    write("fuzz_request", "start-session", req("r1", start_session=pb.StartSession(
        name="n", session_timeout_seconds=900, limits=pb.Limits(memory_bytes=1 << 30, pids=64, cpu_millis=1000,
                                                                disk_bytes=1 << 29), env={"A": "1"}, client_token="c")))
    write("fuzz_request", "get-session", req("r2", get_session=pb.GetSession()))
    write("fuzz_request", "list-sessions", req("r3", list_sessions=pb.ListSessions(status=1, max_results=10, next_token="s-0")))
    write("fuzz_request", "stop-session", req("r4", stop_session=pb.StopSession(client_token="c")))
    write("fuzz_request", "invoke-code", req("r5", invoke=pb.Invoke(tool="executeCode", arguments=pb.Arguments(
        code="print(1)", language="python", clear_context=True, runtime="python", timeout=30))))
    write("fuzz_request", "invoke-write", req("r6", invoke=pb.Invoke(tool="writeFiles", arguments=pb.Arguments(
        content=[pb.FileContent(path="a.txt", text="hi"), pb.FileContent(path="b.bin", blob=b"\x00\xff")]))))
    write("fuzz_request", "invoke-read", req("r7", invoke=pb.Invoke(tool="readFiles", arguments=pb.Arguments(
        paths=["a.txt", "b.bin"], directory_path=".", task_id="t1", command="ls"))))

    def resp(**payload):
        r = pb.Response(request_id="r5", session_id="s-1")
        for k, v in payload.items():
            getattr(r, k).CopyFrom(v)
        return r.SerializeToString()

    write("fuzz_request", "response-result", resp(result=pb.Result(
        content=[pb.ContentBlock(text=pb.TextBlock(text="1\n")),
                 pb.ContentBlock(image=pb.ImageBlock(data=b"\x89PNG", mime_type="image/png")),
                 pb.ContentBlock(resource=pb.EmbeddedResource(uri="file://a.txt", mime_type="text/plain", text="hi")),
                 pb.ContentBlock(resource=pb.EmbeddedResource(uri="file://b.bin", blob=b"\x00")),
                 pb.ContentBlock(resource_link=pb.ResourceLink(uri="file://d", name="d", mime_type="inode/directory",
                                                               size=4, description="dir"))],
        structured_content=pb.StructuredContent(stdout="1\n", stderr="", exit_code=0, execution_time=3.5,
                                                task_id="t1", task_status=2, value="1"),
        is_error=True, error_code=3, error_message="limit")))
    write("fuzz_request", "response-session", resp(session=pb.Session(
        session_id="s-1", name="n", status=1, created_at_unix_ms=1, last_updated_at_unix_ms=2,
        session_timeout_seconds=900)))
    write("fuzz_request", "response-sessions", resp(sessions=pb.SessionList(
        sessions=[pb.Session(session_id="s-1", status=1), pb.Session(session_id="s-2", status=2)], next_token="s-2")))
    write("fuzz_request", "response-chunk", resp(chunk=pb.OutputChunk(stream=1, data=b"out", sequence=7, final=True)))


def mcp():
    def line(method, params=None, rid=1):
        m = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            m["params"] = params
        return json.dumps(m).encode() + b"\n"

    def call(name, arguments, rid=2):
        return line("tools/call", {"name": name, "arguments": arguments}, rid)

    write("fuzz_mcp", "initialize", line("initialize", {"protocolVersion": "2025-06-18", "capabilities": {},
                                                        "clientInfo": {"name": "c", "version": "1"}})
          + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\r\n' + line("tools/list", rid="a"))
    write("fuzz_mcp", "execute-code", call("executeCode", {"code": "print(1)", "language": "python",
                                                           "clearContext": False, "runtime": "python",
                                                           "timeout": 30, "sessionId": "s-1"}))
    write("fuzz_mcp", "execute-command", call("executeCommand", {"command": "ls", "timeout": 5})
          + call("startCommandExecution", {"command": "sleep 1"}) + call("getTask", {"taskId": "t1"})
          + call("stopTask", {"taskId": "t1"}))
    write("fuzz_mcp", "files", call("writeFiles", {"content": [{"path": "a.txt", "text": "hi"},
                                                               {"path": "b.bin", "blob": "AP8="}]})
          + call("readFiles", {"paths": ["a.txt"]}) + call("listFiles", {"directoryPath": "."})
          + call("listFiles", {"path": "."}) + call("removeFiles", {"paths": ["a.txt"]}))
    write("fuzz_mcp", "sessions", call("startSession", {"name": "n", "sessionTimeoutSeconds": 900, "memory": "1G",
                                                        "disk": "512M", "cpus": 1.5, "pids": 64,
                                                        "env": {"A": "1"}})
          + call("getSession", {"sessionId": "s-1"}) + call("stopSession", {"sessionId": "s-1"})
          + call("listSessions", {"status": "READY", "maxResults": 5, "nextToken": "s-0"}))
    write("fuzz_mcp", "network", call("startSession", {"networkMode": "ALLOWLIST",
                                                       "networkAllow": ["files.example.test:443",
                                                                        "*.a.test", "10.0.0.0/8"]})
          + call("startSession", {"networkMode": "PUBLIC"})
          + call("startSession", {"networkMode": "VPC", "networkAllow": "x"}))
    write("fuzz_mcp", "refused", b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"nope"}}\n'
          + b'{"jsonrpc":"2.0","id":1,"result":{}}\n{"id":[1]}\nnot json\n'
          + call("executeCode", {"code": 1}) + call("startSession", {"memory": "lots"}))


def claims():
    # fuzz_claim: first byte = the message's length (< 256), the message, then what
    # Redis "returned" for its claim.
    def pair(name, message, fetched):
        assert len(message) < 256
        write("fuzz_claim", name, bytes([len(message)]) + message + fetched)

    args = pb.Arguments(content=[pb.FileContent(path="a.bin", blob=b"\x00\x01" * 8),
                                 pb.FileContent(path="b.txt", text="hello")], code="1+1")
    packed = args.SerializeToString()
    cid = "0123456789abcdef" * 2
    req = pb.Request(request_id="r1", session_id="s1", reply_topic="codeq.replies.x",
                     invoke=pb.Invoke(tool="writeFiles", arguments_claim=pb.Claim(
                         id=cid, size=len(packed), largest_file=16)))
    pair("request", req.SerializeToString(), packed)
    pair("request-lying-size", req.SerializeToString(), packed + b"\x00")
    inner = pb.Response(request_id="r1", session_id="s1", result=pb.Result(
        content=[pb.ContentBlock(text=pb.TextBlock(text="x" * 40))],
        structured_content=pb.StructuredContent(stdout="out", exit_code=0)))
    packed = inner.SerializeToString()
    outer = pb.Response(request_id="r1", session_id="s1",
                        claim=pb.Claim(id=cid, size=len(packed)))
    pair("response", outer.SerializeToString(), packed)
    # Sealed as clients and workers seal claims (fleet/claim.h): nonce | ciphertext | tag.
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key, nonce = bytes(range(32)), bytes(12)
    stored = nonce + AESGCM(key).encrypt(nonce, packed, b"codeq-claim-v1:" + cid.encode())
    sealed = pb.Response(request_id="r1", session_id="s1",
                         claim=pb.Claim(id=cid, size=len(stored), key=key))
    pair("response-sealed", sealed.SerializeToString(), stored)
    other = pb.Response(request_id="r2", chunk=pb.OutputChunk(stream=1, data=b"o"))
    pair("response-other", outer.SerializeToString(), other.SerializeToString())


def auth():
    # Signed with fuzz_auth.c's key at its clock: these verify, so the fuzzer starts past
    # the signature check.
    from codeq_client.auth import Credentials, sign
    key = Credentials("fuzz", "cqk_f0220000000000000000", "5eed" * 16)
    at = 1800000000000
    invoke = pb.Request(request_id="r1", session_id="s1", tenant="fuzz",
                        reply_topic="codeq.replies.fuzz.x", invoke=pb.Invoke(
                            tool="executeCode", arguments=pb.Arguments(code="print(1)")))
    write("fuzz_auth", "invoke", sign(invoke, key, now_ms=at).SerializeToString())
    start = pb.Request(request_id="r2", tenant="fuzz", reply_topic="codeq.replies.fuzz.x",
                       start_session=pb.StartSession(env={"K": "v"}))
    signed = sign(start, key, now_ms=at)
    write("fuzz_auth", "start", signed.SerializeToString())
    signed.session_id = "abcdef0123456789abcdef0123456789"  # as a dispatcher passes it on
    write("fuzz_auth", "start-forwarded", signed.SerializeToString())
    write("fuzz_auth", "unsigned", pb.Request(request_id="r3", session_id="s1",
                                              get_session=pb.GetSession()).SerializeToString())


def line_reader():
    # fuzz_line_reader: two bytes of line limit (mod 4096, + 1), then the stream (whose
    # first 16 bytes also pick the read sizes).
    lines = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\r\n' + b"x" * 300 + b"\n\n" + b"tail"
    write("fuzz_line_reader", "limit-64", struct.pack(">H", 63) + lines)
    write("fuzz_line_reader", "limit-4096", struct.pack(">H", 4095) + lines)
    write("fuzz_line_reader", "long-last-line", struct.pack(">H", 9) + b"short\n" + b"y" * 40)


def netpolicy():
    # fuzz_netpolicy: mode byte (bit 7: bounds on), family byte, 16 address bytes, port
    # (2 bytes), protocol byte, then allowlist entries separated by newlines.
    import socket

    def seed(name, mode, fam6, address, port, proto, entries):
        family = socket.AF_INET6 if fam6 else socket.AF_INET
        data = (bytes([mode, 1 if fam6 else 0]) + socket.inet_pton(family, address).ljust(16, b"\0")
                + struct.pack(">H", port) + bytes([proto]) + "\n".join(entries).encode())
        write("fuzz_netpolicy", name, data)

    seed("public-tcp", 1, False, "198.51.100.7", 80, 0, [])
    seed("public-loopback", 1, False, "127.0.0.1", 80, 0, [])
    seed("public-private-open", 1, False, "10.20.1.1", 5432, 0, [])
    seed("allow-names", 2, False, "203.0.113.10", 80, 0,
         ["files.example.test:80", "*.api.example.test", "198.51.100.0/28:7"])
    seed("allow-v6", 2, True, "2001:db8::7", 443, 1, ["[2001:db8::7]:443", "2001:db8::/32"])
    seed("allow-bounds", 0x82, False, "203.0.113.10", 443, 0, ["x.example.test:443", "rebind.example.test"])
    seed("allow-hostile", 2, True, "::ffff:127.0.0.1", 80, 0,
         ["127.1", "[fe80::1%25lo]:80", "10.0.0.1/8", "*.test", "2002:7f00:1::"])


def dns():
    # fuzz_dns: 2 bytes of query length, the query (a sandbox's), then an upstream's reply.
    def name(n):
        return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"

    def query(n, qtype=1, edns=False):
        q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 1 if edns else 0) + name(n)
        q += struct.pack(">HH", qtype, 1)
        if edns:
            q += b"\0" + struct.pack(">HHIH", 41, 4096, 0, 0)
        return q

    def rr(owner, rtype, rdata):
        return owner + struct.pack(">HHIH", rtype, 1, 60, len(rdata)) + rdata

    def seed(tag, q, reply):
        write("fuzz_dns", tag, struct.pack(">H", len(q)) + q + reply)

    q = query("www.example.test")
    question = q[12:]
    head = struct.pack(">HHHHHH", 0x4321, 0x8180, 1, 3, 0, 0)
    chain = (rr(b"\xc0\x0c", 5, name("cdn.example.net")) +
             rr(name("cdn.example.net"), 1, bytes([198, 51, 100, 80])) +
             rr(name("cdn.example.net"), 1, bytes([127, 0, 0, 1])))
    seed("cname-chain", q, head + question + chain)
    seed("edns-aaaa", query("files.example.test", 28, True),
         struct.pack(">HHHHHH", 7, 0x8180, 1, 1, 0, 0) + query("files.example.test", 28)[12:] +
         rr(b"\xc0\x0c", 28, bytes(15) + b"\x80"))
    seed("nxdomain", query("nope.example.test"),
         struct.pack(">HHHHHH", 9, 0x8183, 1, 0, 0, 0) + query("nope.example.test")[12:])
    seed("pointer-loop", query("a.test"),
         struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + query("a.test")[12:] + b"\xc0\x18")
    seed("bad-query", b"\x00\x01\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\xc0\x0c", b"")


def runtime_spec():
    # fuzz_runtime_spec: a runtime spec's JSON, as `codeq runtime build FILE` reads it.
    def seed(tag, spec):
        write("fuzz_runtime_spec", tag, json.dumps(spec, indent=1).encode())

    seed("python", {"name": "data-1.0", "language": "python3.11",
                    "packages": {"pip": ["polars==1.*", "a[b,c]>=1,<2", "numpy"]},
                    "environment": {"MPLBACKEND": "Agg", "_X": "a b/c"}, "preload": ["numpy", "os.path"]})
    seed("node", {"name": "web", "language": "node", "packages": {"npm": ["lodash@4", "@types/node@^20", "x"]},
                  "environment": {}, "preload": []})
    seed("minimal", {"name": "m", "language": "python3.9"})
    seed("refused", {"name": "x", "language": "python3.11", "packages": {"pip": ["-e .", "a @ file:///x"]},
                     "environment": {"LD_PRELOAD": "/x.so", "PATH": "/"}})
    write("fuzz_runtime_spec", "unicode", b'{"language":"node","name":"u","environment":{"A":"\u00e9\ud83d\ude00"}}')


def interpreter_def():
    # fuzz_interpreter_def: a definition's JSON, as cq_interpreter_def_json writes it.
    def seed(tag, d):
        write("fuzz_interpreter_def", tag, json.dumps(d, indent=2).encode())

    seed("full", {"name": "data", "runtime": "data-1.0", "network": "ALLOWLIST",
                  "allow": ["files.example.test:443", "*.api.example.test", "198.51.100.0/28", "[2001:db8::1]:80"],
                  "memory": 1 << 30, "cpus": 1.5, "disk": 1 << 29, "sessionTimeoutSeconds": 900,
                  "warmPool": 2, "createdAt": "2026-12-07T09:21:29.123Z"})
    seed("public", {"name": "p", "network": "PUBLIC", "cpus": 0.01, "warmPool": 0,
                    "createdAt": "2028-02-29T23:59:60.999Z"})
    seed("minimal", {"name": "m"})
    seed("edges", {"name": "e", "network": "NONE", "memory": 33554432, "disk": 1099511627776, "cpus": 256,
                   "sessionTimeoutSeconds": 1, "createdAt": "9999-12-31T23:59:59.999Z"})
    seed("refused", {"name": "codeq.default", "network": "public", "allow": ["a,b"], "memory": -1})


def layer():
    # fuzz_layer: a layer's stream (runtime/layer.h): "CQLAYER1" digest '\n', entries, 'E'.
    head = b"CQLAYER1" + b"0123456789abcdef" * 4 + b"\n"

    def entry(kind, mode, path, body=b""):
        return kind + struct.pack(">IH", mode, len(path)) + path + body

    def d(path, mode=0o755):
        return entry(b"d", mode, path)

    def f(path, data, mode=0o644):
        return entry(b"f", mode, path, struct.pack(">Q", len(data)) + data)

    def ln(path, target):
        return entry(b"l", 0o777, path, struct.pack(">H", len(target)) + target)

    def seed(tag, *entries, end=b"E"):
        write("fuzz_layer", tag, head + b"".join(entries) + end)

    seed("layer", d(b"python"), d(b"python/pkg"), f(b"python/pkg/__init__.py", b"x = 1\n"),
         f(b"python/pkg/run", b"#!/bin/sh\n", 0o4755), d(b"node", 0o700), d(b"node/bin"),
         ln(b"node/bin/tool", b"../lib/tool.js"), d(b"node/lib"), f(b"node/lib/tool.js", b"1", 0o600),
         ln(b"python/pkg/self", b"."), f(b"manifest.json", b'{"digest":"x"}'))
    seed("empty")
    seed("deep", *[d(b"/".join([b"a"] * k)) for k in range(1, 12)],
         ln(b"/".join([b"a"] * 11) + b"/up", b"../" * 10 + b"a"))
    seed("escape", ln(b"l", b"../etc"), d(b"x"), ln(b"x/abs", b"/etc/passwd"))
    seed("through-link", d(b"x"), ln(b"y", b"x"), f(b"y/z", b"through"))
    seed("hostile-paths", f(b"../up", b"u"), f(b"/abs", b"a"), f(b"a/./b", b"b"), entry(b"c", 0o644, b"dev"))
    seed("duplicate", f(b"a", b"1"), f(b"a", b"2"))
    seed("truncated", d(b"x"), f(b"x/y", b"12345")[:-2], end=b"")


def sigv4():
    """Requests botocore signs (tests/http/aws.py) with fuzz_sigv4's key and clock, so that
    the fuzzer starts from requests the verifier accepts."""
    sys.path.insert(0, os.path.join(HERE, "..", "http"))
    from aws import sign  # noqa: E402
    from botocore.utils import percent_encode_sequence

    def seed(name, *args, **kw):
        write("fuzz_sigv4", name, sign(*args, key="AKIDFUZZ", secret="fuzz-secret/+=", **kw))

    base = "https://codeq.example/code-interpreters/aws.codeinterpreter.v1"
    seed("start", "PUT", base + "/sessions/start", b'{"name":"s","sessionTimeoutSeconds":900}',
         [("Content-Type", "application/json")])
    seed("invoke", "POST", base + "/tools/invoke", b'{"name":"executeCode","arguments":{"code":"1+1"}}',
         [("Content-Type", "application/json"), ("x-amzn-code-interpreter-session-id", "s1")])
    seed("get", "GET", base + "/sessions/get?" + percent_encode_sequence({"sessionId": "a b/+~"}))
    seed("repeated", "POST", base + "/x/../tools//invoke?b=2&a=1&a=0", b"{}",
         [("X-Thing", "one"), ("x-thing", "  two   words ")])
    seed("unsigned-payload", "POST", base + "/tools/invoke", b"{}", unsigned_payload=True)


def eventstream():
    """Messages as the format describes them, framed here (struct, zlib's CRC32), behind
    fuzz_eventstream's 2 bytes (the "fix the CRCs" bit and the maximum)."""
    import zlib

    def frame(headers, payload):
        h = b""
        for name, t, value in headers:
            h += bytes([len(name)]) + name + bytes([t])
            if t in (6, 7):
                h += struct.pack(">H", len(value)) + value
            elif t in (2, 3, 4, 5, 8):
                h += struct.pack({2: ">b", 3: ">h", 4: ">i", 5: ">q", 8: ">q"}[t], value)
            elif t == 9:
                h += value
        prelude = struct.pack(">II", 16 + len(h) + len(payload), len(h))
        body = prelude + struct.pack(">I", zlib.crc32(prelude)) + h + payload
        return body + struct.pack(">I", zlib.crc32(body))

    event = [(b":event-type", 7, b"result"), (b":content-type", 7, b"application/json"),
             (b":message-type", 7, b"event")]
    result = b'{"content":[{"type":"text","text":"2"}],"structuredContent":{"exitCode":0},"isError":false}'
    write("fuzz_eventstream", "result", b"\0\0" + frame(event, result))
    write("fuzz_eventstream", "stream", b"\0\0" + frame(event, result) * 3 + frame(event, b"{}")[:20])
    write("fuzz_eventstream", "exception", b"\0\0" + frame(
        [(b":exception-type", 7, b"validationException"), (b":content-type", 7, b"application/json"),
         (b":message-type", 7, b"exception")], b'{"message":"bad"}'))
    write("fuzz_eventstream", "types", b"\0\x10" + frame(
        [(b"t", 0, None), (b"f", 1, None), (b"b", 2, -1), (b"s", 3, 300), (b"i", 4, -70000),
         (b"l", 5, 1 << 40), (b"raw", 6, b"\0\1"), (b"ts", 8, 1752669296000), (b"u", 9, b"x" * 16)], b"p"))
    write("fuzz_eventstream", "empty", b"\0\0" + frame([], b""))
    # the same with the "fix the CRCs" bit, from which the fuzzer reaches the headers
    for name in ("types", "exception"):
        with open(os.path.join(HERE, "corpus", "fuzz_eventstream", name), "rb") as f:
            data = f.read()
        write("fuzz_eventstream", name + "-fixcrc", bytes([data[0] | 0x80]) + data[1:])


if __name__ == "__main__":
    kernel_lines()
    requests()
    claims()
    mcp()
    auth()
    line_reader()
    netpolicy()
    dns()
    runtime_spec()
    interpreter_def()
    layer()
    sigv4()
    eventstream()
