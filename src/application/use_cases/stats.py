"""GetStats: how the tenant's notifications of a time window fared, per channel, provider and
category."""

from __future__ import annotations

from datetime import datetime, timedelta

from application.ports.clock import Clock
from application.ports.notification_queries import StatsQuery, StatsReport
from application.ports.repositories import UnitOfWorkFactory
from application.principal import Principal
from domain.errors import Violations
from domain.notification import Channel

# A quarter: long enough for a quarterly report, short enough to stay one index range scan.
MAX_WINDOW = timedelta(days=92)


class GetStats:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def execute(
        self,
        principal: Principal,
        start: datetime | None,
        end: datetime | None,
        channel: Channel | None = None,
        category: str = "",
    ) -> StatsReport:
        now = self._clock.now()
        v = Violations()
        if start is None:
            v.add("start_time", "required: the start of the window")
        elif end is None and start >= now:
            v.add("start_time", "is in the future (set end_time to ask about a later window)")
        elif end is not None and end <= start:
            v.add("end_time", "must be after start_time")
        elif end is not None and end - start > MAX_WINDOW:
            v.add("end_time", f"at most {MAX_WINDOW.days} days after start_time")
        elif end is None and now - start > MAX_WINDOW:
            v.add(
                "start_time",
                f"more than {MAX_WINDOW.days} days ago: set an end_time at most that long after it",
            )
        v.raise_if_any()
        assert start is not None  # raise_if_any() refused it otherwise
        query = StatsQuery(start, end or now, channel, category)
        async with self._uow() as uow:
            return await uow.notifications.stats(principal.tenant_id, query)
