"""A test OpenTelemetry collector: OTLP/HTTP with JSON on loopback (POST /v1/traces).

Every payload is checked against OTLP's own messages: protobuf's json_format parses it
into opentelemetry-proto's ExportTraceServiceRequest, which refuses unknown fields and
wrong types, so a span codeq sends in a shape a real collector would reject fails the
test here. The package is not in Debian 12: scripts/setup installs it into
build/pydeps (or $CODEQ_PYDEPS), and its absence fails the tests rather than skipping
them.
"""

import base64
import http.server
import json
import os
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYDEPS = os.environ.get("CODEQ_PYDEPS") or os.path.join(REPO, "build", "pydeps")


def _load_proto():
    import sys
    if PYDEPS not in sys.path:
        sys.path.insert(0, PYDEPS)
    try:
        from google.protobuf import json_format
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    except ImportError as e:
        raise AssertionError(
            f"opentelemetry-proto is missing ({e}): run scripts/setup, which installs it "
            f"into {PYDEPS} (or set CODEQ_PYDEPS to where it is)") from None
    return json_format, trace_service_pb2


_ID_LENGTHS = {"traceId": 32, "spanId": 16, "parentSpanId": 16}


def _ids_as_base64(body):
    """OTLP/JSON writes trace and span ids as hex, where protobuf's JSON mapping has
    base64 for bytes (the specification's one departure from it): checked, and turned
    into base64 for json_format, as a collector does."""
    for rs in body.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key, length in _ID_LENGTHS.items():
                    if key not in span:
                        continue
                    value = span[key]
                    if (not isinstance(value, str) or len(value) != length
                            or value != value.lower()):
                        raise ValueError(f"{key} {value!r} is not {length} lower-case hex digits")
                    span[key] = base64.b64encode(bytes.fromhex(value)).decode()
    return body


class Span:
    """One received span, its ids as lower-case hex."""

    def __init__(self, service, span):
        self.service = service
        self.name = span.name
        self.trace_id = span.trace_id.hex()
        self.span_id = span.span_id.hex()
        self.parent_id = span.parent_span_id.hex()
        self.kind = span.kind
        self.start = span.start_time_unix_nano
        self.end = span.end_time_unix_nano
        self.status_code = span.status.code
        self.attributes = {a.key: (a.value.string_value if a.value.HasField("string_value")
                                   else a.value.int_value) for a in span.attributes}
        self.trace_state = span.trace_state

    def __repr__(self):
        return (f"Span({self.service}:{self.name} trace={self.trace_id} span={self.span_id} "
                f"parent={self.parent_id or '-'})")


class Receiver:
    """Collects spans on 127.0.0.1:<port>; ``endpoint`` is the URL to configure.
    A payload that does not parse as ExportTraceServiceRequest is kept in ``invalid``
    (and answered 400, as a collector would)."""

    def __init__(self):
        self.json_format, self.pb = _load_proto()
        self.spans = []
        self.invalid = []
        self.posts = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = receiver._take(self.path, self.headers.get("Content-Type"), body)
                self.send_response(200 if ok else 400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _take(self, path, content_type, body):
        try:
            if path != "/v1/traces" or content_type != "application/json":
                raise ValueError(f"POST {path} as {content_type}")
            request = self.json_format.Parse(json.dumps(_ids_as_base64(json.loads(body))),
                                             self.pb.ExportTraceServiceRequest())
        except Exception as e:  # json_format.ParseError, ValueError, UnicodeDecodeError
            with self.lock:
                self.invalid.append((str(e), body[:2000]))
            return False
        spans = []
        for rs in request.resource_spans:
            service = next((a.value.string_value for a in rs.resource.attributes
                            if a.key == "service.name"), None)
            for ss in rs.scope_spans:
                spans.extend(Span(service, s) for s in ss.spans)
        with self.lock:
            self.posts += 1
            self.spans.extend(spans)
        return True

    def trace(self, trace_id):
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id, names, timeout=30):
        """The spans of trace_id once every name in names arrived (fails after timeout)."""
        deadline = time.time() + timeout
        while True:
            spans = self.trace(trace_id)
            if set(names) <= {s.name for s in spans}:
                return spans
            if time.time() > deadline:
                raise AssertionError(f"spans {sorted(names)} of trace {trace_id} did not all "
                                     f"arrive: {spans}; invalid payloads: {self.invalid}")
            time.sleep(0.05)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def by_name(spans):
    """name -> the one span of that name (fails on two)."""
    out = {}
    for s in spans:
        assert s.name not in out, f"two spans named {s.name}: {spans}"
        out[s.name] = s
    return out


def dead_endpoint():
    """An endpoint where nothing listens: a loopback port bound, then closed."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1/traces"


def traceparent_ids(traceparent):
    """(trace id, span id) of a version-00 traceparent, checked for its shape."""
    parts = traceparent.split("-")
    assert len(parts) == 4 and parts[0] == "00" and len(parts[1]) == 32 and len(parts[2]) == 16, \
        traceparent
    int(parts[1], 16), int(parts[2], 16)
    return parts[1], parts[2]


def log_lines(text):
    """The JSON lines of a daemon's log (others skipped)."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out
