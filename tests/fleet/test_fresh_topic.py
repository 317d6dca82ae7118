"""Requests sent to a topic the moment it is made are all written.

The lost startSession of tests/fleet/test_scale.py (docs/fleet.md, "Delivery"): the
clients sent their first requests while the dispatcher was still making the request
topic, and librdkafka 2.0.2's idempotent producer, with more than one request in flight,
reported a request delivered that the broker never wrote. A partition just made refused
the first batch (NOT_LEADER_OR_FOLLOWER) and, a moment later, took the next one that was
already in flight (a broker takes a producer's first batch on a partition at any
sequence), and that batch's acknowledgement settled the refused one too. Nothing logged an error; the
dispatcher never saw the request. Each round here makes a topic and at once sends
bursts of requests from four clients through their real producers; before the fix
(one produce request in flight, fleet/kafka.c and the Python client) one round in ten
to fifteen lost a request: reported delivered, and not in the topic.
"""

import os
import sys
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import BROKERS, REPO

sys.path.insert(0, os.path.join(REPO, "clients", "python"))
from codeq_client import Client  # noqa: E402
from codeq_client import codeq_pb2 as pb  # noqa: E402

ROUNDS = 60
CLIENTS = 4
BURST = 50  # requests per client and round
PARTITIONS = 8  # as a dispatcher makes the request topic


def topic_size(topic):
    c = Consumer({"bootstrap.servers": BROKERS, "group.id": f"codeq-test-{uuid.uuid4().hex}"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                   for p in range(PARTITIONS))
    finally:
        c.close()


def test_requests_to_a_topic_just_made_are_all_written(services):
    admin = AdminClient({"bootstrap.servers": BROKERS})
    clients = [Client(BROKERS, request_topic="unused") for _ in range(CLIENTS)]
    topics, lost = [], []
    try:
        for round_ in range(ROUNDS):
            topic = f"codeq.requests.fresh{uuid.uuid4().hex[:12]}"
            topics.append(topic)
            admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(30)
            failed = []
            for c in clients:
                # A fresh topic's partitions are new to every client's producer, as the
                # request topic was to the clients of test_scale; each knows the topic
                # already, as a client asks for its request topic's metadata at start.
                c.request_topic = topic
                c._producer.list_topics(topic, timeout=30)
            sent = []
            for _ in range(BURST):
                for c in clients:
                    # A failed delivery ends its call with the error (Client._delivered).
                    sent.append((c, c._send(pb.Request(start_session=pb.StartSession()), 60.0,
                                            None, failed.append)))
            for c in clients:
                assert c._producer.flush(60) == 0, "requests still unacknowledged after 60 s"
                c._producer.poll(0)
            for c, rid in sent:
                c._forget(rid)  # no dispatcher answers here: only the writing counts
            assert not failed, f"round {round_}: deliveries failed: {failed[:3]}"
            written = topic_size(topic)
            if written != CLIENTS * BURST:
                lost.append(f"round {round_}: {CLIENTS * BURST} requests reported delivered, "
                            f"{written} in the topic")
    finally:
        for c in clients:
            c.close()
        for f in admin.delete_topics(topics, operation_timeout=30).values():
            f.exception(timeout=60)
    assert not lost, "\n".join(lost)
