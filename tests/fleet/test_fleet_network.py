"""Network modes in the fleet (issue 13): a session's mode travels in StartSession, is
shown by getSession, and survives its worker: killed with kill -9, the session is
adopted by another worker in the same mode, even when that worker's default mode
differs (the owner stores the mode it resolved, not the request's UNSPECIFIED).

Each worker leaves through its own client namespace of the test internet
(tests/net/internet.py), so that an adopted PUBLIC session can only reach the test
hosts through the adopting worker's egress namespace; no packet leaves the machine.
Real Kafka, Redis and sandboxes; needs root."""

import os
import sys

import pytest

from conftest import BROKERS
from driver import Driver, pb, texts

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "net"))
import internet  # noqa: E402

FETCH = ("import urllib.request\n"
         "def fetch(url):\n"
         "    try:\n"
         "        return urllib.request.urlopen(url, timeout=5).read().decode()\n"
         "    except Exception as e:\n"
         "        return 'failed: ' + repr(getattr(e, 'reason', e))\n")


@pytest.fixture(scope="module")
def net():
    assert os.geteuid() == 0, "the network tests need root"
    with internet.Internet() as n:
        yield n


def owner(redis, fleet, sid):
    return (redis.hget(fleet.prefix + "session:" + sid, "owner") or b"").decode()


def facts(driver, sid):
    r = driver.call(pb.Request(session_id=sid, get_session=pb.GetSession()))
    assert r.WhichOneof("payload") == "session", r
    return r.session


def fetch(driver, sid, url):
    r = driver.code(sid, FETCH + f"fetch({url!r})")
    assert not r.is_error, r
    return texts(r)[-1]


def start_fleet(new_fleet, redis, net, defaults, modes="NONE,PUBLIC"):
    """Workers a and b, each with an egress namespace of its own and the given
    network_default."""
    f = new_fleet()
    for name, default in zip(("a", "b"), defaults):
        egress = net.add_client()
        f.start_worker(name, "--egress-netns", net.netns_path(egress),
                       "--dns", internet.DNS_SERVER[0], "--network-modes", modes,
                       "--network-default", default)
    f.wait_workers(redis, 2)
    f.start_dispatcher()
    return f


def test_a_public_session_is_adopted_in_public_mode(new_fleet, redis_client, net):
    f = start_fleet(new_fleet, redis_client, net, ("NONE", "NONE"))
    driver = Driver(BROKERS, f.request_topic)
    try:
        sid = driver.start_session(name="online", network=pb.NETWORK_MODE_PUBLIC)
        assert facts(driver, sid).network == pb.NETWORK_MODE_PUBLIC
        got = fetch(driver, sid, "http://files.example.test/before")
        assert got == "'codeq test internet: 198.51.100.80 files.example.test /before\\n'", got
        victim = owner(redis_client, f, sid)
        f.workers[victim].kill()

        r = driver.code(sid, FETCH + "fetch('http://files.example.test/after')")
        assert any("moved to a new worker" in t for t in texts(r)), r
        assert texts(r)[-1] == "'codeq test internet: 198.51.100.80 files.example.test /after\\n'", r
        assert owner(redis_client, f, sid) not in ("", victim)
        assert fetch(driver, sid, "http://203.0.113.10/x").startswith(
            "'codeq test internet: 203.0.113.10 ")
        # The call's traffic crosses the fleet with its result.
        r = driver.code(sid, FETCH + "len(fetch('http://203.0.113.10/bytes/200000'))")
        sc = r.structured_content
        assert sc.network and sc.network_bytes_received >= 200_000, sc
        got = facts(driver, sid)
        assert got.network == pb.NETWORK_MODE_PUBLIC and got.status == pb.SESSION_STATUS_READY

        # A NONE session on the surviving worker cannot reach the test internet.
        none = driver.start_session(name="offline", network=pb.NETWORK_MODE_NONE)
        assert facts(driver, none).network == pb.NETWORK_MODE_NONE
        assert fetch(driver, none, "http://203.0.113.10/")[1:].startswith("failed: ")
    finally:
        driver.close()


def test_an_allowlist_session_is_adopted_with_its_list(new_fleet, redis_client, net):
    """ALLOWLIST travels with the session: adopted after kill -9 of its worker, it
    reaches what it lists through the adopter's egress namespace, and not what it does
    not. The workers keep a warm ALLOWLIST sandbox each (warm_pool_allowlist's default
    when ALLOWLIST is allowed), so either start may take one."""
    f = start_fleet(new_fleet, redis_client, net, ("NONE", "NONE"), "NONE,PUBLIC,ALLOWLIST")
    driver = Driver(BROKERS, f.request_topic)
    allow = ["files.example.test", "198.51.100.7:7"]
    refused = ("http://api.example.test/", "http://203.0.113.10/")
    try:
        sid = driver.start_session(name="listed", network=pb.NETWORK_MODE_ALLOWLIST,
                                   network_allow=allow)
        got = facts(driver, sid)
        assert got.network == pb.NETWORK_MODE_ALLOWLIST and list(got.network_allow) == allow
        got = fetch(driver, sid, "http://files.example.test/before")
        assert got == "'codeq test internet: 198.51.100.80 files.example.test /before\\n'", got
        victim = owner(redis_client, f, sid)
        f.workers[victim].kill()

        r = driver.code(sid, FETCH + "fetch('http://files.example.test/after')")
        assert any("moved to a new worker" in t for t in texts(r)), r
        assert texts(r)[-1] == \
            "'codeq test internet: 198.51.100.80 files.example.test /after\\n'", r
        assert owner(redis_client, f, sid) not in ("", victim)
        got = facts(driver, sid)
        assert got.network == pb.NETWORK_MODE_ALLOWLIST and list(got.network_allow) == allow
        assert got.status == pb.SESSION_STATUS_READY
        # The listed echo, TCP on port 7.
        echo = driver.code(sid, "import socket\n"
                                "with socket.create_connection(('198.51.100.7', 7), 5) as c:\n"
                                "    c.sendall(b'ping'); print(c.recv(4).decode())")
        assert texts(echo)[-1].strip() == "ping", echo
        for url in refused:
            assert fetch(driver, sid, url)[1:].startswith("failed: "), url
        # A PUBLIC session on the adopter reaches those: the refusals are the list's.
        public = driver.start_session(name="public", network=pb.NETWORK_MODE_PUBLIC)
        assert fetch(driver, public, refused[1]).startswith(
            "'codeq test internet: 203.0.113.10 ")
    finally:
        driver.close()


def test_the_resolved_mode_survives_a_worker_with_another_default(new_fleet, redis_client,
                                                                   net):
    """No mode asked for: the owner's default decides, once. Worker a is PUBLIC by
    default, b NONE: a session that started on a, adopted by b after a is killed, is
    still PUBLIC (the stored StartSession holds PUBLIC, not the request's
    UNSPECIFIED, which b would read as its own default)."""
    f = start_fleet(new_fleet, redis_client, net, ("PUBLIC", "NONE"))
    driver = Driver(BROKERS, f.request_topic)
    try:
        on = {}
        for i in range(20):  # the dispatcher places sessions: until each worker has one
            sid = driver.start_session(name=f"default-mode-{i}")
            on.setdefault(owner(redis_client, f, sid)[:2], sid)
            if len(on) == 2:
                break
        assert set(on) == {"a-", "b-"}, on
        assert facts(driver, on["a-"]).network == pb.NETWORK_MODE_PUBLIC
        assert facts(driver, on["b-"]).network == pb.NETWORK_MODE_NONE
        sid = on["a-"]
        f.workers[owner(redis_client, f, sid)].kill()
        got = fetch(driver, sid, "http://api.example.test/")
        assert owner(redis_client, f, sid).startswith("b-")
        assert got.startswith("'codeq test internet: 203.0.113.10 "), got
        assert facts(driver, sid).network == pb.NETWORK_MODE_PUBLIC
    finally:
        driver.close()


def test_requests_beyond_policy_are_refused_with_the_rule(new_fleet, redis_client, net):
    f = new_fleet()
    f.start_worker("a", "--egress-netns", net.netns_path(net.add_client()),
                   "--network-modes", "NONE,PUBLIC")
    f.wait_workers(redis_client, 1)
    f.start_dispatcher()
    driver = Driver(BROKERS, f.request_topic)
    try:
        r = driver.call(pb.Request(start_session=pb.StartSession(
            network=pb.NETWORK_MODE_ALLOWLIST, network_allow=["files.example.test"])))
        assert r.WhichOneof("payload") == "result", r
        assert r.result.error_code == pb.ERROR_CODE_INVALID_ARGUMENT, r
        assert "network_modes = NONE,PUBLIC" in r.result.error_message, r
    finally:
        driver.close()
