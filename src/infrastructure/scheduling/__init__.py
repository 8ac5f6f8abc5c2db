"""Delivery queue adapters for the ``Scheduler`` port, and roles one worker holds at a time."""

from infrastructure.scheduling.redis_leadership import RedisLeadership, process_holder
from infrastructure.scheduling.redis_scheduler import RedisScheduler

__all__ = ["RedisLeadership", "RedisScheduler", "process_holder"]
