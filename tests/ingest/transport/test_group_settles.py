"""A two-member group on Tansu settles again after both members restart together, many times.

With dynamic membership, Tansu 0.6 can wedge a group after its members leave together: every
later JoinGroup names a leader that is no longer a member, nobody sends the assignment,
SyncGroup fails with REBALANCE_IN_PROGRESS, forever (issue 10; reproduced without agpt by
plain kafka-python consumers). Static membership (``group_instance_id``) avoids the
LeaveGroup that wedges it. Each round here closes both members, sends new records, starts
both again (the second up to 2 s later) and requires every new record to be consumed, and
both members to hold a partition, within a bound.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import replace

import pytest

from ingest.transport.base import TransportError
from ingest.transport.kafka import KafkaTransport

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROUNDS = 6
SETTLE_BOUND_S = 60.0


class Member(threading.Thread):
    """A group member polling and committing in its own thread until stopped."""

    def __init__(self, transport, topic, group, seen, lock):
        super().__init__(daemon=True)
        self.transport, self.topic, self.group = transport, topic, group
        self.seen, self.lock = seen, lock
        self.stop_event = threading.Event()
        self.held = False
        self.error: BaseException | None = None
        self.commit_failures = 0

    def run(self):
        consumer = self.transport.consumer([self.topic], group_id=self.group)
        try:
            while not self.stop_event.is_set():
                records = consumer.poll(max_records=50, timeout_s=0.2)
                if records:
                    self.held = True
                    with self.lock:
                        self.seen.update(r.value for r in records)
                    try:
                        consumer.commit(records)
                    except TransportError:
                        # As the worker does: a commit refused during a rebalance (e.g.
                        # UNKNOWN_MEMBER_ID while the other member rejoins) only means the
                        # batch is read again by whoever holds the partition next.
                        self.commit_failures += 1
                elif consumer.lag():
                    self.held = True
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            consumer.close()


def test_both_members_restarted_together_settle_every_time(kafka_config, make_topic):
    topic = make_topic(partitions=2)
    group = f"settle-{uuid.uuid4().hex[:8]}"
    producer = KafkaTransport(kafka_config).producer()
    transports = [KafkaTransport(replace(kafka_config, group_instance_id=f"worker-{i}",
                                         client_id=f"worker-{i}")) for i in range(2)]
    rng = random.Random(10)
    settle_times = []
    for round_number in range(ROUNDS):
        sent = {f"r{round_number}-{i}".encode() for i in range(40)}
        for index, value in enumerate(sorted(sent)):
            producer.send(topic, key=f"k{index}".encode(), value=value)
        producer.flush()
        seen: set[bytes] = set()
        lock = threading.Lock()
        members = [Member(t, topic, group, seen, lock) for t in transports]
        started = time.monotonic()
        members[0].start()
        time.sleep(rng.uniform(0, 2))
        members[1].start()
        while time.monotonic() - started < SETTLE_BOUND_S:
            with lock:
                flowed = sent <= seen
            if flowed and all(m.held for m in members):
                break
            time.sleep(0.1)
        settle_times.append(time.monotonic() - started)
        for member in members:
            member.stop_event.set()
        for member in members:
            member.join(timeout=30)
        assert [m.error for m in members] == [None, None]
        with lock:
            missing = len(sent - seen)
        assert missing == 0, (round_number, settle_times)
        assert all(m.held for m in members), (round_number, settle_times)
    producer.close()
    assert max(settle_times) < SETTLE_BOUND_S, settle_times
