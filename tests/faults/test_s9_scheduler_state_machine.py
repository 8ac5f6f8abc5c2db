"""Scenario 9: a property-based state machine over the aggregate and the real Redis scheduler.

Measures, over ~100 random runs of up to 30 steps on a hand-driven clock, that the queue never
loses or doubles a notification. Rules enqueue new notifications (some scheduled, some with an
expiry), claim batches, finish claims with success or transient/permanent failure (retry_at or
ack), let workers vanish mid-attempt, expire and recover leases, advance the clock and cancel.
Notification aggregates are driven only through their verbs (begin_attempt, record_success,
record_failure, cancel) the way DeliverNotification does; "Postgres" is a dict of committed
aggregates written with a version compare-and-set, so a worker whose lease was recovered cannot
overwrite a newer attempt. The scheduler is the real RedisScheduler on a real redis-server.

Invariants after every step: no illegal transition in any history; an id is in at most one of
ready/delayed/leased; the leased set is exactly the leases the model believes are held; every
unsettled (QUEUED/SENDING) notification is in the scheduler. At teardown the queue is drained
(leases recovered, everything due claimed and delivered) and every notification has reached
exactly one final outcome (SENT/DELIVERED, FAILED, CANCELLED or EXPIRED) with at most one
accepted attempt, and the scheduler is empty.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from application.ports.scheduler import Claim, QueueItem
from domain.errors import IllegalTransition
from domain.notification import (
    Address,
    AttemptOutcome,
    Channel,
    Content,
    DeliveryResult,
    ErrorClass,
    NewNotification,
    Notification,
    Priority,
    RetryPolicy,
    Status,
    can_transition,
)
from infrastructure.embedded import EmbeddedRedis
from infrastructure.scheduling import RedisScheduler

pytestmark = pytest.mark.faults

T = TypeVar("T")

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
NAMESPACE = "faults-sm"
MAX_NOTIFICATIONS = 8
POLICY = RetryPolicy(
    max_attempts=3, base_delay=timedelta(seconds=2), max_delay=timedelta(seconds=20)
)
UNSETTLED = frozenset({Status.QUEUED, Status.SENDING})
# One final outcome each; DELIVERED is the receipt that may follow SENT, not another outcome.
OUTCOMES = frozenset({Status.SENT, Status.FAILED, Status.CANCELLED, Status.EXPIRED})
FINAL = OUTCOMES | {Status.DELIVERED}

EXAMPLES = 100
STEPS = 30


@dataclass
class Holder:
    """A worker's hold on one claim, with its own loaded copy of the aggregate."""

    claim: Claim
    copy: Notification


class QueueLife(RuleBasedStateMachine):
    redis_url = ""
    # Totals over every run, for the summary line.
    totals: Counter[str] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = aioredis.Redis.from_url(self.redis_url)
        self.scheduler = RedisScheduler(self.client, namespace=NAMESPACE)
        self.run(self.client.flushdb())
        self.now = T0
        self.ids = itertools.count()
        # "Postgres": the committed aggregates.
        self.stored: dict[str, Notification] = {}
        # Live workers' holds, by fencing token.
        self.holders: dict[int, Holder] = {}
        # What the model says Redis holds: id -> (token, deadline) for leases; id -> due for
        # items waiting (ready or delayed).
        self.leases: dict[str, tuple[int, datetime]] = {}
        self.waiting: dict[str, datetime] = {}

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        try:
            self.drain_and_check()
        finally:
            self.run(self.client.aclose())
            self.loop.close()

    # -- "Postgres" -----------------------------------------------------------------------------

    def load(self, nid: str) -> Notification:
        return copy.deepcopy(self.stored[nid])

    def save(self, n: Notification) -> bool:
        """The repository's compare-and-set on version."""
        if self.stored[n.id].version != n.version:
            return False
        n.version += 1
        self.stored[n.id] = copy.deepcopy(n)
        return True

    # -- Redis, with the model kept in step ------------------------------------------------------

    def redis_sets(self) -> dict[str, set[str]]:
        keys = self.scheduler.keys

        async def read() -> dict[str, set[str]]:
            pipe = self.client.pipeline(transaction=True)
            for key in keys[:6]:
                pipe.zrange(key, 0, -1)
            pipe.hkeys(keys[8])
            found = await pipe.execute()
            names = ["ready1", "ready2", "ready3", "ready4", "delayed", "leased", "tokens"]
            return {n: {m.decode() for m in ms} for n, ms in zip(names, found, strict=True)}

        return self.run(read())

    def ack(self, claim: Claim) -> bool:
        done = self.run(self.scheduler.ack(claim))
        self._settle_lease(claim, done)
        return done

    def retry_at(self, claim: Claim, due: datetime) -> bool:
        done = self.run(self.scheduler.retry_at(claim, due, self.now))
        self._settle_lease(claim, done)
        if done:
            self.waiting[claim.notification_id] = due
        return done

    def _settle_lease(self, claim: Claim, done: bool) -> None:
        current = self.leases.get(claim.notification_id)
        holds = current is not None and current[0] == claim.token
        # The fence on the Redis side: only the current lease holder may ack or retry.
        assert done == holds, f"{claim} acted={done} but holds={holds}"
        if done:
            del self.leases[claim.notification_id]

    # -- the worker's steps, as DeliverNotification takes them ---------------------------------

    def begin(self, claim: Claim) -> None:
        nid = claim.notification_id
        n = self.load(nid)
        if n.status not in UNSETTLED:
            assert self.ack(claim)
            return
        if n.status is Status.QUEUED and n.due_at > self.now:
            assert self.retry_at(claim, n.due_at)
            return
        n.begin_attempt(self.now, POLICY.max_attempts)
        assert self.save(n), "nobody else can write between our load and save"
        if n.status is not Status.SENDING:
            # Expired, or dead-lettered after attempts abandoned by vanished workers.
            assert self.ack(claim)
            return
        self.holders[claim.token] = Holder(claim, n)

    def finish(self, holder: Holder, outcome: str) -> None:
        n = holder.copy
        if outcome == "success":
            n.record_success(self.now, DeliveryResult("webhook", "msg"))
        else:
            permanent = outcome == "permanent"
            n.record_failure(
                self.now,
                provider="webhook",
                error_class=ErrorClass.PERMANENT if permanent else ErrorClass.TRANSIENT,
                message=outcome,
                policy=POLICY,
                random=lambda: 0.5,
            )
        current = self.leases.get(n.id)
        holds = current is not None and current[0] == holder.claim.token
        before = copy.deepcopy(self.stored[n.id])
        if not self.save(n):
            # A newer attempt superseded ours: nothing of ours is written, Redis untouched.
            assert not holds, "the current lease holder's write was refused"
            assert self.stored[n.id] == before
            self.totals["late_writes_rejected"] += 1
            return
        if n.status is Status.QUEUED:
            self.retry_at(holder.claim, n.due_at)
        else:
            self.ack(holder.claim)

    # -- rules ----------------------------------------------------------------------------------

    @initialize(
        count=st.integers(min_value=1, max_value=4), priority=st.sampled_from(list(Priority))
    )
    def some_queued(self, count: int, priority: Priority) -> None:
        for _ in range(count):
            self.enqueue(priority, 0, None)

    @precondition(lambda self: len(self.stored) < MAX_NOTIFICATIONS)
    @rule(
        priority=st.sampled_from(list(Priority)),
        delay=st.sampled_from([0, 0, 0, 5, 40]),
        ttl=st.none() | st.sampled_from([20, 90]),
    )
    def enqueue(self, priority: Priority, delay: int, ttl: int | None) -> None:
        nid = f"n{next(self.ids)}"
        scheduled = self.now + timedelta(seconds=delay) if delay else None
        expires = None
        if ttl is not None:
            expires = (scheduled or self.now) + timedelta(seconds=ttl)
        n = Notification.accept(
            NewNotification(
                request_id=nid,
                user_id="user",
                channel=Channel.WEBHOOK,
                priority=priority,
                category="fault",
                content=Content("t", "b"),
                address=Address("webhook_url", "https://example.com/hook"),
                scheduled_at=scheduled,
                expires_at=expires,
            ),
            id=nid,
            tenant_id="tenant",
            caller="svc",
            fingerprint=nid,
            now=self.now,
        )
        n.version = 1
        self.stored[nid] = n
        self.run(self.scheduler.enqueue([QueueItem(nid, n.priority, n.due_at)], self.now))
        self.waiting[nid] = n.due_at

    @rule(limit=st.integers(min_value=1, max_value=4))
    def claim(self, limit: int) -> None:
        claims = self.run(self.scheduler.claim(limit, self.now, LEASE))
        assert len(claims) <= limit
        assert len({c.notification_id for c in claims}) == len(claims)
        for c in claims:
            nid = c.notification_id
            assert nid in self.waiting, f"claimed {nid}, which was not waiting"
            assert self.waiting[nid] <= self.now, f"claimed {nid} before it was due"
            del self.waiting[nid]
            self.leases[nid] = (c.token, c.lease_deadline)
            self.begin(c)

    @precondition(lambda self: self.holders)
    @rule(data=st.data(), outcome=st.sampled_from(["success", "success", "transient", "permanent"]))
    def complete(self, data: st.DataObject, outcome: str) -> None:
        token = data.draw(st.sampled_from(sorted(self.holders)))
        self.finish(self.holders.pop(token), outcome)

    @precondition(lambda self: self.holders)
    @rule(data=st.data())
    def worker_vanishes(self, data: st.DataObject) -> None:
        """The worker dies mid-attempt: its lease stays until it lapses."""
        token = data.draw(st.sampled_from(sorted(self.holders)))
        del self.holders[token]

    @rule(seconds=st.integers(min_value=0, max_value=20))
    def advance(self, seconds: int) -> None:
        self.now += timedelta(seconds=seconds)

    @rule()
    def lease_expiry_and_recover(self) -> None:
        self.now += LEASE
        self.recover()

    def recover(self) -> None:
        recovered = self.run(self.scheduler.recover_expired_leases(self.now, 1000))
        expired = [nid for nid, (_, deadline) in self.leases.items() if deadline <= self.now]
        assert recovered == len(expired)
        self.totals["leases_recovered"] += recovered
        for nid in expired:
            del self.leases[nid]
            self.waiting[nid] = self.now

    @precondition(lambda self: self.stored)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        nid = data.draw(st.sampled_from(sorted(self.stored)))
        n = self.load(nid)
        if n.status not in (Status.PENDING, Status.QUEUED, Status.CANCELLED):
            before = copy.deepcopy(n)
            with pytest.raises(IllegalTransition):
                n.cancel(self.now)
            assert n == before, "a refused cancel changed the aggregate"
            return
        n.cancel(self.now)
        assert self.save(n)
        self.run(self.scheduler.remove(nid))
        if nid not in self.leases:
            self.waiting.pop(nid, None)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def histories_are_legal(self) -> None:
        for n in self.stored.values():
            statuses = [c.status for c in n.history]
            for before, after in itertools.pairwise(statuses):
                assert can_transition(before, after), f"{n.id}: illegal {before}->{after}"
            open_attempts = [a for a in n.attempts if a.outcome is AttemptOutcome.IN_PROGRESS]
            assert len(open_attempts) == (1 if n.status is Status.SENDING else 0)

    @invariant()
    def queue_matches_the_model(self) -> None:
        sets = self.redis_sets()
        places = ("ready1", "ready2", "ready3", "ready4", "delayed", "leased")
        for nid in self.stored:
            found = [p for p in places if nid in sets[p]]
            assert len(found) <= 1, f"{nid} is in {found}"
        assert sets["leased"] == set(self.leases), "leased set != leases the model holds"
        assert sets["tokens"] == set(self.leases), "lease tokens != leases"
        waiting = set().union(*(sets[p] for p in places[:5]))
        assert waiting == set(self.waiting), "ready/delayed != what the model has waiting"

    @invariant()
    def nothing_unsettled_is_lost(self) -> None:
        for nid, n in self.stored.items():
            if n.status in UNSETTLED:
                assert nid in self.waiting or nid in self.leases, f"{nid} {n.status} is lost"

    # -- teardown -------------------------------------------------------------------------------

    def drain_and_check(self) -> None:
        # Live workers finish what they hold; then everything left is recovered, claimed and
        # delivered until the queue is empty.
        for token in sorted(self.holders):
            self.finish(self.holders.pop(token), "success")
        for _ in range(50):
            if not self.waiting and not self.leases:
                break
            self.now += LEASE + POLICY.max_delay
            self.recover()
            for c in self.run(self.scheduler.claim(1000, self.now, LEASE)):
                del self.waiting[c.notification_id]
                self.leases[c.notification_id] = (c.token, c.lease_deadline)
                self.begin(c)
            for token in sorted(self.holders):
                self.finish(self.holders.pop(token), "success")
        sets = self.redis_sets()
        assert not any(sets[p] for p in sets), f"the queue is not empty after draining: {sets}"
        for nid, n in self.stored.items():
            assert n.status in FINAL, f"{nid} ended {n.status}"
            outcomes = [c.status for c in n.history if c.status in OUTCOMES]
            assert len(outcomes) == 1, f"{nid} has outcomes {outcomes}"
            accepted = [a for a in n.attempts if a.outcome is AttemptOutcome.ACCEPTED]
            assert len(accepted) == (1 if n.status in (Status.SENT, Status.DELIVERED) else 0)
            self.totals[n.status.value] += 1
            self.totals["notifications"] += 1


@pytest.fixture(scope="module")
def state_machine_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(Path(tmp_path_factory.mktemp("sm-redis"))) as server:
        yield server.url


def test_queue_never_loses_or_doubles_a_notification(state_machine_redis: str) -> None:
    QueueLife.redis_url = state_machine_redis
    QueueLife.totals.clear()
    started = time.monotonic()
    run_state_machine_as_test(
        QueueLife,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
    t = QueueLife.totals
    finals = " ".join(f"{s.value}={t[s.value]}" for s in sorted(FINAL))
    # Every run's teardown asserted: nothing lost, nothing stuck, one outcome each.
    print(
        f"scenario 9: scheduler state machine: {time.monotonic() - started:.1f}s lost=0 "
        f"stuck=0 duplicates=0 examples={EXAMPLES} steps<={STEPS} "
        f"notifications={t['notifications']} {finals} "
        f"leases_recovered={t['leases_recovered']} "
        f"late_writes_rejected={t['late_writes_rejected']}",
        flush=True,
    )
