"""Real PostgreSQL and Redis servers started from wheels, for dev mode and tests."""

from infrastructure.embedded.postgres import EmbeddedPostgres
from infrastructure.embedded.redis import EmbeddedRedis

__all__ = ["EmbeddedPostgres", "EmbeddedRedis"]
