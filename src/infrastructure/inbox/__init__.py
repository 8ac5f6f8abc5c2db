"""Waking inbox streams across processes."""

from infrastructure.inbox.redis_notifier import RedisInboxNotifier

__all__ = ["RedisInboxNotifier"]
