"""Delivery queue adapters for the ``Scheduler`` port."""

from infrastructure.scheduling.redis_scheduler import RedisScheduler

__all__ = ["RedisScheduler"]
