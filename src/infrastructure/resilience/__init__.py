"""Circuit breakers and rate limits shared by every worker (adapters of the sender ports)."""

from infrastructure.resilience.redis_breaker import RedisCircuitBreaker
from infrastructure.resilience.redis_rate_limiter import RedisRateLimiter

__all__ = ["RedisCircuitBreaker", "RedisRateLimiter"]
