#!/usr/bin/env python3
"""tests/net/internet.py - a small "internet" for network tests, entirely on this machine.

Tests of the network modes (issue 13) need real traffic without a single packet leaving
the machine. This builds it: a network namespace whose loopback carries test hosts on
documentation addresses (198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32; the `dummy`
link type is not built into this kernel, so `lo` holds them), with

    an HTTP server   files.example.test  198.51.100.80   2001:db8::80    port 80
                     (GET /bytes/N answers N bytes: a download of known size)
                     api.example.test    203.0.113.10    2001:db8::10    port 80
    a TCP echo       echo.example.test   198.51.100.7    2001:db8::7     port 7
    a UDP echo       (same host)                                         port 7
    a package index  pypi.example.test   198.51.100.90   2001:db8::90    port 80
                     (PEP 503 "simple" pages and one wheel, `cqtest-hello` 1.0, made
                     here in memory: pip installs it with PIP_INDEX_URL and
                     PIP_TRUSTED_HOST set to this host)
    an npm registry  registry.example.test 198.51.100.91 2001:db8::91  port 80
                     (the package document of `cqtest-hello` 1.0.0 and its tarball, made
                     here in memory: npm installs it with npm_config_registry set to
                     this host's URL)
    private hosts    db.internal.test    10.99.0.10      fd99::10        ports 7, 80
                     (no name)           10.99.0.11      fd99::11        port 7
                     (a TCP echo and an HTTP server: a "VPC" behind the internet, for
                     network_private; these private addresses exist only in this
                     namespace, which the test made, so packets to them go nowhere
                     else)
    a DNS server     203.0.113.53, 2001:db8::53, port 53 (UDP and TCP), answering the
                     names above, rebind.example.test: 198.51.100.80 (2001:db8::80) on
                     its first answer, 127.0.0.1 (::1) on every later one, and
                     many.example.test: 100 A records, 198.51.100.100 to .199 (no
                     AAAA), an answer of 1.6 KB: over UDP it is truncated (TC, no
                     records) past 512 bytes or the query's EDNS size, as real servers
                     do; over TCP it comes whole. Its first and last address are
                     hosts with a TCP echo on port 7.

Other namespaces join it through a veth pair made directly between the two namespaces
(never in the host's): link n gets a /30 of 203.0.113.128/25 and 2001:db8:ff:n::/64,
and the client side default routes to the internet side (`link_addresses`). The internet namespace has no other link, so
nothing sent into it can go further: its default routes are of type `unreachable`,
so such traffic is answered with ICMP unreachable at once (forwarding is on in it, so
clients also reach each other's link addresses, as hosts on one internet would).
Nothing of the host is changed: no host link, route, sysctl or file under /etc.

Names start with `cqtest-net-<pid>-<random>`. Everything made is removed on exit from
the `with` block, also after a failure inside it or half-way through building it; and
`sweep()` removes what a killed run (its pid gone) left behind.

    with Internet() as net:
        client = net.add_client()            # a namespace joined to the internet
        net.run_in(client, ["python3", ...])  # or: ip netns exec <client> ...

As a program (root): `internet.py up` builds it and waits for Ctrl-C; `internet.py
serve` is the servers' process inside the namespace; `internet.py query NAME TYPE
SERVER` asks a DNS server (for tests running inside a client namespace).
"""
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "cqtest-net-"

HTTP_HOSTS = {"files.example.test": ("198.51.100.80", "2001:db8::80"),
              "api.example.test": ("203.0.113.10", "2001:db8::10")}
ECHO_HOST = ("198.51.100.7", "2001:db8::7")
DNS_SERVER = ("203.0.113.53", "2001:db8::53")
PYPI_HOST = ("198.51.100.90", "2001:db8::90")
PYPI_NAME = "pypi.example.test"
PYPI_URL = f"http://{PYPI_NAME}/simple/"
TEST_PACKAGE = "cqtest-hello"
TEST_GREETING = "hello from the test package index"
REGISTRY_HOST = ("198.51.100.91", "2001:db8::91")
REGISTRY_NAME = "registry.example.test"
REGISTRY_URL = f"http://{REGISTRY_NAME}/"
NPM_PACKAGE = "cqtest-hello"
NPM_VERSION = "1.0.0"
NPM_GREETING = "hello from the test npm registry"
REBIND_NAME = "rebind.example.test"
INTERNAL_NAME = "db.internal.test"
INTERNAL_HOSTS = (("10.99.0.10", "fd99::10"), ("10.99.0.11", "fd99::11"))
INTERNAL_NET = ("10.99.0.0/24", "fd99::/64")
NAMES = {name: addrs for name, addrs in HTTP_HOSTS.items()}
NAMES["echo.example.test"] = ECHO_HOST
NAMES[PYPI_NAME] = PYPI_HOST
NAMES[REGISTRY_NAME] = REGISTRY_HOST
NAMES[INTERNAL_NAME] = INTERNAL_HOSTS[0]
MANY_NAME = "many.example.test"
MANY_HOSTS = tuple(f"198.51.100.{100 + i}" for i in range(100))
MANY_ECHO = (MANY_HOSTS[0], MANY_HOSTS[-1])
MAX_LINKS = 32


def link_addresses(n):
    """Addresses of link n between the internet and a client: (internet side, client
    side), each (IPv4/30, IPv6/64). Documentation space too: 203.0.113.128/25 in /30s."""
    if not 0 <= n < MAX_LINKS:
        raise ValueError(f"link {n}: at most {MAX_LINKS} links")
    v4 = f"203.0.113.{128 + 4 * n}"
    base = v4.rsplit(".", 1)[0]
    last = 128 + 4 * n
    return ((f"{base}.{last + 1}", f"2001:db8:ff:{n:x}::1"),
            (f"{base}.{last + 2}", f"2001:db8:ff:{n:x}::2"))
ECHO_PORT, HTTP_PORT, DNS_PORT = 7, 80, 53


def _ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def _namespaces():
    out = _ip("-j", "netns", "list", check=False).stdout.strip()
    return [n["name"] for n in json.loads(out)] if out else []


def sweep():
    """Removes namespaces of this helper whose run (its pid) has gone."""
    removed = []
    for name in _namespaces():
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    return removed


class Internet:
    """The internet namespace, its servers, and the client namespaces joined to it."""

    def __init__(self, ready_timeout=10.0):
        self.id = f"{PREFIX}{os.getpid()}-{random.randrange(16**6):06x}"
        self.ns = f"{self.id}-inet"
        self.clients = []
        self.server = None
        self.ready_timeout = ready_timeout
        self._links = 0

    # -- building -------------------------------------------------------------------

    def __enter__(self):
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _build(self):
        sweep()
        _ip("netns", "add", self.ns)
        self._exec(self.ns, ["ip", "link", "set", "lo", "up"])
        hosts = [a for pair in list(HTTP_HOSTS.values()) + [ECHO_HOST, DNS_SERVER, PYPI_HOST,
                                                            REGISTRY_HOST, *INTERNAL_HOSTS,
                                                            MANY_ECHO]
                 for a in pair]
        for addr in hosts:
            plen = 128 if ":" in addr else 32
            # nodad: an IPv6 address is usable at once instead of after duplicate
            # address detection (a second or so).
            extra = ["nodad"] if ":" in addr else []
            self._exec(self.ns, ["ip", "addr", "add", f"{addr}/{plen}", "dev", "lo", *extra])
        # Anything addressed beyond the internet fails at once (ICMP unreachable) instead
        # of vanishing: forwarding on, inside this namespace only, and a default route
        # of type unreachable. So refused traffic in tests errors fast, never times out.
        self._exec(self.ns, ["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward && "
                             "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"])
        self._exec(self.ns, ["ip", "route", "add", "unreachable", "default"])
        self._exec(self.ns, ["ip", "-6", "route", "add", "unreachable", "default"])
        self._start_servers()

    def _start_servers(self):
        # Its own session (process group), so that close() stops it and its threads as one.
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, os.path.join(HERE, "internet.py"),
             "serve"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        line = [None]

        def read():
            line[0] = self.server.stdout.readline()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.ready_timeout)
        if line[0] != "ready\n":
            err = ""
            if self.server.poll() is not None:
                err = self.server.stderr.read()
            raise RuntimeError(f"test internet servers did not start: {line[0]!r} {err}")

    def add_client(self, name=None):
        """A new namespace joined to the internet by a veth pair; returns its name."""
        name = name or f"{self.id}-c{len(self.clients)}"
        _ip("netns", "add", name)
        self.clients.append(name)
        self.connect(name)
        return name

    def connect(self, ns):
        """Joins an existing namespace `ns` (made by the caller) to the internet."""
        n = self._links
        self._links += 1
        (in4, in6), (out4, out6) = link_addresses(n)
        tag = self.id[len(PREFIX):].replace("-", "")[-8:]
        inner, outer = f"cqi{tag}{n}"[:15], f"cqc{tag}{n}"[:15]
        # Both ends are created inside their namespaces: no link ever exists in the host's.
        _ip("link", "add", inner, "netns", self.ns, "type", "veth", "peer", "name", outer,
            "netns", ns)
        self._exec(self.ns, ["ip", "addr", "add", f"{in4}/30", "dev", inner])
        self._exec(self.ns, ["ip", "addr", "add", f"{in6}/64", "dev", inner, "nodad"])
        self._exec(self.ns, ["ip", "link", "set", inner, "up"])
        self._exec(ns, ["ip", "link", "set", "lo", "up"])
        self._exec(ns, ["ip", "addr", "add", f"{out4}/30", "dev", outer])
        self._exec(ns, ["ip", "addr", "add", f"{out6}/64", "dev", outer, "nodad"])
        self._exec(ns, ["ip", "link", "set", outer, "up"])
        self._exec(ns, ["ip", "route", "add", "default", "via", in4])
        self._exec(ns, ["ip", "-6", "route", "add", "default", "via", in6])
        return outer

    # -- using ----------------------------------------------------------------------

    @staticmethod
    def _exec(ns, argv, **kw):
        return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True,
                              capture_output=True, text=True, **kw)

    def run_in(self, ns, argv, timeout=30, check=True):
        """Runs argv inside namespace ns; returns the CompletedProcess."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                              text=True, timeout=timeout, check=check)

    def netns_path(self, ns):
        return f"/run/netns/{ns}"

    # -- tearing down ---------------------------------------------------------------

    def close(self):
        """Stops the servers and removes every namespace (with its links) it made."""
        if self.server is not None:
            try:
                os.killpg(self.server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.server.wait()
            for f in (self.server.stdout, self.server.stderr):
                f.close()
            self.server = None
        # Deleting a namespace deletes its veth ends, and with them their peers.
        for ns in self.clients + [self.ns]:
            _ip("netns", "del", ns, check=False)
        self.clients = []

    def leftovers(self):
        """Namespaces of this instance that still exist (empty after close())."""
        return [n for n in _namespaces() if n.startswith(self.id)]


# --- the servers (run inside the namespace by `internet.py serve`) ----------------------

def _dns_name(packet, offset):
    labels = []
    while True:
        if offset >= len(packet):
            raise ValueError("truncated name")
        length = packet[offset]
        offset += 1
        if length == 0:
            return ".".join(labels).lower(), offset
        if length > 63:  # compression or junk: queries from resolvers carry neither
            raise ValueError("label pointer in a question")
        labels.append(packet[offset:offset + length].decode("ascii", "replace"))
        offset += length


def _dns_encode_name(name):
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"


class DnsAnswers:
    """What the DNS server says: fixed names, and one that rebinds to loopback."""

    def __init__(self):
        self.lock = threading.Lock()
        self.asked = {}

    def lookup(self, name, qtype):
        fam = {1: 0, 28: 1}.get(qtype)
        if name == REBIND_NAME:
            with self.lock:
                n = self.asked.get((name, qtype), 0)
                self.asked[(name, qtype)] = n + 1
            if fam is None:
                return True, []
            first = NAMES["files.example.test"][fam]
            return True, [first if n == 0 else ("127.0.0.1", "::1")[fam]]
        if name == MANY_NAME:
            return True, list(MANY_HOSTS) if fam == 0 else []
        if name not in NAMES:
            return False, []
        return True, [] if fam is None else [NAMES[name][fam]]

    def reply(self, query, tcp=False):
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack(">HHH", query[:6])
        arcount = struct.unpack(">H", query[10:12])[0]
        if flags & 0x8000 or qdcount != 1:
            return None
        try:
            name, end = _dns_name(query, 12)
            qtype, qclass = struct.unpack(">HH", query[end:end + 4])
        except (ValueError, struct.error):
            return struct.pack(">HHHHHH", qid, 0x8001, 0, 0, 0, 0)  # FORMERR
        question = query[12:end + 4]
        exists, addrs = self.lookup(name, qtype)
        rcode = 0 if exists else 3  # NXDOMAIN
        ttl = 0 if name == REBIND_NAME else 60
        answers = b""
        for a in addrs:
            data = socket.inet_pton(socket.AF_INET6 if ":" in a else socket.AF_INET, a)
            answers += b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, ttl, len(data)) + data
        head = struct.pack(">HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(addrs), 0, 0)
        out = head + question + answers
        # Over UDP: 512 bytes, or the size of the query's OPT record (root name, type 41).
        limit = 512
        opt = query[end + 4:end + 9]
        if arcount and len(opt) == 5 and opt[0] == 0 and opt[1:3] == b"\x00\x29":
            limit = max(512, struct.unpack(">H", opt[3:5])[0])
        if not tcp and len(out) > limit:
            head = struct.pack(">HHHHHH", qid, 0x8600 | (flags & 0x0100) | rcode, 1, 0, 0, 0)
            out = head + question
        return out


def dns_query(name, qtype, server, timeout=2.0):
    """Asks server (an address) for name's A (1) or AAAA (28) records: (rcode, [addresses])."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + _dns_encode_name(name) + struct.pack(
        ">HH", qtype, 1)
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, DNS_PORT))
        data = s.recv(4096)
    rid, flags, _, ancount = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        raise ValueError("reply to another query")
    _, off = _dns_name(data, 12)
    off += 4
    addrs = []
    for _ in range(ancount):
        off += 2  # the name: always a pointer here
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[off:off + 10])
        off += 10
        rdata = data[off:off + rdlen]
        off += rdlen
        if rtype in (1, 28):
            addrs.append(socket.inet_ntop(socket.AF_INET if rtype == 1 else socket.AF_INET6, rdata))
    return flags & 0xF, addrs


def _serve_udp(addr, port, handle):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((addr, port))

    def loop():
        while True:
            data, peer = s.recvfrom(65535)
            out = handle(data)
            if out is not None:
                s.sendto(out, peer)

    threading.Thread(target=loop, daemon=True).start()


def _serve_tcp_dns(addr, port, handle):
    """DNS over TCP: messages prefixed with their 2-byte length, several per connection."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)

    def exactly(conn, n):
        data = b""
        while len(data) < n:
            more = conn.recv(n - len(data))
            if not more:
                raise EOFError
            data += more
        return data

    def one(conn):
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    n = struct.unpack(">H", exactly(conn, 2))[0]
                    out = handle(exactly(conn, n), tcp=True)
                    if out is None:
                        return
                    conn.sendall(struct.pack(">H", len(out)) + out)
            except (OSError, EOFError):
                pass

    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def _serve_tcp_echo(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)

    def one(conn):
        with conn:
            conn.settimeout(30)
            try:
                while data := conn.recv(65536):
                    conn.sendall(data)
            except OSError:
                pass

    def loop():
        while True:
            conn, _ = s.accept()
            threading.Thread(target=one, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def make_wheel(name, version, files, requires=()):
    """(file name, bytes) of a pure-Python wheel (PEP 427) of name==version holding files
    ({path: text}), with Requires-Dist lines for requires; built in memory, so that tests
    need no build tools and no network. Fixed timestamps: the same input gives the same
    bytes (and sha256)."""
    import base64
    import hashlib
    import io
    import zipfile
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = dict(files)
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires))
    files[f"{info}/WHEEL"] = ("Wheel-Version: 1.0\nGenerator: codeq-tests\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n")
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record += f"{path},sha256={digest.decode()},{len(text.encode())}\n"
    files[f"{info}/RECORD"] = record + f"{info}/RECORD,,\n"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for path, text in files.items():
            z.writestr(zipfile.ZipInfo(path, (2020, 1, 1, 0, 0, 0)), text,
                       compress_type=zipfile.ZIP_DEFLATED)
    return f"{module}-{version}-py3-none-any.whl", out.getvalue()


def make_test_wheel():
    """(file name, bytes) of a pure-Python wheel of TEST_PACKAGE 1.0, the test index's."""
    module = TEST_PACKAGE.replace("-", "_")
    return make_wheel(TEST_PACKAGE, "1.0", {f"{module}/__init__.py": f"GREETING = {TEST_GREETING!r}\n"})


def _index_pages():
    """path -> (content type, body) of the package index (PEP 503)."""
    import hashlib
    wheel_name, wheel = make_test_wheel()
    digest = hashlib.sha256(wheel).hexdigest()
    link = f'<a href="/packages/{wheel_name}#sha256={digest}">{wheel_name}</a>'
    html = "<!DOCTYPE html><html><body>{}</body></html>\n"
    return {
        "/simple/": ("text/html", html.format(f'<a href="/simple/{TEST_PACKAGE}/">'
                                              f"{TEST_PACKAGE}</a>").encode()),
        f"/simple/{TEST_PACKAGE}/": ("text/html", html.format(link).encode()),
        f"/packages/{wheel_name}": ("application/octet-stream", wheel),
    }


def make_npm_tarball(name, version, files):
    """bytes of an npm package tarball (what `npm pack` writes: a gzipped tar whose
    entries are below `package/`) of name@version holding files ({path: text}) and a
    package.json; fixed times and owners, so the same input gives the same bytes."""
    import gzip
    import io
    import tarfile
    files = dict(files)
    files["package.json"] = json.dumps({"name": name, "version": version,
                                        "main": "index.js", "license": "MIT"}, indent=2) + "\n"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in sorted(files):
            data = files[path].encode()
            info = tarfile.TarInfo(f"package/{path}")
            info.size, info.mode, info.mtime = len(data), 0o644, 499162500
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def make_test_npm_tarball():
    """bytes of the tarball of NPM_PACKAGE@NPM_VERSION, the test registry's."""
    return make_npm_tarball(NPM_PACKAGE, NPM_VERSION, {
        "index.js": f"exports.GREETING = {json.dumps(NPM_GREETING)};\n"})


def _registry_pages():
    """path -> (content type, body) of the npm registry: the package document (the
    registry's JSON, with dist.tarball, dist.shasum and dist.integrity) and the tarball."""
    import base64
    import hashlib
    tarball = make_test_npm_tarball()
    tgz_path = f"/{NPM_PACKAGE}/-/{NPM_PACKAGE}-{NPM_VERSION}.tgz"
    integrity = "sha512-" + base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    doc = {"name": NPM_PACKAGE, "dist-tags": {"latest": NPM_VERSION},
           "versions": {NPM_VERSION: {
               "name": NPM_PACKAGE, "version": NPM_VERSION, "main": "index.js",
               "dist": {"tarball": f"http://{REGISTRY_NAME}{tgz_path}",
                        "shasum": hashlib.sha1(tarball).hexdigest(),
                        "integrity": integrity}}}}
    return {f"/{NPM_PACKAGE}": ("application/json", json.dumps(doc).encode()),
            tgz_path: ("application/octet-stream", tarball)}


def _serve_http(addr, port, pages=None):
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if pages is not None:
                if self.path not in pages:
                    self.send_error(404)
                    return
                ctype, data = pages[self.path]
            else:
                body = f"codeq test internet: {addr} {self.headers.get('Host', '')} {self.path}\n"
                ctype, data = "text/plain", body.encode()
            if self.path.startswith("/bytes/") and self.path[7:].isdigit():
                data = b"x" * min(int(self.path[7:]), 64 << 20)  # a download of known size
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
        daemon_threads = True

    server = Server((addr, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def serve():
    dns = DnsAnswers()
    for addr in DNS_SERVER:
        _serve_udp(addr, DNS_PORT, dns.reply)
        _serve_tcp_dns(addr, DNS_PORT, dns.reply)
    for addr in ECHO_HOST:
        _serve_tcp_echo(addr, ECHO_PORT)
        _serve_udp(addr, ECHO_PORT, lambda data: data)
    for pair in HTTP_HOSTS.values():
        for addr in pair:
            _serve_http(addr, HTTP_PORT)
    pages = _index_pages()
    for addr in PYPI_HOST:
        _serve_http(addr, HTTP_PORT, pages)
    registry = _registry_pages()
    for addr in REGISTRY_HOST:
        _serve_http(addr, HTTP_PORT, registry)
    for addr in MANY_ECHO:
        _serve_tcp_echo(addr, ECHO_PORT)
    for i, pair in enumerate(INTERNAL_HOSTS):
        for addr in pair:
            _serve_tcp_echo(addr, ECHO_PORT)
            if i == 0:
                _serve_http(addr, HTTP_PORT)
    print("ready", flush=True)
    # Until the parent kills the process group, or goes away (stdout closes).
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        time.sleep(3600)


def main(argv):
    if argv[:1] == ["serve"]:
        serve()
    elif argv[:1] == ["query"] and len(argv) == 4:
        rcode, addrs = dns_query(argv[1], {"A": 1, "AAAA": 28}[argv[2]], argv[3])
        print(json.dumps({"rcode": rcode, "addresses": addrs}))
    elif argv[:1] == ["up"]:
        with Internet() as net:
            client = net.add_client()
            print(f"internet: {net.ns}, client: {client} ({net.netns_path(client)}); "
                  "Ctrl-C removes them", flush=True)
            try:
                signal.pause()
            except KeyboardInterrupt:
                pass
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
